"""openapi.json is current, and every response it documents is one a handler really gives,
with the body it documents. (Every call through `call_api`, in every integration test,
also fails on a status code the document does not list for that route.)"""

from __future__ import annotations

import importlib.util
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from retail_pulse.api import models
from retail_pulse.api.openapi import documented_responses
from tests.integration.conftest import OPENAPI, ApiResult, job, visit
from tests.support.handlers import function_for, load_handler

ROOT = Path(__file__).resolve().parents[2]
A = "https://images.example/2.jpg"


def generator() -> Any:
    spec = importlib.util.spec_from_file_location("openapi_script", ROOT / "scripts" / "openapi.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return json.loads(OPENAPI.read_text())


def test_the_committed_openapi_json_is_the_generated_one():
    assert OPENAPI.read_text() == generator().generate(), (
        "openapi.json is out of date: run `make openapi` "
        "(.venv/bin/python scripts/openapi.py --write) and commit it"
    )


# -- one scenario per documented response -------------------------------------------------

Call = Callable[..., ApiResult]


def submit_201(call_api: Call, path: str, **_: Any) -> ApiResult:
    return call_api("POST", path, body=job(visit("S00339218", [A])))


def submit_400(call_api: Call, path: str, **_: Any) -> ApiResult:
    return call_api("POST", path, body={"count": 2, "visits": [visit("S00339218", [A])]})


def submit_413(call_api: Call, path: str, monkeypatch: pytest.MonkeyPatch) -> ApiResult:
    from retail_pulse.settings import get_settings

    monkeypatch.setenv("MAX_BODY_BYTES", "100")
    get_settings.cache_clear()
    try:
        return call_api("POST", path, body=job(visit("S00339218", [A, A, A])))
    finally:
        monkeypatch.delenv("MAX_BODY_BYTES")
        get_settings.cache_clear()


def submit_503(call_api: Call, path: str, monkeypatch: pytest.MonkeyPatch) -> ApiResult:
    from retail_pulse.errors import StorageInterrupted

    def interrupted(*_: Any, **__: Any) -> str:
        raise StorageInterrupted("storage failed part-way; send the same request again")

    monkeypatch.setattr(load_handler("submit"), "submit_job", interrupted)
    return call_api("POST", path, body=job(visit("S00339218", [A])))


def submit_409(call_api: Call, path: str, **_: Any) -> ApiResult:
    # The same Idempotency-Key for a different body (test_idempotency.py has the other 409).
    call_api("POST", path, body=job(visit("S00339218", [A])), headers={"Idempotency-Key": "k"})
    return call_api(
        "POST", path, body=job(visit("S01408764", [A])), headers={"Idempotency-Key": "k"}
    )


def status_200(call_api: Call, path: str, **_: Any) -> ApiResult:
    job_id = submit_201(call_api, "/api/submit/").body["job_id"]
    return call_api("GET", path, query={"jobid": job_id})


def status_400(call_api: Call, path: str, **_: Any) -> ApiResult:
    # Both documented bodies: {} for an unknown job, {"error"} for a missing jobid.
    missing = call_api("GET", path)
    assert missing.status_code == 400 and "jobid" in missing.body["error"]
    return call_api("GET", path, query={"jobid": "no-such-job"})


def visits_200(call_api: Call, path: str, **_: Any) -> ApiResult:
    return call_api("GET", path, query={"storeid": "S00339218"})


def visits_400(call_api: Call, path: str, **_: Any) -> ApiResult:
    return call_api("GET", path, query={"area": "no-such-area"})


def jobs_200(call_api: Call, path: str, **_: Any) -> ApiResult:
    submit_201(call_api, "/api/submit/")
    return call_api("GET", path)


def jobs_400(call_api: Call, path: str, **_: Any) -> ApiResult:
    return call_api("GET", path, query={"status": "no-such-status"})


def results_200(call_api: Call, path: str, **_: Any) -> ApiResult:
    job_id = submit_201(call_api, "/api/submit/").body["job_id"]
    # The status filter: the one image is pending, none failed.
    failed = call_api("GET", path, query={"jobid": job_id, "status": "failed"})
    assert (failed.status_code, failed.body) == (200, {"results": []})
    pending = call_api("GET", path, query={"jobid": job_id, "status": "pending"})
    assert [row["status"] for row in pending.body["results"]] == ["pending"]
    return call_api("GET", path, query={"jobid": job_id})


def results_400(call_api: Call, path: str, **_: Any) -> ApiResult:
    # Both documented bodies: {"error"} for a missing jobid, {} for an unknown job.
    missing = call_api("GET", path)
    assert missing.status_code == 400 and "jobid" in missing.body["error"]
    bad_status = call_api("GET", path, query={"jobid": "no-such-job", "status": "done"})
    assert bad_status.status_code == 400 and "status" in bad_status.body["error"]
    return call_api("GET", path, query={"jobid": "no-such-job"})


def cancel_200(call_api: Call, path: str, **_: Any) -> ApiResult:
    job_id = submit_201(call_api, "/api/submit/").body["job_id"]
    return call_api("POST", path, query={"jobid": job_id})


def cancel_409(call_api: Call, path: str, **_: Any) -> ApiResult:
    cancelled = cancel_200(call_api, path)
    return call_api("POST", path, query={"jobid": cancelled.body["job_id"]})


def failed_job(call_api: Call) -> str:
    """A job failed at submit (its store was not in the store master), whose store is in
    the master now: a retry can re-run it."""
    from retail_pulse.data.models import StoreRecord

    job_id = call_api("POST", "/api/submit/", body=job(visit("S99999999", [A]))).body["job_id"]
    StoreRecord(store_id="S99999999", area_code="A1", store_name="New").save()
    return job_id


def retry_200(call_api: Call, path: str, **_: Any) -> ApiResult:
    return call_api("POST", path, query={"jobid": failed_job(call_api)})


def retry_409(call_api: Call, path: str, **_: Any) -> ApiResult:
    # An ongoing job cannot be retried (test_job_actions.py has the other refusals).
    job_id = submit_201(call_api, "/api/submit/").body["job_id"]
    return call_api("POST", path, query={"jobid": job_id})


def retry_503(call_api: Call, path: str, monkeypatch: pytest.MonkeyPatch) -> ApiResult:
    from botocore.exceptions import EndpointConnectionError

    job_id = failed_job(call_api)

    def storage_down(*_: Any, **__: Any) -> None:
        raise EndpointConnectionError(endpoint_url="https://dynamodb.us-east-1.amazonaws.com")

    # The job's reopening fails (DynamoDB unreachable): nothing changed, send it again.
    monkeypatch.setattr("retail_pulse.jobs.actions.reopen_failed", storage_down)
    return call_api("POST", path, query={"jobid": job_id})


def unknown_job_400(call_api: Call, path: str, **_: Any) -> ApiResult:
    # Both documented bodies: {"error"} for a missing jobid, {} for an unknown job.
    missing = call_api("POST", path)
    assert missing.status_code == 400 and "jobid" in missing.body["error"]
    return call_api("POST", path, query={"jobid": "no-such-job"})


def internal_error(use_case: str) -> Callable[..., ApiResult]:
    """A bug in the route's use case: the route still answers JSON, a 500 with the request
    id (the traceback is logged; tests/unit/test_api_resolver.py checks that)."""

    def scenario(call_api: Call, path: str, monkeypatch: pytest.MonkeyPatch) -> ApiResult:
        function = function_for(path)

        def broken(*_: Any, **__: Any) -> Any:
            raise RuntimeError("a bug")

        monkeypatch.setattr(load_handler(function), use_case, broken)
        method = "POST" if function in ("submit", "job_actions") else "GET"
        kwargs: dict[str, Any] = {
            "submit": {"body": job(visit("S00339218", [A]))},
            "status": {"query": {"jobid": "any"}},
            "visits": {"query": {"storeid": "S00339218"}},
            "jobs": {},
            "results": {"query": {"jobid": "any"}},
            "job_actions": {"query": {"jobid": "any"}},
        }[function]
        return call_api(method, path, **kwargs)

    return scenario


def webhook_secret_200(call_api: Call, path: str, **_: Any) -> ApiResult:
    return call_api("GET", path)


def rotate_200(call_api: Call, path: str, **_: Any) -> ApiResult:
    return call_api("POST", path, headers={"Idempotency-Key": "rotation-1"})


def rotate_400(call_api: Call, path: str, **_: Any) -> ApiResult:
    return call_api("POST", path, headers={"Idempotency-Key": "k" * 129})


def webhook_secret_failing(error: Callable[[str], Exception]) -> Callable[..., ApiResult]:
    """The secret's storage failing (503: ask again) or a bug behind the route (500)."""

    def scenario(call_api: Call, path: str, monkeypatch: pytest.MonkeyPatch) -> ApiResult:
        from retail_pulse.data import webhook_secrets as store

        def failing(*_: Any, **__: Any) -> Any:
            raise error("DynamoDB is not answering")

        monkeypatch.setattr(store, "read", failing)
        return call_api("POST" if path.endswith("/rotate") else "GET", path)

    return scenario


def export_202(call_api: Call, path: str, **_: Any) -> ApiResult:
    return call_api("POST", path, query={"jobid": failed_job(call_api), "format": "jsonl"})


def _written_export(call_api: Call, path: str) -> str:
    """A finished job whose export the export function has written."""
    import boto3

    from tests.support.handlers import FakeContext

    job_id = failed_job(call_api)
    assert call_api("POST", path, query={"jobid": job_id}).status_code == 202
    sqs = boto3.client("sqs", region_name="us-east-1")
    [message] = sqs.receive_message(QueueUrl=os.environ["EXPORT_QUEUE_URL"])["Messages"]
    event = {"Records": [{"messageId": message["MessageId"], "body": message["Body"]}]}
    load_handler("export").lambda_handler(event, FakeContext())
    return job_id


def export_303(call_api: Call, path: str, **_: Any) -> ApiResult:
    return call_api("POST", path, query={"jobid": _written_export(call_api, path)})


def export_poll_303(call_api: Call, path: str, **_: Any) -> ApiResult:
    return call_api("GET", path, query={"jobid": _written_export(call_api, path)})


def export_400(method: str) -> Callable[..., ApiResult]:
    def scenario(call_api: Call, path: str, **_: Any) -> ApiResult:
        # Both documented bodies: {"error"} for a bad format, {} for an unknown job.
        bad = call_api(method, path, query={"jobid": "no-such-job", "format": "xml"})
        assert bad.status_code == 400 and "'jsonl'" in bad.body["error"]
        return call_api(method, path, query={"jobid": "no-such-job"})

    return scenario


def export_409(call_api: Call, path: str, **_: Any) -> ApiResult:
    return call_api(
        "POST", path, query={"jobid": submit_201(call_api, "/api/submit/").body["job_id"]}
    )


def export_poll_202(call_api: Call, path: str, **_: Any) -> ApiResult:
    job_id = export_202(call_api, path).body["job_id"]
    return call_api("GET", path, query={"jobid": job_id, "format": "jsonl"})


def export_poll_200(call_api: Call, path: str, monkeypatch: pytest.MonkeyPatch) -> ApiResult:
    from retail_pulse.data import exports as store

    job_id = export_202(call_api, path).body["job_id"]
    export = store.get_export(job_id, "jsonl")
    assert export is not None
    store.acquire(job_id, "jsonl", export.export_id, "owner", export.created_at, 60)
    store.fail(export, "owner", "the job was retried while it was exported")
    return call_api("GET", path, query={"jobid": job_id, "format": "jsonl"})


def export_poll_404(call_api: Call, path: str, **_: Any) -> ApiResult:
    return call_api("GET", path, query={"jobid": failed_job(call_api)})


def export_500(method: str, use_case: str) -> Callable[..., ApiResult]:
    def scenario(call_api: Call, path: str, monkeypatch: pytest.MonkeyPatch) -> ApiResult:
        def broken(*_: Any, **__: Any) -> Any:
            raise RuntimeError("a bug")

        monkeypatch.setattr(load_handler("results"), use_case, broken)
        return call_api(method, path, query={"jobid": "any"})

    return scenario


def uploads_201(call_api: Call, path: str, **_: Any) -> ApiResult:
    return call_api("POST", path)


def uploads_500(call_api: Call, path: str, monkeypatch: pytest.MonkeyPatch) -> ApiResult:
    def broken(*_: Any, **__: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(load_handler("uploads"), "create_upload", broken)
    return call_api("POST", path)


def _storage_down(message: str) -> Exception:
    from botocore.exceptions import ConnectionClosedError

    return ConnectionClosedError(endpoint_url=message)


SCENARIOS: dict[tuple[str, str, int], Callable[..., ApiResult]] = {
    ("POST", "/api/uploads", 201): uploads_201,
    ("POST", "/api/uploads", 500): uploads_500,
    ("GET", "/api/webhook-secret", 200): webhook_secret_200,
    ("GET", "/api/webhook-secret", 503): webhook_secret_failing(_storage_down),
    ("GET", "/api/webhook-secret", 500): webhook_secret_failing(RuntimeError),
    ("POST", "/api/webhook-secret/rotate", 200): rotate_200,
    ("POST", "/api/webhook-secret/rotate", 400): rotate_400,
    ("POST", "/api/webhook-secret/rotate", 503): webhook_secret_failing(_storage_down),
    ("POST", "/api/webhook-secret/rotate", 500): webhook_secret_failing(RuntimeError),
    ("POST", "/api/submit/", 500): internal_error("submit_job"),
    ("POST", "/api/submit", 500): internal_error("submit_job"),
    ("GET", "/api/status", 500): internal_error("job_status"),
    ("GET", "/api/visits", 500): internal_error("find_visits"),
    ("GET", "/api/jobs", 500): internal_error("list_jobs"),
    ("GET", "/api/results", 500): internal_error("job_results"),
    ("POST", "/api/cancel", 500): internal_error("cancel_job"),
    ("POST", "/api/retry", 500): internal_error("retry_job"),
    ("POST", "/api/cancel", 200): cancel_200,
    ("POST", "/api/cancel", 400): unknown_job_400,
    ("POST", "/api/cancel", 409): cancel_409,
    ("POST", "/api/retry", 200): retry_200,
    ("POST", "/api/retry", 400): unknown_job_400,
    ("POST", "/api/retry", 409): retry_409,
    ("POST", "/api/retry", 503): retry_503,
    ("POST", "/api/submit/", 201): submit_201,
    ("POST", "/api/submit/", 400): submit_400,
    ("POST", "/api/submit/", 409): submit_409,
    ("POST", "/api/submit/", 413): submit_413,
    ("POST", "/api/submit/", 503): submit_503,
    ("POST", "/api/submit", 201): submit_201,
    ("POST", "/api/submit", 400): submit_400,
    ("POST", "/api/submit", 409): submit_409,
    ("POST", "/api/submit", 413): submit_413,
    ("POST", "/api/submit", 503): submit_503,
    ("GET", "/api/status", 200): status_200,
    ("GET", "/api/status", 400): status_400,
    ("GET", "/api/visits", 200): visits_200,
    ("GET", "/api/visits", 400): visits_400,
    ("GET", "/api/jobs", 200): jobs_200,
    ("GET", "/api/jobs", 400): jobs_400,
    ("GET", "/api/results", 200): results_200,
    ("GET", "/api/results", 400): results_400,
    ("POST", "/api/results/export", 202): export_202,
    ("POST", "/api/results/export", 303): export_303,
    ("POST", "/api/results/export", 400): export_400("POST"),
    ("POST", "/api/results/export", 409): export_409,
    ("POST", "/api/results/export", 500): export_500("POST", "request_export"),
    ("GET", "/api/results/export", 200): export_poll_200,
    ("GET", "/api/results/export", 202): export_poll_202,
    ("GET", "/api/results/export", 303): export_poll_303,
    ("GET", "/api/results/export", 400): export_400("GET"),
    ("GET", "/api/results/export", 404): export_poll_404,
    ("GET", "/api/results/export", 500): export_500("GET", "export_status"),
}


def test_every_documented_response_has_a_scenario(document):
    documented = {
        (method, path, code)
        for (method, path), codes in documented_responses(document).items()
        for code in codes
    }
    assert documented == set(SCENARIOS), (
        "openapi.json and SCENARIOS in this file disagree: a documented response needs a "
        "scenario that produces it, and a scenario needs a documented response"
    )


def body_models(document: dict[str, Any], method: str, path: str, code: int) -> list[type]:
    """The models the document promises for that response's JSON body."""
    response = document["paths"][path][method.lower()]["responses"][str(code)]
    schema = response["content"]["application/json"]["schema"]
    refs = [schema["$ref"]] if "$ref" in schema else [s["$ref"] for s in schema["anyOf"]]
    return [getattr(models, ref.rsplit("/", 1)[1]) for ref in refs]


def matches_one(body: Any, candidates: list[type[BaseModel]]) -> bool:
    for model in candidates:
        try:
            model.model_validate(body)
        except ValidationError:
            continue
        return True
    return False


@pytest.mark.parametrize(("method", "path", "code"), sorted(SCENARIOS))
def test_each_documented_response_happens_with_its_documented_body(
    aws, stores, call_api, monkeypatch, document, method, path, code
):
    result = SCENARIOS[(method, path, code)](call_api, path, monkeypatch=monkeypatch)

    assert result.status_code == code, result.body
    assert matches_one(result.body, body_models(document, method, path, code)), result.body
