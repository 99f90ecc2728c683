"""Send queue -> invitations at the throttle's pace, each at most once; one bad record fails only itself.

The batch is planned together (one read of its recipients, campaigns and suppressions, one slot
reservation per campaign), then its records are sent concurrently, each at its slot.
"""

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor

from aws_lambda_powertools.utilities.batch import AsyncBatchProcessor, EventType, async_process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from smsinvite.observability import MetricUnit, instrumented, metrics
from smsinvite.sending import InvitationSender, SendPlan, SendRequest
from smsinvite.settings import Settings

# One thread per record of a batch (BatchSize in template.yaml): Twilio's latency overlaps, the throttle paces.
SENDS_AT_ONCE = 10
# Room to record the last outcomes before the invocation is cut off.
SAFETY_MARGIN_SECONDS = 8.0


def planned(records: list[dict], sender: InvitationSender) -> dict[str, SendPlan | Exception]:
    requests, plans = {}, {}
    for record in records:
        try:
            requests[record["messageId"]] = SendRequest.model_validate(json.loads(record["body"]))
        except ValueError as poison:  # fails its own record, and reaches the DLQ after maxReceiveCount
            plans[record["messageId"]] = poison
    for message_id, plan in zip(requests, sender.plan(list(requests.values()))):
        plans[message_id] = plan
    return plans


@instrumented
def lambda_handler(event: dict, context) -> dict:
    settings = Settings.from_env()
    seconds_left = context.get_remaining_time_in_millis() / 1000
    sender = InvitationSender.from_settings(settings, max_wait=max(0.0, min(5.0, seconds_left - SAFETY_MARGIN_SECONDS)))
    plans = planned(event.get("Records", []), sender)

    # The processor and the threads belong to this invocation: nothing of one batch is left for the next.
    with ThreadPoolExecutor(max_workers=SENDS_AT_ONCE, thread_name_prefix="send") as pool:

        async def record_handler(record: SQSRecord) -> str:
            plan = plans[record.message_id]
            if isinstance(plan, Exception):
                raise plan
            outcome = await asyncio.get_running_loop().run_in_executor(pool, sender.carry_out, plan)
            metrics.add_metric(name=f"Send_{outcome.value}", unit=MetricUnit.Count, value=1)
            return outcome.value

        response = async_process_partial_response(
            event=event, record_handler=record_handler, processor=AsyncBatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False),
            context=context,
        )
    # Never fails the batch: its records are carried out (complete_runs keeps its own trouble to itself).
    sender.complete_runs([plan for plan in plans.values() if not isinstance(plan, Exception)])
    return response
