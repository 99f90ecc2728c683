"""Rendering an invitation from its template: {field} and {field|default} placeholders."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][\w]*)(?:\|([^{}]*))?\}")


class MissingField(ValueError):
    def __init__(self, name: str) -> None:
        super().__init__(f"missing merge field {name!r}")
        self.name = name


def render(template: str, fields: Mapping[str, str]) -> str:
    def substitute(match: re.Match) -> str:
        name, default = match.group(1), match.group(2)
        value = fields.get(name)
        if value not in (None, ""):
            return str(value)
        if default is not None:
            return default
        raise MissingField(name)

    return _PLACEHOLDER.sub(substitute, template)


def body_digest(body: str) -> str:
    """Identifies a rendered message in Twilio's list without storing its text twice."""
    return hashlib.sha256(body.encode("utf-8")).hexdigest()[:32]
