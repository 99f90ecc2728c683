"""Throttle: does the sender reach each sender's ceiling R without ever exceeding it, with Twilio 150 ms away?

    python -m bench.throttle [--rates 10,50] [--seconds 20] [--latency 0.15] [--callbacks-after 600]

For each ceiling R, one fresh local stack: `LocalStack(StackOptions(sender_mps=R))`, which sets both the
Twilio simulator's per-sender limit (sliding one second; the excess is answered 429 and counted) and the
template's SenderCeilingPerSecond. The simulator answers every API call `--latency` seconds late. A
campaign with `rate_per_second=R`, no quiet hours and a sender of its own (a From number used by no other
run) gets R x seconds unique US numbers through `add_recipients` (10,000 per command at most), is
prepared and approved; the benchmark then waits until every recipient has reached Twilio. The router
runs the dispatcher and the SenderFunction in this process, at the template's BatchSize and
MaximumConcurrency, as in `make demo`.

Read from the simulator's ledger (each create attempt, its `time.monotonic()` on arrival, its HTTP status),
for that sender only:
- achieved rate = (n - 1) / (t_last - t_first) over the successful creates (201), and its ratio to R;
- windows over R, two ways: 1 s buckets aligned on the first create, and sliding windows (for each
  create at t, the creates in (t - 1, t], which is how the simulator's limiter and a carrier count);
- the limiter's excess and the 429s in the ledger;
- every figure again without the first second (the warm-up: the first batches wait for SQS, the
  batching window and the first slot reservation).
From the router: SenderFunction invocations, records per invocation, and the concurrency seen (the most
invocations overlapping in time, and the mean). From wrappers (this process only) around
`InvitationSender.carry_out`, `Store.claim` and `TwilioGateway.send`: the outcome of each record (a record
delivered to the function but never carried out is lost), and how late each create reached Twilio after
its planned slot, step by step (epoch seconds on both sides: the slots' clock and the ledger's wall clock).
The wait ends when every recipient has reached Twilio, after `--timeout`, or after `--stall` seconds
without a new create (then a warning says where the rest are). The functions' JSON logs go to a file
whose path is printed.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

if not __package__:  # `python bench/throttle.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import US_AREA_CODES, machine

MAX_PER_COMMAND = 10_000  # add_recipients takes at most this many entries
TEMPLATE = "Hi {first_name|there}, tell us how we did: {link} Reply STOP to opt out"
COMMAND = "python -m bench.throttle"


# ------------------------------------------------------------------------------------ the campaign
def us_mobiles(count: int) -> list[str]:
    """`count` unique, valid US numbers: +1 <area> 555 <line>, 10,000 per area code (FIXED_LINE_OR_MOBILE)."""
    if count > len(US_AREA_CODES) * 10_000:
        raise ValueError(f"at most {len(US_AREA_CODES) * 10_000:,} numbers")
    return [f"+1{US_AREA_CODES[i // 10_000]}555{i % 10_000:04d}" for i in range(count)]


def bench_sender(index: int) -> str:
    """A From number per run; not one of Twilio's magic From numbers (+15005550001/7/8 fail on purpose)."""
    return f"+1500555{1000 + index:04d}"


def create_campaign(stack, campaign_id: str, *, sender: str, rate: float, phones: list[str]) -> int:
    """create_campaign and add_recipients through the commands function; returns how many were imported."""
    from local.demo import NO_QUIET_HOURS, command

    command(stack, {
        "command": "create_campaign", "campaign_id": campaign_id, "name": f"bench {campaign_id}",
        "survey_url": "https://survey.example.com/s/bench", "message_template": TEMPLATE,
        "default_region": "US", "sender": sender, "rate_per_second": rate, "quiet_hours": NO_QUIET_HOURS,
    })
    imported = 0
    for start in range(0, len(phones), MAX_PER_COMMAND):
        entries = [{"phone": p, "first_name": f"Guest{start + i}"} for i, p in enumerate(phones[start:start + MAX_PER_COMMAND])]
        summary = command(stack, {"command": "add_recipients", "campaign_id": campaign_id, "recipients": entries})
        summary = finished_import(summary)
        imported += int(summary["outcomes"].get("imported", 0))
    return imported


def finished_import(summary: dict, timeout: float = 300) -> dict:
    """A long list continues on the import queue: wait until its import record is final."""
    if summary["state"] != "running":
        return summary
    from local.demo import wait_for
    from smsinvite.importing import ImportSummary
    from smsinvite.settings import Settings
    from smsinvite.store import Store

    imports = Store(Settings.from_env()).t.imports

    def final():
        record = imports.get(summary["import_id"], consistent_read=True)
        return ImportSummary.of(record).as_dict() if record.state != "running" else None

    return wait_for(final, timeout=timeout, what=f"import {summary['import_id']}", interval=0.5)


def creates_of(stack, sender: str) -> list:
    """The simulator's ledger for one sender, in arrival order."""
    return sorted((e for e in stack.twilio.ledger if e.sender == sender), key=lambda e: e.monotonic)


def wait_until_sent(stack, sender: str, expected: int, *, timeout: float, stall: float) -> bool:
    """True once `expected` messages from `sender` were created at the simulator; False after `timeout`,
    or when no new one has arrived for `stall` seconds (records lost on the way never arrive)."""
    return wait_for_progress(lambda: sum(1 for e in creates_of(stack, sender) if e.status == 201),
                             lambda n: n >= expected, timeout=timeout, stall=stall)


def wait_for_progress(progress, done, *, timeout: float, stall: float, interval: float = 0.25) -> bool:
    """Poll `progress()` until `done(progress())`; False after `timeout`, or after `stall` seconds without change."""
    started = time.monotonic()
    last, changed_at = None, started
    while True:
        value = progress()
        if done(value):
            return True
        now = time.monotonic()
        if value != last:
            last, changed_at = value, now
        if now - started > timeout or now - changed_at > stall:
            return False
        time.sleep(interval)


def settle(stack, probe: "SendProbe", timeout: float = 10.0) -> None:
    """Let the last SenderFunction invocations end (their records are then counted), for at most `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sender_records = sum(i.records for i in stack.router.invocations_of("SenderFunction"))
        if probe.in_flight == 0 and sender_records >= sum(probe.outcomes.values()):
            return
        time.sleep(0.1)


def process_group_cpu(pgid: int | None) -> float:
    """CPU seconds (user + system) of every live process in group `pgid` (DynamoDB Local's launcher and JVM)."""
    if pgid is None:
        return math.nan
    ticks, total = os.sysconf("SC_CLK_TCK"), 0
    for entry in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = entry.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # fields after the command: state, ppid, pgrp, ..., utime (12), stime (13)
            total += int(fields[11]) + int(fields[12])
    return total / ticks


def unsent_diagnosis(stack, campaign_id: str) -> str:
    """Where the recipients are, and what the send queue holds, when some never reached Twilio."""
    import boto3

    from smsinvite.settings import Settings
    from smsinvite.store import Store

    statuses = Counter(r.status for r in Store(Settings.from_env()).t.recipients.query(campaign_id, consistent_read=True))
    attributes = boto3.client("sqs").get_queue_attributes(
        QueueUrl=stack.queue_url("SendQueue"), AttributeNames=["All"])["Attributes"]
    queued = {k.replace("ApproximateNumberOfMessages", "") or "visible": v for k, v in attributes.items()
              if k.startswith("ApproximateNumberOfMessages")}
    dead = boto3.client("sqs").get_queue_attributes(
        QueueUrl=stack.queue_url("SendDeadLetterQueue"), AttributeNames=["ApproximateNumberOfMessages"])["Attributes"]
    return (f"recipient statuses {dict(statuses)}; send queue {queued}; "
            f"send DLQ {dead['ApproximateNumberOfMessages']}")


# ------------------------------------------------------------------------------------ watching the sender
@dataclass
class SendProbe:
    """Wrappers (this process only) around the send path, to see what lies between a slot and Twilio.

    Per phone: the slot `InvitationSender.carry_out` was planned for, when `Store.claim` started and ended,
    and when `TwilioGateway.send` started (epoch seconds, the clock the slots are on); and every outcome.
    """

    outcomes: Counter = field(default_factory=Counter)
    recipients: set = field(default_factory=set)  # every recipient carry_out was called for
    in_flight: int = 0
    slot: dict[str, float] = field(default_factory=dict)
    claim_started: dict[str, float] = field(default_factory=dict)
    claim_ended: dict[str, float] = field(default_factory=dict)
    send_started: dict[str, float] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _originals: list = field(default_factory=list)

    def install(self) -> "SendProbe":
        from smsinvite.sending import InvitationSender
        from smsinvite.store import Store
        from smsinvite.twilio_gateway import TwilioGateway

        probe = self
        carry_out, claim, send = InvitationSender.carry_out, Store.claim, TwilioGateway.send
        self._originals = [(InvitationSender, "carry_out", carry_out), (Store, "claim", claim), (TwilioGateway, "send", send)]

        def probed_carry_out(sender, plan):
            if plan.outcome is None and plan.error is None and plan.recipient is not None:
                probe._note(probe.slot, plan.recipient.phone, plan.at)
            with probe._lock:
                probe.in_flight += 1
            try:
                outcome = carry_out(sender, plan)
            finally:
                with probe._lock:
                    probe.in_flight -= 1
            with probe._lock:
                probe.outcomes[outcome.value] += 1
                probe.recipients.add(plan.request.recipient_id)
            return outcome

        def probed_claim(store, recipient, **changes):
            probe._note(probe.claim_started, recipient.phone, time.time())
            try:
                return claim(store, recipient, **changes)
            finally:
                probe._note(probe.claim_ended, recipient.phone, time.time())

        def probed_send(gateway, *, to, **kwargs):
            probe._note(probe.send_started, to, time.time())
            return send(gateway, to=to, **kwargs)

        InvitationSender.carry_out, Store.claim, TwilioGateway.send = probed_carry_out, probed_claim, probed_send
        return self

    def _note(self, table: dict, phone: str, value: float) -> None:
        with self._lock:
            table[phone] = value  # the last attempt wins: a 429'd phone's retry replaces its first try

    def uninstall(self) -> None:
        for owner, name, original in self._originals:
            setattr(owner, name, original)
        self._originals = []

    def lateness_lines(self, created) -> list[str]:
        """How late each create reached Twilio after its slot, and where that time went."""
        arrived = {e.to: e.wall.timestamp() for e in created}
        phones = [p for p in arrived if p in self.slot and p in self.claim_ended and p in self.send_started]
        if not phones:
            return []
        steps = (
            ("slot -> claim starts", self.slot, self.claim_started),
            ("claim (TransactWriteItems)", self.claim_started, self.claim_ended),
            ("claim ends -> Twilio call starts", self.claim_ended, self.send_started),
            ("Twilio call starts -> create arrives", self.send_started, arrived),
            ("slot -> create arrives (lateness)", self.slot, arrived),
        )
        lines = ["  between a send's slot and its create at the simulator (ms: median / p90 / p99 / max):"]
        for label, start, end in steps:
            values = [1000 * (end[p] - start[p]) for p in phones]
            lines.append(f"    {label:<38} {statistics.median(values):5.0f} / {percentile(values, 0.9):5.0f} / "
                         f"{percentile(values, 0.99):5.0f} / {max(values):5.0f}")
        return lines


# ------------------------------------------------------------------------------------ the figures
def mean_rate(times: list[float]) -> float:
    return (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 and times[-1] > times[0] else math.nan


def aligned_buckets_over(times: list[float], limit: float, origin: float) -> tuple[int, int]:
    """(buckets holding more than `limit`, the fullest bucket): 1 s buckets [origin + k, origin + k + 1)."""
    buckets = Counter(math.floor(t - origin) for t in times)
    return sum(1 for n in buckets.values() if n > limit), max(buckets.values(), default=0)


def sliding_windows_over(times: list[float], limit: float) -> tuple[int, int]:
    """(creates whose window (t - 1, t] holds more than `limit`, the fullest such window)."""
    over, fullest, first = 0, 0, 0
    for last, t in enumerate(times):
        while t - times[first] >= 1.0:
            first += 1
        held = last - first + 1
        fullest = max(fullest, held)
        over += held > limit
    return over, fullest


def concurrency(invocations) -> tuple[int, float]:
    """(the most invocations overlapping at one moment, the mean number running over their span)."""
    edges = sorted([(i.started_at, 1) for i in invocations] + [(i.started_at + i.duration, -1) for i in invocations],
                   key=lambda edge: (edge[0], edge[1]))
    running = most = 0
    for _, step in edges:
        running += step
        most = max(most, running)
    if not invocations:
        return 0, math.nan
    span = max(i.started_at + i.duration for i in invocations) - min(i.started_at for i in invocations)
    return most, sum(i.duration for i in invocations) / span if span > 0 else math.nan


def percentile(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def window_lines(label: str, times: list[float], attempts: list[float], rate: float) -> list[str]:
    """The rate and the windows over R of the creates (201), and the windows of every attempt (201 or 429)."""
    if len(times) < 2:
        return [f"  {label}: too few creates ({len(times)})"]
    achieved = mean_rate(times)
    lines = [f"  {label}: {len(times)} creates over {times[-1] - times[0]:.2f} s -> {achieved:.2f}/s, "
             f"ratio to R {achieved / rate:.3f} (goal >= 0.97)"]
    for what, moments, goal in (("creates (201)", times, " (goal 0 and 0)"), ("attempts (201 + 429)", attempts, "")):
        buckets, fullest_bucket = aligned_buckets_over(moments, rate, times[0])
        sliding, fullest_window = sliding_windows_over(moments, rate)
        lines.append(f"  {label}: {what} windows over R: aligned 1 s buckets {buckets} (fullest {fullest_bucket}), "
                     f"sliding (t-1, t] {sliding} (fullest {fullest_window}){goal}")
    return lines


def retry_lines(entries: list, rate: float) -> list[str]:
    """The creates that were retries of a 429 come back after a backoff: the rate of the first tries alone."""
    refused = {e.to for e in entries if e.status == 429}
    first_tries, retried, seen_refusal = [], [], set()
    for e in entries:
        if e.status == 429:
            seen_refusal.add(e.to)
        elif e.status == 201:
            (retried if e.to in seen_refusal else first_tries).append(e.monotonic)
    if not refused or len(first_tries) < 2:
        return []
    achieved = mean_rate(first_tries)
    return [f"  429 retries: {len(retried)} creates were retries of a 429, the last {max(retried) - first_tries[-1]:.2f} s "
            f"after the last first try; first tries alone: {len(first_tries)} over "
            f"{first_tries[-1] - first_tries[0]:.2f} s -> {achieved:.2f}/s, ratio to R {achieved / rate:.3f}"]


# ------------------------------------------------------------------------------------ one ceiling
@dataclass
class CeilingRun:
    rate: int
    sender: str
    imported: int
    approved_at: float
    entries: list  # the simulator's ledger for the sender
    excess: int
    invocations: list  # SenderFunction's, from approve on
    max_concurrency: int  # the template's MaximumConcurrency, as the router applies it
    engine: str
    probe: SendProbe
    cpu_seconds: float  # this process's CPU time (every thread: router, functions, moto, simulator) while sending
    dynamodb_cpu_seconds: float  # DynamoDB Local's (its own process group) over the same time
    wall_seconds: float
    unsent: str | None = None  # a diagnosis, when some never reached Twilio in time


def delivery_lines(run: CeilingRun, records: list[int], created: list) -> list[str]:
    """Did every record reach carry_out, was anyone texted twice, and how busy was this one Python process."""
    probe = run.probe
    never = run.imported - len(probe.recipients)
    twice = sum(1 for n in Counter(e.to for e in created).values() if n > 1)
    return [
        f"  carry_out outcomes: {dict(probe.outcomes)}; records delivered to SenderFunction {sum(records)}, "
        f"carry_out calls {sum(probe.outcomes.values())}; recipients never carried out {never}"
        + (" (LOST: delivered to the function, reported done, never sent)" if never > 0 else ""),
        f"  recipients texted twice (two 201s to one number): {twice} (goal 0)",
        f"  CPU from approve on ({run.wall_seconds:.1f} s): this process (router, functions, moto, simulator; one GIL) "
        f"{run.cpu_seconds / run.wall_seconds:.2f} cores, DynamoDB Local {run.dynamodb_cpu_seconds / run.wall_seconds:.2f} "
        f"cores, of {os.cpu_count()}",
    ]


def send_at_ceiling(index: int, rate: int, args) -> CeilingRun:
    """One fresh stack at ceiling `rate`; a campaign of rate x seconds recipients sent through it."""
    from local.demo import prepare_and_approve
    from local.stack import LocalStack, StackOptions

    sender, campaign_id = bench_sender(index), f"bench-throttle-{rate}-{int(time.time())}"
    probe = SendProbe().install()
    try:
        with LocalStack(StackOptions(sender_mps=rate)) as stack:
            stack.twilio.faults.latency = args.latency
            # Status callbacks wait until after the measurement: on this one machine the status webhook's
            # load (3 callbacks a message) would otherwise compete with the sender for the same CPUs and
            # DynamoDB Local. bench.send_path measures the callbacks.
            stack.twilio.callback_delay = args.callbacks_after
            imported = create_campaign(stack, campaign_id, sender=sender, rate=rate, phones=us_mobiles(rate * args.seconds))
            prepare_and_approve(stack, campaign_id)
            dynamodb = stack.services.dynamodb.pid
            approved_at, cpu_before, dynamodb_before = time.time(), time.process_time(), process_group_cpu(dynamodb)
            sent = wait_until_sent(stack, sender, imported, timeout=args.timeout, stall=args.stall)
            cpu_seconds = time.process_time() - cpu_before
            # Up to the last create, not to the end of the wait (which may have waited `--stall` s for nothing).
            wall_seconds = max((e.wall.timestamp() for e in creates_of(stack, sender)), default=time.time()) - approved_at
            dynamodb_cpu_seconds = process_group_cpu(dynamodb) - dynamodb_before
            settle(stack, probe)
            run = CeilingRun(
                rate=rate, sender=sender, imported=imported, approved_at=approved_at,
                entries=creates_of(stack, sender), excess=stack.twilio.excess.get(sender, 0),
                invocations=[i for i in stack.router.invocations_of("SenderFunction") if i.started_at >= approved_at - 1],
                max_concurrency=next(p.concurrency for p in stack.router.sqs_pollers if p.spec.logical_id == "SenderFunction"),
                engine=stack.services.engine, probe=probe, cpu_seconds=cpu_seconds, wall_seconds=wall_seconds,
                dynamodb_cpu_seconds=dynamodb_cpu_seconds,
                unsent=None if sent else unsent_diagnosis(stack, campaign_id),
            )
            stack.twilio.reset()  # drop the status callbacks still to come: the figures are read
    finally:
        probe.uninstall()
    return run


def report(run: CeilingRun, args, say) -> None:
    rate = run.rate
    created = [e for e in run.entries if e.status == 201]
    times = [e.monotonic for e in created]
    statuses = Counter(e.status for e in run.entries)
    invocations = run.invocations
    most, mean = concurrency(invocations)
    records = [i.records for i in invocations]
    repro = (
        f"{COMMAND} --rates {rate} --seconds {args.seconds} --latency {args.latency:g}"
        f" --callbacks-after {args.callbacks_after:g}"
    )

    say(f"R = {rate}/s ({repro}; DynamoDB engine {run.engine}; sender {run.sender}; {run.imported} recipients imported)")
    if run.unsent:
        say(f"  WARNING: only {len(created)} of {run.imported} reached Twilio (waited up to {args.timeout:.0f} s, "
            f"gave up after {args.stall:.0f} s without a new one): {run.unsent}")
    if not created:
        return
    say(f"  first create {created[0].wall.timestamp() - run.approved_at:.2f} s after approve returned")
    attempts = [e.monotonic for e in run.entries if e.status in (201, 429)]
    warm, warm_attempts = ([t for t in moments if t >= times[0] + 1.0] for moments in (times, attempts))
    for line in (window_lines("all", times, attempts, rate) + window_lines("without the first second", warm, warm_attempts, rate)
                 + retry_lines(run.entries, rate)):
        say(line)
    say(f"  simulator: limiter excess {run.excess}; ledger statuses {dict(sorted(statuses.items(), key=str))} "
        f"(429s: {statuses.get(429, 0)})")
    say(f"  SenderFunction: {len(invocations)} invocations, records per invocation mean {statistics.mean(records):.1f} "
        f"(min {min(records)}, max {max(records)}); busy {sum(i.duration for i in invocations):.1f} s; "
        f"concurrency max {most} (template MaximumConcurrency {run.max_concurrency}), mean {mean:.2f} -> "
        f"2 or more concurrent consumers: {'yes' if most >= 2 else 'NO'}")
    say(f"  invocation duration: median {statistics.median(i.duration for i in invocations):.2f} s, "
        f"max {max(i.duration for i in invocations):.2f} s")
    for line in delivery_lines(run, records, created):
        say(line)
    for line in run.probe.lateness_lines(created):
        say(line)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rates", default="10,50", help="sender ceilings R to run, comma-separated")
    parser.add_argument("--seconds", type=int, default=20, help="seconds of sending at R (R x seconds recipients)")
    parser.add_argument("--latency", type=float, default=0.15, help="seconds the simulator adds to every API answer")
    parser.add_argument("--callbacks-after", type=float, default=600.0,
                        help="seconds before the simulator posts status callbacks (after the measurement)")
    parser.add_argument("--timeout", type=float, default=None,
                        help="seconds to wait for every message to reach Twilio (default 3 x seconds + 120)")
    parser.add_argument("--stall", type=float, default=60,
                        help="stop waiting when no message has reached Twilio for this many seconds")
    args = parser.parse_args(argv)
    rates = [int(r) for r in args.rates.split(",") if r.strip()]
    args.timeout = args.timeout or 3 * args.seconds + 120
    log_path = Path(tempfile.mkdtemp(prefix="smsinvite-bench-throttle-")) / "functions.log"
    out = sys.stdout

    def say(line: str) -> None:
        print(line, file=out, flush=True)

    say(f"throttle: ceilings {rates}/s, {args.seconds} s of sending each, Twilio latency {1000 * args.latency:.0f} ms; "
        f"{machine()}")
    # Functions log JSON to stdout, as in Lambda. Powertools' logger keeps the stream it was created with,
    # so stdout goes to the file before anything imports smsinvite, for every run.
    sys.stdout = open(log_path, "w", encoding="utf-8", buffering=1)  # noqa: SIM115
    try:
        for index, rate in enumerate(rates):
            report(send_at_ceiling(index, rate, args), args, say)
    finally:
        sys.stdout.close()
        sys.stdout = out
    say(f"  function logs: {log_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
