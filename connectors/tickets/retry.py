"""The one retry policy and HTTP transport every ticket client uses.

``RetryPolicy`` decides *whether* and *how long* to wait (named retryable statuses, capped attempts,
a deadline, jitter, ``Retry-After``); ``HttpTransport`` sends requests through a ``requests.Session``
and applies the policy. Times are processing time in seconds (``_s``) from the injected
``monotonic`` clock; ``sleep`` is injected so tests record delays instead of waiting.

A request that is not safe to send twice (a create without an idempotency key) is retried only after
a clear refusal (429, 408, no connection made). After an unclear failure (a timeout once sent, a 5xx,
a dropped connection) the platform may have applied it, so the transport raises ``UnclearError`` and
the caller looks the result up before sending it again.
"""

from __future__ import annotations

import email.utils
import logging
import random
import threading
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC
from typing import Any, Literal

import requests
import urllib3

log = logging.getLogger(__name__)

DEFAULT_RETRY_STATUSES: frozenset[int] = frozenset({408, 429, 500, 502, 503, 504})

Verdict = Literal["ok", "retry", "fail"]


class TicketError(Exception):
    """Base of the errors a ticket client raises."""


class PermanentError(TicketError):
    """The platform refused the request (4xx other than 408/429, or a platform-level error).

    Retrying the same request cannot succeed: the worker should record it and move on.
    """

    def __init__(self, status: int, body: str, *, reason: str = "") -> None:
        self.status = status
        self.body = body
        self.reason = reason
        super().__init__(f"permanent failure (HTTP {status}){': ' + reason if reason else ''}: {body[:300]}")


class TransientError(TicketError):
    """Retries are exhausted (attempts or deadline) on a failure that might pass later."""

    def __init__(self, message: str, *, status: int | None = None, attempts: int = 0) -> None:
        self.status = status
        self.attempts = attempts
        super().__init__(message)


class UnclearError(TransientError):
    """A request unsafe to replay failed after it may have been applied (timeout once sent, 5xx,
    dropped connection): look the result up (``find``) before sending it again."""


_CLEAR_STATUSES = frozenset({408, 429})  # the platform says it did not act on the request


def _not_sent(exc: requests.RequestException) -> bool:
    """True when the request cannot have reached the platform (no connection was made)."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    cause: object = exc.args[0] if exc.args else None
    reason = getattr(cause, "reason", cause)
    return isinstance(reason, urllib3.exceptions.NewConnectionError)


@dataclass(frozen=True)
class Response:
    """What a client sees of an HTTP response; ``json`` is ``None`` when the body is not JSON."""

    status: int
    json: Any
    text: str
    headers: Mapping[str, str]


@dataclass
class ClientStats:
    """Counters the worker reads for metrics; thread-safe."""

    requests: int = 0
    retries: int = 0
    permanent_failures: int = 0
    transient_failures: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, name: str, n: int = 1) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + n)

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return {
                "requests": self.requests,
                "retries": self.retries,
                "permanent_failures": self.permanent_failures,
                "transient_failures": self.transient_failures,
            }


def parse_retry_after(value: str | None, now_epoch_s: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP date; None if absent/bad."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, seconds)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now_epoch_s)


@dataclass
class RetryPolicy:
    """Capped exponential backoff with jitter, ``Retry-After`` and an overall deadline.

    Attempt ``n`` (1-based) failing transiently waits ``d = min(max_delay_s, base_delay_s * 2**(n-1))``
    jittered into ``[d/2, d]``; a ``Retry-After`` replaces it (capped by ``max_delay_s``). No wait
    may cross ``deadline_s`` measured from the first attempt: the last wait is cut to end at the
    deadline, and no attempt starts after it.
    """

    max_attempts: int = 5
    base_delay_s: float = 0.5
    max_delay_s: float = 30.0
    deadline_s: float = 60.0
    retry_statuses: frozenset[int] = DEFAULT_RETRY_STATUSES
    rng: random.Random = field(default_factory=random.Random)
    sleep: Callable[[float], None] = time.sleep
    monotonic: Callable[[], float] = time.monotonic
    wall_clock: Callable[[], float] = time.time  # only to read HTTP-date Retry-After values

    def backoff_s(self, attempt: int) -> float:
        """Jittered backoff after failed attempt ``attempt`` (1-based)."""
        ceiling = min(self.max_delay_s, self.base_delay_s * (2.0 ** (attempt - 1)))
        return ceiling / 2 + self.rng.uniform(0.0, ceiling / 2)

    def is_retryable_status(self, status: int) -> bool:
        return status in self.retry_statuses or status in (408, 429)

    def delay_s(self, attempt: int, retry_after: str | None) -> float:
        """The wait before the next attempt, before the deadline cap."""
        hinted = parse_retry_after(retry_after, self.wall_clock())
        if hinted is not None:
            return min(hinted, self.max_delay_s)
        return self.backoff_s(attempt)


Classifier = Callable[[Response], Verdict]


class HttpTransport:
    """Sends HTTP requests under a ``RetryPolicy`` and counts them in ``ClientStats``.

    ``request`` returns a ``Response`` for 2xx/3xx (and for statuses listed in ``expect``), raises
    ``PermanentError`` for non-retryable failures at once and ``TransientError`` when retries run out.
    ``classify`` lets a platform that reports errors inside a 200 (Slack) say ok/retry/fail.
    """

    def __init__(
        self,
        policy: RetryPolicy | None = None,
        *,
        session: requests.Session | None = None,
        timeout_s: float = 10.0,
        stats: ClientStats | None = None,
        user_agent: str = "logclaw-ticketing/0.1",
    ) -> None:
        self.policy = policy or RetryPolicy()
        self.session = session or requests.Session()
        self.timeout_s = timeout_s
        self.stats = stats or ClientStats()
        self.user_agent = user_agent

    def __repr__(self) -> str:
        return f"HttpTransport(timeout_s={self.timeout_s}, policy={self.policy!r})"

    def _send_once(
        self,
        method: str,
        url: str,
        json: Any,
        headers: Mapping[str, str] | None,
        params: Mapping[str, str] | None,
        data: Any,
        auth: tuple[str, str] | None,
    ) -> Response:
        all_headers = {"User-Agent": self.user_agent, "Accept": "application/json"}
        all_headers.update(headers or {})
        raw = self.session.request(
            method,
            url,
            json=json,
            headers=all_headers,
            params=params,
            data=data,
            auth=auth,
            timeout=self.timeout_s,
        )
        try:
            body = raw.json() if raw.content else None
        except ValueError:
            body = None
        return Response(status=raw.status_code, json=body, text=raw.text, headers=dict(raw.headers))

    def request(
        self,
        method: str,
        url: str,
        *,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        data: Any = None,
        auth: tuple[str, str] | None = None,
        expect: Collection[int] = (),
        classify: Classifier | None = None,
        log_as: str = "",
        replay_safe: bool = True,
    ) -> Response:
        """Send one request under the policy. ``log_as`` replaces the URL in logs and errors when
        the URL itself is a secret (Slack incoming webhooks). ``replay_safe=False`` (creates) raises
        ``UnclearError`` at the first failure that leaves open whether the platform applied it."""
        policy = self.policy
        where = log_as or _path(url)
        started = policy.monotonic()
        attempt = 0
        while True:
            attempt += 1
            self.stats.add("requests")
            retry_after: str | None = None
            status: int | None = None
            unclear = False
            try:
                resp = self._send_once(method, url, json, headers, params, data, auth)
            except (requests.ConnectionError, requests.Timeout) as exc:
                reason = type(exc).__name__ if log_as else f"{type(exc).__name__}: {exc}"
                unclear = not _not_sent(exc)
            else:
                status = resp.status
                verdict = self._verdict(resp, expect, classify)
                if verdict == "ok":
                    return resp
                if verdict == "fail":
                    self.stats.add("permanent_failures")
                    raise PermanentError(resp.status, resp.text, reason=f"{method} {where}")
                retry_after = resp.headers.get("Retry-After") or resp.headers.get("retry-after")
                reason = f"HTTP {resp.status}"
                unclear = resp.status >= 500 and resp.status not in _CLEAR_STATUSES
            if unclear and not replay_safe:
                self.stats.add("transient_failures")
                raise UnclearError(
                    f"{method} {where}: may have been applied ({reason}); look it up before sending it again",
                    status=status,
                    attempts=attempt,
                )
            if attempt >= policy.max_attempts:
                self.stats.add("transient_failures")
                raise TransientError(
                    f"{method} {where}: gave up after {attempt} attempts ({reason})",
                    status=status,
                    attempts=attempt,
                )
            remaining = policy.deadline_s - (policy.monotonic() - started)
            if remaining <= 0:
                self.stats.add("transient_failures")
                raise TransientError(
                    f"{method} {where}: deadline {policy.deadline_s}s reached after {attempt} attempts ({reason})",
                    status=status,
                    attempts=attempt,
                )
            delay = min(policy.delay_s(attempt, retry_after), remaining)
            self.stats.add("retries")
            log.warning(
                "ticket request %s %s failed (%s); retry %d/%d in %.2fs",
                method,
                where,
                reason,
                attempt,
                policy.max_attempts - 1,
                delay,
            )
            policy.sleep(delay)

    def _verdict(self, resp: Response, expect: Collection[int], classify: Classifier | None) -> Verdict:
        if resp.status in expect:
            return "ok"
        if self.policy.is_retryable_status(resp.status):
            return "retry"
        if resp.status >= 400:
            return "fail"
        return classify(resp) if classify is not None else "ok"


def _path(url: str) -> str:
    """The URL without its query string, for logs (query strings may carry search terms)."""
    return url.split("?", 1)[0]
