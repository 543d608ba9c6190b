"""POST /api/results/export: a finished job's results as one file in S3, written by the
export function part by part (S3 multipart), polled until a 303 to a presigned GET; the
file's rows are GET /api/results's, every image once, across invocations that hand over
or die between parts."""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
import requests

from retail_pulse.data import exports as export_store
from retail_pulse.data.jobs import create_job
from retail_pulse.domain import FAILED, Image, ImageFailure, Job
from retail_pulse.jobs import export as use_case
from retail_pulse.jobs.finish import finish_job
from retail_pulse.settings import get_settings
from tests.integration.conftest import job, visit
from tests.integration.test_results import ASHA, BHARAT, HEADER, UNKNOWN, measured, url
from tests.support.dynamodb_local import backend  # noqa: F401
from tests.support.filing import file_result
from tests.support.handlers import FakeContext, LongContext, load_handler
from tests.support.pipeline import run_ingest_queue

A, B = "keyidaaaa1", "keyidbbbb2"
EXPORT = "/api/results/export"
MIB = 1024 * 1024


def run_exports(aws: Any, context: FakeContext | None = None) -> int:
    """Deliver what ExportQueue holds to the export function, as Lambda's poller does, a
    message deleted once its invocation returns; returns how many were delivered."""
    handler = load_handler("export").lambda_handler
    delivered = 0
    while messages := aws.sqs.receive_message(QueueUrl=aws.export_url).get("Messages", []):
        for message in messages:
            event = {"Records": [{"messageId": message["MessageId"], "body": message["Body"]}]}
            handler(event, context or LongContext())
            aws.sqs.delete_message(QueueUrl=aws.export_url, ReceiptHandle=message["ReceiptHandle"])
            delivered += 1
    return delivered


def ask(call_api: Any, method: str, job_id: str, tenant: str | None = A, **query: str) -> Any:
    return call_api(method, EXPORT, query={"jobid": job_id, **query}, tenant=tenant)


def download(location: str) -> requests.Response:
    """The file behind a 303's presigned URL (moto answers it in-process)."""
    response = requests.get(location, timeout=30)
    assert response.status_code == 200, response.text
    return response


def all_results(call_api: Any, job_id: str, output: str = "json") -> Any:
    page = call_api("GET", "/api/results", query={"jobid": job_id, "format": output}, tenant=A)
    assert page.status_code == 200
    return page.body


@pytest.fixture
def finished_job(aws: Any, stores: Any, call_api: Any) -> str:
    """Four images of three visits, each done: measured, failed, measured, unknown store."""
    result = call_api(
        "POST",
        "/api/submit/",
        body=job(
            visit(BHARAT, [url(0), url(1)], "2026-11-28T10:15:00Z"),
            visit(ASHA, [url(2)], "2026-11-28T11:40:00+05:30"),
            visit(UNKNOWN, [url(3)], "2026-11-28T12:00:00Z"),
        ),
        tenant=A,
    )
    job_id = str(result.body["job_id"])
    assert file_result(job_id, 0, measured())
    assert file_result(job_id, 1, ImageFailure('image download failed: "HTTP 404", x,y'))
    assert file_result(job_id, 2, measured(ASHA))
    finish_job(job_id)
    assert call_api("GET", "/api/status", query={"jobid": job_id}, tenant=A).body["status"] == (
        "failed"
    )
    return job_id


def test_a_finished_job_exports_as_csv_with_the_results_header_and_rows(
    aws, finished_job, call_api
):
    asked = ask(call_api, "POST", finished_job, format="csv")

    assert asked.status_code == 202, asked.body
    location = asked.headers["Location"]
    assert location == f"{EXPORT}?jobid={finished_job}&format=csv"
    assert asked.body == {
        "job_id": finished_job,
        "format": "csv",
        "state": "writing",
        "rows": 0,
        "bytes": 0,
    }
    assert int(asked.headers["Retry-After"]) >= 1
    polled = ask(call_api, "GET", finished_job, format="csv")
    assert (polled.status_code, polled.body["state"]) == (202, "writing")

    assert run_exports(aws) == 1
    ready = ask(call_api, "GET", finished_job, format="csv")

    assert ready.status_code == 303
    assert ready.body["state"] == "ready" and ready.body["rows"] == 4
    assert ready.body["url_expires_in"] == 300
    assert "X-Amz-Signature=" in ready.headers["Location"]
    file = download(ready.headers["Location"])
    assert file.headers["Content-Type"] == "text/csv; charset=utf-8"
    assert file.headers["Content-Disposition"] == f'attachment; filename="{finished_job}.csv"'
    # Byte for byte the CSV of GET /api/results: its header, its rows, its quoting.
    assert file.text == all_results(call_api, finished_job, "csv")
    assert file.text.startswith(HEADER + "\r\n")
    assert ready.body["bytes"] == len(file.content)


def test_jsonl_holds_one_results_row_a_line(aws, finished_job, call_api):
    assert ask(call_api, "POST", finished_job, format="jsonl").status_code == 202
    run_exports(aws)

    ready = ask(call_api, "GET", finished_job, format="jsonl")

    assert ready.status_code == 303
    file = download(ready.headers["Location"])
    assert file.headers["Content-Type"] == "application/x-ndjson; charset=utf-8"
    rows = [json.loads(line) for line in file.text.splitlines()]
    assert rows == all_results(call_api, finished_job)["results"]
    assert [row["status"] for row in rows] == ["succeeded", "failed", "succeeded", "failed"]


def test_the_same_export_twice_is_the_same_export_and_once_written_a_303(
    aws, finished_job, call_api
):
    first = ask(call_api, "POST", finished_job)
    again = ask(call_api, "POST", finished_job, format="csv")

    assert first.status_code == again.status_code == 202
    assert first.headers["Location"] == again.headers["Location"]
    # The second request sent the message again (nothing held the export yet): harmless,
    # the lease lets one invocation write it, once.
    assert run_exports(aws) == 2
    written = ask(call_api, "POST", finished_job)
    assert written.status_code == 303
    assert written.body["rows"] == 4
    assert download(written.headers["Location"]).text == all_results(call_api, finished_job, "csv")
    assert run_exports(aws) == 0  # nothing written again
    export = export_store.get_export(finished_job, "csv")
    assert export is not None
    s3 = boto3.client("s3", region_name="us-east-1")
    versions = s3.list_object_versions(Bucket=os.environ["UPLOADS_BUCKET"], Prefix=export.key)
    assert len(versions["Versions"]) == 1  # one file, written once


def test_another_clients_job_and_an_unknown_one_answer_as_results_does(aws, finished_job, call_api):
    for method in ("POST", "GET"):
        other = ask(call_api, method, finished_job, tenant=B)
        unknown = ask(call_api, method, "no-such-job")
        assert (other.status_code, other.body) == (400, {})
        assert other.raw["body"] == unknown.raw["body"]
    assert (
        call_api("GET", "/api/results", query={"jobid": "no-such-job"}).raw["body"]
        == (unknown.raw["body"])
    )
    assert run_exports(aws) == 0


def test_a_bad_format_names_both_and_an_unfinished_job_is_a_409(aws, stores, call_api):
    ongoing = call_api("POST", "/api/submit/", body=job(visit(BHARAT, [url(0)])), tenant=A)
    job_id = ongoing.body["job_id"]

    bad = ask(call_api, "POST", job_id, format="xlsx")
    early = ask(call_api, "POST", job_id)
    never = ask(call_api, "GET", job_id)

    assert bad.status_code == 400
    assert "'csv'" in bad.body["error"] and "'jsonl'" in bad.body["error"]
    assert early.status_code == 409
    assert early.body["error"].startswith(f"job {job_id} is ongoing")
    assert f"GET /api/status?jobid={job_id}" in early.body["error"]
    assert never.status_code == 404
    assert f"POST {EXPORT}?jobid={job_id}&format=csv" in never.body["error"]


def test_a_job_retried_after_its_export_needs_a_new_one(aws, finished_job, call_api):
    assert ask(call_api, "POST", finished_job).status_code == 202
    run_exports(aws)
    assert call_api("POST", "/api/retry", query={"jobid": finished_job}, tenant=A).status_code == (
        200
    )

    stale = ask(call_api, "GET", finished_job)
    refused = ask(call_api, "POST", finished_job)

    assert stale.status_code == 404
    assert "since the job was retried" in stale.body["error"]
    assert refused.status_code == 409


# -- the multipart path: parts of 5 MiB, interrupted between parts ---------------------------


@pytest.fixture
def small_parts(monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    """EXPORT_PART_BYTES at S3's least, 5 MiB: IMAGES long rows make several parts."""
    monkeypatch.setenv("EXPORT_PART_BYTES", str(5 * MIB))
    get_settings.cache_clear()
    yield 5 * MIB
    monkeypatch.undo()
    get_settings.cache_clear()


LONG = 3_900  # characters of a presigned-style URL and of an error: rows of about 8 KB...
# ...so this many images make three parts of 5 MiB at least (the last one less).
IMAGES = 1_400


def big_finished_job(aws: Any, images: int) -> str:
    """A finished job of `images` failed images with long URLs and errors, written as submit
    writes a job of unknown stores (its manifest and its failed records), then finished."""
    job_id = f"big-{images}"
    pad = "q" * LONG
    create_job(
        Job(
            job_id=job_id,
            tenant=A,
            total=images,
            succeeded=0,
            failed=images,
            visit_count=images,
            created_at=datetime.now(UTC),
        ),
        [
            Image(
                job_id=job_id,
                image_index=i,
                store_id=f"S{i:08d}",
                area=None,
                url=f"https://photos.example/{i}.jpg?X-Amz-Signature={pad}",
                visit_time="2026-11-28T10:15:00Z",
                state=FAILED,
                error=f'image {i} failed, "quoted" and, comma: {pad}',
            )
            for i in range(images)
        ],
    )
    finish_job(job_id)
    run_ingest_queue(aws)  # its failures summed up in pages (more than SUMMARY_INLINE_FAILURES)
    return job_id


def expected_indexes(images: int) -> list[int]:
    return list(range(images))


def csv_indexes(text: str) -> list[int]:
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == HEADER.split(",")
    return [int(row[1].split("/")[3].split(".")[0]) for row in rows[1:]]


def parts_of(key: str) -> list[int]:
    """The sizes of the completed file's parts, as S3 recorded them."""
    s3 = boto3.client("s3", region_name="us-east-1")
    bucket = os.environ["UPLOADS_BUCKET"]
    head = s3.head_object(Bucket=bucket, Key=key, PartNumber=1)
    count = int(head.get("PartsCount", 1))
    return [
        int(s3.head_object(Bucket=bucket, Key=key, PartNumber=n)["ContentLength"])
        for n in range(1, count + 1)
    ]


# On DynamoDB Local: moto's response serialiser spends ~1 ms on each value it answers.
@pytest.mark.usefixtures("backend")
@pytest.mark.parametrize("backend", ["dynamodb-local"], indirect=True)
def test_a_large_export_is_written_in_parts_of_at_least_5_mib(aws, call_api, small_parts):
    job_id = big_finished_job(aws, IMAGES)

    assert ask(call_api, "POST", job_id).status_code == 202
    assert run_exports(aws) == 1
    ready = ask(call_api, "GET", job_id)

    assert ready.status_code == 303
    text = download(ready.headers["Location"]).text
    assert csv_indexes(text) == expected_indexes(IMAGES)
    export = export_store.get_export(job_id, "csv")
    assert export is not None and len(export.etags) >= 2
    sizes = parts_of(export.key)
    assert len(sizes) == len(export.etags)
    assert all(size >= small_parts for size in sizes[:-1]), sizes
    assert sum(sizes) == len(text.encode()) == ready.body["bytes"]


# On DynamoDB Local: moto's response serialiser spends ~1 ms on each value it answers.
@pytest.mark.usefixtures("backend")
@pytest.mark.parametrize("backend", ["dynamodb-local"], indirect=True)
def test_an_export_out_of_time_hands_over_between_parts_and_no_row_is_twice_or_missing(
    aws, call_api, small_parts, monkeypatch
):
    job_id = big_finished_job(aws, IMAGES)
    assert ask(call_api, "POST", job_id, format="jsonl").status_code == 202
    # The first invocation runs out of time right after its first part is recorded.
    recorded = export_store.part_done
    out_of_time = {"now": False}

    def record_then_run_out(*args: Any, **kwargs: Any) -> Any:
        done = recorded(*args, **kwargs)
        out_of_time["now"] = True
        return done

    class Closing(FakeContext):
        def get_remaining_time_in_millis(self) -> int:
            return 1_000 if out_of_time["now"] else 900_000

    monkeypatch.setattr(export_store, "part_done", record_then_run_out)
    handler = load_handler("export").lambda_handler
    [message] = aws.sqs.receive_message(QueueUrl=aws.export_url)["Messages"]
    event = {"Records": [{"messageId": message["MessageId"], "body": message["Body"]}]}
    handler(event, Closing())
    aws.sqs.delete_message(QueueUrl=aws.export_url, ReceiptHandle=message["ReceiptHandle"])
    halfway = export_store.get_export(job_id, "jsonl")
    assert halfway is not None and halfway.state == "writing" and len(halfway.etags) == 1
    assert 0 < halfway.next_index < IMAGES
    polled = ask(call_api, "GET", job_id, format="jsonl")
    assert (polled.status_code, polled.body["rows"]) == (202, halfway.rows)
    monkeypatch.setattr(export_store, "part_done", recorded)

    # Handed over: its message was sent again, and the next invocation goes on from there.
    assert run_exports(aws) == 1

    ready = ask(call_api, "GET", job_id, format="jsonl")
    assert ready.status_code == 303
    lines = download(ready.headers["Location"]).text.splitlines()
    indexes = [int(json.loads(line)["image_url"].split("/")[3].split(".")[0]) for line in lines]
    assert indexes == expected_indexes(IMAGES)


# On DynamoDB Local: moto's response serialiser spends ~1 ms on each value it answers.
@pytest.mark.usefixtures("backend")
@pytest.mark.parametrize("backend", ["dynamodb-local"], indirect=True)
def test_an_invocation_that_dies_between_a_part_and_its_record_is_resumed_exactly(
    aws, call_api, small_parts, monkeypatch
):
    job_id = big_finished_job(aws, IMAGES)
    assert ask(call_api, "POST", job_id).status_code == 202
    # Part 2 reaches S3, then the invocation dies before recording it.
    recorded = export_store.part_done

    def die_at_the_second(export: Any, *args: Any, **kwargs: Any) -> Any:
        if len(export.etags) == 1:
            raise ConnectionError("the invocation died")
        return recorded(export, *args, **kwargs)

    monkeypatch.setattr(export_store, "part_done", die_at_the_second)
    handler = load_handler("export").lambda_handler
    [message] = aws.sqs.receive_message(QueueUrl=aws.export_url)["Messages"]
    event = {"Records": [{"messageId": message["MessageId"], "body": message["Body"]}]}
    with pytest.raises(ConnectionError):
        handler(event, LongContext())
    died = export_store.get_export(job_id, "csv")
    assert died is not None and len(died.etags) == 1

    # Another delivery while the dead invocation's lease lasts does nothing...
    class Other(LongContext):
        aws_request_id = "11111111-1111-4111-8111-111111111111"

    handler(event, Other())
    assert export_store.get_export(job_id, "csv") == died
    # ...and its redelivery to the lease's owner (a lease run out, in effect) goes on.
    monkeypatch.setattr(export_store, "part_done", recorded)
    handler(event, LongContext())

    ready = ask(call_api, "GET", job_id)
    assert ready.status_code == 303
    assert csv_indexes(download(ready.headers["Location"]).text) == expected_indexes(IMAGES)


def test_an_export_that_keeps_dying_fails_says_why_and_drops_its_parts(
    aws, finished_job, call_api, monkeypatch
):
    assert ask(call_api, "POST", finished_job).status_code == 202

    def die(*_: Any, **__: Any) -> str:
        raise ConnectionError("the invocation died")

    monkeypatch.setattr(export_store, "upload_part", die)
    handler = load_handler("export").lambda_handler
    [message] = aws.sqs.receive_message(QueueUrl=aws.export_url)["Messages"]
    event = {"Records": [{"messageId": message["MessageId"], "body": message["Body"]}]}
    for _ in range(use_case.MAX_ATTEMPTS):
        with pytest.raises(ConnectionError):
            handler(event, LongContext())
    s3 = boto3.client("s3", region_name="us-east-1")
    bucket = os.environ["UPLOADS_BUCKET"]
    assert len(s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])) == 1

    handler(event, LongContext())  # the next attempt gives up

    failed = ask(call_api, "GET", finished_job)
    assert failed.status_code == 200
    assert failed.body["state"] == "failed"
    assert failed.body["error"] == "3 attempts died writing it: export again"
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    # A new request starts a new export, which is written.
    monkeypatch.undo()
    again = ask(call_api, "POST", finished_job)
    assert (again.status_code, again.body["state"]) == (202, "writing")
    run_exports(aws)
    assert ask(call_api, "GET", finished_job).status_code == 303


@pytest.mark.parametrize(("file_format", "expected"), [("csv", HEADER + "\r\n"), ("jsonl", "")])
def test_a_job_without_images_exports_an_empty_file(aws, call_api, file_format, expected):
    """An upload refused before any image (the job failed with none): the CSV is its header
    alone, the JSON Lines file empty; both are written (one part, the last may be empty)."""
    create_job(
        Job(
            job_id="empty",
            tenant=A,
            total=0,
            succeeded=0,
            failed=0,
            visit_count=0,
            created_at=datetime.now(UTC),
        ),
        [],
    )
    finish_job("empty")
    assert ask(call_api, "POST", "empty", format=file_format).status_code == 202
    run_exports(aws)

    ready = ask(call_api, "GET", "empty", format=file_format)

    assert (ready.status_code, ready.body["rows"]) == (303, 0)
    assert download(ready.headers["Location"]).text == expected
