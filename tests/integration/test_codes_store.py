"""Invitation codes against DynamoDB Local: unique system-wide, stable per recipient, pool codes taken once."""

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest

from smsinvite import codes as codes_module
from smsinvite.batches import DynamoBatches
from smsinvite.codes import CodeIssuer, CodeSettings, NoFreeCode, PoolExhausted
from smsinvite.errors import NotFound
from smsinvite.store import utcnow
from smsinvite.tables import raw_item


def add_recipients(store, campaign_id, n):
    ids = [f"r{i:05d}" for i in range(n)]
    recipients = store.t.recipients
    items = [
        raw_item(recipients, campaign_id=campaign_id, recipient_id=r, phone=f"+1415555{i:04d}", status="imported")
        for i, r in enumerate(ids)
    ]
    DynamoBatches().put(recipients, items)
    return ids


def fill_pool(store, campaign_id, n):
    pool = [f"P{uuid.uuid4().hex[:12].upper()}" for _ in range(n)]
    items = [
        raw_item(store.t.codes, code=code, campaign_id=campaign_id, pool_campaign_id=campaign_id)
        for code in pool
    ]
    DynamoBatches().put(store.t.codes, items)
    return pool


def stored_codes(store, campaign_id):
    return {record.code: record for record in store.t.codes.scan(store.t.codes.campaign_id == campaign_id)}


def run_together(n, work):
    barrier = threading.Barrier(n)

    def start(i):
        barrier.wait()
        try:
            return work(i)
        except Exception as error:  # noqa: BLE001 - the test inspects what each worker raised
            return error

    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(start, range(n)))


def sequence(*codes):
    remaining = iter(codes)
    return lambda: next(remaining)


# ------------------------------------------------------------------ generated codes: unique


def test_a_code_taken_anywhere_in_the_system_is_never_issued_again(store, campaign_id):
    other = f"c{uuid.uuid4().hex[:10]}"
    (elsewhere,) = add_recipients(store, other, 1)
    taken = CodeIssuer(store).issue(other, elsewhere)
    (recipient,) = add_recipients(store, campaign_id, 1)

    code = CodeIssuer(store, generate=sequence(taken, "FRESHCODE234")).issue(campaign_id, recipient)

    assert code == "FRESHCODE234"
    assert store.t.codes.get(taken).campaign_id == other
    assert store.recipient(campaign_id, recipient).code == "FRESHCODE234"


def test_a_generator_that_only_repeats_taken_codes_gets_a_clear_error_after_bounded_attempts(store, campaign_id):
    first, second = add_recipients(store, campaign_id, 2)
    taken = CodeIssuer(store).issue(campaign_id, first)
    calls = []

    def stuck():
        calls.append(1)
        return taken

    with pytest.raises(NoFreeCode):
        CodeIssuer(store, generate=stuck, max_attempts=5).issue(campaign_id, second)
    assert len(calls) == 5
    assert store.recipient(campaign_id, second).code is None


def test_twenty_threads_issuing_fifty_codes_each_store_a_thousand_distinct_codes(store, campaign_id):
    recipients = add_recipients(store, campaign_id, 1000)
    issuer = CodeIssuer(store)

    issued = run_together(20, lambda t: [issuer.issue(campaign_id, r) for r in recipients[t * 50 : (t + 1) * 50]])

    codes = [code for batch in issued for code in batch]
    assert len(set(codes)) == 1000
    stored = stored_codes(store, campaign_id)
    assert set(stored) == set(codes)
    assert {record.recipient_id: code for code, record in stored.items()} == dict(zip(recipients, codes))


def test_threads_offered_the_same_codes_at_once_each_end_with_a_distinct_code(store, campaign_id):
    recipients = add_recipients(store, campaign_id, 200)
    offers = iter(code for n in range(10_000) for code in (f"DUP{n:06d}X",) * 3)
    lock = threading.Lock()

    def contended():
        with lock:
            return next(offers)

    issuer = CodeIssuer(store, generate=contended, max_attempts=50)
    issued = run_together(10, lambda t: [issuer.issue(campaign_id, r) for r in recipients[t * 20 : (t + 1) * 20]])

    codes = [code for batch in issued for code in batch]
    assert len(set(codes)) == 200
    assert {r.recipient_id for r in stored_codes(store, campaign_id).values()} == set(recipients)


def test_an_unknown_recipient_gets_no_code_and_leaves_none_behind(store, campaign_id):
    with pytest.raises(NotFound):
        CodeIssuer(store, generate=sequence("NOBODYCODE23")).issue(campaign_id, "r-missing")
    assert stored_codes(store, campaign_id) == {}


# ------------------------------------------------------------------ stable


def test_issuing_again_for_a_recipient_returns_the_code_it_already_has(store, campaign_id):
    (recipient,) = add_recipients(store, campaign_id, 1)
    issuer = CodeIssuer(store)
    assert issuer.issue(campaign_id, recipient) == issuer.issue(campaign_id, recipient)
    assert len(stored_codes(store, campaign_id)) == 1


def test_concurrent_issues_for_one_recipient_agree_on_one_code(store, campaign_id):
    (recipient,) = add_recipients(store, campaign_id, 1)
    issuer = CodeIssuer(store)

    results = run_together(8, lambda _: issuer.issue(campaign_id, recipient))

    assert len(set(results)) == 1
    assert list(stored_codes(store, campaign_id)) == results[:1]


class _ResponseLost(Exception):
    pass


def test_a_crash_after_the_write_is_healed_by_issuing_again_without_a_second_code(store, campaign_id, monkeypatch):
    (recipient,) = add_recipients(store, campaign_id, 1)

    class CommitThenCrash(codes_module.TransactWrite):
        def _commit(self):
            super()._commit()
            raise _ResponseLost("the Lambda died before it heard back")

    monkeypatch.setattr(codes_module, "TransactWrite", CommitThenCrash)
    with pytest.raises(_ResponseLost):
        CodeIssuer(store, generate=sequence("CRASHCODE234")).issue(campaign_id, recipient)
    monkeypatch.undo()

    again = CodeIssuer(store).issue(campaign_id, recipient)

    assert again == "CRASHCODE234"
    assert list(stored_codes(store, campaign_id)) == ["CRASHCODE234"]


def test_a_crash_before_the_write_leaves_no_orphan_code(store, campaign_id, monkeypatch):
    (recipient,) = add_recipients(store, campaign_id, 1)

    class CrashBeforeCommit(codes_module.TransactWrite):
        def _commit(self):
            raise _ResponseLost("the Lambda died mid-request")

    monkeypatch.setattr(codes_module, "TransactWrite", CrashBeforeCommit)
    with pytest.raises(_ResponseLost):
        CodeIssuer(store, generate=sequence("LOSTCODE2345")).issue(campaign_id, recipient)
    monkeypatch.undo()

    code = CodeIssuer(store).issue(campaign_id, recipient)

    assert list(stored_codes(store, campaign_id)) == [code]


def test_assigning_many_keeps_existing_codes_and_recovers_a_group_cancelled_by_a_collision(store, campaign_id):
    recipients = add_recipients(store, campaign_id, 30)
    issuer = CodeIssuer(store, group_size=10)
    kept = {r: issuer.issue(campaign_id, r) for r in recipients[:5]}
    taken = kept[recipients[0]]
    fresh = iter(CodeSettings().generate() for _ in range(100))
    offers = iter([taken, *fresh])  # the first group collides with a code already issued

    codes = CodeIssuer(store, generate=lambda: next(offers), group_size=10).assign_many(campaign_id, recipients)

    assert {r: codes[r] for r in kept} == kept
    assert set(codes) == set(recipients) and len(set(codes.values())) == 30
    assert codes == CodeIssuer(store).assign_many(campaign_id, recipients)  # re-prepare: the same codes
    assert len(stored_codes(store, campaign_id)) == 30


# ------------------------------------------------------------------ tokens pool


def test_concurrent_takers_share_a_pool_of_ten_and_the_five_extra_get_pool_exhausted(store, campaign_id):
    pool = fill_pool(store, campaign_id, 10)
    recipients = add_recipients(store, campaign_id, 15)
    issuer = CodeIssuer(store, CodeSettings(source="tokens"))

    results = run_together(15, lambda i: issuer.take_from_pool(campaign_id, recipients[i]))

    taken = [r for r in results if isinstance(r, str)]
    refused = [r for r in results if not isinstance(r, str)]
    assert sorted(taken) == sorted(pool)
    assert len(refused) == 5 and all(isinstance(e, PoolExhausted) and e.missing == 1 for e in refused)
    assert issuer.pool_size(campaign_id) == 0
    owners = {code: record.recipient_id for code, record in stored_codes(store, campaign_id).items()}
    assert {owners[c] for c in taken} == {recipients[i] for i, r in enumerate(results) if isinstance(r, str)}


def test_a_taken_pool_code_belongs_to_its_recipient_and_leaves_the_pool(store, campaign_id):
    fill_pool(store, campaign_id, 3)
    (recipient,) = add_recipients(store, campaign_id, 1)
    issuer = CodeIssuer(store, CodeSettings(source="tokens"))

    code = issuer.take_from_pool(campaign_id, recipient)

    record = store.t.codes.get(code)
    assert (record.recipient_id, record.pool_campaign_id) == (recipient, None)
    assert issuer.take_from_pool(campaign_id, recipient) == code
    assert issuer.pool_size(campaign_id) == 2


def test_another_campaigns_pool_is_never_drawn_from(store, campaign_id):
    fill_pool(store, f"c{uuid.uuid4().hex[:10]}", 3)
    (recipient,) = add_recipients(store, campaign_id, 1)
    with pytest.raises(PoolExhausted):
        CodeIssuer(store).take_from_pool(campaign_id, recipient)


def test_a_pool_too_small_fails_with_the_missing_count_before_assigning_any(store, campaign_id):
    fill_pool(store, campaign_id, 5)
    recipients = add_recipients(store, campaign_id, 8)
    issuer = CodeIssuer(store, CodeSettings(source="tokens"))

    assert issuer.missing_codes(campaign_id, 8) == 3
    with pytest.raises(PoolExhausted) as refused:
        issuer.assign_many(campaign_id, recipients)

    assert refused.value.missing == 3 and "3 more codes" in refused.value.message
    assert issuer.pool_size(campaign_id) == 5
    assert all(store.recipient(campaign_id, r).code is None for r in recipients)


def test_assigning_from_the_pool_in_groups_is_stable_on_re_prepare(store, campaign_id):
    pool = fill_pool(store, campaign_id, 40)
    recipients = add_recipients(store, campaign_id, 30)
    issuer = CodeIssuer(store, CodeSettings(source="tokens"), group_size=7)

    first = issuer.assign_many(campaign_id, recipients[:20])
    second = issuer.assign_many(campaign_id, recipients)

    assert {r: second[r] for r in first} == first
    assert len(set(second.values())) == 30 and set(second.values()) <= set(pool)
    assert issuer.pool_size(campaign_id) == 10
    assert issuer.missing_codes(campaign_id, 10) == 0 and issuer.missing_codes(campaign_id, 11) == 1


# ------------------------------------------------------------------ expiry


def test_generated_codes_expire_and_are_purged_after_the_grace_period(store, campaign_id):
    (recipient,) = add_recipients(store, campaign_id, 1)
    settings = CodeSettings(expires_after=timedelta(days=14), purge_after=timedelta(days=30))
    before = utcnow()

    record = store.t.codes.get(CodeIssuer(store, settings).issue(campaign_id, recipient))

    assert before + timedelta(days=14) <= record.expires_at <= utcnow() + timedelta(days=14)
    assert record.purge_at == int((record.expires_at + timedelta(days=30)).timestamp())
    assert codes_module.is_usable(record, utcnow())
    assert not codes_module.is_usable(record, record.expires_at)


def test_pool_codes_get_the_expiry_when_taken(store, campaign_id):
    fill_pool(store, campaign_id, 1)
    (recipient,) = add_recipients(store, campaign_id, 1)
    expires_at = utcnow().replace(microsecond=0) + timedelta(days=3)

    code = CodeIssuer(store).take_from_pool(campaign_id, recipient, expires_at=expires_at)

    record = store.t.codes.get(code)
    assert record.expires_at == expires_at
    assert record.purge_at == int((expires_at + codes_module.DEFAULT_PURGE_AFTER).timestamp())


def test_codes_without_expiry_are_kept(store, campaign_id):
    (recipient,) = add_recipients(store, campaign_id, 1)
    record = store.t.codes.get(CodeIssuer(store).issue(campaign_id, recipient))
    assert record.expires_at is None and record.purge_at is None


def test_concurrent_takes_for_one_recipient_use_one_pool_code(store, campaign_id):
    fill_pool(store, campaign_id, 5)
    (recipient,) = add_recipients(store, campaign_id, 1)
    issuer = CodeIssuer(store, CodeSettings(source="tokens"))

    results = run_together(6, lambda _: issuer.take_from_pool(campaign_id, recipient))

    assert len(set(results)) == 1 and isinstance(results[0], str)
    assert issuer.pool_size(campaign_id) == 4


def test_a_pool_group_cancelled_by_a_code_taken_meanwhile_is_redone_one_by_one(store, campaign_id, monkeypatch):
    fill_pool(store, campaign_id, 12)
    recipients = add_recipients(store, campaign_id, 10)
    codes = store.t.codes
    stolen = []
    take = codes_module._PoolCandidates.take

    def take_then_lose_one(self, n):
        candidates = take(self, n)
        if not stolen:  # another taker wins the first candidate after the index was read
            stolen.append(candidates[0])
            codes(candidates[0]).update(
                actions=[codes.recipient_id.set("someone-else"), codes.pool_campaign_id.remove()]
            )
        return candidates

    monkeypatch.setattr(codes_module._PoolCandidates, "take", take_then_lose_one)
    assigned = CodeIssuer(store, CodeSettings(source="tokens"), group_size=5).assign_many(campaign_id, recipients)

    assert set(assigned) == set(recipients) and len(set(assigned.values())) == 10
    assert stolen[0] not in assigned.values()
    assert CodeIssuer(store).pool_size(campaign_id) == 1


@pytest.mark.parametrize("reason", ["TransactionConflict", "ThrottlingError"])
def test_a_transaction_cancelled_by_contention_is_retried_after_a_pause(store, campaign_id, monkeypatch, reason):
    from botocore.exceptions import ClientError

    (recipient,) = add_recipients(store, campaign_id, 1)
    client = store._connection().client
    real_call = client._make_api_call
    refused = []

    def cancel_first_transaction(operation, params):
        if operation == "TransactWriteItems" and not refused:
            refused.append(operation)
            raise ClientError(
                {
                    "Error": {"Code": "TransactionCanceledException", "Message": "Transaction cancelled"},
                    "CancellationReasons": [{"Code": "None"}, {"Code": reason, "Message": "busy"}],
                },
                operation,
            )
        return real_call(operation, params)

    monkeypatch.setattr(client, "_make_api_call", cancel_first_transaction)
    pauses = []

    code = CodeIssuer(store, sleep=pauses.append).issue(campaign_id, recipient)

    assert refused and len(pauses) == 1
    assert store.recipient(campaign_id, recipient).code == code
    assert list(stored_codes(store, campaign_id)) == [code]
