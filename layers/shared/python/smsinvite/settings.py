"""One settings object, read from the environment and validated on every call.

Lambda sets these variables from template.yaml; the local stack sets the same ones from the same
template. Reading them per call (it is cheap) keeps no state between invocations.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from smsinvite.errors import ConfigurationError

_TABLES = {
    "campaigns_table": "CAMPAIGNS_TABLE",
    "counts_table": "COUNTS_TABLE",
    "recipients_table": "RECIPIENTS_TABLE",
    "imports_table": "IMPORTS_TABLE",
    "codes_table": "CODES_TABLE",
    "suppressions_table": "SUPPRESSIONS_TABLE",
    "inbox_table": "INBOX_TABLE",
    "idempotency_table": "IDEMPOTENCY_TABLE",
    "panels_table": "PANELS_TABLE",
    "throttle_table": "THROTTLE_TABLE",
    "consent_table": "CONSENT_TABLE",
    "subscriptions_table": "SUBSCRIPTIONS_TABLE",
    "limits_table": "LIMITS_TABLE",
}

# Carrier and API errors that mean a number is dead or unreachable for good.
DEFAULT_UNDELIVERABLE_CODES = "30005,30006,21211,21614"
DEFAULT_ALLOWED_COUNTRIES = "US,CA,GB,IE,DE,FR,NL,ES,IT,AU,NZ"
DEFAULT_HELP_TEXT = "Survey invitations by SMS. Reply STOP to opt out, START to opt back in. Msg&data rates may apply."
DEFAULT_OPT_OUT_REPLY = "You are unsubscribed and will get no more messages from us. Reply START to opt back in."
DEFAULT_OPT_IN_REPLY = "You are subscribed again. Reply STOP to opt out."


# Illustrative list prices per outbound segment; deployments set PRICE_PER_SEGMENT to their own.
DEFAULT_PRICES = {"US": 0.0083, "CA": 0.0083, "GB": 0.0463, "DE": 0.0903, "FR": 0.0798, "NL": 0.0975, "*": 0.08}
_COUNTRY = re.compile(r"^[A-Z]{2}$")


def _prices(raw: str, problems: list[str]) -> dict[str, float]:
    """PRICE_PER_SEGMENT: a JSON object of country code (or "*") to a price, with "*" required."""
    try:
        prices = json.loads(raw)
    except ValueError:
        problems.append("PRICE_PER_SEGMENT must be a JSON object such as {\"US\": 0.0083, \"*\": 0.08}")
        return dict(DEFAULT_PRICES)
    if not isinstance(prices, dict) or "*" not in prices:
        problems.append('PRICE_PER_SEGMENT must be a JSON object with a "*" entry for every other country')
        return dict(DEFAULT_PRICES)
    bad = [
        str(country)
        for country, price in prices.items()
        if not (country == "*" or _COUNTRY.match(str(country)))
        or isinstance(price, bool)
        or not isinstance(price, (int, float))
        or price < 0
    ]
    if bad:
        problems.append(f"PRICE_PER_SEGMENT has bad entries for {', '.join(bad)} (a country code and a price >= 0)")
        return dict(DEFAULT_PRICES)
    return {str(country): float(price) for country, price in prices.items()}


def _codes(raw: str, problems: list[str]) -> frozenset[int]:
    words = [w for w in re.split(r"[\s,]+", raw.strip()) if w]
    if not all(w.isdigit() for w in words):
        problems.append(f"UNDELIVERABLE_ERROR_CODES must be Twilio error codes separated by commas, got {raw!r}")
        return frozenset()
    return frozenset(int(w) for w in words)


def _countries(raw: str, problems: list[str]) -> frozenset[str]:
    words = [w.upper() for w in re.split(r"[\s,]+", raw.strip()) if w]
    bad = [w for w in words if not _COUNTRY.match(w)]
    if bad or not words:
        problems.append(f"ALLOWED_COUNTRIES must be ISO country codes separated by commas, got {raw!r}")
    return frozenset(w for w in words if _COUNTRY.match(w))


def _flag(raw: str, name: str, problems: list[str]) -> bool:
    value = raw.strip().lower()
    if value not in ("true", "false", "1", "0", "yes", "no"):
        problems.append(f"{name} must be true or false, got {raw!r}")
    return value in ("true", "1", "yes")


@dataclass(frozen=True)
class Settings:
    campaigns_table: str
    counts_table: str
    recipients_table: str
    imports_table: str
    codes_table: str
    suppressions_table: str
    inbox_table: str
    idempotency_table: str
    panels_table: str
    throttle_table: str
    imports_bucket: str
    send_queue_url: str
    dispatch_queue_url: str
    import_queue_url: str
    aws_region: str
    twilio_account_sid: str
    twilio_auth_token_secret: str
    twilio_messaging_service_sid: str
    twilio_from_number: str
    public_webhook_base_url: str
    sender_ceiling_per_second: int
    # Empty in AWS. Locally, the Twilio simulator's base URL: the SDK is pointed at it, nothing else changes.
    twilio_api_base_url: str = ""
    twilio_timeout_seconds: float = 5.0
    # Recipients whose send outcome is unknown are reconciled only after Twilio's list has caught up.
    reconcile_grace_seconds: int = 120
    # An unknown send is sent again only if Twilio's list shows no such message at two reads this far apart.
    reconcile_confirm_seconds: int = 900
    # A message with no final status this long after its send is fetched from Twilio by its SID.
    final_status_after_seconds: int = 7200
    dispatch_page_size: int = 100
    # Uploads larger than this are refused whole, before a row is read.
    max_import_bytes: int = 1024**3
    # An import saves its position, counts and rejected rows every this many rows, or this many bytes of the file.
    import_checkpoint_rows: int = 1000
    import_checkpoint_bytes: int = 8 * 1024**2
    # Region for numbers without a country code in files that belong to no campaign (suppressions, panels).
    default_region: str = "US"
    # Price of one SMS segment by destination country (ISO code), "*" for the rest: the preview's estimate.
    prices_per_segment: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_PRICES))
    price_currency: str = "USD"
    # Appended to a template that does not say how to opt out.
    opt_out_footer: str = "Reply STOP to opt out"
    # The preview warns about messages longer than this many segments.
    max_segments_warning: int = 2
    consent_table: str = ""
    subscriptions_table: str = ""
    limits_table: str = ""
    # Secrets Manager secret whose value keys the hash that stands for a number (suppressions, ledger).
    phone_hash_key_secret: str = ""
    # Error codes that put a number on the suppression list as undeliverable.
    undeliverable_error_codes: frozenset[int] = frozenset(int(c) for c in DEFAULT_UNDELIVERABLE_CODES.split(","))
    # Inbound keywords beyond the standard ones, and what a polite phrasing ("please stop") does.
    opt_out_keywords: str = "ARRET,STOPP,AFMELDEN"
    opt_in_keywords: str = ""
    help_keywords: str = ""
    polite_opt_out: str = "opt_out"
    help_text: str = DEFAULT_HELP_TEXT
    opt_out_reply: str = DEFAULT_OPT_OUT_REPLY
    opt_in_reply: str = DEFAULT_OPT_IN_REPLY
    # Twilio's (Advanced) Opt-Out answers its standard keywords itself; then we do not answer them again.
    twilio_answers_keywords: bool = True
    # Double opt-in: how long a subscription waits for its YES.
    subscription_confirm_hours: int = 24
    # SMS-pumping protection for anything that texts a number it was given (subscribe).
    allowed_countries: frozenset[str] = frozenset(DEFAULT_ALLOWED_COUNTRIES.split(","))
    subscribe_limit_per_number: int = 3  # per day
    subscribe_limit_per_caller: int = 100  # per hour
    # The survey platform's API key (Secrets Manager), and failed code look-ups allowed a minute.
    codes_api_key_secret: str = ""
    guesses_per_ip: int = 20
    guesses_in_total: int = 1000
    # The query parameter the short link hands the code to the survey under.
    code_query_parameter: str = "code"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "Settings":
        env = os.environ if environ is None else environ
        problems: list[str] = []

        def required(name: str) -> str:
            value = env.get(name, "").strip()
            if not value:
                problems.append(f"{name} is not set")
            return value

        def number(name: str, default: str, kind=int):
            raw = env.get(name, default).strip() or default
            try:
                value = kind(raw)
            except ValueError:
                problems.append(f"{name} must be a number, got {raw!r}")
                return kind(default)
            if value <= 0:
                problems.append(f"{name} must be positive, got {raw!r}")
            return value

        values = {field: required(var) for field, var in _TABLES.items()}
        settings = cls(
            **values,
            imports_bucket=required("IMPORTS_BUCKET"),
            send_queue_url=required("SEND_QUEUE_URL"),
            dispatch_queue_url=required("DISPATCH_QUEUE_URL"),
            import_queue_url=required("IMPORT_QUEUE_URL"),
            aws_region=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1",
            twilio_account_sid=required("TWILIO_ACCOUNT_SID"),
            twilio_auth_token_secret=required("TWILIO_AUTH_TOKEN_SECRET"),
            twilio_messaging_service_sid=env.get("TWILIO_MESSAGING_SERVICE_SID", "").strip(),
            twilio_from_number=env.get("TWILIO_FROM_NUMBER", "").strip(),
            public_webhook_base_url=env.get("PUBLIC_WEBHOOK_BASE_URL", "").strip().rstrip("/"),
            sender_ceiling_per_second=number("SENDER_CEILING_PER_SECOND", "10"),
            twilio_api_base_url=env.get("TWILIO_API_BASE_URL", "").strip().rstrip("/"),
            twilio_timeout_seconds=number("TWILIO_TIMEOUT_SECONDS", "5", float),
            reconcile_grace_seconds=number("RECONCILE_GRACE_SECONDS", "120"),
            reconcile_confirm_seconds=number("RECONCILE_CONFIRM_SECONDS", "900"),
            final_status_after_seconds=number("FINAL_STATUS_AFTER_SECONDS", "7200"),
            dispatch_page_size=number("DISPATCH_PAGE_SIZE", "100"),
            max_import_bytes=number("MAX_IMPORT_BYTES", str(1024**3)),
            import_checkpoint_rows=number("IMPORT_CHECKPOINT_ROWS", "1000"),
            import_checkpoint_bytes=number("IMPORT_CHECKPOINT_BYTES", str(8 * 1024**2)),
            default_region=(env.get("DEFAULT_REGION", "").strip() or "US").upper(),
            prices_per_segment=_prices(env.get("PRICE_PER_SEGMENT", "").strip() or json.dumps(DEFAULT_PRICES), problems),
            price_currency=(env.get("PRICE_CURRENCY", "").strip() or "USD").upper(),
            opt_out_footer=env.get("OPT_OUT_FOOTER", "").strip() or "Reply STOP to opt out",
            max_segments_warning=number("MAX_SEGMENTS_WARNING", "2"),
            phone_hash_key_secret=required("PHONE_HASH_KEY_SECRET"),
            undeliverable_error_codes=_codes(env.get("UNDELIVERABLE_ERROR_CODES", DEFAULT_UNDELIVERABLE_CODES), problems),
            opt_out_keywords=env.get("OPT_OUT_KEYWORDS", "ARRET,STOPP,AFMELDEN").strip(),
            opt_in_keywords=env.get("OPT_IN_KEYWORDS", "").strip(),
            help_keywords=env.get("HELP_KEYWORDS", "").strip(),
            polite_opt_out=env.get("POLITE_OPT_OUT", "").strip().lower() or "opt_out",
            help_text=env.get("HELP_TEXT", "").strip() or DEFAULT_HELP_TEXT,
            opt_out_reply=env.get("OPT_OUT_REPLY", "").strip() or DEFAULT_OPT_OUT_REPLY,
            opt_in_reply=env.get("OPT_IN_REPLY", "").strip() or DEFAULT_OPT_IN_REPLY,
            twilio_answers_keywords=_flag(env.get("TWILIO_ANSWERS_KEYWORDS", "true"), "TWILIO_ANSWERS_KEYWORDS", problems),
            subscription_confirm_hours=number("SUBSCRIPTION_CONFIRM_HOURS", "24"),
            allowed_countries=_countries(env.get("ALLOWED_COUNTRIES", DEFAULT_ALLOWED_COUNTRIES), problems),
            subscribe_limit_per_number=number("SUBSCRIBE_LIMIT_PER_NUMBER", "3"),
            subscribe_limit_per_caller=number("SUBSCRIBE_LIMIT_PER_CALLER", "100"),
            codes_api_key_secret=required("CODES_API_KEY_SECRET"),
            guesses_per_ip=number("GUESSES_PER_IP", "20"),
            guesses_in_total=number("GUESSES_IN_TOTAL", "1000"),
            code_query_parameter=env.get("CODE_QUERY_PARAMETER", "").strip() or "code",
        )
        try:
            settings.keyword_policy()
        except ValueError as exc:
            problems.append(str(exc))
        sid = settings.twilio_account_sid
        if sid and not (sid.startswith("AC") and len(sid) == 34):
            problems.append("TWILIO_ACCOUNT_SID must be AC followed by 32 hex digits")
        if settings.public_webhook_base_url and not settings.public_webhook_base_url.startswith(
            ("https://", "http://127.0.0.1", "http://localhost")
        ):
            problems.append("PUBLIC_WEBHOOK_BASE_URL must be an https:// URL")
        if not re.match(r"^[A-Za-z0-9_.-]{1,64}$", settings.code_query_parameter):
            problems.append("CODE_QUERY_PARAMETER must be a query parameter name (letters, digits, _ . -)")
        if problems:
            raise ConfigurationError("; ".join(problems))
        return settings

    def keyword_policy(self):
        from smsinvite.keywords import KeywordPolicy

        return KeywordPolicy.parse(
            opt_out=self.opt_out_keywords, opt_in=self.opt_in_keywords, help=self.help_keywords,
            polite=self.polite_opt_out,
        )

    def require_webhook_base_url(self) -> str:
        """Signatures and callback URLs need the public URL; refuse to guess it from the request."""
        if not self.public_webhook_base_url:
            raise ConfigurationError("PUBLIC_WEBHOOK_BASE_URL is not set (deploy parameter PublicWebhookBaseUrl)")
        return self.public_webhook_base_url

    def price_per_segment(self, country: str | None) -> float:
        return self.prices_per_segment.get((country or "").upper(), self.prices_per_segment["*"])

    @property
    def default_sender(self) -> str:
        return self.twilio_messaging_service_sid or self.twilio_from_number
