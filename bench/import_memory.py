"""Memory: peak RSS of the import pipeline at 100k and 1M rows; the goal is <= 200 MB, flat as the file grows.

    python -m bench.import_memory [--sizes 100000,1000000] [--max-real-seconds 600] [--skip-real]

Every measurement runs in a fresh child process that does nothing but the import, and reads its own
peak RSS (VmHWM in /proc/self/status) when done; its RSS just before the first row is printed too.
Files are generated on disk as a stream (they are never whole in memory).

- Real path: the parent starts the local stack (moto S3, DynamoDB Local), creates a campaign, stops the
  router (so that the upload does not start an import in the parent) and uploads the file. The child runs
  `ImportRunner.register_upload` and `ImportRunner.run` against those services, as ImportFunction does
  (S3 range reads, batched reads and writes, checkpoints, rejected-rows report parts and their assembly),
  in one go (no time limit). moto and DynamoDB Local hold the data in the parent and in Java, not in the child.
- Streaming path: when the real path would take more than --max-real-seconds for a size (projected
  from the first real size's rate), that size is measured, and every size is measured for comparison,
  through the same code with AWS replaced: the file read from disk in 256 KiB chunks ->
  `csv_rows_from_s3` -> `RecipientSink.process` -> `DynamoBatches` over an in-memory DynamoDB client that
  keeps counts only (so reads find nothing: duplicates across chunks of 100 rows are not detected, and
  no checkpoint, report part or S3 call is made).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if not __package__:  # `python bench/import_memory.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import file_chunks, machine, peak_rss_mb, per_1000, rss_mb, write_csv

REPO = Path(__file__).resolve().parents[1]
GOAL_MB = 200


# ------------------------------------------------------------------------------------ children
def child_streaming(path: Path) -> dict:
    from bench._common import run_sink_offline
    from smsinvite.object_store import CHUNK_BYTES

    baseline = rss_mb()
    seconds, rows, outcomes, requests = run_sink_offline(file_chunks(path, CHUNK_BYTES), keep_items=False)
    return {"rows": rows, "seconds": seconds, "baseline_mb": baseline, "peak_mb": peak_rss_mb(),
            "outcomes": dict(outcomes), "batch_requests": requests}


def child_real(bucket: str, key: str) -> dict:
    import boto3

    from smsinvite.importing import ImportRunner, S3Upload
    from smsinvite.settings import Settings
    from smsinvite.store import Store

    settings = Settings.from_env()
    store = Store(settings)
    handed_over: list[tuple[str, int]] = []
    runner = ImportRunner(store, settings, continue_later=lambda import_id, delay: handed_over.append((import_id, delay)))
    head = boto3.client("s3").head_object(Bucket=bucket, Key=key)
    upload = S3Upload(bucket, key, head.get("VersionId") or None, head["ETag"], head["ContentLength"])
    record, _ = runner.register_upload(upload)
    baseline = rss_mb()
    started = time.perf_counter()
    while True:
        summary = runner.run(record.import_id, time_left=lambda: 1e9, margin=0)
        if summary.state != "running":
            break
        time.sleep(1)  # only if the campaign's import lease was taken: wait, as the queue would
    seconds = time.perf_counter() - started
    return {"rows": summary.rows, "seconds": seconds, "baseline_mb": baseline, "peak_mb": peak_rss_mb(),
            "outcomes": summary.outcomes, "state": summary.state, "batch_requests": runner.batches.requests,
            "handed_over": len(handed_over)}


def run_child(args: list[str], env: dict | None = None) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as result:
        result_path = result.name
    command = [sys.executable, "-m", "bench.import_memory", "--child", *args, "--result", result_path]
    # The child's own output (the functions' JSON logs) is not the benchmark's: dropped.
    done = subprocess.run(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"child {args[0]} failed ({done.returncode}): {done.stderr[-2000:]}")
    data = json.loads(Path(result_path).read_text())
    os.unlink(result_path)
    return data


# ------------------------------------------------------------------------------------ parent
def describe(rows: int, data: dict) -> str:
    return (f"{rows:>9,} rows: peak RSS {data['peak_mb']:.0f} MB (before the first row {data['baseline_mb']:.0f} MB), "
            f"{data['seconds']:.0f} s, {data['rows'] / data['seconds']:,.0f} rows/s")


def real_path(files: dict[int, Path], max_seconds: float) -> dict[int, dict]:
    import boto3

    from local.demo import create_campaign
    from local.stack import LocalStack, StackOptions

    results: dict[int, dict] = {}
    logs = Path(tempfile.mkdtemp(prefix="smsinvite-bench-memory-")) / "stack.log"
    out, sys.stdout = sys.stdout, open(logs, "w", encoding="utf-8", buffering=1)  # noqa: SIM115

    def say(line: str) -> None:
        print(line, file=out, flush=True)

    try:
        with LocalStack(StackOptions()) as stack:
            say(f"memory: real path: child processes run ImportRunner against the local stack "
                f"(moto S3, DynamoDB engine {stack.services.engine})")
            campaigns = {rows: f"bench-mem-{rows}-{int(time.time())}" for rows in files}
            for campaign_id in campaigns.values():
                create_campaign(stack, campaign_id)
            env = dict(os.environ)  # the functions' environment, as the router applied it
            stack.router.stop()  # from here on, an upload starts no import in this process
            rate = None
            for rows, path in sorted(files.items()):
                if rate is not None and rows / rate > max_seconds:
                    say(f"memory: {rows:>9,} rows: real path not run: at {rate:,.0f} rows/s it would take "
                        f"~{rows / rate / 60:.0f} min (> {max_seconds / 60:.0f} min, --max-real-seconds); "
                        "measured on the streaming path below")
                    continue
                key = f"imports/{campaigns[rows]}/bench-{rows}.csv"
                with open(path, "rb") as body:
                    boto3.client("s3").put_object(Bucket=stack.bucket, Key=key, Body=body)
                data = run_child(["real", "--bucket", stack.bucket, "--key", key], env=env)
                results[rows] = data
                rate = data["rows"] / data["seconds"]
                say(f"memory: {describe(rows, data)}  [{data['state']}; DynamoBatches.requests "
                    f"{per_1000(data['batch_requests'], data['rows']):.0f} per 1000 rows]")
    finally:
        sys.stdout.close()
        sys.stdout = out
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="100000,1000000", help="comma-separated row counts")
    parser.add_argument("--seed", type=int, default=20240301)
    parser.add_argument("--max-real-seconds", type=float, default=600,
                        help="run a size on the real path only if projected to take less than this")
    parser.add_argument("--skip-real", action="store_true")
    parser.add_argument("--child", choices=("real", "streaming"), help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    parser.add_argument("--bucket", help=argparse.SUPPRESS)
    parser.add_argument("--key", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        data = child_streaming(Path(args.path)) if args.child == "streaming" else child_real(args.bucket, args.key)
        Path(args.result).write_text(json.dumps(data))
        return 0

    say = lambda line: print(line, flush=True)  # noqa: E731
    sizes = sorted(int(size) for size in args.sizes.split(","))
    work = Path(tempfile.mkdtemp(prefix="smsinvite-bench-memory-"))
    files = {}
    for rows in sizes:
        files[rows] = work / f"recipients-{rows}.csv"
        size = write_csv(files[rows], rows, args.seed)
        say(f"memory: generated {rows:,} rows, {size / 1e6:.1f} MB at {files[rows]}")
    say(f"memory: {machine()}")

    real = {} if args.skip_real else real_path(files, args.max_real_seconds)
    say("memory: streaming path: child processes run the file from disk -> csv_rows_from_s3 -> RecipientSink.process "
        "-> DynamoBatches over an in-memory DynamoDB that keeps counts only (no AWS, no checkpoints)")
    streaming = {}
    for rows, path in files.items():
        streaming[rows] = run_child(["streaming", "--path", str(path)])
        say(f"memory: {describe(rows, streaming[rows])}")

    small, large = sizes[0], sizes[-1]
    worst = max(d["peak_mb"] for d in [*real.values(), *streaming.values()])
    verdict = "met" if worst <= GOAL_MB else "NOT met"
    say(f"memory: highest peak RSS {worst:.0f} MB (goal <= {GOAL_MB} MB: {verdict})")
    if len(sizes) > 1:
        for name, results in (("real path", real), ("streaming path", streaming)):
            if small in results and large in results:
                growth = results[large]["peak_mb"] / results[small]["peak_mb"]
                say(f"memory: {name}: peak RSS {results[small]['peak_mb']:.0f} MB at {small:,} rows -> "
                    f"{results[large]['peak_mb']:.0f} MB at {large:,} rows: x{growth:.2f} for x{large // small} rows "
                    f"(flat = x1.00)")
    for path in files.values():
        path.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
