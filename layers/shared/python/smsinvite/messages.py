"""Invitation messages: templates, rendering, SMS encoding and segments, the opt-out footer, warnings.

Pure domain code: no AWS, no I/O. A template holds `{field}` and `{field|default}` placeholders whose
names are merge-field names (lower case, `\\w`), e.g. `{first_name}`, `{code}`, `{link}` or any attribute.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from smsinvite.errors import InvalidInput

# Accepts upper case too, so `render` keeps working on templates stored before validation existed;
# `validate_template` is what insists on lower case.
_PLACEHOLDER = re.compile(r"\{(\w+)(?:\|([^{}]*))?\}")


# --- placeholders and rendering -------------------------------------------------------------------


class MissingField(ValueError):
    def __init__(self, name: str) -> None:
        super().__init__(f"missing merge field {name!r}")
        self.name = name


class TemplateError(InvalidInput):
    """A template that cannot be rendered reliably; `problems` lists every one, not just the first."""

    code = "invalid_template"

    def __init__(self, problems: list[str]) -> None:
        count = len(problems)
        super().__init__(f"the message template has {count} problem{'s' if count != 1 else ''}", details=problems)
        self.problems = problems


def render(template: str, fields: Mapping[str, str]) -> str:
    """The message for one recipient; an empty value counts as missing, so the default applies."""

    def missing(name: str) -> str:
        raise MissingField(name)

    return _render(template, fields, missing)


def _render(template: str, fields: Mapping[str, str], on_missing: Callable[[str], str]) -> str:
    def substitute(match: re.Match) -> str:
        name, default = match.group(1), match.group(2)
        value = fields.get(name)
        if value not in (None, ""):
            return str(value)
        if default is not None:
            return default
        return on_missing(name)

    return _PLACEHOLDER.sub(substitute, template)


def field_names(template: str) -> tuple[str, ...]:
    """The merge fields a template uses, in order of first use."""
    return tuple(dict.fromkeys(match.group(1) for match in _PLACEHOLDER.finditer(template)))


def required_fields(template: str) -> tuple[str, ...]:
    """The merge fields without a default: a recipient lacking one is excluded (`missing_field`)."""
    return tuple(dict.fromkeys(m.group(1) for m in _PLACEHOLDER.finditer(template) if m.group(2) is None))


def body_digest(body: str) -> str:
    """Identifies a rendered message in Twilio's list without storing its text twice."""
    return hashlib.sha256(body.encode("utf-8")).hexdigest()[:32]


# --- validation -------------------------------------------------------------------------------------

# A whole `{...}` with no brace inside, or else a lone brace (which is then unbalanced).
_BRACES = re.compile(r"\{[^{}]*\}|[{}]")


def validate_template(template: str) -> None:
    """Raise TemplateError listing every malformed placeholder and unbalanced brace.

    Unknown field names are fine: any recipient attribute may be used. Positions are 1-based, as an
    operator counts.
    """
    problems = [] if template.strip() else ["the template is empty"]
    for match in _BRACES.finditer(template):
        position, text = match.start() + 1, match.group()
        if text == "{":
            problems.append(f"'{{' at position {position} is never closed")
        elif text == "}":
            problems.append(f"'}}' at position {position} has no matching '{{'")
        else:
            problem = _placeholder_problem(text[1:-1])
            if problem:
                problems.append(f"{text!r} at position {position} {problem}")
    if problems:
        raise TemplateError(problems)


def _placeholder_problem(inside: str) -> str | None:
    name = inside.split("|", 1)[0]
    if not name.strip():
        return "has no field name"
    if re.fullmatch(r"\w+", name) and name == name.lower():
        return None
    suggestion = _field_name(name)
    hint = f" (did you mean {{{suggestion}}}?)" if suggestion else ""
    return f"is not a valid placeholder: a field name is lower-case letters, digits and _{hint}"


def _field_name(text: str) -> str:
    # The same rule as csv_rows.field_name, which turns CSV headers into merge-field names.
    return re.sub(r"\W+", "_", unicodedata.normalize("NFKC", text).strip().lower()).strip("_")


# --- encoding and segments --------------------------------------------------------------------------

GSM_7 = "GSM-7"
UCS_2 = "UCS-2"

# GSM 03.38 default alphabet (the escape code 0x1B is not a character) and its extension table, whose
# characters are sent as escape + character and so cost two septets.
GSM_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM_EXTENSION = frozenset("\f^{}\\[~]|€")

# (one segment alone, each segment of a concatenated message): the user-data header takes the rest.
_LIMITS = {GSM_7: (160, 153), UCS_2: (70, 67)}


@dataclass(frozen=True)
class SegmentInfo:
    encoding: str  # GSM_7 or UCS_2
    characters: int  # code points, as a person counts them
    units: int  # septets (GSM-7) or UTF-16 code units (UCS-2): what the limits are in
    segments: int  # 0 for an empty text, which cannot be sent
    per_segment: int  # the limit that applied: 160/153 or 70/67

    @property
    def unit_name(self) -> str:
        return "septets" if self.encoding == GSM_7 else "UTF-16 code units"


def is_gsm(char: str) -> bool:
    return char in GSM_BASIC or char in GSM_EXTENSION


def encoding_of(text: str) -> str:
    return GSM_7 if all(is_gsm(char) for char in text) else UCS_2


def segment_info(text: str) -> SegmentInfo:
    encoding = encoding_of(text)
    costs = [_gsm_cost(c) if encoding == GSM_7 else _utf16_units(c) for c in text]
    single, concatenated = _LIMITS[encoding]
    count = _pack(costs, single, concatenated)
    return SegmentInfo(
        encoding=encoding,
        characters=len(text),
        units=sum(costs),
        segments=count,
        per_segment=single if count <= 1 else concatenated,
    )


def segment_count(text: str) -> int:
    return segment_info(text).segments


def _gsm_cost(char: str) -> int:
    return 2 if char in GSM_EXTENSION else 1


def _utf16_units(char: str) -> int:
    return 2 if ord(char) > 0xFFFF else 1  # outside the BMP: a surrogate pair


def _pack(costs: list[int], single: int, concatenated: int) -> int:
    """Segments needed when no character is split: an escape stays with its character and a
    surrogate pair stays whole, so a segment can end a unit short and the character moves on."""
    total = sum(costs)
    if total == 0:
        return 0
    if total <= single:
        return 1
    count, used = 1, 0
    for cost in costs:
        if used + cost > concatenated:
            count, used = count + 1, 0
        used += cost
    return count


# --- the characters that force UCS-2 ----------------------------------------------------------------


@dataclass(frozen=True)
class NonGsmCharacter:
    char: str
    index: int  # 0-based, into the text that was checked

    @property
    def position(self) -> int:
        return self.index + 1  # as an operator counts

    @property
    def code_point(self) -> str:
        return f"U+{ord(self.char):04X}"

    def describe(self) -> str:
        # The Unicode name makes invisible culprits (a no-break space) identifiable.
        name = unicodedata.name(self.char, "")
        return f"{self.char!r} ({self.code_point}{' ' + name if name else ''})"

    def __str__(self) -> str:
        return f"{self.describe()} at position {self.position}"


def non_gsm_characters(text: str) -> list[NonGsmCharacter]:
    """Every character that forces the text into UCS-2, with where it is."""
    return [NonGsmCharacter(char, index) for index, char in enumerate(text) if not is_gsm(char)]


# Look-alikes that people paste from word processors and phones. Offered, never applied silently:
# the operator decides whether a curly quote is worth a second segment.
_GSM_LOOK_ALIKES = {
    **dict.fromkeys("‘’‚‛′`´", "'"),
    **dict.fromkeys("“”„‟″«»", '"'),
    **dict.fromkeys("‐‑‒–—―−", "-"),
    "…": "...",
    **dict.fromkeys("\u00a0\u2002\u2003\u2007\u2009\u202f", " "),
    **dict.fromkeys("\u200b\u00ad\ufeff", ""),  # zero-width space, soft hyphen, BOM: invisible anyway
}
_LOOK_ALIKE_TABLE = str.maketrans(_GSM_LOOK_ALIKES)


def gsm_friendly(text: str) -> str:
    """A suggestion: `text` with common look-alikes replaced by GSM-7 characters. Emoji and other
    characters with no GSM equivalent are left as they are."""
    return text.translate(_LOOK_ALIKE_TABLE)


def _as_if_gsm(text: str) -> str:
    # What the text would cost had every culprit been a GSM character: the "instead of" in a warning.
    return "".join(char if is_gsm(char) else "?" for char in gsm_friendly(text))


# --- the opt-out footer -----------------------------------------------------------------------------

DEFAULT_OPT_OUT_FOOTER = "Reply STOP to opt out"
_OPT_OUT_WORDING = re.compile(r"\b(?:stop(?:all)?|opt[\s-]?out|unsubscribe)\b", re.IGNORECASE)


def has_opt_out(template: str, footer: str = DEFAULT_OPT_OUT_FOOTER) -> bool:
    # Placeholders are not wording: `{stop_date}` says nothing, and a default is not always shown.
    text = _PLACEHOLDER.sub(" ", template)
    return bool(_OPT_OUT_WORDING.search(text)) or footer.strip().casefold() in text.casefold()


def with_opt_out(template: str, footer: str = DEFAULT_OPT_OUT_FOOTER) -> str:
    """The template with the footer appended unless it already tells people how to opt out."""
    footer = footer.strip()
    if not footer:
        raise ValueError("the opt-out footer is empty")
    if has_opt_out(template, footer):
        return template
    body = template.rstrip()
    if not body:
        return footer
    # A multi-line message gets the footer on its own line; a one-liner stays one line.
    return f"{body}{chr(10) if chr(10) in body else ' '}{footer}"


# --- warnings for the preview -----------------------------------------------------------------------


@dataclass(frozen=True)
class TemplateWarning:
    code: str  # "too_many_segments", "forces_ucs2" or "missing_sample_field"
    message: str
    characters: tuple[NonGsmCharacter, ...] = ()
    suggestion: str | None = None  # a GSM-friendly template, to offer, never to apply

    def __str__(self) -> str:
        return self.message


def template_warnings(
    template: str, sample_fields: Mapping[str, str], *, max_segments: int = 2
) -> list[TemplateWarning]:
    """What the preview should tell the operator about `template` rendered with `sample_fields`.

    Pass the template as it will be sent, i.e. after `with_opt_out`. Raises TemplateError when the
    template is malformed.
    """
    if max_segments < 1:
        raise ValueError("max_segments must be at least 1")
    validate_template(template)
    warnings: list[TemplateWarning] = []
    missing: list[str] = []

    def note_missing(name: str) -> str:
        missing.append(name)
        return ""

    sample = _render(template, sample_fields, note_missing)
    if missing:
        names = ", ".join(f"{{{name}}}" for name in dict.fromkeys(missing))
        message = f"the sample has no value for {names}; it is counted as empty, and recipients without it are excluded"
        warnings.append(TemplateWarning("missing_sample_field", message))
    info = segment_info(sample)
    if info.encoding == UCS_2:
        warnings.append(_ucs2_warning(template, sample_fields, sample, info))
    if info.segments > max_segments:
        message = (
            f"the message needs {_segments(info.segments)}, more than {max_segments}: {info.units} "
            f"{info.unit_name} in {info.encoding}, {info.per_segment} per segment"
        )
        warnings.append(TemplateWarning("too_many_segments", message))
    return warnings


def _ucs2_warning(template: str, sample_fields: Mapping[str, str], sample: str, info: SegmentInfo) -> TemplateWarning:
    # Name the culprits where the operator can fix them: in the template by position, or else in a
    # sample merge field (one recipient's name can make that recipient's message UCS-2).
    in_template = non_gsm_characters(template)
    places = [_where(in_template, "")] if in_template else []
    occurrences = len(in_template)
    for name in field_names(template):
        in_field = non_gsm_characters(str(sample_fields.get(name) or ""))
        if in_field:
            places.append(_where(in_field, f" in the sample's {{{name}}}"))
            occurrences += len(in_field)
    verb = "forces" if occurrences == 1 else "force"
    instead = segment_count(_as_if_gsm(sample))
    if instead != info.segments:
        cost = f"{_segments(info.segments)} instead of {instead}"
    else:
        cost = f"still {_segments(instead)}, {info.units} of {info.per_segment * info.segments} UTF-16 code units"
    message = f"{'; '.join(places)} {verb} UCS-2: {cost}"
    suggestion = gsm_friendly(template)
    if suggestion == template:
        suggestion = None
    else:
        message += "; a GSM-friendly version is suggested"
    return TemplateWarning("forces_ucs2", message, characters=tuple(in_template), suggestion=suggestion)


def _segments(count: int) -> str:
    return f"{count} segment{'s' if count != 1 else ''}"


def _where(culprits: Iterable[NonGsmCharacter], suffix: str) -> str:
    """"'’' (U+2019 ...) at positions 3 and 9; '😀' (U+1F600 ...) at position 20": one entry a character."""
    by_char: dict[str, list[NonGsmCharacter]] = {}
    for culprit in culprits:
        by_char.setdefault(culprit.char, []).append(culprit)
    return "; ".join(f"{found[0].describe()} at {_positions(found)}{suffix}" for found in by_char.values())


def _positions(found: list[NonGsmCharacter]) -> str:
    at = [str(culprit.position) for culprit in found]
    return f"position {at[0]}" if len(at) == 1 else f"positions {', '.join(at[:-1])} and {at[-1]}"
