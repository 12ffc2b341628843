"""The ticketing worker's configuration: one frozen object, parsed once at start-up.

Every setting has an environment variable and a command-line flag (the flag wins). A bad value fails
at start-up with ``ConfigError`` naming both, e.g. ``LOGCLAW_LLM_TIMEOUT_S / --llm-timeout-s:
expected a number > 0, got 'abc'``. Secrets (the LLM API key) are masked in ``repr``.
"""

from __future__ import annotations

import argparse
import json
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from udfs.routing import RoutingConfig, RoutingError

DEFAULT_TOPIC = "logclaw.incidents"


class ConfigError(ValueError):
    """A start-up configuration problem; the message names the variable and flag."""


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise ValueError("expected a number > 0")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError("expected an integer >= 0")
    return value


def _models(text: str) -> tuple[str, ...]:
    return tuple(m.strip() for m in text.split(",") if m.strip())


# field -> (environment variable, flag, parser, default, help)
_SETTINGS: dict[str, tuple[str, str, Callable[[str], Any], str, str]] = {
    "bootstrap": ("LOGCLAW_KAFKA_BOOTSTRAP", "--bootstrap", str, "127.0.0.1:9092", "Kafka bootstrap servers"),
    "topic": ("LOGCLAW_INCIDENTS_TOPIC", "--topic", str, DEFAULT_TOPIC, "incident events topic"),
    "group_id": ("LOGCLAW_TICKETING_GROUP", "--group-id", str, "logclaw-ticketing", "consumer group id"),
    "dead_letter_topic": ("LOGCLAW_TICKETING_DLQ_TOPIC", "--dead-letter-topic", str, "",
                          "dead-letter topic (Kafka mode; empty: file only)"),
    "data_dir": ("LOGCLAW_DATA_DIR", "--data-dir", str, ".logclaw", "folder of the embedded store"),
    "store_path": ("LOGCLAW_STORE_PATH", "--store", str, "", "embedded store file (evidence)"),
    "opensearch_url": ("LOGCLAW_OPENSEARCH_URL", "--opensearch-url", str, "",
                       "read evidence from OpenSearch instead of the embedded store"),
    "ledger_path": ("LOGCLAW_LEDGER_PATH", "--ledger", str, "", "ticket ledger file (SQLite)"),
    "dead_letter_path": ("LOGCLAW_TICKETING_DLQ_PATH", "--dead-letter", str, "", "dead-letter JSONL file"),
    "routing_path": ("LOGCLAW_ROUTING", "--routing", str, "", "routing config file (JSON or YAML)"),
    "tickets_dir": ("LOGCLAW_TICKETS_DIR", "--tickets-dir", str, "",
                    "folder of the default `file` destination"),
    "llm_models": ("LOGCLAW_LLM_MODELS", "--llm-models", _models, "",
                   "comma-separated litellm models, tried in order (empty: deterministic RCA)"),
    "llm_timeout_s": ("LOGCLAW_LLM_TIMEOUT_S", "--llm-timeout-s", _positive_float, "30", "per LLM call"),
    "llm_max_retries": ("LOGCLAW_LLM_MAX_RETRIES", "--llm-max-retries", _non_negative_int, "1",
                        "retries per model on transient errors"),
    "llm_api_base": ("LOGCLAW_LLM_API_BASE", "--llm-api-base", str, "", "e.g. http://ollama:11434"),
    "llm_api_key": ("LOGCLAW_LLM_API_KEY", "--llm-api-key", str, "",
                    "API key (else litellm reads OPENAI_API_KEY etc.)"),
    "dashboards_url": ("LOGCLAW_DASHBOARDS_URL", "--dashboards-url", str, "",
                       "OpenSearch Dashboards base URL for ticket links"),
    "worker_id": ("LOGCLAW_WORKER_ID", "--worker-id", str, "", "ledger claim owner (default: host name)"),
    "metrics_interval_s": ("LOGCLAW_METRICS_INTERVAL_S", "--metrics-interval-s", _positive_float, "60",
                           "how often counters are logged"),
    "max_attempts": ("LOGCLAW_TICKETING_MAX_ATTEMPTS", "--max-attempts", _non_negative_int, "0",
                     "attempts per message on transient failures (0: until shutdown; --once: 5)"),
}


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

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> TicketingConfig:
        return cls.from_args(None, env)

    @classmethod
    def from_args(cls, args: argparse.Namespace | None, env: Mapping[str, str]) -> TicketingConfig:
        """Flags (when given) over environment variables over defaults; fails naming both."""
        values: dict[str, Any] = {}
        for name, (var, flag, parse, default, _help) in _SETTINGS.items():
            flag_value = getattr(args, name, None) if args is not None else None
            text = flag_value if flag_value is not None else env.get(var, default)
            try:
                values[name] = parse(str(text))
            except ValueError as exc:
                raise ConfigError(f"{var} / {flag}: {exc}, got {text!r}") from None
        return cls(**values)

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
    for name, (var, flag, _parse, default, help_text) in _SETTINGS.items():
        parser.add_argument(flag, dest=name, default=None, help=f"{help_text} [{var}, default {default!r}]")
