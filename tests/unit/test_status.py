"""A message's status only moves forward."""

import pytest

from smsinvite.status import Status, from_twilio, moves_forward


def test_callbacks_in_twilios_order_each_move_the_status_forward():
    path = [Status.CLAIMED, Status.QUEUED, Status.SENDING, Status.SENT, Status.DELIVERED]
    for earlier, later in zip(path, path[1:]):
        assert moves_forward(earlier, later)


@pytest.mark.parametrize("terminal", [Status.DELIVERED, Status.UNDELIVERED, Status.FAILED])
def test_a_terminal_status_stays_terminal(terminal):
    for other in Status:
        assert not moves_forward(terminal, other)


def test_a_late_sent_callback_does_not_undo_delivered():
    assert not moves_forward(Status.DELIVERED, from_twilio("sent"))


def test_a_duplicate_callback_is_not_a_transition():
    assert not moves_forward(Status.SENT, Status.SENT)


def test_unknown_outcome_is_resolved_forward_by_any_twilio_status():
    assert all(moves_forward(Status.UNKNOWN, from_twilio(s)) for s in ("queued", "sent", "delivered", "failed"))


def test_twilio_statuses_map_case_insensitively_and_unknown_ones_are_refused():
    assert from_twilio(" Delivered ") is Status.DELIVERED
    assert from_twilio("accepted") is Status.QUEUED
    with pytest.raises(ValueError):
        from_twilio("teleported")
