"""Settings are read from the environment and every problem is named at once."""

import pytest

from smsinvite.errors import ConfigurationError
from smsinvite.settings import Settings

def test_a_complete_environment_gives_settings(environment):
    settings = Settings.from_env(environment)
    assert settings.public_webhook_base_url == "https://hooks.example.com"
    assert settings.sender_ceiling_per_second == 10

def test_every_problem_is_reported_together(environment):
    broken = {**environment, "CAMPAIGNS_TABLE": "", "TWILIO_ACCOUNT_SID": "nope", "SENDER_CEILING_PER_SECOND": "fast"}
    with pytest.raises(ConfigurationError) as error:
        Settings.from_env(broken)
    message = error.value.message
    assert "CAMPAIGNS_TABLE is not set" in message
    assert "TWILIO_ACCOUNT_SID" in message
    assert "SENDER_CEILING_PER_SECOND must be a number" in message

def test_the_webhook_base_url_must_be_https_in_aws(environment):
    with pytest.raises(ConfigurationError):
        Settings.from_env({**environment, "PUBLIC_WEBHOOK_BASE_URL": "http://hooks.example.com"})

def test_callbacks_are_refused_rather_than_built_on_a_guessed_url(environment):
    settings = Settings.from_env({**environment, "PUBLIC_WEBHOOK_BASE_URL": ""})
    with pytest.raises(ConfigurationError):
        settings.require_webhook_base_url()


def test_segment_prices_come_from_the_environment_with_a_price_for_every_other_country(environment):
    settings = Settings.from_env({**environment, "PRICE_PER_SEGMENT": '{"US": 0.01, "*": 0.05}'})
    assert settings.price_per_segment("US") == 0.01
    assert settings.price_per_segment("BR") == 0.05
    assert settings.price_per_segment(None) == 0.05


@pytest.mark.parametrize(
    "prices", ['{"US": 0.01}', "cheap", '{"usa": 0.01, "*": 1}', '{"US": -1, "*": 1}', '{"US": true, "*": 1}']
)
def test_bad_segment_prices_are_a_configuration_error(environment, prices):
    with pytest.raises(ConfigurationError) as error:
        Settings.from_env({**environment, "PRICE_PER_SEGMENT": prices})
    assert "PRICE_PER_SEGMENT" in error.value.message


def test_consent_settings_have_safe_defaults(environment):
    settings = Settings.from_env(environment)
    assert settings.undeliverable_error_codes == frozenset({30005, 30006, 21211, 21614})
    assert settings.twilio_answers_keywords is True
    assert settings.keyword_policy().local_opt_out == ("ARRET", "STOPP", "AFMELDEN")
    assert settings.subscription_confirm_hours == 24
    assert {"US", "GB"} <= settings.allowed_countries


def test_consent_settings_are_read_and_every_problem_named(environment):
    broken = {
        **environment,
        "UNDELIVERABLE_ERROR_CODES": "30005,dead",
        "ALLOWED_COUNTRIES": "US,Mars",
        "POLITE_OPT_OUT": "sometimes",
        "TWILIO_ANSWERS_KEYWORDS": "maybe",
        "PHONE_HASH_KEY_SECRET": "",
    }
    with pytest.raises(ConfigurationError) as error:
        Settings.from_env(broken)
    message = error.value.message
    for named in ("UNDELIVERABLE_ERROR_CODES", "ALLOWED_COUNTRIES", "sometimes", "TWILIO_ANSWERS_KEYWORDS",
                  "PHONE_HASH_KEY_SECRET is not set"):
        assert named in message


def test_configured_codes_countries_and_words_replace_the_defaults(environment):
    settings = Settings.from_env({
        **environment, "UNDELIVERABLE_ERROR_CODES": "30003 30005", "ALLOWED_COUNTRIES": "us, ca",
        "OPT_OUT_KEYWORDS": "BASTA", "TWILIO_ANSWERS_KEYWORDS": "false",
    })
    assert settings.undeliverable_error_codes == frozenset({30003, 30005})
    assert settings.allowed_countries == frozenset({"US", "CA"})
    assert settings.keyword_policy().local_opt_out == ("BASTA",)
    assert settings.twilio_answers_keywords is False
