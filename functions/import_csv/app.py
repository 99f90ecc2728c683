"""S3 put -> register the upload's import; import queue -> run an import from its last checkpoint."""

import json

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from smsinvite.importing import ImportRunner, S3Upload
from smsinvite.object_store import object_metadata
from smsinvite.observability import MetricUnit, instrumented, logger, metrics
from smsinvite.queues import Queue
from smsinvite.settings import Settings
from smsinvite.store import Store


def runner(settings: Settings) -> ImportRunner:
    return ImportRunner.continuing_on_queue(Store(settings), settings)


def time_budget(context):
    """Seconds left, and the margin kept to save a checkpoint and hand over before the cut-off."""
    total = context.get_remaining_time_in_millis() / 1000
    return (lambda: context.get_remaining_time_in_millis() / 1000), min(20.0, total / 5)


def on_upload(record: dict, settings: Settings) -> dict:
    upload = S3Upload.from_record(record)
    phone_column = object_metadata(upload.bucket, upload.key, upload.version_id).get("phone-column")
    registered, new = runner(settings).register_upload(upload, phone_column=phone_column)
    if registered.state == "running":
        # Also when S3 reports the upload again: a stalled import gets going; a live one ignores it.
        Queue(settings.import_queue_url).send({"import_id": registered.import_id})
    logger.info("upload registered", extra={"import_id": registered.import_id, "new": new, "state": registered.state})
    return {"import_id": registered.import_id, "state": registered.state, "new": new}


def on_continuation(record: SQSRecord, lambda_context) -> None:
    settings = Settings.from_env()
    time_left, margin = time_budget(lambda_context)
    # Which delivery of this step it is: the runner ends the import rather than let it reach the DLQ.
    attempt = int(record.attributes.approximate_receive_count)
    summary = runner(settings).run(
        json.loads(record.body)["import_id"], time_left=time_left, margin=margin, attempt=attempt
    )
    logger.info("import step", extra=summary.as_dict())
    if summary.state != "running":
        metrics.add_metric(name="RowsImported", unit=MetricUnit.Count, value=summary.outcomes.get("imported", 0))


@instrumented
def lambda_handler(event: dict, context) -> dict:
    records = event.get("Records", [])
    if records and records[0].get("eventSource") == "aws:sqs":
        processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)  # per invocation
        return process_partial_response(
            event=event, record_handler=on_continuation, processor=processor, context=context
        )
    settings = Settings.from_env()
    return {"imports": [on_upload(record, settings) for record in records]}
