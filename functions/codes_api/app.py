"""GET /i/{code} -> redirect an invitee to the survey, or a small page that reveals nothing."""

from aws_lambda_powertools.event_handler import Response

from smsinvite.http_api import http_app
from smsinvite.observability import instrumented
from smsinvite.settings import Settings
from smsinvite.short_links import LinkGone, LinkUnknown, follow
from smsinvite.store import Store

app = http_app()

_PAGE = (
    '<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" '
    'content="width=device-width"><title>{title}</title></head><body><h1>{title}</h1><p>{text}</p></body></html>'
)
NOT_FOUND_PAGE = _PAGE.format(title="Link not found", text="Please check the link in your message.")
GONE_PAGE = _PAGE.format(title="This invitation has expired", text="Thank you for your interest.")


@app.get("/i/<code>")
def short_link(code: str) -> Response:
    try:
        redirect = follow(Store(Settings.from_env()), code)
    except LinkUnknown:
        return Response(status_code=404, content_type="text/html; charset=utf-8", body=NOT_FOUND_PAGE)
    except LinkGone:
        return Response(status_code=410, content_type="text/html; charset=utf-8", body=GONE_PAGE)
    return Response(status_code=302, headers={"Location": redirect.location, "Cache-Control": "no-store"}, body="")


@instrumented
def lambda_handler(event: dict, context) -> dict:
    return app.resolve(event, context)
