// Checks Kubernetes manifests against the published CRD schemas, as compiled into the npm packages
// @kubernetes-models/flink (Flink Kubernetes Operator release-1.14.0 CRDs) and
// @kubernetes-models/strimzi-kafka-operator (Strimzi 0.49.0 + 1.0.0 CRDs); versions are pinned in
// package-lock.json. Used by tests/test_deploy_files.py.
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

// Only the API versions the target operator releases serve. The Strimzi package also carries
// kafka.strimzi.io/v1beta2 (from 0.49.0), but Strimzi 1.0.0 serves only kafka.strimzi.io/v1, so an
// older apiVersion is reported instead of being checked against a schema the operator no longer has.
const MODELS = new Map(
  [FlinkDeployment, KafkaTopic].map((model) => [`${model.apiVersion} ${model.kind}`, model]),
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
