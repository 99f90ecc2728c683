"""End to end: rows/s of a CSV import into the local stack, and DynamoDB requests per 1000 rows.

    python -m bench.import_end_to_end [--rows 20000]

Starts the embedded local stack (moto for S3/SQS, DynamoDB Local, the router, the Twilio simulator),
creates a campaign with the commands function, drops a generated CSV into `imports/<campaign>/` and waits
until the import record is final. The router delivers the S3 event and the import queue's continuations
to ImportFunction in this process, exactly as in `make demo`.

- rows/s: rows processed / (the record's finished_at - the moment the upload started). This includes the
  S3 notification's delivery (the router polls it from SQS) and every continuation hand-over. The rate
  over the ImportFunction invocations' own durations is printed beside it.
- DynamoDB requests: every HTTP request sent to DynamoDB by ImportFunction, counted in botocore's HTTP
  layer (see DynamoDBRequestCounter in bench/_common.py), so boto3, DynamoBatches and PynamoDB are all
  counted, retries included; the benchmark's own polling is counted apart and left out.
The functions' JSON logs go to a file (as in the demo), not to the terminal.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

if not __package__:  # `python bench/import_end_to_end.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import DynamoDBRequestCounter, machine, per_1000, write_csv


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=20240301)
    parser.add_argument("--timeout", type=float, default=900, help="seconds to wait for the import to finish")
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="smsinvite-bench-e2e-"))
    csv_path = work / f"recipients-{args.rows}.csv"
    size = write_csv(csv_path, args.rows, args.seed)
    log_path = work / "functions.log"
    out = sys.stdout

    def say(line: str) -> None:
        print(line, file=out, flush=True)

    say(f"end to end: {args.rows:,} generated rows, {size / 1e6:.1f} MB at {csv_path}; {machine()}")
    counter = DynamoDBRequestCounter().install()
    import boto3

    from local.demo import create_campaign, wait_for
    from local.stack import LocalStack, StackOptions

    # Functions log JSON to stdout, as in Lambda; keep it in a file and the figures on the terminal.
    sys.stdout = open(log_path, "w", encoding="utf-8", buffering=1)  # noqa: SIM115
    try:
        with LocalStack(StackOptions()) as stack:
            from smsinvite.settings import Settings
            from smsinvite.store import Store

            say(f"end to end: local stack up (DynamoDB engine: {stack.services.engine})")
            counter.attribute(stack.router)
            store = Store(Settings.from_env())
            campaign_id = f"bench-e2e-{int(time.time())}"
            create_campaign(stack, campaign_id)
            key = f"imports/{campaign_id}/bench {args.rows} rows.csv"
            before = counter.snapshot()
            invocations_before = len(stack.router.invocations_of("ImportFunction"))

            uploaded_at = time.time()
            with open(csv_path, "rb") as body:
                boto3.client("s3").put_object(Bucket=stack.bucket, Key=key, Body=body)

            def final():
                for record in store.t.imports.scan(store.t.imports.key == key, consistent_read=True):
                    if record.state != "running":
                        return record
                return None

            record = wait_for(final, timeout=args.timeout, what=f"the import of {args.rows:,} rows", interval=0.5)
            counts = counter.snapshot() - before
            invocations = stack.router.invocations_of("ImportFunction")[invocations_before:]
    finally:
        sys.stdout.close()
        sys.stdout = out
        counter.uninstall()

    rows = int(record.rows_processed)
    wall = record.finished_at.timestamp() - uploaded_at
    busy = sum(i.duration for i in invocations)
    continuations = sum(1 for i in invocations if i.event_type == "SQS")
    mine = DynamoDBRequestCounter.of(counts, "ImportFunction")
    total = sum(mine.values())
    outcomes = {name: int(n) for name, n in record.outcomes.as_dict().items()}
    say(f"end to end: {rows:,} rows in {wall:.1f} s -> {rows / wall:,.0f} rows/s into the local stack "
        f"(upload to final import record; import state {record.state})")
    say(f"  ImportFunction: {len(invocations)} invocations (1 S3 event, {continuations} from the import queue), "
        f"busy {busy:.1f} s -> {rows / busy:,.0f} rows/s while running")
    say(f"end to end: {total:,} DynamoDB requests from ImportFunction -> {per_1000(total, rows):.1f} per 1000 rows")
    say("  by operation (per 1000 rows): " + ", ".join(
        f"{op} {n:,} ({per_1000(n, rows):.1f})" for op, n in sorted(mine.items(), key=lambda kv: -kv[1])))
    others = Counter({who: n for (who, _), n in counts.items() if who != "ImportFunction"})
    if others:
        say("  not counted above: " + ", ".join(f"{who} {n:,}" for who, n in sorted(others.items()))
            + " (other = this benchmark's polling of the import record)")
    say("  outcomes: " + ", ".join(f"{name} {n:,}" for name, n in sorted(outcomes.items(), key=lambda kv: -kv[1])))
    say(f"  function logs: {log_path}")
    if rows != args.rows:
        say(f"end to end: WARNING: the import processed {rows:,} rows of {args.rows:,}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
