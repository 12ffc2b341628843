"""One frozen job configuration, parsed once at the edge from environment variables and CLI flags.

Every setting has a default that works on a laptop; a bad value fails at start-up naming the
variable. The variables are declared once, in ``jobs.settings`` (pydantic-settings), shared with the
ticketing worker, ingest and the console; this module stays light because the job pickles
``JobConfig`` into its Python operators (no pydantic there). Flink runtime knobs (checkpointing,
state backend, memory, Python bundles) stay in ``flink-conf/config.yaml``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from connectors.ingest.limits import DEFAULT_MAX_FUTURE_SKEW_MS
from connectors.otlp import MAX_MESSAGE_BYTES
from connectors.security import KafkaSecurity, OpenSearchAccess, Secret, SecurityError
from connectors.store_retention import RetentionSettings, retention_from_env


class ConfigError(ValueError):
    """A setting is invalid; the message names it (one line, no secret value)."""


@dataclass(frozen=True)
class JobConfig:
    """Settings of the detection job; ``jobs.settings`` names their variables (``JobSettings``,
    ``KafkaSettings``, ``OpenSearchSettings``). Secrets are ``Secret`` values, masked in ``repr``."""

    mode: str = "kafka"  # kafka | files
    bootstrap_servers: str = "127.0.0.1:9092"
    kafka_security: KafkaSecurity = field(default_factory=KafkaSecurity)
    logs_topic: str = "otlp_logs"
    spans_topic: str = ""  # optional otlp_spans input; "" = none
    incidents_topic: str = "logclaw.incidents"
    dead_letter_topic: str = "logclaw.dead-letter"
    group_id: str = "logclaw-detect"
    input_format: str = "auto"  # auto | proto | json
    log_files: tuple[str, ...] = ()
    trace_files: tuple[str, ...] = ()
    out_dir: str = ""  # replay: incidents.jsonl, dead-letter.jsonl
    store_path: str = ""  # embedded store (SQLite); "" = <out_dir or .logclaw>/store.sqlite
    opensearch_url: str = ""  # when set, OpenSearch replaces the embedded store
    opensearch_user: str = ""
    opensearch_password: Secret = field(default_factory=Secret)
    opensearch_ca_file: str = ""
    opensearch_verify_certs: bool = True
    index_logs: bool = True
    store_retention: RetentionSettings = field(default_factory=RetentionSettings)
    """The embedded store's retention (``LOGCLAW_STORE_*``), read here so a bad value fails at start-up."""
    parallelism: int = 2
    out_of_orderness_ms: int = 5_000
    idleness_ms: int = 30_000
    max_body_bytes: int = 65_536
    # Clocks of hosts that keep NTP differ by well under a second and a Collector holds a batch for
    # seconds, so 5 min accepts every honest sender with margin; a record further ahead can only come
    # from a wrong clock, and it would move the shared per-subtask watermark for every tenant.
    max_future_skew_ms: int = DEFAULT_MAX_FUTURE_SKEW_MS  # one default for ingest and the job
    max_message_bytes: int = MAX_MESSAGE_BYTES  # the one message size limit (connectors.otlp)
    max_notables: int = 64
    trace_sample: int = 16
    checkpoint_interval_ms: int = 10_000
    execution_mode: str = "thread"  # thread | process
    bundle_size: int = 1_000
    bundle_time_ms: int = 0  # 0: 100 in thread mode, 25 in process mode (see flink-conf/config.yaml)
    web_port: int = 8081

    @property
    def opensearch(self) -> OpenSearchAccess:
        """The OpenSearch URL, basic auth and TLS options (``opensearch_url`` empty: the embedded store)."""
        return OpenSearchAccess(url=self.opensearch_url, user=self.opensearch_user, password=self.opensearch_password,
                                ca_file=self.opensearch_ca_file, verify_certs=self.opensearch_verify_certs)

    @property
    def resolved_store_path(self) -> Path:
        if self.store_path:
            return Path(self.store_path)
        return Path(self.out_dir or ".logclaw") / "store.sqlite"  # where the ticketing worker looks

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> JobConfig:
        """Read the ``LOGCLAW_*`` variables (``jobs.settings``), then apply explicit overrides (CLI flags)."""
        from jobs.settings import JobSettings, KafkaSettings, OpenSearchSettings  # pydantic: the edge only

        env = dict(os.environ if environ is None else environ)
        job = JobSettings.load(env)
        kafka = KafkaSettings.load(env)
        search = OpenSearchSettings.load(env)
        try:
            retention = retention_from_env(env)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        cfg = cls(
            **job.model_dump(),
            bootstrap_servers=kafka.bootstrap_servers,
            kafka_security=kafka.security(),
            opensearch_url=search.url,
            opensearch_user=search.user,
            opensearch_password=Secret(search.password.get_secret_value()),
            opensearch_ca_file=search.ca_file,
            opensearch_verify_certs=search.verify_certs,
            store_retention=retention,
        )
        cfg = replace(cfg, **{k: v for k, v in overrides.items() if v is not None})
        cfg.validate()
        return cfg

    @property
    def effective_bundle_time_ms(self) -> int:
        """``bundle_time_ms``, or by execution mode when 0: thread 100 ms (shorter cost throughput here),
        process 25 ms (each Python operator on the immediate path waits for its bundle: p99 0.7 s -> 0.36 s)."""
        if self.bundle_time_ms:
            return self.bundle_time_ms
        return 25 if self.execution_mode == "process" else 100

    def validate(self) -> None:
        if self.mode == "files" and not self.log_files:
            raise ConfigError("files mode needs at least one --logs FILE")
        if self.mode == "kafka" and not self.bootstrap_servers:
            raise ConfigError("LOGCLAW_KAFKA_BOOTSTRAP_SERVERS is empty")
        try:
            self.opensearch  # noqa: B018 (checks URL, basic auth and TLS options together)
        except SecurityError as exc:
            raise ConfigError(f"LOGCLAW_OPENSEARCH_{exc.setting.upper()}: {exc.message}") from None
        if not 1_000 <= self.max_future_skew_ms <= 86_400_000:
            raise ConfigError(f"LOGCLAW_MAX_FUTURE_SKEW_MS={self.max_future_skew_ms}: must be 1000..86400000")
        if not 65_536 <= self.max_message_bytes <= 64 * 1024 * 1024:
            raise ConfigError(f"LOGCLAW_MAX_MESSAGE_BYTES={self.max_message_bytes}: must be 65536..67108864")
