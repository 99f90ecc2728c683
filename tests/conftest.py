"""Shared test helpers: one way to load JSON events, from events/ (console samples) or tests/events/."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
EVENT_DIRS = (REPO_ROOT / "events", REPO_ROOT / "tests" / "events")


def load_event(name: str) -> dict:
    for directory in EVENT_DIRS:
        path = directory / name
        if path.exists():
            return json.loads(path.read_text(encoding="utf-8"))
    raise FileNotFoundError(f"no event {name} under events/ or tests/events/")


def _suppress(store, phone: str, reason: str = "opted_out") -> None:
    from smsinvite.consent import ConsentEntry, ConsentEvent, ConsentSource, SuppressionReason
    from smsinvite.store import utcnow

    entry = ConsentEntry(phone, ConsentEvent.OPT_OUT, ConsentSource.KEYWORD, utcnow())
    store.suppress(entry, SuppressionReason(reason))


@pytest.fixture
def suppress():
    """Put a number on the suppression list, as a STOP reply (or a blocklist) does: suppress(store, phone)."""
    return _suppress


@pytest.fixture
def event():
    return load_event


@pytest.fixture(scope="module")
def local_aws():
    """DynamoDB Local and moto on 127.0.0.1 with every resource of template.yaml, for integration tests.

    Yields the Settings the functions would read. Each test uses its own campaign ids.
    """
    import os

    from local.resources import create_resources
    from local.services import start_services
    from local.template import LOCAL_REGION, LocalStackTemplate
    from smsinvite.settings import Settings

    services = start_services()
    template = LocalStackTemplate(
        {"TwilioAccountSid": "AC" + "1" * 32, "PublicWebhookBaseUrl": "https://hooks.example.com"},
        sqs_endpoint=services.aws_endpoint,
    )
    saved = dict(os.environ)
    os.environ.update(
        {
            "AWS_ENDPOINT_URL": services.aws_endpoint,
            "AWS_ENDPOINT_URL_DYNAMODB": services.dynamodb_endpoint,
            "AWS_DEFAULT_REGION": LOCAL_REGION,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
        }
    )
    try:
        create_resources(
            template,
            aws_endpoint=services.aws_endpoint,
            dynamodb_endpoint=services.dynamodb_endpoint,
            twilio_auth_token="integration-token",
        )
        environment = template.functions()[0].environment
        yield Settings.from_env({**os.environ, **environment})
    finally:
        services.stop()
        os.environ.clear()
        os.environ.update(saved)
