"""Invitation codes, pure parts: enough entropy to resist guessing, an unambiguous alphabet, uniform draws."""

import math
import re
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import pytest

from smsinvite.codes import (
    ALPHABET,
    AMBIGUOUS,
    MIN_ENTROPY_BITS,
    CodeSettings,
    CodeSource,
    InvalidCodeSettings,
    PoolExhausted,
    generate_code,
    is_usable,
)

SHORT_LINK_SHAPE = re.compile(r"^[A-Za-z0-9]{4,64}$")
NOW = datetime(2025, 3, 1, 12, 0, tzinfo=timezone.utc)


def test_default_codes_carry_at_least_48_bits_of_entropy():
    settings = CodeSettings()
    assert settings.entropy_bits >= 48
    assert settings.entropy_bits == pytest.approx(settings.length * math.log2(len(ALPHABET)))


def test_the_alphabet_has_no_ambiguous_characters_vowels_or_repeats():
    assert not AMBIGUOUS & set(ALPHABET)
    assert not set("AEIOUY") & set(ALPHABET)
    assert len(set(ALPHABET)) == len(ALPHABET)


def test_generated_codes_use_only_the_alphabet_and_fit_the_short_link():
    for length in (9, 12, 64):
        code = CodeSettings(length=length).generate()
        assert len(code) == length
        assert set(code) <= set(ALPHABET)
        assert SHORT_LINK_SHAPE.match(code)


def test_settings_below_the_entropy_floor_are_refused_with_the_shortest_allowed_length():
    with pytest.raises(InvalidCodeSettings) as refused:
        CodeSettings(length=8)
    assert f"at least {MIN_ENTROPY_BITS} bits" in refused.value.details[0]
    assert "at least 9" in refused.value.details[0]
    assert CodeSettings(length=9).entropy_bits >= MIN_ENTROPY_BITS


def test_every_problem_with_code_settings_is_listed_at_once():
    with pytest.raises(InvalidCodeSettings) as refused:
        CodeSettings(length=65, source="lottery", expires_after=timedelta(0), purge_after=timedelta(days=-1))
    assert len(refused.value.details) == 4


def test_source_is_read_from_its_command_spelling():
    assert CodeSettings(source="tokens").source is CodeSource.TOKENS


def test_draws_are_uniform_over_the_alphabet_and_every_position():
    # secrets cannot be seeded, so the bounds are generous: a chi-square of 80 on 26 degrees of
    # freedom happens by chance about once in 10^8 runs.
    codes = [generate_code(12) for _ in range(20_000)]
    overall = Counter("".join(codes))
    assert set(overall) == set(ALPHABET)
    assert _chi_square(overall, 20_000 * 12) < 80
    for position in range(12):
        assert _chi_square(Counter(code[position] for code in codes), 20_000) < 80


def test_draws_do_not_repeat_in_a_large_sample():
    codes = {generate_code() for _ in range(100_000)}
    assert len(codes) == 100_000


def _chi_square(counts: Counter, draws: int) -> float:
    expected = draws / len(ALPHABET)
    return sum((counts.get(symbol, 0) - expected) ** 2 / expected for symbol in ALPHABET)


@dataclass
class Code:
    recipient_id: str | None
    expires_at: datetime | None = None


def test_a_code_is_usable_until_it_expires():
    code = Code("r1", expires_at=NOW + timedelta(days=7))
    assert is_usable(code, NOW)
    assert is_usable(code, NOW + timedelta(days=7) - timedelta(seconds=1))
    assert not is_usable(code, NOW + timedelta(days=7))
    assert is_usable(Code("r1"), NOW + timedelta(days=3650))


def test_a_code_still_waiting_in_a_pool_is_not_usable():
    assert not is_usable(Code(None), NOW)


def test_expired_codes_are_purged_some_days_after_expiry():
    settings = CodeSettings(expires_after=timedelta(days=14), purge_after=timedelta(days=30))
    expires_at = settings.expiry(NOW)
    assert expires_at == NOW + timedelta(days=14)
    assert settings.purge_at(expires_at) == int((NOW + timedelta(days=44)).timestamp())
    assert CodeSettings().expiry(NOW) is None and CodeSettings().purge_at(None) is None


def test_pool_exhausted_says_how_many_codes_are_missing():
    error = PoolExhausted("c-1", 7)
    assert error.missing == 7
    assert "7 more codes" in error.message and error.as_dict()["code"] == "pool_exhausted"
