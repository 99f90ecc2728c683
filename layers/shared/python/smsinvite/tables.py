"""The one table module: PynamoDB models for every table in template.yaml.

Models are bound to table names from Settings at call time (not at import), so nothing touches
DynamoDB or reads the environment on import, and tests can bind fresh names. Endpoints come from
the usual configuration (AWS_ENDPOINT_URL_DYNAMODB locally), never from code.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from pynamodb.attributes import (
    MapAttribute,
    NumberAttribute,
    UnicodeAttribute,
    UTCDateTimeAttribute,
)
from pynamodb.indexes import AllProjection, GlobalSecondaryIndex, KeysOnlyProjection
from pynamodb.models import Model

from smsinvite.aws_clients import endpoint_for
from smsinvite.settings import Settings
from smsinvite.status import Status


class _ByPhone(GlobalSecondaryIndex):
    class Meta:
        index_name = "by-phone"
        projection = KeysOnlyProjection()

    phone = UnicodeAttribute(hash_key=True)
    campaign_id = UnicodeAttribute(range_key=True)


class _ByPool(GlobalSecondaryIndex):
    class Meta:
        index_name = "by-pool"
        projection = KeysOnlyProjection()

    pool_campaign_id = UnicodeAttribute(hash_key=True)
    code = UnicodeAttribute(range_key=True)


class _ByUnresolved(GlobalSecondaryIndex):
    class Meta:
        index_name = "by-unresolved"
        projection = AllProjection()

    unresolved_shard = UnicodeAttribute(hash_key=True)
    claimed_at = UnicodeAttribute(range_key=True)


class _ByDue(GlobalSecondaryIndex):
    class Meta:
        index_name = "by-due"
        projection = KeysOnlyProjection()

    due_shard = UnicodeAttribute(hash_key=True)
    due_at = UnicodeAttribute(range_key=True)


class _ByCampaign(GlobalSecondaryIndex):
    class Meta:
        index_name = "by-campaign"
        projection = KeysOnlyProjection()

    campaign_id = UnicodeAttribute(hash_key=True)
    import_id = UnicodeAttribute(range_key=True)


class _ByDeferred(GlobalSecondaryIndex):
    class Meta:
        index_name = "by-deferred"
        projection = KeysOnlyProjection()

    deferred_shard = UnicodeAttribute(hash_key=True)
    deferred_until = UnicodeAttribute(range_key=True)


class _ByReminder(GlobalSecondaryIndex):
    class Meta:
        index_name = "by-reminder"
        projection = KeysOnlyProjection()

    reminder_shard = UnicodeAttribute(hash_key=True)
    reminder_due_at = UnicodeAttribute(range_key=True)


class CampaignRecord(Model):
    campaign_id = UnicodeAttribute(hash_key=True)
    # "survey" sends invitations with codes; "list" is a subscription list sending its confirmations.
    kind = UnicodeAttribute(default="survey")
    name = UnicodeAttribute()
    state = UnicodeAttribute(default="draft")
    reply_text = UnicodeAttribute(null=True)  # a list's answer to a confirming YES
    survey_fields = UnicodeAttribute(null=True)  # comma-separated: recipient fields a redeem returns to the survey
    # Reminders to non-responders (smsinvite.reminders): the plan, and when its next round is due.
    reminders = UnicodeAttribute(null=True)
    reminder_shard = UnicodeAttribute(null=True)
    reminder_due_at = UnicodeAttribute(null=True)  # UTC ISO time, compared as text
    survey_url = UnicodeAttribute()
    message_template = UnicodeAttribute()
    sender = UnicodeAttribute(null=True)
    default_region = UnicodeAttribute(default="US")
    allow_landlines = NumberAttribute(default=0)
    phone_column = UnicodeAttribute(null=True)
    created_at = UTCDateTimeAttribute()
    updated_at = UTCDateTimeAttribute()
    # Sending settings (smsinvite.campaigns.CampaignSettings holds their rules).
    rate_per_second = NumberAttribute(default=1)
    window_opens = UnicodeAttribute(default="08:00")
    window_closes = UnicodeAttribute(default="21:00")
    code_length = NumberAttribute(null=True)
    code_source = UnicodeAttribute(default="generated")
    code_expires_after_seconds = NumberAttribute(null=True)
    audience = UnicodeAttribute(null=True)  # JSON: {"panels": [{"panel_id": ..., "rules": [...]}]}
    start_at = UTCDateTimeAttribute(null=True)
    recurrence = UnicodeAttribute(null=True)  # JSON: {"every": "1d", "until": ..., "max_runs": ...}
    # Whatever changes the audience or the message bumps the revision; approve needs the prepared one.
    revision = NumberAttribute(default=0)
    prepared_revision = NumberAttribute(null=True)
    preparation = UnicodeAttribute(null=True)  # JSON: a prepare under way (cursor and running tallies)
    audience_request = UnicodeAttribute(null=True)  # the request id of the panel imports a prepare awaits
    prepare_seq = NumberAttribute(default=0)
    preview = UnicodeAttribute(null=True)  # JSON: the last finished preparation's preview
    last_error = UnicodeAttribute(null=True)
    run = NumberAttribute(default=0)  # how many times sending has started (recurring campaigns: each run)
    runs_completed = NumberAttribute(default=0)
    dispatch_cursor = UnicodeAttribute(null=True)
    dispatched = NumberAttribute(default=0)
    dispatch_done = NumberAttribute(null=True)  # the run whose dispatch finished
    # Sparse index of campaigns the scheduler must look at: a start, a next run, a watchdog check.
    due_shard = UnicodeAttribute(null=True)
    due_at = UnicodeAttribute(null=True)
    approved_at = UTCDateTimeAttribute(null=True)
    started_at = UTCDateTimeAttribute(null=True)
    finished_at = UTCDateTimeAttribute(null=True)
    # One import at a time per campaign: batched writes are only safe without a concurrent writer.
    import_lease = UnicodeAttribute(null=True)
    import_lease_until = NumberAttribute(null=True)
    rows_duplicate = NumberAttribute(default=0)
    rows_invalid = NumberAttribute(default=0)
    rows_landline = NumberAttribute(default=0)

    by_due = _ByDue()
    by_reminder = _ByReminder()


class CountShardRecord(Model):
    """One of a campaign's counter shards: live counts per status, changed with ADD in the same
    transaction as a recipient's status. A recipient always counts in the same shard (by its id), so
    no item takes every write of a campaign sending at full rate; a campaign's counts are the sum."""

    campaign_id = UnicodeAttribute(hash_key=True)
    shard = NumberAttribute(range_key=True)
    count_imported = NumberAttribute(default=0)
    count_claimed = NumberAttribute(default=0)
    count_unknown = NumberAttribute(default=0)
    count_unresolved = NumberAttribute(default=0)
    count_queued = NumberAttribute(default=0)
    count_sending = NumberAttribute(default=0)
    count_sent = NumberAttribute(default=0)
    count_awaiting_final_status = NumberAttribute(default=0)
    count_delivered = NumberAttribute(default=0)
    count_partially_delivered = NumberAttribute(default=0)
    count_undelivered = NumberAttribute(default=0)
    count_failed = NumberAttribute(default=0)
    count_skipped_opted_out = NumberAttribute(default=0)
    count_excluded = NumberAttribute(default=0)
    count_cancelled = NumberAttribute(default=0)


class RecipientRecord(Model):
    campaign_id = UnicodeAttribute(hash_key=True)
    recipient_id = UnicodeAttribute(range_key=True)
    phone = UnicodeAttribute()
    region = UnicodeAttribute(null=True)
    line_type = UnicodeAttribute(null=True)
    fields = MapAttribute(default=dict)
    status = UnicodeAttribute(default=Status.IMPORTED.value)
    status_rank = NumberAttribute(default=0)
    attempt_id = UnicodeAttribute(null=True)
    claimed_at = UnicodeAttribute(null=True)
    # In the by-unresolved index while the send is open: "<n>" while its outcome is unknown (claimed or
    # unknown), "f<n>" while Twilio has it and its final status is still to come (smsinvite.store).
    unresolved_shard = UnicodeAttribute(null=True)
    # The send's ValidityPeriod ends here: past it, Twilio would no longer deliver the message.
    valid_until = UnicodeAttribute(null=True)
    # Reconciliation: when Twilio's list first showed no such message (a second empty read, a
    # confirmation delay later, is the evidence that Twilio never created it).
    list_empty_at = UnicodeAttribute(null=True)
    # A status callback came for this attempt whose status we could not apply: Twilio has the message.
    twilio_status = UnicodeAttribute(null=True)
    message_sid = UnicodeAttribute(null=True)
    error_code = NumberAttribute(null=True)
    failure_reason = UnicodeAttribute(null=True)
    import_id = UnicodeAttribute(null=True)
    row_number = NumberAttribute(null=True)
    body_digest = UnicodeAttribute(null=True)
    updated_at = UTCDateTimeAttribute(null=True)
    # The invitation code, written in one transaction with the code's own item (smsinvite.codes).
    code = UnicodeAttribute(null=True)
    code_expires_at = UTCDateTimeAttribute(null=True)  # a copy of the code's expiry, checked at send time
    # Set by prepare when the recipient is left out (missing_field:<name>, not_matching_rules, suppressed).
    exclusion = UnicodeAttribute(null=True)
    # Parked outside the recipient's sending window: the scheduler queues it again at deferred_until.
    deferred_shard = UnicodeAttribute(null=True)
    deferred_until = UnicodeAttribute(null=True)
    reminders_sent = NumberAttribute(null=True)  # reminder rounds this invitee was put in

    by_phone = _ByPhone()
    by_deferred = _ByDeferred()
    by_unresolved = _ByUnresolved()


class ImportRecord(Model):
    import_id = UnicodeAttribute(hash_key=True)
    kind = UnicodeAttribute()  # recipients, panel, tokens, suppressions
    source = UnicodeAttribute(default="s3")  # s3, manual (add_recipients), panel (add_panel)
    bucket = UnicodeAttribute(null=True)
    key = UnicodeAttribute(null=True)
    version = UnicodeAttribute(null=True)
    campaign_id = UnicodeAttribute(null=True)
    panel_id = UnicodeAttribute(null=True)
    phone_column = UnicodeAttribute(null=True)
    state = UnicodeAttribute(default="running")
    rows_processed = NumberAttribute(default=0)
    outcomes = MapAttribute(default=dict)
    reason = UnicodeAttribute(null=True)
    warning = UnicodeAttribute(null=True)
    # Where to resume: a byte offset into the CSV (with its layout), or a panel page key.
    position = UnicodeAttribute(null=True)
    layout = UnicodeAttribute(null=True)
    rejected_parts = NumberAttribute(default=0)
    report_key = UnicodeAttribute(null=True)
    started_at = UTCDateTimeAttribute()
    updated_at = UTCDateTimeAttribute(null=True)
    finished_at = UTCDateTimeAttribute(null=True)

    by_campaign = _ByCampaign()


class CodeRecord(Model):
    code = UnicodeAttribute(hash_key=True)
    campaign_id = UnicodeAttribute()
    # Set while the code waits in a campaign's pool (from a tokens file); removed when assigned.
    pool_campaign_id = UnicodeAttribute(null=True)
    recipient_id = UnicodeAttribute(null=True)
    import_id = UnicodeAttribute(null=True)
    row_number = NumberAttribute(null=True)
    expires_at = UTCDateTimeAttribute(null=True)
    # TTL: DynamoDB deletes the code some time after it can no longer be used.
    purge_at = NumberAttribute(null=True)
    # What the invitee did with it (smsinvite.redemption): the first click, the redemption, the answer.
    clicked_at = UTCDateTimeAttribute(null=True)
    redeemed_at = UTCDateTimeAttribute(null=True)
    session_id = UnicodeAttribute(null=True)  # the survey session that redeemed it
    completed_at = UTCDateTimeAttribute(null=True)

    by_pool = _ByPool()


class SuppressionRecord(Model):
    # A keyed hash of the E.164 number (Store.phone_key), so an erased number stays blocked.
    subject = UnicodeAttribute(hash_key=True)
    phone = UnicodeAttribute(null=True)  # removed when the number is erased
    reason = UnicodeAttribute()  # blocklist, opted_out, undeliverable, erased
    source = UnicodeAttribute()  # import, keyword, command, carrier_error, erasure
    created_at = UTCDateTimeAttribute()
    scope = UnicodeAttribute(null=True)  # the sender an opt-out was sent to
    import_id = UnicodeAttribute(null=True)
    row_number = NumberAttribute(null=True)


class ConsentRecord(Model):
    """One consent event in the ledger, appended and never changed."""

    subject = UnicodeAttribute(hash_key=True)  # Store.phone_key of the number
    entry = UnicodeAttribute(range_key=True)  # ISO time and a random suffix: the ledger's order
    phone = UnicodeAttribute()
    event = UnicodeAttribute()  # smsinvite.consent.ConsentEvent
    source = UnicodeAttribute()  # smsinvite.consent.ConsentSource
    at = UTCDateTimeAttribute()
    list_id = UnicodeAttribute(null=True)
    scope = UnicodeAttribute(null=True)
    message_sid = UnicodeAttribute(null=True)
    text = UnicodeAttribute(null=True)
    detail = UnicodeAttribute(null=True)  # e.g. the error code, "polite phrasing", "still blocked: blocklist"


class _SubscriptionsByPhone(GlobalSecondaryIndex):
    class Meta:
        index_name = "by-phone"
        projection = KeysOnlyProjection()

    phone = UnicodeAttribute(hash_key=True)
    list_id = UnicodeAttribute(range_key=True)


class _ByPending(GlobalSecondaryIndex):
    class Meta:
        index_name = "by-pending"
        projection = KeysOnlyProjection()

    pending_shard = UnicodeAttribute(hash_key=True)
    pending_until = UnicodeAttribute(range_key=True)


class SubscriptionRecord(Model):
    list_id = UnicodeAttribute(hash_key=True)
    phone = UnicodeAttribute(range_key=True)
    state = UnicodeAttribute()  # smsinvite.subscriptions.SubscriptionState
    region = UnicodeAttribute(null=True)
    fields = MapAttribute(default=dict)
    requested_at = UTCDateTimeAttribute(null=True)
    confirmed_at = UTCDateTimeAttribute(null=True)
    ended_at = UTCDateTimeAttribute(null=True)
    # The confirmation message: a recipient of the list's confirmations campaign (one per request).
    recipient_id = UnicodeAttribute(null=True)
    # Sparse index of pending subscriptions by when they lapse.
    pending_shard = UnicodeAttribute(null=True)
    pending_until = UnicodeAttribute(null=True)

    by_phone = _SubscriptionsByPhone()
    by_pending = _ByPending()


class LimitRecord(Model):
    limit_key = UnicodeAttribute(hash_key=True)
    used = NumberAttribute(default=0)
    expires_at = NumberAttribute()


class PanelMemberRecord(Model):
    panel_id = UnicodeAttribute(hash_key=True)
    phone = UnicodeAttribute(range_key=True)
    region = UnicodeAttribute(null=True)
    line_type = UnicodeAttribute(null=True)
    fields = MapAttribute(default=dict)
    import_id = UnicodeAttribute(null=True)
    row_number = NumberAttribute(null=True)


class InboxRecord(Model):
    phone = UnicodeAttribute(hash_key=True)
    message_sid = UnicodeAttribute(range_key=True)
    received_at = UTCDateTimeAttribute()
    to = UnicodeAttribute()
    body = UnicodeAttribute()
    purge_at = NumberAttribute(null=True)
    # The invitation this most likely answers: the number's latest recipient.
    campaign_id = UnicodeAttribute(null=True)
    recipient_id = UnicodeAttribute(null=True)
    intent = UnicodeAttribute(null=True)  # smsinvite.keywords.Intent
    keyword = UnicodeAttribute(null=True)
    flagged = NumberAttribute(null=True)  # 1: a person should read it (a polite opt-out)


@dataclass(frozen=True)
class Tables:
    campaigns: type[CampaignRecord]
    counts: type[CountShardRecord]
    recipients: type[RecipientRecord]
    imports: type[ImportRecord]
    codes: type[CodeRecord]
    suppressions: type[SuppressionRecord]
    inbox: type[InboxRecord]
    panels: type[PanelMemberRecord]
    consent: type[ConsentRecord]
    subscriptions: type[SubscriptionRecord]
    limits: type[LimitRecord]


def tables(settings: Settings) -> Tables:
    return _bind(
        settings.aws_region,
        endpoint_for("dynamodb"),
        settings.campaigns_table,
        settings.counts_table,
        settings.recipients_table,
        settings.imports_table,
        settings.codes_table,
        settings.suppressions_table,
        settings.inbox_table,
        settings.panels_table,
        settings.consent_table,
        settings.subscriptions_table,
        settings.limits_table,
    )


@functools.lru_cache(maxsize=16)
def _bind(
    region: str,
    host: str | None,
    campaigns: str,
    counts: str,
    recipients: str,
    imports: str,
    codes: str,
    suppressions: str,
    inbox: str,
    panels: str,
    consent: str,
    subscriptions: str,
    limits: str,
) -> Tables:
    def bound(model: type[Model], table_name: str):
        meta = type("Meta", (), {"table_name": table_name, "region": region, "host": host})
        return type(model.__name__, (model,), {"Meta": meta, "__module__": __name__})

    return Tables(
        campaigns=bound(CampaignRecord, campaigns),
        counts=bound(CountShardRecord, counts),
        recipients=bound(RecipientRecord, recipients),
        imports=bound(ImportRecord, imports),
        codes=bound(CodeRecord, codes),
        suppressions=bound(SuppressionRecord, suppressions),
        inbox=bound(InboxRecord, inbox),
        panels=bound(PanelMemberRecord, panels),
        consent=bound(ConsentRecord, consent),
        subscriptions=bound(SubscriptionRecord, subscriptions),
        limits=bound(LimitRecord, limits),
    )


def raw_item(model: type[Model], **values) -> dict:
    """An item in DynamoDB's JSON, serialised by the model's own attributes.

    For batch writes of many rows: building and serialising a model instance costs about five
    times as much, which is most of an import's CPU time.
    """
    attributes = model.get_attributes()
    item = {}
    for name, value in values.items():
        if value is not None:
            attribute = attributes[name]
            item[attribute.attr_name] = {attribute.attr_type: attribute.serialize(value)}
    return item


def counter(counts: type[CountShardRecord], status: Status) -> NumberAttribute:
    return getattr(counts, f"count_{status.value}")
