"""Every Twilio failure is classified: definite, retryable, or ambiguous (never resent blindly)."""

import pytest
import requests
from twilio.base.exceptions import TwilioRestException
from urllib3.exceptions import NewConnectionError

from smsinvite.twilio_gateway import ErrorKind, classify


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
