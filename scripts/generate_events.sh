#!/usr/bin/env bash
# Regenerates events/*.json with `sam local generate-event`, so their shape is AWS's own.
# sam does not escape JSON bodies, so bodies are set afterwards (json-encoded) by Python.
# Tests load these files and change only the body, path and query string.
set -euo pipefail
cd "$(dirname "$0")/.."
SAM="${SAM:-.venv-sam/bin/sam}"
PY="${PY:-.venv/bin/python}"
export SAM_CLI_TELEMETRY=0
"$SAM" local generate-event apigateway aws-proxy --method POST --resource /api/submit/ \
  --path api/submit/ --stage Prod --body '' > events/submit.json
"$SAM" local generate-event apigateway aws-proxy --method GET --resource /api/status \
  --path api/status --stage Prod --body '' \
  --querystringparameters '{"jobid": "3f1c2a9e-8d4b-4c61-9a57-0f2e6b1d7c55"}' > events/status.json
"$SAM" local generate-event sqs receive-message --queue-name Images > events/process.json
"$PY" - <<'PYEOF'
import json
from pathlib import Path

submit = Path("events/submit.json")
event = json.loads(submit.read_text())
event["body"] = json.dumps({
    "count": 2,
    "visits": [
        {"store_id": "S00339218",
         "image_url": ["https://www.gstatic.com/webp/gallery/2.jpg",
                       "https://www.gstatic.com/webp/gallery/3.jpg"],
         "visit_time": "2026-11-28T10:15:00Z"},
        {"store_id": "S01408764",
         "image_url": ["https://www.gstatic.com/webp/gallery/3.jpg"],
         "visit_time": "2026-11-28T11:40:00+05:30"},
    ],
})
event.update(queryStringParameters=None, multiValueQueryStringParameters=None,
             pathParameters=None, stageVariables=None, isBase64Encoded=False)
submit.write_text(json.dumps(event, indent=2) + "\n")

status = Path("events/status.json")
event = json.loads(status.read_text())
event.update(body=None, pathParameters=None, stageVariables=None, isBase64Encoded=False,
             multiValueQueryStringParameters={"jobid": [event["queryStringParameters"]["jobid"]]})
status.write_text(json.dumps(event, indent=2) + "\n")

process = Path("events/process.json")
event = json.loads(process.read_text())
event["Records"][0]["body"] = json.dumps({
    "job_id": "3f1c2a9e-8d4b-4c61-9a57-0f2e6b1d7c55", "image_index": 0,
    "url": "https://www.gstatic.com/webp/gallery/2.jpg", "store_id": "S00339218",
    "area": "710006"})
process.write_text(json.dumps(event, indent=2) + "\n")
PYEOF
echo "events regenerated: $(ls events/*.json | tr '\n' ' ')"
