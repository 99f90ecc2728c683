"""Subscription lists with double opt-in, and the guard against SMS pumping.

A list is a campaign of kind "list" that is always sending: its message is the confirmation, and
each subscribe request is one of its recipients. So the confirmation goes through the sender like
any invitation (claim, suppression, quiet hours, throttle, at most once) and its delivery is tracked.
A subscription is `pending` until the person replies YES within the window, then `active`; one
never confirmed lapses. STOP ends every subscription of the number; `unsubscribe` ends one.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum

from pynamodb.exceptions import DoesNotExist, PutError, UpdateError

from smsinvite.consent import ConsentEntry, ConsentEvent, ConsentSource
from smsinvite.errors import NotFound
from smsinvite.observability import logger, mask_phone
from smsinvite.phones import InvalidPhone, LineType, normalise
from smsinvite.queues import Queue
from smsinvite.settings import Settings
from smsinvite.store import UNRESOLVED_SHARDS, Store, _is_condition_failure, recipient_id_for, unresolved_shard, utcnow
from smsinvite.sweeps import sweep
from smsinvite.tables import CampaignRecord, SubscriptionRecord

LIST_PREFIX = "list-"
LIMIT_WINDOWS = {"number": timedelta(days=1), "caller": timedelta(hours=1)}


class SubscriptionState(str, Enum):
    PENDING = "pending"
    ACTIVE = "active"
    LAPSED = "lapsed"
    UNSUBSCRIBED = "unsubscribed"


def list_campaign_id(list_id: str) -> str:
    return f"{LIST_PREFIX}{list_id}"


def is_list(campaign: CampaignRecord) -> bool:
    return campaign.kind == "list"


@dataclass(frozen=True)
class SubscribeOutcome:
    phone: str  # E.164 (as given when it is not a number), masked in results
    outcome: str  # pending, already_active, already_pending, or a refusal: invalid:<reason>, country_not_allowed, ...

    def as_dict(self) -> dict:
        return {"phone": mask_phone(self.phone), "outcome": self.outcome}


class PumpingGuard:
    """Refuses, before any Twilio call, what SMS pumping looks like: a country we do not text,
    a premium-rate number, or too many requests for one number or from one caller."""

    def __init__(self, store: Store, settings: Settings, clock: Callable[[], datetime] = utcnow) -> None:
        self.store, self.settings, self.clock = store, settings, clock

    def refusal(self, phone, caller: str) -> str | None:
        if phone.region not in self.settings.allowed_countries:
            return "country_not_allowed"
        if phone.line_type is LineType.PREMIUM_RATE:
            return "premium_rate"
        if phone.line_type is LineType.LANDLINE:
            return "landline"
        store, now = self.store, self.clock()
        number = f"subscribe#number#{store.phone_key(phone.e164)}"
        if not store.take_from_window(number, LIMIT_WINDOWS["number"], self.settings.subscribe_limit_per_number, now):
            return "rate_limited:number"
        if not store.take_from_window(f"subscribe#caller#{caller}", LIMIT_WINDOWS["caller"],
                                      self.settings.subscribe_limit_per_caller, now):
            return "rate_limited:caller"
        return None


class SubscriptionLists:
    def __init__(
        self, store: Store, settings: Settings, send_queue: Queue, clock: Callable[[], datetime] = utcnow
    ) -> None:
        self.store, self.settings, self.send_queue, self.clock = store, settings, send_queue, clock
        self.guard = PumpingGuard(store, settings, clock)

    # ------------------------------------------------------------------ lists
    def create_list(self, list_id: str, **attributes) -> CampaignRecord:
        now = self.clock()
        record = self.store.new_campaign(
            campaign_id=list_campaign_id(list_id), kind="list", state="sending", run=1, started_at=now,
            survey_url="-", **attributes,
        )
        self.store.create_campaign(record)
        return record

    def list_campaign(self, list_id: str) -> CampaignRecord:
        campaign = self.store.campaign(list_campaign_id(list_id))
        if not is_list(campaign):
            raise NotFound(f"list {list_id} does not exist")
        return campaign

    # ------------------------------------------------------------------ subscribe
    def subscribe(self, list_id: str, people: Iterable[Mapping[str, str]], caller: str) -> list[SubscribeOutcome]:
        campaign = self.list_campaign(list_id)
        return [self._subscribe_one(campaign, list_id, dict(person), caller) for person in people]

    def _subscribe_one(self, campaign: CampaignRecord, list_id: str, person: dict, caller: str) -> SubscribeOutcome:
        raw = person.pop("phone", "")
        try:
            phone = normalise(raw, campaign.default_region)
        except InvalidPhone as invalid:
            return SubscribeOutcome(raw, f"invalid:{invalid.reason.value}")
        if self.store.is_suppressed(phone.e164):
            # An opted-out person is not asked again; their own START or YES comes first.
            return SubscribeOutcome(phone.e164, "suppressed")
        existing = self._subscription(list_id, phone.e164)
        now = self.clock()
        if existing is not None and existing.state == SubscriptionState.ACTIVE.value:
            return SubscribeOutcome(phone.e164, "already_active")
        if existing is not None and self._pending(existing, now):
            if self._confirmation_unsent(campaign, existing):
                self._queue_confirmation(campaign, existing.recipient_id)  # a retried request: the claim sends once
                return SubscribeOutcome(phone.e164, "pending")
            return SubscribeOutcome(phone.e164, "already_pending")
        refusal = self.guard.refusal(phone, caller)
        if refusal:
            logger.info("subscribe refused", extra={"to": mask_phone(phone.e164), "reason": refusal})
            return SubscribeOutcome(phone.e164, refusal)
        recipient_id = recipient_id_for(campaign.campaign_id, f"{phone.e164}#{now.isoformat()}")
        until = now + timedelta(hours=self.settings.subscription_confirm_hours)
        subscriptions = self.store.t.subscriptions
        fields = {str(k): str(v) for k, v in person.items() if v not in (None, "")}
        record = subscriptions(
            list_id, phone.e164, state=SubscriptionState.PENDING.value, region=phone.region, fields=fields,
            requested_at=now, recipient_id=recipient_id, pending_shard=unresolved_shard(recipient_id),
            pending_until=until.isoformat(),
        )
        try:
            record.save(condition=self._replaceable(existing))
        except PutError as exc:
            if _is_condition_failure(exc):
                return SubscribeOutcome(phone.e164, "already_pending")
            raise
        self.store.append_consent(
            ConsentEntry(phone.e164, ConsentEvent.OPT_IN, ConsentSource.COMMAND, now, list_id=list_id,
                         detail=f"requested by {caller}; confirm by {until.isoformat()}")
        )
        self.store.add_recipient(
            campaign.campaign_id, phone, fields, import_id=f"subscribe:{list_id}", row_number=0,
            recipient_id=recipient_id,
        )
        self._queue_confirmation(campaign, recipient_id)
        return SubscribeOutcome(phone.e164, "pending")

    def _replaceable(self, existing: SubscriptionRecord | None):
        subscriptions = self.store.t.subscriptions
        if existing is None:
            return subscriptions.phone.does_not_exist()
        return subscriptions.state == existing.state

    def _confirmation_unsent(self, campaign: CampaignRecord, subscription: SubscriptionRecord) -> bool:
        try:
            recipient = self.store.recipient(campaign.campaign_id, subscription.recipient_id)
        except NotFound:
            return False
        return recipient.status == "imported"

    def _queue_confirmation(self, campaign: CampaignRecord, recipient_id: str) -> None:
        self.send_queue.send({"campaign_id": campaign.campaign_id, "recipient_id": recipient_id})

    # ------------------------------------------------------------------ replies and ends
    def confirm(self, phone: str, entry: ConsentEntry) -> list[str]:
        """YES from the number: confirm its pending subscriptions; the lists confirmed."""
        confirmed = []
        now = self.clock()
        for subscription in self._of_phone(phone):
            if subscription.state != SubscriptionState.PENDING.value:
                continue
            if not self._pending(subscription, now):
                self._end(subscription, SubscriptionState.LAPSED, ConsentEvent.LAPSED, ConsentSource.EXPIRY, now)
                continue
            if self._move(subscription, SubscriptionState.ACTIVE, confirmed_at=now):
                self.store.append_consent(ConsentEntry(
                    phone, ConsentEvent.CONFIRMATION, entry.source, entry.at, list_id=subscription.list_id,
                    scope=entry.scope, message_sid=entry.message_sid, text=entry.text,
                ))
                confirmed.append(subscription.list_id)
        return confirmed

    def end_all(self, phone: str, entry: ConsentEntry) -> list[str]:
        """STOP from the number: every pending or active subscription ends."""
        ended = []
        for subscription in self._of_phone(phone):
            if subscription.state in (SubscriptionState.PENDING.value, SubscriptionState.ACTIVE.value):
                if self._end(subscription, SubscriptionState.UNSUBSCRIBED, ConsentEvent.OPT_OUT, entry.source,
                             entry.at, entry=entry):
                    ended.append(subscription.list_id)
        return ended

    def unsubscribe(self, list_id: str, raw_phones: Iterable[str]) -> list[SubscribeOutcome]:
        campaign = self.list_campaign(list_id)
        outcomes = []
        for raw in raw_phones:
            try:
                phone = normalise(raw, campaign.default_region)
            except InvalidPhone as invalid:
                outcomes.append(SubscribeOutcome(raw, f"invalid:{invalid.reason.value}"))
                continue
            subscription = self._subscription(list_id, phone.e164)
            if subscription is None or subscription.state not in (
                SubscriptionState.PENDING.value, SubscriptionState.ACTIVE.value
            ):
                outcomes.append(SubscribeOutcome(phone.e164, "not_subscribed"))
                continue
            moved = self._end(subscription, SubscriptionState.UNSUBSCRIBED, ConsentEvent.OPT_OUT,
                              ConsentSource.COMMAND, self.clock())
            outcomes.append(SubscribeOutcome(phone.e164, "unsubscribed" if moved else "not_subscribed"))
        return outcomes

    def lapse_due(self, now: datetime, *, time_left: Callable[[], float], margin: float) -> Counter:
        """Pending subscriptions whose window closed without a YES lapse (the scheduler calls this)."""
        subscriptions = self.store.t.subscriptions

        def lapse(key) -> str:
            subscription = self._subscription(key.list_id, key.phone)
            if subscription is None or subscription.state != SubscriptionState.PENDING.value:
                return "changed_meanwhile"
            ended = self._end(subscription, SubscriptionState.LAPSED, ConsentEvent.LAPSED, ConsentSource.EXPIRY, now)
            return "lapsed" if ended else "changed_meanwhile"

        due = (
            key
            for shard in range(UNRESOLVED_SHARDS)
            for key in subscriptions.by_pending.query(str(shard), subscriptions.pending_until <= now.isoformat())
        )
        return sweep("lapse", due, lapse, time_left=time_left, margin=margin)

    # ------------------------------------------------------------------ storage
    def _subscription(self, list_id: str, phone: str) -> SubscriptionRecord | None:
        try:
            return self.store.t.subscriptions.get(list_id, phone, consistent_read=True)
        except DoesNotExist:
            return None

    def _of_phone(self, phone: str) -> list[SubscriptionRecord]:
        keys = list(self.store.t.subscriptions.by_phone.query(phone))
        found = (self._subscription(key.list_id, key.phone) for key in keys)
        return [s for s in found if s is not None]

    def _pending(self, subscription: SubscriptionRecord, now: datetime) -> bool:
        return (
            subscription.state == SubscriptionState.PENDING.value
            and subscription.pending_until is not None
            and subscription.pending_until > now.isoformat()
        )

    def _move(self, subscription: SubscriptionRecord, state: SubscriptionState, **changes) -> bool:
        subscriptions = self.store.t.subscriptions
        actions = [subscriptions.state.set(state.value), subscriptions.pending_shard.remove(),
                   subscriptions.pending_until.remove()]
        actions += [getattr(subscriptions, name).set(value) for name, value in changes.items()]
        try:
            subscriptions(subscription.list_id, subscription.phone).update(
                actions=actions, condition=subscriptions.state == subscription.state
            )
        except UpdateError as exc:
            if _is_condition_failure(exc):
                return False
            raise
        return True

    def _end(self, subscription, state, event, source, at, *, entry: ConsentEntry | None = None) -> bool:
        if not self._move(subscription, state, ended_at=at):
            return False
        self.store.append_consent(ConsentEntry(
            subscription.phone, event, source, at, list_id=subscription.list_id,
            scope=entry.scope if entry else None, message_sid=entry.message_sid if entry else None,
            text=entry.text if entry else None,
        ))
        return True

