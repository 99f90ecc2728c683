"""Reconciling sends whose outcome is unresolved, against Twilio's own message list.

A recipient is sent again only when Twilio confirms it has no such message; otherwise the message
Twilio has is recorded. Nothing is resent blindly.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta

from smsinvite.messages import body_digest
from smsinvite.observability import logger, mask_phone
from smsinvite.queues import Queue
from smsinvite.status import Status, from_twilio
from smsinvite.store import Store
from smsinvite.twilio_gateway import TwilioGateway, TwilioSendError

CLOCK_SKEW = timedelta(seconds=30)


class Reconciler:
    def __init__(self, store: Store, gateway: TwilioGateway, send_queue: Queue) -> None:
        self.store = store
        self.gateway = gateway
        self.send_queue = send_queue

    def run(self, *, now: datetime, grace: timedelta) -> Counter:
        outcomes: Counter = Counter()
        for recipient in self.store.unresolved_recipients(claimed_before=(now - grace).isoformat()):
            try:
                outcomes[self._resolve(recipient)] += 1
            except TwilioSendError as error:
                # Twilio could not answer; leave it unresolved for the next run.
                logger.warning("reconciliation postponed", extra={"reason": error.reason})
                outcomes["postponed"] += 1
        return outcomes

    def _resolve(self, recipient) -> str:
        claimed_at = datetime.fromisoformat(recipient.claimed_at)
        listed = self.gateway.messages_to(recipient.phone, since=claimed_at - CLOCK_SKEW)
        ours = [m for m in listed if recipient.body_digest is None or _digest_of(m.body) == recipient.body_digest]
        attempt = recipient.attempt_id
        if ours:
            message = ours[-1]  # newest first: the last one is the earliest after the claim
            self.store.transition(
                recipient, from_twilio(message.status), owned_by=attempt, message_sid=message.sid, unresolved_shard=None
            )
            logger.info("unresolved send found at Twilio", extra={"to": mask_phone(recipient.phone), "sid": message.sid})
            return "found"
        reset = self.store.transition(
            recipient,
            Status.IMPORTED,
            owned_by=attempt,
            backward_from=(Status.CLAIMED, Status.UNKNOWN),
            attempt_id=None,
            claimed_at=None,
            unresolved_shard=None,
            failure_reason=None,
        )
        if reset is None:
            return "changed_meanwhile"
        self.send_queue.send({"campaign_id": recipient.campaign_id, "recipient_id": recipient.recipient_id})
        logger.info("Twilio has no such message; queued again", extra={"to": mask_phone(recipient.phone)})
        return "requeued"


def _digest_of(body: str | None) -> str | None:
    return body_digest(body) if body is not None else None
