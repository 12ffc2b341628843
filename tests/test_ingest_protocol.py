"""The OTLP/HTTP ingest's HTTP framing, health probe, API keys and tenant names, refusal logging."""

from __future__ import annotations

import hashlib
import json
import logging
import socket
from pathlib import Path
from typing import Any

import pytest

from connectors.ingest import IngestServer, load_api_keys
from tests.ingest_fixtures import JS, KEYS, RecordingProducer, Running, headers, serve, status_of

KEY = "key-acme-1-0123456789"


def raw_exchange(running: Running, request: bytes) -> bytes:
    """Send ``request`` as is; everything the server answers until it closes (or 3 s pass)."""
    with socket.create_connection(("127.0.0.1", running.port), timeout=3) as sock:
        sock.sendall(request)
        out = b""
        try:
            while chunk := sock.recv(65536):
                out += chunk
        except TimeoutError:
            pass
        return out


def post_bytes(body: bytes, *header_lines: str) -> bytes:
    lines = ["POST /v1/logs HTTP/1.1", "Host: x", f"Content-Type: {JS}", f"x-logclaw-api-key: {KEY}", *header_lines]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def answer_status(answer: bytes) -> tuple[int, str]:
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), status_of(body, JS)[1]


@pytest.mark.parametrize("value", ["+2", "0_2", "0x2", " 2, 2", "\u00b2", "2 2", "-2", ""])
def test_content_length_must_be_ascii_digits(value: str) -> None:
    with serve() as running:
        answer = raw_exchange(running, post_bytes(b"{}", f"Content-Length: {value}"))
        assert answer_status(answer) == (400, f"bad Content-Length {value.strip()!r}: not a decimal number")
        assert b"\r\nConnection: close\r\n" in answer
        assert running.producer.sent == []
        spaced = post_bytes(b"{}", "Content-Length:  2 ", "Connection: close")  # optional whitespace is fine
        assert raw_exchange(running, spaced).startswith(b"HTTP/1.1 200 OK\r\n")


@pytest.mark.parametrize(("lines", "message"), [
    (("Transfer-Encoding: chunked", "Content-Length: 2"),
     "both Transfer-Encoding and Content-Length: refused (the framing is ambiguous)"),
    (("Content-Length: 2", "Transfer-Encoding: chunked"),
     "both Transfer-Encoding and Content-Length: refused (the framing is ambiguous)"),
    (("Content-Length: 2", "Content-Length: 2"), "more than one Content-Length"),
])
def test_ambiguous_framing_is_refused(lines: tuple[str, ...], message: str) -> None:
    with serve() as running:
        answer = raw_exchange(running, post_bytes(b"2\r\n{}\r\n0\r\n\r\n", *lines))
        assert answer_status(answer) == (400, message)
        assert answer.count(b"HTTP/1.1 ") == 1  # the rest of the bytes were never read as a second request
        assert running.producer.sent == []


def test_chunked_body_without_length_is_411() -> None:
    with serve() as running:
        answer = raw_exchange(running, post_bytes(b"2\r\n{}\r\n0\r\n\r\n", "Transfer-Encoding: chunked"))
        assert answer_status(answer) == (411, "Content-Length is required")


def test_healthz_answers_without_a_key() -> None:
    with serve() as running:
        status, got_headers, body = running.post(b"", {}, path="/healthz", method="GET")
        assert (status, got_headers["content-type"], body) == (200, "text/plain; charset=utf-8", b"ok\n")
        status, _, body = running.post(b"", {}, path="/healthz", method="HEAD")
        assert (status, body) == (200, b"")
        assert dict(running.server.stats.by_status) == {}  # probes are not ingest traffic


def strings_in(obj: Any, seen: set[int] | None = None) -> list[str]:
    """Every str reachable from ``obj`` through attributes, mappings and sequences."""
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return []
    seen.add(id(obj))
    if isinstance(obj, str):
        return [obj]
    if isinstance(obj, bytes):
        return [obj.decode("latin-1")]
    if isinstance(obj, dict):
        return [s for k, v in obj.items() for s in strings_in(k, seen) + strings_in(v, seen)]
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [s for item in obj for s in strings_in(item, seen)]
    if hasattr(obj, "__dict__") and type(obj).__module__.startswith("connectors"):
        return strings_in(vars(obj), seen)
    return []


def test_the_server_keeps_only_sha256_digests_of_the_keys() -> None:
    server = IngestServer(("127.0.0.1", 0), keys=KEYS, producer=RecordingProducer())
    try:
        kept = strings_in(server)
        assert not [s for s in kept if any(key in s for key in KEYS)]
        assert server.api_keys.tenant_of(KEY) == "acme"
        assert hashlib.sha256(KEY.encode()).hexdigest() not in repr(server.api_keys)
        assert repr(server.api_keys) == "ApiKeys(2 keys; tenants acme, globex)"
    finally:
        server.server_close()


def test_a_short_key_fails_at_start_naming_the_file_and_the_tenant_never_the_key(tmp_path: Path) -> None:
    path = tmp_path / "keys.yaml"
    path.write_text("short-key-123: acme\nkey-globex-2-0123456789: globex\n")
    with pytest.raises(ValueError) as raised:
        load_api_keys(path)
    assert str(raised.value) == (f"{path}: the api key of tenant 'acme' has fewer than 16 characters; "
                                 "use a random one, e.g. python -c 'import secrets; print(secrets.token_urlsafe(24))'")
    with pytest.raises(ValueError, match="tenant 'acme'"):
        IngestServer(("127.0.0.1", 0), keys={"short-key-123": "acme"}, producer=RecordingProducer())


@pytest.mark.parametrize("tenant", ["a|b", "a:b", "a/b", "a b", "", "x" * 65, "..", "-a", "ümlaut", "a\nb"])
def test_a_bad_tenant_name_fails_at_start(tmp_path: Path, tenant: str) -> None:
    path = tmp_path / "keys.json"
    path.write_text(f'{{"key-acme-1-0123456789": "acme", "key-other-0123456789": {json_str(tenant)}}}')
    with pytest.raises(ValueError) as raised:
        load_api_keys(path)
    message = str(raised.value)
    assert message.startswith(f"{path}: entry 2: the tenant name is not valid: ")
    assert "0123456789" not in message


def json_str(text: str) -> str:
    return json.dumps(text)


@pytest.mark.parametrize("tenant", ["acme", "tenant-seven", "a.b_c-1", "X" * 64, "default"])
def test_good_tenant_names_load(tmp_path: Path, tenant: str) -> None:
    path = tmp_path / "keys.json"
    path.write_text(f'{{"key-acme-1-0123456789": {json_str(tenant)}}}')
    assert load_api_keys(path) == {"key-acme-1-0123456789": tenant}


@pytest.mark.parametrize("text", [
    "key-acme-1-0123456789: b: c",  # YAML error messages quote the offending line
    '{"key-acme-1-0123456789": ["acme"]}',
    "key-acme-1-0123456789: acme\n' key-acme-1-0123456789': globex\n",  # the same key twice once stripped
    "key acme 1 0123456789: acme\n",  # not sendable as an HTTP header token
])
def test_keys_file_errors_never_quote_a_key(tmp_path: Path, text: str) -> None:
    path = tmp_path / "keys.yaml"
    path.write_text(text)
    with pytest.raises(ValueError) as raised:
        load_api_keys(path)
    assert str(raised.value).startswith(f"{path}: ")
    assert "0123456789" not in str(raised.value)


def test_refusals_are_logged_at_warning_with_reason_and_peer_never_the_key(caplog: pytest.LogCaptureFixture) -> None:
    wrong = "wrong-key-abcdef0123456789"
    with caplog.at_level(logging.WARNING, logger="connectors.ingest"), serve() as running:
        assert running.post(b"{}", headers(JS, key=wrong))[0] == 401
        assert running.post(b"{}", headers(JS, key=KEY), path="/v1/metrics")[0] == 404
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(messages) == 2, messages
    assert messages[0].startswith("ingest: refused POST '/v1/logs' from 127.0.0.1:")
    assert messages[0].endswith(" -> 401 (unauthenticated): missing or unknown API key (x-logclaw-api-key header or "
                                "Authorization: Bearer)")
    assert messages[1].endswith(" -> 404 (not_found): no such path; logs go to /v1/logs, traces to /v1/traces")
    assert not [m for m in caplog.messages if wrong in m or KEY in m]
