"""Strict local stand-ins for the ticket platforms: in-process HTTP servers on 127.0.0.1:0.

Each stand-in checks auth, methods, paths and payload shapes the way its platform does (and a
little stricter: unknown fields are rejected even where the real API would ignore them), keeps
tickets in memory, and can be told to answer the next N requests with a fault (429 + Retry-After,
503, a 4xx) to exercise the shared retry policy. A fault may be aimed at one method and path, and may
strike *after* the request was applied (the platform created the ticket, then a gateway answered 504
or the answer never came back in time): the unclear failures that must not lead to a second ticket.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit


class Reject(Exception):
    """Raised by a route to answer an error."""

    def __init__(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        super().__init__(status)
        self.status = status
        self.body = body
        self.headers = headers or {}


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-cased names
    body: bytes

    def json(self) -> Any:
        if "application/json" not in self.headers.get("content-type", ""):
            raise Reject(415, {"error": "expected Content-Type application/json"})
        try:
            return json.loads(self.body or b"null")
        except ValueError as exc:
            raise Reject(400, {"error": f"malformed JSON: {exc}"}) from exc

    def basic_auth(self) -> tuple[str, str] | None:
        value = self.headers.get("authorization", "")
        if not value.startswith("Basic "):
            return None
        user, _, password = base64.b64decode(value[6:]).decode().partition(":")
        return user, password


@dataclass
class Reply:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Fault:
    status: int
    body: Any
    headers: dict[str, str]
    method: str | None = None  # None: any request
    path: str | None = None  # exact path; None: any
    after: bool = False  # apply the request first, then answer the fault
    hang_s: float = 0.0  # wait this long before answering (longer than the client's timeout: no answer)

    def matches(self, req: Request) -> bool:
        return (self.method is None or self.method == req.method) and (self.path is None or self.path == req.path)


def check_keys(
    obj: Any,
    where: str,
    required: set[str],
    optional: frozenset[str] | set[str] = frozenset(),
    status: int = 400,
) -> dict[str, Any]:
    """``obj`` must be an object with all ``required`` keys and nothing outside required|optional."""
    if not isinstance(obj, dict):
        raise Reject(status, {"error": f"{where}: expected an object"})
    missing = required - obj.keys()
    unknown = obj.keys() - required - optional
    if missing or unknown:
        raise Reject(status, {"error": f"{where}: missing {sorted(missing)}, unknown {sorted(unknown)}"})
    return obj


def check_str(value: Any, where: str, max_len: int, status: int = 400, allow_empty: bool = False) -> str:
    if not isinstance(value, str) or (not value and not allow_empty) or len(value) > max_len:
        raise Reject(status, {"error": f"{where}: expected a string of 1..{max_len} chars"})
    return value


class StandinServer:
    """Base stand-in: routing, a request log, fault injection. Subclasses implement ``route``."""

    def __init__(self) -> None:
        self.log: list[tuple[str, str]] = []
        self._faults: deque[Fault] = deque()
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    def __enter__(self) -> Self:
        handler = _make_handler(self)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._server is not None and self._thread is not None
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    # -- faults ------------------------------------------------------------------------------
    def fail_next(self, n: int, status: int, *, retry_after: str | None = None, body: Any = None) -> None:
        headers = {"Retry-After": retry_after} if retry_after is not None else {}
        with self._lock:
            for _ in range(n):
                self._faults.append(
                    Fault(status, body if body is not None else {"error": "injected"}, headers)
                )

    def fault(
        self,
        status: int = 504,
        *,
        method: str | None = None,
        path: str | None = None,
        after: bool = False,
        hang_s: float = 0.0,
        retry_after: str | None = None,
        times: int = 1,
    ) -> None:
        """Queue a fault for the next ``times`` requests matching ``method``/``path`` (in queue order).

        ``after=True`` applies the request before answering the fault; ``hang_s`` delays the answer
        (set it beyond the client's timeout to simulate "accepted, then timed out")."""
        headers = {"Retry-After": retry_after} if retry_after is not None else {}
        with self._lock:
            for _ in range(times):
                self._faults.append(
                    Fault(status, {"error": "injected"}, headers, method, path, after, hang_s)
                )

    def pending_faults(self) -> int:
        with self._lock:
            return len(self._faults)

    def requests_to(self, method: str, path_prefix: str) -> int:
        return sum(1 for m, p in self.log if m == method and p.startswith(path_prefix))

    # -- dispatch ----------------------------------------------------------------------------
    def dispatch(self, req: Request) -> Reply:
        with self._lock:
            self.log.append((req.method, req.path))
            fault = next((f for f in self._faults if f.matches(req)), None)
            if fault is not None:
                self._faults.remove(fault)
        if fault is not None and not fault.after:
            time.sleep(fault.hang_s)
            return Reply(fault.status, fault.body, fault.headers)
        try:
            with self._lock:
                reply = self.route(req)
        except Reject as rej:
            reply = Reply(rej.status, rej.body, rej.headers)
        if fault is not None:
            time.sleep(fault.hang_s)
            return Reply(fault.status, fault.body, fault.headers)
        return reply

    def route(self, req: Request) -> Reply:
        raise NotImplementedError


def _make_handler(standin: StandinServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _handle(self) -> None:
            parts = urlsplit(self.path)
            query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            headers = {k.lower(): v for k, v in self.headers.items()}
            reply = standin.dispatch(Request(self.command, parts.path, query, headers, body))
            if reply.body is None:
                payload, ctype = b"", "application/json"
            elif isinstance(reply.body, str):
                payload, ctype = reply.body.encode(), "text/plain; charset=utf-8"
            else:
                payload, ctype = json.dumps(reply.body).encode(), "application/json; charset=utf-8"
            self.send_response(reply.status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(payload)))
            for name, value in reply.headers.items():
                self.send_header(name, value)
            try:
                self.end_headers()
                self.wfile.write(payload)
            except OSError:  # the client gave up waiting (an injected hang): nothing left to answer
                self.close_connection = True

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

        def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
            pass

    return Handler
