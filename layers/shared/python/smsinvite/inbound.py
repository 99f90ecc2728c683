"""Inbound SMS: every reply is kept, linked to the invitation it answers, and consent keywords act.

STOP and its synonyms suppress the number (and end its subscriptions) before anything is answered:
if that write fails the webhook fails, so Twilio retries and no opt-out is acknowledged unrecorded.
START, UNSTOP and YES confirm pending subscriptions, or lift the number's own opt-out. HELP gets
the help text. Twilio's own opt-out handling already answers its standard words; then we stay quiet.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from smsinvite.consent import ConsentEntry, ConsentEvent, ConsentSource, SuppressionReason
from smsinvite.errors import InvalidInput
from smsinvite.keywords import Intent, KeywordMatch, classify
from smsinvite.observability import logger, mask_phone
from smsinvite.settings import Settings
from smsinvite.store import Store, utcnow
from smsinvite.subscriptions import SubscriptionLists
from smsinvite.twilio_gateway import FormParams


@dataclass(frozen=True)
class InboundMessage:
    message_sid: str
    sender: str
    to: str
    body: str
    messaging_service_sid: str = ""

    @classmethod
    def parse(cls, form: FormParams) -> "InboundMessage":
        missing = [name for name in ("MessageSid", "From", "To") if not form.first(name)]
        if missing:
            raise InvalidInput("malformed inbound message", details=[f"form field {m} is missing" for m in missing])
        return cls(
            form.first("MessageSid"), form.first("From"), form.first("To"), form.first("Body"),
            form.first("MessagingServiceSid"),
        )

    @property
    def scope(self) -> str:
        """The sender the reply was sent to: its Messaging Service, or the number."""
        return self.messaging_service_sid or self.to


@dataclass(frozen=True)
class InboundOutcome:
    intent: Intent
    reply: str | None  # the text to answer with, or None for an empty TwiML response
    new: bool  # False when this MessageSid was seen before

    def as_dict(self) -> dict:
        return {"intent": self.intent.value, "reply": self.reply, "new": self.new}


class InboundReplies:
    def __init__(
        self, store: Store, settings: Settings, lists: SubscriptionLists, clock: Callable[[], datetime] = utcnow
    ) -> None:
        self.store, self.settings, self.lists, self.clock = store, settings, lists, clock

    def handle(self, message: InboundMessage) -> InboundOutcome:
        match = classify(message.body, self.settings.keyword_policy())
        now = self.clock()
        new = self._keep(message, match, now)
        entry = ConsentEntry(
            phone=message.sender, event=ConsentEvent.OPT_OUT, source=ConsentSource.KEYWORD, at=now,
            scope=message.scope, message_sid=message.message_sid, text=message.body,
            detail="polite phrasing" if match.polite else None,
        )
        reply = None
        if match.intent is Intent.OPT_OUT:
            # Recorded first: if this raises, the webhook answers 5xx and Twilio retries.
            self.store.suppress(entry, SuppressionReason.OPTED_OUT)
            self.lists.end_all(message.sender, entry)
            reply = self._unless_twilio_answers(match, self.settings.opt_out_reply)
        elif match.intent is Intent.OPT_IN:
            reply = self._opt_in(message, match, entry)
        elif match.intent is Intent.HELP:
            reply = self._unless_twilio_answers(match, self.settings.help_text)
        logger.info(
            "inbound message",
            extra={"from": mask_phone(message.sender), "intent": match.intent.value, "keyword": match.keyword,
                   "flagged": match.flagged, "new": new},
        )
        return InboundOutcome(match.intent, reply, new)

    def _opt_in(self, message: InboundMessage, match: KeywordMatch, entry: ConsentEntry) -> str | None:
        confirmed = self.lists.confirm(message.sender, entry)
        if confirmed:
            # The list's own welcome: not what Twilio answers to YES, so it is no duplicate.
            return self.lists.list_campaign(confirmed[0]).reply_text or self.settings.opt_in_reply
        suppression = self.store.suppression(message.sender)
        if suppression is None:
            return None  # nothing to lift: a plain YES to an invitation, kept in the inbox
        still = self.store.lift_opt_out(
            ConsentEntry(
                phone=message.sender, event=ConsentEvent.RESUBSCRIBE, source=ConsentSource.KEYWORD, at=entry.at,
                scope=message.scope, message_sid=message.message_sid, text=message.body,
            )
        )
        if still is not None:
            logger.info("opt-in left the number suppressed", extra={"from": mask_phone(message.sender), "reason": still})
            return None
        return self._unless_twilio_answers(match, self.settings.opt_in_reply)

    def _unless_twilio_answers(self, match: KeywordMatch, text: str) -> str | None:
        if match.answered_by_twilio and self.settings.twilio_answers_keywords:
            return None
        return text

    def _keep(self, message: InboundMessage, match: KeywordMatch, now: datetime) -> bool:
        answered = self.store.latest_recipient(message.sender)
        return self.store.record_inbound(
            {
                "phone": message.sender,
                "message_sid": message.message_sid,
                "received_at": now,
                "to": message.to,
                "body": message.body,
                "campaign_id": answered.campaign_id if answered else None,
                "recipient_id": answered.recipient_id if answered else None,
                "intent": match.intent.value,
                "keyword": match.keyword,
                "flagged": 1 if match.flagged else None,
            }
        )
