"""deploy/ and flink-conf/ are validated here, not applied: no Kubernetes, Kafka operator, Collector or
OpenSearch can run on this machine. What is checked: every file parses; the FlinkDeployment and the
KafkaTopics against the *published* CRD schemas (Flink Kubernetes Operator 1.14.0, Strimzi 1.0.0, compiled
into pinned npm packages and run with Node.js by tests/crd_check/validate.mjs; `make test` installs them)
and against the reduced, stricter schemas in tests/fixtures/crds/ (which also reject unknown fields); the
Collector config against the contrib distribution's component list; ISM policy and index templates use
OpenSearch keys; saved objects reference what exists; the Dockerfile pins the same jars as
connectors/jars.py; and (with a JVM) every key in flink-conf/config.yaml is a Flink 2.3 configuration option.
The Kustomize install built from these files (deploy/k8s) is rendered and validated in test_k8s_kustomize.py.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from connectors.broker import DEFAULT_TOPICS
from connectors.jars import PINNED_JARS
from jobs.config import JobConfig

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
FIXTURES = Path(__file__).resolve().parent / "fixtures"
TEMPLATES = ROOT / "connectors" / "opensearch_templates"
CRD_CHECK = Path(__file__).resolve().parent / "crd_check"


def yaml_docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]


def docs_of_kind(kind: str) -> Iterator[dict[str, Any]]:
    for path in sorted(DEPLOY.rglob("*.yaml")):
        for doc in yaml_docs(path):
            if doc.get("kind") == kind:
                yield doc


def schema(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((FIXTURES / "crds" / name).read_text(encoding="utf-8"))
    return loaded


def validation_errors(doc: dict[str, Any], schema_doc: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft7Validator(schema_doc)
    return sorted(f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(doc))


# --- published CRD schemas (Node.js, tests/crd_check) ------------------------------------------------


def installed_crd_package(name: str) -> dict[str, Any]:
    """package.json of an installed published-CRD package; fails (not skips) when `make test` did not install it."""
    pinned = json.loads((CRD_CHECK / "package.json").read_text(encoding="utf-8"))["dependencies"][name]
    manifest = CRD_CHECK / "node_modules" / name / "package.json"
    if not manifest.is_file():
        pytest.fail(f"{manifest.relative_to(ROOT)} is missing: run `make test` (it runs "
                    "`npm ci --prefix tests/crd_check` to install the published CRD validators)")
    installed: dict[str, Any] = json.loads(manifest.read_text(encoding="utf-8"))
    if installed["version"] != pinned:
        pytest.fail(f"{name} {installed['version']} is installed but {pinned} is pinned: run `make test`")
    return installed


def run_validate_mjs(stdin: str) -> subprocess.CompletedProcess[str]:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node not found on PATH (tests validate deploy/ against the published CRDs with Node.js)")
    return subprocess.run([node, str(CRD_CHECK / "validate.mjs")], input=stdin, capture_output=True, text=True,
                          timeout=60, check=False)


def published_crd_results(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Run tests/crd_check/validate.mjs on the manifests: one {kind, name, apiVersion, ok, errors} each."""
    for name in ("@kubernetes-models/flink", "@kubernetes-models/strimzi-kafka-operator"):
        installed_crd_package(name)
    proc = run_validate_mjs(json.dumps(docs))
    assert proc.returncode == 0, proc.stderr
    results: list[dict[str, Any]] = json.loads(proc.stdout)
    assert [(r["kind"], r["name"]) for r in results] == [(d["kind"], d["metadata"]["name"]) for d in docs]
    return results


def error_paths(result: dict[str, Any]) -> list[str]:
    return [e["path"] for e in result["errors"]]


def test_every_deploy_file_parses() -> None:
    parsed = 0
    for path in sorted(DEPLOY.rglob("*")):
        if path.suffix == ".yaml":
            assert yaml_docs(path), path
        elif path.suffix == ".json":
            json.loads(path.read_text(encoding="utf-8"))
        elif path.suffix == ".ndjson":
            for line in path.read_text(encoding="utf-8").splitlines():
                json.loads(line)
        else:
            continue
        parsed += 1
    assert parsed >= 7


# --- Flink ---------------------------------------------------------------------------------------------


def flink_deployment() -> dict[str, Any]:
    [doc] = list(docs_of_kind("FlinkDeployment"))
    return doc


def test_flink_deployment_validates_against_published_operator_1_14_crd() -> None:
    sources = installed_crd_package("@kubernetes-models/flink")["crd-generate"]["input"]
    assert any(s.endswith("/release-1.14.0/helm/flink-kubernetes-operator/crds/"
                          "flinkdeployments.flink.apache.org-v1.yml") for s in sources), sources
    [result] = published_crd_results([flink_deployment()])
    assert (result["ok"], result["errors"]) == (True, []), result
    assert flink_deployment()["spec"]["flinkVersion"] == "v2_2"  # newest value the 1.14.0 CRD lists


def test_flink_deployment_matches_the_reduced_strict_crd_schema() -> None:
    assert validation_errors(flink_deployment(), schema("flinkdeployment.v1beta1.schema.yaml")) == []


def test_reduced_flink_crd_schema_rejects_what_the_operator_would_and_unknown_fields() -> None:
    doc = flink_deployment()
    bad = {**doc, "spec": {**doc["spec"], "job": {**doc["spec"]["job"], "upgradeMode": "last_state",
                                                  "entrypoint": "x"}}}
    bad["spec"]["flinkConfiguration"] = {**doc["spec"]["flinkConfiguration"], "parallelism.default": 2}
    errors = validation_errors(bad, schema("flinkdeployment.v1beta1.schema.yaml"))
    assert errors == [
        "['spec', 'flinkConfiguration', 'parallelism.default']: 2 is not of type 'string'",
        "['spec', 'job', 'upgradeMode']: 'last_state' is not one of ['last-state', 'savepoint', 'stateless']",
        "['spec', 'job']: Additional properties are not allowed ('entrypoint' was unexpected)",
    ]


def test_flink_deployment_runs_detect_py_in_application_mode_with_last_state_upgrades() -> None:
    spec = flink_deployment()["spec"]
    job = spec["job"]
    assert job["entryClass"] == "org.apache.flink.client.python.PythonDriver"
    assert job["args"] == ["-py", "/opt/logclaw/jobs/detect.py"]
    assert job["upgradeMode"] == "last-state" and job["state"] == "running"
    conf = spec["flinkConfiguration"]
    assert conf["high-availability.type"] == "kubernetes"  # last-state needs HA metadata
    for key in ("execution.checkpointing.dir", "execution.checkpointing.savepoint-dir", "high-availability.storageDir"):
        assert re.match(r"^(s3|gs|abfss|hdfs)://", conf[key]), key


def test_flink_deployment_agrees_with_flink_conf() -> None:
    """Cluster settings in the FlinkDeployment are flink-conf/config.yaml's, plus the Kubernetes-only ones."""
    local = yaml.safe_load((ROOT / "flink-conf" / "config.yaml").read_text(encoding="utf-8"))
    conf = flink_deployment()["spec"]["flinkConfiguration"]
    k8s_only = {"high-availability.type", "high-availability.storageDir", "python.executable",
                "python.client.executable"}
    assert set(conf) - set(local) == k8s_only
    same = ("execution.checkpointing.mode", "execution.checkpointing.externalized-checkpoint-retention",
            "restart-strategy.type", "python.execution-mode",
            "metrics.reporter.prom.factory.class", "taskmanager.numberOfTaskSlots", "execution.checkpointing.interval")
    assert {k: str(conf[k]).lower() for k in same} == {k: str(local[k]).lower() for k in same}
    # One slot per TaskManager (pod), so each parallel subtask gets its own JVM and embedded Python.
    assert conf["taskmanager.numberOfTaskSlots"] == "1"
    assert int(conf["parallelism.default"]) == flink_deployment()["spec"]["job"]["parallelism"] == 2
    # The one deliberate difference (flink-conf/config.yaml says why): the local cluster keeps its small,
    # TTL-bounded state on the heap, production on RocksDB (may outgrow the heap, incremental checkpoints).
    assert (local["state.backend.type"], conf["state.backend.type"]) == ("hashmap", "rocksdb")


def test_flink_conf_has_the_required_settings() -> None:
    conf = yaml.safe_load((ROOT / "flink-conf" / "config.yaml").read_text(encoding="utf-8"))
    assert {k: conf[k] for k in (
        "execution.checkpointing.interval", "execution.checkpointing.mode",
        "execution.checkpointing.externalized-checkpoint-retention", "execution.checkpointing.dir",
        "state.backend.type", "execution.checkpointing.incremental", "taskmanager.numberOfTaskSlots",
        "rest.port", "rest.bind-address", "metrics.reporter.prom.factory.class",
    )} == {
        "execution.checkpointing.interval": "10 s", "execution.checkpointing.mode": "EXACTLY_ONCE",
        "execution.checkpointing.externalized-checkpoint-retention": "RETAIN_ON_CANCELLATION",
        "execution.checkpointing.dir": "file:///tmp/logclaw/checkpoints", "state.backend.type": "hashmap",
        "execution.checkpointing.incremental": True, "taskmanager.numberOfTaskSlots": 1, "rest.port": 8081,
        "rest.bind-address": "127.0.0.1",
        "metrics.reporter.prom.factory.class": "org.apache.flink.metrics.prometheus.PrometheusReporterFactory",
    }
    assert conf["restart-strategy.type"] in ("exponential-delay", "fixed-delay")
    assert "python.executable" not in conf  # left to the launcher


OPTION_CLASSES = (
    "org.apache.flink.configuration.CheckpointingOptions", "org.apache.flink.configuration.StateBackendOptions",
    "org.apache.flink.configuration.RestartStrategyOptions", "org.apache.flink.configuration.JobManagerOptions",
    "org.apache.flink.configuration.TaskManagerOptions", "org.apache.flink.configuration.RestOptions",
    "org.apache.flink.configuration.MetricOptions", "org.apache.flink.python.PythonOptions",
    "org.apache.flink.state.rocksdb.RocksDBOptions", "org.apache.flink.configuration.PipelineOptions",
    "org.apache.flink.configuration.CoreOptions", "org.apache.flink.configuration.HighAvailabilityOptions",
)


@pytest.mark.flink
def test_every_flink_conf_key_is_a_flink_2_3_option() -> None:
    """Flink 2.x dropped many 1.x keys; an unknown key is silently ignored, so look each one up."""
    from pyflink.java_gateway import get_gateway

    jvm = get_gateway().jvm
    known: set[str] = set()
    for name in OPTION_CLASSES:
        for fld in jvm.java.lang.Class.forName(name).getFields():
            value = fld.get(None)
            is_option = hasattr(value, "getClass") and value.getClass().getName().endswith(".ConfigOption")
            if is_option:
                known.add(value.key())
    conf = yaml.safe_load((ROOT / "flink-conf" / "config.yaml").read_text(encoding="utf-8"))
    k8s = flink_deployment()["spec"]["flinkConfiguration"]
    reporter = re.compile(r"^metrics\.reporter\.prom\.(factory\.class|port)$")  # per-reporter template keys
    assert sorted(k for k in {*conf, *k8s} if k not in known and not reporter.match(k)) == []


# --- Kafka -------------------------------------------------------------------------------------------------


def test_kafka_topics_validate_against_published_strimzi_crd_v1() -> None:
    sources = installed_crd_package("@kubernetes-models/strimzi-kafka-operator")["crd-generate"]["input"]
    assert any(s.endswith("/1.0.0/strimzi-crds-1.0.0.yaml") for s in sources), sources
    topics = list(docs_of_kind("KafkaTopic"))
    assert {doc["apiVersion"] for doc in topics} == {"kafka.strimzi.io/v1"}  # the only API Strimzi 1.0 serves
    results = published_crd_results(topics)
    assert [r for r in results if not r["ok"]] == []


def test_published_crd_validators_reject_bad_manifests() -> None:
    """One mistake per copy; each must fail, naming the path of that mistake (and nothing else)."""
    deployment, topic = flink_deployment(), next(docs_of_kind("KafkaTopic"))
    cases: list[tuple[str, dict[str, Any]]] = []

    def mutated(original: dict[str, Any], path: str, value: Any) -> None:
        doc = copy.deepcopy(original)
        *parents, last = path.strip("/").split("/")
        node = doc
        for key in parents:
            node = node[key]
        assert last in node, path  # mutate a field the manifest really has
        node[last] = value
        cases.append((path, doc))

    mutated(deployment, "/spec/flinkVersion", "v2_9")
    mutated(deployment, "/spec/job/upgradeMode", "last_state")
    mutated(deployment, "/spec/jobManager/resource/cpu", "one")
    mutated(topic, "/spec/partitions", 0)
    mutated(topic, "/apiVersion", "kafka.strimzi.io/v1beta2")
    results = published_crd_results([doc for _, doc in cases])
    assert [(path, r["ok"], error_paths(r)) for (path, _), r in zip(cases, results, strict=True)] == [
        (path, False, [path]) for path, _ in cases
    ]
    messages = {path: r["errors"][0]["message"] for (path, _), r in zip(cases, results, strict=True)}
    assert "v2_2" in messages["/spec/flinkVersion"] and "last-state" in messages["/spec/job/upgradeMode"]
    assert messages["/apiVersion"].startswith("no published schema for kafka.strimzi.io/v1beta2 KafkaTopic")


def test_published_crd_validator_exits_non_zero_on_bad_input() -> None:
    installed_crd_package("@kubernetes-models/flink")
    proc = run_validate_mjs('{"kind": "KafkaTopic"}')
    assert proc.returncode != 0 and "JSON array" in proc.stderr and proc.stdout == ""


def test_kafka_topics_match_the_reduced_strict_v1_schema_and_the_job() -> None:
    topics = list(docs_of_kind("KafkaTopic"))
    for doc in topics:
        assert validation_errors(doc, schema("kafkatopic.v1.schema.yaml")) == [], doc["metadata"]["name"]
    names = {doc["spec"]["topicName"] for doc in topics}
    d = JobConfig()
    assert names == set(DEFAULT_TOPICS) == {"otlp_logs", "otlp_spans", d.incidents_topic, d.dead_letter_topic}


def test_reduced_kafka_topic_v1_schema_rejects_zero_partitions_unknown_fields_and_v1beta2() -> None:
    doc = next(docs_of_kind("KafkaTopic"))
    reduced = schema("kafkatopic.v1.schema.yaml")
    assert validation_errors({**doc, "apiVersion": "kafka.strimzi.io/v1beta2"}, reduced) == [
        "['apiVersion']: 'kafka.strimzi.io/v1beta2' is not one of ['kafka.strimzi.io/v1']",
    ]
    bad = {**doc, "spec": {**doc["spec"], "partitions": 0, "retention": "1d"}}
    assert validation_errors(bad, reduced) == [
        "['spec', 'partitions']: 0 is less than the minimum of 1",
        "['spec']: Additional properties are not allowed ('retention' was unexpected)",
    ]


# --- OTel Collector ------------------------------------------------------------------------------------


def contrib_components() -> dict[str, set[str]]:
    kinds: dict[str, set[str]] = {}
    for line in (FIXTURES / "otelcol" / "otelcol-contrib-0.86.0-components.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            kind, type_name, module = line.split()
            assert module.rsplit("/", 1)[-1].startswith(type_name.replace("_", "")[:6]), line
            kinds.setdefault(kind, set()).add(type_name)
    return kinds


def test_collector_uses_only_contrib_components_and_writes_otlp_proto_to_otlp_logs() -> None:
    config = yaml.safe_load((DEPLOY / "otel-collector" / "config.yaml").read_text(encoding="utf-8"))
    available = contrib_components()
    for kind in ("receivers", "processors", "exporters", "extensions"):
        for component_id in config.get(kind, {}):
            assert component_id.split("/")[0] in available[kind], (kind, component_id)
    service = config["service"]
    assert set(service["extensions"]) <= set(config["extensions"])
    for name, pipeline in service["pipelines"].items():
        for kind in ("receivers", "processors", "exporters"):
            assert set(pipeline.get(kind, [])) <= set(config[kind]), (name, kind)
    logs = service["pipelines"]["logs"]
    [exporter] = logs["exporters"]
    assert exporter.startswith("kafka")
    assert config["exporters"][exporter]["logs"] == {"topic": "otlp_logs", "encoding": "otlp_proto"}
    [spans_exporter] = service["pipelines"]["traces"]["exporters"]
    assert config["exporters"][spans_exporter]["traces"] == {"topic": "otlp_spans", "encoding": "otlp_proto"}
    assert set(config["receivers"]["otlp"]["protocols"]) == {"grpc", "http"}
    assert logs["processors"][0] == "memory_limiter" and logs["processors"][-1] == "batch"
    statements = config["processors"]["transform/tenant"]["log_statements"][0]["statements"]
    assert all('resource.attributes["tenant.id"]' in s for s in statements if s.startswith("set("))


# The kafka exporter's settings in otelcol-contrib >= 0.124.0 (exporter/kafkaexporter config.go and README):
# per-signal `logs`/`metrics`/`traces`/`profiles` blocks of {topic, encoding, topic_from_metadata_key,
# message_key_from_metadata_key}; the top-level `topic` and `encoding` were deprecated in 0.124.0 and removed
# by contrib PR #46917, so they are not in this list.
KAFKA_EXPORTER_KEYS = {
    "brokers", "protocol_version", "client_id", "conn_idle_timeout", "logs", "metrics", "traces", "profiles",
    "topic_from_attribute", "include_metadata_keys", "record_headers", "partition_traces_by_id",
    "partition_metrics_by_resource_attributes", "partition_logs_by_resource_attributes", "partition_logs_by_trace_id",
    "record_partitioner", "tls", "auth", "metadata", "timeout", "retry_on_failure", "sending_queue", "producer",
}
KAFKA_SIGNAL_KEYS = {"topic", "encoding", "topic_from_metadata_key", "message_key_from_metadata_key"}


def test_collector_kafka_exporters_use_the_per_signal_shape_of_current_otelcol_contrib() -> None:
    config = yaml.safe_load((DEPLOY / "otel-collector" / "config.yaml").read_text(encoding="utf-8"))
    kafka = {name: conf for name, conf in config["exporters"].items() if name.split("/")[0] == "kafka"}
    assert set(kafka) == {"kafka/logs", "kafka/spans"}
    for name, conf in kafka.items():
        assert set(conf) <= KAFKA_EXPORTER_KEYS, (name, sorted(set(conf) - KAFKA_EXPORTER_KEYS))
        assert "topic" not in conf and "encoding" not in conf, name  # removed top-level fields
        for signal in ("logs", "metrics", "traces", "profiles"):
            assert set(conf.get(signal, {})) <= KAFKA_SIGNAL_KEYS, (name, signal)
        # config.go Validate: the two ways of keying logs are mutually exclusive
        assert not (conf.get("partition_logs_by_resource_attributes") and conf.get("partition_logs_by_trace_id"))
    assert kafka["kafka/logs"]["partition_logs_by_resource_attributes"] is True  # as logclaw ingest keys logs
    deployment = next(d for d in yaml.safe_load_all((DEPLOY / "otel-collector" / "deployment.yaml").read_text(
        encoding="utf-8")) if d and d["kind"] == "Deployment")
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    name, _, tag = container["image"].partition(":")
    assert name == "otel/opentelemetry-collector-contrib"
    assert tuple(int(p) for p in tag.split(".")) >= (0, 124, 0)  # the first release with the per-signal fields


# --- OpenSearch ----------------------------------------------------------------------------------------

ISM_ACTIONS = {"rollover", "read_only", "read_write", "replica_count", "force_merge", "shrink", "close", "open",
               "delete", "notification", "snapshot", "index_priority", "allocation", "rollup", "transform"}
ELASTICSEARCH_ONLY = {"phases", "lifecycle", "index.lifecycle.name", "index.lifecycle.rollover_alias", "_ilm"}


def keys_of(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield key
            yield from keys_of(value)
    elif isinstance(node, list):
        for value in node:
            yield from keys_of(value)


def template_patterns() -> list[str]:
    return [p for path in sorted(TEMPLATES.glob("*.json"))
            for p in json.loads(path.read_text(encoding="utf-8"))["index_patterns"]]


@pytest.mark.parametrize("name", ["ism-policy.json", "ism-policy-incidents.json"])
def test_ism_policy_uses_opensearch_keys(name: str) -> None:
    body = json.loads((DEPLOY / "opensearch" / name).read_text(encoding="utf-8"))
    assert set(body) == {"policy"}
    policy = body["policy"]
    assert not ELASTICSEARCH_ONLY & set(keys_of(body))
    states = {s["name"]: s for s in policy["states"]}
    assert policy["default_state"] in states
    for state in policy["states"]:
        for action in state["actions"]:
            assert set(action) <= ISM_ACTIONS | {"retry", "timeout"}, action
        for transition in state["transitions"]:
            assert transition["state_name"] in states
            assert set(transition.get("conditions", {})) <= {"min_index_age", "min_doc_count", "min_size",
                                                               "cron", "min_rollover_age"}
    for template in policy["ism_template"]:
        assert set(template["index_patterns"]) <= set(template_patterns())


def test_index_templates_are_opensearch_composable_templates() -> None:
    for path in sorted(TEMPLATES.glob("*.json")):
        body = json.loads(path.read_text(encoding="utf-8"))
        assert {"index_patterns", "template"} <= set(body), path.name
        assert set(body["template"]) <= {"settings", "mappings", "aliases"}, path.name
        assert not ELASTICSEARCH_ONLY & set(keys_of(body)), path.name


def test_dashboards_saved_objects_reference_existing_patterns_and_fields() -> None:
    lines = (DEPLOY / "opensearch" / "dashboards.ndjson").read_text(encoding="utf-8").splitlines()
    objects = [json.loads(line) for line in lines]
    patterns = {o["id"]: o["attributes"] for o in objects if o["type"] == "index-pattern"}
    by_pattern = {p: json.loads(path.read_text(encoding="utf-8"))
                  for path in sorted(TEMPLATES.glob("*.json"))
                  for p in json.loads(path.read_text(encoding="utf-8"))["index_patterns"]}
    assert {a["title"] for a in patterns.values()} == set(by_pattern)
    for attributes in patterns.values():
        fields = by_pattern[attributes["title"]]["template"]["mappings"]["properties"]
        assert attributes["timeFieldName"] in fields, attributes
    [search] = [o for o in objects if o["type"] == "search"]
    for ref in search["references"]:
        assert ref["type"] == "index-pattern" and ref["id"] in patterns
    incidents = by_pattern[patterns[search["references"][0]["id"]]["title"]]["template"]["mappings"]["properties"]
    assert set(search["attributes"]["columns"]) <= set(incidents)
    source = json.loads(search["attributes"]["kibanaSavedObjectMeta"]["searchSourceJSON"])
    assert source["indexRefName"] == search["references"][0]["name"]


# --- Dockerfile ----------------------------------------------------------------------------------------


def test_dockerfile_pins_the_jars_of_connectors_jars_and_copies_the_entry_point() -> None:
    text = (DEPLOY / "Dockerfile").read_text(encoding="utf-8")
    assert re.search(r"^FROM flink:2\.3\b", text, re.M)
    args = dict(re.findall(r"^ARG (\w+)=(\S+)$", text, re.M))
    connector, clients = PINNED_JARS
    assert (args["KAFKA_CONNECTOR_VERSION"], args["KAFKA_CONNECTOR_SHA256"]) == (connector.version, connector.sha256)
    assert (args["KAFKA_CLIENTS_VERSION"], args["KAFKA_CLIENTS_SHA256"]) == (clients.version, clients.sha256)
    assert text.count("sha256sum -c -") == 2
    assert "https://repo1.maven.org/maven2/" in text
    assert "COPY jobs ./jobs" in text and "WORKDIR /opt/logclaw" in text  # -> /opt/logclaw/jobs/detect.py
    assert "COPY pyproject.toml constraints.txt README.md ./" in text  # pyproject's readme: the build needs it
    assert "plugins/metrics-prometheus" in text
