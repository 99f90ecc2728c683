"""The signature check of both Twilio webhooks, end to end through each function's lambda_handler.

Events are API Gateway HTTP API (payload 2.0) events from tests/events/twilio/, filled in the way
API Gateway would deliver what Twilio posted. Signatures are computed with Twilio's own
RequestValidator over the URL Twilio called: the configured public base URL plus the route.
"""

from __future__ import annotations

import base64 as b64
import logging
import os
import sys
import uuid
from urllib.parse import parse_qsl, urldefrag, urlencode, urlsplit

import pytest
from twilio.request_validator import RequestValidator

from local.router import LambdaContext, _load_module
from local.template import LocalStackTemplate
from smsinvite.aws_clients import secrets_provider
from smsinvite.phones import normalise
from smsinvite.sending import StatusCallback
from smsinvite.settings import Settings
from smsinvite.status import Status
from smsinvite.store import recipient_id_for
from smsinvite.twilio_gateway import FormParams, auth_token

TOKEN = "integration-token"  # the auth token local_aws stores in Secrets Manager
PUBLIC_BASE_URL = "https://hooks.example.com"  # PublicWebhookBaseUrl of local_aws
API_HOST = "abc123defg.execute-api.us-east-1.amazonaws.com"  # the Host header of the sample events
STATUS, INBOUND = "/twilio/status", "/twilio/inbound"
FUNCTIONS = {STATUS: "StatusWebhookFunction", INBOUND: "InboundWebhookFunction"}
EVENT_FILES = {STATUS: "twilio/status-callback.json", INBOUND: "twilio/inbound-message.json"}
SIGNED = object()  # signed_post's default: sign what is sent, over the URL Twilio called


# ---------------------------------------------------------------------------------------- helpers
def sign(url: str, pairs, token: str = TOKEN) -> str:
    return RequestValidator(token).compute_signature(url, FormParams(pairs))


def status_query(campaign_id: str = "c-gone", recipient_id: str | None = None, attempt_id: str = "a-gone") -> str:
    """The query the sender puts on the status callback URL; by default for a recipient that does not exist."""
    recipient_id = recipient_id or recipient_id_for(campaign_id, "+14155559999")
    return urlencode({"c": campaign_id, "r": recipient_id, "a": attempt_id})


def status_form(status: str = "delivered", *, sid: str | None = None, **extra: str) -> list[tuple[str, str]]:
    sid = sid or "SM" + uuid.uuid4().hex
    pairs = [
        ("SmsSid", sid), ("SmsStatus", status), ("MessageStatus", status), ("To", "+14155552671"),
        ("MessageSid", sid), ("AccountSid", "AC" + "1" * 32), ("From", "+15005550006"), ("ApiVersion", "2010-04-01"),
    ]
    return pairs + list(extra.items())


def inbound_form(sender: str, body: str = "Thanks, see you") -> list[tuple[str, str]]:
    sid = "SM" + uuid.uuid4().hex
    return [
        ("ToCountry", "US"), ("ToState", "CA"), ("SmsMessageSid", sid), ("NumMedia", "0"), ("ToCity", ""),
        ("FromZip", ""), ("SmsSid", sid), ("FromState", "CA"), ("SmsStatus", "received"), ("FromCity", ""),
        ("Body", body), ("FromCountry", "US"), ("To", "+15005550006"), ("ToZip", ""), ("NumSegments", "1"),
        ("MessageSid", sid), ("AccountSid", "AC" + "1" * 32), ("From", sender), ("ApiVersion", "2010-04-01"),
    ]


def accepted(response: dict) -> bool:
    return response["statusCode"] in (200, 204)


def inbox_of(store, phone: str) -> list:
    return list(store.t.inbox.query(phone, consistent_read=True))


# --------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def webhook_functions(local_aws):
    """Each webhook's FunctionSpec (its environment as template.yaml sets it), by route."""
    template = LocalStackTemplate(
        {"TwilioAccountSid": local_aws.twilio_account_sid, "PublicWebhookBaseUrl": local_aws.public_webhook_base_url},
        sqs_endpoint=os.environ["AWS_ENDPOINT_URL"],
    )
    return {route: template.function(logical_id) for route, logical_id in FUNCTIONS.items()}


@pytest.fixture(scope="module")
def handlers(webhook_functions):
    """route -> the function's lambda_handler, loaded by path as Lambda loads it, on first use."""
    loaded = {}

    def handler(route):
        if route not in loaded:
            spec = webhook_functions[route]
            module = _load_module(f"smsinvite_fn_signatures_{spec.logical_id}", spec)
            loaded[route] = getattr(module, spec.handler_attr)
        return loaded[route]

    yield handler
    for logical_id in FUNCTIONS.values():
        sys.modules.pop(f"smsinvite_fn_signatures_{logical_id}", None)


@pytest.fixture(autouse=True)
def function_environment(webhook_functions, local_aws, monkeypatch):
    """os.environ as Lambda sets it for the webhook functions (the handlers read Settings.from_env())."""
    for spec in webhook_functions.values():
        for name, value in spec.environment.items():
            monkeypatch.setenv(name, value)
    assert Settings.from_env() == local_aws
    assert local_aws.public_webhook_base_url == PUBLIC_BASE_URL


@pytest.fixture
def signed_post(webhook_functions, handlers, event):
    """Post `params` to `route` as API Gateway delivers a Twilio webhook; returns the handler's response.

    By default the signature is computed with the auth token over exactly what is sent and the URL
    Twilio called (the public base URL, the route, the query). `url`, `signed_params` and `token`
    change what is signed; `signature` overrides the header (None: no header at all).
    """

    def post(route, params, *, query="", url=None, signed_params=None, token=TOKEN, signature=SIGNED, base64=False):
        pairs = list(params)
        if signature is SIGNED:
            signed_url = url or PUBLIC_BASE_URL + route + (f"?{query}" if query else "")
            signature = sign(signed_url, pairs if signed_params is None else signed_params, token)
        body = urlencode(pairs)
        request = event(EVENT_FILES[route])
        request["rawQueryString"] = query
        request["headers"]["content-length"] = str(len(body.encode()))
        if signature is not None:
            request["headers"]["x-twilio-signature"] = signature
        request["body"] = b64.b64encode(body.encode()).decode() if base64 else body
        request["isBase64Encoded"] = base64
        spec = webhook_functions[route]
        return handlers(route)(request, LambdaContext(spec, spec.timeout, f"/aws/lambda/{spec.name}"))

    return post


@pytest.fixture
def sent_recipient(store, campaign_id):
    """A recipient whose invitation Twilio has sent (attempt a-1): a signed "delivered" would move it."""
    phone = normalise("+14155550123", "US")
    store.add_recipient(campaign_id, phone, {"first_name": "Ada"}, import_id="i", row_number=1)
    recipient = store.recipient(campaign_id, recipient_id_for(campaign_id, phone.e164))
    assert store.transition(recipient, Status.SENT, attempt_id="a-1", message_sid="SM" + "5" * 32) is not None
    return store.recipient(campaign_id, recipient.recipient_id)


# --------------------------------------------------------------------- status callback: the basics
def test_a_correctly_signed_status_callback_is_accepted(signed_post):
    # Given a callback for a recipient that no longer exists, signed by Twilio
    # When it is posted
    response = signed_post(STATUS, status_form(), query=status_query())

    # Then it is accepted (and ignored)
    assert accepted(response), response


def test_a_status_callback_with_a_wrong_signature_gets_403(signed_post):
    response = signed_post(STATUS, status_form(), query=status_query(), token="not-the-auth-token")

    assert response["statusCode"] == 403


def test_a_status_callback_with_no_signature_header_gets_403(signed_post):
    response = signed_post(STATUS, status_form(), query=status_query(), signature=None)

    assert response["statusCode"] == 403


def test_a_status_callback_with_a_tampered_parameter_gets_403(signed_post):
    # Given a genuine signature over a "failed" callback
    genuine = status_form("failed", sid="SM" + "7" * 32, ErrorCode="30007")
    # When the status is changed in transit to "delivered"
    tampered = status_form("delivered", sid="SM" + "7" * 32, ErrorCode="30007")
    response = signed_post(STATUS, tampered, query=status_query(), signed_params=genuine)

    # Then it is refused
    assert response["statusCode"] == 403


def test_a_signature_over_the_url_rebuilt_from_the_host_header_gets_403(signed_post):
    # Given a signature with the right token, but over the execute-api URL the Host header names
    query = status_query()
    host_url = f"https://{API_HOST}{STATUS}?{query}"

    # When it is posted through the API whose public URL is the configured one
    response = signed_post(STATUS, status_form(), query=query, url=host_url)

    # Then it is refused: only the configured public base URL is what Twilio called
    assert response["statusCode"] == 403


def test_a_public_base_url_with_a_custom_domain_and_base_path_is_what_is_verified(signed_post, monkeypatch):
    # Given the webhooks are published at a custom domain under a base path
    monkeypatch.setenv("PUBLIC_WEBHOOK_BASE_URL", "https://sms.example.org/prod")
    query = status_query()

    # When Twilio signs that public URL, and API Gateway delivers the path without the base path
    # (rawPath /twilio/status, Host the execute-api domain)
    response = signed_post(STATUS, status_form(), query=query, url=f"https://sms.example.org/prod/twilio/status?{query}")

    # Then it is accepted
    assert accepted(response), response


def test_a_public_base_url_with_a_base_path_refuses_a_signature_without_it(signed_post, monkeypatch):
    monkeypatch.setenv("PUBLIC_WEBHOOK_BASE_URL", "https://sms.example.org/prod")
    query = status_query()

    response = signed_post(STATUS, status_form(), query=query, url=f"https://sms.example.org/twilio/status?{query}")

    assert response["statusCode"] == 403


# --------------------------------------------------------------------- status callback: the body
def test_a_base64_encoded_body_is_verified_on_the_decoded_form(signed_post):
    # Given API Gateway delivers the form base64-encoded (isBase64Encoded true)
    response = signed_post(STATUS, status_form(), query=status_query(), base64=True)

    # Then the signature over the decoded form matches
    assert accepted(response), response


def test_a_base64_encoded_body_with_a_wrong_signature_gets_403(signed_post):
    response = signed_post(STATUS, status_form(), query=status_query(), base64=True, token="not-the-auth-token")

    assert response["statusCode"] == 403


def test_blank_parameters_are_kept_for_the_signature(signed_post):
    # Given Twilio posts blank fields (FromCity=, ErrorCode=) and signs them
    form = status_form(FromCity="", ErrorCode="")

    # Then the callback is accepted with them present
    assert accepted(signed_post(STATUS, form, query=status_query())), "blank parameters signed, yet refused"


def test_blank_parameters_are_not_dropped_before_the_signature_is_checked(signed_post):
    # Given a signature computed as if the blank fields were not there
    form = status_form(FromCity="", ErrorCode="")
    without_blanks = [(key, value) for key, value in form if value != ""]

    # When the form with the blank fields is posted
    response = signed_post(STATUS, form, query=status_query(), signed_params=without_blanks)

    # Then it is refused: the check keeps them, as Twilio does when it signs
    assert response["statusCode"] == 403


def test_every_value_of_a_repeated_parameter_is_signed(signed_post):
    # Given a key repeated with different values, all of them signed
    form = status_form() + [("MediaUrl", "https://media.example/1.jpg"), ("MediaUrl", "https://media.example/2.jpg")]

    # Then it is accepted
    assert accepted(signed_post(STATUS, form, query=status_query())), "repeated parameters signed, yet refused"


def test_a_repeated_parameter_signed_with_only_its_first_value_gets_403(signed_post):
    form = status_form() + [("MediaUrl", "https://media.example/1.jpg"), ("MediaUrl", "https://media.example/2.jpg")]
    first_only = form[:-1]

    response = signed_post(STATUS, form, query=status_query(), signed_params=first_only)

    assert response["statusCode"] == 403


# ------------------------------------------------------------------ status callback: URL and query
def test_a_signature_over_the_url_with_or_without_the_443_port_is_accepted(signed_post):
    # Given Twilio may sign the URL with an explicit :443, or without it
    query = status_query()
    with_port = f"https://hooks.example.com:443{STATUS}?{query}"
    without_port = f"https://hooks.example.com{STATUS}?{query}"

    # Then both are accepted
    assert accepted(signed_post(STATUS, status_form(), query=query, url=with_port)), "signed with :443"
    assert accepted(signed_post(STATUS, status_form(), query=query, url=without_port)), "signed without a port"


def test_a_signature_over_the_url_with_another_port_gets_403(signed_post):
    query = status_query()

    response = signed_post(STATUS, status_form(), query=query, url=f"https://hooks.example.com:8443{STATUS}?{query}")

    assert response["statusCode"] == 403


def test_the_query_string_is_part_of_what_is_signed(signed_post):
    # Given a signature over the status URL with its c, r and a
    signed_query = status_query(attempt_id="a-1")
    signed_url = f"{PUBLIC_BASE_URL}{STATUS}?{signed_query}"

    # When a query value is changed (another attempt), or the query is dropped
    changed = signed_post(STATUS, status_form(), query=status_query(attempt_id="a-2"), url=signed_url)
    unsigned = signed_post(STATUS, status_form(), query=status_query(), url=f"{PUBLIC_BASE_URL}{STATUS}")

    # Then both are refused
    assert changed["statusCode"] == 403
    assert unsigned["statusCode"] == 403


# --------------------------------------------------------- URLs with connection overrides (#rc=…)
def as_twilio_posts(registered_url: str) -> tuple[str, str]:
    """(the URL Twilio signs, the query API Gateway delivers) for a webhook registered as `registered_url`.

    Twilio leaves a URL's fragment, its connection overrides, out of the signature
    (https://www.twilio.com/docs/usage/webhooks/webhooks-connection-overrides), and an HTTP client
    never sends a fragment, so neither has it.
    """
    signed_url, _fragment = urldefrag(registered_url)
    return signed_url, urlsplit(signed_url).query


def test_the_status_callback_url_the_sender_gives_twilio_retries_5xx_and_passes_the_signature_check(signed_post):
    # Given the status callback URL the sender puts on a message
    registered = StatusCallback("c-gone", recipient_id_for("c-gone", "+14155559999"), "a-gone").url(PUBLIC_BASE_URL)

    # Then it carries connection overrides that have Twilio retry a 5xx
    overrides = dict(parse_qsl(urldefrag(registered).fragment))
    assert "5xx" in overrides.get("rp", "").split(",") and int(overrides.get("rc", "1")) >= 1, registered

    # And Twilio's callback to it, signed as Twilio signs, is accepted
    signed_url, query = as_twilio_posts(registered)
    assert accepted(signed_post(STATUS, status_form(), query=query, url=signed_url))


def test_the_published_inbound_webhook_url_passes_the_signature_check(signed_post, webhook_functions, store):
    # Given the inbound webhook URL an operator registers in Twilio: the InboundWebhookUrl output
    # of this deployment (PublicWebhookBaseUrl https://hooks.example.com)
    template = LocalStackTemplate(
        {"TwilioAccountSid": "AC" + "1" * 32, "PublicWebhookBaseUrl": PUBLIC_BASE_URL},
        sqs_endpoint=os.environ["AWS_ENDPOINT_URL"],
    )
    registered = template.output("InboundWebhookUrl")
    sender = "+14155550207"

    # When Twilio posts a reply to it
    signed_url, query = as_twilio_posts(registered)
    response = signed_post(INBOUND, inbound_form(sender), query=query, url=signed_url)

    # Then it is accepted and kept
    assert response["statusCode"] == 200, (registered, response)
    assert len(inbox_of(store, sender)) == 1


def test_a_signature_over_the_url_with_its_fragment_is_not_twilios_and_gets_403(signed_post):
    # Given a signature over a status callback URL fragment and all, which Twilio never makes
    query = status_query()
    with_fragment = f"{PUBLIC_BASE_URL}{STATUS}?{query}#rc=5&rp=ct,5xx"

    # When it is posted
    response = signed_post(STATUS, status_form(), query=query, url=with_fragment)

    # Then it is refused: the check verifies the URL Twilio signs, without the fragment
    assert response["statusCode"] == 403


# ----------------------------------------------------------------------------- secrets stay secret
def _debug_everywhere(caplog) -> None:
    """Every logger at DEBUG, including those pinned to a higher level."""
    caplog.set_level(logging.DEBUG)
    for name, known in list(logging.Logger.manager.loggerDict.items()):
        if isinstance(known, logging.Logger) and known.level not in (logging.NOTSET, logging.DEBUG):
            caplog.set_level(logging.DEBUG, logger=name)


def _everything_logged(caplog) -> str:
    return "\n".join(
        record.getMessage() + " " + " ".join(str(value) for value in vars(record).values()) for record in caplog.records
    )


def test_a_refusal_shows_neither_the_auth_token_nor_the_signature(signed_post, caplog):
    # Given a warm container (the auth token already fetched; the fetch itself is the next test's)
    # and every logger at DEBUG
    auth_token(Settings.from_env())
    _debug_everywhere(caplog)
    form, query = status_form(), status_query()
    forged = sign(f"{PUBLIC_BASE_URL}{STATUS}?{query}", form, token="not-the-auth-token")
    genuine = sign(f"{PUBLIC_BASE_URL}{STATUS}?{query}", form)

    # When a forged callback and a genuine one are posted
    refused = signed_post(STATUS, form, query=query, signature=forged)
    assert accepted(signed_post(STATUS, form, query=query, signature=genuine))

    # Then the 403's body says what went wrong, without the token
    assert refused["statusCode"] == 403
    assert "invalid_signature" in refused["body"]
    assert TOKEN not in refused["body"] and TOKEN not in str(refused.get("headers"))
    # And the refusal was logged, but no record carries the token or either signature
    assert any(record.getMessage() == "request refused" for record in caplog.records)
    logged = _everything_logged(caplog)
    assert TOKEN not in logged
    assert forged not in logged
    assert genuine not in logged


def test_a_cold_start_at_log_level_debug_logs_no_auth_token(signed_post, caplog):
    # Given a cold container (the auth token not yet fetched) whose logging is at DEBUG: the root
    # logger (Lambda's ApplicationLogLevel) and the function's own (POWERTOOLS_LOG_LEVEL)
    secrets_provider().clear_cache()
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="smsinvite")

    # When its first request, a forged one, is refused
    assert signed_post(STATUS, status_form(), query=status_query(), token="not-the-auth-token")["statusCode"] == 403

    # Then the auth token it fetched to check the signature appears in no log record
    assert TOKEN not in _everything_logged(caplog)


# ------------------------------------------------------------------------------- inbound webhook
def test_a_correctly_signed_inbound_reply_is_accepted_and_kept(signed_post, store):
    # Given a reply Twilio signed
    sender = "+14155550201"

    # When it is posted
    response = signed_post(INBOUND, inbound_form(sender))

    # Then Twilio gets empty TwiML, and the reply is kept
    assert response["statusCode"] == 200, response
    assert response["headers"]["Content-Type"].startswith("text/xml")
    assert [item.body for item in inbox_of(store, sender)] == ["Thanks, see you"]


def test_a_forged_inbound_reply_gets_403_and_stores_nothing(signed_post, store):
    sender = "+14155550202"

    response = signed_post(INBOUND, inbound_form(sender), token="not-the-auth-token")

    assert response["statusCode"] == 403
    assert inbox_of(store, sender) == []


def test_an_inbound_reply_with_no_signature_header_gets_403_and_stores_nothing(signed_post, store):
    sender = "+14155550203"

    response = signed_post(INBOUND, inbound_form(sender), signature=None)

    assert response["statusCode"] == 403
    assert inbox_of(store, sender) == []


def test_a_base64_encoded_inbound_reply_is_verified_on_the_decoded_form(signed_post, store):
    sender = "+14155550204"

    response = signed_post(INBOUND, inbound_form(sender), base64=True)

    assert response["statusCode"] == 200, response
    assert [item.body for item in inbox_of(store, sender)] == ["Thanks, see you"]


def test_an_inbound_reply_signed_over_the_url_with_443_is_accepted(signed_post, store):
    sender = "+14155550205"

    response = signed_post(INBOUND, inbound_form(sender), url=f"https://hooks.example.com:443{INBOUND}")

    assert response["statusCode"] == 200, response
    assert len(inbox_of(store, sender)) == 1


def test_an_inbound_reply_signed_over_the_host_header_url_gets_403(signed_post, store):
    sender = "+14155550206"

    response = signed_post(INBOUND, inbound_form(sender), url=f"https://{API_HOST}{INBOUND}")

    assert response["statusCode"] == 403
    assert inbox_of(store, sender) == []


# ------------------------------------------------------------------------- a forgery moves nothing
def test_a_forged_status_callback_gets_403_and_changes_nothing(signed_post, store, campaign_id, sent_recipient):
    # Given a sent invitation
    before = store.recipient(campaign_id, sent_recipient.recipient_id)
    counts_before = store.counts(campaign_id)
    query = status_query(campaign_id, sent_recipient.recipient_id, "a-1")
    form = status_form("delivered", sid=sent_recipient.message_sid)

    # When someone without the auth token posts "delivered" for it
    response = signed_post(STATUS, form, query=query, token="not-the-auth-token")

    # Then it is refused, and the recipient and the counters are as they were
    assert response["statusCode"] == 403
    after = store.recipient(campaign_id, sent_recipient.recipient_id)
    assert after.status == before.status == Status.SENT.value
    assert after.updated_at == before.updated_at
    assert store.counts(campaign_id) == counts_before


def test_the_same_status_callback_signed_by_twilio_moves_the_recipient(signed_post, store, campaign_id, sent_recipient):
    # Given the callback the forgery above imitated, this time signed with the auth token
    query = status_query(campaign_id, sent_recipient.recipient_id, "a-1")
    form = status_form("delivered", sid=sent_recipient.message_sid)

    # When it is posted
    response = signed_post(STATUS, form, query=query)

    # Then it is accepted and the invitation is delivered (so the forgery was refused by the check alone)
    assert accepted(response), response
    assert store.recipient(campaign_id, sent_recipient.recipient_id).status == Status.DELIVERED.value
