"""`retail-pulse export`: asks the service for a finished job's results as one file (POST
/api/results/export), polls it while it is written, and downloads it from the 303's
presigned URL into --output (replaced only once whole), without sending the API key there."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fake_api import FakeApi, fake_api
from typer.testing import CliRunner, Result

from retail_pulse_client.cli import app

EXPORT = "/api/results/export"
FILE = (
    "store_id,image_url,visit_time,status,perimeter,width,height,error\r\n"
    "S1,u,t,succeeded,4,1,1,\r\n"
)


def body(state: str, rows: int = 0, **extra: object) -> dict[str, object]:
    return {"job_id": "j1", "format": "csv", "state": state, "rows": rows, "bytes": 0, **extra}


@pytest.fixture
def api() -> Iterator[FakeApi]:
    with fake_api() as served:
        yield served


def run(api: FakeApi, *args: str) -> Result:
    return CliRunner().invoke(
        app, [*args, "--api", api.base_url, "--api-key", "k-123"], catch_exceptions=False
    )


def test_export_polls_while_written_then_downloads_the_file(api: FakeApi, tmp_path: Path) -> None:
    poll = {"Location": f"{EXPORT}?jobid=j1&format=csv", "Retry-After": "0"}
    signed = f"{api.base_url}/bucket/exports/j1.csv?X-Amz-Signature=s3cr3t"
    api.on("POST", EXPORT, (202, body("writing"), poll))
    api.on(
        "GET",
        EXPORT,
        (202, body("writing", 1_000), poll),
        (303, body("ready", 1), {"Location": signed}),
    )
    api.on("GET", "/bucket/exports/j1.csv", (200, FILE, {"Content-Type": "text/csv"}))
    target = tmp_path / "out.csv"

    result = run(api, "export", "j1", "-o", str(target))

    assert result.exit_code == 0, result.output
    assert target.read_bytes() == FILE.encode()
    assert [r.query for r in api.sent("POST", EXPORT)] == [{"jobid": "j1", "format": "csv"}]
    assert len(api.sent("GET", EXPORT)) == 2
    [download] = api.sent("GET", "/bucket/exports/j1.csv")
    assert download.query == {"X-Amz-Signature": "s3cr3t"}
    assert "x-api-key" not in download.headers  # the API key is not S3's business
    assert "writing the export: 1000 rows" in result.stderr
    assert f"Wrote 1 result of job j1 to {target}" in result.stderr
    assert "s3cr3t" not in result.output


def test_jsonl_goes_to_stdout_as_downloaded(api: FakeApi) -> None:
    lines = '{"store_id": "S1"}\n{"store_id": "S2"}\n'
    api.on("POST", EXPORT, (303, body("ready", 2), {"Location": f"{api.base_url}/f.jsonl"}))
    api.on("GET", "/f.jsonl", (200, lines, {"Content-Type": "application/x-ndjson"}))

    result = run(api, "export", "j1", "--format", "jsonl")

    assert result.exit_code == 0, result.output
    assert result.stdout == lines
    assert api.sent("POST", EXPORT)[0].query["format"] == "jsonl"


def test_an_unfinished_job_is_refused_with_the_services_words(api: FakeApi, tmp_path: Path) -> None:
    api.on("POST", EXPORT, (409, {"error": "job j1 is ongoing: its results are exported once"}))
    target = tmp_path / "out.csv"

    result = run(api, "export", "j1", "-o", str(target))

    assert result.exit_code == 2
    assert "job j1 is ongoing" in result.stderr
    assert not target.exists()


def test_a_failed_export_says_why_and_leaves_no_file(api: FakeApi, tmp_path: Path) -> None:
    poll = {"Location": f"{EXPORT}?jobid=j1&format=csv", "Retry-After": "0"}
    api.on("POST", EXPORT, (202, body("writing"), poll))
    api.on("GET", EXPORT, (200, body("failed", error="3 attempts died writing it: export again")))
    target = tmp_path / "out.csv"

    result = run(api, "export", "j1", "-o", str(target))

    assert result.exit_code == 3
    assert "the export of job j1 failed: 3 attempts died writing it" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_an_unknown_job_says_so(api: FakeApi) -> None:
    api.on("POST", EXPORT, (400, {}))

    result = run(api, "export", "nope")

    assert result.exit_code == 2
    assert "there is no job with id 'nope'" in result.stderr
