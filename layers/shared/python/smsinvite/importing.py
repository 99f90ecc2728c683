"""Importing rows (recipients, panel members, tokens, suppressions): every row ends in one outcome.

An import is a record in the imports table plus a source of rows (a CSV in S3, a list from a
command, or a panel's members). It runs in chunks: each chunk is checked and written in batches,
then a checkpoint saves the position, the counts and the chunk's rejected rows in one conditional
transaction. A cut-off invocation is resumed from its last checkpoint by a fresh one; rows written
after that checkpoint are recognised as this import's own (same import id and row), so the counts
come out exact whatever the cut. A row too large to store is rejected alone, and an import ends
`completed` or `failed` whatever its file holds and whatever stops its runs.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import Enum
from pathlib import PurePosixPath
from urllib.parse import unquote_plus

from pynamodb.exceptions import PutError, TransactWriteError, UpdateError
from pynamodb.transactions import TransactWrite

from smsinvite.batches import DynamoBatches
from smsinvite.campaigns import OPEN_FOR_IMPORTS, CampaignState
from smsinvite.csv_rows import CODE_HEADERS, COUNTRY_HEADERS, CsvFileError, CsvGap, CsvLayout, field_name, read_rows
from smsinvite.errors import NotFound
from smsinvite.object_store import ObjectMissing, csv_bytes, object_chunks, put_csv
from smsinvite.observability import logger
from smsinvite.phones import InvalidPhone, LineType, Phone, normalise
from smsinvite.queues import Queue
from smsinvite.reports import Rejected, RejectedRowsReport
from smsinvite.settings import Settings
from smsinvite.sizes import MAX_ROW_BYTES, attributes_size, oversized
from smsinvite.consent import ConsentEvent, ConsentSource, SuppressionReason
from smsinvite.status import Status
from smsinvite.store import Store, _is_condition_failure, count_shard, recipient_id_for, utcnow
from smsinvite.tables import CampaignRecord, ImportRecord, raw_item

CHUNK_ROWS = 100
# A chunk also ends after this much of the file, so blank lines and rows too large still come in chunks.
CHUNK_BYTES = 256 * 1024
# The reader reports a stretch of blank lines this long, so that it counts towards a chunk.
GAP_BYTES = 64 * 1024
# Deliveries of one step of an import from the import queue (ApproximateReceiveCount): one less than
# ImportQueue's maxReceiveCount in template.yaml, so that the delivery after the last attempt, rather
# than the dead-letter queue, ends an import whose runs all died.
IMPORT_ATTEMPTS = 4
ROW_TOO_LARGE = "row_too_large"
# Lists entered by hand are kept here as CSVs; the prefix triggers nothing.
MANUAL_PREFIX = "commands/recipients/"
LEASE_SECONDS = 420  # longer than the import function's timeout: a dead holder's lease runs out
_ID = r"[A-Za-z0-9_-]{1,64}"
_CODE = re.compile(r"^[A-Za-z0-9]{4,64}$")
# A file whose rows are mostly unusable completes, but says so.
WARN_WHEN_UNUSABLE_SHARE = 0.5


class ImportKind(str, Enum):
    RECIPIENTS = "recipients"
    PANEL = "panel"
    TOKENS = "tokens"
    SUPPRESSIONS = "suppressions"


_PREFIXES = {
    "imports": (ImportKind.RECIPIENTS, re.compile(rf"^imports/(?P<target>{_ID})/[^/]+$")),
    "panels": (ImportKind.PANEL, re.compile(rf"^panels/(?P<target>{_ID})/[^/]+$")),
    "tokens": (ImportKind.TOKENS, re.compile(rf"^tokens/(?P<target>{_ID})/[^/]+$")),
    "suppressions": (ImportKind.SUPPRESSIONS, re.compile(r"^suppressions/[^/]+$")),
}


_KEY_FORMS = {
    "imports": "imports/<campaign_id>/<name>.csv",
    "panels": "panels/<panel_id>/<name>.csv",
    "tokens": "tokens/<campaign_id>/<name>.csv",
    "suppressions": "suppressions/<name>.csv",
}


class ImportState(str, Enum):
    RUNNING = "running"
    COMPLETED = "completed"
    COMPLETED_WITH_WARNINGS = "completed_with_warnings"
    FAILED = "failed"

    @property
    def is_final(self) -> bool:
        return self is not ImportState.RUNNING


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
        return _import_id(self.bucket, self.key, self.version)


def outcomes_of(record: ImportRecord) -> dict[str, int]:
    outcomes = record.outcomes
    raw = outcomes if isinstance(outcomes, dict) else outcomes.as_dict()
    return {reason: int(n) for reason, n in raw.items()}


def _import_id(*parts: str) -> str:
    return "imp_" + hashlib.sha256("\n".join(parts).encode()).hexdigest()[:24]


@dataclass
class ImportSummary:
    import_id: str
    state: str
    rows: int = 0
    outcomes: dict = field(default_factory=dict)
    reason: str | None = None
    warning: str | None = None
    report_key: str | None = None

    @classmethod
    def of(cls, record: ImportRecord) -> "ImportSummary":
        return cls(
            import_id=record.import_id,
            state=record.state,
            rows=int(record.rows_processed),
            outcomes=outcomes_of(record),
            reason=record.reason,
            warning=record.warning,
            report_key=record.report_key,
        )

    def as_dict(self) -> dict:
        body = {"import_id": self.import_id, "state": self.state, "rows": self.rows, "outcomes": self.outcomes}
        for name in ("reason", "warning", "report_key"):
            if getattr(self, name):
                body[name] = getattr(self, name)
        return body


@dataclass(frozen=True)
class Row:
    """A row from any source: its number, the raw key value (a phone or a code), and the rest."""

    number: int
    value: str
    country: str | None
    fields: dict[str, str]
    position: str  # where a resumed import starts after this row
    size: int = 0  # bytes it took in the file, with the blank lines before it (0 for a panel's members)
    too_large: bool = False  # over MAX_ROW_BYTES in the file: nothing of it was kept

    def fits(self) -> bool:
        """Whether it can be stored: its attributes, as DynamoDB counts them, are within MAX_ROW_BYTES."""
        return not self.too_large and attributes_size(self.fields) <= MAX_ROW_BYTES


@dataclass(frozen=True)
class Gap:
    """Blank lines and no row: only a position, so a file of blank lines still moves on."""

    position: str
    size: int


@dataclass
class ChunkResult:
    outcomes: Counter = field(default_factory=Counter)
    rejected: list[Rejected] = field(default_factory=list)
    status_deltas: Counter = field(default_factory=Counter)

    def reject(self, row: Row, reason: str) -> None:
        self.outcomes[reason] += 1
        self.rejected.append(Rejected(row.number, row.value, reason))


def chunks_of(items: Iterator[Row | Gap]) -> Iterator[list[Row | Gap]]:
    """Rows (and gaps) in chunks of CHUNK_ROWS rows or CHUNK_BYTES of the file, whichever comes first."""
    chunk: list[Row | Gap] = []
    rows = size = 0
    for item in items:
        chunk.append(item)
        rows += isinstance(item, Row)
        size += item.size
        if rows >= CHUNK_ROWS or size >= CHUNK_BYTES:
            yield chunk
            chunk, rows, size = [], 0, 0
    if chunk:
        yield chunk


def process_chunk(sink, chunk: list[Row | Gap]) -> ChunkResult:
    """A chunk's rows through the sink, but for those too large to store: each of those is rejected alone."""
    fit: list[Row] = []
    too_large: list[Row] = []
    for item in chunk:
        if isinstance(item, Row):
            (fit if item.fits() else too_large).append(item)
    result = sink.process(fit) if fit else ChunkResult()
    for row in too_large:
        result.reject(row, ROW_TOO_LARGE)
    return result


# ---------------------------------------------------------------------------------------- sinks
def screen_phones(
    rows: list[Row], region: str, result: ChunkResult, *, allow_landlines: bool = True, key=lambda phone: phone.e164
) -> dict[str, tuple[Row, Phone]]:
    """The pure first step of every phone import: normalise, exclude landlines, drop in-chunk repeats.

    Rejected rows go to `result`; the rest come back by `key` (the E.164, or a recipient id), first
    occurrence kept. No I/O: the benchmarks time this against a bare phonenumbers loop.
    """
    candidates: dict[str, tuple[Row, Phone]] = {}
    for row in rows:
        try:
            phone = normalise(row.value, row.country or region)
        except InvalidPhone as invalid:
            result.reject(row, f"invalid:{invalid.reason.value}")
            continue
        if phone.line_type is LineType.LANDLINE and not allow_landlines:
            result.reject(row, "landline")
            continue
        identity = key(phone)
        if identity in candidates:
            result.reject(row, "duplicate")
            continue
        candidates[identity] = (row, phone)
    return candidates


def written_by(earlier, import_id: str, row: Row) -> bool:
    """An item this import wrote for this very row before it was cut off: count it, don't redo it."""
    return earlier is not None and earlier.import_id == import_id and earlier.row_number == row.number


class RecipientSink:
    """Rows into a campaign's audience: normalised, deduped by E.164, suppressed numbers marked."""

    def __init__(self, store: Store, batches: DynamoBatches, campaign: CampaignRecord, import_id: str) -> None:
        self.store, self.batches, self.campaign, self.import_id = store, batches, campaign, import_id

    def screen(self, rows: list[Row], result: ChunkResult) -> dict[str, tuple[Row, Phone]]:
        campaign_id = self.campaign.campaign_id
        return screen_phones(
            rows,
            self.campaign.default_region,
            result,
            allow_landlines=bool(self.campaign.allow_landlines),
            key=lambda phone: recipient_id_for(campaign_id, phone.e164),
        )

    def process(self, rows: list[Row]) -> ChunkResult:
        result = ChunkResult()
        candidates = self.screen(rows, result)
        campaign_id = self.campaign.campaign_id
        recipients = self.store.t.recipients
        existing = {r.recipient_id: r for r in self.batches.get(recipients, [(campaign_id, rid) for rid in candidates])}
        suppressed = self.store.suppressed_among(self.batches, {p.e164 for _, p in candidates.values()})
        now = utcnow()
        counted, new, items = [], [], []
        for recipient_id, (row, phone) in candidates.items():
            earlier = existing.get(recipient_id)
            if earlier is not None and not written_by(earlier, self.import_id, row):
                result.reject(row, "duplicate")
                continue
            if earlier is not None:
                # Counted as it was written, whatever happened to it since (the counters agree).
                marked = earlier.failure_reason == "suppressed_at_import"
                counted.append((recipient_id, Status.SKIPPED_OPTED_OUT if marked else Status.IMPORTED))
                continue
            status = Status.SKIPPED_OPTED_OUT if phone.e164 in suppressed else Status.IMPORTED
            new.append((recipient_id, row, status))
            items.append(
                raw_item(
                    recipients,
                    campaign_id=campaign_id,
                    recipient_id=recipient_id,
                    phone=phone.e164,
                    region=phone.region,
                    line_type=phone.line_type.value,
                    fields=row.fields,
                    status=status.value,
                    status_rank=status.rank,
                    failure_reason="suppressed_at_import" if status is Status.SKIPPED_OPTED_OUT else None,
                    import_id=self.import_id,
                    row_number=row.number,
                    updated_at=now,
                )
            )
        refused = self.batches.put(recipients, items)
        for index, (recipient_id, row, status) in enumerate(new):
            if index in refused:
                result.reject(row, ROW_TOO_LARGE)
            else:
                counted.append((recipient_id, status))
        for recipient_id, status in counted:
            result.outcomes["suppressed" if status is Status.SKIPPED_OPTED_OUT else "imported"] += 1
            result.status_deltas[(count_shard(recipient_id), status)] += 1
        return result


class PanelSink:
    """Rows into a panel: a reusable list of normalised members, deduped by E.164."""

    def __init__(self, store: Store, batches: DynamoBatches, panel_id: str, import_id: str, region: str) -> None:
        self.store, self.batches, self.panel_id, self.import_id, self.region = store, batches, panel_id, import_id, region

    def process(self, rows: list[Row]) -> ChunkResult:
        result = ChunkResult()
        candidates = screen_phones(rows, self.region, result)
        panels = self.store.t.panels
        existing = {m.phone: m for m in self.batches.get(panels, [(self.panel_id, e164) for e164 in candidates])}
        new, items = [], []
        for e164, (row, phone) in candidates.items():
            earlier = existing.get(e164)
            if earlier is not None and not written_by(earlier, self.import_id, row):
                result.reject(row, "duplicate")
            elif earlier is not None:
                result.outcomes["imported"] += 1
            else:
                new.append(row)
                items.append(
                    raw_item(
                        panels, panel_id=self.panel_id, phone=e164, region=phone.region,
                        line_type=phone.line_type.value, fields=row.fields, import_id=self.import_id,
                        row_number=row.number,
                    )
                )
        refused = self.batches.put(panels, items)
        for index, row in enumerate(new):
            if index in refused:
                result.reject(row, ROW_TOO_LARGE)
            else:
                result.outcomes["imported"] += 1
        return result


class TokenSink:
    """Rows of pre-generated codes into a campaign's pool. A code that exists anywhere is refused."""

    def __init__(self, store: Store, batches: DynamoBatches, campaign_id: str, import_id: str) -> None:
        self.store, self.batches, self.campaign_id, self.import_id = store, batches, campaign_id, import_id

    def process(self, rows: list[Row]) -> ChunkResult:
        result = ChunkResult()
        candidates: dict[str, Row] = {}
        for row in rows:
            code = row.value.strip()
            if not _CODE.match(code):
                result.reject(row, "invalid_code")
            elif code in candidates:
                result.reject(row, "duplicate_code")
            else:
                candidates[code] = row
        codes = self.store.t.codes
        existing = {c.code: c for c in self.batches.get(codes, [(code,) for code in candidates])}
        for code, row in candidates.items():
            earlier = existing.get(code)
            if earlier is None:
                continue
            if written_by(earlier, self.import_id, row):
                result.outcomes["imported"] += 1
            else:
                result.reject(row, "duplicate_code")
        fresh = {code: row for code, row in candidates.items() if code not in existing}
        for code, row in fresh.items():
            # Conditional, one by one: uniqueness across campaigns must hold against concurrent imports.
            record = codes(
                code, campaign_id=self.campaign_id, pool_campaign_id=self.campaign_id,
                import_id=self.import_id, row_number=row.number,
            )
            try:
                record.save(condition=codes.code.does_not_exist())
            except PutError as error:
                if not _is_condition_failure(error):
                    raise
                result.reject(row, "duplicate_code")
                continue
            result.outcomes["imported"] += 1
        return result


class SuppressionSink:
    """Rows of numbers onto the suppression list (the blocklist)."""

    def __init__(self, store: Store, batches: DynamoBatches, import_id: str, region: str) -> None:
        self.store, self.batches, self.import_id, self.region = store, batches, import_id, region

    def process(self, rows: list[Row]) -> ChunkResult:
        result = ChunkResult()
        candidates = screen_phones(rows, self.region, result)
        store, suppressions = self.store, self.store.t.suppressions
        keys = {e164: store.phone_key(e164) for e164 in candidates}
        existing = {s.subject: s for s in self.batches.get(suppressions, [(key,) for key in keys.values()])}
        now = utcnow()
        new, ledger = [], []
        for e164, (row, _) in candidates.items():
            earlier = existing.get(keys[e164])
            if earlier is not None and not written_by(earlier, self.import_id, row):
                result.outcomes["already_suppressed"] += 1  # keeps its first reason (an opt-out stays an opt-out)
                continue
            result.outcomes["imported"] += 1
            if earlier is None:
                new.append(
                    raw_item(
                        suppressions, subject=keys[e164], phone=e164, reason=SuppressionReason.BLOCKLIST.value,
                        source=ConsentSource.IMPORT.value, created_at=now, import_id=self.import_id,
                        row_number=row.number,
                    )
                )
                # The ledger entry's key is its row, so a resumed import writes it again in place.
                ledger.append(
                    raw_item(
                        store.t.consent, subject=keys[e164], entry=f"{now.date().isoformat()}#{self.import_id}#{row.number}",
                        phone=e164, event=ConsentEvent.OPT_OUT.value, source=ConsentSource.IMPORT.value, at=now,
                        detail=f"blocklist import {self.import_id} row {row.number}",
                    )
                )
        self.batches.put(store.t.consent, ledger)
        self.batches.put(suppressions, new)
        return result


# ---------------------------------------------------------------------------------------- sources
def csv_rows_from_s3(record: ImportRecord, *, key_headers: tuple[str, ...] | None = None) -> Iterator[Row | Gap]:
    """Rows of the upload from the record's position (and gaps in long stretches of blank lines),
    saving the layout on the record when first read."""
    offset = int(record.position or 0)
    layout = CsvLayout.from_dict(json.loads(record.layout)) if record.layout else None
    if layout is not None and offset == 0:
        offset = layout.data_offset
    chunks = object_chunks(record.bucket, record.key, record.version or None, start=offset)
    options = {"key_headers": key_headers} if key_headers else {}

    def remember(found: CsvLayout) -> None:
        record.layout = json.dumps(found.as_dict())

    def guarded(chunks):
        try:
            yield from chunks
        except ObjectMissing:
            raise CsvFileError("object_missing", "the file was deleted before it could be read") from None

    for item in read_rows(
        guarded(chunks),
        phone_column=record.phone_column,
        resume=layout,
        start_offset=offset,
        start_row=int(record.rows_processed),
        on_layout=remember,
        gap_bytes=GAP_BYTES,
        **options,
    ):
        size, offset = item.end_offset - offset, item.end_offset
        if isinstance(item, CsvGap):
            yield Gap(str(item.end_offset), size)
        else:
            yield Row(item.number, item.phone, item.country, item.fields, str(item.end_offset), size, item.too_large)


def rows_from_members(store: Store, source: str, group_id: str, after_phone: str | None, start_row: int) -> Iterator[Row]:
    """A panel's members, or a subscription list's active subscribers (those who confirmed with YES)."""
    model, hash_name = (store.t.panels, "panel_id") if source == "panel" else (store.t.subscriptions, "list_id")
    start_key = {hash_name: {"S": group_id}, "phone": {"S": after_phone}} if after_phone else None
    number = start_row
    for member in model.query(group_id, last_evaluated_key=start_key, consistent_read=True):
        number += 1
        if source == "panel" or member.state == "active":
            yield Row(number, member.phone, member.region, member.fields.as_dict(), member.phone)


# ---------------------------------------------------------------------------------------- runner
class ImportRunner:
    """Runs an import from its last checkpoint until it is done or the invocation's time runs low."""

    def __init__(
        self,
        store: Store,
        settings: Settings,
        *,
        batches: DynamoBatches | None = None,
        continue_later: Callable[[str, int], None],
    ) -> None:
        self.store = store
        self.settings = settings
        self.batches = batches or DynamoBatches()
        self.continue_later = continue_later

    @classmethod
    def continuing_on_queue(cls, store: Store, settings: Settings) -> "ImportRunner":
        """A runner that hands an unfinished import to the import queue for a fresh invocation."""
        queue = Queue(settings.import_queue_url)
        return cls(
            store,
            settings,
            continue_later=lambda import_id, delay: queue.send({"import_id": import_id}, delay_seconds=delay),
        )

    # --------------------------------------------------------------- starting
    def register_upload(self, upload: S3Upload, *, phone_column: str | None = None) -> tuple[ImportRecord, bool]:
        """The import record for an upload; False when S3 had already reported it.

        `phone_column` names the phone column when the header has no usual name for it (the
        upload's `phone-column` metadata); otherwise the campaign's setting, then the usual names.
        """
        prefix = upload.key.split("/", 1)[0]
        kind, pattern = _PREFIXES.get(prefix, (None, None))
        match = pattern.match(upload.key) if pattern else None
        imports = self.store.t.imports
        record = imports(
            upload.import_id,
            kind=kind.value if kind else "unknown",
            source="s3",
            bucket=upload.bucket,
            key=upload.key,
            version=upload.version_id or "",
            phone_column=phone_column or None,
            started_at=utcnow(),
            updated_at=utcnow(),
        )
        if match and kind in (ImportKind.RECIPIENTS, ImportKind.TOKENS):
            record.campaign_id = match["target"]
        if match and kind is ImportKind.PANEL:
            record.panel_id = match["target"]
        created = self._create(record)
        if not created:
            return imports.get(upload.import_id, consistent_read=True), False
        problem = None
        if kind is None:
            problem = ("unknown_prefix", f"uploads under {prefix}/ are not imported (use imports/, panels/, tokens/ or suppressions/)")
        elif not match:
            problem = ("bad_key", f"expected {_KEY_FORMS[prefix]} (an id of letters, digits, - and _; no sub-folders)")
        elif not upload.key.lower().endswith((".csv", ".txt")):
            problem = ("not_a_csv", "only .csv (or .txt) files are imported")
        elif upload.size > self.settings.max_import_bytes:
            problem = ("file_too_large", f"the file is {upload.size} bytes; the limit is {self.settings.max_import_bytes}")
        if problem:
            self._finish(record, ImportState.FAILED, reason=f"{problem[0]}: {problem[1]}")
        return record, True

    def register_list(self, campaign_id: str, entries: list[dict], request_id: str) -> tuple[ImportRecord, bool]:
        """A list entered by hand becomes a CSV in the bucket, then runs through the same pipeline.

        The same request_id again is the same import: its list is not written a second time.
        """
        imports = self.store.t.imports
        import_id = _import_id("manual", campaign_id, request_id)
        try:
            return imports.get(import_id, consistent_read=True), False
        except imports.DoesNotExist:
            pass
        key = f"{MANUAL_PREFIX}{campaign_id}/{request_id}.csv"
        version = put_csv(self.settings.imports_bucket, key, _list_as_csv(entries))
        record = imports(
            import_id, kind=ImportKind.RECIPIENTS.value, source="manual", campaign_id=campaign_id,
            bucket=self.settings.imports_bucket, key=key, version=version or "", phone_column="phone",
            started_at=utcnow(), updated_at=utcnow(),
        )
        created = self._create(record)
        return (record if created else imports.get(record.import_id, consistent_read=True)), created

    def register_panel(
        self, campaign_id: str, panel_id: str, request_id: str, *, kind: str = "panel"
    ) -> tuple[ImportRecord, bool]:
        """Import a panel's members, or (kind "list") a subscription list's active subscribers."""
        record = self.store.t.imports(
            _import_id(kind, campaign_id, panel_id, request_id),
            kind=ImportKind.RECIPIENTS.value, source=kind, campaign_id=campaign_id, panel_id=panel_id,
            started_at=utcnow(), updated_at=utcnow(),
        )
        created = self._create(record)
        return (record if created else self.store.t.imports.get(record.import_id, consistent_read=True)), created

    def _create(self, record: ImportRecord) -> bool:
        try:
            record.save(condition=self.store.t.imports.import_id.does_not_exist())
        except PutError as error:
            if _is_condition_failure(error):
                return False
            raise
        return True

    # --------------------------------------------------------------- running
    def run(
        self, import_id: str, *, time_left: Callable[[], float], margin: float, attempt: int = 0
    ) -> ImportSummary:
        """Run the import from its last checkpoint until it is done or the invocation's time runs low.

        `attempt` counts the import queue's deliveries of this step (ApproximateReceiveCount); 0 when a
        command or a prepare runs it. However its runs fail, the import ends: an unexpected error is
        retried by the queue (a run outside the queue hands the import to it), the error of the last
        attempt ends it `failed`, and a delivery after the last attempt (each run before it died, as a
        timed-out or out-of-memory invocation does) ends it `failed` without running it again.
        """
        record = self.store.t.imports.get(import_id, consistent_read=True)
        if ImportState(record.state).is_final:
            return ImportSummary.of(record)
        if attempt > IMPORT_ATTEMPTS:
            self._finish(record, ImportState.FAILED, reason=(
                f"internal_error: the import stopped {IMPORT_ATTEMPTS} times in a row without finishing "
                f"(timed out, or out of memory); {int(record.rows_processed)} rows were read"
            ))
            return ImportSummary.of(record)
        try:
            return self._run(record, time_left, margin)
        except Exception as error:
            kind = _kind_of(error)
            logger.warning("import step failed", extra={"import_id": import_id, "attempt": attempt, "error": kind})
            if attempt >= IMPORT_ATTEMPTS:
                self._finish(record, ImportState.FAILED, reason=(
                    f"internal_error: the import stopped on an unexpected error ({kind}) {attempt} times in a row; "
                    f"{int(record.rows_processed)} rows were read"
                ))
                return ImportSummary.of(record)
            if attempt == 0:
                self.continue_later(import_id, 0)  # the queue's attempts take it from here
            raise

    def _run(self, record: ImportRecord, time_left: Callable[[], float], margin: float) -> ImportSummary:
        import_id = record.import_id
        try:
            sink = self._sink(record)
        except CsvFileError as error:
            self._finish(record, ImportState.FAILED, reason=f"{error.reason}: {error.message}")
            return ImportSummary.of(record)
        if record.kind == ImportKind.RECIPIENTS.value and not self._take_lease(record):
            state = CampaignState(self.store.campaign(record.campaign_id).state)
            if state.is_final:
                self._finish(record, ImportState.FAILED, reason=f"campaign_closed: campaign {record.campaign_id} is {state.value}")
                return ImportSummary.of(record)
            # Another import holds the campaign, or it is being prepared or sent: the audience holds still.
            logger.info("the campaign is busy; the import waits", extra={"import_id": import_id, "state": state.value})
            self.continue_later(import_id, 30)
            return ImportSummary.of(record)

        progress = _Progress(record)
        settings = self.settings
        try:
            for chunk in chunks_of(self._rows(record)):
                progress.add(process_chunk(sink, chunk), chunk)
                if (
                    progress.rows_since_checkpoint >= settings.import_checkpoint_rows
                    or progress.bytes_since_checkpoint >= settings.import_checkpoint_bytes
                    or time_left() < margin
                ):
                    if not self._checkpoint(record, progress):
                        return ImportSummary.of(record)  # a duplicate delivery of this import got there first
                    if time_left() < margin:
                        self.continue_later(import_id, 0)
                        logger.info("import continues in a new invocation", extra={"rows": int(record.rows_processed)})
                        return ImportSummary.of(record)
        except CsvFileError as error:
            if self._checkpoint(record, progress):
                self._finish(record, ImportState.FAILED, reason=f"{error.reason}: {error.message}")
            return ImportSummary.of(record)
        if self._checkpoint(record, progress):
            self._complete(record)
        return ImportSummary.of(record)

    def _sink(self, record: ImportRecord):
        kind = ImportKind(record.kind)
        if kind is ImportKind.RECIPIENTS:
            try:
                campaign = self.store.campaign(record.campaign_id)
            except NotFound:
                raise CsvFileError("unknown_campaign", f"campaign {record.campaign_id} does not exist") from None
            if not record.phone_column and campaign.phone_column:
                record.phone_column = campaign.phone_column
            return RecipientSink(self.store, self.batches, campaign, record.import_id)
        if kind is ImportKind.PANEL:
            return PanelSink(self.store, self.batches, record.panel_id, record.import_id, self.settings.default_region)
        if kind is ImportKind.TOKENS:
            try:
                self.store.campaign(record.campaign_id)
            except NotFound:
                raise CsvFileError("unknown_campaign", f"campaign {record.campaign_id} does not exist") from None
            return TokenSink(self.store, self.batches, record.campaign_id, record.import_id)
        return SuppressionSink(self.store, self.batches, record.import_id, self.settings.default_region)

    def _rows(self, record: ImportRecord) -> Iterator[Row | Gap]:
        if record.source in ("panel", "list"):
            return rows_from_members(self.store, record.source, record.panel_id, record.position, int(record.rows_processed))
        key_headers = CODE_HEADERS if record.kind == ImportKind.TOKENS.value else None
        return csv_rows_from_s3(record, key_headers=key_headers)

    # --------------------------------------------------------------- checkpoints
    def _checkpoint(self, record: ImportRecord, progress: "_Progress") -> bool:
        """Save position, counts and rejected rows at once; False if someone else saved this chunk first."""
        if progress.rows_since_checkpoint == 0 and progress.position == record.position:
            return True
        imports, campaigns = self.store.t.imports, self.store.t.campaigns
        parts = int(record.rejected_parts)
        if progress.rejected:
            after = int(record.rows_processed)
            self._report(record).write_part(after, after + progress.rows_since_checkpoint, progress.rejected)
            parts += 1
        outcomes = Counter(outcomes_of(record)) + progress.outcomes
        actions = [
            imports.rows_processed.set(int(record.rows_processed) + progress.rows_since_checkpoint),
            imports.outcomes.set(dict(outcomes)),
            imports.position.set(progress.position),
            imports.rejected_parts.set(parts),
            imports.updated_at.set(utcnow()),
        ]
        if record.layout:
            actions.append(imports.layout.set(record.layout))
        try:
            with TransactWrite(connection=self.store._connection()) as transaction:
                transaction.update(
                    imports(record.import_id), actions=actions,
                    condition=imports.rows_processed == int(record.rows_processed),
                )
                if record.campaign_id and record.kind == ImportKind.RECIPIENTS.value:
                    transaction.update(
                        campaigns(record.campaign_id),
                        actions=self._campaign_actions(progress) + [campaigns.import_lease_until.set(_lease_until())],
                        condition=campaigns.import_lease == record.import_id,
                    )
                    for shard, actions in self.store.count_actions(record.campaign_id, progress.status_deltas):
                        transaction.update(shard, actions=actions)
        except TransactWriteError as error:
            if _is_condition_failure(error):
                return False
            raise
        record.rows_processed = int(record.rows_processed) + progress.rows_since_checkpoint
        record.outcomes = dict(outcomes)
        record.position = progress.position
        record.rejected_parts = parts
        progress.reset()
        return True

    def _campaign_actions(self, progress: "_Progress") -> list:
        campaigns = self.store.t.campaigns
        actions = []
        if any(progress.status_deltas.values()):  # new recipients: a preparation made before them is no longer current
            actions.append(campaigns.revision.add(1))
        invalid = sum(n for reason, n in progress.outcomes.items() if reason.startswith("invalid:"))
        for attribute, n in (
            (campaigns.rows_duplicate, progress.outcomes["duplicate"]),
            (campaigns.rows_invalid, invalid),
            (campaigns.rows_landline, progress.outcomes["landline"]),
        ):
            if n:
                actions.append(attribute.add(n))
        return actions

    def _complete(self, record: ImportRecord) -> None:
        rows = int(record.rows_processed)
        outcomes = outcomes_of(record)
        usable = int(outcomes.get("imported", 0)) + int(outcomes.get("suppressed", 0)) + int(outcomes.get("already_suppressed", 0))
        if rows == 0:
            self._finish(record, ImportState.FAILED, reason="no_rows: the file has a header but no rows")
            return
        report_key = None
        if int(record.rejected_parts):
            report_key = self._report(record).assemble()
        warning = None
        if rows - usable > rows * WARN_WHEN_UNUSABLE_SHARE:
            warning = f"{rows - usable} of {rows} rows could not be used; see the rejected-rows report"
        state = ImportState.COMPLETED_WITH_WARNINGS if warning else ImportState.COMPLETED
        self._finish(record, state, warning=warning, report_key=report_key)

    def _finish(self, record: ImportRecord, state: ImportState, *, reason=None, warning=None, report_key=None) -> None:
        # The lease goes first: an import started as soon as this one shows final must not wait.
        self._release_lease(record)
        imports = self.store.t.imports
        actions = [imports.state.set(state.value), imports.finished_at.set(utcnow()), imports.updated_at.set(utcnow())]
        for attribute, value in ((imports.reason, reason), (imports.warning, warning), (imports.report_key, report_key)):
            if value:
                actions.append(attribute.set(value))
        try:
            # Once final, it stays as it ended: a racing run of the same import may have finished it first.
            record.update(actions=actions, condition=imports.state == ImportState.RUNNING.value)
        except UpdateError as error:
            if not _is_condition_failure(error):
                raise
            record.refresh(consistent_read=True)
            return
        logger.info("import finished", extra={"import_id": record.import_id, "state": state.value, "reason": reason})

    def _report(self, record: ImportRecord) -> RejectedRowsReport:
        target = record.campaign_id or record.panel_id or "suppressions"
        name = PurePosixPath(record.key).stem if record.key else record.source
        key = f"reports/imports/{target}/{name}-{record.import_id}-rejected.csv"
        return RejectedRowsReport(self.settings.imports_bucket, record.import_id, key)

    # --------------------------------------------------------------- one import per campaign at a time
    def _take_lease(self, record: ImportRecord) -> bool:
        campaigns = self.store.t.campaigns
        free = (
            campaigns.import_lease.does_not_exist()
            | (campaigns.import_lease == record.import_id)
            | (campaigns.import_lease_until < int(time.time()))
        )
        open_for_imports = campaigns.state.is_in(*(state.value for state in OPEN_FOR_IMPORTS))
        try:
            campaigns(record.campaign_id).update(
                actions=[campaigns.import_lease.set(record.import_id), campaigns.import_lease_until.set(_lease_until())],
                condition=campaigns.campaign_id.exists() & free & open_for_imports,
            )
        except UpdateError as error:
            if _is_condition_failure(error):
                return False
            raise
        return True

    def _release_lease(self, record: ImportRecord) -> None:
        if not record.campaign_id or record.kind != ImportKind.RECIPIENTS.value:
            return
        campaigns = self.store.t.campaigns
        try:
            campaigns(record.campaign_id).update(
                actions=[campaigns.import_lease.remove(), campaigns.import_lease_until.remove()],
                condition=campaigns.import_lease == record.import_id,
            )
        except UpdateError as error:
            if not _is_condition_failure(error):
                raise


_COUNTRY_KEYS = frozenset(field_name(h) for h in COUNTRY_HEADERS)


def _list_as_csv(entries: list[dict]) -> bytes:
    return csv_bytes(_list_rows(entries))


def _list_rows(entries: list[dict]) -> list[list[str]]:
    """phone, country, then every attribute any entry has, in first-seen order: the header, then a row each.

    Keys are matched by the name a CSV header would get (`field_name`), as the command's validator
    matches "phone" in any case: "Phone" is the phone, "Country" (or "region", "land"...) the
    country, and "First Name" and "first_name" are one attribute (the first non-empty value wins).
    """
    names: dict[str, None] = {"phone": None, "country": None}
    rows: list[dict[str, str]] = []
    for entry in entries:
        row: dict[str, str] = {}
        for key, value in entry.items():
            name = field_name(str(key))
            if name in _COUNTRY_KEYS:
                name = "country"
            names.setdefault(name, None)
            text = "" if value is None else str(value)
            if not row.get(name):
                row[name] = text
        rows.append(row)
    columns = list(names)
    return [columns] + [[row.get(c, "") for c in columns] for row in rows]


def list_problems(entries: list[dict]) -> list[str]:
    """What in a list entered by hand the import would refuse as too large, found before anything is
    written: an entry over the limit, or a list whose attribute names (a column each, in every row)
    make the header or a row over it."""
    problems = oversized(entries)
    header, *rows = _list_rows(entries)
    names = len(csv_bytes([header]))
    if names > MAX_ROW_BYTES:
        problems.append(f"the entries' attribute names take {names} bytes together; they may take up to {MAX_ROW_BYTES}")
        return problems
    for index, row in enumerate(rows):
        size = len(csv_bytes([row]))
        if size > MAX_ROW_BYTES and attributes_size(entries[index]) <= MAX_ROW_BYTES:
            problems.append(
                f"entry {index} takes {size} bytes as a row of the list (a column for each attribute of the list); "
                f"a row may take up to {MAX_ROW_BYTES}"
            )
    return problems


def _lease_until() -> int:
    return int(time.time()) + LEASE_SECONDS


def _kind_of(error: Exception) -> str:
    """What went wrong, safe to keep and show: the exception's type and AWS's error code, never its text."""
    response = getattr(error, "response", None)
    code = getattr(error, "cause_response_code", None) or (
        response.get("Error", {}).get("Code") if isinstance(response, dict) else None
    )
    return f"{type(error).__name__} {code}" if code else type(error).__name__


class _Progress:
    """What happened since the last checkpoint."""

    def __init__(self, record: ImportRecord) -> None:
        self.position = record.position
        self.reset()

    def reset(self) -> None:
        self.rows_since_checkpoint = 0
        self.bytes_since_checkpoint = 0
        self.outcomes: Counter = Counter()
        self.status_deltas: Counter = Counter()
        self.rejected: list[Rejected] = []

    def add(self, result: ChunkResult, chunk: list[Row | Gap]) -> None:
        self.rows_since_checkpoint += sum(result.outcomes.values())
        self.bytes_since_checkpoint += sum(item.size for item in chunk)
        self.outcomes += result.outcomes
        self.status_deltas += result.status_deltas
        self.rejected.extend(result.rejected)
        self.position = chunk[-1].position

