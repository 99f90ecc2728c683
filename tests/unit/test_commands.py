"""Commands are validated whole before anything changes, and every problem is named."""

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from smsinvite.commands import COMMANDS, CommandContext, create_campaign, parse_command
from smsinvite.errors import InvalidInput
from smsinvite.settings import Settings

EVENTS = Path(__file__).resolve().parents[2] / "events"
COMMAND_SAMPLES = sorted(path.name for path in EVENTS.glob("command-*.json"))


class PanelsOnly:
    """A store that knows one panel and fails the test if anything is written."""

    def panel_exists(self, panel_id):
        return panel_id == "loyalty-club"

    def __getattr__(self, name):
        raise AssertionError(f"a refused command touched the store ({name})")


def context(environment):
    settings = Settings.from_env({**environment, "SENDER_CEILING_PER_SECOND": "10"})
    return CommandContext(PanelsOnly(), settings, runner=None, time_left=lambda: 30.0)


def test_every_command_has_a_console_sample():
    named = {name.removeprefix("command-").removesuffix(".json").replace("-", "_") for name in COMMAND_SAMPLES}
    assert set(COMMANDS) <= named


@pytest.mark.parametrize("sample", COMMAND_SAMPLES)
def test_every_console_sample_is_a_valid_command(event, sample):
    command = parse_command(event(sample))
    assert command.command in COMMANDS


def test_a_bad_create_campaign_lists_every_problem_at_once(event):
    bad = {
        **event("command-create-campaign.json"),
        "campaign_id": "has spaces",
        "survey_url": "nope",
        "sender": "12345",
        "colour": "blue",
        "message_template": "Hi {First Name}, {link",
        "quiet_hours": {"opens": "25:00", "closes": "20:00"},
        "codes": {"length": 6},
        "recurrence": {"every": "fortnightly"},
        "audience": {"rules": [{"field": "tier", "op": "in", "value": "gold"}]},
    }
    with pytest.raises(InvalidInput) as refused:
        parse_command(bad)
    problems = " | ".join(refused.value.details)
    for field in ("campaign_id", "survey_url", "sender", "colour", "message_template", "quiet_hours.opens",
                  "codes", "recurrence.every", "audience.rules.0"):
        assert field in problems, field
    assert "did you mean {first_name}" in problems
    assert "at least 40 bits" in problems
    assert "needs a list" in problems


def test_quiet_hours_must_open_and_close_at_different_times(event):
    with pytest.raises(InvalidInput) as refused:
        parse_command({**event("command-create-campaign.json"), "quiet_hours": {"opens": "09:00", "closes": "09:00"}})
    assert "opens and closes must differ" in refused.value.details[0]


def test_an_update_that_changes_nothing_is_refused():
    with pytest.raises(InvalidInput) as refused:
        parse_command({"command": "update_campaign", "campaign_id": "spring-nps"})
    assert "at least one field" in refused.value.details[0]


def test_a_rate_over_the_sender_ceiling_a_past_start_and_an_unknown_panel_are_refused_before_any_write(event, environment):
    sample = event("command-create-campaign.json")
    command = parse_command(
        {
            **sample,
            "rate_per_second": 50,
            "start_at": (datetime.now(timezone.utc) - timedelta(hours=1)).isoformat(),
            "audience": {"panels": [{"panel_id": "no-such-panel"}]},
        }
    )
    with pytest.raises(InvalidInput) as refused:
        create_campaign(context(environment), command)
    problems = " | ".join(refused.value.details)
    assert "over the sender ceiling of 10" in problems
    assert "start_at: must be in the future" in problems
    assert "panel no-such-panel has no members" in problems


@pytest.mark.parametrize("event_body", [None, [], {"name": "x"}, {"command": 3}])
def test_something_that_is_not_a_command_is_refused_plainly(event_body):
    with pytest.raises(InvalidInput) as refused:
        parse_command(event_body)
    assert "known commands" in refused.value.details[0]


def test_an_unknown_command_names_the_known_ones():
    with pytest.raises(InvalidInput) as refused:
        parse_command({"command": "launch_rockets"})
    assert "create_campaign" in refused.value.details[0]
    assert "approve" in refused.value.details[0]


# ------------------------------------------------------------------------------------------ sizes
def test_add_recipients_refuses_an_entry_too_large_to_store_and_names_it():
    # Given a list whose second entry carries a 500 KB attribute, and a third whose phone is 70 KB
    command = {
        "command": "add_recipients", "campaign_id": "spring-nps",
        "recipients": [{"phone": "+14155552671", "notes": "fits " * 10_000}, {"phone": "+14155552672", "notes": "n" * 500_000},
                       {"phone": "1" * 70_000}],
    }

    # When it is parsed, it is refused whole, naming each entry too large, its largest value and the limit
    with pytest.raises(InvalidInput) as refused:
        parse_command(command)
    problems = " | ".join(refused.value.details)
    assert "entry 1 takes 500027 bytes (notes: 500000); an entry may take up to 65536" in problems
    assert "entry 2 takes 70009 bytes (phone: 70000)" in problems
    assert "entry 0" not in problems


def test_add_recipients_refuses_attribute_names_that_would_make_a_header_too_large():
    # Given 10,000 entries that each bring an attribute of their own name (a header of 10,000 columns)
    entries = [{"phone": f"+1415555{i:04d}", f"attribute number {i:05d}": "x"} for i in range(10_000)]

    # When it is parsed, it is refused: every row would carry every name
    with pytest.raises(InvalidInput) as refused:
        parse_command({"command": "add_recipients", "campaign_id": "spring-nps", "recipients": entries})
    assert any("attribute names take" in problem and "65536" in problem for problem in refused.value.details)


def test_subscribe_refuses_an_entry_too_large_to_store():
    with pytest.raises(InvalidInput) as refused:
        parse_command({"command": "subscribe", "list_id": "news", "people": [{"phone": "+14155552671", "bio": "b" * 500_000}]})
    assert "entry 0 takes 500025 bytes (bio: 500000); an entry may take up to 65536" in " | ".join(refused.value.details)
