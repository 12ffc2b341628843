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
  they say.
"""

from __future__ import annotations

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
CRD_KINDS = {"FlinkDeployment", "KafkaTopic", "PodMonitor", "ServiceMonitor"}
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
                        ("Secret", "logclaw", "logclaw-opensearch"), ("Secret", "logclaw", "logclaw-ticketing")]
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
    core = [d for d in render(overlay) if d["kind"] not in CRD_KINDS]
    errors = []
    for doc in core:
        try:
            kubernetes_validate.validate(doc, k8s, strict=True)
        except kubernetes_validate.ValidationError as exc:
            errors.append(f"{key(doc)}: {exc.message}")
    assert errors == []
    assert len(core) >= 14


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
    env = {e["name"]: e["value"] for e in main["env"]}
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
        [mount] = container["volumeMounts"]
        assert container["args"] == [f"--config={mount['mountPath']}/config.yaml"]
        secret = one(docs, "Secret", "logclaw-collector-keys")
        assert set(secret["data"]) == wanted, overlay  # a missing key would leave its tenant locked out
        if overlay == "dev":
            import base64

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
    paths = [s.split("=", 1)[-1] for s in sources]
    assert sorted(paths) == sorted(f"secrets/{p.stem}" for p in folder.glob("*.example"))
    proc = subprocess.run(["git", "check-ignore", "--no-index", *paths], cwd=folder.parent, capture_output=True,
                          text=True, check=False)
    assert proc.stdout.split() == paths
