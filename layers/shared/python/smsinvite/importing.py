"""Importing recipients: every row ends in exactly one outcome, counted on the import record."""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from urllib.parse import unquote_plus

from pynamodb.exceptions import PutError

from smsinvite.csv_rows import CsvFileError, CsvRow
from smsinvite.phones import InvalidPhone, LineType, normalise
from smsinvite.errors import NotFound
from smsinvite.store import Store, _is_condition_failure, utcnow
from smsinvite.tables import CampaignRecord

IMPORT_PREFIXES = ("imports", "panels", "tokens", "suppressions")
_CAMPAIGN_KEY = re.compile(r"^imports/(?P<campaign_id>[A-Za-z0-9_-]{1,64})/[^/]+$")


@dataclass(frozen=True)
class S3Upload:
    bucket: str
    key: str  # decoded
    version_id: str | None  # None when the bucket is not versioned
    etag: str
    size: int

    @classmethod
    def from_record(cls, record: dict) -> "S3Upload":
        s3 = record["s3"]
        obj = s3["object"]
        return cls(
            bucket=s3["bucket"]["name"],
            # S3 event keys are URL-encoded with '+' for spaces.
            key=unquote_plus(obj["key"]),
            version_id=obj.get("versionId") or None,
            etag=obj.get("eTag", ""),
            size=int(obj.get("size", 0)),
        )

    @property
    def version(self) -> str:
        """What makes this upload a new import: a new version, or new content in an unversioned bucket."""
        return self.version_id or self.etag

    @property
    def import_id(self) -> str:
        digest = hashlib.sha256(f"{self.bucket}\n{self.key}\n{self.version}".encode()).hexdigest()
        return f"imp_{digest[:24]}"

    @property
    def kind(self) -> str:
        prefix = self.key.split("/", 1)[0]
        return prefix if prefix in IMPORT_PREFIXES else "unknown"


@dataclass
class ImportSummary:
    import_id: str
    state: str
    rows: int = 0
    outcomes: Counter = field(default_factory=Counter)
    reason: str | None = None

    def as_dict(self) -> dict:
        body = {"import_id": self.import_id, "state": self.state, "rows": self.rows, "outcomes": dict(self.outcomes)}
        if self.reason:
            body["reason"] = self.reason
        return body


def outcome_of_row(row: CsvRow, campaign: CampaignRecord, store: Store, import_id: str) -> str:
    try:
        phone = normalise(row.phone, row.country or campaign.default_region)
    except InvalidPhone as invalid:
        return f"invalid:{invalid.reason.value}"
    if phone.line_type is LineType.LANDLINE and not campaign.allow_landlines:
        return "landline"
    if store.is_suppressed(phone.e164):
        return "suppressed"
    if not store.add_recipient(campaign.campaign_id, phone, row.fields, import_id=import_id, row_number=row.number):
        return "duplicate"
    return "imported"


RUNNING_IMPORT_IS_ALIVE_FOR = timedelta(minutes=6)  # longer than the import function's timeout


def _should_resume(existing) -> bool:
    if existing.state == "running":
        return utcnow() - existing.started_at > RUNNING_IMPORT_IS_ALIVE_FOR
    return existing.state == "failed" and existing.reason == "internal_error"


class RecipientImport:
    """One upload of imports/<campaign_id>/<name>.csv, run once however often S3 reports it."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def run(self, upload: S3Upload, rows: Iterable[CsvRow]) -> ImportSummary:
        imports = self.store.t.imports
        summary = ImportSummary(upload.import_id, "running")
        match = _CAMPAIGN_KEY.match(upload.key)
        record = imports(
            upload.import_id,
            bucket=upload.bucket,
            key=upload.key,
            version=upload.version,
            kind=upload.kind,
            campaign_id=match["campaign_id"] if match else None,
            started_at=utcnow(),
        )
        try:
            record.save(condition=imports.import_id.does_not_exist())
        except PutError as exc:
            if not _is_condition_failure(exc):
                raise
            existing = imports.get(upload.import_id, consistent_read=True)
            if not _should_resume(existing):
                outcomes = Counter(existing.outcomes.as_dict())
                return ImportSummary(upload.import_id, "duplicate_event", existing.rows_processed, outcomes)
            record = existing  # an earlier attempt died: run again; stored rows come back as duplicates

        try:
            if upload.kind != "imports":
                raise CsvFileError("unsupported_prefix", f"uploads under {upload.kind}/ are not imported yet")
            if not match:
                raise CsvFileError("bad_key", "expected a key of the form imports/<campaign_id>/<name>.csv")
            try:
                campaign = self.store.campaign(match["campaign_id"])
            except NotFound:
                raise CsvFileError("unknown_campaign", f"campaign {match['campaign_id']} does not exist") from None
            for row in rows:
                summary.rows += 1
                summary.outcomes[outcome_of_row(row, campaign, self.store, upload.import_id)] += 1
            summary.state = "completed"
        except CsvFileError as error:
            summary.state, summary.reason = "failed", f"{error.reason}: {error.message}"
        except Exception as error:  # noqa: BLE001 - recorded, then re-raised so the event is retried
            summary.state, summary.reason = "failed", "internal_error"
            self._finish(record, summary)
            raise error
        self._finish(record, summary)
        return summary

    def _finish(self, record, summary: ImportSummary) -> None:
        imports = self.store.t.imports
        record.update(
            actions=[
                imports.state.set(summary.state),
                imports.rows_processed.set(summary.rows),
                imports.outcomes.set(dict(summary.outcomes)),
                imports.finished_at.set(utcnow()),
                imports.reason.set(summary.reason) if summary.reason else imports.reason.remove(),
            ]
        )
