"""`retail-pulse cancel`, `retry`, `jobs`, `results` and `submit --callback` as a user runs
them, against the job routes of client/tests/fake_api.py's FakeJobs (issue 15)."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fake_api import RESULT_COLUMNS, FakeJobs, Recorded, fake_jobs
from typer.testing import CliRunner, Result

from retail_pulse.api.models import SubmitRequest
from retail_pulse_client.checks import Limits, field_problems
from retail_pulse_client.cli import app

CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
HEADER = ",".join(RESULT_COLUMNS)


@pytest.fixture
def service() -> Iterator[FakeJobs]:
    with fake_jobs() as jobs:
        yield jobs


@pytest.fixture(autouse=True)
def no_waiting(monkeypatch: pytest.MonkeyPatch) -> None:
    """Retries and polls come back at once: these tests are about what is shown, not when."""
    monkeypatch.setattr("retail_pulse_client.client.time.sleep", lambda _: None)


def run(service: FakeJobs, *args: str) -> Result:
    return CliRunner().invoke(app, [*args, "--api", service.api.base_url], catch_exceptions=False)


def sent(service: FakeJobs, method: str, path: str) -> list[Recorded]:
    return service.api.sent(method, path)


# -- cancel --------------------------------------------------------------------------------


def test_cancel_prints_the_cancelled_status_with_its_counts(service: FakeJobs) -> None:
    service.add("j1", ["succeeded", "failed", "pending", "pending"])

    result = run(service, "cancel", "j1")

    assert result.exit_code == 0, result.output
    assert (
        result.stdout == "Job j1 cancelled: 4/4 images done, 1 succeeded, 1 failed, 2 cancelled\n"
    )
    (request,) = sent(service, "POST", "/api/cancel")
    assert request.query == {"jobid": "j1"}
    assert not CONTROL.search(result.output), repr(result.output)


def test_cancel_json_is_the_status_body(service: FakeJobs) -> None:
    service.add("j1", ["pending", "succeeded"])

    result = run(service, "cancel", "j1", "--format", "json")

    assert result.exit_code == 0
    assert json.loads(result.stdout) == {
        "status": "cancelled",
        "job_id": "j1",
        "progress": {"total": 2, "succeeded": 1, "failed": 0, "cancelled": 1},
    }


def test_cancelling_a_finished_job_exits_2_with_the_apis_words(service: FakeJobs) -> None:
    service.add("j1", ["succeeded", "succeeded"])

    result = run(service, "cancel", "j1")

    assert result.exit_code == 2
    assert (
        "error: the API said: the job is already completed; only an ongoing job can be cancelled"
        in result.stderr
    )
    assert result.stdout == ""


def test_cancelling_an_unknown_job_exits_2(service: FakeJobs) -> None:
    result = run(service, "cancel", "nope")

    assert result.exit_code == 2
    assert "there is no job with id 'nope'" in result.stderr


def test_cancel_with_the_api_out_of_reach_exits_3() -> None:
    result = CliRunner().invoke(app, ["cancel", "j1", "--api", "http://127.0.0.1:9"])

    assert result.exit_code == 3
    assert "could not reach the Retail Pulse API at http://127.0.0.1:9" in result.stderr


def test_status_of_a_cancelled_job_shows_its_counts_and_exits_1(service: FakeJobs) -> None:
    """Its work was not done: a script's `status && next-step` must not go on."""
    service.add("j1", ["succeeded", "cancelled"], status="cancelled")

    result = run(service, "status", "j1")

    assert result.exit_code == 1
    assert (
        result.stdout == "Job j1 cancelled: 2/2 images done, 1 succeeded, 0 failed, 1 cancelled\n"
    )


def test_submit_wait_ends_when_the_job_is_cancelled(service: FakeJobs, tmp_path: Path) -> None:
    service.api.on("POST", "/api/submit/", (201, {"job_id": "j1"}))
    service.add("j1", ["succeeded", "cancelled", "cancelled"], status="cancelled")
    job = tmp_path / "job.csv"
    job.write_text("store_id,image_url,visit_time\nS1,http://h/a.jpg,2026-11-28T10:15:00Z\n")

    result = run(service, "submit", str(job), "--wait")

    assert result.exit_code == 1
    assert "Job j1 cancelled: 3/3 images done, 1 succeeded, 0 failed, 2 cancelled" in result.stdout
    assert "cancelled: 3/3 images done (1 succeeded, 0 failed, 2 cancelled)" in result.stderr


# -- retry ---------------------------------------------------------------------------------


def test_retry_prints_the_job_going_again(service: FakeJobs) -> None:
    service.add("j1", ["succeeded", "failed", "failed", "succeeded"])

    result = run(service, "retry", "j1")

    assert result.exit_code == 0, result.output
    assert result.stdout == "Job j1 ongoing: 2/4 images done, 2 succeeded, 0 failed\n"
    assert sent(service, "POST", "/api/retry")[0].query == {"jobid": "j1"}


def test_retry_wait_follows_the_job_to_its_end(service: FakeJobs) -> None:
    service.add("j1", ["succeeded", "failed"])
    progress = {"total": 2, "succeeded": 1, "failed": 0}
    service.api.on(
        "GET",
        "/api/status",
        (200, {"status": "ongoing", "job_id": "j1", "progress": progress}),
        (200, {"status": "completed", "job_id": "j1", "progress": {**progress, "succeeded": 2}}),
    )

    result = run(service, "retry", "j1", "--wait")

    assert result.exit_code == 0, result.output
    assert result.stdout == "Job j1 completed: 2/2 images done, 2 succeeded, 0 failed\n"
    assert "Retrying job j1" in result.stderr


def test_retrying_a_job_that_did_not_fail_exits_2_with_the_apis_words(service: FakeJobs) -> None:
    service.add("j1", ["succeeded", "pending"])

    result = run(service, "retry", "j1")

    assert result.exit_code == 2
    assert "error: the API said: the job is ongoing; only a failed job can be retried" in (
        result.stderr
    )


def test_retrying_an_unknown_job_exits_2(service: FakeJobs) -> None:
    result = run(service, "retry", "nope", "--wait")

    assert result.exit_code == 2
    assert "there is no job with id 'nope'" in result.stderr
    assert sent(service, "GET", "/api/status") == []


# -- jobs ----------------------------------------------------------------------------------


@pytest.fixture
def three_jobs(service: FakeJobs) -> FakeJobs:
    service.add("old-failed", ["failed", "succeeded"], created_at="2026-12-01T09:00:00Z")
    service.add(
        "mid-done",
        ["succeeded"],
        created_at="2026-12-01T10:00:00Z",
        finished_at="2026-12-01T10:00:05Z",
    )
    service.add("new-going", ["pending", "succeeded", "pending"], created_at="2026-12-01T11:00:00Z")
    return service


def table_ids(stdout: str) -> list[str]:
    return re.findall(r"\b(old-failed|mid-done|new-going)\b", stdout)


def test_jobs_lists_newest_first_as_a_table(three_jobs: FakeJobs) -> None:
    result = run(three_jobs, "jobs")

    assert result.exit_code == 0, result.output
    assert table_ids(result.stdout) == ["new-going", "mid-done", "old-failed"]
    header = next(line for line in result.stdout.splitlines() if "job_id" in line)
    assert re.search(r"job_id.*status.*created_at.*finished_at.*progress", header)
    going = next(line for line in result.stdout.splitlines() if "new-going" in line)
    assert "ongoing" in going and "2026-12-01T11:00:00Z" in going
    assert "1/3 (1 succeeded, 0 failed)" in going
    done = next(line for line in result.stdout.splitlines() if "mid-done" in line)
    assert "2026-12-01T10:00:05Z" in done
    assert "3 jobs" in result.stderr
    assert not CONTROL.search(result.output), repr(result.output)


def test_jobs_shows_one_page_and_says_when_more_exist(three_jobs: FakeJobs) -> None:
    result = run(three_jobs, "jobs", "--limit", "2")

    assert result.exit_code == 0
    assert table_ids(result.stdout) == ["new-going", "mid-done"]
    assert "More jobs exist: --all lists every one." in result.stderr
    (request,) = sent(three_jobs, "GET", "/api/jobs")
    assert request.query == {"limit": "2"}


def test_jobs_all_follows_next_to_the_last_page(three_jobs: FakeJobs) -> None:
    result = run(three_jobs, "jobs", "--all", "--limit", "1", "--status", "failed")

    assert result.exit_code == 0
    assert table_ids(result.stdout) == ["old-failed"]
    result = run(three_jobs, "jobs", "--all", "--limit", "1")

    assert result.exit_code == 0, result.output
    assert table_ids(result.stdout) == ["new-going", "mid-done", "old-failed"]
    assert "More jobs exist" not in result.stderr
    queries = [r.query for r in sent(three_jobs, "GET", "/api/jobs")][1:]
    assert [q.get("next") for q in queries] == [None, "tok-1", "tok-2"]
    assert all(q["limit"] == "1" and "status" not in q for q in queries)


def test_jobs_status_filters_on_the_service(three_jobs: FakeJobs) -> None:
    result = run(three_jobs, "jobs", "--status", "failed")

    assert result.exit_code == 0
    assert table_ids(result.stdout) == ["old-failed"]
    assert sent(three_jobs, "GET", "/api/jobs")[0].query == {"status": "failed"}
    assert "1 failed job" in result.stderr


def test_jobs_json_is_the_apis_body(three_jobs: FakeJobs) -> None:
    result = run(three_jobs, "jobs", "--format", "json", "--limit", "2")

    assert result.exit_code == 0
    body = json.loads(result.stdout)
    assert body == {
        "jobs": [three_jobs.jobs["new-going"].summary(), three_jobs.jobs["mid-done"].summary()],
        "next": "tok-1",
    }
    assert body["jobs"][0]["finished_at"] is None


def test_jobs_with_none_says_so(service: FakeJobs) -> None:
    result = run(service, "jobs", "--status", "cancelled")

    assert result.exit_code == 0
    assert result.stdout == ""
    assert "No cancelled jobs." in result.stderr


@pytest.mark.parametrize(
    "args", [["--status", "done"], ["--limit", "0"], ["--limit", "101"], ["--format", "csv"]]
)
def test_jobs_bad_usage_exits_2_before_asking(service: FakeJobs, args: list[str]) -> None:
    result = run(service, "jobs", *args)

    assert result.exit_code == 2
    assert service.api.requests == []


# -- results -------------------------------------------------------------------------------

STATES = ["succeeded", "failed", "succeeded", "pending", "succeeded"]


@pytest.fixture
def five_images(service: FakeJobs) -> FakeJobs:
    service.add("j1", STATES)
    return service


def test_results_csv_has_one_header_across_pages(five_images: FakeJobs) -> None:
    result = run(five_images, "results", "j1", "--page-size", "2")

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == HEADER
    assert lines.count(HEADER) == 1
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [row["status"] for row in rows] == STATES
    expected = five_images.jobs["j1"].rows
    assert rows[0] == {k: "" if v is None else str(v) for k, v in expected[0].items()}
    assert rows[1]["error"] == "image download failed: HTTP 404 (#1)" and rows[1]["width"] == ""
    queries = [r.query for r in sent(five_images, "GET", "/api/results")]
    assert [q.get("next") for q in queries] == [None, "tok-1", "tok-2"]
    assert all(q["format"] == "csv" and q["jobid"] == "j1" and q["limit"] == "2" for q in queries)
    assert "Wrote 5 results of job j1: 1 failed, 1 pending, 3 succeeded" in result.stderr


def test_results_json_is_every_row_across_pages(five_images: FakeJobs) -> None:
    result = run(five_images, "results", "j1", "--format", "json", "--page-size", "2")

    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"job_id": "j1", "results": five_images.jobs["j1"].rows}
    assert len(sent(five_images, "GET", "/api/results")) == 3


@pytest.mark.parametrize("form", ["csv", "json"])
def test_results_output_writes_the_file_and_nothing_to_stdout(
    five_images: FakeJobs, tmp_path: Path, form: str
) -> None:
    target = tmp_path / f"out.{form}"
    target.write_text("an older export\n")

    result = run(five_images, "results", "j1", "--format", form, "-o", str(target))

    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert f"Wrote 5 results of job j1 to {target}" in result.stderr
    text = target.read_text()
    if form == "csv":
        assert text.splitlines()[0] == HEADER and len(text.splitlines()) == 6
    else:
        assert len(json.loads(text)["results"]) == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == [target.name]  # no temporary file


def test_an_output_that_cannot_be_written_exits_2_before_asking(
    five_images: FakeJobs, tmp_path: Path
) -> None:
    result = run(five_images, "results", "j1", "--output", str(tmp_path / "no-dir" / "out.csv"))

    assert result.exit_code == 2
    assert f"error: --output: cannot write {tmp_path / 'no-dir' / 'out.csv'}" in result.stderr
    assert five_images.api.requests == []

    result = run(five_images, "results", "j1", "--output", str(tmp_path))

    assert result.exit_code == 2
    assert "is a directory" in result.stderr


def test_an_export_that_fails_half_way_leaves_the_old_file(
    five_images: FakeJobs, tmp_path: Path
) -> None:
    serve_results = five_images._results
    five_images.api.serve(
        "GET",
        "/api/results",
        lambda request: (
            (503, {"error": "down"}) if "next" in request.query else serve_results(request)
        ),
    )
    target = tmp_path / "out.csv"
    target.write_text("an older export\n")

    result = run(five_images, "results", "j1", "--page-size", "2", "-o", str(target))

    assert result.exit_code == 3
    assert "HTTP 503: down (gave up after 5 attempts)" in result.stderr
    assert target.read_text() == "an older export\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.csv"]


@pytest.mark.parametrize("form", ["csv", "json"])
def test_results_of_an_unknown_job_exit_2_and_write_nothing(
    service: FakeJobs, tmp_path: Path, form: str
) -> None:
    result = run(service, "results", "nope", "--format", form, "-o", str(tmp_path / "out"))

    assert result.exit_code == 2
    assert "there is no job with id 'nope'" in result.stderr
    assert list(tmp_path.iterdir()) == []


# -- submit --callback ---------------------------------------------------------------------


@pytest.fixture
def job_csv(tmp_path: Path) -> Path:
    path = tmp_path / "job.csv"
    path.write_text("store_id,image_url,visit_time\nS1,http://h/a.jpg,2026-11-28T10:15:00Z\n")
    return path


def test_submit_callback_is_sent_as_callback_url(service: FakeJobs, job_csv: Path) -> None:
    service.api.on("POST", "/api/submit/", (201, {"job_id": "j1"}))

    result = run(service, "submit", str(job_csv), "--callback", "https://hooks.example.com/rp")

    assert result.exit_code == 0, result.output
    (request,) = sent(service, "POST", "/api/submit/")
    assert request.body["callback_url"] == "https://hooks.example.com/rp"
    assert request.body["count"] == 1


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("ftp://hooks.example.com/rp", "--callback 'ftp://hooks.example.com/rp' is not an http"),
        ("hooks.example.com/rp", "--callback 'hooks.example.com/rp' is not an http or https URL"),
        ("https://hooks example.com", "--callback is not an http or https URL: it contains a"),
        ("https://:443/rp", "--callback 'https://:443/rp' is not a valid URL: it has no host"),
    ],
)
def test_a_bad_callback_exits_2_before_anything_is_sent(
    service: FakeJobs, job_csv: Path, url: str, expected: str
) -> None:
    result = run(service, "submit", str(job_csv), "--callback", url)

    assert result.exit_code == 2
    assert f"error: {expected}" in result.stderr
    assert service.api.requests == []


def test_a_bad_callback_url_in_a_json_job_is_caught_too(service: FakeJobs, tmp_path: Path) -> None:
    body = {
        "count": 1,
        "visits": [
            {
                "store_id": "S1",
                "image_url": ["http://h/a.jpg"],
                "visit_time": "2026-11-28T10:15:00Z",
            }
        ],
        "callback_url": "mailto:ops@example.com",
    }
    job = tmp_path / "job.json"
    job.write_text(json.dumps(body))

    result = run(service, "submit", str(job))

    assert result.exit_code == 2
    assert "callback_url 'mailto:ops@example.com' is not an http or https URL" in result.stderr
    assert service.api.requests == []


@pytest.mark.parametrize(
    "url",
    [
        "https://hooks.example.com/rp",
        "http://127.0.0.1:8080/hook?x=1",
        None,
        "ftp://hooks.example.com/rp",
        "hooks.example.com",
        "https://hooks example.com",
        "https://:443/rp",
        "http://[::1/x",
        "http://h:0/x",
        "https://" + "a" * 2100,
        "",
    ],
)
def test_the_callback_check_agrees_with_the_service(url: str | None) -> None:
    """The desk check of callback_url is the service's (retail_pulse.api.checks), restated."""
    body = {
        "count": 1,
        "visits": [
            {
                "store_id": "S1",
                "image_url": ["http://h/a.jpg"],
                "visit_time": "2026-11-28T10:15:00Z",
            }
        ],
        "callback_url": url,
    }
    try:
        SubmitRequest.model_validate(body)
        service_accepts = True
    except ValueError:
        service_accepts = False

    assert (not field_problems(body, Limits())) == service_accepts
