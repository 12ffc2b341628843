// Checks Kubernetes manifests against published schemas, as compiled into the npm packages
// @kubernetes-models/flink (Flink Kubernetes Operator release-1.14.0 CRDs),
// @kubernetes-models/strimzi-kafka-operator (Strimzi 0.49.0 + 1.0.0 CRDs),
// @kubernetes-models/prometheus-operator (PodMonitor / ServiceMonitor from the operator's Go API types) and
// kubernetes-models (the core API's OpenAPI schema, Kubernetes 1.36); versions are pinned in
// package-lock.json. Used by tests/test_deploy_files.py and tests/test_k8s_kustomize.py.
//
// stdin:  a JSON array of manifests (objects with apiVersion, kind, metadata, spec).
// stdout: a JSON array, one entry per manifest, in order:
//         {kind, name, apiVersion, ok, errors: [{path, message}]}
//         path is a JSON Pointer into the manifest ("/spec/partitions"; "" is the manifest itself).
// Exit status: 0 whenever the manifests were read and checked (whether or not they are valid; the
// caller decides), 2 when stdin is not a JSON array of objects.
//
// Like the API server, these validators ignore fields the schema does not know (the server prunes
// them); wrong types, enum values and bounds are reported.

import { readFileSync } from "node:fs";
import { FlinkDeployment } from "@kubernetes-models/flink/flink.apache.org/v1beta1/FlinkDeployment";
import { KafkaTopic } from "@kubernetes-models/strimzi-kafka-operator/kafka.strimzi.io/v1/KafkaTopic";
import { KafkaUser } from "@kubernetes-models/strimzi-kafka-operator/kafka.strimzi.io/v1/KafkaUser";
import { PodMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PodMonitor";
import { ServiceMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor";
import { Deployment } from "kubernetes-models/apps/v1/Deployment";
import { PodDisruptionBudget } from "kubernetes-models/policy/v1/PodDisruptionBudget";
import { Role } from "kubernetes-models/rbac.authorization.k8s.io/v1/Role";
import { RoleBinding } from "kubernetes-models/rbac.authorization.k8s.io/v1/RoleBinding";
import { ConfigMap } from "kubernetes-models/v1/ConfigMap";
import { Namespace } from "kubernetes-models/v1/Namespace";
import { PersistentVolumeClaim } from "kubernetes-models/v1/PersistentVolumeClaim";
import { Secret } from "kubernetes-models/v1/Secret";
import { Service } from "kubernetes-models/v1/Service";
import { ServiceAccount } from "kubernetes-models/v1/ServiceAccount";

// Only the API versions the target operator releases serve. The Strimzi package also carries
// kafka.strimzi.io/v1beta2 (from 0.49.0), but Strimzi 1.0.0 serves only kafka.strimzi.io/v1, so an
// older apiVersion is reported instead of being checked against a schema the operator no longer has.
const MODELS = new Map(
  [
    FlinkDeployment, KafkaTopic, KafkaUser, PodMonitor, ServiceMonitor,
    // the core kinds deploy/ uses
    ConfigMap, Deployment, Namespace, PersistentVolumeClaim, PodDisruptionBudget, Role, RoleBinding, Secret,
    Service, ServiceAccount,
  ].map((model) => [`${model.apiVersion} ${model.kind}`, model]),
);

function fail(message) {
  process.stderr.write(`validate.mjs: ${message}\n`);
  process.exit(2);
}

function readManifests() {
  let parsed;
  try {
    parsed = JSON.parse(readFileSync(0, "utf8"));
  } catch (err) {
    fail(`stdin is not JSON: ${err.message}`);
  }
  if (!Array.isArray(parsed)) fail("stdin must be a JSON array of manifests");
  parsed.forEach((doc, i) => {
    if (doc === null || typeof doc !== "object" || Array.isArray(doc)) fail(`item ${i} is not an object`);
  });
  return parsed;
}

function describe(ajvError) {
  const message = ajvError.message ?? ajvError.keyword;
  const allowed = ajvError.params?.allowedValues;
  return {
    path: ajvError.instancePath ?? "",
    message: Array.isArray(allowed) ? `${message}: ${allowed.join(", ")}` : message,
  };
}

function check(doc) {
  const { apiVersion, kind } = doc;
  const result = { kind: kind ?? null, name: doc.metadata?.name ?? null, apiVersion: apiVersion ?? null };
  const Model = MODELS.get(`${apiVersion} ${kind}`);
  if (Model === undefined) {
    const known = [...MODELS.keys()].join("; ");
    const message = `no published schema for ${apiVersion} ${kind} (this check knows: ${known})`;
    return { ...result, ok: false, errors: [{ path: "/apiVersion", message }] };
  }
  try {
    new Model(doc).validate();
  } catch (err) {
    if (!Array.isArray(err?.errors)) throw err;
    return { ...result, ok: false, errors: err.errors.map(describe) };
  }
  return { ...result, ok: true, errors: [] };
}

process.stdout.write(`${JSON.stringify(readManifests().map(check), null, 1)}\n`);
