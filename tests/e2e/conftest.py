"""The embedded local stack, started once per end-to-end test module and stopped after it."""

import uuid

import pytest

from local.stack import LocalStack, StackOptions


@pytest.fixture(scope="module")
def stack():
    with LocalStack(StackOptions(reconcile_grace_seconds=1, reconcile_confirm_seconds=2)) as running:
        yield running


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
