"""The functions' logs as a witness: no whole phone number, code, message body or secret in any line.

`find_leaks` reads `FunctionLogs` lines (the router's stand-in for CloudWatch Logs) against what must not
appear in them. A phone number counts in any format `phonenumbers` writes it (E.164, international,
national, RFC 3966) or with any other separators, with or without its country code:
- a number the stack knows (its raw tables, the simulator's messages and callbacks): its national
  significant digits anywhere in a run of digits and separators (spaces, dots, dashes, slashes, brackets);
- any other number written internationally (`+` and a country code) that `phonenumbers` finds valid.
Codes, message bodies and secrets are found by value. A finding never shows a value whole.

`forbidden_on(stack)` gathers the values from the stack's own records, not from the product's counters:
every table scanned raw, the Twilio simulator's messages and inbound posts, every secret of the local
Secrets Manager and the simulator's auth token.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import boto3
import phonenumbers
from phonenumbers import Leniency, PhoneNumberMatcher

from local.router import LogLine

if TYPE_CHECKING:
    from local.stack import LocalStack

_E164 = re.compile(r"^\+[1-9]\d{6,14}$")
# Digits joined by what people and phonenumbers put between them; \s also covers the runtime's U+00A0.
_DIGIT_RUN = re.compile(r"\d(?:[\d\s.()/\-]*\d)?")
_INTERNATIONAL = re.compile(r"\+\s*\(?\d")
_TOKEN = re.compile(r"[A-Za-z0-9]+")
MIN_NATIONAL_DIGITS = 7  # shorter national numbers exist, but would match too much else
MIN_BODY_CHARS = 12
SHOWN_AROUND = 100


def mask(value: str) -> str:
    """Enough to recognise a value in a failure message, not enough to use it."""
    if len(value) <= 6:
        return "*" * len(value)
    return f"{value[:3]}{'*' * (len(value) - 5)}{value[-2:]}"


@dataclass
class Forbidden:
    """What must never appear whole in a log line."""

    phones: set[str] = field(default_factory=set)  # E.164
    codes: set[str] = field(default_factory=set)
    bodies: set[str] = field(default_factory=set)
    secrets: dict[str, str] = field(default_factory=dict)  # value -> what it is

    def add_phone(self, value: Any) -> None:
        if isinstance(value, str) and _E164.match(value):
            self.phones.add(value)

    def national_digits(self) -> dict[str, str]:
        """National significant number -> the E.164 number, for every number long enough to look for."""
        found = {}
        for phone in self.phones:
            try:
                national = str(phonenumbers.parse(phone, None).national_number)
            except phonenumbers.NumberParseException:
                national = phone[2:]
            if len(national) >= MIN_NATIONAL_DIGITS:
                found[national] = phone
        return found


@dataclass(frozen=True)
class Leak:
    kind: str  # "phone number", "code", "message body", or what the secret is
    value: str
    line: LogLine

    def __str__(self) -> str:
        return f"{self.line.function or 'a function thread'} logged a {self.kind} ({mask(self.value)})"

    __repr__ = __str__  # an assertion that shows a leak never shows its value


def report(leaks: list[Leak]) -> str:
    """Each line that leaked, with what it leaked and an excerpt in which every leaked value is masked."""
    by_line: dict[int, list[Leak]] = {}
    for leak in leaks:
        by_line.setdefault(leak.line.seq, []).append(leak)
    shown = []
    for found in list(by_line.values())[:20]:
        text = found[0].line.text
        for value in sorted({leak.value for leak in found}, key=len, reverse=True):
            text = text.replace(value, mask(value))
        at = max(0, text.find(mask(found[0].value)) - SHOWN_AROUND)
        excerpt = ("..." if at else "") + text[at : at + 3 * SHOWN_AROUND]
        shown.append("; ".join(map(str, found)) + f": {excerpt}")
    more = f"\n... and {len(by_line) - 20} more lines" if len(by_line) > 20 else ""
    return "\n".join(shown) + more


def find_leaks(lines: Iterable[LogLine], forbidden: Forbidden) -> list[Leak]:
    national = forbidden.national_digits()
    lengths = sorted({len(digits) for digits in national})
    leaks: list[Leak] = []
    for line in lines:
        text = line.text
        leaks += _numbers(line, national, lengths)
        leaks += [Leak("phone number", found, line) for found in _international_numbers(text, forbidden.phones)]
        tokens = dict.fromkeys(_TOKEN.findall(text))
        leaks += [Leak("code", token, line) for token in tokens if token in forbidden.codes]
        for body in forbidden.bodies:
            for form in (body, json.dumps(body)[1:-1]):
                if form in text:
                    leaks.append(Leak("message body", form, line))
                    break
        leaks += [Leak(what, value, line) for value, what in forbidden.secrets.items() if value in text]
    return leaks


def assert_no_leaks(lines: list[LogLine], forbidden: Forbidden) -> None:
    """Fail with every leak found, each value masked."""
    leaks = find_leaks(lines, forbidden)
    if leaks:
        raise AssertionError(f"{len(leaks)} private value(s) in the functions' logs:\n{report(leaks)}")


def _numbers(line: LogLine, national: dict[str, str], lengths: list[int]) -> list[Leak]:
    leaks = []
    for run in _DIGIT_RUN.finditer(line.text):
        digits = re.sub(r"\D", "", run.group())
        for length in lengths:
            for start in range(len(digits) - length + 1):
                if digits[start : start + length] in national:
                    leaks.append(Leak("phone number", run.group().strip(), line))
                    break
            else:
                continue
            break
    return leaks


def _international_numbers(text: str, known: set[str]) -> list[str]:
    if not _INTERNATIONAL.search(text):
        return []
    found = []
    for match in PhoneNumberMatcher(text, None, leniency=Leniency.VALID):
        e164 = phonenumbers.format_number(match.number, phonenumbers.PhoneNumberFormat.E164)
        if e164 not in known:  # a known one is already reported by its digits
            found.append(match.raw_string)
    return found


# --------------------------------------------------------------------------------- the stack's records
def forbidden_on(stack: LocalStack) -> Forbidden:
    forbidden = Forbidden()
    _from_tables(stack, forbidden)
    _from_twilio(stack, forbidden)
    _from_secrets(stack, forbidden)
    return forbidden


def _from_tables(stack: LocalStack, forbidden: Forbidden) -> None:
    dynamodb = boto3.client("dynamodb", endpoint_url=stack.services.dynamodb_endpoint)
    for table in stack.resources.tables.values():
        for page in dynamodb.get_paginator("scan").paginate(TableName=table):
            for item in page["Items"]:
                for name, value in item.items():
                    if name == "code" and "S" in value:
                        forbidden.codes.add(value["S"])
                    _walk(value, forbidden)


def _walk(value: dict[str, Any], forbidden: Forbidden) -> None:
    """Every string in a DynamoDB attribute value, however deep, that is an E.164 number."""
    for kind, inner in value.items():
        if kind == "S":
            forbidden.add_phone(inner)
        elif kind == "SS":
            for text in inner:
                forbidden.add_phone(text)
        elif kind == "L":
            for element in inner:
                _walk(element, forbidden)
        elif kind == "M":
            for element in inner.values():
                _walk(element, forbidden)


def _from_twilio(stack: LocalStack, forbidden: Forbidden) -> None:
    twilio = stack.twilio
    for message in twilio.messages():
        forbidden.add_phone(message.to)
        forbidden.add_phone(message.from_)
        if len(message.body) >= MIN_BODY_CHARS:
            forbidden.bodies.add(message.body)
    for entry in twilio.ledger:
        forbidden.add_phone(entry.to)
    for callback in twilio.callback_log:
        for name in ("From", "To"):
            forbidden.add_phone(callback.params.get(name))
    forbidden.secrets[twilio.auth_token] = "Twilio auth token"


def _from_secrets(stack: LocalStack, forbidden: Forbidden) -> None:
    secrets = boto3.client("secretsmanager", endpoint_url=stack.services.aws_endpoint)
    for page in secrets.get_paginator("list_secrets").paginate():
        for secret in page["SecretList"]:
            value = secrets.get_secret_value(SecretId=secret["ARN"]).get("SecretString")
            if value and len(value) >= 8:
                forbidden.secrets.setdefault(value, f"secret {secret['Name']}")
