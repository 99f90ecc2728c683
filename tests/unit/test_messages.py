"""Rendering invitations from templates."""

import pytest

from smsinvite.messages import (
    GSM_7,
    UCS_2,
    MissingField,
    TemplateError,
    encoding_of,
    field_names,
    gsm_friendly,
    has_opt_out,
    non_gsm_characters,
    render,
    required_fields,
    segment_count,
    segment_info,
    template_warnings,
    validate_template,
    with_opt_out,
)


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


def test_a_field_named_like_a_normalised_csv_header_is_rendered():
    # csv_rows.field_name keeps non-ASCII letters and leading digits: "Prénom" -> "prénom".
    assert render("Bonjour {prénom}, {2nd_line|}", {"prénom": "Zoé"}) == "Bonjour Zoé, "


def test_the_fields_a_template_needs_are_listed_once_in_order():
    template = "Hi {first_name|there}, {code} {link} {code}"
    assert field_names(template) == ("first_name", "code", "link")
    assert required_fields(template) == ("code", "link")


# --- encoding ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "Hello, world! 0-9 #%&'()*+,-./:;<=>?",
        "@£$¥èéùìòÇØøÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ¤¡ÄÖÑÜ§¿äöñüà\r\n",
        "extension ^{}\\[~]|€ and form feed \f",
    ],
)
def test_text_in_the_gsm_alphabet_and_its_extension_is_gsm_7(text):
    assert encoding_of(text) == GSM_7


@pytest.mark.parametrize(
    "text",
    ["we’d", "“quoted”", "ç", "á", "a\u00a0b", "😀", "中文", "`"],
)
def test_any_character_outside_gsm_makes_the_text_ucs_2(text):
    assert encoding_of(text) == UCS_2


# --- segments ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "segments", "units"),
    [
        ("a" * 160, 1, 160),
        ("a" * 161, 2, 161),
        ("a" * 306, 2, 306),
        ("a" * 307, 3, 307),
        ("€" * 80, 1, 160),
        ("€" * 81, 2, 162),
        ("[" * 10 + "a" * 140, 1, 160),
        ("[" * 10 + "a" * 141, 2, 161),
    ],
)
def test_gsm_7_fits_160_septets_in_one_segment_and_153_in_each_part(text, segments, units):
    info = segment_info(text)
    assert (info.encoding, info.segments, info.units) == (GSM_7, segments, units)


def test_an_extension_character_costs_two_septets():
    assert segment_info("a" * 159 + "€").segments == 2  # 161 septets
    assert segment_info("a" * 158 + "€").segments == 1  # 160 septets


def test_an_extension_character_at_a_part_boundary_moves_whole_to_the_next_part():
    # Given 306 septets, which would fill two parts exactly if the escape could be split from its €
    text = "a" * 152 + "€" + "a" * 152
    # When it is counted
    info = segment_info(text)
    # Then the € (escape + char) opens part two, which then overflows into a third
    assert (info.units, info.segments, info.per_segment) == (306, 3, 153)


@pytest.mark.parametrize(
    ("text", "segments"),
    [
        ("ж" * 70, 1),
        ("ж" * 71, 2),
        ("ж" * 134, 2),
        ("ж" * 135, 3),
        ("😀" * 35, 1),  # 70 UTF-16 code units
        ("😀" * 36, 2),
    ],
)
def test_ucs_2_fits_70_code_units_in_one_segment_and_67_in_each_part(text, segments):
    info = segment_info(text)
    assert (info.encoding, info.segments) == (UCS_2, segments)
    assert info.per_segment == (70 if segments == 1 else 67)


def test_an_emoji_at_a_part_boundary_is_not_split():
    # Given 134 code units whose emoji (a surrogate pair) straddles the end of part one
    text = "ж" * 66 + "😀" + "ж" * 66
    # When it is counted
    info = segment_info(text)
    # Then the emoji opens part two whole, which then overflows into a third
    assert (info.characters, info.units, info.segments) == (133, 134, 3)


def test_an_empty_message_has_no_segments_and_is_refused_as_a_template():
    assert segment_count("") == 0
    with pytest.raises(TemplateError) as error:
        validate_template("  ")
    assert error.value.problems == ["the template is empty"]


# --- the characters that force UCS-2 ----------------------------------------------------------------


def test_the_character_forcing_ucs_2_is_named_with_its_code_point_and_position():
    # Given a message with a curly apostrophe and an emoji
    text = "Hi Ana, we’d love your view 😀"
    # When its culprits are found
    culprits = non_gsm_characters(text)
    # Then each is named with its code point and 1-based position
    assert [(c.char, c.code_point, c.position) for c in culprits] == [("’", "U+2019", 11), ("😀", "U+1F600", 29)]
    assert str(culprits[0]) == "'’' (U+2019 RIGHT SINGLE QUOTATION MARK) at position 11"
    assert text[culprits[0].index] == "’"


@pytest.mark.parametrize(
    ("text", "friendly"),
    [
        ("we’d ‘like’", "we'd 'like'"),
        ("“quoted”", '"quoted"'),
        ("9–5 — daily", "9-5 - daily"),
        ("wait…", "wait..."),
        ("10\u00a0min", "10 min"),
        ("zero\u200bwidth", "zerowidth"),
    ],
)
def test_gsm_friendly_suggests_gsm_look_alikes(text, friendly):
    assert gsm_friendly(text) == friendly
    assert encoding_of(gsm_friendly(text)) == GSM_7


def test_gsm_friendly_leaves_characters_without_a_look_alike():
    assert gsm_friendly("Thanks 😀 Zoë") == "Thanks 😀 Zoë"


# --- opt-out footer ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "template",
    [
        "Take our survey {link}. Reply STOP to end",
        "Take our survey {link}. Text UNSUBSCRIBE to leave",
        "Take our survey {link} (opt-out: reply stop)",
        "Take our survey {link}. To opt out, tell us",
        "Take our survey {link}. Optout anytime",
        "Take our survey {link}. Reply STOPALL to leave every list",
        "Take our survey {link}\nreply stop to opt out",
    ],
)
def test_a_template_with_opt_out_wording_is_left_alone(template):
    assert has_opt_out(template)
    assert with_opt_out(template) == template


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("Take our survey {link}", "Take our survey {link} Reply STOP to opt out"),
        ("Take our survey {link}  \n", "Take our survey {link} Reply STOP to opt out"),
        ("Hi {first_name}\nTake our survey {link}", "Hi {first_name}\nTake our survey {link}\nReply STOP to opt out"),
        ("Don't miss it: {stop_date}", "Don't miss it: {stop_date} Reply STOP to opt out"),
        ("Nonstop fun {link}", "Nonstop fun {link} Reply STOP to opt out"),
    ],
)
def test_the_opt_out_footer_is_appended_when_the_template_has_none(template, expected):
    assert with_opt_out(template) == expected
    assert with_opt_out(expected) == expected  # idempotent


def test_the_opt_out_footer_is_configurable_and_recognised_as_opt_out_wording():
    footer = "Antworte mit ENDE zum Abmelden"
    sent = with_opt_out("Umfrage: {link}", footer)
    assert sent == "Umfrage: {link} Antworte mit ENDE zum Abmelden"
    assert with_opt_out(sent, footer) == sent
    with pytest.raises(ValueError):
        with_opt_out("Umfrage: {link}", "  ")


# --- validation -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "template",
    [
        "Hi {first_name}, your code {code}: {link}",
        "Hi {first_name|there}! {favourite_colour|}",
        "Hallo {vorname}, {2nd_line|} {prénom|}",
        "No placeholders at all",
    ],
)
def test_well_formed_templates_with_any_attribute_are_valid(template):
    validate_template(template)


@pytest.mark.parametrize(
    ("template", "problem"),
    [
        ("Hi {first name}", "'{first name}' at position 4 is not a valid placeholder: a field name is lower-case"
         " letters, digits and _ (did you mean {first_name}?)"),
        ("Hi {First_Name}", "'{First_Name}' at position 4 is not a valid placeholder: a field name is lower-case"
         " letters, digits and _ (did you mean {first_name}?)"),
        ("Hi {first-name|there}", "'{first-name|there}' at position 4 is not a valid placeholder: a field name is"
         " lower-case letters, digits and _ (did you mean {first_name}?)"),
        ("Hi {}", "'{}' at position 4 has no field name"),
        ("Hi {|there}", "'{|there}' at position 4 has no field name"),
        ("Hi {first_name", "'{' at position 4 is never closed"),
        ("Hi first_name}", "'}' at position 14 has no matching '{'"),
    ],
)
def test_a_malformed_placeholder_is_a_template_error_saying_where(template, problem):
    with pytest.raises(TemplateError) as error:
        validate_template(template)
    assert error.value.problems == [problem]


def test_a_malformed_template_lists_every_problem():
    # Given a template with four different mistakes
    template = "Hi {first name}, {code {link}} {}"
    # When it is validated
    with pytest.raises(TemplateError) as error:
        validate_template(template)
    # Then every one is reported, in order, as an invalid-input error the API can show
    assert len(error.value.problems) == 4
    assert [p.split(" at position ")[0] for p in error.value.problems] == ["'{first name}'", "'{'", "'}'", "'{}'"]
    assert error.value.as_dict()["code"] == "invalid_template"
    assert error.value.message == "the message template has 4 problems"


# --- warnings for the preview -----------------------------------------------------------------------

SAMPLE = {"first_name": "Ana", "code": "K7Q2M9XW", "link": "https://s.example/K7Q2M9XW"}


def test_a_short_gsm_message_has_no_warnings():
    assert template_warnings(with_opt_out("Hi {first_name}, your survey: {link}"), SAMPLE) == []


@pytest.mark.parametrize(("length", "max_segments", "warned"), [(306, 2, False), (307, 2, True), (161, 1, True)])
def test_a_message_longer_than_the_configured_segments_is_warned_with_its_count(length, max_segments, warned):
    # Given a template whose sample renders to `length` GSM characters
    template = "{link}" + "a" * (length - len(SAMPLE["link"]))
    # When it is checked
    warnings = template_warnings(template, SAMPLE, max_segments=max_segments)
    # Then it is warned about exactly when it exceeds the limit, saying how many segments
    assert [w.code for w in warnings] == (["too_many_segments"] if warned else [])
    if warned:
        count = segment_count(render(template, SAMPLE))
        assert str(warnings[0]).startswith(f"the message needs {count} segments, more than {max_segments}: ")


def test_a_curly_quote_is_named_as_forcing_ucs_2_with_the_segments_it_costs():
    # Given a 100-character GSM template with one curly apostrophe
    template = "We’d " + "a" * 96
    # When it is checked
    [warning] = template_warnings(template, SAMPLE)
    # Then the warning names it, and what it costs, and offers (only offers) a GSM version
    assert warning.code == "forces_ucs2"
    assert str(warning) == (
        "'’' (U+2019 RIGHT SINGLE QUOTATION MARK) at position 3 forces UCS-2: 2 segments instead of 1;"
        " a GSM-friendly version is suggested"
    )
    assert [c.position for c in warning.characters] == [3]
    assert warning.suggestion == "We'd " + "a" * 96


def test_several_culprits_are_each_named_with_their_positions():
    [warning, _too_long] = template_warnings("’" + "a" * 150 + "’😀", SAMPLE)
    assert str(warning).startswith(
        "'’' (U+2019 RIGHT SINGLE QUOTATION MARK) at positions 1 and 152;"
        " '😀' (U+1F600 GRINNING FACE) at position 153 force UCS-2: 3 segments instead of 1"
    )


def test_a_ucs_2_message_that_still_fits_is_warned_without_claiming_a_saving():
    [warning] = template_warnings("Thanks 😀 {link}", SAMPLE)
    assert "forces UCS-2: still 1 segment" in str(warning)
    assert warning.suggestion is None  # no look-alike for an emoji


def test_a_sample_field_forcing_ucs_2_is_named_with_its_field():
    [warning] = template_warnings("Hi {first_name}, " + "a" * 70, {**SAMPLE, "first_name": "Zoë"})
    assert str(warning).startswith(
        "'ë' (U+00EB LATIN SMALL LETTER E WITH DIAERESIS) at position 3 in the sample's {first_name}"
        " forces UCS-2: 2 segments instead of 1"
    )
    assert warning.characters == ()


def test_a_sample_lacking_a_required_field_is_warned_not_refused():
    [warning] = template_warnings("Hi {nickname}, {link}", SAMPLE)
    assert warning.code == "missing_sample_field"
    assert "{nickname}" in str(warning)


def test_a_malformed_template_is_refused_before_any_warning():
    with pytest.raises(TemplateError):
        template_warnings("Hi {first name}", SAMPLE)
