"""What one recipient is sent: the template as sent (with the opt-out footer), their fields, code and link.

The preview and the sender both render through here, so the preview counts the very text that is sent.
"""

from __future__ import annotations

from collections.abc import Mapping

from smsinvite.messages import render, required_fields, with_opt_out
from smsinvite.settings import Settings

SHORT_LINK_PATH = "/i/"
# Filled in by smsinvite, never taken from a recipient's attributes.
SYSTEM_FIELDS = frozenset({"code", "link"})


def template_as_sent(template: str, settings: Settings) -> str:
    return with_opt_out(template, settings.opt_out_footer)


def short_link(settings: Settings, code: str) -> str:
    return f"{settings.require_webhook_base_url()}{SHORT_LINK_PATH}{code}"


def invitation_text(template: str, fields: Mapping[str, str], code: str | None, settings: Settings) -> str:
    """Raises MissingField when a field without a default has no value. Without a code (a list's
    confirmation) there is no code or link to fill in."""
    own = {name: value for name, value in fields.items() if name not in SYSTEM_FIELDS}
    system = {"code": code, "link": short_link(settings, code)} if code else {}
    return render(template_as_sent(template, settings), {**own, **system})


def missing_field(template: str, fields: Mapping[str, str], settings: Settings) -> str | None:
    """The first merge field the template needs that this recipient lacks (no default), if any."""
    for name in required_fields(template_as_sent(template, settings)):
        if name not in SYSTEM_FIELDS and fields.get(name) in (None, ""):
            return name
    return None
