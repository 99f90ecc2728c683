"""POST /twilio/inbound -> verify Twilio's signature, then keep the reply."""

from aws_lambda_powertools.event_handler import Response

from smsinvite.http_api import TWIML_EMPTY, http_app, verified_twilio_webhook
from smsinvite.inbound import InboundMessage, record_inbound
from smsinvite.observability import instrumented
from smsinvite.settings import Settings
from smsinvite.store import Store

ROUTE = "/twilio/inbound"
app = http_app()


@app.post(ROUTE)
def inbound_message() -> Response:
    settings = Settings.from_env()
    webhook = verified_twilio_webhook(app.current_event, settings, ROUTE)
    record_inbound(Store(settings), InboundMessage.parse(webhook.form))
    return Response(status_code=200, content_type="text/xml", body=TWIML_EMPTY)


@instrumented
def lambda_handler(event: dict, context) -> dict:
    return app.resolve(event, context)
