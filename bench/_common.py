"""What the benchmarks share: a realistic CSV generator, an in-memory DynamoDB client, memory readings, formatting.

The generated file is what operators export from Excel or a CRM: a UTF-8 BOM, semicolons, CRLF, quoted
fields with embedded semicolons, accented names, several extra columns, and a phone column in mixed
formats (national with spaces, dashes, dots and parentheses; international with + or 00; a "(0)" trunk
prefix), five countries (a country column, often empty for the campaign's default region US, sometimes
lower-case), invalid values, landlines, and duplicates of earlier rows written differently. It is
deterministic for a seed and written as a stream, so a million rows never sit in memory.
"""

from __future__ import annotations

import csv
import io
import math
import os
import random
import statistics
import sys
from collections import Counter, deque
from collections.abc import Iterator
from pathlib import Path

HEADER = ["First Name", "Last Name", "E-Mail", "Mobile", "Country", "Customer ID", "Signup Date", "Notes"]
DEFAULT_REGION = "US"  # the benchmarks' campaigns use this default region

US_AREA_CODES = (
    "201 202 203 205 206 207 212 213 214 215 216 217 224 225 228 229 231 234 239 240 248 251 252 253 254 256 "
    "260 262 267 269 270 276 281 301 302 303 304 305 307 308 309 310 312 313 314 315 316 317 318 319 320 321 "
    "323 330 334 336 337 339 347 351 352 360 361 386 401 402 404 405 406 407 408 409 410 412 413 414 415 417 "
    "419 423 424 425 430 432 434 435 440 443 469 478 479 480 484 501 502 503 504 505 507 508 509 510 512 513 "
    "515 516 517 518 520 530 540 541 551 559 561 562 563 567 570 571 573 574 575 580 585 586 601 602 603 605 "
    "606 607 608 609 610 612 614 615 616 617 618 619 620 623 626 630 631 636 641 646 650 651 660 661 662 678 "
    "682 701 702 703 704 706 707 708 712 713 714 715 716 717 718 719 720 724 727 731 732 734 740 754 757 760 "
    "763 765 770 772 773 774 775 781 785 786 801 802 803 804 805 806 808 810 812 813 814 815 816 817 818 828 "
    "830 831 832 843 845 847 848 850 856 857 858 859 860 862 863 864 865 870 872 878 901 903 904 906 907 908 "
    "909 910 912 913 914 915 916 917 918 919 920 925 928 931 936 937 940 941 947 949 951 952 954 956 970 971 "
    "972 973 978 979 980 985 989"
).split()
DE_MOBILE = ("151", "152", "157", "159", "160", "162", "163", "170", "171", "172", "173", "174", "175", "176", "177", "178", "179")
FIRST_NAMES = ("Ana", "Ben", "Chloé", "Dev", "Eve", "Finn", "Gus", "Hana", "Jürgen", "Zoë", "Łukasz", "Siobhán", "Mia", "Noah",
               "Ólafur", "Renée", "Sven", "Tomás", "Yara", "Lars")
LAST_NAMES = ("Müller", "Smith", "Dubois", "de Vries", "O'Brien", "García", "Nguyen", "Jansen", "Kowalski", "Brown",
              "Lefèvre", "Schmidt", "Bakker", "Taylor", "Rossi")
NOTES = ("", "", "", "", "VIP; prefers evenings", "moved from Berlin", 'said "text me"', "=follow up", "line one\nline two")
INVALID = ("", "n/a", "call me", "12345", "+1 555 01", "+999 1234567", "000-000-0000", "415-555-26",
           "+49 151 1234567890123", "tel: unknown", "-", "#N/A")
LANDLINES = (("DE", "030 {7}"), ("DE", "089 {7}"), ("FR", "01 {2} {2} {2} {2}"), ("GB", "020 7946 0{3}"))


def _digits(rng: random.Random, n: int) -> str:
    return "".join(rng.choice("0123456789") for _ in range(n))


def _fill(rng: random.Random, pattern: str) -> str:
    """'030 {7}' -> '030 ' followed by seven random digits."""
    out, i = [], 0
    while i < len(pattern):
        if pattern[i] == "{":
            end = pattern.index("}", i)
            out.append(_digits(rng, int(pattern[i + 1 : end])))
            i = end + 1
        else:
            out.append(pattern[i])
            i += 1
    return "".join(out)


def _us(rng: random.Random) -> tuple[str, str]:
    area, exchange, line = rng.choice(US_AREA_CODES), str(rng.randint(2, 9)) + _digits(rng, 2), _digits(rng, 4)
    formats = (
        f"({area}) {exchange}-{line}", f"{area}-{exchange}-{line}", f"{area}.{exchange}.{line}", f"{area}{exchange}{line}",
        f"+1 {area} {exchange} {line}", f"+1{area}{exchange}{line}", f"+1 ({area}) {exchange}-{line}", f"1-{area}-{exchange}-{line}",
    )
    return rng.choice(formats), rng.choice(("", "", "", "US", "us"))


def _de(rng: random.Random) -> tuple[str, str]:
    prefix = rng.choice(DE_MOBILE)
    subscriber = _digits(rng, 7 if prefix.startswith("17") and rng.random() < 0.3 else 8)
    national = rng.random() < 0.6
    if national:
        return rng.choice((f"0{prefix} {subscriber}", f"0{prefix}/{subscriber}", f"0{prefix}-{subscriber[:4]} {subscriber[4:]}")), rng.choice(("DE", "de", "DE"))
    if rng.random() < 0.3:  # 00 is Germany's international prefix, not the US's: this needs the country column
        return f"0049 {prefix} {subscriber}", "DE"
    return rng.choice((f"+49 {prefix} {subscriber}", f"+49 (0){prefix} {subscriber}")), rng.choice(("DE", ""))


def _fr(rng: random.Random) -> tuple[str, str]:
    d = (rng.choice("6666667") + _digits(rng, 8)).replace("70", "78", 1)
    pairs = " ".join(d[i : i + 2] for i in range(1, 9, 2))
    if rng.random() < 0.6:
        return rng.choice((f"0{d[0]} {pairs}", f"0{d[0]}.{pairs.replace(' ', '.')}", f"0{d}")), "FR"
    if rng.random() < 0.2:
        return f"0033 {d}", "FR"
    return rng.choice((f"+33 {d[0]} {pairs}", f"+33{d}")), rng.choice(("FR", ""))


def _gb(rng: random.Random) -> tuple[str, str]:
    d = "7" + rng.choice("45789") + _digits(rng, 8)
    if rng.random() < 0.5:
        return rng.choice((f"0{d[:4]} {d[4:]}", f"0{d}")), "GB"
    return rng.choice((f"+44 {d[:4]} {d[4:]}", f"+44 (0){d[:4]} {d[4:]}", f"+44{d}")), rng.choice(("GB", "", "gb"))


def _nl(rng: random.Random) -> tuple[str, str]:
    d = "6" + str(rng.choice((1, 2, 3, 4, 5))) + _digits(rng, 7)
    if rng.random() < 0.5:
        return rng.choice((f"0{d[0]} {d[1:]}", f"0{d[0]}-{d[1:]}")), "NL"
    return rng.choice((f"+31 {d[0]} {d[1:]}", f"+31{d}")), rng.choice(("NL", ""))


_COUNTRIES = ((_us, 0.50), (_de, 0.16), (_fr, 0.10), (_gb, 0.10), (_nl, 0.06))


def phones(rng: random.Random) -> Iterator[tuple[str, str]]:
    """(phone as typed, country column) forever: ~5% re-typed duplicates, ~5% invalid, ~2% landlines."""
    recent: deque[tuple[str, str]] = deque(maxlen=5000)  # bounded: a million rows keep memory flat
    makers = [m for m, _ in _COUNTRIES]
    weights = [w for _, w in _COUNTRIES]
    while True:
        roll = rng.random()
        if roll < 0.05 and recent:
            raw, country = rng.choice(recent)
            # The same number typed again, differently: spacing changes, E.164 does not.
            yield (raw.replace(" ", "") if " " in raw else raw), country
        elif roll < 0.10:
            yield rng.choice(INVALID), rng.choice(("", "", "US"))
        elif roll < 0.12:
            country, pattern = rng.choice(LANDLINES)
            yield _fill(rng, pattern), country
        else:
            raw, country = rng.choices(makers, weights)[0](rng)
            recent.append((raw, country))
            yield raw, country


def rows(n: int, seed: int = 20240301) -> Iterator[list[str]]:
    rng = random.Random(seed)
    numbers = phones(rng)
    for i in range(1, n + 1):
        first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
        phone, country = next(numbers)
        email = f"{first.lower()}.{last.lower().replace(' ', '').replace(chr(39), '')}{i}@example.com"
        yield [first, last, email, phone, country, f"C{i:07d}", f"2024-{1 + i % 12:02d}-{1 + i % 28:02d}", rng.choice(NOTES)]


def write_csv(path: Path, n: int, seed: int = 20240301) -> int:
    """Stream `n` rows to `path` (UTF-8 with BOM, semicolons, CRLF); returns the file's size in bytes."""
    with open(path, "w", encoding="utf-8-sig", newline="") as out:
        writer = csv.writer(out, delimiter=";", lineterminator="\r\n")
        writer.writerow(HEADER)
        for row in rows(n, seed):
            writer.writerow(row)
    return path.stat().st_size


def csv_bytes(n: int, seed: int = 20240301) -> bytes:
    """The same file, in memory (for the parse stage, so disk reads stay out of its timing)."""
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, delimiter=";", lineterminator="\r\n")
    writer.writerow(HEADER)
    writer.writerows(rows(n, seed))
    return buffer.getvalue().encode("utf-8-sig")


def chunked(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def file_chunks(path: Path, size: int) -> Iterator[bytes]:
    with open(path, "rb") as handle:
        while chunk := handle.read(size):
            yield chunk


# ------------------------------------------------------------------------------------ DynamoDB stand-in
class InMemoryDynamoDB:
    """A botocore-like client with just BatchGetItem and BatchWriteItem, for DynamoBatches(client=...).

    Everything above the client (DynamoBatches building requests, serialising and deserialising items,
    counting `.requests`) stays the real code. With `keep_items`, written items are kept so a later read
    finds them (duplicates across chunks are found as they are in DynamoDB); without it only counts are
    kept and every read finds nothing, so memory does not grow with the rows written.
    """

    def __init__(self, key_names: dict[str, tuple[str, ...]], *, keep_items: bool = True) -> None:
        self.key_names = key_names
        self.keep_items = keep_items
        self.tables: dict[str, dict[tuple, dict]] = {}
        self.items_written = 0
        self.keys_read = 0

    @classmethod
    def for_tables(cls, tables, *, keep_items: bool = True) -> "InMemoryDynamoDB":
        names = {}
        for model in (tables.campaigns, tables.recipients, tables.imports, tables.codes, tables.suppressions, tables.panels):
            names[model.Meta.table_name] = (model._hash_keyname,) + ((model._range_keyname,) if model._range_keyname else ())
        return cls(names, keep_items=keep_items)

    def _key(self, table: str, item: dict) -> tuple:
        return tuple(item[name]["S"] for name in self.key_names[table])

    def batch_get_item(self, RequestItems: dict) -> dict:  # noqa: N803 - botocore's parameter name
        responses = {}
        for table, request in RequestItems.items():
            self.keys_read += len(request["Keys"])
            stored = self.tables.get(table, {})
            responses[table] = [stored[k] for k in (self._key(table, key) for key in request["Keys"]) if k in stored]
        return {"Responses": responses, "UnprocessedKeys": {}}

    def batch_write_item(self, RequestItems: dict) -> dict:  # noqa: N803
        for table, requests in RequestItems.items():
            self.items_written += len(requests)
            if self.keep_items:
                stored = self.tables.setdefault(table, {})
                for request in requests:
                    item = request["PutRequest"]["Item"]
                    stored[self._key(table, item)] = item
        return {"UnprocessedItems": {}}


def offline_settings():
    """Settings for code that builds models but never reaches AWS (table names only)."""
    from smsinvite.settings import Settings

    names = {f: f"bench-{f.replace('_table', '')}" for f in (
        "campaigns_table", "recipients_table", "imports_table", "codes_table", "suppressions_table",
        "inbox_table", "idempotency_table", "panels_table", "throttle_table", "counts_table")}
    return Settings(
        **names, imports_bucket="bench-imports", send_queue_url="-", dispatch_queue_url="-", import_queue_url="-",
        aws_region="us-east-1", twilio_account_sid="AC" + "0" * 32, twilio_auth_token_secret="-",
        twilio_messaging_service_sid="", twilio_from_number="+15005550006", public_webhook_base_url="",
        sender_ceiling_per_second=10,
    )


# ------------------------------------------------------------------------------------ readings and output
def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (VmHWM), in MB."""
    return _status_kb("VmHWM") / 1024


def rss_mb() -> float:
    return _status_kb("VmRSS") / 1024


def _status_kb(field: str) -> int:
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB on Linux; only a peak, but better than nothing


def median(values) -> float:
    return statistics.median(values)


def spread(values) -> str:
    return f"min {min(values):,.0f}, max {max(values):,.0f}"


def per_1000(count: int, rows: int) -> float:
    return 1000 * count / rows if rows else math.nan


def machine() -> str:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else math.nan
    return f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average {load:.2f}"


# ------------------------------------------------------------------------------------ counting DynamoDB requests
class DynamoDBRequestCounter:
    """Counts the HTTP requests this process sends to DynamoDB, by the function that sent them and by operation.

    It wraps botocore's `URLLib3Session.send`, the one place where every botocore client sends a request
    over HTTP: boto3's clients, `DynamoBatches`' client and PynamoDB's own client alike (PynamoDB has its
    own botocore session, so hooking one session's events would miss it). A request is DynamoDB's when it
    carries DynamoDB's `X-Amz-Target: DynamoDB_20120810.<Operation>` header. Each HTTP attempt counts, so
    botocore's retries are counted too: the figure is what reaches DynamoDB (Local).

    The local router runs every function in this process, in its own threads; `attribute(router)` wraps the
    router's invocation so that each request is put down to the function (logical id) that sent it, and
    requests from anything else (the benchmark's own polling) to "other".
    """

    PREFIX = "DynamoDB_20120810."

    def __init__(self) -> None:
        import threading

        self._lock = threading.Lock()
        self._local = threading.local()
        self.counts: Counter = Counter()  # (function, operation) -> requests
        self._original = None

    def install(self) -> "DynamoDBRequestCounter":
        from botocore.httpsession import URLLib3Session

        original = self._original = URLLib3Session.send
        counter = self

        def send(session, request):
            target = request.headers.get("X-Amz-Target")
            if target is not None:
                target = target.decode() if isinstance(target, bytes) else target
                if target.startswith(counter.PREFIX):
                    function = getattr(counter._local, "function", None) or "other"
                    with counter._lock:
                        counter.counts[(function, target[len(counter.PREFIX):])] += 1
            return original(session, request)

        URLLib3Session.send = send
        return self

    def uninstall(self) -> None:
        if self._original is not None:
            from botocore.httpsession import URLLib3Session

            URLLib3Session.send = self._original
            self._original = None

    def attribute(self, router) -> None:
        run = router._run
        local = self._local

        def attributed(spec, *args, **kwargs):
            previous = getattr(local, "function", None)
            local.function = spec.logical_id
            try:
                return run(spec, *args, **kwargs)
            finally:
                local.function = previous

        router._run = attributed

    def snapshot(self) -> Counter:
        with self._lock:
            return Counter(self.counts)

    @staticmethod
    def of(counts: Counter, function: str) -> Counter:
        return Counter({operation: n for (who, operation), n in counts.items() if who == function})


# ------------------------------------------------------------------------------------ the sink without AWS
def run_sink_offline(chunks, *, keep_items: bool, campaign_id: str = "bench-offline"):
    """A recipient import's own code from CSV bytes to DynamoBatches, with only AWS replaced.

    `csv_rows_from_s3` reads `chunks` (instead of S3), the runner's `chunks_of` cuts CHUNK_ROWS rows (or
    CHUNK_BYTES of the file) at a time, `process_chunk` hands each chunk's rows that fit to
    `RecipientSink.process` through the real `DynamoBatches` over an `InMemoryDynamoDB`,
    and `_Progress` is reset at every checkpoint (where the runner would save it; here it is added to the
    totals and dropped). Returns (seconds, rows, outcomes, DynamoBatches.requests).
    """
    import time
    from unittest import mock

    from smsinvite import importing
    from smsinvite.batches import DynamoBatches
    from smsinvite.store import Store, utcnow

    settings = offline_settings()
    store = Store(settings)
    batches = DynamoBatches(client=InMemoryDynamoDB.for_tables(store.t, keep_items=keep_items))
    campaign = store.t.campaigns(
        campaign_id, name="bench", survey_url="https://survey.example.com/s", message_template="{link}",
        default_region=DEFAULT_REGION, created_at=utcnow(), updated_at=utcnow(),
    )
    record = store.t.imports(
        f"imp_{campaign_id}", kind="recipients", source="s3", bucket=settings.imports_bucket,
        key=f"imports/{campaign_id}/bench.csv", version="", started_at=utcnow(),
    )
    sink = importing.RecipientSink(store, batches, campaign, record.import_id)
    outcomes: Counter = Counter()
    rows = 0
    class FixedSecrets:  # the key of the hash that stands for a number (Secrets Manager in AWS)
        def get(self, name, max_age=None):
            return "bench-phone-hash-key"

    with (
        mock.patch.object(importing, "object_chunks", lambda *args, **kwargs: iter(chunks)),
        mock.patch("smsinvite.store.secrets_provider", FixedSecrets),
    ):
        started = time.perf_counter()
        progress = importing._Progress(record)
        for chunk in importing.chunks_of(importing.csv_rows_from_s3(record)):
            progress.add(importing.process_chunk(sink, chunk), chunk)
            if (
                progress.rows_since_checkpoint >= settings.import_checkpoint_rows
                or progress.bytes_since_checkpoint >= settings.import_checkpoint_bytes
            ):
                rows += progress.rows_since_checkpoint
                outcomes += progress.outcomes
                progress.reset()
        rows += progress.rows_since_checkpoint
        outcomes += progress.outcomes
        elapsed = time.perf_counter() - started
    return elapsed, rows, outcomes, batches.requests
