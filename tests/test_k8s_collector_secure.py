"""The OTel Collector on production's secured Kafka (issue 15, deploy side): its two kafka exporters write to
Strimzi's TLS listener :9093 with SCRAM-SHA-512 as the KafkaUser logclaw-collector, while dev stays plaintext.

No Collector binary can run here, so its start-up is stood in for: the rendered Deployment's `--config`
arguments are read in order from the ConfigMaps mounted where they point, merged as the Collector's confmap
resolver merges several configs (maps key by key, a later scalar or list replaces the earlier one: Koanf's
default, see opentelemetry-collector docs/rfcs/configuration-merging-strategy.md; list appending is behind the
alpha gate confmap.enableMergeAppendOption, not enabled), and `${env:...}` / `${file:...}` are expanded against
the pod's environment and its Secret files laid out as the kubelet would lay them out. The result, the
"effective config", is checked against the contrib kafka client's field names (pkg/kafka/configkafka, configtls)
and against the rest of the rendered install (mounts, Secrets, KafkaUsers and their ACLs).
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import yaml

from tests.test_deploy_files import KAFKA_EXPORTER_KEYS
from tests.test_k8s_kustomize import (
    DEPLOY,
    HASHED,
    PLAIN_PORT,
    SECRETS_FOLDER,
    TLS_PORT,
    Doc,
    example_env,
    granted,
    mounted_files,
    one,
    render,
    secret_data,
)

# The contrib kafka client's authentication fields (pkg/kafka/configkafka config.go / config.schema.yaml:
# AuthenticationConfig, SASLConfig) and configtls' client fields (opentelemetry-collector config/configtls
# README). `auth.tls` and `auth.plain_text` are deprecated aliases (0.124.0, 0.123.0): not used here.
AUTH_KEYS = {"plain_text", "sasl", "kerberos", "tls"}
SASL_KEYS = {"username", "password", "mechanism", "version", "aws_msk", "oauthbearer_token_source"}
TLS_CLIENT_KEYS = {
    "insecure", "insecure_skip_verify", "server_name_override", "ca_file", "ca_pem", "include_system_ca_certs_pool",
    "cert_file", "cert_pem", "key_file", "key_pem", "min_version", "max_version", "cipher_suites",
    "include_insecure_cipher_suites", "curve_preferences", "reload_interval", "tpm",
}
MECHANISM = "SCRAM-SHA-512"  # the KafkaUsers' authentication type (kafka-users.yaml) and Strimzi's TLS listener's
COLLECTOR_USER = "logclaw-collector"
FRAGMENT = DEPLOY / "k8s/overlays/production/collector/kafka-sasl-ssl.yaml"
REFERENCE = re.compile(r"\$\{(env|file):([^}]*)\}")  # the two providers this config uses (both in otelcol-contrib)

Config = dict[str, Any]


def collector(docs: list[Doc]) -> tuple[Doc, Doc]:
    """(pod spec, container) of the Collector Deployment."""
    spec: Doc = one(docs, "Deployment", "logclaw-collector")["spec"]["template"]["spec"]
    [container] = spec["containers"]
    return spec, container


def config_texts(docs: list[Doc], spec: Doc, container: Doc) -> list[str]:
    """The text of each `--config` in argument order, from the ConfigMap volume mounted at its folder."""
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    texts = []
    for arg in container["args"]:
        assert arg.startswith("--config="), arg
        path = arg.removeprefix("--config=").removeprefix("file:")
        folder, name = path.rsplit("/", 1)
        mounts = [m for m in container.get("volumeMounts", []) if m["mountPath"] == folder]
        assert len(mounts) == 1, f"{path}: no volume mounted at {folder}"
        config_map = volumes[mounts[0]["name"]]["configMap"]
        [data] = [d["data"] for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["namespace"] == "logclaw"
                  and d["metadata"]["name"] == config_map["name"]]
        items = {i["path"]: i["key"] for i in config_map.get("items", [])} or {k: k for k in data}
        assert name in items, f"{path}: ConfigMap {config_map['name']} has no {name}"
        texts.append(data[items[name]])
    return texts


def merge(base: Any, later: Any) -> Any:
    """The Collector's merge of two configs: maps key by key, anything else (scalars, lists) replaced."""
    if isinstance(base, dict) and isinstance(later, dict):
        merged = dict(base)
        for key, value in later.items():
            merged[key] = merge(base[key], value) if key in base else copy.deepcopy(value)
        return merged
    return copy.deepcopy(later)


def raw_config(docs: list[Doc]) -> Config:
    """The merged config before `${...}` expansion (what the ConfigMaps say)."""
    spec, container = collector(docs)
    merged: Config = {}
    for text in config_texts(docs, spec, container):
        merged = merge(merged, yaml.safe_load(text))
    return merged


def pod_files(docs: list[Doc], root: Path) -> dict[str, tuple[str, str, bool]]:
    """Lay the Collector's Secret files out under `root` as in the pod; path -> (Secret, key, read-only)."""
    spec, container = collector(docs)
    files = mounted_files(docs, "logclaw", spec, container)
    for path, (secret, secret_key, _) in files.items():
        target = root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(secret_data(docs, "logclaw", secret)[secret_key], encoding="utf-8")
    return files


def expand(node: Any, env: dict[str, str], root: Path) -> Any:
    """`${env:NAME}` (unset -> "", as the Collector does) and `${file:/path}` (the file's text; a missing file
    fails the Collector's start, so it fails here) in every string of a config."""
    if isinstance(node, dict):
        return {k: expand(v, env, root) for k, v in node.items()}
    if isinstance(node, list):
        return [expand(v, env, root) for v in node]
    if not isinstance(node, str):
        return node

    def value(match: re.Match[str]) -> str:
        scheme, target = match.groups()
        if scheme == "env":
            return env.get(target, "")
        path = root / target.lstrip("/")
        assert path.is_file(), f"${{file:{target}}}: no such file in the pod"
        return path.read_text(encoding="utf-8")

    return REFERENCE.sub(value, node)


def collector_env(docs: list[Doc]) -> dict[str, str]:
    """The Collector's environment: its envFrom Secrets (the API keys) and literal env."""
    _, container = collector(docs)
    env = {}
    for source in container.get("envFrom", []):
        env.update(secret_data(docs, "logclaw", source["secretRef"]["name"]))
    env.update({v["name"]: v["value"] for v in container.get("env", []) if "value" in v})
    return env


def kafka_exporters(config: Config) -> dict[str, Config]:
    """The kafka exporters some pipeline uses, by component id."""
    used = {e for p in config["service"]["pipelines"].values() for e in p.get("exporters", [])}
    return {name: conf for name, conf in config["exporters"].items() if name in used and name.split("/")[0] == "kafka"}


def file_problem(where: str, path: str, files: dict[str, tuple[str, str, bool]], secret: str,
                 secret_key: str) -> list[str]:
    """`path` is the file `secret_key` of the Secret `secret`, mounted read-only."""
    mounted = files.get(path)
    if mounted is None:
        return [f"{where}={path} is no file of a mounted Secret"]
    if mounted != (secret, secret_key, True):
        return [f"{where}={path} is {mounted}, not {secret}/{secret_key} read-only"]
    return []


def collector_kafka_problems(docs: list[Doc]) -> list[str]:
    """What keeps production's Collector from writing to Kafka as meant: every kafka exporter on the TLS listener
    with certificate verification against the mounted Kafka CA, SCRAM-SHA-512 as a SCRAM KafkaUser whose password
    is read from that user's line of logclaw-kafka, mounted read-only; only field names the contrib kafka client
    knows; Secret files readable by the Collector's non-root user."""
    spec, _ = collector(docs)
    config = raw_config(docs)
    files = mounted_files(docs, "logclaw", spec, collector(docs)[1])
    users = {d["metadata"]["name"]: d["spec"] for d in docs if d["kind"] == "KafkaUser"}
    problems = []
    for name, conf in sorted(kafka_exporters(config).items()):
        problems += [f"{name}: unknown field {k}" for k in sorted(set(conf) - KAFKA_EXPORTER_KEYS)]
        problems += [f"{name}: {b} is not the TLS listener" for b in conf.get("brokers", [])
                     if not b.endswith(f":{TLS_PORT}")]
        tls, auth = conf.get("tls") or {}, conf.get("auth") or {}
        problems += [f"{name}: unknown field tls.{k}" for k in sorted(set(tls) - TLS_CLIENT_KEYS)]
        problems += [f"{name}: unknown field auth.{k}" for k in sorted(set(auth) - AUTH_KEYS)]
        if not tls or tls.get("insecure") or tls.get("insecure_skip_verify"):
            problems.append(f"{name}: no verified TLS ({tls or 'tls unset'})")
        else:
            problems += file_problem(f"{name}: tls.ca_file", tls.get("ca_file", ""), files, "logclaw-ca-bundles",
                                     "kafka-ca.crt")
        sasl = auth.get("sasl") or {}
        problems += [f"{name}: unknown field auth.sasl.{k}" for k in sorted(set(sasl) - SASL_KEYS)]
        if sasl.get("mechanism") != MECHANISM:
            problems.append(f"{name}: auth.sasl.mechanism={sasl.get('mechanism')}")
        user = sasl.get("username", "")
        if users.get(user, {}).get("authentication", {}).get("type") != MECHANISM.lower():
            problems.append(f"{name}: {user!r} is no {MECHANISM} KafkaUser")
        password = REFERENCE.fullmatch(str(sasl.get("password", "")))
        if password is None or password.group(1) != "file":
            problems.append(f"{name}: auth.sasl.password is not read from a mounted file")
        else:
            problems += file_problem(f"{name}: auth.sasl.password", password.group(2), files, "logclaw-kafka", user)
    for volume in spec.get("volumes", []):
        mode = volume.get("secret", {}).get("defaultMode", 0o644)  # the API server's default
        if "secret" in volume and not mode & 0o004 and "fsGroup" not in spec.get("securityContext", {}):
            problems.append(f"{volume['name']}: mode {mode:o} is unreadable by the Collector's user")
    return problems


def test_production_collector_writes_to_kafka_over_sasl_ssl_as_its_own_user(tmp_path: Path) -> None:
    docs = render("production")
    assert collector_kafka_problems(docs) == []
    files = pod_files(docs, tmp_path)
    config = expand(raw_config(docs), collector_env(docs), tmp_path)
    # What the Collector will have after merging and expanding: the settings the overlay's engineer asked for.
    exporters = kafka_exporters(config)
    assert set(exporters) == {"kafka/logs", "kafka/spans"}
    password = example_env("kafka.env")[COLLECTOR_USER]
    for name, conf in exporters.items():
        assert conf["brokers"] == [f"logclaw-kafka-bootstrap.kafka:{TLS_PORT}"], name
        assert conf["tls"] == {"ca_file": "/etc/logclaw/ca/kafka-ca.crt"}, name
        sasl = {"mechanism": MECHANISM, "username": COLLECTOR_USER, "password": password}
        assert conf["auth"] == {"sasl": sasl}, name
        assert (tmp_path / conf["tls"]["ca_file"].lstrip("/")).read_text(encoding="utf-8") == \
            (SECRETS_FOLDER / "kafka-ca.crt.example").read_text(encoding="utf-8")
    assert password == password.strip()  # the file provider passes the file's bytes on: no stray newline
    # The Collector sees only its own Kafka password and the Kafka CA (no OpenSearch client, no other user's line).
    assert files == {"/etc/logclaw/kafka/password": ("logclaw-kafka", COLLECTOR_USER, True),
                     "/etc/logclaw/ca/kafka-ca.crt": ("logclaw-ca-bundles", "kafka-ca.crt", True)}
    # Its KafkaUser may write what its pipelines export (topics from the effective config).
    user = one(docs, "KafkaUser", COLLECTOR_USER)
    topics = {("topic", conf[signal]["topic"], "Write") for conf in exporters.values()
              for signal in ("logs", "traces") if signal in conf}
    assert topics == {("topic", "otlp_logs", "Write"), ("topic", "otlp_spans", "Write")}
    assert topics <= granted(user)
    # The Strimzi User Operator and the pod read the same password (one file makes both Secrets).
    assert secret_data(docs, "kafka", "logclaw-kafka-users")[COLLECTOR_USER] == password


def test_production_fragment_changes_only_how_the_kafka_exporters_connect() -> None:
    """One source of truth for the pipeline: the merged config is the repository's config.yaml but for the
    kafka exporters' brokers, tls and auth; the fragment covers every kafka exporter and nothing else."""
    docs = render("production")
    base = yaml.safe_load((DEPLOY / "otel-collector/config.yaml").read_text(encoding="utf-8"))
    spec, container = collector(docs)
    texts = config_texts(docs, spec, container)
    assert texts[0] == (DEPLOY / "otel-collector/config.yaml").read_text(encoding="utf-8")
    assert texts[1:] == [FRAGMENT.read_text(encoding="utf-8")]
    fragment = yaml.safe_load(texts[1])
    assert set(fragment) == {"exporters"}
    assert set(fragment["exporters"]) == set(kafka_exporters(base))
    assert {k for conf in fragment["exporters"].values() for k in conf} == {"brokers", "tls", "auth"}
    merged = raw_config(docs)
    for conf in merged["exporters"].values():
        for connection in ("brokers", "tls", "auth"):
            conf.pop(connection, None)
    for conf in base["exporters"].values():
        conf.pop("brokers", None)
    assert merged == base


def test_collector_merge_stand_in_follows_the_collector_rules() -> None:
    """The stand-in merge: maps by key, later scalars and lists replace (a list is not appended)."""
    base = {"exporters": {"kafka": {"brokers": ["a:9092", "b:9092"], "producer": {"compression": "zstd"}}}}
    later = {"exporters": {"kafka": {"brokers": ["c:9093"], "tls": {"ca_file": "/ca"}}}}
    assert merge(base, later) == {"exporters": {"kafka": {
        "brokers": ["c:9093"], "producer": {"compression": "zstd"}, "tls": {"ca_file": "/ca"}}}}
    assert base["exporters"]["kafka"]["brokers"] == ["a:9092", "b:9092"]  # inputs untouched


def test_the_collector_kafka_check_catches_a_mistake_each() -> None:
    """collector_kafka_problems, fed one broken copy of production each, names exactly that mistake."""
    def broken(change: Any) -> list[str]:
        docs = render("production")
        change(docs)
        return collector_kafka_problems(docs)

    def container(docs: list[Doc]) -> Doc:
        return collector(docs)[1]

    def edit_fragment(docs: list[Doc], edit: Any) -> None:
        [config_map] = [d for d in docs if d["kind"] == "ConfigMap"
                        and HASHED.sub("", d["metadata"]["name"]) == "logclaw-collector-production"]
        # Through JSON: the fragment's YAML alias makes both exporters one object; break one of them only.
        fragment = json.loads(json.dumps(yaml.safe_load(config_map["data"]["kafka-sasl-ssl.yaml"])))
        edit(fragment["exporters"]["kafka/logs"])
        config_map["data"]["kafka-sasl-ssl.yaml"] = yaml.safe_dump(fragment)

    def drop_ca_mount(docs: list[Doc]) -> None:
        container(docs)["volumeMounts"] = [m for m in container(docs)["volumeMounts"] if m["name"] != "ca-bundles"]

    def writable_password(docs: list[Doc]) -> None:
        [mount] = [m for m in container(docs)["volumeMounts"] if m["name"] == "kafka-credentials"]
        del mount["readOnly"]

    def other_users_password(docs: list[Doc]) -> None:
        spec, _ = collector(docs)
        [volume] = [v for v in spec["volumes"] if v["name"] == "kafka-credentials"]
        volume["secret"]["items"] = [{"key": "logclaw-detect", "path": "password"}]

    def owner_only_mode(docs: list[Doc]) -> None:
        spec, _ = collector(docs)
        [volume] = [v for v in spec["volumes"] if v["name"] == "kafka-credentials"]
        volume["secret"]["defaultMode"] = 0o400

    def no_fragment(docs: list[Doc]) -> None:
        container(docs)["args"] = container(docs)["args"][:1]

    ca = "/etc/logclaw/ca/kafka-ca.crt"
    assert broken(drop_ca_mount) == [f"kafka/{e}: tls.ca_file={ca} is no file of a mounted Secret"
                                     for e in ("logs", "spans")]
    assert broken(writable_password) == [
        f"kafka/{e}: auth.sasl.password=/etc/logclaw/kafka/password is ('logclaw-kafka', '{COLLECTOR_USER}', False), "
        f"not logclaw-kafka/{COLLECTOR_USER} read-only" for e in ("logs", "spans")]
    assert broken(other_users_password) == [
        f"kafka/{e}: auth.sasl.password=/etc/logclaw/kafka/password is ('logclaw-kafka', 'logclaw-detect', True), "
        f"not logclaw-kafka/{COLLECTOR_USER} read-only" for e in ("logs", "spans")]
    assert broken(owner_only_mode) == ["kafka-credentials: mode 400 is unreadable by the Collector's user"]
    assert broken(lambda d: edit_fragment(d, lambda c: c["auth"]["sasl"].update(password="hunter2"))) == [
        "kafka/logs: auth.sasl.password is not read from a mounted file"]
    plain = f"logclaw-kafka-bootstrap.kafka:{PLAIN_PORT}"
    assert broken(lambda d: edit_fragment(d, lambda c: c.update(brokers=[plain]))) == [
        f"kafka/logs: {plain} is not the TLS listener"]
    assert broken(lambda d: edit_fragment(d, lambda c: c["tls"].update(insecure_skip_verify=True))) == [
        "kafka/logs: no verified TLS ({'ca_file': '/etc/logclaw/ca/kafka-ca.crt', 'insecure_skip_verify': True})"]
    assert broken(lambda d: edit_fragment(d, lambda c: c["auth"]["sasl"].update(mechanism="PLAIN"))) == [
        "kafka/logs: auth.sasl.mechanism=PLAIN"]
    assert broken(lambda d: edit_fragment(d, lambda c: c["auth"]["sasl"].update(user="logclaw-collector"))) == [
        "kafka/logs: unknown field auth.sasl.user"]
    assert broken(no_fragment) == [
        problem for e in ("logs", "spans") for problem in (
            f"kafka/{e}: {plain} is not the TLS listener", f"kafka/{e}: no verified TLS (tls unset)",
            f"kafka/{e}: auth.sasl.mechanism=None", f"kafka/{e}: '' is no {MECHANISM} KafkaUser",
            f"kafka/{e}: auth.sasl.password is not read from a mounted file")]


def test_dev_collector_stays_plaintext_on_the_plain_listener(tmp_path: Path) -> None:
    docs = render("dev")
    spec, container = collector(docs)
    assert config_texts(docs, spec, container) == [
        (DEPLOY / "otel-collector/config.yaml").read_text(encoding="utf-8")]
    assert mounted_files(docs, "logclaw", spec, container) == {}
    config = expand(raw_config(docs), collector_env(docs), tmp_path)
    for name, conf in kafka_exporters(config).items():
        assert conf["brokers"] == [f"logclaw-kafka-bootstrap.kafka:{PLAIN_PORT}"], name
        assert "tls" not in conf and "auth" not in conf, name
    assert not [d for d in docs if d["kind"] == "ConfigMap" and "production" in d["metadata"]["name"]]
