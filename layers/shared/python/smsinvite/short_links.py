"""The short link in an invitation: GET /i/{code} sends the invitee to the survey with the code."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pynamodb.exceptions import DoesNotExist

from smsinvite.store import Store, utcnow

CODE_PARAMETER = "code"
_CODE_SHAPE = re.compile(r"^[A-Za-z0-9]{4,64}$")


@dataclass(frozen=True)
class Redirect:
    location: str


class LinkGone(Exception):
    """The code existed but has expired."""


class LinkUnknown(Exception):
    """No such code. Says nothing about which codes do exist."""


def with_code(survey_url: str, code: str) -> str:
    parts = urlsplit(survey_url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != CODE_PARAMETER]
    query.append((CODE_PARAMETER, code))
    return urlunsplit(parts._replace(query=urlencode(query)))


def follow(store: Store, code: str) -> Redirect:
    if not _CODE_SHAPE.match(code or ""):
        raise LinkUnknown()
    try:
        record = store.t.codes.get(code)
    except DoesNotExist:
        raise LinkUnknown() from None
    if record.recipient_id is None:  # still in a tokens pool: nobody was invited with it
        raise LinkUnknown()
    if record.expires_at is not None and record.expires_at <= utcnow():
        raise LinkGone()
    campaign = store.campaign(record.campaign_id)
    return Redirect(with_code(campaign.survey_url, code))
