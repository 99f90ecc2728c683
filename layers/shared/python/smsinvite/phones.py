"""Phone numbers: normalise to E.164 with phonenumbers, and say why a number is unusable."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import phonenumbers
from phonenumbers import NumberParseException, PhoneMetadata, PhoneNumberType
from phonenumbers import ValidationResult as Possible
from phonenumbers import timezone as number_timezones
from phonenumbers.phonenumberutil import _number_type_helper, national_significant_number


class InvalidReason(str, Enum):
    EMPTY = "empty"
    NOT_A_NUMBER = "not_a_number"
    INVALID_COUNTRY_CODE = "invalid_country_code"
    TOO_SHORT = "too_short"
    TOO_LONG = "too_long"
    INVALID_LENGTH = "invalid_length"
    INVALID_FOR_REGION = "invalid_for_region"


class LineType(str, Enum):
    MOBILE = "mobile"
    FIXED_LINE_OR_MOBILE = "fixed_line_or_mobile"
    LANDLINE = "landline"
    # Premium-rate and shared-cost numbers: texting them is how SMS pumping makes money.
    PREMIUM_RATE = "premium_rate"
    # VoIP, personal numbers, pagers and types phonenumbers cannot tell: not excluded, Twilio decides.
    OTHER = "other"


_LINE_TYPES = {
    PhoneNumberType.MOBILE: LineType.MOBILE,
    PhoneNumberType.FIXED_LINE_OR_MOBILE: LineType.FIXED_LINE_OR_MOBILE,
    PhoneNumberType.FIXED_LINE: LineType.LANDLINE,
    PhoneNumberType.PREMIUM_RATE: LineType.PREMIUM_RATE,
    PhoneNumberType.SHARED_COST: LineType.PREMIUM_RATE,
}

_IMPOSSIBLE = {
    Possible.INVALID_COUNTRY_CODE: InvalidReason.INVALID_COUNTRY_CODE,
    Possible.TOO_SHORT: InvalidReason.TOO_SHORT,
    Possible.TOO_LONG: InvalidReason.TOO_LONG,
    Possible.INVALID_LENGTH: InvalidReason.INVALID_LENGTH,
}

_PARSE_ERRORS = {
    NumberParseException.INVALID_COUNTRY_CODE: InvalidReason.INVALID_COUNTRY_CODE,
    NumberParseException.TOO_SHORT_NSN: InvalidReason.TOO_SHORT,
    NumberParseException.TOO_SHORT_AFTER_IDD: InvalidReason.TOO_SHORT,
    NumberParseException.TOO_LONG: InvalidReason.TOO_LONG,
    NumberParseException.NOT_A_NUMBER: InvalidReason.NOT_A_NUMBER,
}


class InvalidPhone(ValueError):
    def __init__(self, reason: InvalidReason) -> None:
        super().__init__(reason.value)
        self.reason = reason


@dataclass(frozen=True)
class Phone:
    e164: str
    region: str | None
    line_type: LineType

    @property
    def timezones(self) -> tuple[str, ...]:
        return zones_for(self.e164)


def zones_for(e164: str) -> tuple[str, ...]:
    """The IANA zones phonenumbers places a number in; empty when it cannot tell, so callers fall back."""
    parsed = phonenumbers.parse(e164)
    return tuple(zone for zone in number_timezones.time_zones_for_number(parsed) if zone != "Etc/Unknown")


def normalise(raw: str | None, default_region: str | None) -> Phone:
    """Parse what a person typed into E.164, using the region when the number has no country code.

    The number's region is looked up once and its type computed once: phonenumbers' public
    is_valid_number() and number_type() would each look the region up again, which triples the
    cost of the hot path of an import. tests/unit/test_phones.py checks this agrees with them.
    """
    text = (raw or "").strip()
    if not text:
        raise InvalidPhone(InvalidReason.EMPTY)
    region = (default_region or "").upper() or None
    try:
        parsed = phonenumbers.parse(text, region)
    except NumberParseException as exc:
        raise InvalidPhone(_PARSE_ERRORS.get(exc.error_type, InvalidReason.NOT_A_NUMBER)) from None
    number_region = phonenumbers.region_code_for_number(parsed)
    metadata = (
        PhoneMetadata.metadata_for_region_or_calling_code(parsed.country_code, number_region)
        if number_region
        else None
    )
    national = national_significant_number(parsed)
    number_type = _number_type_helper(national, metadata) if metadata else PhoneNumberType.UNKNOWN
    if number_type == PhoneNumberType.UNKNOWN:
        raise InvalidPhone(_invalid_reason(parsed))
    return Phone(
        e164=f"+{parsed.country_code}{national}",
        region=number_region,
        line_type=_LINE_TYPES.get(number_type, LineType.OTHER),
    )


def _invalid_reason(parsed) -> InvalidReason:
    possible = phonenumbers.is_possible_number_with_reason(parsed)
    return _IMPOSSIBLE.get(possible, InvalidReason.INVALID_FOR_REGION)
