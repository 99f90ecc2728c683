"""Storage adapter: every DynamoDB read and write the domain needs, behind named operations.

A recipient's status changes in one transaction with the campaign's per-status counters, under a
condition on the status it had when read. A change that lost a race is re-read and decided again,
so counters move exactly once per real transition, however often a callback is delivered.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from datetime import datetime, timezone

from pynamodb.connection import Connection
from pynamodb.exceptions import DoesNotExist, PutError, TransactWriteError, UpdateError
from pynamodb.transactions import TransactWrite

from smsinvite.errors import Conflict, NotFound
from smsinvite.phones import Phone
from smsinvite.settings import Settings
from smsinvite.status import Status, moves_forward
from smsinvite.tables import CampaignRecord, ImportRecord, RecipientRecord, Tables, counter, tables

UNRESOLVED_SHARDS = 4
DUE_SHARD = "due"
_MAX_RACE_RETRIES = 8


def unresolved_shard(recipient_id: str) -> str:
    return str(int(recipient_id[:8], 16) % UNRESOLVED_SHARDS)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def recipient_id_for(campaign_id: str, e164: str) -> str:
    """Deterministic, so the same number in one campaign is one item; opaque, so URLs carry no number."""
    return hashlib.blake2b(e164.encode(), key=campaign_id.encode()[:64], digest_size=12).hexdigest()


def _after(recipient: RecipientRecord, new: Status, changes: dict) -> RecipientRecord:
    """The recipient as the transition wrote it, without reading it back."""
    written = type(recipient).from_raw_data(recipient.serialize())
    written.status, written.status_rank = new.value, new.rank
    for name, value in changes.items():
        setattr(written, name, value)
    return written


def _is_condition_failure(exc: Exception) -> bool:
    if isinstance(exc, TransactWriteError):
        return any(r is not None and r.code == "ConditionalCheckFailed" for r in exc.cancellation_reasons)
    cause = getattr(exc, "cause_response_code", None)
    return cause == "ConditionalCheckFailedException"


class Store:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.t: Tables = tables(settings)

    # ------------------------------------------------------------------ campaigns
    def create_campaign(self, campaign: CampaignRecord) -> None:
        try:
            campaign.save(condition=self.t.campaigns.campaign_id.does_not_exist())
        except PutError as exc:
            if _is_condition_failure(exc):
                raise Conflict(f"campaign {campaign.campaign_id} already exists") from None
            raise

    def campaign(self, campaign_id: str) -> CampaignRecord:
        try:
            return self.t.campaigns.get(campaign_id, consistent_read=True)
        except DoesNotExist:
            raise NotFound(f"campaign {campaign_id} does not exist") from None

    def new_campaign(self, **attributes) -> CampaignRecord:
        now = utcnow()
        return self.t.campaigns(created_at=now, updated_at=now, **attributes)

    def change_campaign(self, campaign_id: str, actions: list, condition) -> CampaignRecord | None:
        """Apply `actions` if `condition` still holds; the campaign as written, or None if it did not hold."""
        campaigns = self.t.campaigns
        record = campaigns(campaign_id)
        try:
            record.update(
                actions=actions + [campaigns.updated_at.set(utcnow())],
                condition=campaigns.campaign_id.exists() & condition,
            )
        except UpdateError as exc:
            if _is_condition_failure(exc):
                return None
            raise
        return record

    def no_import_running(self, now: datetime):
        """The condition that no import holds the campaign's lease (a dead holder's lease runs out)."""
        campaigns = self.t.campaigns
        return campaigns.import_lease.does_not_exist() | (campaigns.import_lease_until < int(now.timestamp()))

    def save_dispatch_cursor(
        self,
        campaign_id: str,
        run: int,
        *,
        old: str | None,
        new: str | None,
        dispatched: int,
        states: tuple[str, ...],
        also: list = (),
    ) -> bool:
        """Move the dispatch cursor from `old` to `new`; False when another dispatcher moved it first."""
        campaigns = self.t.campaigns
        actions = [campaigns.dispatched.add(dispatched), *also]
        actions.append(campaigns.dispatch_cursor.set(new) if new else campaigns.dispatch_cursor.remove())
        if new is None:
            actions.append(campaigns.dispatch_done.set(run))
        at_old = (campaigns.dispatch_cursor == old) if old else campaigns.dispatch_cursor.does_not_exist()
        condition = at_old & (campaigns.run == run) & campaigns.state.is_in(*states)
        return self.change_campaign(campaign_id, actions, condition) is not None

    def due_campaigns(self, now: datetime) -> Iterator[str]:
        """Campaigns the scheduler must look at by now: a start, a next run, a watchdog check."""
        for record in self.t.campaigns.by_due.query(DUE_SHARD, self.t.campaigns.due_at <= now.isoformat()):
            yield record.campaign_id

    def due(self, at: datetime | None) -> list:
        campaigns = self.t.campaigns
        if at is None:
            return [campaigns.due_shard.remove(), campaigns.due_at.remove()]
        return [campaigns.due_shard.set(DUE_SHARD), campaigns.due_at.set(at.isoformat())]

    def campaign_imports(self, campaign_id: str) -> Iterator[ImportRecord]:
        imports = self.t.imports
        for key in imports.by_campaign.query(campaign_id):
            yield imports.get(key.import_id, consistent_read=True)

    # ------------------------------------------------------------------ recipients
    def recipient(self, campaign_id: str, recipient_id: str) -> RecipientRecord:
        try:
            return self.t.recipients.get(campaign_id, recipient_id, consistent_read=True)
        except DoesNotExist:
            raise NotFound("recipient does not exist") from None

    def add_recipient(
        self, campaign_id: str, phone: Phone, fields: Mapping[str, str], *, import_id: str, row_number: int
    ) -> bool:
        """Store a new recipient; False when the campaign already has this number (first one wins)."""
        record = self.t.recipients(
            campaign_id,
            recipient_id_for(campaign_id, phone.e164),
            phone=phone.e164,
            region=phone.region,
            line_type=phone.line_type.value,
            fields=dict(fields),
            import_id=import_id,
            row_number=row_number,
            updated_at=utcnow(),
        )
        campaigns = self.t.campaigns
        try:
            with TransactWrite(connection=self._connection()) as transaction:
                transaction.save(record, condition=self.t.recipients.recipient_id.does_not_exist())
                transaction.update(campaigns(campaign_id), actions=[counter(campaigns, Status.IMPORTED).add(1)])
        except TransactWriteError as exc:
            if _is_condition_failure(exc):
                return False
            raise
        return True

    def recipients_page(
        self, campaign_id: str, *, cursor: dict | None, limit: int
    ) -> tuple[list[RecipientRecord], dict | None]:
        query = self.t.recipients.query(
            campaign_id, limit=limit, last_evaluated_key=cursor, consistent_read=True
        )
        page = list(query)
        return page, query.last_evaluated_key

    def unresolved_recipients(self, *, claimed_before: str) -> Iterator[RecipientRecord]:
        """Recipients claimed for a send whose outcome was never recorded (unknown, or the sender died)."""
        for shard in range(UNRESOLVED_SHARDS):
            yield from self.t.recipients.by_unresolved.query(
                str(shard), self.t.recipients.claimed_at < claimed_before
            )

    def transition(
        self,
        recipient: RecipientRecord,
        new: Status,
        *,
        owned_by: str | None = None,
        backward_from: tuple[Status, ...] = (),
        **changes,
    ) -> RecipientRecord | None:
        """Move a recipient to `new`, with its counters, if the move is still allowed when written.

        Forward moves only, except the pre-send resets named in `backward_from` (a released claim,
        an unknown that Twilio confirmed it never received). With `owned_by`, only the send attempt
        that claimed the recipient may move it. Returns the re-read recipient, or None if refused.
        """
        current = recipient
        for _ in range(_MAX_RACE_RETRIES):
            old = Status(current.status)
            allowed = moves_forward(old, new) or old in backward_from
            if not allowed or (owned_by is not None and current.attempt_id != owned_by):
                return None
            if self._write_transition(current, old, new, owned_by, changes):
                return _after(current, new, changes)
            current = self.recipient(current.campaign_id, current.recipient_id)
        raise Conflict("recipient status kept changing; giving up this attempt")

    def claim(self, recipient: RecipientRecord, **changes) -> tuple[RecipientRecord | None, str | None]:
        """imported -> claimed, in one transaction that also requires, at this very moment, that the
        campaign is still sending and the number is not suppressed (an opt-out takes effect before the
        send, however recent). Returns the claimed recipient, or None and what stood in the way:
        "taken" (someone else claimed it), "campaign" (no longer sending) or "suppressed"."""
        try:
            self._write_transition(
                recipient, Status.IMPORTED, Status.CLAIMED, None, changes, campaign_sending=True,
                unless_suppressed=recipient.phone,
            )
        except TransactWriteError as exc:
            # PynamoDB sends condition checks before updates: the suppression, the recipient, the campaign.
            reasons = [r.code if r is not None else None for r in exc.cancellation_reasons]
            failed = [i for i, code in enumerate(reasons) if code == "ConditionalCheckFailed"]
            if not failed:
                raise
            return None, ("suppressed", "taken", "campaign")[failed[0]]
        return _after(recipient, Status.CLAIMED, changes), None

    def _write_transition(
        self, current, old: Status, new: Status, owned_by, changes: dict, *,
        campaign_sending: bool = False, unless_suppressed: str | None = None,
    ) -> bool:
        recipients, campaigns = self.t.recipients, self.t.campaigns
        actions = [
            recipients.status.set(new.value),
            recipients.status_rank.set(new.rank),
            recipients.updated_at.set(utcnow()),
        ]
        for name, value in changes.items():
            attribute = getattr(recipients, name)
            actions.append(attribute.remove() if value is None else attribute.set(value))
        condition = recipients.status == old.value
        if owned_by is not None:
            condition &= recipients.attempt_id == owned_by
        strict = campaign_sending or unless_suppressed is not None
        try:
            with TransactWrite(connection=self._connection()) as transaction:
                transaction.update(
                    recipients(current.campaign_id, current.recipient_id), actions=actions, condition=condition
                )
                transaction.update(
                    campaigns(current.campaign_id),
                    actions=[counter(campaigns, old).add(-1), counter(campaigns, new).add(1)],
                    condition=(campaigns.state == "sending") if campaign_sending else None,
                )
                if unless_suppressed is not None:
                    transaction.condition_check(
                        self.t.suppressions, unless_suppressed, condition=self.t.suppressions.phone.does_not_exist()
                    )
        except TransactWriteError as exc:
            if _is_condition_failure(exc) and not strict:
                return False
            raise
        return True

    def set_message_sid(self, recipient: RecipientRecord, attempt_id: str, sid: str) -> None:
        """Keep the SID even when a callback already moved the status past `queued`."""
        recipients = self.t.recipients
        try:
            recipients(recipient.campaign_id, recipient.recipient_id).update(
                actions=[recipients.message_sid.set(sid)], condition=recipients.attempt_id == attempt_id
            )
        except UpdateError as exc:
            if not _is_condition_failure(exc):
                raise

    def defer(self, recipient: RecipientRecord, until: datetime) -> None:
        """Park a recipient outside its sending window; the scheduler queues it again at `until`."""
        recipients = self.t.recipients
        try:
            recipients(recipient.campaign_id, recipient.recipient_id).update(
                actions=[
                    recipients.deferred_shard.set(unresolved_shard(recipient.recipient_id)),
                    recipients.deferred_until.set(until.isoformat()),
                ],
                condition=recipients.status == Status.IMPORTED.value,
            )
        except UpdateError as exc:
            if not _is_condition_failure(exc):
                raise

    def deferred_due(self, now: datetime) -> Iterator[RecipientRecord]:
        """Parked recipients whose sending window has opened (keys only)."""
        for shard in range(UNRESOLVED_SHARDS):
            yield from self.t.recipients.by_deferred.query(str(shard), self.t.recipients.deferred_until <= now.isoformat())

    def release(self, recipient: RecipientRecord) -> bool:
        """Unpark a recipient; False when someone else released it first."""
        recipients = self.t.recipients
        try:
            recipients(recipient.campaign_id, recipient.recipient_id).update(
                actions=[recipients.deferred_shard.remove(), recipients.deferred_until.remove()],
                condition=recipients.deferred_until == recipient.deferred_until,
            )
        except UpdateError as exc:
            if _is_condition_failure(exc):
                return False
            raise
        return True

    def set_exclusion(self, recipient: RecipientRecord, exclusion: str | None) -> None:
        """Why prepare leaves this recipient out (None: it is invited); only while it is not yet sent."""
        recipients = self.t.recipients
        action = recipients.exclusion.set(exclusion) if exclusion else recipients.exclusion.remove()
        try:
            recipients(recipient.campaign_id, recipient.recipient_id).update(
                actions=[action], condition=recipients.status == Status.IMPORTED.value
            )
        except UpdateError as exc:
            if not _is_condition_failure(exc):
                raise

    def _connection(self) -> Connection:
        return self.t.recipients._get_connection().connection

    def panel_exists(self, panel_id: str) -> bool:
        return any(True for _ in self.t.panels.query(panel_id, limit=1))

    # ------------------------------------------------------------------ suppressions and inbox
    def is_suppressed(self, phone: str) -> bool:
        try:
            self.t.suppressions.get(phone, consistent_read=True)
        except DoesNotExist:
            return False
        return True

    def suppress(self, phone: str, *, reason: str, source: str) -> None:
        self.t.suppressions(phone, reason=reason, source=source, created_at=utcnow()).save()

    def record_inbound(self, *, phone: str, to: str, body: str, message_sid: str, received_at: datetime) -> bool:
        """Store an inbound reply once per MessageSid; False when it was already stored."""
        inbox = self.t.inbox
        record = inbox(phone, message_sid, received_at=received_at, to=to, body=body)
        try:
            record.save(condition=inbox.message_sid.does_not_exist())
        except PutError as exc:
            if _is_condition_failure(exc):
                return False
            raise
        return True
