"""Parse stage: rows/s for parse + normalise + dedupe, against a bare phonenumbers loop over the same numbers.

    python -m bench.parse_stage [--rows 100000] [--repeats 5]

The stage is the real code path of a recipient import up to DynamoDB:
`csv_rows_from_s3` (read_rows over 256 KiB chunks, the Row objects the runner sees), cut into chunks of
`CHUNK_ROWS` by the runner's `chunks_of`, each chunk through `RecipientSink.process` (normalise with the row's
country or the campaign's region, landline check, dedupe by E.164 within the chunk, then the batched reads
that find earlier rows and the batched writes), with `_Progress` reset at every checkpoint. Only the
DynamoDB client under `DynamoBatches` is replaced, by an in-memory one that keeps what is written, so
duplicates across chunks are found as they would be in DynamoDB. S3 is replaced by the file's bytes in memory.

The bare loop is `phonenumbers.parse(raw, region)` + `format_number(..., E164)` over the same raw strings
with the same regions, parse errors caught. Runs alternate (stage, bare, stage, bare, ...) so that the
machine's noise falls on both; the figures are medians over the runs.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

if not __package__:  # `python bench/parse_stage.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import phonenumbers
from phonenumbers import NumberParseException, PhoneNumberFormat

from bench._common import DEFAULT_REGION, chunked, csv_bytes, machine, median, per_1000, run_sink_offline
from smsinvite import importing
from smsinvite.csv_rows import read_rows
from smsinvite.object_store import CHUNK_BYTES
from smsinvite.phones import InvalidPhone, normalise
from smsinvite.store import recipient_id_for

GOAL = 0.6
CAMPAIGN_ID = "bench-parse"


def stage(chunks: list[bytes]) -> tuple[float, int, Counter, int]:
    """The real path, AWS aside: (seconds, rows, outcomes, DynamoDB requests the sink made)."""
    return run_sink_offline(chunks, keep_items=True, campaign_id=CAMPAIGN_ID)


def pure_part(chunks: list[bytes]) -> tuple[float, int]:
    """read_rows + the sink's pure screening step (`importing.screen_phones`): no items, no DynamoDB.

    Within a chunk the real code dedupes; across chunks the real sink asks DynamoDB, here a set does.
    """
    started = time.perf_counter()
    seen: set[str] = set()
    rows = 0
    csv_rows = (
        importing.Row(r.number, r.phone, r.country, r.fields, str(r.end_offset)) for r in read_rows(iter(chunks))
    )
    for chunk in importing.chunks_of(csv_rows):
        rows += len(chunk)
        candidates = importing.screen_phones(
            chunk,
            DEFAULT_REGION,
            importing.ChunkResult(),
            allow_landlines=False,
            key=lambda phone: recipient_id_for(CAMPAIGN_ID, phone.e164),
        )
        seen.update(candidates)
    return time.perf_counter() - started, rows


def csv_only(chunks: list[bytes]) -> tuple[float, int]:
    started = time.perf_counter()
    rows = sum(1 for _ in read_rows(iter(chunks)))
    return time.perf_counter() - started, rows


def normalise_only(inputs: list[tuple[str, str]]) -> float:
    started = time.perf_counter()
    for raw, region in inputs:
        try:
            normalise(raw, region)
        except InvalidPhone:
            pass
    return time.perf_counter() - started


def bare(inputs: list[tuple[str, str]]) -> float:
    started = time.perf_counter()
    parse, format_number, e164 = phonenumbers.parse, phonenumbers.format_number, PhoneNumberFormat.E164
    for raw, region in inputs:
        try:
            format_number(parse(raw, region), e164)
        except NumberParseException:
            pass
    return time.perf_counter() - started


def long_line(megabytes: int) -> float:
    """Seconds read_rows takes over a header and one line of `megabytes` MiB without a newline (the best of 3)."""
    chunks = chunked(b"phone\n" + b"x" * (megabytes * 1024 * 1024), CHUNK_BYTES)
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        for _row in read_rows(iter(chunks)):
            pass
        best = min(best, time.perf_counter() - started)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=20240301)
    parser.add_argument("--long-line-mb", type=int, default=8, help="also time a line without a newline of N and 4N MiB")
    args = parser.parse_args(argv)

    data = csv_bytes(args.rows, args.seed)
    chunks = chunked(data, CHUNK_BYTES)
    # The same raw strings and regions the stage hands to phonenumbers (normalise upper-cases the region).
    inputs = [(row.phone, (row.country or DEFAULT_REGION).upper()) for row in read_rows(iter(chunks))]
    print(f"parse stage: {len(inputs):,} generated rows, {len(data) / 1e6:.1f} MB (UTF-8 BOM, ';', CRLF, quoted fields, "
          f"5 countries, mixed formats, invalid values, landlines, re-typed duplicates); {machine()}")

    stage_rates, bare_rates, pure_rates, csv_rates, normalise_rates, ratios, pure_ratios = [], [], [], [], [], [], []
    outcomes, requests = Counter(), 0
    stage(chunked(csv_bytes(2000, args.seed), CHUNK_BYTES))  # warm-up: imports, phonenumbers metadata loading
    bare(inputs[:2000])
    for _ in range(args.repeats):
        seconds, rows, outcomes, requests = stage(chunks)
        stage_rates.append(rows / seconds)
        bare_rates.append(len(inputs) / bare(inputs))
        seconds, rows = pure_part(chunks)
        pure_rates.append(rows / seconds)
        seconds, rows = csv_only(chunks)
        csv_rates.append(rows / seconds)
        normalise_rates.append(len(inputs) / normalise_only(inputs))
        ratios.append(stage_rates[-1] / bare_rates[-1])
        pure_ratios.append(pure_rates[-1] / bare_rates[-1])
    if rows != len(inputs):
        print(f"parse stage: WARNING: the stage counted {rows:,} rows, read_rows {len(inputs):,}")

    ratio = median(ratios)
    print(f"parse stage: {median(stage_rates):,.0f} rows/s vs bare phonenumbers {median(bare_rates):,.0f} rows/s "
          f"-> ratio {ratio:.2f} (goal >= {GOAL}: {'met' if ratio >= GOAL else 'NOT met'}; median of {args.repeats} runs)")
    print(f"  stage = csv_rows_from_s3 -> RecipientSink.process per {importing.CHUNK_ROWS} rows, "
          f"DynamoDB client in memory (the sink's {per_1000(requests, rows):.0f} batch requests per 1000 rows are made, not sent)")
    print(f"  pure part only (read_rows + importing.screen_phones, dedupe across chunks in a set): "
          f"{median(pure_rates):,.0f} rows/s -> ratio {median(pure_ratios):.2f}")
    print(f"  breakdown: read_rows alone {median(csv_rates):,.0f} rows/s; normalise alone (no CSV) "
          f"{median(normalise_rates):,.0f} rows/s; bare parse+format {median(bare_rates):,.0f} rows/s")
    print(f"  per-run ratios: {', '.join(f'{r:.2f}' for r in ratios)}")
    print("  outcomes: " + ", ".join(f"{name} {n:,}" for name, n in sorted(outcomes.items(), key=lambda kv: -kv[1])))
    if args.long_line_mb:
        short, long = long_line(args.long_line_mb), long_line(4 * args.long_line_mb)
        print(f"  a line without a newline (one row too large): {args.long_line_mb} MiB in {short:.3f} s, "
              f"{4 * args.long_line_mb} MiB in {long:.3f} s -> x{long / short:.1f} for 4x the bytes (linear: x4)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
