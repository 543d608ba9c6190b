"""Many clients, one service: every client sees only its own jobs and results.

A client is an API key; API Gateway puts its id in requestContext.identity.apiKeyId, and
that id is the tenant. Without a key every request is the tenant "default". Every rule is
checked both ways round, so a test cannot pass by one client seeing nothing at all.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from typing import Any

import pytest

from retail_pulse.data.stores import register_areas
from tests.integration.conftest import KNOWN_STORES, job, visit
from tests.support.events import sqs_event
from tests.support.handlers import FakeContext, load_handler

pytestmark = pytest.mark.usefixtures("no_gpu_pause")

A, B = "keyidaaaa1", "keyidbbbb2"  # API key ids, as API Gateway writes them
BHARAT, ASHA = "S00339218", "S01408764"  # both in area 710006


@pytest.fixture
def areas(stores: dict[str, tuple[str, str]]) -> None:
    register_areas({area for area, _ in KNOWN_STORES.values()})


def submit(call_api: Any, tenant: str | None, *visits: dict[str, Any], **kwargs: Any) -> str:
    result = call_api("POST", "/api/submit/", body=job(*visits), tenant=tenant, **kwargs)
    assert result.status_code == 201, result.body
    return result.body["job_id"]


def process_all(aws: Any) -> None:
    while messages := aws.receive():
        event = sqs_event([m["Body"] for m in messages])
        response = load_handler("process").lambda_handler(event, FakeContext())
        assert response == {"batchItemFailures": []}


def perimeters(body: dict[str, Any]) -> list[tuple[str, int]]:
    return sorted((s["store_id"], d["perimeter"]) for s in body["results"] for d in s["data"])


def img(server: Any, width: int) -> str:
    return server.url(f"/img/{width}x100.png")


def test_another_clients_job_answers_exactly_as_an_unknown_one(aws, stores, call_api, image_server):
    mine = submit(call_api, A, visit(BHARAT, [img(image_server, 10)]))

    own = call_api("GET", "/api/status", query={"jobid": mine}, tenant=A)
    other = call_api("GET", "/api/status", query={"jobid": mine}, tenant=B)
    keyless = call_api("GET", "/api/status", query={"jobid": mine})
    unknown = call_api("GET", "/api/status", query={"jobid": "no-such-job"}, tenant=B)

    assert own.status_code == 200 and own.body["job_id"] == mine
    for answer in (other, keyless, unknown):
        assert (answer.status_code, answer.body) == (400, {})
    assert other.raw["body"] == unknown.raw["body"]


def test_visits_show_only_the_callers_results_by_store_by_area_and_unfiltered(
    aws, stores, areas, call_api, image_server
):
    submit(
        call_api, A, visit(BHARAT, [img(image_server, 100)]), visit(ASHA, [img(image_server, 101)])
    )
    submit(call_api, B, visit(BHARAT, [img(image_server, 200)]))
    submit(call_api, None, visit(ASHA, [img(image_server, 300)]))
    process_all(aws)

    def seen(tenant: str | None, **query: str) -> list[tuple[str, int]]:
        result = call_api("GET", "/api/visits", query=query or None, tenant=tenant)
        assert result.status_code == 200, result.body
        return perimeters(result.body)

    for query in ({"storeid": BHARAT}, {"area": "710006"}, {}):
        a, b, default = seen(A, **query), seen(B, **query), seen(None, **query)
        everything_of_a = [(BHARAT, 400), (ASHA, 402)]
        assert a == [p for p in everything_of_a if "storeid" not in query or p[0] == BHARAT]
        assert b == [(BHARAT, 600)]
        assert default == ([] if query.get("storeid") == BHARAT else [(ASHA, 800)])


def test_a_page_token_is_bound_to_its_client(aws, stores, call_api, image_server):
    submit(call_api, A, visit(BHARAT, [img(image_server, 10 + i) for i in range(3)]))
    submit(call_api, B, visit(BHARAT, [img(image_server, 50 + i) for i in range(3)]))
    process_all(aws)
    first = call_api("GET", "/api/visits", query={"storeid": BHARAT, "limit": "2"}, tenant=A)
    token = first.body["next"]

    own = call_api(
        "GET", "/api/visits", query={"storeid": BHARAT, "limit": "2", "next": token}, tenant=A
    )
    replayed = call_api(
        "GET", "/api/visits", query={"storeid": BHARAT, "limit": "2", "next": token}, tenant=B
    )

    assert own.status_code == 200 and len(perimeters(own.body)) == 1
    assert replayed.status_code == 400
    assert "next token is not valid" in replayed.body["error"]


def test_idempotency_keys_are_scoped_to_the_client(aws, stores, call_api, image_server):
    body_visit = visit(BHARAT, [img(image_server, 10)])
    headers = {"Idempotency-Key": "order-42"}

    a_first = submit(call_api, A, body_visit, headers=headers)
    a_again = submit(call_api, A, body_visit, headers=headers)
    b_first = submit(call_api, B, body_visit, headers=headers)

    assert a_first == a_again
    assert b_first != a_first
    assert call_api("GET", "/api/status", query={"jobid": b_first}, tenant=B).status_code == 200


def test_records_written_before_tenants_existed_are_the_default_clients(aws, stores, call_api):
    """A job item without a tenant attribute, and a result filed under the bare store id,
    as the first version wrote them: the keyless client owns them, no one else sees them."""
    from retail_pulse.data.models import ImageRecord, JobRecord

    old = "0df0bded-35f9-42bf-af9e-95bb2371694c"
    now = datetime(2026, 11, 28, 10, 15, tzinfo=UTC)
    JobRecord(
        job_id=old, total=1, succeeded=1, failed=0, visit_count=1, created_at=now, finished_at=now
    ).save()
    ImageRecord(
        job_id=old,
        image_index=0,
        store_id=BHARAT,
        area="710006",
        url="https://img.example/a.jpg",
        visit_time="2026-11-28T10:15:00Z",
        visit_key=f"2026-11-28T10:15:00Z#{old}#00000",
        state="succeeded",
        perimeter=1908,
        result_store_id=BHARAT,
        result_area="710006",
    ).save()

    assert call_api("GET", "/api/status", query={"jobid": old}).body["status"] == "completed"
    assert call_api("GET", "/api/status", query={"jobid": old}, tenant=A).body == {}
    keyless = call_api("GET", "/api/visits", query={"storeid": BHARAT})
    assert perimeters(keyless.body) == [(BHARAT, 1908)]
    assert call_api("GET", "/api/visits", query={"storeid": BHARAT}, tenant=A).body == {
        "results": []
    }


def test_small_jobs_take_the_express_lane_and_every_message_names_its_client(
    aws, stores, call_api, image_server, monkeypatch
):
    from retail_pulse.settings import get_settings

    monkeypatch.setenv("EXPRESS_MAX_IMAGES", "3")
    get_settings.cache_clear()
    small = submit(call_api, A, visit(BHARAT, [img(image_server, 10 + i) for i in range(3)]))
    large = submit(call_api, B, visit(BHARAT, [img(image_server, 20 + i) for i in range(4)]))

    def on(queue_url: str) -> list[dict[str, Any]]:
        messages = []
        while batch := aws.sqs.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=10, MessageSystemAttributeNames=["All"]
        ).get("Messages"):
            messages.extend(batch)
        return messages

    express = on(os.environ["EXPRESS_QUEUE_URL"])
    standard = on(aws.queue_url)
    assert {json.loads(m["Body"])["job_id"] for m in express} == {small}
    assert len(express) == 3 and all(json.loads(m["Body"])["express"] for m in express)
    assert {json.loads(m["Body"])["job_id"] for m in standard} == {large} and len(standard) == 4
    # The message group is the client: SQS fair queues share the queue out by it.
    assert {m["Attributes"]["MessageGroupId"] for m in express} == {A}
    assert {m["Attributes"]["MessageGroupId"] for m in standard} == {B}
    get_settings.cache_clear()
