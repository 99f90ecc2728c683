"""Commands are validated whole before anything changes, and every problem is named."""

import pytest

from smsinvite.commands import COMMANDS, parse_command
from smsinvite.errors import InvalidInput


@pytest.mark.parametrize(
    "sample",
    ["command-create-campaign.json", "command-status.json", "command-add-recipients.json", "command-add-panel.json"],
)
def test_every_console_sample_is_a_valid_command(event, sample):
    command = parse_command(event(sample))
    assert command.command in COMMANDS


def test_a_bad_create_campaign_lists_every_problem_at_once(event):
    bad = {**event("command-create-campaign.json"), "campaign_id": "has spaces", "survey_url": "nope",
           "sender": "12345", "colour": "blue"}
    with pytest.raises(InvalidInput) as refused:
        parse_command(bad)
    problems = " ".join(refused.value.details)
    for field in ("campaign_id", "survey_url", "sender", "colour"):
        assert field in problems


@pytest.mark.parametrize("event_body", [None, [], {"name": "x"}, {"command": 3}])
def test_something_that_is_not_a_command_is_refused_plainly(event_body):
    with pytest.raises(InvalidInput) as refused:
        parse_command(event_body)
    assert "known commands" in refused.value.details[0]


def test_an_unknown_command_names_the_known_ones():
    with pytest.raises(InvalidInput) as refused:
        parse_command({"command": "launch_rockets"})
    assert "create_campaign" in refused.value.details[0]
