"""Prepare, approve, dispatch, pause and cancel against DynamoDB Local: the conditional writes that keep them honest."""

import json
import re
import uuid

import pytest

from smsinvite.campaigns import InvalidTransition
from smsinvite.codes import PoolExhausted
from smsinvite.dispatch import Dispatcher, DispatchRequest
from smsinvite.importing import ImportRunner
from smsinvite.lifecycle import StalePreparation
from smsinvite.preparation import Preparer
from smsinvite.status import Status
from smsinvite.store import recipient_id_for

PEOPLE = [
    {"phone": "+1 415 555 0100", "first_name": "Ana", "tier": "gold"},
    {"phone": "+1 415 555 0101", "first_name": "Ben", "tier": "silver"},
    {"phone": "+1 415 555 0102", "first_name": "", "tier": "gold"},  # no name: missing_field
    {"phone": "+1 415 555 0104", "first_name": "Eve", "tier": "gold"},
]


def someone_who_opts_out(store, runner, campaign_id, suppress):
    """A person added to the campaign who then opts out (a number of their own: suppression is system-wide)."""
    phone = f"+1415556{uuid.uuid4().int % 9000 + 1000}"  # a range no other test uses
    record, _ = runner.register_list(campaign_id, [{"phone": phone, "first_name": "Dev", "tier": "gold"}], "dev")
    runner.run(record.import_id, time_left=lambda: 60.0, margin=5.0)
    suppress(store, phone)
    return phone


class RecordingQueue:
    """The send queue, as far as the dispatcher can tell; it keeps every body it was given."""

    def __init__(self):
        self.bodies = []

    def send_all(self, bodies):
        bodies = list(bodies)
        self.bodies.extend(bodies)
        return len(bodies)


def new_campaign(store, runner, people=PEOPLE, **attributes):
    campaign_id = f"l-{uuid.uuid4().hex[:10]}"
    defaults = {"name": "t", "survey_url": "https://s.example", "message_template": "Hi {first_name}, your survey: {link}"}
    store.create_campaign(store.new_campaign(campaign_id=campaign_id, **{**defaults, **attributes}))
    if people:
        record, _ = runner.register_list(campaign_id, people, "first-list")
        runner.run(record.import_id, time_left=lambda: 60.0, margin=5.0)
    return campaign_id


def prepare(store, local_aws, runner, campaign_id, **options):
    time_left = options.pop("time_left", lambda: 60.0)
    return Preparer(store, local_aws, runner, **options).prepare(campaign_id, time_left=time_left, margin=5.0)


def test_prepare_counts_every_recipient_by_source_and_reason_and_gives_the_invited_a_code(store, local_aws, runner, suppress):
    # Given four people added by hand, one of whom has no first name, and one more who opted out since
    campaign_id = new_campaign(store, runner)
    someone_who_opts_out(store, runner, campaign_id, suppress)

    # When the campaign is prepared
    outcome = prepare(store, local_aws, runner, campaign_id)

    # Then three are invited, each with a code, and the two left out are counted by reason and source
    preview = outcome.preview
    assert outcome.state == "prepared"
    assert preview["audience"]["eligible"] == 3
    assert preview["audience"]["excluded"] == {"missing_field:first_name": 1, "suppressed": 1}
    assert preview["sources"] == {
        "add_recipients": {"rows": 5, "imported": 5, "eligible": 3, "missing_field:first_name": 1, "suppressed": 1}
    }
    recipients = {r.phone: r for r in store.t.recipients.query(campaign_id)}
    assert all(recipients[p].code for p in ("+14155550100", "+14155550101", "+14155550104"))
    assert recipients["+14155550102"].code is None and recipients["+14155550102"].exclusion == "missing_field:first_name"
    # And the preview shows three rendered samples, their segments and their cost
    assert len(preview["messages"]["samples"]) == 3
    codes = {r.code for r in recipients.values() if r.code}
    for sample in preview["messages"]["samples"]:
        name, code = re.fullmatch(r"Hi (\w+), your survey: https://hooks\.example\.com/i/(\w+) Reply STOP to opt out",
                                  sample["text"]).groups()
        assert name in ("Ana", "Ben", "Eve") and code in codes
        assert sample["to"].startswith("+14*")
    assert preview["messages"]["segments"] == {"1": 3}
    assert preview["cost"]["by_country"]["US"]["segments"] == 3
    assert preview["cost"]["total"] == round(3 * local_aws.price_per_segment("US"), 2)
    assert "finishes" in preview["sending"]["duration"]["summary"]


def test_audience_rules_leave_out_who_does_not_match(store, local_aws, runner):
    from smsinvite.campaigns import Audience, Rule

    campaign_id = new_campaign(store, runner, audience=Audience(rules=(Rule("tier", "equals", "silver"),)).as_json())
    preview = prepare(store, local_aws, runner, campaign_id).preview
    assert preview["audience"]["eligible"] == 1
    assert preview["audience"]["excluded"] == {"not_matching_rules": 3}


def test_preparing_again_keeps_every_code_already_given(store, local_aws, runner):
    campaign_id = new_campaign(store, runner)
    prepare(store, local_aws, runner, campaign_id)
    before = {r.recipient_id: r.code for r in store.t.recipients.query(campaign_id)}

    again = prepare(store, local_aws, runner, campaign_id)

    assert again.state == "prepared"
    assert {r.recipient_id: r.code for r in store.t.recipients.query(campaign_id)} == before


def test_a_dry_tokens_pool_fails_prepare_and_says_how_many_codes_are_missing(store, local_aws, runner):
    # Given a tokens campaign with four people to invite and one code in its pool
    campaign_id = new_campaign(store, runner, code_source="tokens", message_template="Hi {first_name|there} {link}")
    store.t.codes("POOLCODE2345", campaign_id=campaign_id, pool_campaign_id=campaign_id).save()

    # When it is prepared, page by page
    with pytest.raises(PoolExhausted) as exhausted:
        prepare(store, local_aws, runner, campaign_id, page_size=2)

    # Then prepare fails, naming the three codes missing, and the campaign is back to draft
    assert exhausted.value.missing == 3
    campaign = store.campaign(campaign_id)
    assert campaign.state == "draft"
    assert "3 more codes" in campaign.last_error


def test_a_prepare_cut_off_part_way_resumes_where_it_stopped_with_exact_counts(store, local_aws, runner):
    # Given a prepare whose invocation runs out of time after its first page of two
    campaign_id = new_campaign(store, runner)
    first = prepare(store, local_aws, runner, campaign_id, page_size=2, time_left=lambda: 0.0)
    assert first.state == "preparing"
    assert store.campaign(campaign_id).due_at  # the scheduler will carry on if nobody else does

    # When it is continued
    done = prepare(store, local_aws, runner, campaign_id, page_size=2)

    # Then every recipient was counted once
    assert done.state == "prepared"
    audience = done.preview["audience"]
    assert audience["eligible"] + sum(audience["excluded"].values()) == len(PEOPLE)


def test_approve_is_refused_once_the_audience_changed_after_prepare(store, local_aws, runner, lifecycle):
    # Given a prepared campaign
    campaign_id = new_campaign(store, runner)
    prepare(store, local_aws, runner, campaign_id)

    # When someone else is added afterwards
    record, _ = runner.register_list(campaign_id, [{"phone": "+1 415 555 0199", "first_name": "Late"}], "late")
    runner.run(record.import_id, time_left=lambda: 60.0, margin=5.0)

    # Then approve says to prepare again, and nothing started
    with pytest.raises(StalePreparation, match="prepare again"):
        lifecycle.approve(campaign_id)
    assert store.campaign(campaign_id).state == "prepared"

    # And once prepared again, it is approved and sending
    prepare(store, local_aws, runner, campaign_id)
    assert lifecycle.approve(campaign_id).state == "sending"


def test_approve_of_a_campaign_that_was_never_prepared_is_refused(store, runner, lifecycle):
    campaign_id = new_campaign(store, runner)
    with pytest.raises(InvalidTransition, match="prepare it first"):
        lifecycle.approve(campaign_id)


def approved(store, local_aws, runner, lifecycle, people=PEOPLE):
    campaign_id = new_campaign(store, runner, people=people)
    prepare(store, local_aws, runner, campaign_id)
    lifecycle.approve(campaign_id)
    return campaign_id


def many(n):
    return [{"phone": f"+1 415 555 {1000 + i}", "first_name": f"P{i}"} for i in range(n)]


def test_a_dispatch_cut_off_part_way_resumes_and_skips_nobody(store, local_aws, runner, lifecycle, monkeypatch):
    # Given an approved campaign of 10 and a dispatcher whose cursor save fails once, after page 2 was queued
    campaign_id = approved(store, local_aws, runner, lifecycle, people=many(10))
    queue = RecordingQueue()
    dispatcher = Dispatcher(store, queue, page_size=3)
    request = DispatchRequest(campaign_id=campaign_id, run=1)
    first = dispatcher.dispatch_page(request)
    real_save, calls = store.save_dispatch_cursor, []

    def crash_once(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionError("the invocation died here")
        return real_save(*args, **kwargs)

    monkeypatch.setattr(store, "save_dispatch_cursor", crash_once)
    with pytest.raises(ConnectionError):
        dispatcher.dispatch_page(request.model_copy(update={"cursor": first.next_cursor}))

    # When SQS delivers the request again, and the dispatch goes on to the end
    page = dispatcher.dispatch_page(request.model_copy(update={"cursor": first.next_cursor}))
    while page.more:
        page = dispatcher.dispatch_page(request.model_copy(update={"cursor": page.next_cursor}))

    # Then everyone was queued, only the page that was cut off twice (the sender's claim admits one send)
    queued = [body["recipient_id"] for body in queue.bodies]
    everyone = {recipient_id_for(campaign_id, f"+1415555{1000 + i}") for i in range(10)}
    assert set(queued) == everyone
    assert len(queued) == 10 + 3
    assert store.campaign(campaign_id).dispatch_done == 1


def test_a_dispatch_request_delivered_twice_moves_the_cursor_once(store, local_aws, runner, lifecycle):
    campaign_id = approved(store, local_aws, runner, lifecycle, people=many(6))
    queue = RecordingQueue()
    dispatcher = Dispatcher(store, queue, page_size=3)
    request = DispatchRequest(campaign_id=campaign_id, run=1)

    first = dispatcher.dispatch_page(request)
    duplicate = dispatcher.dispatch_page(request)

    assert first.more
    assert duplicate.stopped == "another dispatch has moved on"
    assert store.campaign(campaign_id).dispatch_cursor == first.next_cursor


def test_pause_stops_dispatch_and_cancel_marks_everyone_not_sent_cancelled(store, local_aws, runner, lifecycle):
    # Given an approved campaign whose first page went out before it was paused
    campaign_id = approved(store, local_aws, runner, lifecycle, people=many(6))
    queue = RecordingQueue()
    dispatcher = Dispatcher(store, queue, page_size=3)
    first = dispatcher.dispatch_page(DispatchRequest(campaign_id=campaign_id, run=1))
    lifecycle.pause(campaign_id)

    # When the dispatch continues while paused, nothing more is queued
    held = dispatcher.dispatch_page(DispatchRequest(campaign_id=campaign_id, run=1, cursor=first.next_cursor))
    assert held.stopped == "the campaign is paused"
    assert len(queue.bodies) == 3

    # When it is cancelled, the cancel's dispatch marks every recipient not yet sent
    lifecycle.cancel(campaign_id)
    page = dispatcher.dispatch_page(DispatchRequest(campaign_id=campaign_id, run=1))
    while page.more:
        page = dispatcher.dispatch_page(DispatchRequest(campaign_id=campaign_id, run=1, cursor=page.next_cursor))

    # Then nobody is left to send, and the counters agree
    assert {r.status for r in store.t.recipients.query(campaign_id)} == {Status.CANCELLED.value}
    counts = store.counts(campaign_id)
    assert (counts[Status.CANCELLED], counts[Status.IMPORTED]) == (6, 0)
    with pytest.raises(InvalidTransition):
        lifecycle.resume(campaign_id)


def test_excluded_recipients_end_excluded_and_the_run_completes_when_nobody_is_left(store, local_aws, runner, lifecycle, suppress):
    # Given an approved campaign with one recipient left out for a missing name and one suppressed
    campaign_id = new_campaign(store, runner)
    someone_who_opts_out(store, runner, campaign_id, suppress)
    prepare(store, local_aws, runner, campaign_id)
    lifecycle.approve(campaign_id)
    queue = RecordingQueue()
    page = Dispatcher(store, queue, page_size=100).dispatch_page(DispatchRequest(campaign_id=campaign_id, run=1))
    assert not page.more and len(queue.bodies) == 3

    # When the three invited are sent (as the sender records it)
    from smsinvite.lifecycle import complete_if_done

    invited = [store.recipient(campaign_id, body["recipient_id"]) for body in queue.bodies]
    for recipient in invited:
        store.transition(recipient, Status.QUEUED)

    # Then the run waits while their final statuses are on the way
    assert complete_if_done(store, store.campaign(campaign_id)) is None
    assert store.campaign(campaign_id).state == "sending"

    # And when Twilio reports them delivered, the run completes
    for recipient in invited:
        store.transition(store.recipient(campaign_id, recipient.recipient_id), Status.DELIVERED)
    completed = complete_if_done(store, store.campaign(campaign_id))

    # Then the two left out are in a visible final state, and the campaign is completed
    statuses = sorted(r.status for r in store.t.recipients.query(campaign_id))
    assert statuses == ["delivered", "delivered", "delivered", "excluded", "skipped_opted_out"]
    assert completed is not None and completed.state == "completed"


def test_an_import_waits_while_the_campaign_sends_and_fails_once_it_is_closed(store, local_aws, runner, lifecycle):
    campaign_id = approved(store, local_aws, runner, lifecycle, people=many(2))
    waits = []
    waiting_runner = ImportRunner(store, local_aws, continue_later=lambda import_id, delay: waits.append(delay))
    record, _ = waiting_runner.register_list(campaign_id, many(1), "during-send")

    summary = waiting_runner.run(record.import_id, time_left=lambda: 60.0, margin=5.0)
    assert summary.state == "running" and waits == [30]

    lifecycle.cancel(campaign_id)
    closed = waiting_runner.run(record.import_id, time_left=lambda: 60.0, margin=5.0)
    assert closed.state == "failed" and closed.reason.startswith("campaign_closed")


def a_panel(local_aws, runner, body: bytes) -> str:
    """A panel uploaded and imported, as panels/<id>/members.csv would be."""
    import boto3

    from smsinvite.importing import S3Upload

    panel_id = f"club-{uuid.uuid4().hex[:8]}"
    key = f"panels/{panel_id}/members.csv"
    put = boto3.client("s3").put_object(Bucket=local_aws.imports_bucket, Key=key, Body=body)
    upload = S3Upload(local_aws.imports_bucket, key, put.get("VersionId"), put["ETag"].strip('"'), len(body))
    record, _ = runner.register_upload(upload)
    runner.run(record.import_id, time_left=lambda: 60.0, margin=5.0)
    return panel_id


def test_a_panel_in_the_audience_is_imported_at_prepare_and_its_rules_choose_who_is_invited(store, local_aws, runner):
    from smsinvite.campaigns import Audience, PanelSource, Rule

    # Given a panel of three members with a tier attribute
    panel_id = a_panel(
        local_aws, runner, b"phone,first_name,tier\n+1 415 555 0300,Ada,gold\n+1 415 555 0301,Bo,bronze\n+1 415 555 0302,Cy,gold\n"
    )

    # And a campaign whose audience is that panel's gold members, besides its own recipients
    audience = Audience(panels=(PanelSource(panel_id, (Rule("tier", "equals", "gold"),)),))
    campaign_id = new_campaign(store, runner, audience=audience.as_json())

    # When it is prepared
    preview = prepare(store, local_aws, runner, campaign_id).preview

    # Then the panel's members joined the audience, and only its gold members are invited
    panel = preview["sources"][f"panel {panel_id}"]
    assert panel == {"rows": 3, "imported": 3, "eligible": 2, "not_matching_rules": 1}
    assert preview["audience"]["eligible"] == 2 + 3  # and the campaign's own three who have a name


def test_prepare_waits_for_a_large_audience_panel_and_goes_on_when_called_again(store, local_aws, runner):
    from smsinvite.campaigns import Audience, PanelSource

    # Given an audience panel of 150, whose import takes more than the invocation has left
    members = "".join(f"+1 415 555 {1500 + i},M{i}\n" for i in range(150))
    panel_id = a_panel(local_aws, runner, f"phone,first_name\n{members}".encode())
    campaign_id = new_campaign(store, runner, people=[], audience=Audience(panels=(PanelSource(panel_id),)).as_json())

    # When prepare is called with no time to spare, it imports a first chunk and says what it waits for
    waiting = prepare(store, local_aws, runner, campaign_id, time_left=lambda: 0.0)
    assert waiting.state == "draft"
    assert waiting.waiting_for == (f"the import of panel {panel_id} (100 rows so far)",)

    # Then called again, it finishes the same import (not a second one) and prepares everyone
    done = prepare(store, local_aws, runner, campaign_id)
    assert done.state == "prepared"
    assert done.preview["audience"]["eligible"] == 150
    assert done.preview["sources"][f"panel {panel_id}"]["rows"] == 150


def dispatch_requests_for(local_aws, campaign_id):
    import boto3

    sqs, found = boto3.client("sqs"), []
    for _ in range(5):
        messages = sqs.receive_message(QueueUrl=local_aws.dispatch_queue_url, MaxNumberOfMessages=10).get("Messages", [])
        for message in messages:
            body = json.loads(message["Body"])
            if body["campaign_id"] == campaign_id:
                found.append(body)
                sqs.delete_message(QueueUrl=local_aws.dispatch_queue_url, ReceiptHandle=message["ReceiptHandle"])
        if not messages:
            break
    return found


def test_the_watchdog_resends_a_lost_dispatch_and_completes_a_run_whose_last_message_was_missed(
    store, local_aws, runner, lifecycle
):
    from datetime import timedelta

    from smsinvite.scheduling import DueCampaigns
    from smsinvite.store import utcnow

    # Given an approved campaign whose dispatch request was lost after its first page
    campaign_id = approved(store, local_aws, runner, lifecycle, people=many(4))
    assert dispatch_requests_for(local_aws, campaign_id) == [{"campaign_id": campaign_id, "run": 1, "cursor": None}]
    queue = RecordingQueue()
    first = Dispatcher(store, queue, page_size=2).dispatch_page(DispatchRequest(campaign_id=campaign_id, run=1))
    due = DueCampaigns(store, lifecycle, Preparer(store, local_aws, runner))
    later = utcnow() + timedelta(minutes=6)

    # When the scheduler ticks after the watchdog's interval, the dispatch is asked for again from its cursor
    assert due.run(later, time_left=lambda: 60.0, margin=5.0)["watched"] >= 1  # and the other tests' campaigns
    assert dispatch_requests_for(local_aws, campaign_id) == [{"campaign_id": campaign_id, "run": 1, "cursor": first.next_cursor}]

    # When the dispatch ends and everyone is sent, but no sender saw the end
    page = Dispatcher(store, queue, page_size=2).dispatch_page(
        DispatchRequest(campaign_id=campaign_id, run=1, cursor=first.next_cursor)
    )
    while page.more:
        page = Dispatcher(store, queue, page_size=2).dispatch_page(
            DispatchRequest(campaign_id=campaign_id, run=1, cursor=page.next_cursor)
        )
    for body in queue.bodies:
        store.transition(store.recipient(campaign_id, body["recipient_id"]), Status.DELIVERED)
    due.run(utcnow() + timedelta(minutes=12), time_left=lambda: 60.0, margin=5.0)

    # Then the watchdog completed the run
    campaign = store.campaign(campaign_id)
    assert campaign.state == "completed" and campaign.due_at is None
