"""Dispatch queue -> fan a campaign's prepared audience out to the send queue, page by page; and check on a run
whose last messages are on their way, until it completes."""

import json
import time

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from smsinvite.dispatch import Dispatcher, DispatchRequest, pause_before_next_page
from smsinvite.lifecycle import settle_check
from smsinvite.observability import instrumented, logger
from smsinvite.queues import Queue
from smsinvite.settings import Settings
from smsinvite.store import Store

# Leave room to queue the continuation before the invocation is cut off.
SAFETY_MARGIN_MS = 10_000


def record_handler(record: SQSRecord, lambda_context) -> None:
    settings = Settings.from_env()
    request = DispatchRequest.model_validate(json.loads(record.body))
    store, dispatch_queue = Store(settings), Queue(settings.dispatch_queue_url)
    if request.settle:
        outcome = settle_check(store, dispatch_queue, request.campaign_id, int(request.run or 0), request.settle)
        logger.info("settle check", extra={"campaign_id": request.campaign_id, "check": request.settle, "outcome": outcome})
        return
    dispatcher = Dispatcher(
        store,
        Queue(settings.send_queue_url),
        page_size=settings.dispatch_page_size,
        ceiling_per_second=float(settings.sender_ceiling_per_second),
        dispatch_queue=dispatch_queue,
    )
    queued, started = 0, time.monotonic()
    while True:
        page = dispatcher.dispatch_page(request)
        queued += page.queued
        if not page.more:
            logger.info(
                "dispatch ends", extra={"campaign_id": request.campaign_id, "queued": queued, "stopped": page.stopped}
            )
            return
        request = request.model_copy(update={"cursor": page.next_cursor})
        wait = pause_before_next_page(queued, page.rate_per_second, time.monotonic() - started)
        if wait > 0 or lambda_context.get_remaining_time_in_millis() < SAFETY_MARGIN_MS:
            # The next page goes out when the queue has drained to the lead (SQS delays are 15 min at most).
            dispatch_queue.send(request.model_dump(exclude_defaults=True), delay_seconds=min(900, int(wait)))
            logger.info("dispatch continues in a new invocation", extra={"queued": queued, "after_seconds": int(wait)})
            return


@instrumented
def lambda_handler(event: dict, context) -> dict:
    processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)  # per invocation
    return process_partial_response(event=event, record_handler=record_handler, processor=processor, context=context)
