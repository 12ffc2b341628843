"""The one configuration layer: every ``LOGCLAW_*`` setting of the job, the ticketing worker, ingest,
the console and ``simulate``, declared once as pydantic-settings models and parsed once at the edge.

- One environment variable per setting: ``env_prefix`` + the upper-case field name (``KafkaSettings``:
  ``LOGCLAW_KAFKA_*``, ``OpenSearchSettings``: ``LOGCLAW_OPENSEARCH_*``, ``JobSettings``: ``LOGCLAW_*``).
  Old names still work for one release as deprecated aliases (``DEPRECATED``) and log a warning.
- Secrets (``SecretStr`` fields) come from the variable or from a file named by ``<VARIABLE>_FILE``
  (a Kubernetes secret mount); giving both is an error. Their values never appear in ``repr``, in log
  lines or in error messages.
- A bad value raises ``ConfigError`` naming the variable; the commands print that one line and exit 2.
- The result is frozen and light: ``connectors.security.KafkaSecurity`` / ``OpenSearchAccess`` (pickled
  into the job's operators, which never import pydantic) and ``jobs.config.JobConfig``.

``settings_table()`` renders every setting as the README's table (``tests/test_config_settings.py``
checks that the README shows exactly this table).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from connectors.ingest.limits import DEFAULT_MAX_FUTURE_SKEW_MS
from connectors.otlp import MAX_MESSAGE_BYTES
from connectors.security import KafkaSecurity, OpenSearchAccess, Secret, SecurityError
from jobs.config import ConfigError

log = logging.getLogger(__name__)

#: old variable -> its one name now; read when the new one is unset, with a warning.
DEPRECATED: dict[str, str] = {
    "LOGCLAW_BOOTSTRAP_SERVERS": "LOGCLAW_KAFKA_BOOTSTRAP_SERVERS",  # the job's name until 0.1
    "LOGCLAW_KAFKA_BOOTSTRAP": "LOGCLAW_KAFKA_BOOTSTRAP_SERVERS",  # the ticketing worker's name until 0.1
}
FILE_SUFFIX = "_FILE"


class SettingsModel(BaseSettings):
    """Base: frozen, values only from the mapping ``load`` is given (never a ``.env`` file)."""

    model_config = SettingsConfigDict(frozen=True, extra="forbid", case_sensitive=True)
    prefix: ClassVar[str] = "LOGCLAW_"

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings], init_settings: Any, env_settings: Any,
                                   dotenv_settings: Any, file_secret_settings: Any) -> tuple[Any, ...]:
        return (init_settings,)  # ``load`` reads the environment it is given, so tests stay hermetic

    @classmethod
    def env_name(cls, field: str) -> str:
        """``prefix`` + the upper-case field name, unless the field names its variable (``env``)."""
        extra = cls.model_fields[field].json_schema_extra if field in cls.model_fields else None
        if isinstance(extra, dict) and isinstance(extra.get("env"), str):
            return str(extra["env"])
        return cls.prefix + field.upper()

    @classmethod
    def flag(cls, field: str) -> str:
        """The command-line flag that overrides the field, or ""."""
        extra = cls.model_fields[field].json_schema_extra
        return str(extra.get("flag", "")) if isinstance(extra, dict) else ""

    @classmethod
    def label(cls, field: str) -> str:
        """How an error names the setting: the variable, and the flag when there is one."""
        flag = cls.flag(field) if field in cls.model_fields else ""
        return cls.env_name(field) + (f" / {flag}" if flag else "")

    @classmethod
    def load(cls, environ: Mapping[str, str], flags: Mapping[str, Any] | None = None) -> Any:
        """The settings in ``environ`` (empty values count as unset), ``flags`` (field -> value, None:
        not given) over them; ``ConfigError`` names the variable (and flag)."""
        raw: dict[str, Any] = {}
        for name, info in cls.model_fields.items():
            var = cls.env_name(name)
            value: Any = _lookup(environ, var)
            if info.annotation is SecretStr:
                value = _secret(environ, var, value)
            if flags is not None and flags.get(name) is not None:
                value = flags[name]
            if value is not None:
                raw[name] = value
        try:
            return cls(**raw)
        except ValidationError as exc:
            raise _config_error(cls, exc) from None


def _lookup(environ: Mapping[str, str], var: str) -> str | None:
    value = environ.get(var) or None
    for old, new in DEPRECATED.items():
        if new != var or not environ.get(old):
            continue
        if value is None:
            log.warning("%s is deprecated: set %s instead (read it this time)", old, new)
            value = environ[old]
        elif environ[old] != value:
            log.warning("%s is deprecated and ignored: %s is set", old, new)
    return value


def _secret(environ: Mapping[str, str], var: str, value: str | None) -> str | None:
    path = environ.get(var + FILE_SUFFIX)
    if not path:
        return value
    if value is not None:
        raise ConfigError(f"{var} and {var}{FILE_SUFFIX} are both set: give one")
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{var}{FILE_SUFFIX}={path!r}: cannot read it ({exc.__class__.__name__})") from None
    return text.rstrip("\r\n")  # a secret file written with echo ends in a newline


def secret_from_env(environ: Mapping[str, str], var: str) -> str | None:
    """A secret given outside the models (a ticket platform's token named as ``${VAR}`` in the routing
    file): ``var``'s value, or the text of the file ``<var>_FILE`` names, as for the models' secrets;
    None when neither is set, ``ConfigError`` when both are or the file cannot be read."""
    return _secret(environ, var, environ.get(var))


def _config_error(cls: type[SettingsModel], exc: ValidationError) -> ConfigError:
    """The first problem as one line, in the commands' style: ``VAR=value: must be >= 1`` (or, for a
    setting with a flag, ``VAR / --flag: must be >= 1, got value``); a secret's value is never shown."""
    error = exc.errors()[0]
    field = str(error["loc"][0]) if error["loc"] else ""
    secret = field in cls.model_fields and cls.model_fields[field].annotation is SecretStr
    raw = error.get("input")
    shown = raw if isinstance(raw, str) and re.fullmatch(r"-?[0-9][0-9_.e+]*", raw) else repr(raw)
    what = _short(error)
    if secret:
        return ConfigError(f"{cls.label(field)}: {what}")
    if cls.flag(field) if field in cls.model_fields else "":
        return ConfigError(f"{cls.label(field)}: {what}, got {shown}")
    return ConfigError(f"{cls.label(field)}={shown}: {what}")


def _short(error: Any) -> str:
    """pydantic's message in the commands' words (``must be >= 1``, ``expected an integer``)."""
    ctx = error.get("ctx") or {}
    kind = error["type"]
    for key, op in (("ge", ">="), ("le", "<="), ("gt", ">"), ("lt", "<")):
        if key in ctx and kind.startswith(("greater_than", "less_than")):
            bound = ctx[key]
            return f"must be {op} {int(bound) if isinstance(bound, float) and bound.is_integer() else bound}"
    words = {
        "int_parsing": "expected an integer", "int_from_float": "expected an integer",
        "float_parsing": "expected a number", "bool_parsing": "expected true or false",
        "string_too_short": "must not be empty",
        "string_pattern_mismatch": "expected an http(s):// URL" if "http" in str(ctx.get("pattern")) else "",
    }
    if kind == "literal_error":
        choices = re.findall(r"'([^']*)'", str(ctx.get("expected", "")))
        return "expected one of " + ", ".join(c for c in choices if c) + (" (or empty)" if "" in choices else "")
    return words.get(kind) or str(error["msg"])


# -- Kafka ------------------------------------------------------------------------------------------------


class KafkaSettings(SettingsModel):
    """Every Kafka client: the job's source and producers, ingest, the ticketing worker, simulate."""

    prefix: ClassVar[str] = "LOGCLAW_KAFKA_"
    bootstrap_servers: str = Field("127.0.0.1:9092", min_length=1,
                                   description="Kafka bootstrap servers, host:port[,...]")
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL")
    sasl_mechanism: Literal["", "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = Field(
        "", description="PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (with a SASL_ protocol)")
    sasl_username: str = Field("", description="SASL user name")
    sasl_password: SecretStr = Field(SecretStr(""), description="SASL password")
    ssl_ca_file: str = Field("", description="PEM file of the CA(s) that signed the brokers' certificates")
    ssl_cert_file: str = Field("", description="PEM client certificate (mutual TLS)")
    ssl_key_file: str = Field("", description="PEM private key of the client certificate")
    ssl_key_password: SecretStr = Field(SecretStr(""), description="password of an encrypted client key")
    ssl_verify: bool = Field(True, description="verify the brokers' certificates and host names "
                             "(the job's Java source can only skip the host name check)")

    def security(self) -> KafkaSecurity:
        try:
            return KafkaSecurity(
                protocol=self.security_protocol, sasl_mechanism=self.sasl_mechanism,
                sasl_username=self.sasl_username, sasl_password=Secret(self.sasl_password.get_secret_value()),
                ssl_ca_file=self.ssl_ca_file, ssl_cert_file=self.ssl_cert_file, ssl_key_file=self.ssl_key_file,
                ssl_key_password=Secret(self.ssl_key_password.get_secret_value()), ssl_verify=self.ssl_verify)
        except SecurityError as exc:
            raise ConfigError(f"{self.env_name(_KAFKA_FIELDS.get(exc.setting, exc.setting))}: {exc.message}") from None

    def client_config(self) -> dict[str, Any]:
        """The confluent-kafka (librdkafka) config: bootstrap servers and security, for any client."""
        return {"bootstrap.servers": self.bootstrap_servers, **self.security().librdkafka_config()}


_KAFKA_FIELDS = {"protocol": "security_protocol"}  # KafkaSecurity field -> KafkaSettings field


def kafka_client_config(environ: Mapping[str, str]) -> dict[str, Any]:
    """The confluent-kafka config (``bootstrap.servers`` + security) from ``LOGCLAW_KAFKA_*``: what
    ingest's producer, the worker's consumer and ``simulate`` start from."""
    settings: KafkaSettings = KafkaSettings.load(environ)
    return settings.client_config()


# -- OpenSearch -------------------------------------------------------------------------------------------


class OpenSearchSettings(SettingsModel):
    """The job's sink, the worker's evidence reader and the console's reader."""

    prefix: ClassVar[str] = "LOGCLAW_OPENSEARCH_"
    url: str = Field("", pattern=r"^(https?://.+)?$",
                     description="OpenSearch URL (https://host:9200); empty: the embedded store")
    user: str = Field("", description="basic auth user")
    password: SecretStr = Field(SecretStr(""), description="basic auth password")
    ca_file: str = Field("", description="PEM CA bundle for the cluster's certificate")
    verify_certs: bool = Field(True, description="verify the cluster's certificate and host name")

    def access(self) -> OpenSearchAccess:
        try:
            return OpenSearchAccess(url=self.url, user=self.user, password=Secret(self.password.get_secret_value()),
                                    ca_file=self.ca_file, verify_certs=self.verify_certs)
        except SecurityError as exc:
            raise ConfigError(f"{self.env_name(exc.setting)}: {exc.message}") from None


def opensearch_access(environ: Mapping[str, str]) -> OpenSearchAccess:
    settings: OpenSearchSettings = OpenSearchSettings.load(environ)
    return settings.access()


# -- the detection job ------------------------------------------------------------------------------------


class JobSettings(SettingsModel):
    """The detection job (``jobs.config.JobConfig``); Flink runtime knobs stay in ``flink-conf/``."""

    mode: Literal["kafka", "files"] = Field("kafka", description="kafka or files (replay)")
    logs_topic: str = Field("otlp_logs", description="OTLP logs input topic")
    spans_topic: str = Field("", description="OTLP spans input topic (empty: none)")
    incidents_topic: str = Field("logclaw.incidents", description="incident events topic")
    dead_letter_topic: str = Field("logclaw.dead-letter", description="the job's dead-letter topic")
    group_id: str = Field("logclaw-detect", description="the job's consumer group")
    input_format: Literal["auto", "proto", "json"] = Field("auto", description="auto, proto or json")
    store_path: str = Field("", description="embedded store file (default: store.sqlite in the out dir or "
                            ".logclaw; the worker's: in its data dir)")
    index_logs: bool = Field(True, description="index raw logs in the store")
    parallelism: int = Field(2, ge=1, description="job parallelism")
    out_of_orderness_ms: int = Field(5_000, ge=0, description="watermark bound on out-of-order events")
    idleness_ms: int = Field(30_000, ge=1, description="a partition idle this long stops holding the watermark")
    max_body_bytes: int = Field(65_536, ge=256, description="largest log body kept whole")
    max_future_skew_ms: int = Field(DEFAULT_MAX_FUTURE_SKEW_MS, ge=1_000, le=86_400_000,
                                    description="how far ahead of its receive time an event may be dated",
                                    json_schema_extra={"readers": "job, ingest"})
    max_message_bytes: int = Field(MAX_MESSAGE_BYTES, ge=65_536, le=64 * 1024 * 1024,
                                   description="the one Kafka message size limit (topics, producers, job)",
                                   json_schema_extra={"readers": "job, ingest"})
    max_notables: int = Field(64, ge=1, description="notable lines kept per window")
    trace_sample: int = Field(16, ge=0, description="traces sampled per window")
    checkpoint_interval_ms: int = Field(10_000, ge=0, description="checkpoint interval (0: off)")
    execution_mode: Literal["thread", "process"] = Field("thread", description="PyFlink execution mode")
    bundle_size: int = Field(1_000, ge=1, description="PyFlink bundle size")
    bundle_time_ms: int = Field(0, ge=0, description="PyFlink bundle time (0: 100 thread, 25 process)")
    web_port: int = Field(8081, ge=0, description="web UI port of `logclaw run`")


# -- the README table -------------------------------------------------------------------------------------

# Read by its own module, not (yet) through these models: (variable, default, read by, meaning).
# tests/test_config_settings.py checks that every LOGCLAW_* name the code reads is in the table, and
# these defaults against their modules.
ELSEWHERE: tuple[tuple[str, str, str, str], ...] = (
    ("LOGCLAW_STORE_RETENTION_HOURS", "168", "job (embedded store)",
     "raw logs and metrics this far behind their tenant's newest record (event time) are deleted; 0: never "
     "(connectors/store_retention.py)"),
    ("LOGCLAW_STORE_MAX_MB", "10240", "job (embedded store)",
     "above this store size, MiB, the largest tenant's oldest logs and metrics are deleted first; 0: no limit "
     "(connectors/store_retention.py)"),
    ("LOGCLAW_STORE_INCIDENT_RETENTION_HOURS", "0", "job (embedded store)",
     "incidents older than this are deleted; 0: never (connectors/store_retention.py)"),
    ("LOGCLAW_LOG_FORMAT", "text", "long-running commands", "text or json log lines (jobs/observability.py)"),
    ("LOGCLAW_LOG_LEVEL", "INFO", "long-running commands", "log level (jobs/observability.py)"),
)


def _sections() -> tuple[tuple[type[SettingsModel], str], ...]:
    """(model, who reads its settings) in README order."""
    from jobs.ticketing_config import TicketingSettings  # it imports this module

    return ((KafkaSettings, "job, ingest, ticketing, simulate"), (OpenSearchSettings, "job, ticketing, console"),
            (JobSettings, "job"), (TicketingSettings, "ticketing"))


def _default(model: type[SettingsModel], name: str) -> str:
    value = model.model_fields[name].default
    if isinstance(value, SecretStr):
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def settings_rows() -> list[tuple[str, str, str, str]]:
    """(variable, default, read by, meaning) for every setting, one row per variable (a variable two
    commands read, such as ``LOGCLAW_INCIDENTS_TOPIC``, names both); secrets also take ``<VAR>_FILE``."""
    rows: dict[str, list[str]] = {}
    for model, readers in _sections():
        for name, info in model.model_fields.items():
            extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
            var = model.env_name(name)
            reader = str(extra.get("readers", readers))
            if var in rows:
                rows[var][2] += f", {reader}"
                if model.flag(name):
                    rows[var][3] += f" ({reader} flag `{model.flag(name)}`)"
                continue
            meaning = info.description or ""
            if model.flag(name):
                meaning += f" (flag `{model.flag(name)}`)"
            if info.annotation is SecretStr:
                meaning += f"; or a file: `{var}{FILE_SUFFIX}`"
            rows[var] = [var, _default(model, name), reader, meaning]
    for var, default, reader, meaning in ELSEWHERE:
        rows[var] = [var, default, reader, meaning]
    return [(r[0], r[1], r[2], r[3]) for r in rows.values()]


def settings_table() -> str:
    """The Markdown table of ``settings_rows()`` (the README's "Settings" section)."""
    lines = ["| variable | default | read by | meaning |", "|---|---|---|---|"]
    for var, default, readers, meaning in settings_rows():
        shown = f"`{default}`" if default else ""
        lines.append(f"| `{var}` | {shown} | {readers} | {meaning.replace('|', '/')} |")
    return "\n".join(lines)


if __name__ == "__main__":  # python -m jobs.settings: print the table for the README
    print(settings_table())
