"""What every HTTP route shares: the error mapping, and reading a verified Twilio webhook.

Domain errors map to responses here and nowhere else. The body never carries `str()` of an
unexpected exception; those propagate, and API Gateway answers 500.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from urllib.parse import parse_qsl

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response
from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEventV2

from smsinvite.errors import ConfigurationError, ForbiddenSignature, SmsInviteError
from smsinvite.observability import logger
from smsinvite.settings import Settings
from smsinvite.twilio_gateway import FormParams, auth_token, signature_is_valid

TWIML_EMPTY = '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'


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


def verified_twilio_webhook(event: APIGatewayProxyEventV2, settings: Settings, route_path: str) -> TwilioWebhook:
    """The form Twilio posted, after its signature matched the public URL Twilio called.

    The URL is the configured public base URL plus the route, never one rebuilt from the request's
    Host header: behind a custom domain, a base path or a stage, only the configured one is right.
    """
    raw_query = event.raw_query_string or ""
    url = settings.require_webhook_base_url() + route_path + (f"?{raw_query}" if raw_query else "")
    form = FormParams(parse_qsl(event.decoded_body or "", keep_blank_values=True))
    signature = event.headers.get("x-twilio-signature")
    if not signature_is_valid(auth_token(settings), url, form, signature):
        raise ForbiddenSignature("the request signature does not match")
    return TwilioWebhook(query=dict(parse_qsl(raw_query, keep_blank_values=True)), form=form)
