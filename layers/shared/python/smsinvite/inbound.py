"""Inbound SMS: every reply is kept, once per MessageSid, linked to the number it came from."""

from __future__ import annotations

from dataclasses import dataclass

from smsinvite.errors import InvalidInput
from smsinvite.observability import logger, mask_phone
from smsinvite.store import Store, utcnow
from smsinvite.twilio_gateway import FormParams


@dataclass(frozen=True)
class InboundMessage:
    message_sid: str
    sender: str
    to: str
    body: str

    @classmethod
    def parse(cls, form: FormParams) -> "InboundMessage":
        missing = [name for name in ("MessageSid", "From", "To") if not form.first(name)]
        if missing:
            raise InvalidInput("malformed inbound message", details=[f"form field {m} is missing" for m in missing])
        return cls(form.first("MessageSid"), form.first("From"), form.first("To"), form.first("Body"))


def record_inbound(store: Store, message: InboundMessage) -> bool:
    stored = store.record_inbound(
        phone=message.sender, to=message.to, body=message.body, message_sid=message.message_sid, received_at=utcnow()
    )
    logger.info("inbound message", extra={"from": mask_phone(message.sender), "new": stored})
    return stored
