"""Phone normalisation: E.164 out, a reason for everything unusable."""

import pytest

from smsinvite.observability import mask_phone
from smsinvite.phones import InvalidPhone, InvalidReason, LineType, normalise


@pytest.mark.parametrize(
    ("raw", "region", "e164"),
    [
        ("0151 12345678", "DE", "+4915112345678"),
        ("+1 (415) 555-2671", None, "+14155552671"),
        ("06 12 34 56 78", "FR", "+33612345678"),
        ("  +44 7911 123456 ", "US", "+447911123456"),
    ],
)
def test_numbers_are_normalised_to_e164_using_the_default_region(raw, region, e164):
    assert normalise(raw, region).e164 == e164


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("", InvalidReason.EMPTY),
        ("   ", InvalidReason.EMPTY),
        ("call me", InvalidReason.NOT_A_NUMBER),
        ("12", InvalidReason.TOO_SHORT),
        ("+999 1234567", InvalidReason.INVALID_COUNTRY_CODE),
        ("+49 151 1234567890123", InvalidReason.TOO_LONG),
        ("+1 011 555 0100", InvalidReason.INVALID_FOR_REGION),
    ],
)
def test_unusable_numbers_are_rejected_with_a_reason(raw, reason):
    with pytest.raises(InvalidPhone) as rejected:
        normalise(raw, "US")
    assert rejected.value.reason is reason


def test_landlines_are_recognised_so_campaigns_can_exclude_them():
    assert normalise("030 1234567", "DE").line_type is LineType.LANDLINE
    assert normalise("0151 12345678", "DE").line_type is LineType.MOBILE


def test_a_number_knows_its_time_zones_for_quiet_hours():
    assert normalise("+49 151 12345678", None).timezones == ("Europe/Berlin",)


def test_masked_numbers_keep_only_the_country_prefix_and_last_digits():
    assert mask_phone("+4915112345678") == "+49********678"
    assert "12345" not in mask_phone("+4915112345678")
    assert mask_phone("") == ""
    assert mask_phone("+123") == "****"


def test_the_fast_path_agrees_with_phonenumbers_public_validity_and_type():
    # Given numbers of every kind from several countries, valid and not
    import phonenumbers

    samples = [
        ("+1 415 555 2671", None), ("(808) 555-0100", "US"), ("0151 23456789", "DE"), ("030 1234567", "DE"),
        ("06 12 34 56 78", "FR"), ("+44 7911 123456", None), ("+44 20 7946 0958", None), ("+1 011 555 0100", None),
        ("+800 1234 5678", None), ("+31 6 12345678", None), ("+49 1234", None), ("+61 491 570 156", None),
        ("+1 416 555 0199", None), ("+1 876 555 0123", None), ("+15005550006", None),
    ]
    for raw, region in samples:
        parsed = phonenumbers.parse(raw, region)
        valid = phonenumbers.is_valid_number(parsed)
        try:
            phone = normalise(raw, region)
        except InvalidPhone:
            assert not valid, raw
            continue
        # When valid, the E.164 and the region are phonenumbers' own
        assert valid, raw
        assert phone.e164 == phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
        assert phone.region == phonenumbers.region_code_for_number(parsed)
        expected_type = phonenumbers.number_type(parsed)
        assert (phone.line_type is LineType.LANDLINE) == (expected_type == phonenumbers.PhoneNumberType.FIXED_LINE)
