"""What a status callback says: its parts checked whole, and what an error code says about the number."""

import pytest

from smsinvite.consent import SuppressionReason
from smsinvite.delivery import StatusReport, suppression_for
from smsinvite.errors import InvalidInput
from smsinvite.settings import Settings
from smsinvite.status import Status
from smsinvite.twilio_gateway import FormParams

RECIPIENT = "0123456789abcdef01234567"


@pytest.mark.parametrize(
    "code, reason",
    [
        (30005, SuppressionReason.UNDELIVERABLE),  # unknown destination handset
        (30006, SuppressionReason.UNDELIVERABLE),  # landline or unreachable carrier
        (21211, SuppressionReason.UNDELIVERABLE),  # invalid 'To' number
        (21614, SuppressionReason.UNDELIVERABLE),  # not a mobile number
        (21610, SuppressionReason.OPTED_OUT),  # the person replied STOP to the sender
        (30003, None),  # unreachable for now: try again another day
        (30007, None),  # carrier filtering says nothing about the number
        (None, None),
    ],
)
def test_an_error_code_says_whether_the_number_may_be_texted_again(environment, code, reason):
    assert suppression_for(code, Settings.from_env(environment)) is reason


def test_the_undeliverable_codes_are_configurable(environment):
    settings = Settings.from_env({**environment, "UNDELIVERABLE_ERROR_CODES": "30003"})
    assert suppression_for(30003, settings) is SuppressionReason.UNDELIVERABLE
    assert suppression_for(30005, settings) is None


def test_a_status_callback_is_read_with_its_number_and_error():
    form = FormParams([("MessageSid", "SM1"), ("MessageStatus", "undelivered"), ("ErrorCode", "30005"), ("To", "+1415")])
    report = StatusReport.parse({"c": "c1", "r": RECIPIENT, "a": "a1"}, form)
    assert (report.status, report.error_code, report.to) == (Status.UNDELIVERED, 30005, "+1415")


def test_a_malformed_status_callback_names_every_problem():
    form = FormParams([("MessageStatus", "teleported"), ("ErrorCode", "x")])
    with pytest.raises(InvalidInput) as refused:
        StatusReport.parse({"c": "c1", "r": "not-an-id"}, form)
    details = refused.value.details
    assert "query parameter a is missing" in details
    assert "query parameter r is not a recipient id" in details
    assert "form field MessageSid is missing" in details
    assert "ErrorCode is not a number" in details


def test_a_status_callback_with_a_status_we_do_not_know_is_read_not_refused():
    # Given Twilio reports a status that did not exist when this was written
    form = FormParams([("MessageSid", "SM1"), ("MessageStatus", "teleported"), ("To", "+1415")])

    # When the callback is read
    report = StatusReport.parse({"c": "c1", "r": RECIPIENT, "a": "a1"}, form)

    # Then it is kept as Twilio said it, with no status of ours to apply
    assert (report.status, report.twilio_status) == (None, "teleported")
