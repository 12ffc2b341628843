"""How every client reaches Kafka and OpenSearch securely: ``KafkaSecurity`` and ``OpenSearchAccess``.

Both are frozen, pure and light (no client library imported), so the job pickles them into its Python
operators. Each renders the settings in the dialect of one client:

- ``KafkaSecurity.librdkafka_config()``: confluent-kafka / librdkafka keys (ingest's producer, the job's
  incident and dead-letter producers, the ticketing worker's consumer and dead-letter producer,
  ``logclaw simulate``);
- ``KafkaSecurity.java_properties()``: Java Kafka client keys for the job's Flink Kafka source (the
  Table API connector takes them as ``'properties.<key>'``);
- ``OpenSearchAccess.auth()`` / ``client_options()``: opensearch-py's ``http_auth`` and TLS options
  (the job's sink, the worker's evidence reader, the console's reader).

Secrets are ``Secret`` values: masked in ``repr`` and ``str``, revealed only where a client config is
built. Which environment variables fill these objects is ``jobs.settings``' business.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
# The Java client's JAAS login module per mechanism (kafka-clients, unshaded: the job ships the plain
# kafka-clients jar beside flink-connector-kafka, see connectors/jars.py).
_JAAS_MODULES = {
    "PLAIN": "org.apache.kafka.common.security.plain.PlainLoginModule",
    "SCRAM-SHA-256": "org.apache.kafka.common.security.scram.ScramLoginModule",
    "SCRAM-SHA-512": "org.apache.kafka.common.security.scram.ScramLoginModule",
}


class SecurityError(ValueError):
    """Security settings that contradict each other; ``setting`` names the field at fault."""

    def __init__(self, setting: str, message: str) -> None:
        super().__init__(f"{setting}: {message}")
        self.setting = setting
        self.message = message


class Secret:
    """A secret string: ``repr``/``str`` show ``***`` (or ``''`` when empty); ``reveal()`` gives it."""

    __slots__ = ("_value",)

    def __init__(self, value: str = "") -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __repr__(self) -> str:
        return "Secret('***')" if self._value else "Secret('')"

    __str__ = __repr__

    def __getstate__(self) -> str:
        return self._value

    def __setstate__(self, state: str) -> None:
        self._value = state


def _no_secret() -> Secret:
    return Secret("")


@dataclass(frozen=True)
class KafkaSecurity:
    """Kafka authentication and transport security; the default is plain TCP without SASL.

    ``ssl_*_file`` are PEM files (a Kubernetes ``tls`` secret mounts ``tls.crt``/``tls.key``/``ca.crt``).
    ``ssl_verify=False`` switches off certificate and host name verification in the librdkafka clients;
    the Java client (the job's Kafka source) can only drop host name verification and still checks
    the broker's chain against ``ssl_ca_file`` (or the JVM's trust store).
    """

    protocol: str = "PLAINTEXT"
    sasl_mechanism: str = ""
    sasl_username: str = ""
    sasl_password: Secret = field(default_factory=_no_secret)
    ssl_ca_file: str = ""
    ssl_cert_file: str = ""
    ssl_key_file: str = ""
    ssl_key_password: Secret = field(default_factory=_no_secret)
    ssl_verify: bool = True

    def __post_init__(self) -> None:
        if self.protocol not in SECURITY_PROTOCOLS:
            raise SecurityError("protocol", f"{self.protocol!r}: expected one of {', '.join(SECURITY_PROTOCOLS)}")
        if self.sasl:
            if self.sasl_mechanism not in SASL_MECHANISMS:
                raise SecurityError("sasl_mechanism", f"{self.sasl_mechanism!r}: expected one of "
                                    f"{', '.join(SASL_MECHANISMS)} with {self.protocol}")
            if not self.sasl_username or not self.sasl_password:
                raise SecurityError("sasl_username", f"{self.protocol} needs a user name and a password")
        elif self.sasl_mechanism or self.sasl_username or self.sasl_password:
            raise SecurityError("protocol", f"SASL settings given but the protocol is {self.protocol} "
                                "(use SASL_SSL or SASL_PLAINTEXT)")
        tls_given = self.ssl_ca_file or self.ssl_cert_file or self.ssl_key_file or self.ssl_key_password
        if not self.tls and (tls_given or not self.ssl_verify):
            raise SecurityError("protocol", f"TLS settings given but the protocol is {self.protocol} "
                                "(use SSL or SASL_SSL)")
        if bool(self.ssl_cert_file) != bool(self.ssl_key_file):
            raise SecurityError("ssl_cert_file", "a client certificate needs its key and the key its certificate")

    @property
    def sasl(self) -> bool:
        return self.protocol.startswith("SASL_")

    @property
    def tls(self) -> bool:
        return self.protocol in ("SSL", "SASL_SSL")

    def librdkafka_config(self) -> dict[str, Any]:
        """The librdkafka (confluent-kafka) keys: merge into a Producer/Consumer config."""
        config: dict[str, Any] = {"security.protocol": self.protocol}
        if self.sasl:
            config.update({"sasl.mechanism": self.sasl_mechanism, "sasl.username": self.sasl_username,
                           "sasl.password": self.sasl_password.reveal()})
        if self.tls:
            if self.ssl_ca_file:
                config["ssl.ca.location"] = self.ssl_ca_file
            if self.ssl_cert_file:
                config["ssl.certificate.location"] = self.ssl_cert_file
                config["ssl.key.location"] = self.ssl_key_file
            if self.ssl_key_password:
                config["ssl.key.password"] = self.ssl_key_password.reveal()
            config["enable.ssl.certificate.verification"] = self.ssl_verify
            config["ssl.endpoint.identification.algorithm"] = "https" if self.ssl_verify else "none"
        return config

    def java_properties(self) -> dict[str, str]:
        """The Java Kafka client keys (``ConsumerConfig``/``ProducerConfig`` names).

        The CA is read by the client from ``ssl_ca_file`` (PEM trust store), on every TaskManager.
        A client certificate and key are read here, where the job is built, and passed inline as
        ``ssl.keystore.certificate.chain`` / ``ssl.keystore.key`` (the PEM key store takes a key and a
        certificate from one file only; Kubernetes mounts them as two). Both are of Kafka's ``Password``
        type, which the client prints as ``[hidden]``; so is ``sasl.jaas.config``."""
        props = {"security.protocol": self.protocol}
        if self.sasl:
            props["sasl.mechanism"] = self.sasl_mechanism
            props["sasl.jaas.config"] = (f"{_JAAS_MODULES[self.sasl_mechanism]} required "
                                         f"username={_jaas_quote(self.sasl_username)} "
                                         f"password={_jaas_quote(self.sasl_password.reveal())};")
        if self.tls:
            if self.ssl_ca_file:
                props["ssl.truststore.type"] = "PEM"
                props["ssl.truststore.location"] = self.ssl_ca_file
            if self.ssl_cert_file:
                props["ssl.keystore.type"] = "PEM"
                props["ssl.keystore.certificate.chain"] = _read_pem(self.ssl_cert_file, "ssl_cert_file")
                props["ssl.keystore.key"] = _read_pem(self.ssl_key_file, "ssl_key_file")
            if self.ssl_key_password:
                props["ssl.key.password"] = self.ssl_key_password.reveal()
            props["ssl.endpoint.identification.algorithm"] = "https" if self.ssl_verify else ""
        return props


def _jaas_quote(value: str) -> str:
    """A JAAS option value in double quotes (Kafka parses them with ``StreamTokenizer``: ``\\`` escapes)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _read_pem(path: str, setting: str) -> str:
    try:
        text = Path(path).read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise SecurityError(setting, f"cannot read {path}: {exc.__class__.__name__}") from None
    if "-----BEGIN " not in text:
        raise SecurityError(setting, f"{path} is not a PEM file")
    return text.strip()


@dataclass(frozen=True)
class OpenSearchAccess:
    """Where OpenSearch is and how to log in: basic auth, CA bundle, certificate verification."""

    url: str = ""
    user: str = ""
    password: Secret = field(default_factory=_no_secret)
    ca_file: str = ""
    verify_certs: bool = True

    def __post_init__(self) -> None:
        if self.url and not self.url.startswith(("http://", "https://")):
            raise SecurityError("url", f"{self.url!r}: expected an http(s):// URL")
        if bool(self.user) != bool(self.password):
            raise SecurityError("user", "basic auth needs both a user and a password")
        if self.url.startswith("http://") and self.user:
            raise SecurityError("url", "basic auth over plain http:// would send the password in clear text; "
                                "use https://")

    def auth(self) -> tuple[str, str] | None:
        """opensearch-py's ``http_auth`` (basic auth), or None."""
        return (self.user, self.password.reveal()) if self.user else None

    def client_options(self) -> dict[str, Any]:
        """opensearch-py TLS options (the scheme of ``url`` switches TLS itself on)."""
        if not self.url.startswith("https://"):
            return {}
        options: dict[str, Any] = {"verify_certs": self.verify_certs, "ssl_show_warn": self.verify_certs}
        if self.ca_file:
            options["ca_certs"] = self.ca_file
        if not self.verify_certs:
            options["ssl_assert_hostname"] = False
        return options
