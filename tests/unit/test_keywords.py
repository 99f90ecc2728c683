"""Consent keywords in inbound SMS: single words only, local words when configured, polite phrasings by policy."""

import pytest

from smsinvite.keywords import (
    STANDARD_HELP,
    STANDARD_OPT_IN,
    STANDARD_OPT_OUT,
    TWILIO_ANSWERED,
    Intent,
    KeywordMatch,
    KeywordPolicy,
    PolitePolicy,
    classify,
    normalise,
)

STANDARD = (
    [(word, Intent.OPT_OUT) for word in STANDARD_OPT_OUT]
    + [(word, Intent.OPT_IN) for word in STANDARD_OPT_IN]
    + [(word, Intent.HELP) for word in STANDARD_HELP]
)
CASES = (str.upper, str.lower, str.title, lambda word: word[0].lower() + word[1:].upper())
LOCAL = KeywordPolicy(local_opt_out=("ARRET", "STOPP", "AFMELDEN"), local_opt_in=("OUI",), local_help=("AIDE",))

POLITE_OPT_OUTS = [
    "stop please",
    "please stop",
    "Stop texting me",
    "Please stop texting me.",
    "unsubscribe me",
    "Remove me from this list",
    "take me off your list",
    "Do not text me",
    "don't text me again",
    "Don’t text me again!!",
    "no more texts",
    "Leave me alone",
    "opt me out",
    "stop messaging me",
    "stop sending me messages",
    "Wrong number, stop",
    "STOP ALL",
    "stop, thanks",
    "OPT-OUT",  # inner punctuation: not a keyword, but reads "opt out"
    "STOP-ALL",
    "Please STOP 🙏",
    "Arrêt, please",  # a local word with courtesy words around it, under the LOCAL policy below
]

REPLIES = [
    "I can't stop smiling, great service",
    "Yes please",
    "what is this?",
    "Do not stop the surveys, they're great",
    "Great, thanks!",
    "The end of the queue was too long",
    "Can you stop by tomorrow?",
    "stop by anytime",
    "S.T.O.P",
    "maybe",
    "5",
]


# Given a standard keyword, when it arrives alone in any case, then it is that intent.


@pytest.mark.parametrize(("word", "intent"), STANDARD, ids=[word for word, _ in STANDARD])
@pytest.mark.parametrize("case", CASES, ids=["upper", "lower", "title", "mixed"])
def test_every_standard_keyword_in_any_case_is_its_intent(word, intent, case):
    match = classify(case(word))
    assert match == KeywordMatch(intent, word)
    assert match.answered_by_twilio


@pytest.mark.parametrize(
    "body",
    [" stop ", "Stop.", "STOP!", "stop!!", "stop!!!", "¡stop!", "'stop'", '"stop"', "“STOP”", "\tSTOP\n",
     "(stop)", "🛑 stop 🛑", "stop 👍🏽", "\u00a0stop\u00a0", "ＳＴＯＰ"],
)
def test_stop_with_surrounding_space_punctuation_or_emoji_is_an_opt_out(body):
    assert classify(body) == KeywordMatch(Intent.OPT_OUT, "STOP")


def test_stopall_as_one_word_is_a_keyword_but_stop_all_is_not():
    assert classify("STOPALL") == KeywordMatch(Intent.OPT_OUT, "STOPALL")
    assert normalise("STOP ALL") == ""
    assert classify("STOP ALL").keyword is None


def test_a_keyword_with_inner_punctuation_is_not_a_keyword():
    assert normalise("S.T.O.P") == ""
    assert classify("S.T.O.P") == KeywordMatch(Intent.NONE, None)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (" Stop. ", "STOP"), ("¡Arrêt!", "ARRET"), ("Straße", "STRASSE"),
        ("stop all", ""), ("", ""), (None, ""), ("!!!", ""),
    ],
)
def test_normalise_gives_the_single_word_form_or_nothing(body, expected):
    assert normalise(body) == expected


@pytest.mark.parametrize("body", ["", None, "   ", "\n", "?!"])
def test_an_empty_body_is_no_intent(body):
    assert classify(body) == KeywordMatch(Intent.NONE, None)


# Given local words, when configured they extend the standard ones; when not, they are plain replies.


@pytest.mark.parametrize(
    ("body", "intent", "keyword"),
    [
        ("ARRET", Intent.OPT_OUT, "ARRET"),
        ("arret", Intent.OPT_OUT, "ARRET"),
        ("Arrêt", Intent.OPT_OUT, "ARRET"),
        ("ARRÊT!", Intent.OPT_OUT, "ARRET"),
        ("stopp", Intent.OPT_OUT, "STOPP"),
        ("Afmelden.", Intent.OPT_OUT, "AFMELDEN"),
        ("oui", Intent.OPT_IN, "OUI"),
        ("Aide?", Intent.HELP, "AIDE"),
        ("stop", Intent.OPT_OUT, "STOP"),
    ],
)
def test_configured_local_words_are_matched_without_case_or_accents(body, intent, keyword):
    assert classify(body, LOCAL) == KeywordMatch(intent, keyword)


@pytest.mark.parametrize("body", ["ARRET", "Arrêt", "STOPP", "afmelden", "OUI", "AIDE"])
def test_local_words_are_plain_replies_when_not_configured(body):
    assert classify(body) == KeywordMatch(Intent.NONE, None)


@pytest.mark.parametrize("configured", ["ARRÊT", "arret", " Arrêt "])
@pytest.mark.parametrize("body", ["ARRET", "arrêt", "ARRÊT"])
def test_accents_are_ignored_on_both_the_configured_word_and_the_message(configured, body):
    policy = KeywordPolicy.parse(opt_out=configured)
    assert policy.local_opt_out == ("ARRET",)
    assert classify(body, policy) == KeywordMatch(Intent.OPT_OUT, "ARRET")


def test_local_words_are_not_answered_by_twilio():
    assert classify("ARRET", LOCAL).answered_by_twilio is False
    assert "ARRET" not in TWILIO_ANSWERED


def test_twilio_answers_exactly_the_standard_words():
    assert TWILIO_ANSWERED == frozenset(STANDARD_OPT_OUT + STANDARD_OPT_IN + STANDARD_HELP)


# Given a polite phrasing, the policy decides: opt out and flag, only flag, or a plain reply.


@pytest.mark.parametrize("body", POLITE_OPT_OUTS)
def test_a_polite_phrasing_under_the_default_policy_opts_out_and_is_flagged(body):
    match = classify(body, LOCAL)
    assert match == KeywordMatch(Intent.OPT_OUT, None, polite=True, flagged=True)
    assert match.answered_by_twilio is False


@pytest.mark.parametrize("body", POLITE_OPT_OUTS)
def test_a_polite_phrasing_under_the_flag_policy_is_flagged_but_not_an_opt_out(body):
    policy = KeywordPolicy(local_opt_out=("ARRET",), polite=PolitePolicy.FLAG)
    assert classify(body, policy) == KeywordMatch(Intent.NONE, None, polite=True, flagged=True)


@pytest.mark.parametrize("body", POLITE_OPT_OUTS)
def test_a_polite_phrasing_under_the_ignore_policy_is_a_plain_reply(body):
    policy = KeywordPolicy(local_opt_out=("ARRET",), polite=PolitePolicy.IGNORE)
    assert classify(body, policy) == KeywordMatch(Intent.NONE, None)


def test_the_default_policy_treats_polite_phrasings_as_opt_outs():
    assert KeywordPolicy().polite is PolitePolicy.OPT_OUT
    assert classify("please stop texting me").intent is Intent.OPT_OUT


def test_a_local_word_with_courtesy_words_is_not_polite_when_not_configured():
    assert classify("Arrêt, please") == KeywordMatch(Intent.NONE, None)


@pytest.mark.parametrize("body", REPLIES)
@pytest.mark.parametrize("polite", list(PolitePolicy), ids=[policy.value for policy in PolitePolicy])
def test_ordinary_replies_are_neither_keywords_nor_polite_opt_outs(body, polite):
    assert classify(body, KeywordPolicy(polite=polite)) == KeywordMatch(Intent.NONE, None)


# Given configuration from environment variables, when it is wrong, then parse says what is wrong.


def test_parse_reads_comma_or_whitespace_separated_words_and_the_polite_policy():
    policy = KeywordPolicy.parse(opt_out="arret, stopp  AFMELDEN,,", opt_in="oui", help="aide", polite=" FLAG ")
    assert policy == KeywordPolicy(("ARRET", "STOPP", "AFMELDEN"), ("OUI",), ("AIDE",), PolitePolicy.FLAG)


def test_parse_of_nothing_is_the_default_policy():
    assert KeywordPolicy.parse() == KeywordPolicy()
    assert KeywordPolicy.parse(polite="") == KeywordPolicy()


@pytest.mark.parametrize("word", ["S.T.O.P", "stop!", "arret;stopp", "opt-out", "🛑"])
def test_parse_refuses_a_word_that_is_not_letters_and_digits(word):
    with pytest.raises(ValueError, match="not a single word of letters and digits"):
        KeywordPolicy.parse(opt_out=word)


def test_a_local_word_with_a_space_is_refused_when_given_directly():
    with pytest.raises(ValueError, match="'STOP ALL' is not a single word"):
        KeywordPolicy(local_opt_out=("STOP ALL",))


def test_local_words_given_as_a_bare_string_are_refused():
    with pytest.raises(ValueError, match="must be a tuple of words"):
        KeywordPolicy(local_opt_out="ARRET")


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"opt_out": "START"}, "local opt-out word 'START' is already a standard opt-in keyword"),
        ({"opt_out": "help"}, "local opt-out word 'HELP' is already a standard help keyword"),
        ({"opt_in": "stop"}, "local opt-in word 'STOP' is already a standard opt-out keyword"),
        ({"help": "Yes"}, "local help word 'YES' is already a standard opt-in keyword"),
        ({"opt_out": "NON", "help": "non"}, "local word 'NON' is configured as both opt-out and help"),
    ],
)
def test_parse_refuses_a_local_word_that_already_means_another_intent(arguments, message):
    with pytest.raises(ValueError, match=message):
        KeywordPolicy.parse(**arguments)


def test_a_local_word_repeating_a_standard_word_of_its_own_intent_is_harmless():
    assert classify("stop", KeywordPolicy.parse(opt_out="STOP")) == KeywordMatch(Intent.OPT_OUT, "STOP")


@pytest.mark.parametrize("polite", ["optout", "never", "yes"])
def test_parse_refuses_an_unknown_polite_policy_and_lists_the_allowed_ones(polite):
    with pytest.raises(ValueError, match=f"unknown polite policy '{polite}': use one of opt_out, flag, ignore"):
        KeywordPolicy.parse(polite=polite)


def test_policies_are_frozen():
    with pytest.raises(AttributeError):
        LOCAL.polite = PolitePolicy.IGNORE  # type: ignore[misc]
