"""The Twilio simulator, driven through the real twilio SDK, as the product will drive it."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs

import pytest
import requests
from twilio.base.exceptions import TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.request_validator import RequestValidator
from twilio.rest import Client

from local.twilio_sim import (
    DEFAULT_ACCOUNT_SID,
    DEFAULT_AUTH_TOKEN,
    TWILIO_API_BASE,
    Faults,
    TwilioSimulator,
    count_segments,
)

SENDER = "+15005550006"
SERVICE_SID = "MG" + "a1" * 16
ALICE = "+15551230001"
BOB = "+15551230002"
REPO_ROOT = Path(__file__).resolve().parents[2]


class _SimHttpClient(TwilioHttpClient):
    """Sends the SDK's https://api.twilio.com requests to the simulator instead."""

    def __init__(self, base_url: str, **kwargs):
        super().__init__(**kwargs)
        self._base_url = base_url
        self.session.trust_env = False  # never route 127.0.0.1 through an environment proxy

    def request(self, method, url, *args, **kwargs):
        return super().request(method, url.replace(TWILIO_API_BASE, self._base_url, 1),
                               *args, **kwargs)


class _Receiver:
    """A webhook receiver on 127.0.0.1 that keeps every post it gets."""

    def __init__(self, reply_status: int = 200, reply_body: str = "") -> None:
        receiver = self
        self.posts: list[dict] = []
        self._cond = threading.Condition()
        self.reply_status, self.reply_body = reply_status, reply_body
        self.first_replies: list[int] = []  # statuses for the next posts, before reply_status
        self.delay = 0.0  # seconds before answering

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                raw = self.rfile.read(int(self.headers["Content-Length"])).decode()
                params = {k: v[0] for k, v in parse_qs(raw, keep_blank_values=True).items()}
                with receiver._cond:
                    receiver.posts.append({"path": self.path, "headers": dict(self.headers),
                                           "params": params})
                    receiver._cond.notify_all()
                    status = (receiver.first_replies.pop(0) if receiver.first_replies
                              else receiver.reply_status)
                time.sleep(receiver.delay)
                body = receiver.reply_body.encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "text/xml")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:
                    pass  # the caller stopped waiting (its read timeout)

            def log_message(self, *args):
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}{path}"

    def wait_for(self, count: int, timeout: float = 5.0) -> list[dict]:
        with self._cond:
            self._cond.wait_for(lambda: len(self.posts) >= count, timeout)
            return list(self.posts)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _validates(receiver: _Receiver, post: dict, auth_token: str = DEFAULT_AUTH_TOKEN) -> bool:
    return RequestValidator(auth_token).validate(
        receiver.url(post["path"]), post["params"], post["headers"]["X-Twilio-Signature"])


@pytest.fixture(scope="module")
def sim():
    with TwilioSimulator(callback_delay=0.005) as simulator:
        yield simulator


@pytest.fixture(autouse=True)
def _fresh(sim):
    sim.reset()
    yield
    sim.wait_until_idle(2.0)


@pytest.fixture
def client(sim):
    return Client(DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN,
                  http_client=_SimHttpClient(sim.base_url, timeout=5))


@pytest.fixture
def receiver():
    server = _Receiver()
    yield server
    server.close()


def _statuses(posts: list[dict]) -> list[str]:
    return [p["params"]["MessageStatus"] for p in posts]


# --- create, fetch, list ------------------------------------------------------------------------


def test_create_returns_a_queued_message_resource_like_twilio(client):
    message = client.messages.create(to=ALICE, from_=SENDER, body="Your survey code is 7GQ2")

    assert message.sid.startswith("SM") and len(message.sid) == 34
    assert message.status == "queued"
    assert (message.account_sid, message.to, message.from_) == (DEFAULT_ACCOUNT_SID, ALICE, SENDER)
    assert message.body == "Your survey code is 7GQ2"
    assert message.num_segments == "1" and message.num_media == "0"
    assert message.direction == "outbound-api" and message.api_version == "2010-04-01"
    assert message.price is None and message.price_unit == "USD"
    assert message.error_code is None and message.error_message is None
    assert message.uri == f"/2010-04-01/Accounts/{DEFAULT_ACCOUNT_SID}/Messages/{message.sid}.json"
    assert message.date_created.tzinfo is not None and message.date_sent is None
    assert "media" in message.subresource_uris


def test_dates_use_twilios_rfc2822_format(sim, client):
    sid = client.messages.create(to=ALICE, from_=SENDER, body="hi").sid

    raw = requests.get(f"{sim.base_url}/2010-04-01/Accounts/{DEFAULT_ACCOUNT_SID}/Messages/"
                       f"{sid}.json", auth=(DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN)).json()

    datetime.strptime(raw["date_created"], "%a, %d %b %Y %H:%M:%S +0000")


def test_messaging_service_without_from_is_accepted_then_gets_a_sender(sim, client):
    message = client.messages.create(to=ALICE, messaging_service_sid=SERVICE_SID, body="hi")
    assert message.status == "accepted" and message.from_ is None

    sim.wait_until_idle()

    fetched = client.messages(message.sid).fetch()
    assert fetched.status == "delivered" and fetched.from_ == SENDER
    assert fetched.messaging_service_sid == SERVICE_SID


@pytest.mark.parametrize("body, segments", [
    ("a" * 160, "1"),
    ("a" * 161, "2"),
    ("a" * 306, "2"),
    ("a" * 307, "3"),
    ("€" * 80, "1"),  # extension-table characters cost two septets
    ("€" * 81, "2"),
    ("a" * 152 + "€" + "a" * 152, "3"),  # an escape pair is never split across two parts
    ("ж" * 70, "1"),
    ("ж" * 71, "2"),
    ("ж" * 134, "2"),
    ("ж" * 135, "3"),
    ("😀" * 35, "1"),  # a surrogate pair is two UCS-2 units
    ("😀" * 36, "2"),
])
def test_num_segments_follows_gsm7_and_ucs2_rules(client, body, segments):
    message = client.messages.create(to=ALICE, from_=SENDER, body=body)

    assert message.num_segments == segments


def test_segment_counter_names_the_encoding():
    assert count_segments("Hello {name}") == ("GSM-7", 1)
    assert count_segments("Olá — obrigado") == ("UCS-2", 1)


def test_fetch_returns_the_message_and_an_unknown_sid_is_20404(client):
    sid = client.messages.create(to=ALICE, from_=SENDER, body="hi").sid

    assert client.messages(sid).fetch().to == ALICE
    with pytest.raises(TwilioRestException) as error:
        client.messages("SM" + "0" * 32).fetch()
    assert (error.value.status, error.value.code) == (404, 20404)


def test_list_filters_by_to_newest_first_across_small_pages(sim, client):
    for number in range(7):
        client.messages.create(to=ALICE, from_=SENDER, body=f"alice {number}")
    client.messages.create(to=BOB, from_=SENDER, body="bob")

    listed = client.messages.list(to=ALICE, page_size=3)
    first_page = client.messages.page(to=ALICE, page_size=3)

    assert [m.body for m in listed] == [f"alice {n}" for n in reversed(range(7))]
    assert first_page.next_page_url and "To=%2B15551230001" in first_page.next_page_url
    assert first_page._payload["page_size"] == 3 and first_page._payload["start"] == 0
    assert len(list(client.messages.stream(from_=SENDER, page_size=2))) == 8


def test_paging_stays_stable_while_new_messages_arrive(client):
    for number in range(4):
        client.messages.create(to=ALICE, from_=SENDER, body=f"old {number}")
    first_page = client.messages.page(to=ALICE, page_size=2)
    client.messages.create(to=ALICE, from_=SENDER, body="new")

    second_page = first_page.next_page()

    assert [m.body for m in first_page] + [m.body for m in second_page] == [
        "old 3", "old 2", "old 1", "old 0"]


def test_list_filters_by_date_sent_after_and_before(client):
    client.messages.create(to=ALICE, from_=SENDER, body="hi")
    now = datetime.now(timezone.utc)

    assert len(client.messages.list(to=ALICE, date_sent_after=now - timedelta(minutes=1))) == 1
    assert client.messages.list(to=ALICE, date_sent_after=now + timedelta(minutes=1)) == []
    assert client.messages.list(to=ALICE, date_sent_before=now - timedelta(minutes=1)) == []
    assert len(client.messages.list(to=ALICE, date_sent=now.date())) == 1


# --- errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize("to, code", [
    ("+15005550001", 21211), ("+15005550002", 21612), ("+15005550003", 21408),
    ("+15005550004", 21610), ("+15005550009", 21614), ("not-a-number", 21211),
])
def test_magic_to_numbers_raise_twilios_error_codes(client, to, code):
    with pytest.raises(TwilioRestException) as error:
        client.messages.create(to=to, from_=SENDER, body="hi")

    assert (error.value.status, error.value.code) == (400, code)


@pytest.mark.parametrize("from_, code", [
    ("+15005550001", 21212), ("+15005550007", 21606), ("+15005550008", 21611),
])
def test_magic_from_numbers_raise_twilios_error_codes(sim, client, from_, code):
    with pytest.raises(TwilioRestException) as error:
        client.messages.create(to=ALICE, from_=from_, body="hi")

    assert (error.value.status, error.value.code) == (400, code)
    assert sim.created() == []


@pytest.mark.parametrize("kwargs, code", [
    ({"to": "", "from_": SENDER, "body": "hi"}, 21604),
    ({"to": ALICE, "from_": SENDER}, 21602),
    ({"to": ALICE, "body": "hi"}, 21603),
])
def test_missing_required_params_raise_twilios_error_codes(client, kwargs, code):
    with pytest.raises(TwilioRestException) as error:
        client.messages.create(**kwargs)

    assert (error.value.status, error.value.code) == (400, code)


def test_other_valid_looking_numbers_succeed(client):
    message = client.messages.create(to="+447700900123", from_="+15557654321", body="hi")

    assert message.status == "queued"


def test_wrong_auth_token_gets_401_with_code_20003(sim):
    wrong = Client(DEFAULT_ACCOUNT_SID, "f" * 32, http_client=_SimHttpClient(sim.base_url))

    with pytest.raises(TwilioRestException) as error:
        wrong.messages.create(to=ALICE, from_=SENDER, body="hi")

    assert (error.value.status, error.value.code) == (401, 20003)
    assert sim.created() == [] and sim.ledger[0].error_code == 20003


def test_unknown_resources_and_bad_filters_get_twilio_error_json(sim):
    base = f"{sim.base_url}/2010-04-01/Accounts/{DEFAULT_ACCOUNT_SID}"
    auth = (DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN)

    unknown = requests.get(f"{base}/Calls.json", auth=auth)
    bad_date = requests.get(f"{base}/Messages.json", params={"DateSent>": "yesterday"}, auth=auth)

    assert (unknown.status_code, unknown.json()["code"]) == (404, 20404)
    assert unknown.json()["more_info"] == "https://www.twilio.com/docs/errors/20404"
    assert (bad_date.status_code, bad_date.json()["code"]) == (400, 20001)


# --- MPS limit and ledger -----------------------------------------------------------------------


def test_sender_over_its_mps_limit_gets_429_and_the_excess_is_counted(sim, client):
    sim.set_mps_limit(2)
    codes = []

    for _ in range(5):
        try:
            client.messages.create(to=ALICE, from_=SENDER, body="hi")
            codes.append(201)
        except TwilioRestException as error:
            codes.append((error.status, error.code))

    assert codes == [201, 201] + [(429, 20429)] * 3
    assert sim.excess == {SENDER: 3}
    assert sim.max_per_second(SENDER) == 2
    assert client.messages.create(to=ALICE, messaging_service_sid=SERVICE_SID, body="hi")


def test_mps_limit_can_differ_per_sender_and_frees_up_after_a_second(sim, client):
    sim.set_mps_limit(1, sender=SENDER)
    client.messages.create(to=ALICE, from_=SENDER, body="one")
    with pytest.raises(TwilioRestException):
        client.messages.create(to=ALICE, from_=SENDER, body="two")

    time.sleep(1.0)

    assert client.messages.create(to=ALICE, from_=SENDER, body="three").status == "queued"


def test_ledger_records_every_create_attempt_with_its_outcome(sim, client):
    client.messages.create(to=ALICE, from_=SENDER, body="hi")
    with pytest.raises(TwilioRestException):
        client.messages.create(to="+15005550004", from_=SENDER, body="hi")

    created, refused = sim.ledger

    assert (created.sender, created.to, created.status, created.created) == (
        SENDER, ALICE, 201, True)
    assert (refused.to, refused.status, refused.error_code, refused.created) == (
        "+15005550004", 400, 21610, False)
    assert created.monotonic <= refused.monotonic and created.wall.tzinfo is not None
    assert [m.to for m in sim.created()] == [ALICE] and sim.created(to=BOB) == []


# --- status callbacks ---------------------------------------------------------------------------


def test_status_callbacks_walk_the_delivery_path_and_validate_with_the_request_validator(
        sim, client, receiver):
    callback_url = receiver.url("/twilio/status?c=camp1&r=abc&a=att1")
    message = client.messages.create(to=ALICE, from_=SENDER, body="hi",
                                     status_callback=callback_url)

    posts = receiver.wait_for(3)

    assert _statuses(posts) == ["sending", "sent", "delivered"]
    assert all(_validates(receiver, post) for post in posts)
    assert posts[0]["path"] == "/twilio/status?c=camp1&r=abc&a=att1"
    assert posts[0]["headers"]["Content-Type"] == "application/x-www-form-urlencoded"
    params = posts[-1]["params"]
    assert (params["MessageSid"], params["SmsSid"], params["AccountSid"]) == (
        message.sid, message.sid, DEFAULT_ACCOUNT_SID)
    assert (params["To"], params["From"], params["SmsStatus"]) == (ALICE, SENDER, "delivered")
    assert "ErrorCode" not in params and params["ApiVersion"] == "2010-04-01"
    tokens = {post["headers"]["I-Twilio-Idempotency-Token"] for post in posts}
    assert len(tokens) == 3
    sim.wait_until_idle()
    assert client.messages(message.sid).fetch().status == "delivered"


def test_status_callback_signature_covers_blank_parameter_values(sim, client, receiver):
    sim.callback_extra_params = {"ChannelPrefix": "", "StructuredMessage": "false"}
    client.messages.create(to=ALICE, from_=SENDER, body="hi",
                           status_callback=receiver.url("/twilio/status?c=camp1&blank="))

    posts = receiver.wait_for(3)

    assert posts[0]["params"]["ChannelPrefix"] == ""
    assert all(_validates(receiver, post) for post in posts)


def test_a_tampered_status_callback_fails_validation(client, receiver):
    client.messages.create(to=ALICE, from_=SENDER, body="hi",
                           status_callback=receiver.url("/twilio/status?c=camp1"))
    post = receiver.wait_for(3)[-1]

    tampered = {**post, "params": {**post["params"], "MessageStatus": "failed"}}
    other_url = {**post, "path": "/twilio/status?c=camp2"}

    assert _validates(receiver, post)
    assert not _validates(receiver, tampered)
    assert not _validates(receiver, other_url)
    assert not _validates(receiver, post, auth_token="0" * 32)


def test_messaging_service_message_gets_a_queued_callback_first(client, receiver):
    client.messages.create(to=ALICE, messaging_service_sid=SERVICE_SID, body="hi",
                           status_callback=receiver.url("/twilio/status"))

    posts = receiver.wait_for(4)

    assert _statuses(posts) == ["queued", "sending", "sent", "delivered"]
    assert posts[-1]["params"]["MessagingServiceSid"] == SERVICE_SID


@pytest.mark.parametrize("outcome, code, path", [
    ("undelivered", 30005, ["sending", "sent", "undelivered"]),
    ("undelivered", 30006, ["sending", "sent", "undelivered"]),
    ("failed", 30007, ["sending", "failed"]),
])
def test_unsuccessful_outcomes_carry_their_error_code(sim, client, receiver, outcome, code, path):
    sim.set_outcome(BOB, outcome, code)
    message = client.messages.create(to=BOB, from_=SENDER, body="hi",
                                     status_callback=receiver.url("/twilio/status"))

    posts = receiver.wait_for(len(path))
    sim.wait_until_idle()

    assert _statuses(posts) == path
    assert posts[-1]["params"]["ErrorCode"] == str(code)
    assert all("ErrorCode" not in p["params"] for p in posts[:-1])
    fetched = client.messages(message.sid).fetch()
    assert (fetched.status, fetched.error_code) == (outcome, code)
    assert fetched.error_message


def test_out_of_order_callbacks_arrive_reversed_while_the_status_only_moves_forward(
        sim, client, receiver):
    sim.callbacks_out_of_order = True
    message = client.messages.create(to=ALICE, from_=SENDER, body="hi",
                                     status_callback=receiver.url("/twilio/status"))

    posts = receiver.wait_for(3)

    assert _statuses(posts) == ["delivered", "sent", "sending"]
    assert client.messages(message.sid).fetch().status == "delivered"


def test_duplicate_callbacks_repeat_with_the_same_idempotency_token(sim, client, receiver):
    sim.duplicate_callbacks = True
    client.messages.create(to=ALICE, from_=SENDER, body="hi",
                           status_callback=receiver.url("/twilio/status"))

    posts = receiver.wait_for(6)

    assert _statuses(posts) == ["sending", "sending", "sent", "sent", "delivered", "delivered"]
    tokens = [post["headers"]["I-Twilio-Idempotency-Token"] for post in posts]
    assert tokens[0] == tokens[1] and tokens[2] == tokens[3] and tokens[4] == tokens[5]
    assert len(set(tokens)) == 3


def test_without_connection_overrides_a_refused_connection_is_retried_once(sim, client):
    # Given a status callback URL without a fragment, to a receiver that is down
    dead = _Receiver()
    dead_url = dead.url("/twilio/status")
    dead.close()

    # When the message walks its delivery path
    message = client.messages.create(to=ALICE, from_=SENDER, body="hi", status_callback=dead_url)
    sim.wait_until_idle()

    # Then each callback is tried twice, Twilio's default (rc=1, rp=ct), then logged as failed
    log = sim.callbacks(message.sid)
    assert [(r.params["MessageStatus"], r.attempt) for r in log] == [
        ("sending", 1), ("sending", 2), ("sent", 1), ("sent", 2), ("delivered", 1), ("delivered", 2)]
    assert all(record.status is None and record.error for record in log)
    assert client.messages(message.sid).fetch().status == "delivered"
    assert client.messages.create(to=BOB, from_=SENDER, body="still serving").status == "queued"


def test_every_callback_post_is_logged_with_the_receivers_answer(sim, client, receiver):
    receiver.reply_status = 403
    message = client.messages.create(to=ALICE, from_=SENDER, body="hi",
                                     status_callback=receiver.url("/twilio/status"))
    sim.wait_until_idle()

    log = sim.callbacks(message.sid)

    assert [(r.params["MessageStatus"], r.status, r.attempt) for r in log] == [
        ("sending", 403, 1), ("sent", 403, 1), ("delivered", 403, 1)]  # 4xx is not retried


@pytest.mark.parametrize("reply, fragment, attempts", [
    (503, "", 1),  # Twilio's default retries a failed connection only, never a 5xx
    (500, "", 1),
    (503, "#rc=5&rp=ct", 1),
    (503, "#rc=5&rp=4xx,rt", 1),
    (503, "#rc=0&rp=5xx", 1),
    (503, "#rc=2&rp=5xx", 3),
    (503, "#rp=ct,5xx", 2),  # rc defaults to 1
    (500, "#rc=4&rp=all", 5),
    (403, "#rc=5&rp=ct,5xx", 1),
    (403, "#rc=2&rp=4xx", 3),
])
def test_a_failed_callback_is_retried_only_as_its_urls_connection_overrides_say(
        sim, client, receiver, reply, fragment, attempts):
    # Given a receiver that keeps answering `reply`
    receiver.reply_status = reply

    # When a message's status callback URL carries `fragment`
    message = client.messages.create(to=ALICE, from_=SENDER, body="hi",
                                     status_callback=receiver.url("/twilio/status?c=camp1") + fragment)
    sim.wait_until_idle()

    # Then each callback is posted `attempts` times, as Twilio would
    log = sim.callbacks(message.sid)
    for status in ("sending", "sent", "delivered"):
        tries = [r for r in log if r.params["MessageStatus"] == status]
        assert [(r.attempt, r.status) for r in tries] == [(n, reply) for n in range(1, attempts + 1)]
    assert len(receiver.posts) == 3 * attempts


def test_a_retried_callback_reaches_the_url_without_its_fragment_signed_without_it(
        sim, client, receiver):
    # Given a receiver that answers 503 twice, then 204
    receiver.first_replies = [503, 503]
    receiver.reply_status = 204

    # When the status callback URL asks for retries on 5xx
    message = client.messages.create(
        to=ALICE, from_=SENDER, body="hi",
        status_callback=receiver.url("/twilio/status?c=camp1&a=att1") + "#rc=3&rp=ct,5xx")
    sim.wait_until_idle()

    # Then the first callback is posted three times, with one idempotency token, the last answered
    first = [r for r in sim.callbacks(message.sid) if r.params["MessageStatus"] == "sending"]
    assert [(r.attempt, r.status) for r in first] == [(1, 503), (2, 503), (3, 204)]
    assert len({r.idempotency_token for r in first}) == 1
    # And every post went to the URL without the fragment (a client never sends one), signed
    # over that URL: Twilio leaves connection overrides out of the signature
    assert {post["path"] for post in receiver.posts} == {"/twilio/status?c=camp1&a=att1"}
    assert all(_validates(receiver, post) for post in receiver.posts)
    assert all("#" not in r.url for r in sim.callbacks(message.sid))


def test_the_total_time_ends_the_retries_of_a_callback_that_times_out(sim, receiver):
    # Given a receiver slower than the read timeout
    receiver.delay = 0.5
    url = receiver.url("/twilio/inbound") + "#rt=300&tt=700&rc=5&rp=rt"

    # When Twilio posts an inbound reply to it
    started = time.monotonic()
    with pytest.raises(requests.ConnectionError):
        sim.send_inbound(url, ALICE, SENDER, "hi")
    elapsed = time.monotonic() - started

    # Then it gave up once 700 ms were spent, well before six 300 ms attempts could run
    log = sim.callbacks(kind="inbound")
    assert 1 < len(log) < 6
    assert all(r.status is None and "ReadTimeout" in r.error for r in log)
    assert elapsed < 1.5


@pytest.mark.parametrize("fragment", ["#rc=6", "#rc=two", "#rp=sometimes", "#rp=", "#ct=50",
                                      "#rt=20000", "#tt=99", "#retries=3"])
def test_invalid_connection_overrides_are_refused_and_nothing_is_posted(sim, client, receiver,
                                                                        fragment):
    message = client.messages.create(to=ALICE, from_=SENDER, body="hi",
                                     status_callback=receiver.url("/twilio/status") + fragment)
    sim.wait_until_idle()

    log = sim.callbacks(message.sid)
    assert len(log) == 3 and all(r.status is None and "connection overrides" in r.error for r in log)
    assert receiver.posts == []


# --- inbound ------------------------------------------------------------------------------------


def test_inbound_reply_is_signed_and_returns_the_receivers_twiml(sim, receiver):
    receiver.reply_body = "<Response><Message>You are unsubscribed.</Message></Response>"

    status, headers, body = sim.send_inbound(receiver.url("/twilio/inbound?x=1"), ALICE,
                                             SENDER, "STOP", FromCity="")

    post = receiver.wait_for(1)[0]
    assert (status, headers["Content-Type"], body) == (200, "text/xml", receiver.reply_body)
    assert _validates(receiver, post)
    params = post["params"]
    assert (params["From"], params["To"], params["Body"]) == (ALICE, SENDER, "STOP")
    assert params["MessageSid"].startswith("SM") and params["NumMedia"] == "0"
    assert params["FromCity"] == "" and params["FromCountry"] == "US"
    assert sim.callbacks(kind="inbound")[0].status == 200


def test_an_inbound_reply_is_not_retried_after_a_5xx_without_connection_overrides(sim, receiver):
    receiver.first_replies = [503]

    status, _, _ = sim.send_inbound(receiver.url("/twilio/inbound"), ALICE, SENDER, "STOP")

    assert status == 503
    assert [(r.attempt, r.status) for r in sim.callbacks(kind="inbound")] == [(1, 503)]


def test_an_inbound_reply_is_retried_as_the_inbound_urls_overrides_say(sim, receiver):
    # Given the inbound webhook registered with overrides that retry 5xx, and a receiver that
    # answers 503 once
    receiver.first_replies = [503]
    receiver.reply_body = "<Response/>"

    # When someone replies
    status, _, body = sim.send_inbound(receiver.url("/twilio/inbound") + "#rc=2&rp=5xx", ALICE,
                                       SENDER, "STOP")

    # Then the caller gets the retry's answer, and both posts are one delivery, signed alike
    assert (status, body) == (200, "<Response/>")
    log = sim.callbacks(kind="inbound")
    assert [(r.attempt, r.status) for r in log] == [(1, 503), (2, 200)]
    assert len({(r.idempotency_token, r.message_sid) for r in log}) == 1
    assert all(_validates(receiver, post) for post in receiver.posts)


# --- faults -------------------------------------------------------------------------------------


def test_latency_fault_delays_every_api_response(sim, client):
    sid = client.messages.create(to=ALICE, from_=SENDER, body="hi").sid
    sim.faults.latency = 0.15

    started = time.monotonic()
    client.messages(sid).fetch()

    assert time.monotonic() - started >= 0.15


def test_429_fault_is_a_definite_not_sent(sim, client):
    sim.faults.next(["429"])

    with pytest.raises(TwilioRestException) as error:
        client.messages.create(to=ALICE, from_=SENDER, body="hi")

    assert (error.value.status, error.value.code) == (429, 20429)
    assert sim.created() == [] and sim.ledger[0].fault == "429"


def test_5xx_fault_creates_nothing(sim, client):
    sim.faults.next(["5xx"])

    with pytest.raises(TwilioRestException) as error:
        client.messages.create(to=ALICE, from_=SENDER, body="hi")

    assert error.value.status in (500, 503)
    assert sim.created() == []


def test_5xx_after_create_fault_hides_a_message_that_was_created(sim, client):
    sim.faults.next(["5xx_after_create"])

    with pytest.raises(TwilioRestException) as error:
        client.messages.create(to=ALICE, from_=SENDER, body="hi")

    assert error.value.status == 500
    assert [m.body for m in client.messages.list(to=ALICE)] == ["hi"]
    assert sim.ledger[0].created and sim.ledger[0].fault == "5xx_after_create"


def test_drop_after_accept_raises_on_the_client_but_the_message_is_listed(
        sim, client, receiver):
    sim.faults.next(["drop", "ok"])

    with pytest.raises(requests.ConnectionError):
        client.messages.create(to=ALICE, from_=SENDER, body="hi",
                               status_callback=receiver.url("/twilio/status"))

    listed = client.messages.list(to=ALICE)
    assert [m.body for m in listed] == ["hi"]
    assert _statuses(receiver.wait_for(3)) == ["sending", "sent", "delivered"]
    assert sim.ledger[0].status is None and sim.ledger[0].fault == "drop"


def test_timeout_fault_times_the_client_out_but_the_message_exists(sim):
    sim.faults.hang_seconds = 1.0
    sim.faults.next(["timeout"])
    impatient = Client(DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN,
                       http_client=_SimHttpClient(sim.base_url, timeout=0.2))

    with pytest.raises(requests.Timeout):
        impatient.messages.create(to=ALICE, from_=SENDER, body="hi")

    assert [m.to for m in sim.created()] == [ALICE]


def test_fault_rates_are_seeded_so_runs_repeat():
    first, second = Faults(seed=7), Faults(seed=7)
    for faults in (first, second):
        faults.rate_429, faults.drop_after_accept = 0.3, 0.3

    draws = [first.decide() for _ in range(50)]

    assert draws == [second.decide() for _ in range(50)]
    assert {"429", "drop", "ok"} == set(draws)


def test_an_unknown_fault_kind_is_refused(sim):
    with pytest.raises(ValueError):
        sim.faults.next(["explode"])


# --- lifecycle ----------------------------------------------------------------------------------


def test_reset_forgets_messages_ledger_faults_and_outcomes(sim, client):
    sim.set_outcome(ALICE, "failed")
    sim.faults.latency = 1.0
    sim.faults.next(["429"])

    sim.reset()
    message = client.messages.create(to=ALICE, from_=SENDER, body="hi")
    sim.wait_until_idle()

    assert len(sim.ledger) == 1 and sim.faults.latency == 0
    assert client.messages(message.sid).fetch().status == "delivered"


def test_stop_leaves_no_simulator_threads_behind(receiver):
    before = {t.ident for t in threading.enumerate()}
    with TwilioSimulator() as own:
        own_client = Client(DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN,
                            http_client=_SimHttpClient(own.base_url))
        own_client.messages.create(to=ALICE, from_=SENDER, body="hi",
                                   status_callback=receiver.url("/twilio/status"))

    leftover = [t for t in threading.enumerate()
                if t.ident not in before and t.name.startswith("twilio-sim") and t.is_alive()]
    assert leftover == []


def test_simulator_binds_to_loopback_only():
    with pytest.raises(ValueError):
        TwilioSimulator(host="0.0.0.0")


def test_module_entry_point_prints_its_base_url():
    process = subprocess.Popen([sys.executable, "-m", "local.twilio_sim"], cwd=REPO_ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = process.stdout.readline()
    finally:
        process.terminate()
        process.wait(5)

    assert line.startswith("Twilio simulator at http://127.0.0.1:")
