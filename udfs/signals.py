"""Stage-1 signals per log record: pattern groups, HTTP, severity and exception structure.

Pure and stateless. ``SignalMatcher.score`` turns one ``LogRecord`` into ``RecordSignals``, the
per-record facts the windowed statistics and the composite score build on. Matching is
case-insensitive and word-bounded ("room 12 booked" is not an OOM, "order 503 shipped" is not a
dependency failure) and level-aware (an INFO line only counts when it is unmistakably an OOM or a
crash). All patterns live in one compiled alternation scanned once with ``finditer``.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import NamedTuple

from udfs.records import Level, LogRecord


class Group(enum.Enum):
    """The eight pattern groups; values are the names used in incident events."""

    OOM = "oom"
    CRASH = "crash"
    RESOURCE = "resource"
    DEPENDENCY = "dependency"
    DATABASE = "database"
    TIMEOUT = "timeout"
    CONNECTION = "connection"
    AUTH = "auth"


DEFAULT_WEIGHTS: Mapping[Group, float] = MappingProxyType(
    {
        Group.OOM: 0.95,
        Group.CRASH: 0.95,
        Group.RESOURCE: 0.80,
        Group.DEPENDENCY: 0.75,
        Group.DATABASE: 0.75,
        Group.TIMEOUT: 0.70,
        Group.CONNECTION: 0.65,
        Group.AUTH: 0.40,
    }
)
IMMEDIATE_GROUPS = frozenset({Group.OOM, Group.CRASH, Group.RESOURCE})

MAX_SCAN_CHARS = 4_096
"""Only the first this-many characters of a body are scanned for patterns (bounds the cost)."""
STACK_SATURATION = 20
"""Stack depth at which the structural score saturates at 1.0."""


class RecordSignals(NamedTuple):
    groups: frozenset[Group]
    """Groups that COUNT for this record (level-aware)."""
    pattern: float
    """Max weight among ``groups``, 0 when none."""
    http: float
    """HTTP category score in [0, 1] from ``LogRecord.http_status``."""
    severity: float
    """Severity category score in [0, 1]."""
    structural: float
    """Exception structure / stack depth score in [0, 1]."""
    failure: bool
    """Counts as a failure in error-rate statistics."""
    client_error: bool
    """Validation (HTTP 400/404/409/422 ...) or auth failure: counted apart, never a failure."""
    immediate: Group | None
    """OOM / CRASH / RESOURCE that opens an incident at once, else None."""
    stack_depth: int


# Patterns are written in lower case: the scanned text is lower-cased once, which is cheaper than
# re.IGNORECASE. Every alternative starts with a plain letter or digit right after a word boundary
# and ends at one, so "room", "zoom", "bookkeeping" and "paniculata" never match. Alternatives
# are dispatched on their first character (see `_compile_groups`), which keeps one regex fast.
_HTTP_PREFIXES = (r"http(?:/\d(?:\.\d)?)?", r"status(?:[ _]?code)?", "code", "response", "returned", "got")


def _each(prefixes: tuple[str, ...], suffix: str) -> tuple[str, ...]:
    return tuple(p + suffix for p in prefixes)


def _http_looking(codes: str) -> tuple[str, ...]:
    """HTTP-looking status codes ("HTTP 401", "status=503", "returned 403"), never a bare number."""
    return _each(_HTTP_PREFIXES, r"[ :=]*" + codes + r"\b")


_TIMEOUT_KINDS = (
    *("read", "write", "connect", "connection", "socket", "request", "query", "statement"),
    *("operation", "idle", "io", "http", ""),
)

_GROUP_PATTERNS: dict[Group, tuple[str, ...]] = {
    Group.OOM: (
        r"outofmemory(?:error|exception)?\b",
        r"out of memory\b",
        r"oom[-_ ]?kill(?:ed|er|ing|_process)?\b",
        r"oom\b",
        *_each(("cannot", "can't", "could not", "unable to", "failed to"), r" allocate memory\b"),
        r"memory allocation failed\b",
        r"malloc(?:\(\))? failed\b",
        r"enomem\b",
        r"memoryerror\b",
        r"heap space\b",
        r"gc overhead limit exceeded\b",
        r"memory limit (?:exceeded|reached)\b",
        r"exceeded (?:the )?memory limit\b",
        r"killed process \d+\b",
    ),
    Group.CRASH: (
        r"segmentation fault\b",
        r"segfault\b",
        r"sig(?:segv|abrt|bus|ill|fpe)\b",
        r"panic:",
        r"panicked at\b",
        r"kernel panic\b",
        r"core dumped\b",
        r"fatal (?:error|exception|signal)\b",
        r"crashloopbackoff\b",
        r"stackoverflowerror\b",
        r"stack overflow\b",
    ),
    Group.RESOURCE: (
        r"no space left on device\b",
        r"disk (?:is )?full\b",
        r"disk quota exceeded\b",
        *_each(("out of", "insufficient"), r" disk space\b"),
        r"too many open files\b",
        r"e(?:m|n)file\b",
        r"enospc\b",
        r"edquot\b",
        *_each(("fd", "file descriptor"), r" limit\b"),
        r"file descriptors? exhausted\b",
        r"out of (?:file descriptors|inodes)\b",
    ),
    Group.DEPENDENCY: (
        r"bad gateway\b",
        r"service[ _]unavailable\b",
        r"gateway[ _]time-?out\b",
        r"upstream connect error\b",
        r"no healthy upstream\b",
        r"upstream (?:request )?timeout\b",
        r"upstream prematurely closed\b",
        r"circuit[ _-]?breaker(?: is)?[ _-]?(?:open|tripped)\w*",
        r"circuit(?: is)? open\b",
        r"brokencircuitexception\b",
        *_http_looking("50[234]"),
    ),
    Group.DATABASE: (
        r"deadlock\w*",
        *_each(("connection pool", "pool"), r" (?:is |was )?exhausted\b"),
        r"connection is not available\b",
        r"could not get (?:a )?(?:resource|connection) from (?:the )?pool\b",
        r"unable to acquire (?:jdbc )?connection\b",
        r"too many (?:connections|clients)\b",
        r"remaining connection slots are reserved\b",
        r"lock wait timeout\b",
        r"lock timeout\b",
        r"could not serialize access\b",
        r"serialization failure\b",
        r"database is locked\b",
    ),
    Group.TIMEOUT: (
        *_each(("context deadline", "deadline"), r"[ _]?exceeded\b"),
        r"etimedout\b",
        r"timed[ -]?out\b",
        *_each(_TIMEOUT_KINDS, r"timeout(?:error|exception|s)?\b"),
    ),
    Group.CONNECTION: (
        r"econn(?:refused|reset|aborted)\b",
        r"epipe\b",
        r"e(?:host|net)unreach\b",
        r"connection[ _-]?(?:refused|reset|aborted)\w*",
        r"broken[ _-]?pipe\w*",
        r"no route to host\b",
        r"network is unreachable\b",
        r"host (?:is )?unreachable\b",
        *_each(("could not", "couldn't", "unable to", "failed to"), r" connect\b"),
        r"connectexception\b",
        r"connection (?:was )?lost\b",
    ),
    Group.AUTH: (
        r"access[ _]?denied\w*",
        r"permission[ _]denied\b",
        r"eacces\b",
        *_each(("token", "jwt", "session", "credential", "credentials"), r" (?:has |have )?expired\b"),
        r"expired (?:token|jwt|credentials?)\b",
        r"tokenexpired\w*",
        r"unauthori[sz]ed\b",
        r"forbidden\b",
        r"not authori[sz]ed\b",
        r"auth(?:entication)? (?:failed|failure|error)\b",
        r"invalid (?:credentials|token|api key|password|signature)\b",
        r"bad credentials\b",
        r"login failed\b",
        *_http_looking("40[13]"),
    ),
}

# Unmistakable OOM / crash evidence: the only matches that count on INFO / DEBUG / TRACE lines.
_UNMISTAKABLE_PATTERNS: dict[Group, tuple[str, ...]] = {
    Group.OOM: (
        r"\bout of memory:? kill(?:ed)? process\b",
        r"\boom[-_]kill(?:ed|er)?\b",
        r"\boom_kill_process\b",
        r"\boomkilled\b",
        r"\boutofmemoryerror\b",
    ),
    Group.CRASH: (
        r"\bsegfault at\b",
        r"\bsigsegv\b",
        r"\bcore dumped\b",
        r"^panic:",
    ),
}
# Cheap `in` checks on the lower-cased text before the unmistakable regex runs at all.
_UNMISTAKABLE_KEYWORDS = ("memory", "oom", "segfault", "sigsegv", "core dumped", "panic:")


def _mentions_unmistakable(lowered: str) -> bool:
    """Any of ``_UNMISTAKABLE_KEYWORDS`` in ``lowered``: the pre-check on every INFO line, spelled
    out because ``any(k in lowered for k in ...)`` cost four times as much (tests keep them equal)."""
    return (
        "memory" in lowered or "oom" in lowered or "segfault" in lowered or "sigsegv" in lowered
        or "core dumped" in lowered or "panic:" in lowered
    )  # fmt: skip


def _compile_groups(patterns: Mapping[Group, tuple[str, ...]]) -> tuple[re.Pattern[str], dict[str, Group]]:
    """One regex: ``\b`` then a branch per first character, each alternative a named group.

    Python's regex engine tries alternatives one by one; dispatching on the first character first
    means a word start tries ~20 one-character branches instead of ~130 alternatives. Each
    alternative is its own named group ``<group>_<n>`` so ``lastgroup`` names the pattern group.
    """
    by_char: dict[str, list[str]] = {}
    names: dict[str, Group] = {}
    for group, alternatives in patterns.items():
        for i, alt in enumerate(alternatives):
            first, rest = alt[0], alt[1:]
            if not first.isalnum() or rest[:1] in ("?", "*", "+", "{"):
                raise ValueError(f"signal pattern must start with a plain character: {alt!r}")
            name = f"{group.value}_{i}"
            names[name] = group
            by_char.setdefault(first, []).append(f"(?P<{name}>{rest})")
    branches = (f"{re.escape(c)}(?:{'|'.join(alts)})" for c, alts in by_char.items())
    return re.compile(r"\b(?:" + "|".join(branches) + ")"), names


def _compile_plain(patterns: Mapping[Group, tuple[str, ...]]) -> re.Pattern[str]:
    parts = (f"(?P<{g.value}>{'|'.join(alts)})" for g, alts in patterns.items())
    return re.compile("|".join(parts), re.MULTILINE)


_GROUPS_RE, _GROUP_BY_NAME = _compile_groups(_GROUP_PATTERNS)
_UNMISTAKABLE_RE = _compile_plain(_UNMISTAKABLE_PATTERNS)
_UNMISTAKABLE_BY_NAME = {g.value: g for g in _UNMISTAKABLE_PATTERNS}

# A client error named in the text when the record carries no HTTP status attribute: an
# HTTP-looking 4xx code, a 4xx reason phrase, or a validation failure.
_CLIENT_ERROR_RE = re.compile(
    r"\b(?:"
    + "(?:" + "|".join(_HTTP_PREFIXES) + ")"
    + r"[ :=]*(?P<code>4\d\d)\b"
    + r"|(?:400 )?bad request\b|404 not found\b|409 conflict\b|(?:422 )?unprocessable entity\b"
    + r"|validation (?:failed|error)\w*|validationerror\b"
    + r"|invalid[ _](?:request|input|argument|parameter)s?\b)"
)

# Substrings every `_CLIENT_ERROR_RE` match contains: a cheap pre-check before the regex.
_CLIENT_ERROR_KEYWORDS = (
    *("http", "status", "code", "response", "returned", "got"),
    *("bad request", "not found", "conflict", "unprocessable", "validation", "invalid"),
)

# One stack frame per line: Java / JS / .NET ("at x.y(...)"), Python ('File "...", line N'),
# Go ("\t/path/file.go:12"), Ruby ("from file.rb:12:in").
_FRAME_RE = re.compile(
    r'^(?:[ \t]+at [^\n]*[(:]|[ \t]*File "[^"\n]*", line \d+|\t\S+\.go:\d+|[ \t]*from \S+:\d+:in )',
    re.MULTILINE,
)


def _check_weights(weights: Mapping[Group, float]) -> dict[Group, float]:
    merged = dict(DEFAULT_WEIGHTS)
    for group, weight in weights.items():
        if not isinstance(group, Group):
            raise ValueError(f"signal weight key must be a Group, got {group!r}")
        if not 0.0 <= float(weight) <= 1.0:
            raise ValueError(f"signal weight for {group.value} must be in [0, 1], got {weight!r}")
        merged[group] = float(weight)
    return merged


def http_score(status: int | None) -> float:
    """HTTP category score: 5xx 0.7 (502/503/504 0.8), 429 0.4, other 4xx 0.2, else 0."""
    if status is None:
        return 0.0
    if status in (502, 503, 504):
        return 0.8
    if 500 <= status <= 599:
        return 0.7
    if status == 429:
        return 0.4
    if 400 <= status <= 499:
        return 0.2
    return 0.0


def severity_score(level: Level) -> float:
    """Severity category score: FATAL 1.0, ERROR 0.7, WARN 0.4, else 0 (UNSPECIFIED too)."""
    if level >= Level.FATAL:
        return 1.0
    if level >= Level.ERROR:
        return 0.7
    if level >= Level.WARN:
        return 0.4
    return 0.0


def stack_depth(text: str) -> int:
    """Number of stack frames in a stack trace (Java, JS, .NET, Python, Go, Ruby)."""
    if not text:
        return 0
    return len(_FRAME_RE.findall(text))


def _is_client_status(status: int) -> bool:
    return 400 <= status <= 499 and status not in (408, 429)


def _client_error_in_text(text: str) -> bool:
    if not any(k in text for k in _CLIENT_ERROR_KEYWORDS):
        return False
    for m in _CLIENT_ERROR_RE.finditer(text):
        code = m.group("code")
        if code is None or _is_client_status(int(code)):
            return True
    return False


class _GroupFacts(NamedTuple):
    """What a set of counted groups implies, cached per distinct set."""

    pattern: float
    immediate: Group | None
    non_auth: bool
    auth_only: bool


_NO_GROUPS: frozenset[Group] = frozenset()


def _plain(status: int | None) -> RecordSignals:
    client_error = status is not None and _is_client_status(status)
    failure = status is not None and 500 <= status <= 599
    return RecordSignals(frozenset(), 0.0, http_score(status), 0.0, 0.0, failure, client_error, None, 0)


# Signals of an INFO/DEBUG/TRACE line with no pattern and no exception, by HTTP status.
_PLAIN_BY_STATUS: dict[int | None, RecordSignals] = {s: _plain(s) for s in (None, *range(100, 600))}


def _plain_signals(status: int | None) -> RecordSignals:
    """Signals of a below-WARN record without pattern matches, exception or multi-line body."""
    found = _PLAIN_BY_STATUS.get(status)
    return found if found is not None else _plain(status)


_UNSPECIFIED, _WARN = Level.UNSPECIFIED, Level.WARN
"""Read once: in Python 3.11 reading an enum member off its class costs ~0.2-0.4 us, twice per record."""


class SignalMatcher:
    """Scores records against the eight pattern groups with configurable group weights."""

    def __init__(self, weights: Mapping[Group, float] = DEFAULT_WEIGHTS) -> None:
        self._weights = _check_weights(weights)
        order = {g: i for i, g in enumerate(Group)}
        # Highest weight first, ties in declaration order: a deterministic `immediate` choice.
        self._immediate_rank = sorted(IMMEDIATE_GROUPS, key=lambda g: (-self._weights[g], order[g]))
        self._facts_by_groups: dict[frozenset[Group], _GroupFacts] = {}

    @property
    def weights(self) -> Mapping[Group, float]:
        return MappingProxyType(self._weights)

    def groups_in(self, text: str) -> frozenset[Group]:
        """Raw pattern matches in ``text`` (case-insensitive, word-bounded, not level-aware)."""
        return self._scan(text[:MAX_SCAN_CHARS].lower())

    @staticmethod
    def _scan(lowered: str) -> frozenset[Group]:
        names = {m.lastgroup for m in _GROUPS_RE.finditer(lowered)}
        if not names:
            return _NO_GROUPS
        return frozenset({_GROUP_BY_NAME[n] for n in names if n is not None})

    @staticmethod
    def _scan_unmistakable(lowered: str) -> frozenset[Group]:
        if not _mentions_unmistakable(lowered):
            return frozenset()
        names = {m.lastgroup for m in _UNMISTAKABLE_RE.finditer(lowered)}
        return frozenset(_UNMISTAKABLE_BY_NAME[n] for n in names if n is not None)

    def score(self, record: LogRecord) -> RecordSignals:
        """Stage-1 signals for one record. Pure: depends on the record and the weights only."""
        level = record.level
        text = record.body[:MAX_SCAN_CHARS]
        if record.exception_type or record.exception_message:
            text = f"{text}\n{record.exception_type}\n{record.exception_message}"
        lowered = text.lower()
        if _UNSPECIFIED < level < _WARN:
            groups = self._scan_unmistakable(lowered)
            if not groups and "\n" not in text and not record.exception_stacktrace:
                return _plain_signals(record.http_status)  # the common INFO line
        else:
            groups = self._scan(lowered)
        return self._signals(record, groups, lowered)

    def _facts(self, groups: frozenset[Group]) -> _GroupFacts:
        facts = self._facts_by_groups.get(groups)
        if facts is None:  # at most 2**8 distinct group sets: a bounded cache
            facts = _GroupFacts(
                pattern=max((self._weights[g] for g in groups), default=0.0),
                immediate=next((g for g in self._immediate_rank if g in groups), None),
                non_auth=bool(groups - {Group.AUTH}),
                auth_only=groups == {Group.AUTH},
            )
            self._facts_by_groups[groups] = facts
        return facts

    def _signals(self, record: LogRecord, groups: frozenset[Group], lowered: str) -> RecordSignals:
        level = record.level
        status = record.http_status
        depth = stack_depth(record.exception_stacktrace)
        if depth == 0 and "\n" in record.body:
            depth = stack_depth(record.body[:MAX_SCAN_CHARS])
        has_exception = bool(
            record.exception_type or record.exception_message or record.exception_stacktrace or depth
        )
        structural = 0.5 + 0.5 * min(depth, STACK_SATURATION) / STACK_SATURATION if has_exception else 0.0
        facts = self._facts(groups)
        if status is not None:
            client_error = _is_client_status(status)
        else:
            client_error = not facts.non_auth and _client_error_in_text(lowered)
        client_error = client_error or facts.auth_only
        server_error = status is not None and 500 <= status <= 599
        # A WARNING that carries a stack trace is an exception being handled, not advice (DETECTION.md).
        warned_exception = level >= Level.WARN and (depth > 0 or bool(record.exception_stacktrace))
        failure = (level >= Level.ERROR or server_error or facts.non_auth or warned_exception) and not client_error
        return RecordSignals(
            groups=groups,
            pattern=facts.pattern,
            http=http_score(status),
            severity=severity_score(level),
            structural=structural,
            failure=failure,
            client_error=client_error,
            immediate=facts.immediate,
            stack_depth=depth,
        )
