"""The Kubernetes install (deploy/k8s: a Kustomize base and the dev and production overlays), rendered with
`kubectl kustomize` exactly as `kubectl apply -k deploy/k8s/overlays/<name>` would, then checked without
an API server (none can run here):

- every rendered object against published schemas, through tests/crd_check/validate.mjs: the Flink
  Kubernetes Operator 1.14.0 and Strimzi 1.0.0 CRDs, the Prometheus Operator's PodMonitor/ServiceMonitor
  and the core API (kubernetes-models, Kubernetes 1.36), all pinned npm packages; these ignore unknown
  fields, like the API server;
- every core object again, strictly (unknown fields rejected), against the Kubernetes 1.30 and 1.36 JSON
  schemas of the pinned PyPI package kubernetes-validate;
- the FlinkDeployment and KafkaTopics against the reduced strict schemas of tests/fixtures/crds/;
- what no schema sees: every referenced ConfigMap, Secret, service account and named port exists, Services
  and monitors select what they mean to, the S3 plugin jar matches the installed Flink, the Collector runs
  the repository's config, the Secrets give it the keys its config reads, and the overlays change what
  they say;
- production's secure clients (issue 15 item 2, deploy side): every pod that runs a Kafka client (the
  job's JobManager and TaskManagers, the ticketing worker) speaks SASL_SSL + SCRAM-SHA-512 to Strimzi's
  TLS listener as its own KafkaUser, whose ACLs cover what it reads and writes; secrets reach the pods as
  read-only files of mounted Secrets (never env); and the real settings layer (jobs.settings,
  JobConfig / TicketingConfig) reads each pod's rendered env and mounted files, laid out in a temporary
  folder as the kubelet would lay them out (the stand-in for a running pod). The dev overlay has none of it.
"""

from __future__ import annotations

import base64
import copy
import json
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.test_deploy_files import installed_crd_package, run_validate_mjs

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
OVERLAYS = ("dev", "production")
CORE_VERSIONS = ("1.30.0", "1.36.0")  # oldest and newest Kubernetes the strict check covers
CRD_KINDS = {"FlinkDeployment", "KafkaTopic", "KafkaUser", "PodMonitor", "ServiceMonitor"}
HASHED = re.compile(r"-[a-z0-9]{10}$")  # Kustomize's generated-name suffix

Doc = dict[str, Any]


def kubectl() -> str:
    path = shutil.which("kubectl")
    if path is None:
        pytest.fail("kubectl not found on PATH (deploy/k8s is rendered with `kubectl kustomize`)")
    return path


def render_tree(tree: Path, target: str) -> list[Doc]:
    proc = subprocess.run([kubectl(), "kustomize", str(tree / target)], capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


_RENDERED: dict[str, list[Doc]] = {}


def only_secret_templates(folder: str, names: list[str]) -> set[str]:
    """Leave out real secret files (a developer's own, git-ignored) when copying deploy/."""
    if not folder.endswith("/secrets"):
        return set()
    return {n for n in names if not n.endswith(".example") and n != ".gitignore"}


def render(overlay: str) -> list[Doc]:
    """The overlay as `kubectl apply -k` would send it. Production's Secrets come from files nobody commits:
    render a copy of deploy/ in which they are the committed *.example templates."""
    if overlay not in _RENDERED:
        tmp = Path(tempfile.mkdtemp(prefix="logclaw-k8s-"))
        try:
            shutil.copytree(DEPLOY, tmp / "deploy", ignore=only_secret_templates)
            for example in (tmp / "deploy/k8s/overlays").rglob("*.example"):
                shutil.copy(example, example.with_suffix(""))
            _RENDERED[overlay] = render_tree(tmp, f"deploy/k8s/overlays/{overlay}")
        finally:
            shutil.rmtree(tmp)
    return copy.deepcopy(_RENDERED[overlay])


def key(doc: Doc) -> tuple[str, str, str]:
    meta = doc["metadata"]
    return doc["kind"], meta.get("namespace", ""), HASHED.sub("", meta["name"])


def one(docs: list[Doc], kind: str, name: str) -> Doc:
    [doc] = [d for d in docs if d["kind"] == kind and HASHED.sub("", d["metadata"]["name"]) == name]
    return doc


def pod_specs(docs: list[Doc]) -> Iterator[tuple[Doc, Doc]]:
    """(owner, pod spec) of every Deployment and of the FlinkDeployment's pod template."""
    for doc in docs:
        if doc["kind"] == "Deployment":
            yield doc, doc["spec"]["template"]["spec"]
        elif doc["kind"] == "FlinkDeployment":
            spec = doc["spec"]["podTemplate"]["spec"]
            yield doc, {**spec, "serviceAccountName": doc["spec"]["serviceAccount"]}



def secret_data(docs: list[Doc], namespace: str, name: str) -> dict[str, str]:
    """The decoded data of the Secret `name` (generated name or not) in `namespace`; {} when there is none."""
    for doc in docs:
        if doc["kind"] == "Secret" and doc["metadata"]["namespace"] == namespace and \
                name in (doc["metadata"]["name"], HASHED.sub("", doc["metadata"]["name"])):
            return {k: base64.b64decode(v).decode() for k, v in doc.get("data", {}).items()}
    return {}


def secret_keys_used(spec: Doc) -> Iterator[tuple[str, str]]:
    """(Secret, key) of every env secretKeyRef and every Secret volume item in a pod spec (not optional)."""
    for container in spec["containers"]:
        for var in container.get("env", []):
            ref = var.get("valueFrom", {}).get("secretKeyRef")
            if ref and not ref.get("optional", False):
                yield ref["name"], ref["key"]
    for volume in spec.get("volumes", []):
        if "secret" in volume and not volume["secret"].get("optional", False):
            for item in volume["secret"].get("items", []):
                yield volume["secret"]["secretName"], item["key"]


def role_pod_specs(docs: list[Doc]) -> Iterator[tuple[str, Doc]]:
    """(pod, pod spec) of each kind of pod the install starts: one per Deployment, and the FlinkDeployment's
    JobManager and TaskManager, each of which the operator builds from spec.podTemplate merged with the
    role's own spec.<role>.podTemplate (none here: a role template would need that merge done below)."""
    for doc in docs:
        name = doc["metadata"]["name"]
        if doc["kind"] == "Deployment":
            yield name, doc["spec"]["template"]["spec"]
        elif doc["kind"] == "FlinkDeployment":
            for role in ("jobManager", "taskManager"):
                assert "podTemplate" not in doc["spec"][role], f"{name} {role}: merge its pod template here"
                yield f"{name}/{role}", doc["spec"]["podTemplate"]["spec"]


def container_env(docs: list[Doc], namespace: str, container: Doc) -> dict[str, tuple[str, str]]:
    """What a container's environment holds, by variable: ("value", text) for a literal or a ConfigMap's
    value, ("secret", "<Secret>/<key>") for a value taken from a Secret. env wins over envFrom."""
    env: dict[str, tuple[str, str]] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            [config] = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["namespace"] == namespace
                        and d["metadata"]["name"] == source["configMapRef"]["name"]]
            env.update({k: ("value", v) for k, v in config.get("data", {}).items()})
        else:
            name = source["secretRef"]["name"]
            env.update({k: ("secret", f"{HASHED.sub('', name)}/{k}") for k in secret_data(docs, namespace, name)})
    for var in container.get("env", []):
        ref = var.get("valueFrom", {}).get("secretKeyRef")
        if ref:
            env[var["name"]] = ("secret", f"{HASHED.sub('', ref['name'])}/{ref['key']}")
        else:
            env[var["name"]] = ("value", var.get("value", ""))
    return env


def mounted_files(docs: list[Doc], namespace: str, spec: Doc, container: Doc) -> dict[str, tuple[str, str, bool]]:
    """Each file a Secret volume puts into the container: path -> (Secret without hash suffix, key, read-only)."""
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    files = {}
    for mount in container.get("volumeMounts", []):
        secret = volumes[mount["name"]].get("secret")
        if secret is None:
            continue
        assert "subPath" not in mount  # a subPath mount is one file and never sees a rotated Secret
        data = secret_data(docs, namespace, secret["secretName"])
        for item in secret.get("items") or [{"key": k, "path": k} for k in data]:
            files[f"{mount['mountPath']}/{item['path']}"] = (HASHED.sub("", secret["secretName"]), item["key"],
                                                              mount.get("readOnly", False))
    return files


BASE_OBJECTS = [
    ("ConfigMap", "logclaw", "logclaw-collector"), ("ConfigMap", "logclaw", "logclaw-detect"),
    ("Deployment", "logclaw", "logclaw-collector"), ("Deployment", "logclaw", "logclaw-console"),
    ("Deployment", "logclaw", "logclaw-ticketing"), ("FlinkDeployment", "logclaw", "logclaw-detect"),
    ("KafkaTopic", "kafka", "logclaw-dead-letter"), ("KafkaTopic", "kafka", "logclaw-incidents"),
    ("KafkaTopic", "kafka", "otlp-logs"), ("KafkaTopic", "kafka", "otlp-spans"),
    ("Namespace", "", "logclaw"), ("PersistentVolumeClaim", "logclaw", "logclaw-ticketing"),
    ("PodMonitor", "logclaw", "logclaw-flink"), ("Role", "logclaw", "logclaw-flink"),
    ("RoleBinding", "logclaw", "logclaw-flink"), ("Service", "logclaw", "logclaw-collector"),
    ("Service", "logclaw", "logclaw-console"), ("ServiceAccount", "logclaw", "logclaw-flink"),
    ("ServiceMonitor", "logclaw", "logclaw-collector"),
]


def test_each_overlay_renders_the_whole_install_with_its_secrets() -> None:
    dev_secrets = [("Secret", "logclaw", "logclaw-collector-keys"), ("Secret", "logclaw", "logclaw-console-keys")]
    production_extra = [("PodDisruptionBudget", "logclaw", "logclaw-collector"),
                        ("Secret", "logclaw", "logclaw-opensearch"), ("Secret", "logclaw", "logclaw-ticketing"),
                        ("Secret", "logclaw", "logclaw-kafka"), ("Secret", "kafka", "logclaw-kafka-users"),
                        ("Secret", "logclaw", "logclaw-ca-bundles"), ("KafkaUser", "kafka", "logclaw-detect"),
                        ("KafkaUser", "kafka", "logclaw-ticketing"), ("KafkaUser", "kafka", "logclaw-collector"),
                        ("ConfigMap", "logclaw", "logclaw-collector-production")]  # its kafka exporters on SASL_SSL
    assert sorted(map(key, render("dev"))) == sorted(BASE_OBJECTS + dev_secrets)
    assert sorted(map(key, render("production"))) == sorted(BASE_OBJECTS + dev_secrets + production_extra)
    assert sorted(map(key, render_tree(ROOT, "deploy/k8s/base"))) == sorted(BASE_OBJECTS)  # no Secrets


# --- schemas ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_rendered_object_validates_against_the_published_schemas(overlay: str) -> None:
    for name in ("kubernetes-models", "@kubernetes-models/prometheus-operator", "@kubernetes-models/flink",
                 "@kubernetes-models/strimzi-kafka-operator"):
        installed_crd_package(name)
    docs = render(overlay)
    assert ("KafkaUser" in {d["kind"] for d in docs}) == (overlay == "production")
    for secret in (d for d in docs if d["kind"] == "Secret"):
        # Kustomize folds long base64 values over lines; the API server's decoder (Go's encoding/base64)
        # skips the newlines, the schema's "byte" format does not.
        secret["data"] = {k: v.replace("\n", "") for k, v in secret.get("data", {}).items()}
    proc = run_validate_mjs(json.dumps(docs))
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout)
    assert [(r["kind"], r["ok"], r["errors"]) for r in results] == [(d["kind"], True, []) for d in docs]


@pytest.mark.parametrize("k8s", CORE_VERSIONS)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_core_object_validates_strictly_against_the_kubernetes_schema(overlay: str, k8s: str) -> None:
    docs = render(overlay)
    core = [d for d in docs if d["kind"] not in CRD_KINDS]
    # The FlinkDeployment's pod template is a core Pod the operator completes; the published CRD leaves it loose.
    core += [{**d["spec"]["podTemplate"], "metadata": {**d["spec"]["podTemplate"]["metadata"], "namespace": "logclaw"}}
             for d in docs if d["kind"] == "FlinkDeployment"]
    errors = []
    for doc in core:
        try:
            kubernetes_validate.validate(doc, k8s, strict=True)
        except kubernetes_validate.ValidationError as exc:
            errors.append(f"{key(doc)}: {exc.message}")
    assert errors == []
    assert len(core) >= 15


def test_the_schema_checks_reject_a_mistake_each() -> None:
    """Each validator, fed one broken copy, fails on exactly that mistake (so a pass above means something)."""
    docs = render("dev")
    deployment = one(docs, "Deployment", "logclaw-console")
    typo = copy.deepcopy(deployment)
    typo["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["paht"] = "/healthz"
    with pytest.raises(kubernetes_validate.ValidationError, match="paht"):
        kubernetes_validate.validate(typo, "1.36.0", strict=True)
    wrong_type = copy.deepcopy(deployment)
    wrong_type["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "http"
    monitor = copy.deepcopy(one(docs, "PodMonitor", "logclaw-flink"))
    monitor["spec"]["podMetricsEndpoints"][0]["interval"] = "half a minute"
    proc = run_validate_mjs(json.dumps([wrong_type, monitor]))
    paths = [[e["path"] for e in r["errors"]] for r in json.loads(proc.stdout)]
    assert paths == [["/spec/template/spec/containers/0/ports/0/containerPort"],
                     ["/spec/podMetricsEndpoints/0/interval"]]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_rendered_flink_deployment_and_topics_match_the_reduced_strict_schemas(overlay: str) -> None:
    fixtures = Path(__file__).resolve().parent / "fixtures" / "crds"
    docs = render(overlay)
    for kind, name in (("FlinkDeployment", "flinkdeployment.v1beta1.schema.yaml"),
                       ("KafkaTopic", "kafkatopic.v1.schema.yaml")):
        schema = yaml.safe_load((fixtures / name).read_text(encoding="utf-8"))
        for doc in (d for d in docs if d["kind"] == kind):
            errors = [e.message for e in jsonschema.Draft7Validator(schema).iter_errors(doc)]
            assert errors == [], key(doc)


# --- what no schema checks ----------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_reference_resolves(overlay: str) -> None:
    """ConfigMaps, Secrets (unless optional), service accounts and named probe ports exist, with the
    generated (hash-suffixed) names Kustomize gave them, also inside the FlinkDeployment."""
    docs = render(overlay)
    names = {(d["kind"], d["metadata"].get("namespace", ""), d["metadata"]["name"]) for d in docs}
    missing = []
    for owner, spec in pod_specs(docs):
        ns = owner["metadata"]["namespace"]
        wanted = [("ServiceAccount", spec.get("serviceAccountName", "default"), False)]
        for volume in spec.get("volumes", []):
            if "configMap" in volume:
                wanted.append(("ConfigMap", volume["configMap"]["name"], False))
            if "secret" in volume:
                wanted.append(("Secret", volume["secret"]["secretName"], False))
        for container in spec["containers"]:
            for source in container.get("envFrom", []):
                for field, kind in (("configMapRef", "ConfigMap"), ("secretRef", "Secret")):
                    if field in source:
                        wanted.append((kind, source[field]["name"], source[field].get("optional", False)))
            ports = {p["name"] for p in container.get("ports", [])}
            for probe in ("readinessProbe", "livenessProbe"):
                for action in ("httpGet", "tcpSocket"):
                    port = container.get(probe, {}).get(action, {}).get("port")
                    if isinstance(port, str) and port not in ports:
                        missing.append((owner["metadata"]["name"], probe, port))
        for kind, name, optional in wanted:
            if name == "default" and kind == "ServiceAccount":
                continue
            if (kind, ns, name) not in names and not optional:
                missing.append((owner["metadata"]["name"], kind, name))
        for secret, secret_key in secret_keys_used(spec):
            if secret_key not in secret_data(docs, ns, secret):
                missing.append((owner["metadata"]["name"], secret, secret_key))
    for user in (d for d in docs if d["kind"] == "KafkaUser"):
        ref = user["spec"]["authentication"]["password"]["valueFrom"]["secretKeyRef"]
        if ref["key"] not in secret_data(docs, user["metadata"]["namespace"], ref["name"]):
            missing.append((user["metadata"]["name"], ref["name"], ref["key"]))
    assert missing == []


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_services_and_monitors_select_what_they_mean_to(overlay: str) -> None:
    docs = render(overlay)
    for service in (d for d in docs if d["kind"] == "Service"):
        selector = service["spec"]["selector"]
        [deployment] = [d for d in docs if d["kind"] == "Deployment"
                        and selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()]
        container_ports = {p["name"] for c in deployment["spec"]["template"]["spec"]["containers"]
                           for p in c.get("ports", [])}
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= container_ports, service["metadata"]["name"]
    monitor = one(docs, "ServiceMonitor", "logclaw-collector")
    service = one(docs, "Service", "logclaw-collector")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] in {p["name"] for p in service["spec"]["ports"]}
    # Native Kubernetes mode labels the job's pods app=<FlinkDeployment name>, type=flink-native-kubernetes.
    flink = one(docs, "FlinkDeployment", "logclaw-detect")
    pods = one(docs, "PodMonitor", "logclaw-flink")["spec"]
    assert pods["selector"]["matchLabels"] == {"app": flink["metadata"]["name"], "type": "flink-native-kubernetes"}
    [main] = flink["spec"]["podTemplate"]["spec"]["containers"]
    assert main["name"] == "flink-main-container"  # the name the operator merges the template into
    [port] = [p for p in main["ports"] if p["name"] == pods["podMetricsEndpoints"][0]["port"]]
    assert str(port["containerPort"]) == flink["spec"]["flinkConfiguration"]["metrics.reporter.prom.port"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_checkpoints_on_s3_have_the_s3_plugin_of_the_installed_flink(overlay: str) -> None:
    flink = one(render(overlay), "FlinkDeployment", "logclaw-detect")
    conf = flink["spec"]["flinkConfiguration"]
    [main] = flink["spec"]["podTemplate"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in main["env"]}
    # The image's entry point links each `;`-separated jar from opt/ into plugins/<jar name>/.
    assert env["ENABLE_BUILT_IN_PLUGINS"].split(";") == [f"flink-s3-fs-presto-{version('apache-flink')}.jar"]
    assert flink["spec"]["job"]["jarURI"] == f"local:///opt/flink/opt/flink-python-{version('apache-flink')}.jar"
    for option in ("execution.checkpointing.dir", "execution.checkpointing.savepoint-dir",
                   "high-availability.storageDir"):
        assert conf[option].startswith("s3://"), option  # a scheme flink-s3-fs-presto serves (s3://, s3p://)


def test_the_collector_runs_the_repository_config_with_the_keys_it_reads() -> None:
    config_text = (DEPLOY / "otel-collector" / "config.yaml").read_text(encoding="utf-8")
    wanted = set(re.findall(r"\$\{env:(LOGCLAW_API_KEY_[A-Z0-9_]+)\}", config_text))
    tenants = {name.removeprefix("LOGCLAW_API_KEY_").lower() for name in wanted}
    assert wanted
    for overlay in OVERLAYS:
        docs = render(overlay)
        [config_map] = [d for d in docs if key(d) == ("ConfigMap", "logclaw", "logclaw-collector")]
        assert config_map["data"] == {"config.yaml": config_text}
        deployment = one(docs, "Deployment", "logclaw-collector")
        [container] = deployment["spec"]["template"]["spec"]["containers"]
        [mount] = [m for m in container["volumeMounts"] if m["name"] == "config"]
        # The repository's config first; production merges its Kafka fragment over it (test_k8s_collector_secure.py).
        assert container["args"][0] == f"--config={mount['mountPath']}/config.yaml"
        assert len(container["args"]) == {"dev": 1, "production": 2}[overlay]
        secret = one(docs, "Secret", "logclaw-collector-keys")
        assert set(secret["data"]) == wanted, overlay  # a missing key would leave its tenant locked out
        if overlay == "dev":
            keys = {name: base64.b64decode(value).decode() for name, value in secret["data"].items()}
            console = yaml.safe_load(base64.b64decode(one(docs, "Secret", "logclaw-console-keys")["data"]["keys.yaml"]))
            assert console == {keys[f"LOGCLAW_API_KEY_{t.upper()}"]: t for t in tenants}


def test_overlays_change_what_they_say() -> None:
    dev, production = render("dev"), render("production")
    images = {name: {c["image"] for _, spec in pod_specs(docs) for c in spec.get("containers", []) if "image" in c}
              | {d["spec"]["image"] for d in docs if d["kind"] == "FlinkDeployment"}
              for name, docs in (("dev", dev), ("production", production))}
    collector_image = "otel/opentelemetry-collector-contrib:0.142.0"
    assert images == {"dev": {"logclaw:0.1.0", collector_image},
                      "production": {"ghcr.io/logclaw/logclaw:0.1.0", collector_image}}
    dev_flink = one(dev, "FlinkDeployment", "logclaw-detect")["spec"]
    assert dev_flink["job"]["parallelism"] == 1 and dev_flink["flinkConfiguration"]["parallelism.default"] == "1"
    assert dev_flink["flinkConfiguration"]["s3.path.style.access"] == "true"
    assert {d["spec"]["replicas"] for d in dev if d["kind"] == "KafkaTopic"} == {1}
    assert {d["spec"]["config"]["min.insync.replicas"] for d in dev if d["kind"] == "KafkaTopic"} == {1}
    assert {d["spec"]["replicas"] for d in production if d["kind"] == "KafkaTopic"} == {3}
    assert one(dev, "Deployment", "logclaw-collector")["spec"]["replicas"] == 1
    assert one(production, "Deployment", "logclaw-collector")["spec"]["replicas"] == 3
    pdb = one(production, "PodDisruptionBudget", "logclaw-collector")["spec"]
    assert pdb["minAvailable"] < 3 and pdb["selector"]["matchLabels"] == {"app.kubernetes.io/name": "logclaw-collector"}
    prod_flink = one(production, "FlinkDeployment", "logclaw-detect")["spec"]["flinkConfiguration"]
    assert not any(k.startswith("s3.") for k in prod_flink)  # no keys in the CR: workload identity instead


def test_production_secrets_stay_out_of_git() -> None:
    folder = DEPLOY / "k8s/overlays/production/secrets"
    overlay = yaml.safe_load((folder.parent / "kustomization.yaml").read_text(encoding="utf-8"))
    sources = [s for g in overlay["secretGenerator"] for s in g.get("envs", []) + g.get("files", [])]
    paths = sorted({s.split("=", 1)[-1] for s in sources})  # kafka.env makes two Secrets
    assert paths == sorted(f"secrets/{p.stem}" for p in folder.glob("*.example"))
    proc = subprocess.run(["git", "check-ignore", "--no-index", *paths], cwd=folder.parent, capture_output=True,
                          text=True, check=False)
    assert proc.stdout.split() == paths


# --- secure clients: production speaks SASL_SSL and reads its secrets from mounted files; dev stays plain ----

# Each pod that runs a Kafka client and the KafkaUser it logs in as (deploy/k8s/overlays/production/kafka-users.yaml).
KAFKA_POD_USERS = {"logclaw-detect/jobManager": "logclaw-detect", "logclaw-detect/taskManager": "logclaw-detect",
                   "logclaw-ticketing": "logclaw-ticketing"}
OPENSEARCH_PODS = {"logclaw-detect/jobManager", "logclaw-detect/taskManager", "logclaw-ticketing", "logclaw-console"}
TLS_PORT, PLAIN_PORT = "9093", "9092"  # Strimzi's listener convention: `plain` 9092, `tls` 9093
PASSWORD_VARS = ("LOGCLAW_KAFKA_SASL_PASSWORD", "LOGCLAW_KAFKA_SSL_KEY_PASSWORD", "LOGCLAW_OPENSEARCH_PASSWORD")
SECRETS_FOLDER = DEPLOY / "k8s/overlays/production/secrets"


def file_problems(pod: str, env: dict[str, tuple[str, str]], files: dict[str, tuple[str, str, bool]], var: str,
                  secret: str, secret_key: str) -> list[str]:
    """`var` names a path that is the file `secret_key` of the Secret `secret`, mounted read-only."""
    kind, path = env.get(var, ("unset", ""))
    if kind != "value":
        return [f"{pod}: {var} is {kind}"]
    mounted = files.get(path)
    if mounted is None:
        return [f"{pod}: {var}={path} is no file of a mounted Secret"]
    if mounted != (secret, secret_key, True):
        return [f"{pod}: {var}={path} is {mounted}, not {secret}/{secret_key} read-only"]
    return []


def secure_client_problems(docs: list[Doc]) -> list[str]:
    """What keeps a pod from reaching Kafka and OpenSearch as production means to: SASL_SSL + SCRAM-SHA-512 on
    the TLS listener as a SCRAM KafkaUser, the password and the CA bundle as read-only files of mounted
    Secrets named by LOGCLAW_*_FILE / *_CA_FILE, and no password in the environment in any form."""
    problems = []
    users = {d["metadata"]["name"]: d["spec"] for d in docs if d["kind"] == "KafkaUser"}
    for pod, spec in role_pod_specs(docs):
        for container in spec["containers"]:
            env = container_env(docs, "logclaw", container)
            files = mounted_files(docs, "logclaw", spec, container)
            problems += [f"{pod}: {var} in the environment ({env[var][0]})" for var in PASSWORD_VARS if var in env]
            if "LOGCLAW_KAFKA_BOOTSTRAP_SERVERS" in env:
                wanted = {"LOGCLAW_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
                          "LOGCLAW_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512"}
                problems += [f"{pod}: {var}={env.get(var)}" for var, value in wanted.items()
                             if env.get(var) != ("value", value)]
                servers = env["LOGCLAW_KAFKA_BOOTSTRAP_SERVERS"][1].split(",")
                problems += [f"{pod}: {s} is not the TLS listener" for s in servers if not s.endswith(f":{TLS_PORT}")]
                if env.get("LOGCLAW_KAFKA_SSL_VERIFY", ("value", "true"))[1].lower() != "true":
                    problems.append(f"{pod}: LOGCLAW_KAFKA_SSL_VERIFY is off")
                user = env.get("LOGCLAW_KAFKA_SASL_USERNAME", ("unset", ""))[1]
                if users.get(user, {}).get("authentication", {}).get("type") != "scram-sha-512":
                    problems.append(f"{pod}: {user!r} is no SCRAM-SHA-512 KafkaUser")
                problems += file_problems(pod, env, files, "LOGCLAW_KAFKA_SASL_PASSWORD_FILE", "logclaw-kafka", user)
                problems += file_problems(pod, env, files, "LOGCLAW_KAFKA_SSL_CA_FILE", "logclaw-ca-bundles",
                                          "kafka-ca.crt")
            if "LOGCLAW_OPENSEARCH_URL" in env:
                if env.get("LOGCLAW_OPENSEARCH_USER") != ("secret", "logclaw-opensearch/LOGCLAW_OPENSEARCH_USER"):
                    problems.append(f"{pod}: LOGCLAW_OPENSEARCH_USER={env.get('LOGCLAW_OPENSEARCH_USER')}")
                problems += file_problems(pod, env, files, "LOGCLAW_OPENSEARCH_PASSWORD_FILE", "logclaw-opensearch",
                                          "LOGCLAW_OPENSEARCH_PASSWORD")
                problems += file_problems(pod, env, files, "LOGCLAW_OPENSEARCH_CA_FILE", "logclaw-ca-bundles",
                                          "opensearch-ca.crt")
    return problems


def clients(docs: list[Doc], var: str) -> set[str]:
    """The pods whose environment sets `var`."""
    return {pod for pod, spec in role_pod_specs(docs) for c in spec["containers"]
            if var in container_env(docs, "logclaw", c)}


def test_production_pods_reach_kafka_and_opensearch_only_through_mounted_secret_files() -> None:
    docs = render("production")
    assert secure_client_problems(docs) == []
    assert clients(docs, "LOGCLAW_KAFKA_BOOTSTRAP_SERVERS") == set(KAFKA_POD_USERS)
    assert clients(docs, "LOGCLAW_OPENSEARCH_URL") == OPENSEARCH_PODS
    users = {pod: container_env(docs, "logclaw", c)["LOGCLAW_KAFKA_SASL_USERNAME"][1]
             for pod, spec in role_pod_specs(docs) if pod in KAFKA_POD_USERS for c in spec["containers"]}
    assert users == KAFKA_POD_USERS
    # The JobManager (the job's main program, the Kafka split enumerator) and the TaskManagers (the Kafka
    # readers, the producers, the OpenSearch sink) both have the CA files and the passwords.
    detect = {pod: set(mounted_files(docs, "logclaw", spec, spec["containers"][0]))
              for pod, spec in role_pod_specs(docs) if pod.startswith("logclaw-detect/")}
    assert detect["logclaw-detect/jobManager"] == detect["logclaw-detect/taskManager"] == {
        "/etc/logclaw/kafka/password", "/etc/logclaw/opensearch/password", "/etc/logclaw/ca/kafka-ca.crt",
        "/etc/logclaw/ca/opensearch-ca.crt"}
    # The console has no Kafka client: its OpenSearch password and CA, and its log-in keys, nothing else.
    [console_spec] = [s for p, s in role_pod_specs(docs) if p == "logclaw-console"]
    assert set(mounted_files(docs, "logclaw", console_spec, console_spec["containers"][0])) == {
        "/etc/logclaw/keys/keys.yaml", "/etc/logclaw/opensearch/password", "/etc/logclaw/ca/opensearch-ca.crt"}


def test_the_secure_client_check_catches_a_mistake_each() -> None:
    """secure_client_problems, fed one broken copy of production each, names exactly that mistake."""
    def broken(change: Any) -> list[str]:
        docs = render("production")
        change(docs)
        return secure_client_problems(docs)

    def drop_ca_mount(docs: list[Doc]) -> None:
        [main] = one(docs, "FlinkDeployment", "logclaw-detect")["spec"]["podTemplate"]["spec"]["containers"]
        main["volumeMounts"] = [m for m in main["volumeMounts"] if m["name"] != "ca-bundles"]

    def ticketing(docs: list[Doc]) -> Doc:
        container: Doc = one(docs, "Deployment", "logclaw-ticketing")["spec"]["template"]["spec"]["containers"][0]
        return container

    def password_in_env(docs: list[Doc]) -> None:
        ticketing(docs)["env"].append({"name": "LOGCLAW_KAFKA_SASL_PASSWORD", "value": "hunter2"})

    def writable_mount(docs: list[Doc]) -> None:
        [mount] = [m for m in ticketing(docs)["volumeMounts"] if m["name"] == "kafka-credentials"]
        del mount["readOnly"]

    def plain_listener(docs: list[Doc]) -> None:
        [var] = [v for v in ticketing(docs)["env"] if v["name"] == "LOGCLAW_KAFKA_BOOTSTRAP_SERVERS"]
        var["value"] = "logclaw-kafka-bootstrap.kafka:9092"

    ca = "/etc/logclaw/ca"
    assert broken(drop_ca_mount) == [
        f"logclaw-detect/{role}: {var}={ca}/{name} is no file of a mounted Secret"
        for role in ("jobManager", "taskManager")
        for var, name in (("LOGCLAW_KAFKA_SSL_CA_FILE", "kafka-ca.crt"),
                          ("LOGCLAW_OPENSEARCH_CA_FILE", "opensearch-ca.crt"))]
    assert broken(password_in_env) == ["logclaw-ticketing: LOGCLAW_KAFKA_SASL_PASSWORD in the environment (value)"]
    assert broken(writable_mount) == [
        "logclaw-ticketing: LOGCLAW_KAFKA_SASL_PASSWORD_FILE=/etc/logclaw/kafka/password is "
        "('logclaw-kafka', 'logclaw-ticketing', False), not logclaw-kafka/logclaw-ticketing read-only"]
    assert broken(plain_listener) == ["logclaw-ticketing: logclaw-kafka-bootstrap.kafka:9092 is not the TLS listener"]


def test_no_secret_value_appears_outside_its_secret() -> None:
    """Passwords and keys live in Secrets only: none is spelt in a ConfigMap, an env literal or any other
    object (user names and CA certificates are not secret and are left out)."""
    docs = render("production")
    public = {"LOGCLAW_OPENSEARCH_USER", "kafka-ca.crt", "opensearch-ca.crt"}
    values = {v.strip() for d in docs if d["kind"] == "Secret"
              for k, v in secret_data(docs, d["metadata"]["namespace"], d["metadata"]["name"]).items()
              if k not in public}
    assert len(values) == 7  # two collector keys, the console's key file, OpenSearch's and three Kafka passwords
    text = json.dumps([d for d in docs if d["kind"] != "Secret"])
    assert [v for v in values if v in text] == []


def example_env(name: str) -> dict[str, str]:
    lines = (SECRETS_FOLDER / f"{name}.example").read_text(encoding="utf-8").splitlines()
    return dict(line.split("=", 1) for line in lines if line.strip() and not line.startswith("#"))


def pod_environment(docs: list[Doc], spec: Doc, container: Doc, root: Path) -> dict[str, str]:
    """The container's environment with its Secret files laid out under `root` as the kubelet would lay them
    out in the pod (paths in the environment moved there with them): the stand-in for a running pod."""
    files = mounted_files(docs, "logclaw", spec, container)
    for path, (secret, secret_key, _) in files.items():
        target = root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(secret_data(docs, "logclaw", secret)[secret_key], encoding="utf-8")
    env = {}
    for var, (kind, value) in container_env(docs, "logclaw", container).items():
        if kind == "secret":
            secret, secret_key = value.split("/")
            value = secret_data(docs, "logclaw", secret)[secret_key]
        env[var] = str(root / value.lstrip("/")) if value in files else value
    return env


def granted(user: Doc) -> set[tuple[str, str, str]]:
    """(resource type, name, operation) a KafkaUser's literal ACLs allow; Read and Write imply Describe."""
    rules = set()
    for acl in user["spec"]["authorization"]["acls"]:
        resource = acl["resource"]
        assert acl.get("type", "allow") == "allow" and resource["patternType"] == "literal"
        for op in acl["operations"]:
            rules |= {(resource["type"], resource["name"], op), (resource["type"], resource["name"], "Describe")}
    return rules


def test_each_pod_s_settings_load_from_its_rendered_env_and_mounted_files(tmp_path: Path) -> None:
    """The real settings layer (JobConfig.from_env for the JobManager and TaskManagers, TicketingConfig.from_env
    for the worker, opensearch_access for the console) over each pod's rendered environment and its Secret
    files: SASL_SSL with the pod's own user and the password from secrets/kafka.env, the CA files, OpenSearch
    basic auth; and the pod's KafkaUser may do what the loaded settings make the client do."""
    from jobs.config import JobConfig
    from jobs.settings import opensearch_access
    from jobs.ticketing_config import TicketingConfig

    docs = render("production")
    passwords, search_password = example_env("kafka.env"), example_env("opensearch.env")["LOGCLAW_OPENSEARCH_PASSWORD"]
    ca_text = {name: (SECRETS_FOLDER / f"{name}.example").read_text(encoding="utf-8")
               for name in ("kafka-ca.crt", "opensearch-ca.crt")}
    users = {d["metadata"]["name"]: d for d in docs if d["kind"] == "KafkaUser"}
    topics = {d["spec"]["topicName"] for d in docs if d["kind"] == "KafkaTopic"}
    needs: dict[str, set[tuple[str, str, str]]] = {}
    for pod, spec in role_pod_specs(docs):
        if pod not in OPENSEARCH_PODS:
            continue
        env = pod_environment(docs, spec, spec["containers"][0], tmp_path / pod)
        if pod == "logclaw-console":
            search = opensearch_access(env)
        else:
            cfg = JobConfig.from_env(env) if pod.startswith("logclaw-detect/") else TicketingConfig.from_env(env)
            kafka, search, user = cfg.kafka_security, cfg.opensearch, KAFKA_POD_USERS[pod]
            assert (kafka.protocol, kafka.sasl_mechanism, kafka.sasl_username) == ("SASL_SSL", "SCRAM-SHA-512", user)
            assert kafka.sasl_password.reveal() == passwords[user]
            assert Path(kafka.ssl_ca_file).read_text(encoding="utf-8") == ca_text["kafka-ca.crt"]
            assert kafka.java_properties()["ssl.truststore.location"] == kafka.ssl_ca_file  # the job's Java source
            assert kafka.librdkafka_config()["ssl.ca.location"] == kafka.ssl_ca_file  # producers, the worker
            if isinstance(cfg, JobConfig):
                wanted = {("topic", cfg.logs_topic, "Read"), ("topic", cfg.spans_topic, "Read"),
                          ("group", cfg.group_id, "Read"), ("topic", cfg.incidents_topic, "Write"),
                          ("topic", cfg.dead_letter_topic, "Write")}
            else:
                wanted = {("topic", cfg.topic, "Read"), ("group", cfg.group_id, "Read")}
                wanted |= {("topic", cfg.dead_letter_topic, "Write")} if cfg.dead_letter_topic else set()
            needs.setdefault(user, set()).update(wanted)
        assert (search.user, search.password.reveal()) == ("logclaw", search_password)
        assert search.url.startswith("https://") and search.verify_certs
        assert Path(search.client_options()["ca_certs"]).read_text(encoding="utf-8") == ca_text["opensearch-ca.crt"]
    collector = yaml.safe_load((DEPLOY / "otel-collector/config.yaml").read_text(encoding="utf-8"))["exporters"]
    needs["logclaw-collector"] = {("topic", collector["kafka/logs"]["logs"]["topic"], "Write"),
                                  ("topic", collector["kafka/spans"]["traces"]["topic"], "Write")}
    assert set(needs) == set(users)
    for name, user in users.items():
        assert needs[name] <= granted(user), name
        assert {r[1] for r in granted(user) if r[0] == "topic"} <= topics, name  # no ACL on a topic that is not made
    # The KafkaUsers' passwords (namespace kafka) are the pods' (namespace logclaw): one file makes both Secrets.
    assert secret_data(docs, "kafka", "logclaw-kafka-users") == passwords
    assert secret_data(docs, "logclaw", "logclaw-kafka") == passwords


def test_dev_overlay_stays_plaintext_without_secret_files() -> None:
    from jobs.config import JobConfig
    from jobs.ticketing_config import TicketingConfig

    docs = render("dev")
    assert not [d for d in docs if d["kind"] == "KafkaUser"]
    assert not [d for d in docs if d["kind"] == "Secret" and HASHED.sub("", d["metadata"]["name"])
                in ("logclaw-kafka", "logclaw-kafka-users", "logclaw-ca-bundles", "logclaw-opensearch")]
    assert clients(docs, "LOGCLAW_KAFKA_BOOTSTRAP_SERVERS") == set(KAFKA_POD_USERS)
    for pod, spec in role_pod_specs(docs):
        for container in spec["containers"]:
            env = container_env(docs, "logclaw", container)
            secure = [v for v in env if (v.startswith("LOGCLAW_KAFKA_") and v != "LOGCLAW_KAFKA_BOOTSTRAP_SERVERS")
                      or v.endswith("_FILE") or v.startswith(("LOGCLAW_OPENSEARCH_USER", "LOGCLAW_OPENSEARCH_PASS"))]
            assert secure == [], pod
            if "LOGCLAW_KAFKA_BOOTSTRAP_SERVERS" in env:
                assert env["LOGCLAW_KAFKA_BOOTSTRAP_SERVERS"][1].endswith(f":{PLAIN_PORT}"), pod
                plain = {var: value for var, (_, value) in env.items()}
                job = pod.startswith("logclaw-detect/")
                cfg = JobConfig.from_env(plain) if job else TicketingConfig.from_env(plain)
                assert cfg.kafka_security.librdkafka_config() == {"security.protocol": "PLAINTEXT"}, pod
            files = set(mounted_files(docs, "logclaw", spec, container))
            assert files <= {"/etc/logclaw/keys/keys.yaml"}, pod  # the console's dev log-in keys only
