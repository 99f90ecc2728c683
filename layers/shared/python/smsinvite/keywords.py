"""Which consent keyword, if any, an inbound SMS is.

Carriers and Twilio treat STOP and its synonyms as an opt-out, START/UNSTOP/YES as an opt-in and
HELP/INFO as a request for help, but only when the whole message is that one word. Twilio's
(Advanced) Opt-Out already answers those words itself; we still have to record them, and to
recognise what Twilio does not know: local-language words a deployment configures (ARRET, STOPP,
AFMELDEN) and polite phrasings ("please stop texting me") a person plainly meant as an opt-out.
A polite phrasing is a judgement call, so by default it opts out and is flagged for review.

Pure: no I/O, standard library only. The caller records the match and answers it.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum
from functools import lru_cache


class Intent(str, Enum):
    OPT_OUT = "opt_out"  # STOP and its synonyms
    OPT_IN = "opt_in"  # START, UNSTOP, YES
    HELP = "help"  # HELP, INFO
    NONE = "none"  # anything else: just a reply to keep


class PolitePolicy(str, Enum):
    OPT_OUT = "opt_out"  # treat as an opt-out, and flag it for review (the default)
    FLAG = "flag"  # do not opt out; flag it for review
    IGNORE = "ignore"  # a plain reply


STANDARD_OPT_OUT = ("STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT")
STANDARD_OPT_IN = ("START", "UNSTOP", "YES")
STANDARD_HELP = ("HELP", "INFO")
# The words Twilio's own (Advanced) Opt-Out answers by itself on a number/messaging service.
TWILIO_ANSWERED = frozenset(STANDARD_OPT_OUT + STANDARD_OPT_IN + STANDARD_HELP)

_STANDARD = {Intent.OPT_OUT: STANDARD_OPT_OUT, Intent.OPT_IN: STANDARD_OPT_IN, Intent.HELP: STANDARD_HELP}
_LIST_NAMES = {Intent.OPT_OUT: "opt-out", Intent.OPT_IN: "opt-in", Intent.HELP: "help"}


def _fold(text: str) -> str:
    """Compatibility forms spelled out (fullwidth ＳＴＯＰ, ligatures), case folded, accents dropped."""
    # NFKD again after casefold: folding can produce a letter that decomposes further.
    decomposed = unicodedata.normalize("NFKD", unicodedata.normalize("NFKD", text).casefold())
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def _strip_surrounding(text: str) -> str:
    """Without leading and trailing whitespace, punctuation, symbols and emoji."""
    start, end = 0, len(text)
    while start < end and not text[start].isalnum():
        start += 1
    while end > start and not text[end - 1].isalnum():
        end -= 1
    return text[start:end]


def normalise(body: str | None) -> str:
    """The single-word form used for matching ("¡Stop!" -> "STOP"), "" if the body is not one word."""
    if not body:
        return ""
    word = _strip_surrounding(_fold(body))
    # A keyword is a whole word: inner spaces or punctuation ("STOP ALL", "S.T.O.P") are not one.
    # Keeping it that simple is deliberate; anything else is left to the polite phrasings or a person.
    return word.upper() if word.isalnum() else ""


@dataclass(frozen=True)
class KeywordPolicy:
    """A deployment's extra words and its choice for polite phrasings.

    Local words extend the standard ones; they are kept normalised (upper case, no accents).
    """

    local_opt_out: tuple[str, ...] = ()  # configurable extra words, e.g. ("ARRET", "STOPP", "AFMELDEN")
    local_opt_in: tuple[str, ...] = ()
    local_help: tuple[str, ...] = ()
    polite: PolitePolicy = PolitePolicy.OPT_OUT

    def __post_init__(self) -> None:
        local = {
            Intent.OPT_OUT: _local_words(self.local_opt_out, Intent.OPT_OUT),
            Intent.OPT_IN: _local_words(self.local_opt_in, Intent.OPT_IN),
            Intent.HELP: _local_words(self.local_help, Intent.HELP),
        }
        _refuse_conflicts(local)
        object.__setattr__(self, "local_opt_out", local[Intent.OPT_OUT])
        object.__setattr__(self, "local_opt_in", local[Intent.OPT_IN])
        object.__setattr__(self, "local_help", local[Intent.HELP])
        object.__setattr__(self, "polite", _polite_policy(self.polite))

    @classmethod
    def parse(cls, *, opt_out: str = "", opt_in: str = "", help: str = "", polite: str = "opt_out") -> KeywordPolicy:
        """From environment variables: comma or whitespace separated words, and a PolitePolicy value."""
        return cls(
            local_opt_out=_split(opt_out),
            local_opt_in=_split(opt_in),
            local_help=_split(help),
            polite=_polite_policy(polite),
        )


def _split(words: str) -> tuple[str, ...]:
    return tuple(word for word in re.split(r"[\s,]+", words or "") if word)


def _local_words(words: Iterable[str], intent: Intent) -> tuple[str, ...]:
    if isinstance(words, str):
        # A bare string would be read letter by letter.
        raise ValueError(f"local {_LIST_NAMES[intent]} words must be a tuple of words, not {words!r}")
    normalised: list[str] = []
    for word in words:
        folded = _fold(str(word).strip())
        if not folded.isalnum():
            raise ValueError(
                f"local {_LIST_NAMES[intent]} word {word!r} is not a single word of letters and digits"
            )
        if folded.upper() not in normalised:
            normalised.append(folded.upper())
    return tuple(normalised)


def _refuse_conflicts(local: dict[Intent, tuple[str, ...]]) -> None:
    """A word that means two things would be answered as one of them at random: refuse it."""
    for intent, words in local.items():
        for word in words:
            for other in _STANDARD:
                if other is intent:
                    continue
                if word in _STANDARD[other]:
                    raise ValueError(
                        f"local {_LIST_NAMES[intent]} word {word!r} is already a standard "
                        f"{_LIST_NAMES[other]} keyword"
                    )
                if word in local[other]:
                    raise ValueError(
                        f"local word {word!r} is configured as both {_LIST_NAMES[intent]} and {_LIST_NAMES[other]}"
                    )


def _polite_policy(value: str | PolitePolicy) -> PolitePolicy:
    if isinstance(value, PolitePolicy):
        return value
    text = str(value).strip().lower().replace("-", "_")
    if not text:
        return PolitePolicy.OPT_OUT  # an empty environment variable means the default
    try:
        return PolitePolicy(text)
    except ValueError:
        allowed = ", ".join(policy.value for policy in PolitePolicy)
        raise ValueError(f"unknown polite policy {value!r}: use one of {allowed}") from None


@dataclass(frozen=True)
class KeywordMatch:
    intent: Intent
    keyword: str | None  # the normalised word that matched (e.g. "STOP", "ARRET"), None for no match/polite
    polite: bool = False  # matched a polite phrasing rather than a single keyword
    flagged: bool = False  # should be reviewed by a person (polite phrasings under OPT_OUT or FLAG policy)

    @property
    def answered_by_twilio(self) -> bool:
        """Twilio has already sent its own confirmation: we must not send a second one."""
        return self.keyword in TWILIO_ANSWERED


NO_MATCH = KeywordMatch(Intent.NONE, None)

# Polite opt-out phrasings, matched against the whole message after _polite_text.
#
# Precision over recall: a phrasing matches only when the WHOLE message is an opt-out request, a
# core phrase with optional courtesy words around it ("please", "thanks", "now", "wrong number").
# A core phrase inside a longer sentence ("I can't stop smiling", "Do not stop the surveys") is an
# ordinary reply, and is kept as one; a person sees those replies anyway.
_LEADING = (
    "please", "pls", "plz", "kindly", "hi", "hello", "hey", "ok", "okay", "sorry", "no", "no thanks",
    "no thank you", "wrong number", "wrong person", "just", "can you", "could you", "would you",
    "i want to", "i would like to", "id like to", "i wish to",
)
_TRAILING = (
    "please", "pls", "plz", "thanks", "thank you", "thx", "ty", "now", "right now", "immediately",
    "asap", "wrong number", "wrong person", "sorry", "ok",
)
_TEXTS = r"(?:texts?|messages?|msgs?|sms|surveys?)"
_SENDING = r"(?:texting|messaging|contacting|sending|spamming|smsing)"
_LIST = r"(?:this|the|your|ur) (?:list|mailing list|texting list|contact list|survey list)"
_AGAIN = r"(?: again| anymore| any more| ever again)?"
_CORES = (
    r"stop all",  # "STOP ALL": two words, so not a keyword
    rf"stop (?:the |these |this |your |all )?{_TEXTS}",  # stop the texts
    r"stop this",
    rf"stop {_SENDING}(?: me)?(?: {_TEXTS})?{_AGAIN}",  # stop texting me, stop sending me messages
    rf"(?:unsubscribe|unsub)(?: me)?(?: from {_LIST})?",
    rf"opt(?: me)? out(?: of {_LIST})?",
    rf"remove (?:me|my number)(?: from {_LIST})?",
    rf"take (?:me|my number) off(?: of)?(?: {_LIST})?",
    rf"(?:do not|dont|never) (?:text|message|contact|sms) me{_AGAIN}",  # don't text me again
    rf"no more {_TEXTS}",
    r"leave me alone",
)
_APOSTROPHES = re.compile(r"['\u2019\u02bc`\u00b4]")  # removed, so "don't" reads "dont"
_NOT_LETTERS = re.compile(r"[\W_]+")


def _polite_text(body: str) -> str:
    """Case folded, accents dropped, punctuation and symbols as single spaces."""
    return _NOT_LETTERS.sub(" ", _fold(_APOSTROPHES.sub("", body))).strip()


def _alternatives(patterns: Iterable[str]) -> str:
    return "|".join(patterns)


@dataclass(frozen=True)
class _Vocabulary:
    intents: dict[str, Intent]  # normalised word -> its intent
    polite: re.Pattern[str]


@lru_cache(maxsize=32)
def _vocabulary(policy: KeywordPolicy) -> _Vocabulary:
    local = {Intent.OPT_OUT: policy.local_opt_out, Intent.OPT_IN: policy.local_opt_in, Intent.HELP: policy.local_help}
    intents = {word: intent for intent, words in _STANDARD.items() for word in (*words, *local[intent])}
    # Any opt-out word, standard or local, is also a core: "stop please", "wrong number, arret".
    opt_out_words = (re.escape(word.casefold()) for word in (*STANDARD_OPT_OUT, *policy.local_opt_out))
    cores = (*_CORES, *opt_out_words)
    polite = re.compile(
        rf"(?:(?:{_alternatives(_LEADING)}) )*(?:{_alternatives(cores)})(?: (?:{_alternatives(_TRAILING)}))*"
    )
    return _Vocabulary(intents, polite)


def classify(body: str | None, policy: KeywordPolicy = KeywordPolicy()) -> KeywordMatch:
    """The consent intent of an inbound message; NO_MATCH for an ordinary reply."""
    if not body or not body.strip():
        return NO_MATCH
    vocabulary = _vocabulary(policy)
    word = normalise(body)
    if word:
        # A single word is a keyword or a reply; polite phrasings are for longer messages.
        intent = vocabulary.intents.get(word)
        return KeywordMatch(intent, word) if intent else NO_MATCH
    if not vocabulary.polite.fullmatch(_polite_text(body)):
        return NO_MATCH
    if policy.polite is PolitePolicy.OPT_OUT:
        return KeywordMatch(Intent.OPT_OUT, None, polite=True, flagged=True)
    if policy.polite is PolitePolicy.FLAG:
        return KeywordMatch(Intent.NONE, None, polite=True, flagged=True)
    return NO_MATCH
