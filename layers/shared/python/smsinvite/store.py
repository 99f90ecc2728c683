"""Storage adapter: every DynamoDB read and write the domain needs, behind named operations.

A recipient's status changes in one transaction with its counter shard, under a condition on the
status it had when decided. A change that lost a race learns the status DynamoDB holds from the
refusal and is decided again, so counters move exactly once per real transition, however often a
callback is delivered. A campaign's counts are the sum of its shards.
"""

from __future__ import annotations

import hashlib
import hmac
import random
import secrets
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import replace
from datetime import datetime, timedelta, timezone

from pynamodb.connection import Connection
from pynamodb.exceptions import DoesNotExist, PutError, TransactWriteError, UpdateError
from pynamodb.transactions import TransactWrite

from smsinvite.aws_clients import secrets_provider
from smsinvite.consent import LIFTED_BY_START, ConsentEntry, SuppressionReason
from smsinvite.errors import Conflict, NotFound
from smsinvite.phones import Phone
from smsinvite.settings import Settings
from smsinvite.status import Status, moves_forward
from smsinvite.tables import (
    CampaignRecord,
    ConsentRecord,
    ImportRecord,
    RecipientRecord,
    SuppressionRecord,
    Tables,
    counter,
    tables,
)

UNRESOLVED_SHARDS = 4
# Counter shards per campaign: at 100 messages a second and four moves each, about 25 writes a
# second land on each, well clear of one item's limits and of transaction conflicts.
COUNT_SHARDS = 16
DUE_SHARD = "due"
_MAX_RACE_RETRIES = 8
SECRET_MAX_AGE_SECONDS = 300
_CONFLICT_RETRIES = 6


def unresolved_shard(recipient_id: str) -> str:
    return str(int(recipient_id[:8], 16) % UNRESOLVED_SHARDS)


IN_FLIGHT_PREFIX = "f"


def open_send_shard(recipient_id: str, status: Status) -> str | None:
    """Where a recipient stands in the by-unresolved index, which follows its status on every write:
    "<n>" while its send's outcome is not known (claimed, unknown), "f<n>" while Twilio has it and its
    final status is still to come, and out of the index otherwise."""
    if status in (Status.CLAIMED, Status.UNKNOWN):
        return unresolved_shard(recipient_id)
    if status.in_flight:
        return IN_FLIGHT_PREFIX + unresolved_shard(recipient_id)
    return None


def count_shard(recipient_id: str) -> int:
    """The counter shard a recipient always counts in."""
    return int(recipient_id[8:16], 16) % COUNT_SHARDS


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def recipient_id_for(campaign_id: str, e164: str) -> str:
    """Deterministic, so the same number in one campaign is one item; opaque, so URLs carry no number."""
    return hashlib.blake2b(e164.encode(), key=campaign_id.encode()[:64], digest_size=12).hexdigest()


def _after(recipient: RecipientRecord, new: Status, changes: dict) -> RecipientRecord:
    """The recipient as the transition wrote it, without reading it back."""
    # null_check off: a guessed recipient (a status callback's) has only its keys and status.
    written = type(recipient).from_raw_data(recipient.serialize(null_check=False))
    written.status, written.status_rank = new.value, new.rank
    for name, value in {"unresolved_shard": open_send_shard(recipient.recipient_id, new), **changes}.items():
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

    def counts(self, campaign_id: str) -> dict[Status, int]:
        """The campaign's recipients per status: the sum of its counter shards, read consistently."""
        totals = dict.fromkeys(Status, 0)
        for shard in self.t.counts.query(campaign_id, consistent_read=True):
            for status in Status:
                totals[status] += int(getattr(shard, f"count_{status.value}") or 0)
        return totals

    def count_actions(self, campaign_id: str, deltas: Mapping[tuple[int, Status], int]) -> list[tuple]:
        """Counter updates for a batch of recipients: (the shard item, its ADD actions), per shard."""
        by_shard: dict[int, list] = {}
        for (shard, status), n in deltas.items():
            if n:
                by_shard.setdefault(shard, []).append(counter(self.t.counts, status).add(n))
        return [(self.t.counts(campaign_id, shard), actions) for shard, actions in sorted(by_shard.items())]

    # ------------------------------------------------------------------ recipients
    def recipient(self, campaign_id: str, recipient_id: str) -> RecipientRecord:
        try:
            return self.t.recipients.get(campaign_id, recipient_id, consistent_read=True)
        except DoesNotExist:
            raise NotFound("recipient does not exist") from None

    def add_recipient(
        self, campaign_id: str, phone: Phone, fields: Mapping[str, str], *, import_id: str, row_number: int,
        recipient_id: str | None = None, code: str | None = None, code_expires_at: datetime | None = None,
    ) -> bool:
        """Store a new recipient; False when the campaign already has this number (first one wins)."""
        record = self.t.recipients(
            campaign_id,
            recipient_id or recipient_id_for(campaign_id, phone.e164),
            phone=phone.e164,
            region=phone.region,
            line_type=phone.line_type.value,
            fields=dict(fields),
            import_id=import_id,
            row_number=row_number,
            updated_at=utcnow(),
            code=code,
            code_expires_at=code_expires_at,
        )
        try:
            with TransactWrite(connection=self._connection()) as transaction:
                transaction.save(record, condition=self.t.recipients.recipient_id.does_not_exist())
                transaction.update(
                    self.t.counts(campaign_id, count_shard(record.recipient_id)),
                    actions=[counter(self.t.counts, Status.IMPORTED).add(1)],
                )
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

    def recipients_in(self, campaign_id: str, status: Status) -> Iterator[RecipientRecord]:
        """The campaign's recipients that have `status` now, read consistently."""
        recipients = self.t.recipients
        yield from recipients.query(campaign_id, filter_condition=recipients.status == status.value, consistent_read=True)

    def unresolved_recipients(self, *, claimed_before: str) -> Iterator[RecipientRecord]:
        """Recipients claimed for a send whose outcome was never recorded (unknown, or the sender died)."""
        for shard in range(UNRESOLVED_SHARDS):
            yield from self.t.recipients.by_unresolved.query(
                str(shard), self.t.recipients.claimed_at < claimed_before
            )

    def in_flight_recipients(self, *, sent_before: str) -> Iterator[RecipientRecord]:
        """Recipients Twilio accepted before `sent_before` whose final status has not come."""
        for shard in range(UNRESOLVED_SHARDS):
            yield from self.t.recipients.by_unresolved.query(
                f"{IN_FLIGHT_PREFIX}{shard}", self.t.recipients.claimed_at < sent_before
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
        that claimed the recipient may move it. `recipient` may be a guess (keys and a likely status,
        as a status callback has): a wrong guess costs one refused write, which returns the item as
        it is. Returns the recipient as written, or None if the move is refused or it no longer exists.
        """
        current = recipient
        for _ in range(_MAX_RACE_RETRIES):
            old = Status(current.status)
            allowed = moves_forward(old, new) or old in backward_from
            if not allowed or (owned_by is not None and current.attempt_id != owned_by):
                return None
            written, seen = self._write_transition(current, old, new, owned_by, changes)
            if written:
                return _after(current, new, changes)
            current = seen if seen is not None else self._reread(current)
            if current is None:
                return None
        raise Conflict("recipient status kept changing; giving up this attempt")

    def guess(self, campaign_id: str, recipient_id: str, status: Status, attempt_id: str | None) -> RecipientRecord:
        """A recipient known only by its keys, with the status it most likely has, for `transition`."""
        return self.t.recipients(campaign_id, recipient_id, status=status.value, attempt_id=attempt_id)

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
            # PynamoDB sends condition checks before updates: the campaign, the suppression, the recipient.
            reasons = [r.code if r is not None else None for r in exc.cancellation_reasons]
            failed = [i for i, code in enumerate(reasons) if code == "ConditionalCheckFailed"]
            if not failed:
                raise
            return None, ("campaign", "suppressed", "taken")[failed[0]]
        return _after(recipient, Status.CLAIMED, changes), None

    def _write_transition(
        self, current, old: Status, new: Status, owned_by, changes: dict, *,
        campaign_sending: bool = False, unless_suppressed: str | None = None,
    ) -> tuple[bool, RecipientRecord | None]:
        """One transaction: the recipient under its condition, and its counter shard.

        (True, None) when written; (False, the recipient as DynamoDB holds it) when the condition
        failed, or (False, None) when the refusal did not carry the item. A claim (`strict`) raises.
        """
        recipients, counts = self.t.recipients, self.t.counts
        changes = {"unresolved_shard": open_send_shard(current.recipient_id, new), **changes}
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

        def write(transaction: TransactWrite) -> None:
            if campaign_sending:
                transaction.condition_check(
                    self.t.campaigns, current.campaign_id, condition=self.t.campaigns.state == "sending"
                )
            if unless_suppressed is not None:
                transaction.condition_check(
                    self.t.suppressions, self.phone_key(unless_suppressed),
                    condition=self.t.suppressions.subject.does_not_exist(),
                )
            transaction.update(
                recipients(current.campaign_id, current.recipient_id),
                actions=actions,
                condition=condition,
                return_values="ALL_OLD",
            )
            transaction.update(
                counts(current.campaign_id, count_shard(current.recipient_id)),
                actions=[counter(counts, old).add(-1), counter(counts, new).add(1)],
            )

        try:
            self._transact(write)
        except TransactWriteError as exc:
            if not _is_condition_failure(exc) or strict:
                raise
            reason = exc.cancellation_reasons[0]
            seen = recipients.from_raw_data(reason.raw_item) if reason is not None and reason.raw_item else None
            return False, seen
        return True, None

    def _transact(self, write) -> None:
        """One transaction; one that lost to a concurrent transaction on a shared item (a counter
        shard, the campaign) was not applied at all, so it is simply tried again after a moment."""
        for attempt in range(_CONFLICT_RETRIES):
            try:
                with TransactWrite(connection=self._connection()) as transaction:
                    write(transaction)
                return
            except TransactWriteError as exc:
                codes = {r.code for r in exc.cancellation_reasons if r is not None}
                if "TransactionConflict" not in codes or "ConditionalCheckFailed" in codes:
                    raise
                if attempt == _CONFLICT_RETRIES - 1:
                    raise
                time.sleep(random.uniform(0, 0.01 * 2**attempt))

    def _reread(self, recipient: RecipientRecord) -> RecipientRecord | None:
        try:
            return self.recipient(recipient.campaign_id, recipient.recipient_id)
        except NotFound:
            return None

    def set_message_sid(self, recipient: RecipientRecord, attempt_id: str, sid: str) -> None:
        """Keep the SID even when a callback already moved the status past `queued`."""
        self.note_attempt(recipient.campaign_id, recipient.recipient_id, attempt_id, message_sid=sid)

    def note_attempt(self, campaign_id: str, recipient_id: str, attempt_id: str, **attributes) -> bool:
        """Note facts about a send attempt on its recipient, leaving the status as it is; False when the
        recipient belongs to another attempt (or none) by now."""
        recipients = self.t.recipients
        actions = [
            getattr(recipients, name).remove() if value is None else getattr(recipients, name).set(value)
            for name, value in attributes.items()
        ]
        try:
            recipients(campaign_id, recipient_id).update(actions=actions, condition=recipients.attempt_id == attempt_id)
        except UpdateError as exc:
            if _is_condition_failure(exc):
                return False
            raise
        return True

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

    # ------------------------------------------------------------------ suppressions and consent
    def phone_key(self, e164: str) -> str:
        """A keyed hash that stands for a number: it blocks an erased number without keeping it."""
        key = secrets_provider().get(self.settings.phone_hash_key_secret, max_age=SECRET_MAX_AGE_SECONDS)
        return "h1:" + hmac.new(key.encode(), e164.encode(), hashlib.sha256).hexdigest()[:40]

    def suppression(self, phone: str) -> SuppressionRecord | None:
        try:
            return self.t.suppressions.get(self.phone_key(phone), consistent_read=True)
        except DoesNotExist:
            return None

    def is_suppressed(self, phone: str) -> bool:
        return self.suppression(phone) is not None

    def suppressed_among(self, batches, phones: Iterable[str]) -> set[str]:
        """Which of these numbers are on the suppression list, in batched reads."""
        by_key = {self.phone_key(phone): phone for phone in phones}
        return {by_key[s.subject] for s in batches.get(self.t.suppressions, [(key,) for key in by_key])}

    def suppress(self, entry: ConsentEntry, reason: SuppressionReason) -> None:
        """Put the number on the suppression list, with its ledger entry, in one transaction.

        A number already suppressed keeps its first reason: a blocklisted number that also says STOP
        stays blocklisted (START will not lift it), and the ledger still records the STOP.
        """
        suppressions = self.t.suppressions
        actions = [
            suppressions.reason.set(suppressions.reason | reason.value),
            suppressions.source.set(suppressions.source | entry.source.value),
            suppressions.created_at.set(suppressions.created_at | entry.at),
            suppressions.phone.set(entry.phone),
        ]
        if entry.scope:
            actions.append(suppressions.scope.set(suppressions.scope | entry.scope))
        with TransactWrite(connection=self._connection()) as transaction:
            transaction.save(self._ledger_item(entry))
            transaction.update(suppressions(self.phone_key(entry.phone)), actions=actions)

    def lift_opt_out(self, entry: ConsentEntry) -> str | None:
        """Lift the number's own opt-out (START), with its ledger entry. None when nothing blocks the
        number any more; otherwise the reason that still does (a blocklist, a dead number)."""
        suppressions = self.t.suppressions
        key = self.phone_key(entry.phone)
        try:
            with TransactWrite(connection=self._connection()) as transaction:
                transaction.save(self._ledger_item(entry))
                transaction.delete(
                    suppressions(key),
                    condition=suppressions.subject.does_not_exist() | suppressions.reason.is_in(*LIFTED_BY_START),
                )
        except TransactWriteError as exc:
            if not _is_condition_failure(exc):
                raise
            still = self.suppression(entry.phone)
            blocked = still.reason if still is not None else None
            self.append_consent(replace(entry, detail=f"still suppressed: {blocked}") if blocked else entry)
            return blocked
        return None

    def append_consent(self, entry: ConsentEntry) -> None:
        self._ledger_item(entry).save()

    def consent_of(self, phone: str) -> list[ConsentRecord]:
        """The number's ledger, oldest first."""
        return sorted(self.t.consent.query(self.phone_key(phone), consistent_read=True), key=lambda e: e.at)

    def _ledger_item(self, entry: ConsentEntry) -> ConsentRecord:
        return self.t.consent(
            self.phone_key(entry.phone),
            entry.key or f"{entry.at.isoformat()}#{secrets.token_hex(4)}",
            phone=entry.phone,
            event=entry.event.value,
            source=entry.source.value,
            at=entry.at,
            list_id=entry.list_id,
            scope=entry.scope,
            message_sid=entry.message_sid,
            text=entry.text,
            detail=entry.detail,
        )

    # ------------------------------------------------------------------ rate limits
    def _window(self, name: str, window: timedelta, now: datetime):
        """The fixed window `now` falls in, as its LimitsTable item, and when DynamoDB may drop it."""
        seconds = int(window.total_seconds())
        start = int(now.timestamp()) // seconds * seconds
        return self.t.limits(f"{name}#{start}"), start + 2 * seconds

    def take_from_window(self, name: str, window: timedelta, limit: int, now: datetime) -> bool:
        """Use one of the window's `limit` uses, in one conditional write; False when it is used up."""
        limits = self.t.limits
        item, expires = self._window(name, window, now)
        try:
            item.update(
                actions=[limits.used.add(1), limits.expires_at.set(expires)],
                condition=limits.used.does_not_exist() | (limits.used < limit),
            )
        except UpdateError as exc:
            if _is_condition_failure(exc):
                return False
            raise
        return True

    def add_to_window(self, name: str, window: timedelta, now: datetime) -> None:
        limits = self.t.limits
        item, expires = self._window(name, window, now)
        item.update(actions=[limits.used.add(1), limits.expires_at.set(expires)])

    def used_in_window(self, name: str, window: timedelta, now: datetime) -> int:
        item, _ = self._window(name, window, now)
        try:
            return int(self.t.limits.get(item.limit_key, consistent_read=True).used)
        except DoesNotExist:
            return 0

    # ------------------------------------------------------------------ inbox
    def record_inbound(self, record_fields: dict) -> bool:
        """Store an inbound reply once per MessageSid; False when it was already stored."""
        inbox = self.t.inbox
        record = inbox(**record_fields)
        try:
            record.save(condition=inbox.message_sid.does_not_exist())
        except PutError as exc:
            if _is_condition_failure(exc):
                return False
            raise
        return True

    def latest_recipient(self, phone: str) -> RecipientRecord | None:
        """The number's most recently updated recipient in any campaign: what a reply answers."""
        recipients = self.t.recipients
        keys = [(key.campaign_id, key.recipient_id) for key in recipients.by_phone.query(phone)]
        found = [r for r in recipients.batch_get(keys)] if keys else []
        sent = [r for r in found if r.updated_at is not None]
        return max(sent, key=lambda r: r.updated_at) if sent else None
