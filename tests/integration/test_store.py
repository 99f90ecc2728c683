"""The store's conditional writes, against DynamoDB Local: status forward-only, counters exact, one claim."""

import threading

import pytest

from smsinvite.phones import normalise
from smsinvite.status import Status
from smsinvite.store import recipient_id_for


def add(store, campaign_id, raw="+14155552671"):
    phone = normalise(raw, "US")
    store.add_recipient(campaign_id, phone, {"first_name": "Ana"}, import_id="imp", row_number=1)
    return store.recipient(campaign_id, recipient_id_for(campaign_id, phone.e164))


def counts(store, campaign_id):
    return {status.value: n for status, n in store.counts(campaign_id).items() if n}


def test_the_same_number_twice_in_a_campaign_is_one_recipient(store, campaign_id):
    phone = normalise("+1 415 555 2671", "US")
    first = store.add_recipient(campaign_id, phone, {}, import_id="a", row_number=1)
    again = store.add_recipient(campaign_id, phone, {}, import_id="b", row_number=9)
    assert (first, again) == (True, False)
    assert counts(store, campaign_id) == {"imported": 1}


def test_a_duplicate_callback_changes_the_counters_once(store, campaign_id):
    recipient = add(store, campaign_id)
    claimed = store.transition(recipient, Status.CLAIMED, attempt_id="a1")
    assert store.transition(claimed, Status.DELIVERED, owned_by="a1") is not None
    assert store.transition(claimed, Status.DELIVERED, owned_by="a1") is None
    assert counts(store, campaign_id) == {"delivered": 1}


def test_callbacks_out_of_order_leave_the_final_status(store, campaign_id):
    recipient = add(store, campaign_id)
    claimed = store.transition(recipient, Status.CLAIMED, attempt_id="a1")
    for status in (Status.DELIVERED, Status.SENT, Status.SENDING, Status.QUEUED):
        store.transition(claimed, status, owned_by="a1")
    assert store.recipient(campaign_id, recipient.recipient_id).status == "delivered"
    assert counts(store, campaign_id) == {"delivered": 1}


def test_only_the_attempt_that_claimed_a_recipient_may_move_it(store, campaign_id):
    recipient = add(store, campaign_id)
    claimed = store.transition(recipient, Status.CLAIMED, attempt_id="mine")
    assert store.transition(claimed, Status.SENT, owned_by="someone-else") is None
    assert store.recipient(campaign_id, recipient.recipient_id).status == "claimed"


def test_concurrent_claims_of_one_recipient_admit_exactly_one(store, campaign_id):
    recipient = add(store, campaign_id)
    winners = []
    barrier = threading.Barrier(8)

    def claim(n):
        barrier.wait()
        if store.transition(recipient, Status.CLAIMED, attempt_id=f"attempt-{n}") is not None:
            winners.append(n)

    threads = [threading.Thread(target=claim, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(winners) == 1
    assert counts(store, campaign_id) == {"claimed": 1}


def test_a_released_claim_may_go_back_but_a_sent_message_may_not(store, campaign_id):
    recipient = add(store, campaign_id)
    claimed = store.transition(recipient, Status.CLAIMED, attempt_id="a1")
    released = store.transition(claimed, Status.IMPORTED, owned_by="a1", backward_from=(Status.CLAIMED,))
    assert released.status == "imported"
    sent = store.transition(
        store.transition(released, Status.CLAIMED, attempt_id="a2"), Status.SENT, owned_by="a2"
    )
    assert store.transition(sent, Status.IMPORTED, owned_by="a2", backward_from=(Status.CLAIMED,)) is None


# ------------------------------------------------------------------ status callbacks, as the webhook applies them
def callback(campaign_id, recipient_id, status, attempt="a-1", error_code=None, to="+14155552671"):
    from smsinvite.delivery import StatusReport

    return StatusReport(campaign_id, recipient_id, attempt, "SM" + "1" * 32, status, error_code, to)


def queued_by_the_sender(store, campaign_id, raw="+14155552671"):
    recipient = add(store, campaign_id, raw)
    claimed = store.transition(recipient, Status.CLAIMED, attempt_id="a-1")
    return store.transition(claimed, Status.QUEUED, owned_by="a-1")


def test_concurrent_deliveries_of_one_callback_apply_and_count_once(store, local_aws, campaign_id):
    from smsinvite.delivery import CallbackOutcome, apply_status_report

    # Given a queued message, and Twilio delivering its "delivered" callback five times at once
    recipient = queued_by_the_sender(store, campaign_id)
    report = callback(campaign_id, recipient.recipient_id, Status.DELIVERED)
    outcomes = []
    threads = [threading.Thread(target=lambda: outcomes.append(apply_status_report(store, local_aws, report)))
               for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # Then one applied, and the counters moved once
    assert sorted(o.value for o in outcomes) == ["applied"] + ["ignored"] * 4
    assert counts(store, campaign_id) == {"delivered": 1}
    assert CallbackOutcome.APPLIED in outcomes


def test_a_late_sent_after_delivered_is_ignored_and_a_wrong_guess_still_applies(store, local_aws, campaign_id):
    from smsinvite.delivery import apply_status_report

    # Given a queued message whose "delivered" arrives before its "sending" and "sent"
    recipient = queued_by_the_sender(store, campaign_id)
    for status in (Status.DELIVERED, Status.SENDING, Status.SENT):
        apply_status_report(store, local_aws, callback(campaign_id, recipient.recipient_id, status))

    # Then it ends delivered, counted once
    assert store.recipient(campaign_id, recipient.recipient_id).status == "delivered"
    assert counts(store, campaign_id) == {"delivered": 1}


def test_a_callback_from_another_attempt_or_for_an_unknown_recipient_changes_nothing(store, local_aws, campaign_id):
    from smsinvite.delivery import CallbackOutcome, apply_status_report

    recipient = queued_by_the_sender(store, campaign_id)
    other_attempt = callback(campaign_id, recipient.recipient_id, Status.DELIVERED, attempt="a-2")
    unknown = callback(campaign_id, "f" * 24, Status.DELIVERED)
    assert apply_status_report(store, local_aws, other_attempt) is CallbackOutcome.IGNORED
    assert apply_status_report(store, local_aws, unknown) is CallbackOutcome.IGNORED
    assert counts(store, campaign_id) == {"queued": 1}


def test_a_carrier_error_for_a_dead_number_suppresses_it_as_undeliverable(store, local_aws, campaign_id):
    from smsinvite.delivery import apply_status_report

    recipient = queued_by_the_sender(store, campaign_id, "+14155552699")
    apply_status_report(store, local_aws, callback(campaign_id, recipient.recipient_id, Status.UNDELIVERED,
                                                   error_code=30005, to="+14155552699"))
    assert store.suppression("+14155552699").reason == "undeliverable"
    assert [(e.event, e.source, e.detail) for e in store.consent_of("+14155552699")] == [
        ("undeliverable", "carrier_error", "twilio_30005")]
    assert counts(store, campaign_id) == {"undelivered": 1}


def test_a_transaction_that_lost_to_a_concurrent_one_is_tried_again(store, campaign_id, monkeypatch):
    from pynamodb.exceptions import CancellationReason, TransactWriteError, VerboseClientError
    from pynamodb.transactions import TransactWrite

    # Given DynamoDB cancels the first attempt: another transaction held the counter shard
    recipient = add(store, campaign_id)
    commit, calls = TransactWrite._commit, []

    def conflicted_once(self):
        calls.append(1)
        if len(calls) == 1:
            cause = VerboseClientError(
                {"Error": {"Code": "TransactionCanceledException", "Message": "conflict"}}, "TransactWriteItems",
                cancellation_reasons=[None, CancellationReason(code="TransactionConflict")],
            )
            raise TransactWriteError("Failed to write transaction items", cause=cause)
        return commit(self)

    monkeypatch.setattr(TransactWrite, "_commit", conflicted_once)

    # When the recipient is claimed
    moved = store.transition(recipient, Status.CLAIMED, attempt_id="a-1")

    # Then the second attempt writes it, counted once
    assert moved is not None and len(calls) == 2
    assert counts(store, campaign_id) == {"claimed": 1}


def test_a_carrier_error_callback_retried_after_a_failure_still_suppresses_once(store, local_aws, campaign_id, monkeypatch):
    from smsinvite.delivery import apply_status_report
    from smsinvite.store import Store

    # Given the status write fails the first time the "undelivered 30006" callback arrives
    recipient = queued_by_the_sender(store, campaign_id, "+14155552698")
    report = callback(campaign_id, recipient.recipient_id, Status.UNDELIVERED, error_code=30006, to="+14155552698")
    transition = Store.transition

    def failing(self, *args, **kwargs):
        raise RuntimeError("DynamoDB went away")

    monkeypatch.setattr(Store, "transition", failing)
    with pytest.raises(RuntimeError):
        apply_status_report(store, local_aws, report)
    monkeypatch.setattr(Store, "transition", transition)

    # When Twilio retries it, and then delivers it once more
    apply_status_report(store, local_aws, report)
    apply_status_report(store, local_aws, report)

    # Then the number is suppressed, the ledger says so once, and the status moved once
    assert store.suppression("+14155552698").reason == "undeliverable"
    assert len(store.consent_of("+14155552698")) == 1
    assert counts(store, campaign_id) == {"undelivered": 1}
