"""The short link in an invitation: GET /i/{code} sends the invitee to the survey with the code
(smsinvite.redemption decides whether it may)."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

CODE_PARAMETER = "code"


def with_code(survey_url: str, code: str) -> str:
    parts = urlsplit(survey_url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != CODE_PARAMETER]
    query.append((CODE_PARAMETER, code))
    return urlunsplit(parts._replace(query=urlencode(query)))
