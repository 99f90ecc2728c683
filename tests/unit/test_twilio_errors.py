"""Every Twilio failure is classified: definite, retryable, or ambiguous (never resent blindly)."""

import traceback
from datetime import datetime, timezone

import pytest
import requests
from twilio.base.exceptions import TwilioRestException
from urllib3.exceptions import NewConnectionError

from smsinvite.twilio_gateway import ErrorKind, TwilioGateway, TwilioSendError, classify


def rest_error(status, code):
    return TwilioRestException(status, "https://api.twilio.com/x", msg="m", code=code)


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (rest_error(429, 20429), ErrorKind.RETRYABLE),
        (rest_error(400, 20429), ErrorKind.RETRYABLE),
        (rest_error(400, 21211), ErrorKind.DEFINITE),
        (rest_error(400, 21610), ErrorKind.DEFINITE),
        (rest_error(400, 21614), ErrorKind.DEFINITE),
        (rest_error(500, None), ErrorKind.AMBIGUOUS),
        (rest_error(503, 20503), ErrorKind.AMBIGUOUS),
        (requests.exceptions.ConnectTimeout(), ErrorKind.RETRYABLE),
        (requests.exceptions.ReadTimeout(), ErrorKind.AMBIGUOUS),
        (requests.exceptions.ConnectionError("Connection aborted: RemoteDisconnected"), ErrorKind.AMBIGUOUS),
    ],
)
def test_twilio_failures_are_classified(error, kind):
    assert classify(error).kind is kind


def test_a_connection_that_was_never_made_is_definitely_not_sent():
    refused = requests.exceptions.ConnectionError(NewConnectionError(None, "Connection refused"))
    assert classify(refused).kind is ErrorKind.RETRYABLE


def test_definite_failures_carry_twilios_code_as_the_reason():
    assert classify(rest_error(400, 21211)).reason == "twilio_21211"


def test_errors_that_are_not_from_twilio_or_the_network_are_not_swallowed():
    with pytest.raises(KeyError):
        classify(KeyError("bug"))


# ------------------------------------------------------------------ what of Twilio's error text leaves the gateway
INVALID = "+15005550001"


class _RefusingMessages:
    """The SDK's messages resource when Twilio answers 400 with error 21211, which quotes the number."""

    def __init__(self):
        uri = f"https://api.twilio.com/2010-04-01/Accounts/AC1/Messages.json?To=%2B{INVALID[1:]}&PageSize=50"
        self.error = TwilioRestException(
            400, uri, msg=f"Unable to create record: The 'To' number {INVALID} is not a valid phone number.",
            code=21211, method="POST",
        )

    def create(self, **params):
        raise self.error

    def stream(self, **params):
        raise self.error
        yield  # a generator, as the SDK's stream is


class _Client:
    def __init__(self):
        self.messages = _RefusingMessages()


def _failure(call) -> TwilioSendError:
    with pytest.raises(TwilioSendError) as refused:
        call(TwilioGateway(_Client()))
    return refused.value


@pytest.mark.parametrize(
    "call",
    [
        lambda gateway: gateway.send(to=INVALID, body="Hi", sender="+15005550006", status_callback=None),
        lambda gateway: gateway.messages_to(INVALID, since=datetime(2026, 1, 1, tzinfo=timezone.utc)),
    ],
    ids=["send", "messages_to"],
)
def test_a_twilio_failure_leaves_the_gateway_with_its_code_and_status_and_nothing_of_its_text(call):
    failure = _failure(call)

    # Then neither the number in Twilio's message nor the one in the request URL is kept, chained or not
    assert INVALID[1:] not in "".join(traceback.format_exception(failure))
    assert failure.__cause__ is None and failure.__context__ is None
    # And what is useful is: the kind, Twilio's code, the HTTP status
    assert (failure.kind, failure.code, failure.http_status) == (ErrorKind.DEFINITE, 21211, 400)
    assert str(failure) == "definite: twilio_21211 (HTTP 400)"
