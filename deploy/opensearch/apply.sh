#!/usr/bin/env bash
# Install LogClaw's OpenSearch index templates (the same files the job installs itself:
# connectors/opensearch_templates/*.json), the ISM policies, and the Dashboards saved objects.
#   OPENSEARCH_URL=https://host:9200 OPENSEARCH_AUTH=user:pass DASHBOARDS_URL=https://host:5601 deploy/opensearch/apply.sh
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
: "${OPENSEARCH_URL:?set OPENSEARCH_URL}"
auth=(); [[ -n "${OPENSEARCH_AUTH:-}" ]] && auth=(-u "$OPENSEARCH_AUTH")
for template in "$root"/connectors/opensearch_templates/*.json; do
  name="logclaw-$(basename "$template" .json)"
  curl -fsS "${auth[@]}" -X PUT "$OPENSEARCH_URL/_index_template/$name" -H 'Content-Type: application/json' \
    --data-binary @"$template"; echo
done
curl -fsS "${auth[@]}" -X PUT "$OPENSEARCH_URL/_plugins/_ism/policies/logclaw-retention" \
  -H 'Content-Type: application/json' --data-binary @"$here/ism-policy.json"; echo
curl -fsS "${auth[@]}" -X PUT "$OPENSEARCH_URL/_plugins/_ism/policies/logclaw-incidents-retention" \
  -H 'Content-Type: application/json' --data-binary @"$here/ism-policy-incidents.json"; echo
if [[ -n "${DASHBOARDS_URL:-}" ]]; then
  curl -fsS "${auth[@]}" -X POST "$DASHBOARDS_URL/api/saved_objects/_import?overwrite=true" -H 'osd-xsrf: true' \
    --form file=@"$here/dashboards.ndjson"; echo
fi
