"""Real-shaped Lambda events, built from the `sam local generate-event` fixtures in events/."""

from __future__ import annotations

import base64
import copy
import json
import uuid
from functools import cache
from pathlib import Path
from typing import Any

EVENTS = Path(__file__).resolve().parents[2] / "events"


@cache
def _fixture(name: str) -> dict[str, Any]:
    return json.loads((EVENTS / name).read_text())


def api_event(
    method: str,
    path: str,
    *,
    body: str | bytes | dict | list | None = None,
    query: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
    tenant: str | None = None,
) -> dict[str, Any]:
    """A REST API (v1) proxy event as API Gateway sends it; `tenant` is the id of the API
    key the request came with (requestContext.identity.apiKeyId), none by default."""
    event = copy.deepcopy(_fixture("submit.json"))
    if isinstance(body, dict | list):
        body = json.dumps(body)
    is_base64 = isinstance(body, bytes)
    event.update(
        httpMethod=method,
        path=path,
        resource=path,
        body=base64.b64encode(body).decode() if is_base64 else body,
        isBase64Encoded=is_base64,
        queryStringParameters=dict(query) if query else None,
        multiValueQueryStringParameters={k: [v] for k, v in query.items()} if query else None,
    )
    if headers:
        event["headers"].update(headers)
        event["multiValueHeaders"].update({k: [v] for k, v in headers.items()})
    if tenant is not None:
        event["requestContext"]["identity"]["apiKeyId"] = tenant
    context = event["requestContext"]
    context.update(
        httpMethod=method,
        resourcePath=path,
        path=f"/Prod{path}",
        requestId=str(uuid.uuid4()),
    )
    return event


def sqs_event(bodies: list[str], receive_counts: list[int] | None = None) -> dict[str, Any]:
    """An SQS batch event as the Lambda event source mapping sends it."""
    template = _fixture("process.json")["Records"][0]
    records = []
    for position, body in enumerate(bodies):
        record = copy.deepcopy(template)
        record["messageId"] = str(uuid.uuid4())
        record["receiptHandle"] = f"receipt-{record['messageId']}"
        record["body"] = body
        count = receive_counts[position] if receive_counts else 1
        record["attributes"]["ApproximateReceiveCount"] = str(count)
        records.append(record)
    return {"Records": records}
