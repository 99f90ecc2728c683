"""The log scan finds a whole number in any format, a code, a body or a secret, and never shows one whole."""

import json
import re

import phonenumbers
import pytest
from hypothesis import given
from hypothesis import strategies as st
from phonenumbers import PhoneNumberFormat, PhoneNumberType

from local.log_scan import Forbidden, assert_no_leaks, find_leaks, report
from local.router import LogLine
from smsinvite.observability import mask_phone

REGIONS = ["US", "GB", "DE", "FR", "BR", "IN", "AU", "JP"]
FORMATS = [PhoneNumberFormat.E164, PhoneNumberFormat.INTERNATIONAL, PhoneNumberFormat.NATIONAL,
           PhoneNumberFormat.RFC3966]


@st.composite
def numbers(draw) -> phonenumbers.PhoneNumber:
    example = phonenumbers.example_number_for_type(draw(st.sampled_from(REGIONS)), PhoneNumberType.MOBILE)
    national = str(example.national_number)
    tail = draw(st.text("0123456789", min_size=4, max_size=4))
    return phonenumbers.parse(f"+{example.country_code}{national[:-4]}{tail}")


def line(text: str) -> LogLine:
    return LogLine(seq=0, function="SenderFunction", request_id="r-1", text=text)


def e164(number) -> str:
    return phonenumbers.format_number(number, PhoneNumberFormat.E164)


@given(numbers(), st.sampled_from(FORMATS), st.sampled_from(["", " ", ".", "-"]))
def test_a_known_number_is_found_in_any_format_and_never_shown_whole(number, form, separator):
    # Given a number the stack knows, logged in one of the ways it is written
    written = phonenumbers.format_number(number, form).replace(" ", separator or " ")
    forbidden = Forbidden(phones={e164(number)})

    leaks = find_leaks([line(json.dumps({"message": "failed", "detail": f"number {written} refused"}))], forbidden)

    assert [leak.kind for leak in leaks] == ["phone number"]
    assert str(number.national_number) not in re.sub(r"\D", "", str(leaks[0]) + repr(leaks) + report(leaks))


@given(numbers())
def test_an_unknown_number_written_internationally_is_found(number):
    written = phonenumbers.format_number(number, PhoneNumberFormat.INTERNATIONAL)

    assert [leak.kind for leak in find_leaks([line(f"input_value='{written}'")], Forbidden())] == ["phone number"]


@given(numbers())
def test_a_masked_number_is_not_a_leak(number):
    forbidden = Forbidden(phones={e164(number)})

    assert find_leaks([line(json.dumps({"to": mask_phone(e164(number)), "error_code": 21211}))], forbidden) == []


def test_codes_bodies_and_secrets_are_found_by_value_and_the_failure_masks_them():
    forbidden = Forbidden(codes={"K7QX9M2B4D6F"}, bodies={"Hi Ana, tell us: https://s.example/i/K7QX9M2B4D6F"},
                          secrets={"5e1d0c9b8a7f6e5d4c3b2a1908f7e6d5": "Twilio auth token"})
    lines = [
        line("GET /i/K7QX9M2B4D6F answered 302"),
        line(json.dumps({"body": "Hi Ana, tell us: https://s.example/i/K7QX9M2B4D6F"})),
        line("Authorization failed for 5e1d0c9b8a7f6e5d4c3b2a1908f7e6d5"),
    ]

    with pytest.raises(AssertionError) as failed:
        assert_no_leaks(lines, forbidden)

    message, leaks = str(failed.value), find_leaks(lines, forbidden)
    assert message.startswith(f"{len(leaks)} private value(s) in the functions' logs:")
    assert {leak.kind for leak in leaks} == {"code", "message body", "Twilio auth token"}
    for value in ("K7QX9M2B4D6F", "tell us: https", "5e1d0c9b8a7f6e5d4c3b2a1908f7e6d5"):
        assert value not in message
