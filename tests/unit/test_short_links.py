"""The short link hands the code to the survey under a query parameter, replacing any already there."""

import pytest

from smsinvite.errors import ConfigurationError
from smsinvite.settings import Settings
from smsinvite.short_links import with_code


def test_the_code_is_appended_and_replaces_a_stale_one():
    assert with_code("https://s.example/x?lang=en&code=OLD", "K7QM") == "https://s.example/x?lang=en&code=K7QM"


def test_the_parameter_is_configurable(environment):
    settings = Settings.from_env({**environment, "CODE_QUERY_PARAMETER": "token"})
    assert with_code("https://s.example/x", "K7QM", settings.code_query_parameter) == "https://s.example/x?token=K7QM"


def test_a_parameter_that_is_no_name_is_refused(environment):
    with pytest.raises(ConfigurationError):
        Settings.from_env({**environment, "CODE_QUERY_PARAMETER": "a b&c"})
