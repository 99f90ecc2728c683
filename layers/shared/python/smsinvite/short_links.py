"""The short link in an invitation: GET /i/{code} sends the invitee to the survey with the code
(smsinvite.redemption decides whether it may)."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

def with_code(survey_url: str, code: str, parameter: str = "code") -> str:
    """The survey URL with the code under `parameter` (CODE_QUERY_PARAMETER), replacing any there."""
    parts = urlsplit(survey_url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != parameter]
    query.append((parameter, code))
    return urlunsplit(parts._replace(query=urlencode(query)))
