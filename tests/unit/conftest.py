"""What unit tests share: a complete function environment, as template.yaml would set it."""

import pytest

ENVIRONMENT = {
    "CAMPAIGNS_TABLE": "c", "COUNTS_TABLE": "n", "RECIPIENTS_TABLE": "r", "IMPORTS_TABLE": "i", "CODES_TABLE": "k",
    "SUPPRESSIONS_TABLE": "s", "INBOX_TABLE": "in", "IDEMPOTENCY_TABLE": "id", "PANELS_TABLE": "p", "THROTTLE_TABLE": "t",
    "CONSENT_TABLE": "cl", "SUBSCRIPTIONS_TABLE": "sb", "LIMITS_TABLE": "l", "PHONE_HASH_KEY_SECRET": "smsinvite/phone-hash-key",
    "CODES_API_KEY_SECRET": "smsinvite/codes-api-key",
    "IMPORTS_BUCKET": "b",
    "SEND_QUEUE_URL": "q1", "DISPATCH_QUEUE_URL": "q2", "IMPORT_QUEUE_URL": "q3", "TWILIO_ACCOUNT_SID": "AC" + "a" * 32,
    "TWILIO_AUTH_TOKEN_SECRET": "smsinvite/twilio-auth-token", "PUBLIC_WEBHOOK_BASE_URL": "https://hooks.example.com/",
}


@pytest.fixture
def environment():
    return dict(ENVIRONMENT)
