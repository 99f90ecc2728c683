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
