"""Prepare: build the audience, give everyone invited a code, and preview exactly what will go out.

Nothing is sent. A prepare runs in pages of recipients, each saved with its running tallies in one
conditional write from the cursor it started at, so a prepare cut off part-way resumes where it
stopped (the scheduler continues it) and two prepares racing cannot both count a page. Codes are
stable, so a page prepared twice gives everyone the same code.

1. Panels named in the campaign's audience are imported into it (dedupe, suppression, landlines),
   through the import pipeline; prepare waits for those imports.
2. The campaign becomes `preparing`; imports wait until it is prepared (the audience holds still).
3. Every recipient not yet invited is checked: suppressed, not matching the audience rules, or
   missing a merge field is left out with that reason; everyone else gets a code and their message
   is rendered, counted in segments and priced.
4. The preview is stored with the revision it was prepared at; approve needs that revision.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import PurePosixPath

from smsinvite.batches import DynamoBatches
from smsinvite.campaigns import ALLOWED_FROM, Audience, CampaignState, InvalidTransition, matches_all
from smsinvite.codes import CodeIssuer, CodeSettings, CodeSource, PoolExhausted
from smsinvite.errors import Conflict
from smsinvite.importing import ImportRunner, outcomes_of
from smsinvite.invitations import invitation_text, missing_field, short_link, template_as_sent
from smsinvite.messages import segment_info, template_warnings
from smsinvite.observability import logger, mask_phone
from smsinvite.phones import zones_for
from smsinvite.sending_window import NoSendingTime, SendingWindow, estimate_duration
from smsinvite.settings import Settings
from smsinvite.status import Status
from smsinvite.store import Store, utcnow
from smsinvite.tables import CampaignRecord, ImportRecord, RecipientRecord

S = CampaignState
SAMPLES = 3
PAGE_SIZE = 100
# A prepare cut off by its invocation's time is continued by the scheduler this long after.
CONTINUE_AFTER = timedelta(seconds=30)


def code_settings(campaign: CampaignRecord) -> CodeSettings:
    expires = campaign.code_expires_after_seconds
    return CodeSettings(
        length=int(campaign.code_length) if campaign.code_length else CodeSettings().length,
        source=CodeSource(campaign.code_source or CodeSource.GENERATED.value),
        expires_after=timedelta(seconds=int(expires)) if expires else None,
    )


def sending_window(campaign: CampaignRecord) -> SendingWindow:
    return SendingWindow.parse(campaign.window_opens or "08:00", campaign.window_closes or "21:00")


@dataclass
class Tally:
    """Running totals of a prepare, saved with its cursor; every field adds up page by page."""

    eligible: int = 0
    already_invited: int = 0
    excluded: dict[str, int] = field(default_factory=dict)
    by_source: dict[str, dict[str, int]] = field(default_factory=dict)
    segments: dict[str, int] = field(default_factory=dict)
    encodings: dict[str, int] = field(default_factory=dict)
    segments_by_country: dict[str, int] = field(default_factory=dict)
    messages_by_country: dict[str, int] = field(default_factory=dict)
    zones: dict[str, int] = field(default_factory=dict)
    samples: list[dict] = field(default_factory=list)
    codes_missing: int = 0

    def add(self, other: "Tally") -> "Tally":
        def merged(a: dict, b: dict) -> dict:
            return dict(Counter(a) + Counter(b))

        sources = {name: dict(counts) for name, counts in self.by_source.items()}
        for name, counts in other.by_source.items():
            sources[name] = merged(sources.get(name, {}), counts)
        return Tally(
            eligible=self.eligible + other.eligible,
            already_invited=self.already_invited + other.already_invited,
            excluded=merged(self.excluded, other.excluded),
            by_source=sources,
            segments=merged(self.segments, other.segments),
            encodings=merged(self.encodings, other.encodings),
            segments_by_country=merged(self.segments_by_country, other.segments_by_country),
            messages_by_country=merged(self.messages_by_country, other.messages_by_country),
            zones=merged(self.zones, other.zones),
            samples=(self.samples + other.samples)[:SAMPLES],
            codes_missing=self.codes_missing + other.codes_missing,
        )

    def count(self, source: str, outcome: str) -> None:
        counts = self.by_source.setdefault(source, {})
        counts[outcome] = counts.get(outcome, 0) + 1
        if outcome == "eligible":
            self.eligible += 1
        else:
            self.excluded[outcome] = self.excluded.get(outcome, 0) + 1


@dataclass
class Preparation:
    """A prepare under way, stored on the campaign as JSON."""

    revision: int
    cursor: str | None = None
    pages: int = 0
    pool_exhausted: bool = False
    tally: Tally = field(default_factory=Tally)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "Preparation":
        data = json.loads(text)
        return cls(**{**data, "tally": Tally(**data["tally"])})


@dataclass(frozen=True)
class PrepareOutcome:
    campaign_id: str
    state: str
    preview: dict | None = None
    waiting_for: tuple[str, ...] = ()  # what the prepare waits on before it can go on
    considered: int = 0

    def as_dict(self) -> dict:
        body: dict = {"campaign_id": self.campaign_id, "state": self.state}
        if self.preview is not None:
            body["preview"] = self.preview
        if self.waiting_for:
            body["waiting_for"] = list(self.waiting_for)
        if self.state == S.PREPARING.value:
            body["considered"] = self.considered
        return body


class Preparer:
    def __init__(
        self,
        store: Store,
        settings: Settings,
        runner: ImportRunner,
        *,
        clock: Callable[[], datetime] = utcnow,
        page_size: int = PAGE_SIZE,
        batches: DynamoBatches | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.runner = runner
        self.clock = clock
        self.page_size = page_size
        self.batches = batches or DynamoBatches()
        self._sources: dict[str, tuple[str, str | None]] = {}

    def prepare(
        self, campaign_id: str, *, time_left: Callable[[], float], margin: float, automatic: bool = False
    ) -> PrepareOutcome:
        """Prepare, or go on preparing, for as long as the invocation may. `automatic`: a recurring run."""
        campaign = self.store.campaign(campaign_id)
        allowed = ALLOWED_FROM["prepare"] | ({S.WAITING} if automatic else set())
        state = CampaignState(campaign.state)
        if state not in allowed:
            raise InvalidTransition(campaign_id, "prepare", state)
        if state is not S.PREPARING:
            waiting = self._import_audience_panels(campaign, time_left, margin)
            if waiting:  # prepare again to go on (a recurring run stays due, so the scheduler does)
                return PrepareOutcome(campaign_id, state.value, waiting_for=waiting)
            began = self._begin(campaign, state)
            if began is None:
                return PrepareOutcome(campaign_id, state.value, waiting_for=("an import into this campaign",))
            campaign = began
        return self._pages(campaign, time_left, margin)

    # ------------------------------------------------------------------ 1. panels in the audience
    def _import_audience_panels(self, campaign: CampaignRecord, time_left, margin) -> tuple[str, ...]:
        panels = Audience.from_json(campaign.audience).panels
        if not panels:
            return ()
        campaigns = self.store.t.campaigns
        request = campaign.audience_request
        if request is None:  # a fresh prepare imports the panels again, to pick up new members
            request = f"prepare-{int(campaign.prepare_seq) + 1}"
            self.store.change_campaign(
                campaign.campaign_id,
                [campaigns.audience_request.set(request), campaigns.prepare_seq.add(1)],
                campaigns.audience_request.does_not_exist(),
            )
            request = self.store.campaign(campaign.campaign_id).audience_request or request
        waiting = []
        for panel in panels:
            record, new = self.runner.register_panel(campaign.campaign_id, panel.panel_id, request, kind=panel.kind)
            if record.state == "running":
                summary = self.runner.run(record.import_id, time_left=time_left, margin=margin)
                if summary.state == "running":
                    waiting.append(f"the import of {panel.kind} {panel.panel_id} ({summary.rows} rows so far)")
        return tuple(waiting)

    # ------------------------------------------------------------------ 2. the audience holds still
    def _begin(self, campaign: CampaignRecord, state: CampaignState) -> CampaignRecord | None:
        campaigns, now = self.store.t.campaigns, self.clock()
        fresh = Preparation(revision=int(campaign.revision))
        actions = [
            campaigns.state.set(S.PREPARING.value),
            campaigns.preparation.set(fresh.to_json()),
            campaigns.audience_request.remove(),
            campaigns.last_error.remove(),
            *self.store.due(now + CONTINUE_AFTER),
        ]
        condition = (campaigns.state == state.value) & self.store.no_import_running(now)
        return self.store.change_campaign(campaign.campaign_id, actions, condition)

    # ------------------------------------------------------------------ 3. page by page
    def _pages(self, campaign: CampaignRecord, time_left, margin) -> PrepareOutcome:
        campaign_id = campaign.campaign_id
        saved = campaign.preparation
        preparation = Preparation.from_json(saved)
        issuer = CodeIssuer(self.store, code_settings(campaign), batches=self.batches)
        while True:
            start = json.loads(preparation.cursor) if preparation.cursor else None
            page, last_key = self.store.recipients_page(campaign_id, cursor=start, limit=self.page_size)
            tally = self._page(campaign, page, issuer, preparation)
            after = Preparation(
                revision=preparation.revision,
                cursor=json.dumps(last_key) if last_key else None,
                pages=preparation.pages + 1,
                pool_exhausted=preparation.pool_exhausted or tally.codes_missing > 0,
                tally=preparation.tally.add(tally),
            )
            text = after.to_json()
            campaigns = self.store.t.campaigns
            moved = self.store.change_campaign(
                campaign_id,
                [campaigns.preparation.set(text), *self.store.due(self.clock() + CONTINUE_AFTER)],
                (campaigns.state == S.PREPARING.value) & (campaigns.preparation == saved),
            )
            if moved is None:  # another prepare got this page in first; it carries on
                current = self.store.campaign(campaign_id)
                return PrepareOutcome(campaign_id, current.state, considered=_considered(preparation.tally))
            preparation, saved = after, text
            if after.cursor is None:
                return self._finish(campaign, preparation, saved)
            if time_left() < margin:
                return PrepareOutcome(campaign_id, S.PREPARING.value, considered=_considered(after.tally))

    def _page(
        self, campaign: CampaignRecord, page: list[RecipientRecord], issuer: CodeIssuer, preparation: Preparation
    ) -> Tally:
        tally = Tally()
        pending = [r for r in page if r.status == Status.IMPORTED.value]
        tally.already_invited = sum(1 for r in page if r.status not in _NOT_INVITED)
        if not pending:
            return tally
        suppressed = self.store.suppressed_among(self.batches, {r.phone for r in pending})
        audience = Audience.from_json(campaign.audience)
        invited: list[tuple[RecipientRecord, str]] = []
        for recipient in pending:
            source, panel_id = self._source(recipient.import_id)
            fields = recipient.fields.as_dict()
            if recipient.phone in suppressed:
                exclusion = "suppressed"
            elif not matches_all(audience.rules_for(panel_id), fields):
                exclusion = "not_matching_rules"
            else:
                name = missing_field(campaign.message_template, fields, self.settings)
                exclusion = f"missing_field:{name}" if name else None
            if (recipient.exclusion or None) != exclusion:
                self.store.set_exclusion(recipient, exclusion)
            if exclusion:
                tally.count(source, exclusion)
            else:
                invited.append((recipient, source))
        codes = self._codes(campaign, [r.recipient_id for r, _ in invited], issuer, preparation, tally)
        for recipient, source in invited:
            tally.count(source, "eligible")
            code = codes.get(recipient.recipient_id)
            if code is not None:
                self._count_message(campaign, recipient, code, tally)
        return tally

    def _codes(self, campaign, recipient_ids: list[str], issuer: CodeIssuer, preparation, tally: Tally) -> dict:
        """Everyone invited gets a code. A tokens pool that runs dry is counted to the end, to say how many."""
        if not recipient_ids:
            return {}
        if preparation.pool_exhausted:
            have = {r.recipient_id: r.code for r in self.batches.get(
                self.store.t.recipients, [(campaign.campaign_id, rid) for rid in recipient_ids]
            ) if r.code}
            tally.codes_missing += len(recipient_ids) - len(have)
            return have
        try:
            return issuer.assign_many(campaign.campaign_id, recipient_ids)
        except PoolExhausted as exhausted:
            tally.codes_missing += exhausted.missing
            return {}

    def _count_message(self, campaign: CampaignRecord, recipient: RecipientRecord, code: str, tally: Tally) -> None:
        text = invitation_text(campaign.message_template, recipient.fields.as_dict(), code, self.settings)
        info = segment_info(text)
        country = recipient.region or "*"
        for counts, key, n in (
            (tally.segments, str(info.segments), 1),
            (tally.encodings, info.encoding, 1),
            (tally.segments_by_country, country, info.segments),
            (tally.messages_by_country, country, 1),
            (tally.zones, "|".join(zones_for(recipient.phone)), 1),
        ):
            counts[key] = counts.get(key, 0) + n
        if len(tally.samples) < SAMPLES:
            tally.samples.append(
                {"to": mask_phone(recipient.phone), "text": text, "segments": info.segments, "encoding": info.encoding}
            )

    def _source(self, import_id: str | None) -> tuple[str, str | None]:
        """Where a recipient came from, as the preview names it, and its panel if it came from one."""
        if not import_id:
            return "unknown", None
        if import_id not in self._sources:
            try:
                record = self.store.t.imports.get(import_id, consistent_read=True)
            except ImportRecord.DoesNotExist:
                record = None
            self._sources[import_id] = source_of(record) if record else ("unknown", None)
        return self._sources[import_id]

    # ------------------------------------------------------------------ 4. the preview
    def _finish(self, campaign: CampaignRecord, preparation: Preparation, saved: str) -> PrepareOutcome:
        campaigns, campaign_id = self.store.t.campaigns, campaign.campaign_id
        condition = (campaigns.state == S.PREPARING.value) & (campaigns.preparation == saved)
        if preparation.tally.codes_missing:
            error = PoolExhausted(campaign_id, preparation.tally.codes_missing)
            self.store.change_campaign(
                campaign_id,
                [campaigns.state.set(S.DRAFT.value), campaigns.preparation.remove(), campaigns.last_error.set(error.message),
                 *self.store.due(None)],
                condition,
            )
            raise error
        preview = self.preview(campaign, preparation)
        finished = self.store.change_campaign(
            campaign_id,
            [
                campaigns.state.set(S.PREPARED.value),
                campaigns.prepared_revision.set(preparation.revision),
                campaigns.preview.set(json.dumps(preview)),
                campaigns.preparation.remove(),
                # A recurring run starts by itself (the scheduler); a first run waits for approve.
                *self.store.due(self.clock() if int(campaign.run) > 0 else None),
            ],
            condition,
        )
        if finished is None:
            raise Conflict(f"campaign {campaign_id} changed while it was prepared; prepare it again")
        logger.info("campaign prepared", extra={"campaign_id": campaign_id, "eligible": preparation.tally.eligible})
        return PrepareOutcome(campaign_id, S.PREPARED.value, preview=preview)

    def preview(self, campaign: CampaignRecord, preparation: Preparation) -> dict:
        tally, settings = preparation.tally, self.settings
        now = self.clock()
        rate = min(float(campaign.rate_per_second), float(settings.sender_ceiling_per_second))
        start = max(now, campaign.start_at) if campaign.start_at else now
        audience = {tuple(key.split("|")) if key else (): n for key, n in tally.zones.items()}
        try:
            duration = estimate_duration(audience, rate_per_second=rate, window=sending_window(campaign), start=start).as_dict()
        except NoSendingTime as never:
            duration = {"error": str(never)}
        by_country = {
            country: {
                "messages": tally.messages_by_country[country],
                "segments": segments,
                "price_per_segment": settings.price_per_segment(country),
                "cost": round(segments * settings.price_per_segment(country), 4),
            }
            for country, segments in sorted(tally.segments_by_country.items())
        }
        warnings = self._warnings(campaign, tally)
        return {
            "prepared_at": now.isoformat(),
            "revision": preparation.revision,
            "audience": {
                "eligible": tally.eligible,
                "excluded": dict(sorted(tally.excluded.items())),
                "already_invited": tally.already_invited,
                "excluded_at_import": self._import_exclusions(campaign),
            },
            "sources": self._sources_table(campaign, tally),
            "messages": {
                "samples": tally.samples,
                "segments": dict(sorted(tally.segments.items(), key=lambda item: int(item[0]))),
                "encodings": tally.encodings,
                "total_segments": sum(int(n) * count for n, count in tally.segments.items()),
            },
            "cost": {
                "currency": settings.price_currency,
                "total": round(sum(c["cost"] for c in by_country.values()), 2),
                "by_country": by_country,
            },
            "sending": {"rate_per_second": rate, "window": sending_window(campaign).as_dict(), "duration": duration},
            "codes": {"source": code_settings(campaign).source.value, "entropy_bits": round(code_settings(campaign).entropy_bits, 1)},
            "warnings": warnings,
        }

    def _warnings(self, campaign: CampaignRecord, tally: Tally) -> list[str]:
        """The template's own warnings (named UCS-2 characters, length), then what the real messages showed."""
        settings, limit = self.settings, self.settings.max_segments_warning
        placeholder = "X" * code_settings(campaign).length
        system = {"code": placeholder, "link": short_link(settings, placeholder)}
        found = template_warnings(template_as_sent(campaign.message_template, settings), system, max_segments=limit)
        warnings = [str(w) for w in found if w.code != "missing_sample_field"]
        longest = max((int(n) for n in tally.segments), default=0)
        if longest > limit and not any(w.code == "too_many_segments" for w in found):
            longer = sum(count for n, count in tally.segments.items() if int(n) > limit)
            warnings.append(f"{longer} messages need more than {limit} segments (up to {longest}) with their merge fields")
        ucs2 = tally.encodings.get("UCS-2", 0)
        if ucs2 and tally.encodings.get("GSM-7", 0):
            warnings.append(f"{ucs2} of {tally.eligible} messages are UCS-2 because of characters in their merge fields")
        if tally.eligible == 0:
            warnings.append("nobody would be invited: every recipient is excluded or was invited before")
        return warnings

    def _import_exclusions(self, campaign: CampaignRecord) -> dict[str, int]:
        counts = {
            "duplicate": int(campaign.rows_duplicate or 0),
            "invalid": int(campaign.rows_invalid or 0),
            "landline": int(campaign.rows_landline or 0),
            "suppressed": self.store.counts(campaign.campaign_id)[Status.SKIPPED_OPTED_OUT],
        }
        return {reason: n for reason, n in counts.items() if n}

    def _sources_table(self, campaign: CampaignRecord, tally: Tally) -> dict[str, dict[str, int]]:
        """Per source: its rows and what the import made of them, then what prepare made of the rest."""
        table: dict[str, dict[str, int]] = {}
        for record in self.store.campaign_imports(campaign.campaign_id):
            if record.kind != "recipients":
                continue
            name, _ = source_of(record)
            row = table.setdefault(name, {})
            for outcome, n in {"rows": int(record.rows_processed), **outcomes_of(record)}.items():
                row[outcome] = row.get(outcome, 0) + n
        for name, counts in tally.by_source.items():
            row = table.setdefault(name, {})
            for outcome, n in counts.items():
                row[outcome] = row.get(outcome, 0) + n
        return dict(sorted(table.items()))


# Statuses of recipients this campaign has not invited: only `imported` ones are prepared.
_NOT_INVITED = frozenset(
    {Status.IMPORTED.value, Status.SKIPPED_OPTED_OUT.value, Status.EXCLUDED.value, Status.CANCELLED.value}
)


def source_of(record: ImportRecord) -> tuple[str, str | None]:
    if record.source in ("panel", "list"):
        return f"{record.source} {record.panel_id}", record.panel_id
    if record.source == "manual":
        return "add_recipients", None
    return f"file {PurePosixPath(record.key or '').name}", None


def _considered(tally: Tally) -> int:
    return tally.eligible + sum(tally.excluded.values()) + tally.already_invited
