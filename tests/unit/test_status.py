"""A message's status only moves forward, and every status Twilio can report has a meaning here."""

import pytest
from hypothesis import given, strategies as st
from twilio.rest.api.v2010.account.message import MessageInstance

from smsinvite.status import TWILIO_STATUSES, UNSETTLED, Status, from_twilio, moves_forward


def test_callbacks_in_twilios_order_each_move_the_status_forward():
    path = [Status.CLAIMED, Status.QUEUED, Status.SENDING, Status.SENT, Status.DELIVERED]
    for earlier, later in zip(path, path[1:]):
        assert moves_forward(earlier, later)


@pytest.mark.parametrize("terminal", [s for s in Status if s.is_terminal])
def test_a_terminal_status_stays_terminal(terminal):
    for other in Status:
        assert not moves_forward(terminal, other)


def test_a_late_sent_callback_does_not_undo_delivered():
    assert not moves_forward(Status.DELIVERED, from_twilio("sent"))


def test_a_duplicate_callback_is_not_a_transition():
    assert not moves_forward(Status.SENT, Status.SENT)


def test_unknown_outcome_is_resolved_forward_by_any_twilio_status():
    assert all(moves_forward(Status.UNKNOWN, from_twilio(s)) for s in ("queued", "sent", "delivered", "failed"))


@pytest.mark.parametrize("settled_on_the_way", [Status.UNRESOLVED, Status.AWAITING_FINAL_STATUS])
def test_a_late_callback_still_moves_an_unresolved_or_awaiting_message_to_its_final_status(settled_on_the_way):
    assert settled_on_the_way.is_settled and not settled_on_the_way.is_terminal
    assert moves_forward(settled_on_the_way, Status.DELIVERED)
    assert moves_forward(settled_on_the_way, Status.UNDELIVERED)


def test_every_status_twilio_python_names_has_a_meaning_here():
    # Given every status of the SDK's MessageInstance.Status
    named = {getattr(MessageInstance.Status, name) for name in vars(MessageInstance.Status) if name.isupper()}
    assert len(named) == 13

    # Then each is mapped (to one of ours, or to "says nothing about an outbound message"), with its meaning
    assert named <= set(TWILIO_STATUSES)
    assert all(meaning for _, meaning in TWILIO_STATUSES.values())


def test_partially_delivered_is_final_and_its_own():
    assert from_twilio("partially_delivered") is Status.PARTIALLY_DELIVERED
    assert Status.PARTIALLY_DELIVERED.is_terminal


def test_inbound_statuses_say_nothing_about_an_invitation():
    assert from_twilio("received") is None and from_twilio("receiving") is None


@given(st.text(max_size=40).filter(lambda s: s.strip().lower() not in TWILIO_STATUSES))
def test_a_status_nobody_knows_is_no_status_and_never_raises(unknown):
    assert from_twilio(unknown) is None


def test_twilio_statuses_map_case_insensitively():
    assert from_twilio(" Delivered ") is Status.DELIVERED
    assert from_twilio("accepted") is Status.QUEUED


def test_a_run_waits_for_what_is_unsent_or_on_its_way_and_for_nothing_else():
    assert set(UNSETTLED) == {Status.IMPORTED, Status.CLAIMED, Status.UNKNOWN, Status.QUEUED, Status.SENDING, Status.SENT}
