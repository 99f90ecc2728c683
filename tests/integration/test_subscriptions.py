"""Double opt-in against DynamoDB Local: a pending subscription lapses when nobody says YES in time."""

import uuid
from datetime import datetime, timedelta, timezone

from smsinvite.consent import ConsentEntry, ConsentEvent, ConsentSource
from smsinvite.importing import rows_from_members
from smsinvite.subscriptions import SubscriptionLists

REQUESTED = datetime(2026, 12, 1, 9, 0, tzinfo=timezone.utc)


class RecordingQueue:
    def __init__(self):
        self.sent = []

    def send(self, body, *, delay_seconds=0):
        self.sent.append(body)


def a_list(store, local_aws, clock):
    lists = SubscriptionLists(store, local_aws, RecordingQueue(), clock=clock)
    list_id = f"l-{uuid.uuid4().hex[:8]}"
    lists.create_list(list_id, name="Panel", message_template="Reply YES to join.", window_opens="00:00",
                      window_closes="24:00")
    return lists, list_id


def yes_from(phone, at):
    return ConsentEntry(phone, ConsentEvent.CONFIRMATION, ConsentSource.KEYWORD, at, message_sid="SM1", text="YES")


def test_a_pending_subscription_lapses_after_its_window_and_a_late_yes_does_not_activate_it(store, local_aws):
    now = [REQUESTED]
    lists, list_id = a_list(store, local_aws, lambda: now[0])
    phone = f"+1415558{uuid.uuid4().int % 9000 + 1000}"

    # Given a subscription requested at 09:00, with 24 hours to confirm
    [outcome] = lists.subscribe(list_id, [{"phone": phone}], caller="test")
    assert outcome.outcome == "pending"
    assert len(lists.send_queue.sent) == 1

    # When the scheduler sweeps just before and just after the window closes
    assert lapsed(lists, REQUESTED + timedelta(hours=23, minutes=59)) == 0
    assert lapsed(lists, REQUESTED + timedelta(hours=24, seconds=1)) == 1

    # Then it lapsed, in the ledger too, and a late YES confirms nothing
    now[0] = REQUESTED + timedelta(hours=25)
    assert lists.confirm(phone, yes_from(phone, now[0])) == []
    subscription = store.t.subscriptions.get(list_id, phone, consistent_read=True)
    assert subscription.state == "lapsed"
    assert [e.event for e in store.consent_of(phone)] == ["opt_in", "lapsed"]


def lapsed(lists, at) -> int:
    """How many the scheduler's lapse sweep at `at` ended (other tests' expired subscriptions aside)."""
    return lists.lapse_due(at, time_left=lambda: 60.0, margin=5.0)["lapsed"]


def test_a_yes_within_the_window_confirms_and_a_second_yes_changes_nothing(store, local_aws):
    now = [REQUESTED]
    lists, list_id = a_list(store, local_aws, lambda: now[0])
    phone = f"+1415559{uuid.uuid4().int % 9000 + 1000}"  # another range than the test above
    lists.subscribe(list_id, [{"phone": phone, "first_name": "Ana"}], caller="test")

    now[0] = REQUESTED + timedelta(hours=3)
    assert lists.confirm(phone, yes_from(phone, now[0])) == [list_id]
    assert lists.confirm(phone, yes_from(phone, now[0])) == []
    assert lapsed(lists, REQUESTED + timedelta(days=2)) == 0
    assert [row.value for row in rows_from_members(store, "list", list_id, None, 0)] == [phone]
    assert [e.event for e in store.consent_of(phone)] == ["opt_in", "confirmation"]
