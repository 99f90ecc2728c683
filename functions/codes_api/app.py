"""GET /i/{code} -> redirect an invitee to the survey, or a small page that reveals nothing.
POST /codes/{code}/redeem and /complete -> the survey platform admits an invitee once, and records the answer."""

from aws_lambda_powertools.event_handler import Response

from smsinvite.errors import Gone, NotFound, TooManyRequests
from smsinvite.http_api import http_app
from smsinvite.observability import instrumented
from smsinvite.redemption import Redemptions, check_api_key, session_id_in
from smsinvite.settings import Settings
from smsinvite.store import Store

app = http_app()

_PAGE = (
    '<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" '
    'content="width=device-width"><title>{title}</title></head><body><h1>{title}</h1><p>{text}</p></body></html>'
)
NOT_FOUND_PAGE = _PAGE.format(title="Link not found", text="Please check the link in your message.")
GONE_PAGE = _PAGE.format(title="This invitation has expired", text="Thank you for your interest.")
BUSY_PAGE = _PAGE.format(title="Please try again in a minute", text="Too many links were tried from here.")


def _redemptions() -> tuple[Redemptions, Settings]:
    settings = Settings.from_env()
    return Redemptions(Store(settings), settings), settings


def _source_ip() -> str:
    return app.current_event.request_context.http.source_ip or "unknown"


def _page(status: int, body: str) -> Response:
    return Response(status_code=status, content_type="text/html; charset=utf-8", body=body)


@app.get("/i/<code>")
def short_link(code: str) -> Response:
    redemptions, _ = _redemptions()
    try:
        location = redemptions.follow(code, _source_ip())
    except NotFound:
        return _page(404, NOT_FOUND_PAGE)
    except Gone:
        return _page(410, GONE_PAGE)
    except TooManyRequests:
        return _page(429, BUSY_PAGE)
    return Response(status_code=302, headers={"Location": location, "Cache-Control": "no-store"}, body="")


@app.post("/codes/<code>/redeem")
def redeem(code: str) -> dict:
    redemptions, settings = _redemptions()
    check_api_key(settings, app.current_event.headers.get("x-api-key"))
    return redemptions.redeem(code, session_id_in(app.current_event.decoded_body), _source_ip()).as_dict()


@app.post("/codes/<code>/complete")
def complete(code: str) -> dict:
    redemptions, settings = _redemptions()
    check_api_key(settings, app.current_event.headers.get("x-api-key"))
    return redemptions.complete(code, _source_ip())


@instrumented
def lambda_handler(event: dict, context) -> dict:
    return app.resolve(event, context)
