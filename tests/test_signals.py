"""Stage-1 per-record signals: word-bounded, level-aware pattern groups and category scores."""

from __future__ import annotations

from types import MappingProxyType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from udfs.records import Level, LogRecord
from udfs.signals import (
    DEFAULT_WEIGHTS,
    IMMEDIATE_GROUPS,
    Group,
    RecordSignals,
    SignalMatcher,
    http_score,
    stack_depth,
)

MATCHER = SignalMatcher()
NOTHING = RecordSignals(frozenset(), 0.0, 0.0, 0.0, 0.0, False, False, None, 0)


def rec(
    body: str,
    level: Level = Level.ERROR,
    *,
    http_status: int | None = None,
    exception_type: str = "",
    exception_message: str = "",
    exception_stacktrace: str = "",
) -> LogRecord:
    return LogRecord(
        tenant="acme",
        service="payment-api",
        service_namespace="shop",
        time_unix_nano=1_700_000_000_000_000_000,
        observed_time_unix_nano=1_700_000_000_000_000_000,
        severity_number=int(level),
        level=level,
        severity_text=level.name if level else "",
        body=body,
        body_truncated=False,
        trace_id="",
        span_id="",
        http_status=http_status,
        exception_type=exception_type,
        exception_message=exception_message,
        exception_stacktrace=exception_stacktrace,
        scope_name="app",
        resource_attributes=MappingProxyType({}),
        scope_attributes=MappingProxyType({}),
        attributes=MappingProxyType({}),
    )


def java_trace(frames: int) -> str:
    lines = ["java.lang.IllegalStateException: boom"]
    lines += [f"\tat com.acme.pay.Handler.step{i}(Handler.java:{10 + i})" for i in range(frames)]
    return "\n".join(lines)


# --- DETECTION.md Stage-1 hard requirements -------------------------------------------------

WORDS_NOT_SUBSTRINGS = ["room 12 booked", "zoom call", "request took 5023ms", "order 503 shipped"]


@pytest.mark.parametrize("body", WORDS_NOT_SUBSTRINGS)
@pytest.mark.parametrize("level", [Level.INFO, Level.WARN])
def test_room_zoom_5023ms_and_order_503_carry_no_signal(body: str, level: Level) -> None:
    assert MATCHER.groups_in(body) == frozenset()
    expected = NOTHING._replace(severity=0.4) if level == Level.WARN else NOTHING
    assert MATCHER.score(rec(body, level)) == expected


@pytest.mark.parametrize("body", WORDS_NOT_SUBSTRINGS)
def test_room_zoom_5023ms_and_order_503_carry_no_pattern_even_at_error(body: str) -> None:
    # ERROR level alone makes it a failure, but no pattern group and no pattern score.
    expected = RecordSignals(frozenset(), 0.0, 0.0, 0.7, 0.0, True, False, None, 0)
    assert MATCHER.score(rec(body, Level.ERROR)) == expected


@pytest.mark.parametrize(
    "text",
    [
        "bookkeeping done",
        "paniculata in the garden",
        "timeouts_total=0 metric",
        "user 401 logged in",
        "room 403 booked",
        "the boom of the doom",
        "forbiddenfruit module loaded",
        "processing 502 items",
        "seg 7 of 9",
        "Traceback (most recent call last):",
        "we should deadline this",
        "no healthy",
        "timeoutSeconds configured",
    ],
)
def test_substrings_and_bare_numbers_carry_no_signal(text: str) -> None:
    assert MATCHER.groups_in(text) == frozenset()


def test_info_kernel_oom_killer_line_counts_as_unmistakable_oom() -> None:
    body = "Out of memory: Killed process 4242 (java) total-vm:8123456kB, anon-rss:7000000kB"
    expected = RecordSignals(
        groups=frozenset({Group.OOM}),
        pattern=0.95,
        http=0.0,
        severity=0.0,
        structural=0.0,
        failure=True,
        client_error=False,
        immediate=Group.OOM,
        stack_depth=0,
    )
    assert MATCHER.score(rec(body, Level.INFO)) == expected


@pytest.mark.parametrize(
    ("body", "level", "group"),
    [
        ("memory cgroup out of memory: Killed process 12 (node)", Level.DEBUG, Group.OOM),
        ("kernel: java invoked oom-killer: gfp_mask=0x100cca", Level.INFO, Group.OOM),
        ("pod payment-api-7d9 reason OOMKilled exit 137", Level.INFO, Group.OOM),
        ("Exception in thread main java.lang.OutOfMemoryError: Java heap space", Level.TRACE, Group.OOM),
        ("kernel: app[311]: segfault at 0 ip 00007f sp 00007ff error 4", Level.INFO, Group.CRASH),
        ("received SIGSEGV, dumping", Level.INFO, Group.CRASH),
        ("Aborted (core dumped)", Level.DEBUG, Group.CRASH),
        ("panic: runtime error: invalid memory address or nil pointer dereference", Level.INFO, Group.CRASH),
    ],
)
def test_info_debug_counts_unmistakable_oom_and_crash(body: str, level: Level, group: Group) -> None:
    signals = MATCHER.score(rec(body, level))
    assert (signals.groups, signals.immediate, signals.failure) == (frozenset({group}), group, True)


@pytest.mark.parametrize(
    "body",
    [
        "request timeout set to 30s",
        "retrying after connection reset",
        "circuit breaker open for 5s, half-open next",
        "disk full check passed",
        "fatal error handler registered",
        "token expired, refreshing",
        "cache heap space 45% used",
        "config: panic: false",  # "panic:" only counts at line start on INFO
        "deadlock detector enabled",
    ],
)
def test_info_timeout_in_passing_is_not_an_error(body: str) -> None:
    assert MATCHER.groups_in(body) != frozenset()  # the words are there ...
    assert MATCHER.score(rec(body, Level.INFO)) == NOTHING  # ... but INFO does not count them


def test_same_timeout_phrase_counts_at_error_level() -> None:
    expected = RecordSignals(frozenset({Group.TIMEOUT}), 0.70, 0.0, 0.7, 0.0, True, False, None, 0)
    assert MATCHER.score(rec("upstream call failed: request timeout after 30s", Level.ERROR)) == expected


@pytest.mark.parametrize("status", [400, 404, 409, 422])
def test_validation_errors_are_client_errors_not_failures(status: int) -> None:
    record = rec("validation failed: amount must be positive", Level.ERROR, http_status=status)
    signals = MATCHER.score(record)
    assert signals == RecordSignals(frozenset(), 0.0, 0.2, 0.7, 0.0, False, True, None, 0)


@pytest.mark.parametrize(
    "body",
    [
        "validation failed: field 'amount' must be positive",
        "request rejected with status 422",
        "HTTP 404 for /orders/77",
        "400 Bad Request: missing field currency",
        "pydantic ValidationError: 2 validation errors",
    ],
)
def test_validation_errors_named_in_the_body_are_client_errors(body: str) -> None:
    signals = MATCHER.score(rec(body, Level.ERROR))
    assert (signals.client_error, signals.failure, signals.groups) == (True, False, frozenset())


@pytest.mark.parametrize(
    ("body", "level", "status"),
    [
        ("ERROR 401 Unauthorized", Level.ERROR, None),
        ("access denied for user svc-report", Level.ERROR, None),
        ("JWT token expired at 03:47", Level.WARN, None),
        ("permission denied", Level.ERROR, 403),
        ("login failed for user bob", Level.UNSPECIFIED, None),
    ],
)
def test_auth_failures_are_client_errors_not_failures(body: str, level: Level, status: int | None) -> None:
    signals = MATCHER.score(rec(body, level, http_status=status))
    assert signals.groups == frozenset({Group.AUTH})
    assert (signals.pattern, signals.client_error, signals.failure) == (0.4, True, False)
    assert signals.immediate is None


def test_a_flood_of_client_errors_never_counts_a_failure() -> None:
    records = [rec(f"validation failed for order {i}", Level.ERROR, http_status=422) for i in range(200)]
    records += [rec(f"ERROR 401 Unauthorized user u{i}", Level.ERROR) for i in range(200)]
    assert sum(MATCHER.score(r).failure for r in records) == 0


@pytest.mark.parametrize("status", [408, 429])
def test_408_and_429_are_not_client_errors(status: int) -> None:
    signals = MATCHER.score(rec("request failed", Level.ERROR, http_status=status))
    assert (signals.client_error, signals.failure) == (False, True)


# --- positive matches per group ---------------------------------------------------------------

POSITIVES: list[tuple[Group, str]] = [
    (Group.OOM, "java.lang.OutOfMemoryError: Java heap space"),
    (Group.OOM, "fork: Cannot allocate memory"),
    (Group.OOM, "Killed process 123 (java) total-vm:1000kB, out of memory"),
    (Group.OOM, "oom-kill:constraint=CONSTRAINT_MEMCG"),
    (Group.OOM, "container terminated: OOMKilled"),
    (Group.OOM, "malloc failed for 4096 bytes"),
    (Group.OOM, "FATAL: JavaScript heap out of memory"),
    (Group.OOM, "GC overhead limit exceeded"),
    (Group.OOM, "MemoryError"),
    (Group.CRASH, "Segmentation fault"),
    (Group.CRASH, "process got SIGSEGV"),
    (Group.CRASH, "caught SIGABRT"),
    (Group.CRASH, "panic: assignment to entry in nil map"),
    (Group.CRASH, "Aborted (core dumped)"),
    (Group.CRASH, "fatal error: concurrent map writes"),
    (Group.CRASH, "thread 'main' panicked at src/main.rs:2:5"),
    (Group.CRASH, "Back-off restarting failed container: CrashLoopBackOff"),
    (Group.CRASH, "java.lang.StackOverflowError"),
    (Group.RESOURCE, "write /var/lib/data: No space left on device"),
    (Group.RESOURCE, "disk full on /dev/sda1"),
    (Group.RESOURCE, "accept4: too many open files"),
    (Group.RESOURCE, "open: EMFILE"),
    (Group.RESOURCE, "ENOSPC while writing segment"),
    (Group.RESOURCE, "fd limit reached"),
    (Group.DEPENDENCY, "upstream returned 502 Bad Gateway"),
    (Group.DEPENDENCY, "503 Service Unavailable"),
    (Group.DEPENDENCY, "upstream connect error or disconnect/reset before headers"),
    (Group.DEPENDENCY, "circuit breaker open for inventory"),
    (Group.DEPENDENCY, "circuit open, failing fast"),
    (Group.DEPENDENCY, "no healthy upstream"),
    (Group.DEPENDENCY, "call to ledger failed with status 503"),
    (Group.DEPENDENCY, "HTTP/1.1 504 from gateway"),
    (Group.DEPENDENCY, "504 Gateway Timeout"),
    (Group.DATABASE, "Deadlock found when trying to get lock; try restarting transaction"),
    (Group.DATABASE, "connection pool exhausted"),
    (Group.DATABASE, "HikariPool-1: pool exhausted"),
    (Group.DATABASE, "FATAL: sorry, too many clients already"),
    (Group.DATABASE, "Too many connections"),
    (Group.DATABASE, "Lock wait timeout exceeded; try restarting transaction"),
    (Group.DATABASE, "redis: Could not get a resource from the pool"),
    (Group.TIMEOUT, "rpc error: code = DeadlineExceeded"),
    (Group.TIMEOUT, "context deadline exceeded"),
    (Group.TIMEOUT, "connect ETIMEDOUT 10.2.3.4:443"),
    (Group.TIMEOUT, "Read timed out"),
    (Group.TIMEOUT, "java.net.SocketTimeoutException: connect"),
    (Group.TIMEOUT, "gave up after timeout"),
    (Group.TIMEOUT, "requests.exceptions.ReadTimeout"),
    (Group.CONNECTION, "connect ECONNREFUSED 127.0.0.1:5432"),
    (Group.CONNECTION, "dial tcp: connection refused"),
    (Group.CONNECTION, "read: connection reset by peer"),
    (Group.CONNECTION, "write: broken pipe"),
    (Group.CONNECTION, "ConnectionResetError: [Errno 104]"),
    (Group.CONNECTION, "no route to host"),
    (Group.AUTH, "Access denied for user 'app'@'10.0.0.1'"),
    (Group.AUTH, "open /etc/secret: permission denied"),
    (Group.AUTH, "token expired"),
    (Group.AUTH, "401 Unauthorized"),
    (Group.AUTH, "403 Forbidden"),
    (Group.AUTH, "upstream answered status 403"),
    (Group.AUTH, "HTTP 401 from identity"),
    (Group.AUTH, "authentication failed for user app"),
]


@pytest.mark.parametrize(("group", "text"), POSITIVES)
def test_each_group_matches_its_common_phrasings(group: Group, text: str) -> None:
    assert MATCHER.groups_in(text) == frozenset({group})
    assert MATCHER.groups_in(text.upper()) == frozenset({group})  # case-insensitive


def test_every_group_has_positive_cases() -> None:
    assert {g for g, _ in POSITIVES} == set(Group)


def test_error_oom_with_exception_and_stack() -> None:
    record = rec(
        "payment worker died",
        Level.ERROR,
        exception_type="java.lang.OutOfMemoryError",
        exception_message="Java heap space",
        exception_stacktrace=java_trace(5),
    )
    expected = RecordSignals(
        groups=frozenset({Group.OOM}),
        pattern=0.95,
        http=0.0,
        severity=0.7,
        structural=0.5 + 0.5 * 5 / 20,
        failure=True,
        client_error=False,
        immediate=Group.OOM,
        stack_depth=5,
    )
    assert MATCHER.score(record) == expected


def test_warn_503_with_http_status() -> None:
    record = rec("call to inventory failed: 503 Service Unavailable", Level.WARN, http_status=503)
    expected = RecordSignals(frozenset({Group.DEPENDENCY}), 0.75, 0.8, 0.4, 0.0, True, False, None, 0)
    assert MATCHER.score(record) == expected


def test_fatal_crash_with_resource_picks_highest_weight_immediate() -> None:
    record = rec("No space left on device; then segmentation fault", Level.FATAL)
    expected = RecordSignals(
        frozenset({Group.RESOURCE, Group.CRASH}), 0.95, 0.0, 1.0, 0.0, True, False, Group.CRASH, 0
    )
    assert MATCHER.score(record) == expected


def test_oom_and_crash_tie_is_broken_by_declaration_order() -> None:
    signals = MATCHER.score(rec("OutOfMemoryError then SIGSEGV", Level.ERROR))
    assert signals.immediate == Group.OOM


def test_unspecified_level_is_treated_as_warn() -> None:
    signals = MATCHER.score(rec("dial tcp 10.0.0.3:6379: connection refused", Level.UNSPECIFIED))
    assert signals == RecordSignals(frozenset({Group.CONNECTION}), 0.65, 0.0, 0.0, 0.0, True, False, None, 0)


def test_warn_without_group_is_failure_only_with_5xx() -> None:
    assert MATCHER.score(rec("slow checkout", Level.WARN)).failure is False
    assert MATCHER.score(rec("slow checkout", Level.WARN, http_status=500)) == RecordSignals(
        frozenset(), 0.0, 0.7, 0.4, 0.0, True, False, None, 0
    )


def test_info_access_log_with_500_counts_as_failure_without_groups() -> None:
    assert MATCHER.score(rec("GET /pay 500 12ms", Level.INFO, http_status=500)) == RecordSignals(
        frozenset(), 0.0, 0.7, 0.0, 0.0, True, False, None, 0
    )


def test_dependency_failure_is_not_a_client_error_even_with_4xx_words_nearby() -> None:
    signals = MATCHER.score(rec("bad request to ledger: upstream said 503 Service Unavailable", Level.ERROR))
    assert (signals.groups, signals.client_error, signals.failure) == (
        frozenset({Group.DEPENDENCY}),
        False,
        True,
    )


@pytest.mark.parametrize(
    ("status", "score"),
    [(None, 0.0), (200, 0.0), (302, 0.0), (400, 0.2), (404, 0.2), (429, 0.4), (500, 0.7), (502, 0.8),
     (503, 0.8), (504, 0.8), (599, 0.7), (600, 0.0)],
)
def test_http_score(status: int | None, score: float) -> None:
    assert http_score(status) == score


def test_structural_counts_python_traceback_in_body_and_saturates() -> None:
    frames = "".join(f'  File "/app/pay.py", line {i}, in step{i}\n    step{i + 1}()\n' for i in range(25))
    body = f"Traceback (most recent call last):\n{frames}ValueError: bad amount"
    signals = MATCHER.score(rec(body, Level.ERROR))
    assert (signals.stack_depth, signals.structural) == (25, 1.0)
    assert stack_depth(java_trace(3)) == 3


def test_structural_with_exception_type_but_no_frames() -> None:
    signals = MATCHER.score(rec("payment failed", Level.ERROR, exception_type="ValueError"))
    assert (signals.structural, signals.stack_depth) == (0.5, 0)


def test_custom_weights_change_pattern_and_are_validated() -> None:
    matcher = SignalMatcher({Group.AUTH: 0.9})
    assert matcher.score(rec("permission denied", Level.ERROR)).pattern == 0.9
    assert matcher.weights[Group.OOM] == DEFAULT_WEIGHTS[Group.OOM]
    with pytest.raises(ValueError, match="auth"):
        SignalMatcher({Group.AUTH: 1.5})


def test_default_weights_and_immediate_groups() -> None:
    assert [DEFAULT_WEIGHTS[g] for g in Group] == [0.95, 0.95, 0.80, 0.75, 0.75, 0.70, 0.65, 0.40]
    assert sorted(g.value for g in IMMEDIATE_GROUPS) == ["crash", "oom", "resource"]


@settings(max_examples=300, deadline=None)
@given(
    body=st.text(max_size=200),
    level=st.sampled_from(list(Level)),
    status=st.one_of(st.none(), st.integers(100, 599)),
)
def test_signals_are_bounded_and_consistent_for_any_record(
    body: str, level: Level, status: int | None
) -> None:
    s = MATCHER.score(rec(body, level, http_status=status))
    assert all(0.0 <= v <= 1.0 for v in (s.pattern, s.http, s.severity, s.structural))
    assert not (s.failure and s.client_error)
    assert s.pattern == max((DEFAULT_WEIGHTS[g] for g in s.groups), default=0.0)
    assert s.immediate is None or s.immediate in s.groups & IMMEDIATE_GROUPS
    if Level.UNSPECIFIED < level < Level.WARN:
        assert s.groups <= {Group.OOM, Group.CRASH}


FRAGMENTS = [p for _, p in POSITIVES] + ["room", "zoom", "503", "401", "ok", "status", "timeout", "\n"]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(FRAGMENTS), max_size=6))
def test_groups_of_joined_phrases_cover_each_phrase(parts: list[str]) -> None:
    expected = frozenset().union(*(MATCHER.groups_in(p) for p in parts)) if parts else frozenset()
    assert MATCHER.groups_in(" . ".join(parts)) == expected


@given(st.text(alphabet="abcdegikmnoprstuy: \n", max_size=40))
@settings(max_examples=300, deadline=None)
def test_unmistakable_precheck_equals_the_keyword_list(text: str) -> None:
    from udfs.signals import _UNMISTAKABLE_KEYWORDS, _mentions_unmistakable

    for k in _UNMISTAKABLE_KEYWORDS:
        assert _mentions_unmistakable(f"x {k} y")
    assert _mentions_unmistakable(text) == any(k in text for k in _UNMISTAKABLE_KEYWORDS)
