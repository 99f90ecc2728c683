"""What of an error's text may be written: no whole number, code or key, whatever the format it came in."""

import json
import logging
import re
import traceback

import phonenumbers
import pytest
from aws_lambda_powertools.utilities.batch.exceptions import BatchProcessingError
from botocore.exceptions import ClientError
from hypothesis import given
from hypothesis import strategies as st
from phonenumbers import PhoneNumberFormat, PhoneNumberType
from pydantic import BaseModel, ConfigDict, ValidationError
from twilio.base.exceptions import TwilioRestException

from smsinvite.codes import ALPHABET
from smsinvite.observability import ScrubbedError, describe_error, instrumented, logger, scrub, told_traceback

# Regions whose mobile numbers have at least 9 national digits, written in many different ways.
REGIONS = ["US", "CA", "GB", "DE", "FR", "ES", "IT", "NL", "BR", "MX", "IN", "AU", "JP", "ZA", "NG", "PL"]
FORMATS = [PhoneNumberFormat.E164, PhoneNumberFormat.INTERNATIONAL, PhoneNumberFormat.NATIONAL,
           PhoneNumberFormat.RFC3966]
# Surroundings without digits, so every digit left after scrubbing came from the number itself.
WORDS = st.text(st.sampled_from("abcXYZ :;,'\"=&?/()-_.\n"), max_size=30)


@st.composite
def phone_numbers(draw) -> phonenumbers.PhoneNumber:
    region = draw(st.sampled_from(REGIONS))
    example = phonenumbers.example_number_for_type(region, PhoneNumberType.MOBILE)
    national = str(example.national_number)
    tail = draw(st.text("0123456789", min_size=4, max_size=4))
    return phonenumbers.parse(f"+{example.country_code}{national[:-4]}{tail}")


@st.composite
def written(draw, number: phonenumbers.PhoneNumber) -> str:
    """The number as phonenumbers, people or URLs write it."""
    style = draw(st.sampled_from(["format", "digits", "separators", "url"]))
    if style == "format":
        return phonenumbers.format_number(number, draw(st.sampled_from(FORMATS)))
    e164 = phonenumbers.format_number(number, PhoneNumberFormat.E164)
    if style == "digits":
        return e164[draw(st.sampled_from([0, 1])):]
    if style == "separators":
        national = phonenumbers.format_number(number, PhoneNumberFormat.NATIONAL)
        return re.sub(r"[ -]", draw(st.sampled_from([".", "-", " ", "/", "\u00a0"])), national)
    return "https://api.twilio.com/2010-04-01/Accounts/AC1/Messages.json?To=" + e164.replace("+", "%2B")


def digits_of(text: str) -> str:
    return re.sub(r"\D", "", text)


@given(st.data(), phone_numbers(), WORDS, WORDS)
def test_no_phone_number_survives_scrubbing_in_any_format(data, number, before, after):
    # Given a number written in any format, in the middle of other text
    text = before + data.draw(written(number)) + after

    # When the text is scrubbed
    scrubbed = scrub(text)

    # Then not even the national digits are left whole
    assert str(number.national_number) not in digits_of(scrubbed)


@given(phone_numbers())
def test_twilios_invalid_number_error_keeps_its_code_and_status_but_not_the_number(number):
    e164 = phonenumbers.format_number(number, PhoneNumberFormat.E164)
    error = TwilioRestException(400, f"https://api.twilio.com/x?To={e164}",
                                msg=f"The 'To' number {e164} is not a valid phone number.", code=21211)

    told = describe_error(error)

    assert str(number.national_number) not in digits_of(told)
    assert told.startswith("TwilioRestException: HTTP 400 error: The 'To' number")


def test_short_numbers_that_explain_an_error_are_kept():
    text = "HTTP 429 error 20429 after 3 retries, 12.5 s, row 100000"
    assert scrub(text) == text


@given(st.text(st.sampled_from("0123456789abcdefABCDEFxyz"), min_size=20, max_size=64).filter(
    lambda key: re.search(r"\d", key) and re.search(r"[a-zA-Z]", key)))
def test_keys_and_tokens_are_not_left_whole(key):
    assert key not in scrub(f"Authentication failed for token {key} (wrong account)")


@given(st.text(st.sampled_from(ALPHABET), min_size=8, max_size=16))
def test_a_code_that_python_quotes_in_an_error_is_masked(code):
    # Given a dictionary looked up by an invitation code that is not in it
    try:
        {}[code]
    except KeyError as missing:
        told = describe_error(missing)

    # Then the error says what it is, but not the code
    assert told.startswith("KeyError: '")
    assert code not in told


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")
    campaign_id: str
    recipient_id: str


def test_a_validation_error_names_the_fields_but_never_echoes_their_values():
    # Given a send request with a number where nothing is expected (pydantic echoes input_value=...)
    with pytest.raises(ValidationError) as invalid:
        _Request.model_validate({"campaign_id": "c-1", "recipient_id": 15005550001, "phone": "+15005550001"})
    assert "5005550001" in str(invalid.value)

    told = describe_error(invalid.value)

    assert "5005550001" not in told
    assert told == (
        "ValidationError: 2 validation errors for _Request: recipient_id (string_type), phone (extra_forbidden)"
    )


def test_an_aws_error_keeps_its_code_and_operation_but_not_its_message():
    message = "One or more parameter values were invalid: +15005550001 is not a valid key ABCDEFGHJK"
    error = ClientError({"Error": {"Code": "ValidationException", "Message": message},
                         "ResponseMetadata": {"HTTPStatusCode": 400}}, "PutItem")

    assert describe_error(error) == "ClientError: ValidationException when calling PutItem (HTTP 400)"


def _twilio_refusal() -> TwilioRestException:
    return TwilioRestException(400, "https://api.twilio.com/x?To=%2B15005550001",
                               msg="The 'To' number +15005550001 is not a valid phone number.", code=21211)


def _chained_twilio_error() -> Exception:
    """A sender's failure as it happens: Twilio refuses the number, then recording that fails."""
    try:
        try:
            raise _twilio_refusal()
        except TwilioRestException as refused:
            raise RuntimeError("recording the refusal failed") from refused
    except RuntimeError as error:
        return error


def test_a_batch_that_failed_whole_is_told_record_by_record_without_their_tracebacks_text():
    failure = _chained_twilio_error()
    batch = BatchProcessingError("All records failed processing. 1 individual errors logged separately below.",
                                 [(type(failure), failure, failure.__traceback__)])
    assert "5005550001" in str(batch)  # Powertools' own str() embeds the whole chain

    told = describe_error(batch)

    assert "5005550001" not in told
    assert told == ("BatchProcessingError: All records failed processing. 1 individual errors logged separately "
                    "below. [RuntimeError: recording the refusal failed]")


def test_a_logged_traceback_keeps_the_chain_and_frames_but_tells_each_exception_safely():
    failure = _chained_twilio_error()

    text = told_traceback(failure)

    assert "5005550001" not in text
    assert "TwilioRestException: HTTP 400 error: The 'To' number +15******001 is not a valid phone number." in text
    assert "The above exception was the direct cause of the following exception:" in text
    assert text.rstrip().endswith("RuntimeError: recording the refusal failed")
    assert "in _chained_twilio_error" in text


def test_logger_exception_writes_the_told_traceback():
    # Given a record of the package's logger with a chained Twilio error, as logger.exception makes one
    failure = _chained_twilio_error()
    record = logging.getLogger(logger.service).makeRecord(
        logger.service, logging.ERROR, __file__, 1, "sending failed", (),
        (type(failure), failure, failure.__traceback__),
    )

    # When Powertools' handler formats it
    line = json.loads(logger.registered_handler.format(record))

    # Then the JSON line has the exception, told, and no stack_trace field holding the exception itself
    assert "5005550001" not in json.dumps(line)
    assert line["exception_name"] == "RuntimeError"
    assert "TwilioRestException: HTTP 400 error" in line["exception"]
    assert "stack_trace" not in line


class _Context:
    function_name, memory_limit_in_mb, aws_request_id = "f", 128, "r-1"
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:f"


def test_an_exception_whose_text_holds_a_number_leaves_a_handler_told_and_unchained():
    @instrumented
    def handler(event, context):
        try:
            raise _twilio_refusal()
        except TwilioRestException:
            raise _twilio_refusal() from None

    with pytest.raises(ScrubbedError) as left:
        handler({}, _Context())

    # What Lambda logs as errorMessage, and Tracer records, is told; nothing raw is chained to it
    assert str(left.value) == (
        "TwilioRestException: HTTP 400 error: The 'To' number +15******001 is not a valid phone number."
    )
    assert left.value.__cause__ is None and left.value.__context__ is None
    assert "in handler" in "".join(traceback.format_tb(left.value.__traceback__))  # the frames are kept


def test_an_exception_whose_own_text_is_safe_leaves_a_handler_as_itself_without_its_chain():
    @instrumented
    def handler(event, context):
        raise _chained_twilio_error()

    with pytest.raises(RuntimeError) as left:
        handler({}, _Context())

    assert str(left.value) == "recording the refusal failed"
    assert left.value.__cause__ is None and left.value.__context__ is None
    assert "5005550001" not in "".join(traceback.format_exception(left.value))
