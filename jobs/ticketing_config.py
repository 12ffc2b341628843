"""The ticketing worker's configuration: one frozen object, parsed once at start-up.

Every setting has an environment variable and a command-line flag (the flag wins), declared once in
``TicketingSettings`` (pydantic-settings, see ``jobs.settings``); Kafka and OpenSearch settings are the
shared ``LOGCLAW_KAFKA_*`` / ``LOGCLAW_OPENSEARCH_*``. A bad value fails at start-up with
``ConfigError`` naming both, e.g. ``LOGCLAW_LLM_TIMEOUT_S / --llm-timeout-s: Input should be a valid
number, ..., got 'abc'``. Secrets (the LLM API key, passwords) are masked in ``repr``.
"""

from __future__ import annotations

import argparse
import json
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field, SecretStr

from connectors.security import KafkaSecurity, OpenSearchAccess
from jobs.config import ConfigError
from jobs.settings import KafkaSettings, OpenSearchSettings, SettingsModel
from udfs.routing import RoutingConfig, RoutingError

DEFAULT_TOPIC = "logclaw.incidents"

__all__ = ["DEFAULT_TOPIC", "ConfigError", "TicketingConfig", "TicketingSettings", "add_config_arguments"]


def _s(default: Any, env: str, flag: str, description: str, **constraints: Any) -> Any:
    """A worker setting: its variable, its flag and what it means."""
    return Field(default, description=description, json_schema_extra={"env": env, "flag": flag}, **constraints)


class TicketingSettings(SettingsModel):
    """The ticketing worker's own settings; Kafka and OpenSearch come from ``KafkaSettings`` and
    ``OpenSearchSettings`` (``--bootstrap`` and ``--opensearch-url`` override their URLs)."""

    prefix: ClassVar[str] = "LOGCLAW_"
    topic: str = _s(DEFAULT_TOPIC, "LOGCLAW_INCIDENTS_TOPIC", "--topic", "incident events topic")
    group_id: str = _s("logclaw-ticketing", "LOGCLAW_TICKETING_GROUP", "--group-id", "the worker's consumer group")
    dead_letter_topic: str = _s("", "LOGCLAW_TICKETING_DLQ_TOPIC", "--dead-letter-topic",
                                "the worker's dead-letter topic (Kafka mode; empty: file only)")
    data_dir: str = _s(".logclaw", "LOGCLAW_DATA_DIR", "--data-dir", "folder of the embedded store, ledger, tickets")
    store_path: str = _s("", "LOGCLAW_STORE_PATH", "--store",
                         "embedded store file (default: store.sqlite in the data dir)")
    ledger_path: str = _s("", "LOGCLAW_LEDGER_PATH", "--ledger", "ticket ledger file (SQLite)")
    dead_letter_path: str = _s("", "LOGCLAW_TICKETING_DLQ_PATH", "--dead-letter", "the worker's dead-letter JSONL file")
    routing_path: str = _s("", "LOGCLAW_ROUTING", "--routing", "routing config file (JSON or YAML)")
    tickets_dir: str = _s("", "LOGCLAW_TICKETS_DIR", "--tickets-dir", "folder of the default `file` destination")
    llm_models: str = _s("", "LOGCLAW_LLM_MODELS", "--llm-models",
                         "comma-separated litellm models, tried in order (empty: deterministic RCA)")
    llm_timeout_s: float = _s(30.0, "LOGCLAW_LLM_TIMEOUT_S", "--llm-timeout-s", "per LLM call, seconds", gt=0)
    llm_max_retries: int = _s(1, "LOGCLAW_LLM_MAX_RETRIES", "--llm-max-retries",
                              "retries per model on transient errors", ge=0)
    llm_api_base: str = _s("", "LOGCLAW_LLM_API_BASE", "--llm-api-base", "e.g. http://ollama:11434")
    llm_api_key: SecretStr = _s(SecretStr(""), "LOGCLAW_LLM_API_KEY", "--llm-api-key",
                                "LLM API key (else litellm reads OPENAI_API_KEY etc.)")
    dashboards_url: str = _s("", "LOGCLAW_DASHBOARDS_URL", "--dashboards-url",
                             "OpenSearch Dashboards base URL for ticket links")
    worker_id: str = _s("", "LOGCLAW_WORKER_ID", "--worker-id", "ledger claim owner (default: host name)")
    metrics_interval_s: float = _s(60.0, "LOGCLAW_METRICS_INTERVAL_S", "--metrics-interval-s",
                                   "how often counters are logged, seconds", gt=0)
    max_attempts: int = _s(0, "LOGCLAW_TICKETING_MAX_ATTEMPTS", "--max-attempts",
                           "attempts per message on transient failures (0: until shutdown; --once: 5)", ge=0)


@dataclass(frozen=True)
class TicketingConfig:
    """Frozen ticketing settings; paths are resolved against ``data_dir`` when left empty."""

    bootstrap: str = "127.0.0.1:9092"
    topic: str = DEFAULT_TOPIC
    group_id: str = "logclaw-ticketing"
    dead_letter_topic: str = ""
    data_dir: str = ".logclaw"
    store_path: str = ""
    opensearch_url: str = ""
    ledger_path: str = ""
    dead_letter_path: str = ""
    routing_path: str = ""
    tickets_dir: str = ""
    llm_models: tuple[str, ...] = ()
    llm_timeout_s: float = 30.0
    llm_max_retries: int = 1
    llm_api_base: str = ""
    llm_api_key: str = field(default="", repr=False)
    dashboards_url: str = ""
    worker_id: str = ""
    metrics_interval_s: float = 60.0
    max_attempts: int = 0
    kafka_security: KafkaSecurity = field(default_factory=KafkaSecurity)
    # user, password, CA bundle, verification; its url is ``opensearch_url`` (a flag may override it)
    opensearch_login: OpenSearchAccess = field(default_factory=OpenSearchAccess)

    def __post_init__(self) -> None:
        data = Path(self.data_dir)
        defaults = {
            "store_path": data / "store.sqlite",
            "ledger_path": data / "tickets-ledger.sqlite",
            "dead_letter_path": data / "ticketing-dead-letter.jsonl",
            "tickets_dir": data / "tickets",
        }
        for name, path in defaults.items():
            if not getattr(self, name):
                object.__setattr__(self, name, str(path))
        if not self.worker_id:
            object.__setattr__(self, "worker_id", socket.gethostname() or "worker")

    def __repr__(self) -> str:
        shown = {f.name: getattr(self, f.name) for f in fields(self)}
        shown["llm_api_key"] = "***" if self.llm_api_key else ""
        return "TicketingConfig(" + ", ".join(f"{k}={v!r}" for k, v in shown.items()) + ")"

    @property
    def opensearch(self) -> OpenSearchAccess:
        """Where the evidence reader finds OpenSearch and how it logs in."""
        login = self.opensearch_login
        try:
            return OpenSearchAccess(url=self.opensearch_url, user=login.user, password=login.password,
                                    ca_file=login.ca_file, verify_certs=login.verify_certs)
        except ValueError as exc:
            raise ConfigError(f"LOGCLAW_OPENSEARCH_URL / --opensearch-url: {exc}") from None

    @property
    def kafka_config(self) -> dict[str, Any]:
        """confluent-kafka settings of the worker's consumer and dead-letter producer."""
        return {**self.kafka_security.librdkafka_config(), "bootstrap.servers": self.bootstrap}

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> TicketingConfig:
        return cls.from_args(None, env)

    @classmethod
    def from_args(cls, args: argparse.Namespace | None, env: Mapping[str, str]) -> TicketingConfig:
        """Flags (when given) over environment variables over defaults; fails naming both."""
        flags = {name: getattr(args, name, None) for name in TicketingSettings.model_fields} if args else {}
        own: TicketingSettings = TicketingSettings.load(env, flags)
        kafka: KafkaSettings = KafkaSettings.load(env, {"bootstrap_servers": getattr(args, "bootstrap", None)})
        search: OpenSearchSettings = OpenSearchSettings.load(env, {"url": getattr(args, "opensearch_url", None)})
        values = own.model_dump()
        values["llm_models"] = tuple(m.strip() for m in own.llm_models.split(",") if m.strip())
        values["llm_api_key"] = own.llm_api_key.get_secret_value()
        cfg = cls(**values, bootstrap=kafka.bootstrap_servers, kafka_security=kafka.security(),
                  opensearch_url=search.url, opensearch_login=search.access())
        cfg.opensearch  # noqa: B018 (fails at start-up, naming the setting, when the URL and login disagree)
        return cfg

    def load_routing(self) -> RoutingConfig:
        """The routing file, or the built-in default: medium and above to the `file` destination."""
        if not self.routing_path:
            return RoutingConfig.parse({
                "default": {"critical": ["file"], "high": ["file"], "medium": ["file"], "low": []},
                "destinations": {"file": {"type": "file", "dir": self.tickets_dir}},
            })
        path = Path(self.routing_path)
        try:
            text = path.read_text(encoding="utf-8")
            if path.suffix in (".yaml", ".yml"):
                import yaml  # litellm already depends on PyYAML

                try:
                    obj = yaml.safe_load(text)
                except yaml.YAMLError as exc:
                    raise ValueError(str(exc)) from None
            else:
                obj = json.loads(text)
            return RoutingConfig.parse(obj)
        except (OSError, ValueError) as exc:
            kind = "routing" if isinstance(exc, RoutingError) else "cannot read"
            raise ConfigError(f"LOGCLAW_ROUTING / --routing ({path}): {kind}: {exc}") from None


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per setting; the default ``None`` means "use the environment variable"."""
    parser.add_argument("--bootstrap", dest="bootstrap", default=None,
                        help=f"Kafka bootstrap servers [{KafkaSettings.env_name('bootstrap_servers')}]")
    parser.add_argument("--opensearch-url", dest="opensearch_url", default=None,
                        help="read evidence from OpenSearch instead of the embedded store "
                             f"[{OpenSearchSettings.env_name('url')}]")
    for name, info in TicketingSettings.model_fields.items():
        default = info.default.get_secret_value() if isinstance(info.default, SecretStr) else info.default
        parser.add_argument(TicketingSettings.flag(name), dest=name, default=None,
                            help=f"{info.description} [{TicketingSettings.env_name(name)}, default {default!r}]")
