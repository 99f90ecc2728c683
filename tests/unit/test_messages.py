"""Rendering invitations from templates."""

import pytest

from smsinvite.messages import MissingField, render


def test_placeholders_are_filled_from_the_recipients_fields():
    assert render("Hi {first_name}, {link}", {"first_name": "Ana", "link": "https://s.example/x"}) == (
        "Hi Ana, https://s.example/x"
    )


def test_a_missing_field_uses_the_templates_default():
    assert render("Hi {first_name|there}!", {}) == "Hi there!"
    assert render("Hi {first_name|there}!", {"first_name": ""}) == "Hi there!"


def test_a_missing_field_without_default_is_refused_by_name():
    with pytest.raises(MissingField) as missing:
        render("Hi {first_name}", {})
    assert missing.value.name == "first_name"
