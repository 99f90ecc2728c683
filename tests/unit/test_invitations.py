"""What a recipient is sent: the footer, the code and the short link are filled in by smsinvite."""

import pytest

from smsinvite.invitations import invitation_text, missing_field
from smsinvite.messages import MissingField
from smsinvite.settings import Settings


@pytest.fixture
def settings(environment):
    return Settings.from_env({**environment, "PUBLIC_WEBHOOK_BASE_URL": "https://go.example.com"})


def test_the_link_is_the_short_link_with_the_code_and_the_footer_is_added(settings):
    text = invitation_text("Hi {first_name|there}, {link}", {"first_name": "Ana"}, "B7KQ2MZP9XRT", settings)
    assert text == "Hi Ana, https://go.example.com/i/B7KQ2MZP9XRT Reply STOP to opt out"


def test_a_recipient_attribute_cannot_replace_the_code_or_the_link(settings):
    text = invitation_text("{code} {link}", {"code": "MINE", "link": "https://evil.example"}, "B7KQ2MZP9XRT", settings)
    assert "MINE" not in text and "evil" not in text


def test_a_field_without_a_default_is_missing_when_empty(settings):
    assert missing_field("Hi {first_name}, {store|our store}", {"first_name": ""}, settings) == "first_name"
    assert missing_field("Hi {first_name|there}", {}, settings) is None
    with pytest.raises(MissingField):
        invitation_text("Hi {first_name}", {}, "B7KQ2MZP9XRT", settings)


def test_a_template_that_already_says_how_to_opt_out_gets_no_footer(settings):
    text = invitation_text("Survey: {link}. Text STOP to unsubscribe", {}, "B7KQ2MZP9XRT", settings)
    assert text.count("STOP") == 1
