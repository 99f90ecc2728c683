"""What every HTTP route shares: the error mapping, and reading a verified Twilio webhook.

Domain errors map to responses here and nowhere else. The body never carries `str()` of an
unexpected exception; those propagate, and API Gateway answers 500.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import parse_qsl

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response
from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEventV2

from aws_lambda_powertools.utilities.idempotency import (
    DynamoDBPersistenceLayer,
    IdempotencyConfig,
    idempotent_function,
)
from aws_lambda_powertools.utilities.idempotency.exceptions import IdempotencyAlreadyInProgressError

from smsinvite import aws_clients
from smsinvite.errors import ConfigurationError, ForbiddenSignature, SmsInviteError, TemporarilyUnavailable
from smsinvite.observability import logger
from smsinvite.settings import Settings
from smsinvite.twilio_gateway import FormParams, auth_token, signature_is_valid

# Twilio retries a webhook with the same I-Twilio-Idempotency-Token for up to a day.
DELIVERY_MEMORY_SECONDS = 24 * 3600


def http_app() -> APIGatewayHttpResolver:
    app = APIGatewayHttpResolver()

    @app.exception_handler(SmsInviteError)
    def domain_error(error: SmsInviteError) -> Response:
        if isinstance(error, ConfigurationError):
            logger.error("function is misconfigured", extra={"problem": error.message})
        else:
            logger.info("request refused", extra={"code": error.code, "status": error.http_status})
        return Response(
            status_code=error.http_status,
            content_type="application/json",
            body=json.dumps({"error": error.as_dict()}),
        )

    return app


@dataclass(frozen=True)
class TwilioWebhook:
    query: dict[str, str]
    form: FormParams
    idempotency_token: str


def verified_twilio_webhook(event: APIGatewayProxyEventV2, settings: Settings, route_path: str) -> TwilioWebhook:
    """The form Twilio posted, after its signature matched the public URL Twilio called.

    The URL is the configured public base URL plus the route, never one rebuilt from the request's
    Host header: behind a custom domain, a base path or a stage, only the configured one is right.
    It has no fragment: Twilio leaves a webhook URL's connection overrides (`#rc=…`) out of what
    it signs, and a fragment never reaches the server.
    """
    raw_query = event.raw_query_string or ""
    url = settings.require_webhook_base_url() + route_path + (f"?{raw_query}" if raw_query else "")
    form = FormParams(parse_qsl(event.decoded_body or "", keep_blank_values=True))
    signature = event.headers.get("x-twilio-signature")
    if not signature_is_valid(auth_token(settings), url, form, signature):
        raise ForbiddenSignature("the request signature does not match")
    return TwilioWebhook(
        query=dict(parse_qsl(raw_query, keep_blank_values=True)),
        form=form,
        idempotency_token=event.headers.get("i-twilio-idempotency-token") or "",
    )


def once_per_delivery(settings: Settings, key: str, process: Callable[[], dict], lambda_context=None) -> dict:
    """Run `process` once per delivery key; a repeat gets the first run's result.

    Powertools keeps the key in the idempotency table: a concurrent repeat finds it in progress and
    is answered 503, so Twilio tries again later; a run that raised leaves no record, so the retry runs.
    """
    persistence = DynamoDBPersistenceLayer(
        table_name=settings.idempotency_table, boto3_client=aws_clients.client("dynamodb")
    )
    config = IdempotencyConfig(
        event_key_jmespath="key", expires_after_seconds=DELIVERY_MEMORY_SECONDS, lambda_context=lambda_context
    )

    @idempotent_function(data_keyword_argument="delivery", persistence_store=persistence, config=config)
    def run(delivery: dict) -> dict:
        return process()

    try:
        return run(delivery={"key": key})
    except IdempotencyAlreadyInProgressError:
        raise TemporarilyUnavailable("this delivery is being processed; try again") from None
