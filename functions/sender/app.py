"""Send queue -> one invitation per record, at most once; one bad record fails only itself."""

import json

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from smsinvite.observability import instrumented, metrics, MetricUnit
from smsinvite.sending import InvitationSender, SendRequest
from smsinvite.settings import Settings
from smsinvite.store import Store
from smsinvite.twilio_gateway import TwilioGateway

processor = BatchProcessor(event_type=EventType.SQS)


def record_handler(record: SQSRecord) -> str:
    settings = Settings.from_env()
    sender = InvitationSender(Store(settings), TwilioGateway.from_settings(settings), settings)
    outcome = sender.send(SendRequest.model_validate(json.loads(record.body)))
    metrics.add_metric(name=f"Send_{outcome.value}", unit=MetricUnit.Count, value=1)
    return outcome.value


@instrumented
def lambda_handler(event: dict, context) -> dict:
    return process_partial_response(event=event, record_handler=record_handler, processor=processor, context=context)
