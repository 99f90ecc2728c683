"""Invitation codes: generated from `secrets`, or taken from a campaign's pool of tokens; unique system-wide.

Generation, settings and expiry are plain Python. `CodeIssuer` is the codes' storage adapter.

Stable codes: a recipient's code is written in one DynamoDB transaction with the code's own item:
- Put the code item, on condition that no item has this code (uniqueness across the whole system);
- set `code` on the recipient, on condition that it exists and has no code yet.

Either both are written or neither is, so no code is ever left without its recipient. A repeated call,
including one after a crash or a lost response, reads the code back from the recipient; two concurrent
calls for one recipient cannot both win the recipient's condition. A pool code is taken the same way,
with an update that only applies while the code still waits in this campaign's pool: two takers never
get the same code.
"""

from __future__ import annotations

import math
import random
import secrets
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum
from typing import Protocol

from pynamodb.exceptions import TransactWriteError
from pynamodb.transactions import TransactWrite

from smsinvite.batches import DynamoBatches
from smsinvite.errors import InvalidInput, NotFound, SmsInviteError, TemporarilyUnavailable
from smsinvite.store import Store, utcnow

# Digits 2-9 and the consonants without L and Y. Gone: 0 and 1 (read as O, I, l), every vowel and Y
# (so no code spells a word, and I, O and U are ambiguous anyway), and L (read as 1 when lowercased).
# Upper case only, within the short link's shape ([A-Za-z0-9]{4,64}).
ALPHABET = "23456789BCDFGHJKMNPQRSTVWXZ"
AMBIGUOUS = frozenset("0O1IlLU")
BITS_PER_CHARACTER = math.log2(len(ALPHABET))
MIN_ENTROPY_BITS = 40
DEFAULT_LENGTH = 12  # 57 bits
MAX_LENGTH = 64
DEFAULT_PURGE_AFTER = timedelta(days=30)


class CodeSource(str, Enum):
    GENERATED = "generated"
    TOKENS = "tokens"


class InvalidCodeSettings(InvalidInput):
    code = "invalid_code_settings"


class PoolExhausted(SmsInviteError):
    """The tokens pool holds fewer codes than the recipients that need one."""

    code = "pool_exhausted"
    http_status = 409

    def __init__(self, campaign_id: str, missing: int) -> None:
        super().__init__(
            f"campaign {campaign_id} needs {missing} more code{'s' if missing != 1 else ''} than its pool holds;"
            " upload a tokens file with at least that many codes"
        )
        self.missing = missing


class NoFreeCode(SmsInviteError):
    """Every freshly generated code was already taken: a code space far too small, or a broken generator."""

    code = "no_free_code"
    http_status = 500


def entropy_bits(length: int, alphabet: str = ALPHABET) -> float:
    return length * math.log2(len(alphabet))


def generate_code(length: int = DEFAULT_LENGTH) -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(length))


@dataclass(frozen=True)
class CodeSettings:
    length: int = DEFAULT_LENGTH
    source: CodeSource = CodeSource.GENERATED
    expires_after: timedelta | None = None
    # How long an expired code's item is kept (reports, "link expired" answers) before DynamoDB's TTL.
    purge_after: timedelta = DEFAULT_PURGE_AFTER

    def __post_init__(self) -> None:
        problems = []
        if not isinstance(self.length, int) or isinstance(self.length, bool):
            problems.append("length must be a whole number")
        elif entropy_bits(self.length) < MIN_ENTROPY_BITS:
            shortest = math.ceil(MIN_ENTROPY_BITS / BITS_PER_CHARACTER)
            problems.append(
                f"length {self.length} gives {entropy_bits(self.length):.1f} bits of entropy; codes need at least"
                f" {MIN_ENTROPY_BITS} bits, so a length of at least {shortest}"
            )
        elif self.length > MAX_LENGTH:
            problems.append(f"length must be at most {MAX_LENGTH}")
        try:
            CodeSource(self.source)
        except ValueError:
            problems.append("source must be 'generated' or 'tokens'")
        if self.expires_after is not None and self.expires_after <= timedelta(0):
            problems.append("expires_after must be positive")
        if self.purge_after < timedelta(0):
            problems.append("purge_after must not be negative")
        if problems:
            raise InvalidCodeSettings("invalid code settings", details=problems)
        object.__setattr__(self, "source", CodeSource(self.source))

    @property
    def entropy_bits(self) -> float:
        return entropy_bits(self.length)

    def generate(self) -> str:
        return generate_code(self.length)

    def expiry(self, now: datetime) -> datetime | None:
        return now + self.expires_after if self.expires_after is not None else None

    def purge_at(self, expires_at: datetime | None) -> int | None:
        """The TTL (epoch seconds) for a code expiring at `expires_at`; None keeps it for good."""
        return int((expires_at + self.purge_after).timestamp()) if expires_at is not None else None


class _Code(Protocol):
    recipient_id: str | None
    expires_at: datetime | None


def is_usable(record: _Code, now: datetime) -> bool:
    """Given to a recipient and not expired. A code still waiting in a pool was never sent, so it is not."""
    return record.recipient_id is not None and (record.expires_at is None or now < record.expires_at)


class _Outcome(Enum):
    WRITTEN = "written"
    CODE_TAKEN = "code_taken"  # another item has this code, or the pool code was taken by someone else
    RECIPIENT_TAKEN = "recipient_taken"  # the recipient already has a code, or does not exist
    BUSY = "busy"  # a concurrent transaction or throttling: try again
    NOT_APPLIED = "not_applied"  # nothing wrong with this pair; another pair cancelled the transaction


_BUSY_REASONS = frozenset(
    {"TransactionConflict", "ThrottlingError", "ProvisionedThroughputExceeded", "RequestLimitExceeded"}
)


class CodeIssuer:
    """Gives recipients codes, generated or from the campaign's pool; a recipient keeps the code it got."""

    def __init__(
        self,
        store: Store,
        settings: CodeSettings | None = None,
        *,
        generate: Callable[[], str] | None = None,
        max_attempts: int = 8,
        group_size: int = 25,
        batches: DynamoBatches | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.store = store
        self.settings = settings or CodeSettings()
        self._generate = generate or self.settings.generate
        self.max_attempts = max_attempts
        # (recipient, code) pairs per transaction: two items each, and DynamoDB allows 100.
        self.group_size = group_size
        self.batches = batches or DynamoBatches()
        self.sleep = sleep

    # ------------------------------------------------------------------ one recipient
    def issue(self, campaign_id: str, recipient_id: str, expires_at: datetime | None = None) -> str:
        """The recipient's code: the one it already has, or a fresh generated one."""
        existing = self.code_of(campaign_id, recipient_id)
        if existing is not None:
            return existing
        expires_at = self._expiry(expires_at)
        collisions = 0
        for attempt in range(self.max_attempts):
            code = self._generate()
            outcome = self._commit(campaign_id, [(recipient_id, code)], expires_at, from_pool=False)[0]
            if outcome is _Outcome.WRITTEN:
                return code
            if outcome is _Outcome.RECIPIENT_TAKEN:
                return self._code_after_race(campaign_id, recipient_id)
            if outcome is _Outcome.CODE_TAKEN:
                collisions += 1
            else:
                self._backoff(attempt)
        if collisions:
            raise NoFreeCode(f"no unused code found in {self.max_attempts} attempts")
        raise TemporarilyUnavailable("the codes table stayed busy; try again")

    def take_from_pool(self, campaign_id: str, recipient_id: str, expires_at: datetime | None = None) -> str:
        """The recipient's code: the one it already has, or one taken from the campaign's pool."""
        existing = self.code_of(campaign_id, recipient_id)
        if existing is not None:
            return existing
        # Concurrent takers shuffle each page of candidates, so they rarely try the same code first.
        candidates = _PoolCandidates(self.store, campaign_id, shuffle=True)
        return self._take(campaign_id, recipient_id, self._expiry(expires_at), candidates)

    def code_of(self, campaign_id: str, recipient_id: str) -> str | None:
        """The code the recipient already has; NotFound when the recipient does not exist."""
        return self.store.recipient(campaign_id, recipient_id).code

    # ------------------------------------------------------------------ the pool
    def pool_size(self, campaign_id: str, *, up_to: int | None = None) -> int:
        """Codes waiting in the campaign's pool, counting no further than `up_to` when given."""
        pool = self.store.t.codes.by_pool
        if up_to is None:
            return pool.count(campaign_id)
        return sum(1 for _ in pool.query(campaign_id, limit=up_to, page_size=min(max(up_to, 1), 1000)))

    def missing_codes(self, campaign_id: str, needed: int) -> int:
        """How many codes the pool lacks for `needed` more recipients (0 when it has enough)."""
        if needed <= 0:
            return 0
        return needed - self.pool_size(campaign_id, up_to=needed)

    def require_pool(self, campaign_id: str, needed: int) -> None:
        """Raise PoolExhausted, naming how many codes are missing, unless the pool holds `needed` codes."""
        missing = self.missing_codes(campaign_id, needed)
        if missing:
            raise PoolExhausted(campaign_id, missing)

    # ------------------------------------------------------------------ many recipients
    def assign_many(
        self, campaign_id: str, recipient_ids: Iterable[str], expires_at: datetime | None = None
    ) -> dict[str, str]:
        """Every recipient's code, by recipient id, from the source in the settings.

        Recipients that have a code keep it. In tokens mode, a pool too small for the recipients still
        without a code raises PoolExhausted before any code is assigned. Pairs are written in
        transactions of `group_size`; a cancelled group is redone one recipient at a time.
        """
        ids = list(dict.fromkeys(recipient_ids))
        recipients = self.store.t.recipients
        found = {r.recipient_id: r for r in self.batches.get(recipients, [(campaign_id, r) for r in ids])}
        absent = len(ids) - len(found)
        if absent:
            raise NotFound(f"{absent} of the recipients do not exist in campaign {campaign_id}")
        codes = {r: found[r].code for r in ids if found[r].code}
        need = [r for r in ids if r not in codes]
        if not need:
            return codes
        expires_at = self._expiry(expires_at)
        if self.settings.source is CodeSource.TOKENS:
            self.require_pool(campaign_id, len(need))
            codes.update(self._take_many(campaign_id, need, expires_at))
        else:
            codes.update(self._issue_many(campaign_id, need, expires_at))
        return codes

    def _issue_many(self, campaign_id: str, need: Sequence[str], expires_at: datetime | None) -> dict[str, str]:
        codes: dict[str, str] = {}
        for group in _groups(need, self.group_size):
            pairs = list(zip(group, self._distinct_codes(len(group))))
            outcomes = self._commit(campaign_id, pairs, expires_at, from_pool=False)
            for (recipient_id, code), outcome in zip(pairs, outcomes):
                if outcome is _Outcome.WRITTEN:
                    codes[recipient_id] = code
                else:
                    codes[recipient_id] = self.issue(campaign_id, recipient_id, expires_at)
        return codes

    def _take_many(self, campaign_id: str, need: Sequence[str], expires_at: datetime | None) -> dict[str, str]:
        codes: dict[str, str] = {}
        candidates = _PoolCandidates(self.store, campaign_id, shuffle=False)
        try:
            for group in _groups(need, self.group_size):
                pairs = list(zip(group, candidates.take(len(group))))
                outcomes = self._commit(campaign_id, pairs, expires_at, from_pool=True) if pairs else []
                if len(pairs) == len(group) and all(o is _Outcome.WRITTEN for o in outcomes):
                    codes.update(pairs)
                    continue
                for (_, code), outcome in zip(pairs, outcomes):
                    if outcome not in (_Outcome.WRITTEN, _Outcome.CODE_TAKEN):
                        candidates.put_back(code)
                for recipient_id in group:
                    codes[recipient_id] = self._take(campaign_id, recipient_id, expires_at, candidates)
        except PoolExhausted:
            # A concurrent taker emptied the pool after the count: say how many are still missing.
            raise PoolExhausted(campaign_id, len(need) - len(codes)) from None
        return codes

    # ------------------------------------------------------------------ writes
    def _take(
        self, campaign_id: str, recipient_id: str, expires_at: datetime | None, candidates: _PoolCandidates
    ) -> str:
        existing = self.code_of(campaign_id, recipient_id)
        if existing is not None:
            return existing
        busy = 0
        for code in candidates:
            outcome = self._commit(campaign_id, [(recipient_id, code)], expires_at, from_pool=True)[0]
            if outcome is _Outcome.WRITTEN:
                return code
            if outcome is _Outcome.RECIPIENT_TAKEN:
                candidates.put_back(code)
                return self._code_after_race(campaign_id, recipient_id)
            if outcome is not _Outcome.CODE_TAKEN:
                candidates.put_back(code)
                busy += 1
                if busy >= self.max_attempts:
                    raise TemporarilyUnavailable("the codes table stayed busy; try again")
                self._backoff(busy)
        raise PoolExhausted(campaign_id, 1)

    def _commit(
        self,
        campaign_id: str,
        pairs: Sequence[tuple[str, str]],
        expires_at: datetime | None,
        *,
        from_pool: bool,
    ) -> list[_Outcome]:
        """Write each (recipient, code) pair: the code's item, and the code on its recipient, all or nothing."""
        codes, recipients = self.store.t.codes, self.store.t.recipients
        purge_at = self.settings.purge_at(expires_at)
        try:
            with TransactWrite(connection=self.store._connection()) as transaction:
                for recipient_id, code in pairs:
                    if from_pool:
                        actions = [codes.recipient_id.set(recipient_id), codes.pool_campaign_id.remove()]
                        if expires_at is not None:
                            actions += [codes.expires_at.set(expires_at), codes.purge_at.set(purge_at)]
                        transaction.update(
                            codes(code), actions=actions, condition=codes.pool_campaign_id == campaign_id
                        )
                    else:
                        record = codes(
                            code,
                            campaign_id=campaign_id,
                            recipient_id=recipient_id,
                            expires_at=expires_at,
                            purge_at=purge_at,
                        )
                        transaction.save(record, condition=codes.code.does_not_exist())
                    code_actions = [recipients.code.set(code)]
                    if expires_at is not None:
                        code_actions.append(recipients.code_expires_at.set(expires_at))
                    transaction.update(
                        recipients(campaign_id, recipient_id),
                        actions=code_actions,
                        condition=recipients.recipient_id.exists() & recipients.code.does_not_exist(),
                    )
        except TransactWriteError as exc:
            reasons = [r.code if r is not None else None for r in exc.cancellation_reasons]
            if not reasons:
                raise
            n = len(pairs)
            if from_pool:  # two updates a pair, in the order written
                return [_outcome(reasons[2 * i], reasons[2 * i + 1]) for i in range(n)]
            # PynamoDB sends every put before every update: the code items, then the recipients.
            return [_outcome(reasons[i], reasons[n + i]) for i in range(n)]
        return [_Outcome.WRITTEN] * len(pairs)

    def _distinct_codes(self, n: int) -> list[str]:
        """`n` fresh codes, no two alike (a transaction may not write one item twice)."""
        codes: dict[str, None] = {}
        for _ in range(n * self.max_attempts):
            codes[self._generate()] = None
            if len(codes) == n:
                break
        else:
            raise NoFreeCode("the generator keeps repeating itself")
        return list(codes)

    def _code_after_race(self, campaign_id: str, recipient_id: str) -> str:
        code = self.code_of(campaign_id, recipient_id)
        if code is None:  # only if the recipient was deleted and written again in between
            raise TemporarilyUnavailable("the recipient changed while its code was written; try again")
        return code

    def _expiry(self, expires_at: datetime | None) -> datetime | None:
        return expires_at if expires_at is not None else self.settings.expiry(utcnow())

    def _backoff(self, attempt: int) -> None:
        self.sleep(random.uniform(0, min(1.0, 0.02 * 2**attempt)))


def _outcome(code_reason: str | None, recipient_reason: str | None) -> _Outcome:
    if recipient_reason == "ConditionalCheckFailed":
        return _Outcome.RECIPIENT_TAKEN
    if code_reason == "ConditionalCheckFailed":
        return _Outcome.CODE_TAKEN
    if code_reason in _BUSY_REASONS or recipient_reason in _BUSY_REASONS:
        return _Outcome.BUSY
    if code_reason in (None, "None") and recipient_reason in (None, "None"):
        return _Outcome.NOT_APPLIED
    return _Outcome.BUSY


def _groups(items: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class _PoolCandidates:
    """Codes waiting in a campaign's pool, read once through the by-pool index, page by page.

    The index is eventually consistent and KEYS_ONLY: a candidate may already be taken, which the
    conditional take finds out. Codes handed out but not used (a cancelled group) are put back.
    """

    PAGE = 50

    def __init__(self, store: Store, campaign_id: str, *, shuffle: bool) -> None:
        self._store, self._campaign_id, self._shuffle = store, campaign_id, shuffle
        self._ready: deque[str] = deque()
        self._cursor: dict | None = None
        self._done = False

    def __iter__(self) -> Iterator[str]:
        while True:
            code = self._next()
            if code is None:
                return
            yield code

    def take(self, n: int) -> list[str]:
        taken = []
        while len(taken) < n and (code := self._next()) is not None:
            taken.append(code)
        return taken

    def put_back(self, code: str) -> None:
        self._ready.appendleft(code)

    def _next(self) -> str | None:
        while not self._ready and not self._done:
            query = self._store.t.codes.by_pool.query(
                self._campaign_id, limit=self.PAGE, last_evaluated_key=self._cursor
            )
            page = [record.code for record in query]
            self._cursor = query.last_evaluated_key
            self._done = not self._cursor
            if self._shuffle:
                random.shuffle(page)
            self._ready.extend(page)
        return self._ready.popleft() if self._ready else None
