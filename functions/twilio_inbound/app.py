"""POST /twilio/inbound -> verify Twilio's signature, keep the reply, act on consent keywords, answer TwiML."""

from aws_lambda_powertools.event_handler import Response

from smsinvite.http_api import http_app, once_per_delivery, verified_twilio_webhook
from smsinvite.inbound import InboundMessage, InboundReplies
from smsinvite.observability import MetricUnit, instrumented, metrics
from smsinvite.queues import Queue
from smsinvite.settings import Settings
from smsinvite.store import Store
from smsinvite.subscriptions import SubscriptionLists
from smsinvite.twilio_gateway import twiml_reply

ROUTE = "/twilio/inbound"
app = http_app()


@app.post(ROUTE)
def inbound_message() -> Response:
    settings = Settings.from_env()
    webhook = verified_twilio_webhook(app.current_event, settings, ROUTE)
    message = InboundMessage.parse(webhook.form)
    store = Store(settings)
    replies = InboundReplies(store, settings, SubscriptionLists(store, settings, Queue(settings.send_queue_url)))
    # A redelivery carries the same token; without one, the MessageSid is the delivery.
    key = f"inbound:{webhook.idempotency_token or message.message_sid}"
    outcome = once_per_delivery(settings, key, lambda: replies.handle(message).as_dict(), app.lambda_context)
    metrics.add_metric(name=f"Inbound_{outcome['intent']}", unit=MetricUnit.Count, value=1)
    return Response(status_code=200, content_type="text/xml", body=twiml_reply(outcome["reply"]))


@instrumented
def lambda_handler(event: dict, context) -> dict:
    return app.resolve(event, context)
