"""The embedded local stack, started once per end-to-end test module and stopped after it.

Every e2e test is also a log scan: the functions' log lines written since the previous scan (the test's
setup, its body, and anything a previous test left running) must hold no whole phone number, code,
message body or secret (`local.log_scan`). The test fails otherwise; lines written after a module's last
test are scanned when its stack stops.
"""

import uuid

import pytest

from local.log_scan import assert_no_leaks, forbidden_on
from local.stack import LocalStack, StackOptions

_scanned: dict[int, int] = {}  # id(stack) -> the log mark its last scan reached


def assert_logs_hold_nothing_private(stack: LocalStack) -> None:
    logs = stack.router.logs
    start = _scanned.get(id(stack), 0)
    lines, dropped = logs.since(start)
    _scanned[id(stack)] = lines[-1].seq + 1 if lines else start
    assert not dropped, "the functions wrote more log lines than the router keeps; scan more often"
    if lines:
        assert_no_leaks(lines, forbidden_on(stack))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    stack = item.funcargs.get("stack")
    try:
        return (yield)
    finally:
        if stack is not None:
            assert_logs_hold_nothing_private(stack)


@pytest.fixture(scope="module")
def stack():
    with LocalStack(StackOptions(reconcile_grace_seconds=1, reconcile_confirm_seconds=2)) as running:
        yield running
        try:
            running.router.drain(timeout=10)
        except TimeoutError:
            pass  # scan what was written; a poison record may still be cycling
        try:
            assert_logs_hold_nothing_private(running)
        finally:
            _scanned.pop(id(running), None)


@pytest.fixture
def twilio(stack):
    yield stack.twilio
    stack.twilio.callbacks_out_of_order = False
    stack.twilio.duplicate_callbacks = False


@pytest.fixture
def store(stack):
    from smsinvite.settings import Settings
    from smsinvite.store import Store

    return Store(Settings.from_env())


@pytest.fixture
def campaign_id():
    return f"e2e-{uuid.uuid4().hex[:10]}"
