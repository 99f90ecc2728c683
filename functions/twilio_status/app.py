"""POST /twilio/status -> verify Twilio's signature, then move the message status forward."""

from aws_lambda_powertools.event_handler import Response

from smsinvite.delivery import StatusReport, apply_status_report
from smsinvite.http_api import http_app, verified_twilio_webhook
from smsinvite.observability import instrumented, metrics, MetricUnit
from smsinvite.settings import Settings
from smsinvite.store import Store

ROUTE = "/twilio/status"
app = http_app()


@app.post(ROUTE)
def status_callback() -> Response:
    settings = Settings.from_env()
    webhook = verified_twilio_webhook(app.current_event, settings, ROUTE)
    outcome = apply_status_report(Store(settings), settings, StatusReport.parse(webhook.query, webhook.form))
    metrics.add_metric(name=f"StatusCallback_{outcome.value}", unit=MetricUnit.Count, value=1)
    return Response(status_code=204)


@instrumented
def lambda_handler(event: dict, context) -> dict:
    return app.resolve(event, context)
