"""A campaign's status, its report, and the per-recipient CSV export under reports/ (never imported)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator

from smsinvite import aws_clients
from smsinvite.batches import DynamoBatches
from smsinvite.consent import LEDGER_COLUMNS
from smsinvite.observability import mask_phone, publish_funnel
from smsinvite.reports import REPORTS_PREFIX, JoinedChunks, batched, csv_text
from smsinvite.settings import Settings
from smsinvite.status import Status
from smsinvite.store import Store, utcnow
from smsinvite.tables import CampaignRecord

# Done from the sender's point of view: handed to Twilio, or never to be sent. A run completes on these.
_DONE = tuple(s for s in Status if s.rank >= Status.QUEUED.rank or s.is_settled)
_EXPORT_COLUMNS = (
    "recipient_id", "phone", "region", "status", "failure_reason", "error_code", "code", "message_sid", "updated_at",
)


class CampaignReport:
    def __init__(self, campaign: CampaignRecord, store: Store) -> None:
        self.campaign = campaign
        self.store = store

    def counts(self) -> dict[str, int]:
        return {status.value: n for status, n in self.store.counts(self.campaign.campaign_id).items()}

    def status(self) -> dict:
        campaign, counts = self.campaign, self.counts()
        body = {
            "campaign_id": campaign.campaign_id,
            "name": campaign.name,
            "state": campaign.state,
            "run": int(campaign.run),
            "revision": int(campaign.revision),
            "prepared_is_current": campaign.prepared_revision is not None
            and int(campaign.prepared_revision) == int(campaign.revision),
            "counts": counts,
            "progress": {"total": sum(counts.values()), "done": sum(counts[s.value] for s in _DONE)},
            "dispatched": int(campaign.dispatched or 0),
            "rows_excluded": {
                "duplicate": int(campaign.rows_duplicate or 0),
                "invalid": int(campaign.rows_invalid or 0),
                "landline": int(campaign.rows_landline or 0),
            },
        }
        for name in ("start_at", "approved_at", "started_at", "finished_at"):
            value = getattr(campaign, name)
            if value is not None:
                body[name] = value.isoformat()
        if campaign.due_at:
            body["next_check_at"] = campaign.due_at
        if campaign.last_error:
            body["last_error"] = campaign.last_error
        return body

    def report(self) -> dict:
        """The status, what became of every recipient by reason, and the preview it was sent from."""
        campaign, store = self.campaign, self.store
        reasons: Counter = Counter()
        deferred: list[str] = []
        codes: list[tuple[str]] = []
        for recipient in store.t.recipients.query(
            campaign.campaign_id, attributes_to_get=["status", "failure_reason", "error_code", "deferred_until", "code"]
        ):
            if recipient.code and recipient.status in _HANDED_OVER:
                codes.append((recipient.code,))
            if recipient.failure_reason and recipient.status in _REASONED:
                reasons[f"{recipient.status}: {recipient.failure_reason}"] += 1
            elif recipient.status == Status.IMPORTED.value and recipient.deferred_until:
                deferred.append(recipient.deferred_until)
        status = self.status()
        counts = {name: n for name, n in status.pop("counts").items() if n}
        handed_over = sum(counts.get(s, 0) for s in _HANDED_OVER)
        delivered = counts.get("delivered", 0)
        used = DynamoBatches().get(store.t.codes, codes)
        funnel = {
            "audience": sum(counts.values()),
            "excluded": sum(counts.get(s, 0) for s in ("excluded", "skipped_opted_out", "cancelled")),
            "sent": handed_over,
            "delivered": delivered,
            "failed": counts.get("failed", 0) + counts.get("undelivered", 0),
            # Neither known sent nor known unsent: only an operator resends them (resend_unresolved).
            "unresolved": counts.get("unresolved", 0),
            "clicked": sum(1 for c in used if c.clicked_at is not None),
            "redeemed": sum(1 for c in used if c.redeemed_at is not None),
            "completed": sum(1 for c in used if c.completed_at is not None),
        }
        publish_funnel(campaign.campaign_id, funnel)
        report = {
            **{k: v for k, v in status.items() if not isinstance(v, dict)},
            "settings": {
                "sender": campaign.sender or "(deployment default)",
                "rate_per_second": float(campaign.rate_per_second),
                "quiet_hours": f"{campaign.window_opens}-{campaign.window_closes} local time",
                "codes": campaign.code_source,
            },
            "funnel": funnel,
            "recipients": counts,
            "delivery": {
                "accepted_by_twilio": handed_over,
                "delivered": delivered,
                "delivery_rate": f"{100 * delivered / handed_over:.1f}%" if handed_over else "-",
            },
            "reasons": dict(sorted(reasons.items())),
            "needs_attention": {
                "unresolved": counts.get("unresolved", 0),
                "awaiting_final_status": counts.get("awaiting_final_status", 0),
                "partially_delivered": counts.get("partially_delivered", 0),
            },
            "deferred_by_quiet_hours": {"recipients": len(deferred), "next_release": min(deferred, default="-")},
            "progress": status["progress"],
            "rows_excluded_at_import": {k: v for k, v in status["rows_excluded"].items() if v},
        }
        if campaign.preview:
            preview = json.loads(campaign.preview)
            report["preview"] = {
                "prepared_at": preview["prepared_at"],
                "eligible": preview["audience"]["eligible"],
                "excluded": preview["audience"]["excluded"],
                "segments": preview["messages"]["total_segments"],
                "estimated_cost": f"{preview['cost']['total']:.2f} {preview['cost']['currency']}",
                "estimated_duration": preview["sending"]["duration"].get("summary", "-"),
            }
        return report


# Handed to Twilio: the funnel's "sent" (a reminder's too).
_HANDED_OVER = ("queued", "sending", "sent", "awaiting_final_status", "delivered", "partially_delivered", "undelivered")
_REASONED = frozenset(
    s.value for s in (Status.FAILED, Status.UNDELIVERED, Status.EXCLUDED, Status.SKIPPED_OPTED_OUT, Status.CANCELLED,
                      Status.UNRESOLVED)
)


def export_recipients(store: Store, settings: Settings, campaign: CampaignRecord, *, full_numbers: bool = False) -> dict:
    """Every recipient, one row each, streamed to S3 in two passes (the first finds the merge fields).
    Phone numbers are masked unless `full_numbers` is asked for."""
    campaign_id = campaign.campaign_id
    field_names: dict[str, None] = {}
    for recipient in store.t.recipients.query(campaign_id, attributes_to_get=["fields"]):
        field_names.update(dict.fromkeys(recipient.fields.as_dict()))
    fields = list(field_names)
    stamp = utcnow().strftime("%Y%m%dT%H%M%SZ")
    key = f"{REPORTS_PREFIX}campaigns/{campaign_id}/recipients-{stamp}.csv"

    def lines() -> Iterator[list]:
        for recipient in store.t.recipients.query(campaign_id):
            values = recipient.fields.as_dict()
            yield [*(_cell(recipient, column, full_numbers) for column in _EXPORT_COLUMNS),
                   *(values.get(f, "") for f in fields)]

    rows = _upload_csv(settings, key, [*_EXPORT_COLUMNS, *fields], lines())
    return {"campaign_id": campaign_id, "bucket": settings.imports_bucket, "key": key, "rows": rows}


def export_ledger(store: Store, settings: Settings, phone: str | None = None) -> dict:
    """The consent ledger as CSV under reports/consent/: one number's (oldest first), or everyone's."""
    entries = store.consent_of(phone) if phone else store.t.consent.scan()
    stamp = utcnow().strftime("%Y%m%dT%H%M%SZ")
    key = f"{REPORTS_PREFIX}consent/ledger-{stamp}.csv"
    rows = (
        [entry.at.isoformat() if column == "at" else getattr(entry, column) or "" for column in LEDGER_COLUMNS]
        for entry in entries
    )
    written = _upload_csv(settings, key, list(LEDGER_COLUMNS), rows)
    return {"bucket": settings.imports_bucket, "key": key, "rows": written}


def _upload_csv(settings: Settings, key: str, header: list, rows: Iterator[list]) -> int:
    """Stream a header and rows to the bucket as formula-safe CSV, 500 rows a chunk; the rows written."""
    written = 0

    def chunks() -> Iterator[bytes]:
        nonlocal written
        yield csv_text([header]).encode("utf-8")
        for batch in batched(rows, 500):
            written += len(batch)
            yield csv_text(batch).encode("utf-8")

    aws_clients.client("s3").upload_fileobj(JoinedChunks(chunks()), settings.imports_bucket, key)
    return written


def _cell(recipient, column: str, full_numbers: bool) -> object:
    value = getattr(recipient, column)
    if column == "phone" and not full_numbers:
        return mask_phone(value)
    if column == "updated_at" and value is not None:
        return value.isoformat()
    if column == "error_code" and value is not None:
        return int(value)
    return value
