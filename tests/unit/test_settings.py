"""Settings are read from the environment and every problem is named at once."""

import pytest

from smsinvite.errors import ConfigurationError
from smsinvite.settings import Settings

VALID = {
    "CAMPAIGNS_TABLE": "c", "RECIPIENTS_TABLE": "r", "IMPORTS_TABLE": "i", "CODES_TABLE": "k",
    "SUPPRESSIONS_TABLE": "s", "INBOX_TABLE": "in", "IDEMPOTENCY_TABLE": "id", "PANELS_TABLE": "p", "IMPORTS_BUCKET": "b",
    "SEND_QUEUE_URL": "q1", "DISPATCH_QUEUE_URL": "q2", "IMPORT_QUEUE_URL": "q3", "TWILIO_ACCOUNT_SID": "AC" + "a" * 32,
    "TWILIO_AUTH_TOKEN_SECRET": "smsinvite/twilio-auth-token", "PUBLIC_WEBHOOK_BASE_URL": "https://hooks.example.com/",
}


def test_a_complete_environment_gives_settings():
    settings = Settings.from_env(VALID)
    assert settings.public_webhook_base_url == "https://hooks.example.com"
    assert settings.sender_ceiling_per_second == 10


def test_every_problem_is_reported_together():
    broken = {**VALID, "CAMPAIGNS_TABLE": "", "TWILIO_ACCOUNT_SID": "nope", "SENDER_CEILING_PER_SECOND": "fast"}
    with pytest.raises(ConfigurationError) as error:
        Settings.from_env(broken)
    message = error.value.message
    assert "CAMPAIGNS_TABLE is not set" in message
    assert "TWILIO_ACCOUNT_SID" in message
    assert "SENDER_CEILING_PER_SECOND must be a number" in message


def test_the_webhook_base_url_must_be_https_in_aws():
    with pytest.raises(ConfigurationError):
        Settings.from_env({**VALID, "PUBLIC_WEBHOOK_BASE_URL": "http://hooks.example.com"})


def test_callbacks_are_refused_rather_than_built_on_a_guessed_url():
    settings = Settings.from_env({**VALID, "PUBLIC_WEBHOOK_BASE_URL": ""})
    with pytest.raises(ConfigurationError):
        settings.require_webhook_base_url()
