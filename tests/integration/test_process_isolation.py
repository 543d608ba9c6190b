"""One client's image hosts cost another client nothing (issue 22): the process function on
moto, with a hostile client's trickling hosts (raw sockets on 127.0.0.1) in the same batch as
a victim's good images, and records given back unstarted keeping their attempt.

Waits are on events (the trickle host's counts, a job's filing); the trickling downloads are
ended by the test closing their host, not by a timer.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from retail_pulse.data.models import SUCCEEDED, ImageRecord
from retail_pulse.jobs import process as process_module
from retail_pulse.jobs.bytes_budget import ByteBudget
from retail_pulse.jobs.cancellation import CancelledJobs
from retail_pulse.jobs.process import BatchRecord, process_batch
from retail_pulse.settings import get_settings
from tests.integration.conftest import job, visit
from tests.support.events import sqs_event
from tests.support.handlers import FakeContext, load_handler
from tests.support.image_server import make_image
from tests.support.pipeline import images_sent_again
from tests.support.trickle_host import GatedImageHost, TrickleHost

pytestmark = pytest.mark.usefixtures("no_gpu_pause")

WAIT_S = 30  # only ever reached when something is broken
HOSTILE = 8  # trickling images: before, enough to hold the invocation's whole bytes budget


@pytest.fixture
def trickle(image_server: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[TrickleHost]:
    host = TrickleHost(every_s=0.5).start()
    monkeypatch.setenv("ALLOWED_PRIVATE_HOSTS", f"{image_server.host_port},{host.host_port}")
    get_settings.cache_clear()
    yield host
    host.stop()
    get_settings.cache_clear()


def submit(call_api: Any, store_id: str, urls: list[str], tenant: str) -> str:
    result = call_api("POST", "/api/submit/", body=job(visit(store_id, urls)), tenant=tenant)
    assert result.status_code == 201, result.body
    return result.body["job_id"]


def event_of(messages: list[dict[str, Any]]) -> dict[str, Any]:
    event = sqs_event([m["Body"] for m in messages])
    for record, message in zip(event["Records"], messages, strict=True):
        record["messageId"] = message["MessageId"]
        record["receiptHandle"] = message["ReceiptHandle"]
    return event


class ShortOfTime(FakeContext):
    """An invocation with too little time left for any image to start."""

    def get_remaining_time_in_millis(self) -> int:
        return 1_000


def images_of(job_id: str) -> list[ImageRecord]:
    records = ImageRecord.query(
        job_id, range_key_condition=ImageRecord.image_index >= 0, consistent_read=True
    )
    return sorted(records, key=lambda i: i.image_index)


def test_another_clients_trickling_hosts_cost_a_good_image_nothing(
    aws: Any,
    stores: Any,
    call_api: Any,
    image_server: Any,
    trickle: TrickleHost,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hostile_urls = [trickle.url(f"/hostile/{i}.jpg") for i in range(HOSTILE)]
    hostile = submit(call_api, "S00339218", hostile_urls, tenant="hostile")
    victim_urls = [image_server.url(f"/img/{20 + i}x10.jpg") for i in range(2)]
    victim = submit(call_api, "S01408764", victim_urls, tenant="victim")
    messages = aws.receive()
    # One batch, the trickling images first: as a batch the queue could hand the function.
    messages.sort(key=lambda m: json.loads(m["Body"])["job_id"] != hostile)
    assert len(messages) == HOSTILE + 2
    handler = load_handler("process")

    victim_filed = threading.Event()
    real_finish = process_module.finish_job

    def finish_job(job_id: str) -> None:
        real_finish(job_id)
        if job_id == victim:
            victim_filed.set()

    monkeypatch.setattr(process_module, "finish_job", finish_job)

    with images_sent_again() as sent, ThreadPoolExecutor(1) as runner:
        invocation = runner.submit(handler.lambda_handler, event_of(messages), FakeContext())
        assert trickle.wait_for(lambda host: host.open == HOSTILE, WAIT_S)
        # The victim's job is filed and finished while every trickling download still runs:
        # its images started at once (a host that has sent nothing holds no memory) and its
        # results did not wait for the batch's slowest image.
        assert victim_filed.wait(WAIT_S), "the victim's images waited on the trickling hosts"
        assert trickle.open == HOSTILE
        assert handler._budget.held == 0  # eight hosts mid-answer hold nothing
        status = call_api("GET", "/api/status", query={"jobid": victim}, tenant="victim").body
        assert status["status"] == "completed"
        trickle.stop()  # the hostile hosts hang up: their downloads fail, transiently
        assert invocation.result(WAIT_S) == {"batchItemFailures": []}

    # Each victim image succeeded on its first attempt, none was given back or dead-lettered.
    assert [(i.state, i.attempts) for i in images_of(victim)] == [(SUCCEEDED, 1)] * 2
    assert [again for again in sent if again.body["job_id"] == victim] == []
    # Each hostile image had one attempt (its download started): filed as such, or sent
    # again as its second, in its own client's message group.
    filed = {int(i.image_index): i.attempts for i in images_of(hostile)}
    again = {a.body["image_index"]: (a.body["attempt"], a.group) for a in sent}
    assert sorted([*filed, *again]) == list(range(HOSTILE))
    assert set(filed.values()) <= {1} and set(again.values()) <= {(2, "hostile")}
    dead = aws.sqs.receive_message(QueueUrl=aws.dlq_url, MaxNumberOfMessages=10)
    assert dead.get("Messages", []) == []


def test_a_record_given_back_unstarted_keeps_its_attempt(
    aws: Any, stores: Any, call_api: Any, image_server: Any
) -> None:
    url = image_server.url("/img/30x20.jpg")
    job_id = submit(call_api, "S00339218", [url], tenant="default")
    handler = load_handler("process")

    # Twice too short of time for the image to start: each time the record is done with
    # (no batch item failure, so SQS's receive count never grows) and the image goes on in
    # a message of its own, visible at once, as the same attempt.
    for _ in range(2):
        (message,) = aws.receive()
        assert json.loads(message["Body"])["attempt"] == 1
        with images_sent_again() as sent:
            response = handler.lambda_handler(event_of([message]), ShortOfTime())
        assert response == {"batchItemFailures": []}
        ((again),) = sent
        assert (again.body["attempt"], again.delay_s) == (1, 0)
        aws.sqs.delete_message(QueueUrl=aws.queue_url, ReceiptHandle=message["ReceiptHandle"])
        assert images_of(job_id) == []

    (message,) = aws.receive()
    assert handler.lambda_handler(event_of([message]), FakeContext()) == {"batchItemFailures": []}
    (image,) = images_of(job_id)
    assert (image.state, image.attempts) == (SUCCEEDED, 1)


@pytest.fixture
def gated(image_server: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[GatedImageHost]:
    host = GatedImageHost(make_image(30, 20, "png"))
    monkeypatch.setenv("ALLOWED_PRIVATE_HOSTS", f"{image_server.host_port},{host.host_port}")
    get_settings.cache_clear()
    yield host
    host.stop()
    get_settings.cache_clear()


def test_a_cancel_mid_batch_stops_every_download_not_yet_started(
    aws: Any, stores: Any, call_api: Any, gated: GatedImageHost
) -> None:
    """One worker runs the job's five images in turn; the job is cancelled (through the API)
    while the first one downloads, and a second passes on the cancel checks' clock (the
    cached answer's age): the other four are filed cancelled, never downloaded."""
    job_id = submit(call_api, "S00339218", [gated.url(f"/{i}.png") for i in range(5)], "default")
    messages = sorted(aws.receive(), key=lambda m: json.loads(m["Body"])["image_index"])
    records = [BatchRecord(m["MessageId"], m["Body"], 1, m["ReceiptHandle"]) for m in messages]
    now = [0.0]
    cancelled = CancelledJobs(clock=lambda: now[0])  # strongly consistent reads of the job

    with ThreadPoolExecutor(1) as pool, ThreadPoolExecutor(1) as runner:
        batch = runner.submit(
            process_batch, records, pool, ByteBudget(10_000_000), lambda: 60.0, cancelled
        )
        assert gated.asked.wait(WAIT_S)  # the first image is downloading
        answer = call_api("POST", "/api/cancel", query={"jobid": job_id})
        assert answer.status_code == 200, answer.body
        now[0] += 1.01  # the answer read before the cancel is now too old to be used
        gated.release.set()
        assert batch.result(WAIT_S) == []

    assert gated.arrived == ["/0.png"]
    status = call_api("GET", "/api/status", query={"jobid": job_id}).body
    assert status["status"] == "cancelled"
    assert status["progress"] == {"total": 5, "succeeded": 1, "failed": 0, "cancelled": 4}
