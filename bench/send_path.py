"""Send path: the sender's CPU per message, DynamoDB requests per message, and Lambda-seconds per 1000 messages.

    python -m bench.send_path [--messages 500] [--latency 0.15] [--rate 100]

One local stack, `LocalStack(StackOptions(sender_mps=rate))`, its Twilio simulator answering every API call
`--latency` seconds late; one campaign of N unique US numbers at `rate_per_second=rate` (the ceiling, so the
throttle is not what is measured), no quiet hours, its own From number. Prepared, then approved; the
benchmark waits until every message is `delivered` (the simulator posts a status callback for sending,
sent and delivered, each handled by StatusWebhookFunction) and every send has returned.

- Sender CPU: `InvitationSender.plan` (the handler's thread, once per batch) and `.carry_out` (a pool
  thread, once per record) are wrapped, in this process only, to add up `time.thread_time()` across calls:
  the CPU of that thread alone (user + system), so the time asleep until a slot, waiting on DynamoDB,
  moto or Twilio, or waiting for the GIL is not in it, nor is the CPU of DynamoDB Local, moto or the
  simulator. Inside them, the Twilio SDK call and the store's writes are timed the same way, to show
  where the CPU goes. The rest of the handler's thread (Powertools, the event loop, settings) is the
  SenderFunction invocation's own thread_time minus plan's. The yardstick, measured in the same run on
  the same stack afterwards: the CPU of one bare botocore GetItem and TransactWriteItems to DynamoDB Local.
- DynamoDB requests: every HTTP request to DynamoDB from approve until the last message is delivered,
  counted at botocore's HTTP send (`DynamoDBRequestCounter` in bench/_common.py, as in
  import_end_to_end), retries included, by operation and by who sent it: the function the router was
  running in that thread, and for the sender, whether it came from plan or carry_out (pool threads are
  not the router's, so the wrappers label them). The benchmark itself polls only the simulator while
  it waits, so it adds no DynamoDB requests.
- Lambda-seconds: the sum of the router's recorded invocation durations (wall clock, as Lambda bills
  it) of SenderFunction, StatusWebhookFunction and DispatcherFunction from approve on, per 1000 messages,
  and where SenderFunction's wall-clock time goes (plan per batch; per record: waiting for a thread of
  the handler's pool, asleep until the slot, the claim, the Twilio call, the transition).
Also printed: anyone texted twice (two creates to one number), records delivered to SenderFunction but
never carried out, and the CPU this process and DynamoDB Local used from approve on (in cores).
The functions' JSON logs go to a file whose path is printed.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from contextlib import contextmanager
from pathlib import Path

if not __package__:  # `python bench/send_path.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import DynamoDBRequestCounter, machine

COMMAND = "python -m bench.send_path"
SENDER = "+15005552000"  # not one of Twilio's magic From numbers
FUNCTIONS = ("SenderFunction", "StatusWebhookFunction", "DispatcherFunction")


# ------------------------------------------------------------------------------------ counting requests
class LabelledCounter(DynamoDBRequestCounter):
    """DynamoDB requests by who sent them; `label()` names the sender's pool threads, which the router does not run."""

    @contextmanager
    def label(self, name: str):
        previous = getattr(self._local, "function", None)
        self._local.function = name
        try:
            yield
        finally:
            self._local.function = previous


# ------------------------------------------------------------------------------------ the sender's CPU
class SenderCpu:
    """thread_time() of the sender's work, summed across calls and threads, by part (and wall-clock time beside it).

    `plan` and `carry_out` are the two parts; `inner` parts are counted only while a thread is inside one
    of them (the webhook calls Store.transition too, in its own threads). For each record, the wall-clock
    time from the end of its batch's plan to the start of its carry_out (waiting for a pool thread) and
    the time carry_out sleeps until the record's slot are noted too.
    """

    def __init__(self, counter: LabelledCounter) -> None:
        self.counter = counter
        self.seconds: Counter = Counter()
        self.wall: Counter = Counter()
        self._planned_at: dict[int, float] = {}
        self.calls: Counter = Counter()
        self.outcomes: Counter = Counter()
        self.recipients: set[str] = set()  # every recipient carry_out was called for
        self.in_flight = 0
        self._lock = threading.Lock()
        self._local = threading.local()
        self._originals: list = []

    def install(self) -> "SenderCpu":
        from smsinvite.sending import InvitationSender
        from smsinvite.store import Store
        from smsinvite.twilio_gateway import TwilioGateway

        self._wrap(InvitationSender, "plan", outer=True)
        self._wrap(InvitationSender, "carry_out", outer=True)
        self._wrap(TwilioGateway, "send", name="Twilio SDK (TwilioGateway.send)")
        self._wrap(Store, "claim", name="Store.claim")
        self._wrap(Store, "transition", name="Store.transition")
        self._wrap(Store, "set_message_sid", name="Store.set_message_sid")
        self._wrap(Store, "campaign", name="Store.campaign")
        return self

    def uninstall(self) -> None:
        for owner, attribute, original in self._originals:
            setattr(owner, attribute, original)
        self._originals = []

    def _wrap(self, owner, attribute: str, *, outer: bool = False, name: str | None = None) -> None:
        original = getattr(owner, attribute)
        self._originals.append((owner, attribute, original))
        name = name or attribute
        meter = self

        def metered(*args, **kwargs):
            inside = getattr(meter._local, "part", None)
            if not outer and inside is None:
                return original(*args, **kwargs)  # not the sender's thread (the webhook's transitions)
            if outer:
                meter._enter(attribute, args)
            started, started_wall = time.thread_time(), time.perf_counter()
            meter._local.part = inside or name
            try:
                with meter.counter.label(f"SenderFunction.{name}") if outer else _nothing():
                    result = original(*args, **kwargs)
            finally:
                meter._local.part = inside
                spent, key = time.thread_time() - started, name if outer else f"{inside}: {name}"
                with meter._lock:
                    meter.seconds[key] += spent
                    meter.wall[key] += time.perf_counter() - started_wall
                    meter.calls[key] += 1
                    if outer:
                        meter.in_flight -= 1
            if attribute == "carry_out":
                with meter._lock:
                    meter.outcomes[result.value] += 1
                    meter.recipients.add(args[1].request.recipient_id)
            elif attribute == "plan":
                with meter._lock:
                    meter._planned_at.update((id(p), time.perf_counter()) for p in result)
            return result

        setattr(owner, attribute, metered)

    def _enter(self, attribute: str, args: tuple) -> None:
        with self._lock:
            self.in_flight += 1
            if attribute != "carry_out":
                return
            plan = args[1]
            planned_at = self._planned_at.pop(id(plan), None)
            if planned_at is not None:
                self.wall["carry_out: waiting for a pool thread"] += time.perf_counter() - planned_at
            if plan.outcome is None and plan.error is None:
                self.wall["carry_out: asleep until its slot"] += max(0.0, plan.at - time.time())

    def idle(self) -> bool:
        with self._lock:
            return self.in_flight == 0


@contextmanager
def _nothing():
    yield


def handler_thread_cpu(router, function: str) -> Counter:
    """Wrap the router's invocation so that `function`'s handler-thread CPU is added up (plan included)."""
    totals: Counter = Counter()
    lock = threading.Lock()
    run = router._run

    def timed(spec, *args, **kwargs):
        if spec.logical_id != function:
            return run(spec, *args, **kwargs)
        started = time.thread_time()
        try:
            return run(spec, *args, **kwargs)
        finally:
            with lock:
                totals["seconds"] += time.thread_time() - started
                totals["invocations"] += 1

    router._run = timed
    return totals


# ------------------------------------------------------------------------------------ waiting, without DynamoDB
def delivered_sids(stack) -> set[str]:
    """Messages whose `delivered` callback the webhook has answered 2xx (it has written the status by then)."""
    return {c.message_sid for c in stack.twilio.callbacks() if c.ok and c.params.get("MessageStatus") == "delivered"}


def last_delivered(stack) -> float:
    """When the last `delivered` callback was answered (epoch seconds)."""
    return max((c.wall.timestamp() for c in stack.twilio.callbacks() if c.ok and c.params.get("MessageStatus") == "delivered"),
               default=time.time())


def wait_until_delivered(stack, cpu: SenderCpu, expected: int, *, timeout: float, stall: float) -> bool:
    """Every message delivered and every send returned; False after `timeout` or `stall` seconds without progress."""
    from bench.throttle import wait_for_progress

    return wait_for_progress(
        lambda: (len(delivered_sids(stack)), cpu.outcomes["sent"], cpu.idle()),
        lambda p: p[0] >= expected and p[1] >= expected and p[2],
        timeout=timeout, stall=stall,
    )


# ------------------------------------------------------------------------------------ the run
def run(args, say, counter: LabelledCounter) -> None:
    from bench.throttle import create_campaign, process_group_cpu, us_mobiles
    from local.demo import command, prepare
    from local.stack import LocalStack, StackOptions

    campaign_id = f"bench-send-path-{int(time.time())}"
    cpu = SenderCpu(counter).install()
    try:
        with LocalStack(StackOptions(sender_mps=args.rate)) as stack:
            counter.attribute(stack.router)
            handler_cpu = handler_thread_cpu(stack.router, "SenderFunction")
            stack.twilio.faults.latency = args.latency
            imported = create_campaign(stack, campaign_id, sender=SENDER, rate=args.rate, phones=us_mobiles(args.messages))
            prepare(stack, campaign_id)
            cpu.seconds.clear()
            cpu.calls.clear()
            before, dynamodb = counter.snapshot(), stack.services.dynamodb.pid
            approved_at, process_before, dynamodb_before = time.time(), time.process_time(), process_group_cpu(dynamodb)
            command(stack, {"command": "approve", "campaign_id": campaign_id})
            done = wait_until_delivered(stack, cpu, imported, timeout=args.timeout, stall=args.stall)
            counts = counter.snapshot() - before
            # Up to the last delivery, not to the end of the wait (which may have waited `--stall` s for nothing).
            busy = last_delivered(stack) - approved_at
            cores = ((time.process_time() - process_before) / busy, (process_group_cpu(dynamodb) - dynamodb_before) / busy)
            texted_twice = sum(1 for n in Counter(m.to for m in stack.twilio.created(sender=SENDER)).values() if n > 1)
            invocations = {f: [i for i in stack.router.invocations_of(f) if i.started_at >= approved_at] for f in FUNCTIONS}
            statuses = final_statuses(campaign_id)
            engine = stack.services.engine
            yardstick = bare_request_cpu(stack)
            stack.twilio.reset()  # drop callbacks still to come (none, once all are delivered)
    finally:
        cpu.uninstall()

    messages = cpu.outcomes["sent"]
    repro = (f"{COMMAND} --messages {args.messages} --latency {args.latency:g} --rate {args.rate}")
    say(f"send path: {imported} recipients, {messages} sent, approve -> last delivered {busy:.1f} s "
        f"({repro}; DynamoDB engine {engine})")
    if not done:
        say(f"  WARNING: not every message was delivered (waited up to {args.timeout:.0f} s, gave up after "
            f"{args.stall:.0f} s without progress); the figures are per message sent")
    records, never = sum(i.records for i in invocations["SenderFunction"]), imported - len(cpu.recipients)
    say(f"  final statuses: {statuses}; carry_out outcomes: {dict(cpu.outcomes)}; records delivered to SenderFunction "
        f"{records}, carry_out calls {sum(cpu.outcomes.values())}; recipients never carried out {never}"
        + (" (LOST: delivered to the function, reported done, never sent)" if never > 0 else ""))
    say(f"  recipients texted twice: {texted_twice} (goal 0); CPU from approve on: this process (router, functions, "
        f"moto, simulator; one GIL) {cores[0]:.2f} cores, DynamoDB Local {cores[1]:.2f} cores")
    if not messages:
        return
    cpu_lines(cpu, handler_cpu, messages, say, repro, yardstick)
    request_lines(counts, messages, say, repro)
    lambda_lines(invocations, messages, say, repro)
    wall_lines(cpu, invocations["SenderFunction"], messages, say)


def bare_request_cpu(stack, repeats: int = 200) -> dict[str, float]:
    """ms of CPU (thread_time) of one bare botocore request to DynamoDB Local, on this machine, now: the yardstick."""
    import boto3

    client = boto3.client("dynamodb", endpoint_url=stack.services.dynamodb_endpoint)
    table = stack.template.physical_name("CampaignsTable")
    key = {"campaign_id": {"S": "bench-yardstick"}}
    update = {"TableName": table, "UpdateExpression": "ADD bench_n :one", "ExpressionAttributeValues": {":one": {"N": "1"}}}
    calls = {
        "GetItem": lambda: client.get_item(TableName=table, Key=key, ConsistentRead=True),
        "TransactWriteItems (2 updates)": lambda: client.transact_write_items(TransactItems=[
            {"Update": {**update, "Key": key}}, {"Update": {**update, "Key": {"campaign_id": {"S": "bench-yardstick-2"}}}}]),
    }
    result = {}
    for name, call in calls.items():
        call()  # the connection and the operation's model, once
        started = time.thread_time()
        for _ in range(repeats):
            call()
        result[name] = 1000 * (time.thread_time() - started) / repeats
    return result


def final_statuses(campaign_id: str) -> dict:
    from smsinvite.settings import Settings
    from smsinvite.store import Store

    return dict(Counter(r.status for r in Store(Settings.from_env()).t.recipients.query(campaign_id, consistent_read=True)))


# ------------------------------------------------------------------------------------ the figures
def cpu_lines(cpu: SenderCpu, handler_cpu: Counter, messages: int, say, repro: str, yardstick: dict) -> None:
    plan, carry_out = cpu.seconds["plan"], cpu.seconds["carry_out"]
    rest_of_handler = max(0.0, handler_cpu["seconds"] - plan)
    total = plan + carry_out + rest_of_handler
    say(f"sender CPU per message (thread_time; {repro}):")
    say(f"  total {1000 * total / messages:.2f} ms/message (goal <= 2): plan {1000 * plan / messages:.2f}, "
        f"carry_out {1000 * carry_out / messages:.2f}, rest of the handler's thread {1000 * rest_of_handler / messages:.2f}")
    say(f"  plan: {cpu.calls['plan']} calls, {1000 * plan / max(1, cpu.calls['plan']):.1f} ms per batch; "
        f"carry_out: {cpu.calls['carry_out']} calls, {1000 * carry_out / max(1, cpu.calls['carry_out']):.2f} ms per record; "
        f"SenderFunction handler threads {handler_cpu['invocations']} invocations")
    inner = sorted((name for name in cpu.seconds if ":" in name), key=lambda n: -cpu.seconds[n])
    for name in inner:
        say(f"    {name:<50} {1000 * cpu.seconds[name] / messages:6.2f} ms/message ({cpu.calls[name]} calls)")
    for part, seconds in (("plan", plan), ("carry_out", carry_out)):
        accounted = sum(cpu.seconds[n] for n in inner if n.startswith(f"{part}:"))
        say(f"    {part + ': everything else':<50} {1000 * (seconds - accounted) / messages:6.2f} ms/message")
    bare = ", ".join(f"{name} {ms:.2f} ms" for name, ms in yardstick.items())
    get_item = yardstick.get("GetItem") or float("nan")
    say(f"  yardstick, same run: one bare botocore request costs {bare} of CPU -> the sender's CPU per message is "
        f"{1000 * total / messages / get_item:.1f} bare GetItems; the 2 ms goal is {2 / get_item:.1f}")


def wall_lines(cpu: SenderCpu, invocations: list, messages: int, say) -> None:
    """Where SenderFunction's invocation time goes, in wall-clock time (what Lambda bills)."""
    if not invocations:
        return
    mean_ms = lambda key, n: 1000 * cpu.wall[key] / max(1, n)  # noqa: E731
    batches, records = cpu.calls["plan"], cpu.calls["carry_out"]
    say(f"  SenderFunction wall clock: invocation mean {1000 * sum(i.duration for i in invocations) / len(invocations):.0f} ms; "
        f"plan {mean_ms('plan', batches):.0f} ms per batch; per record (they overlap, 10 to a batch): "
        f"waiting for a pool thread {mean_ms('carry_out: waiting for a pool thread', records):.0f} ms, "
        f"carry_out {mean_ms('carry_out', records):.0f} ms = asleep until its slot "
        f"{mean_ms('carry_out: asleep until its slot', records):.0f} + claim {mean_ms('carry_out: Store.claim', records):.0f} "
        f"+ Twilio {mean_ms('carry_out: Twilio SDK (TwilioGateway.send)', records):.0f} "
        f"+ transition {mean_ms('carry_out: Store.transition', records):.0f} + the rest")


def request_lines(counts: Counter, messages: int, say, repro: str) -> None:
    by_who: dict[str, Counter] = defaultdict(Counter)
    for (who, operation), n in counts.items():
        by_who[who][operation] += n
    sending = [w for w in by_who if w.startswith("SenderFunction") or w in ("DispatcherFunction", "StatusWebhookFunction")]
    total = sum(sum(by_who[w].values()) for w in sending)
    say(f"DynamoDB requests per sent message, approve -> delivered ({repro}):")
    say(f"  sender + dispatcher + status webhook: {total / messages:.2f} per message (goal <= 4); {total:,} requests")
    for who in sorted(by_who, key=lambda w: -sum(by_who[w].values())):
        operations = by_who[who]
        detail = ", ".join(f"{op} {n / messages:.2f}" for op, n in sorted(operations.items(), key=lambda kv: -kv[1]))
        note = "" if who in sending else " (not in the figure above)"
        say(f"    {who:<34} {sum(operations.values()) / messages:5.2f}: {detail}{note}")


def lambda_lines(invocations: dict, messages: int, say, repro: str) -> None:
    say(f"Lambda-seconds per 1000 messages (sum of invocation durations; {repro}):")
    for function, calls in invocations.items():
        seconds = sum(i.duration for i in calls)
        records = sum(i.records for i in calls)
        say(f"  {function:<22} {1000 * seconds / messages:7.1f} s per 1000 messages ({len(calls)} invocations, "
            f"{records} records, {seconds:.1f} s, mean {seconds / max(1, len(calls)):.3f} s)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=500, help="recipients in the campaign (unique US numbers)")
    parser.add_argument("--latency", type=float, default=0.15, help="seconds the simulator adds to every API answer")
    parser.add_argument("--rate", type=int, default=100, help="the sender ceiling and the campaign's rate per second")
    parser.add_argument("--timeout", type=float, default=600, help="seconds to wait for every message to be delivered")
    parser.add_argument("--stall", type=float, default=30, help="stop waiting after this many seconds without progress")
    args = parser.parse_args(argv)
    log_path = Path(tempfile.mkdtemp(prefix="smsinvite-bench-send-path-")) / "functions.log"
    out = sys.stdout

    def say(line: str) -> None:
        print(line, file=out, flush=True)

    say(f"send path: {args.messages} messages, Twilio latency {1000 * args.latency:.0f} ms, ceiling and rate "
        f"{args.rate}/s; {machine()}")
    counter = LabelledCounter().install()
    # Functions log JSON to stdout, as in Lambda; Powertools' logger keeps the stream it was created with,
    # so stdout goes to the file before anything imports smsinvite.
    sys.stdout = open(log_path, "w", encoding="utf-8", buffering=1)  # noqa: SIM115
    try:
        run(args, say, counter)
    finally:
        sys.stdout.close()
        sys.stdout = out
        counter.uninstall()
    say(f"  function logs: {log_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
