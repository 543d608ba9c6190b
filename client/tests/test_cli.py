"""The `retail-pulse` command as a user runs it: input checks, exit codes, output formats."""

from __future__ import annotations

import csv
import io
import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fake_api import FakeApi, fake_api
from typer.testing import CliRunner, Result

from retail_pulse_client.cli import _needs_service_package, app

HEADER = "store_id,image_url,visit_time\n"
# Anything a terminal would interpret: ANSI escapes, carriage returns, backspaces, ...
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


@pytest.fixture
def api() -> Iterator[FakeApi]:
    with fake_api() as server:
        yield server


def run(api: FakeApi | None, *args: str) -> Result:
    """Run the command as a user would, fast retries aside (none of these need them)."""
    base = ["--api", api.base_url] if api is not None else []
    command, rest = (args[:2], args[2:]) if args[0] == "stores" else (args[:1], args[1:])
    return CliRunner().invoke(app, [*command, *rest, *base], catch_exceptions=False)


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def status(state: str, done: int, total: int = 3, failed: int = 0, **extra: object) -> dict:
    return {
        "status": state,
        "job_id": "j1",
        "progress": {"total": total, "succeeded": done - failed, "failed": failed},
        **extra,
    }


# -- reading a job file --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("store_id,image_url\nS1,http://h/a.jpg\n", "line 1: missing column visit_time"),
        (
            HEADER + "S1,http://h/a.jpg,2026-11-28T10:15:00Z\nS1,,2026-11-28T10:15:00Z\n",
            "line 3: image_url is empty",
        ),
        (
            HEADER + "S1,http://h/a.jpg,2026-11-28T10:15:00Z\n\nS2,http://h/b.jpg,28/11/2026\n",
            "line 4: visit_time '28/11/2026' is not an RFC 3339 timestamp",
        ),
        (HEADER + "S1,ftp://h/a.jpg,2026-11-28T10:15:00Z\n", "line 2: image_url 'ftp://h/a.jpg'"),
        (HEADER + "S1,http://h/a.jpg,2026-11-28T10:15:00Z,extra\n", "line 2: more fields"),
        (HEADER, "no data rows"),
    ],
    ids=["missing-column", "empty-field", "bad-timestamp", "bad-url", "extra-field", "no-rows"],
)
def test_a_bad_csv_exits_2_naming_the_line_and_sends_nothing(
    api: FakeApi, tmp_path: Path, text: str, expected: str
) -> None:
    result = run(api, "submit", str(write(tmp_path, "job.csv", text)))

    assert result.exit_code == 2, result.output
    assert expected in result.stderr
    assert api.requests == []


def test_every_bad_row_is_reported_at_once(api: FakeApi, tmp_path: Path) -> None:
    rows = "".join(f"S{n},,2026-11-28T10:15:00Z\n" for n in range(3))

    result = run(api, "submit", str(write(tmp_path, "job.csv", HEADER + rows)))

    assert result.exit_code == 2
    assert all(f"line {line}: image_url is empty" in result.stderr for line in (2, 3, 4))


def test_bad_json_exits_2_with_its_position(api: FakeApi, tmp_path: Path) -> None:
    result = run(api, "submit", str(write(tmp_path, "job.json", '{"count": 1,\n "visits": [}')))

    assert result.exit_code == 2
    assert "line 2, column" in result.stderr and "not valid JSON" in result.stderr


def test_a_json_job_is_checked_like_the_service_checks_it(api: FakeApi, tmp_path: Path) -> None:
    body = {
        "count": 2,
        "visits": [{"store_id": "S1", "image_url": ["http://h/a.jpg"], "visit_time": "2026-11-28"}],
    }
    result = run(api, "submit", str(write(tmp_path, "job.json", json.dumps(body))))

    assert result.exit_code == 2
    assert "visit_time" in result.stderr and "RFC 3339" in result.stderr
    assert api.requests == []


def test_csv_rows_become_visits_by_store_and_time_in_first_seen_order(
    api: FakeApi, tmp_path: Path
) -> None:
    api.on("POST", "/api/submit/", (201, {"job_id": "j1"}))
    text = HEADER + (
        "S2,http://h/1.jpg,2026-11-28T10:15:00Z\n"
        "S1,http://h/2.jpg,2026-11-28T11:00:00+05:30\n"
        # the same moment as row 1, written differently: the same visit
        "S2,http://h/3.jpg,2026-11-28T15:45:00+05:30\n"
        "S1,http://h/4.jpg,2026-11-28T12:00:00Z\n"
    )

    result = run(api, "submit", str(write(tmp_path, "job.csv", text)))

    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "j1"
    (sent,) = api.sent("POST", "/api/submit/")
    assert sent.body == {
        "count": 3,
        "visits": [
            {
                "store_id": "S2",
                "image_url": ["http://h/1.jpg", "http://h/3.jpg"],
                "visit_time": "2026-11-28T10:15:00Z",
            },
            {
                "store_id": "S1",
                "image_url": ["http://h/2.jpg"],
                "visit_time": "2026-11-28T11:00:00+05:30",
            },
            {
                "store_id": "S1",
                "image_url": ["http://h/4.jpg"],
                "visit_time": "2026-11-28T12:00:00Z",
            },
        ],
    }
    assert "4 images in 3 visits" in result.stderr


# -- waiting and exit codes ----------------------------------------------------------------


@pytest.fixture
def job_csv(tmp_path: Path) -> Path:
    rows = "".join(f"S{n},http://h/{n}.jpg,2026-11-28T10:15:00Z\n" for n in range(3))
    return write(tmp_path, "job.csv", HEADER + rows)


@pytest.fixture(autouse=True)
def no_waiting(monkeypatch: pytest.MonkeyPatch) -> None:
    """Polls come back at once: these tests are about what is shown, not when."""
    monkeypatch.setattr("retail_pulse_client.client.time.sleep", lambda _: None)


def test_submit_wait_exits_0_when_the_job_completes(api: FakeApi, job_csv: Path) -> None:
    api.on("POST", "/api/submit/", (201, {"job_id": "j1"}))
    api.on(
        "GET",
        "/api/status",
        (200, status("ongoing", 0)),
        (200, status("ongoing", 2)),
        (200, status("completed", 3)),
    )

    result = run(api, "submit", str(job_csv), "--wait")

    assert result.exit_code == 0, result.output
    assert "Job j1 completed: 3/3 images done, 3 succeeded, 0 failed" in result.stdout
    assert "ongoing: 2/3 images done (2 succeeded, 0 failed)" in result.stderr
    assert not CONTROL.search(result.output), repr(result.output)


def test_submit_wait_exits_1_and_lists_failed_stores(api: FakeApi, job_csv: Path) -> None:
    api.on("POST", "/api/submit/", (201, {"job_id": "j1"}))
    failure = "image download failed: HTTP 404 for http://h/2.jpg"
    api.on(
        "GET",
        "/api/status",
        (200, status("failed", 3, failed=1, error=[{"store_id": "S2", "error": failure}])),
    )

    result = run(api, "submit", str(job_csv), "--wait")

    assert result.exit_code == 1
    assert f"S2: {failure}" in result.stdout
    assert not CONTROL.search(result.output), repr(result.output)


def test_submit_wait_json_prints_the_final_status(api: FakeApi, job_csv: Path) -> None:
    api.on("POST", "/api/submit/", (201, {"job_id": "j1"}))
    api.on("GET", "/api/status", (200, status("completed", 3)))

    result = run(api, "submit", str(job_csv), "--wait", "--format", "json")

    assert result.exit_code == 0
    assert json.loads(result.stdout) == status("completed", 3)


def test_a_job_the_service_rejects_exits_2_with_its_reason(api: FakeApi, job_csv: Path) -> None:
    api.on("POST", "/api/submit/", (400, {"error": "the job has 3 images; the limit is 2"}))

    result = run(api, "submit", str(job_csv))

    assert result.exit_code == 2
    assert "the job has 3 images; the limit is 2" in result.stderr


def test_an_unreachable_api_exits_3_and_says_where_it_looked(job_csv: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["submit", str(job_csv), "--api", "http://127.0.0.1:9"])

    assert result.exit_code == 3
    assert "could not reach the Retail Pulse API at http://127.0.0.1:9" in result.stderr


def test_status_of_an_unknown_job_exits_2(api: FakeApi) -> None:
    api.on("GET", "/api/status", (400, {}))

    result = run(api, "status", "nope")

    assert result.exit_code == 2
    assert "there is no job with id 'nope'" in result.stderr


def test_status_json_is_the_status_body(api: FakeApi) -> None:
    api.on("GET", "/api/status", (200, status("ongoing", 1)))

    result = run(api, "status", "j1", "--format", "json")

    assert result.exit_code == 0
    assert json.loads(result.stdout) == status("ongoing", 1)


def test_status_watch_follows_the_job_to_its_end(api: FakeApi) -> None:
    api.on("GET", "/api/status", (200, status("ongoing", 1)), (200, status("completed", 3)))

    result = run(api, "status", "j1", "--watch")

    assert result.exit_code == 0
    assert "Job j1 completed" in result.stdout


def test_the_api_key_option_reaches_the_api(api: FakeApi) -> None:
    api.on("GET", "/api/status", (200, status("ongoing", 1)))

    run(api, "status", "j1", "--api-key", "k-123")

    assert api.sent("GET", "/api/status")[0].headers["x-api-key"] == "k-123"


# -- visits --------------------------------------------------------------------------------


def visits_page(store: str, perimeters: list[int], token: str | None = None) -> dict:
    data = [{"date": "2026-11-28T10:15:00Z", "perimeter": p} for p in perimeters]
    body: dict = {
        "results": [{"store_id": store, "area": "710006", "store_name": "A, B", "data": data}]
    }
    if token:
        body["next"] = token
    return body


@pytest.fixture
def paged_visits(api: FakeApi) -> FakeApi:
    api.on(
        "GET",
        "/api/visits",
        (200, visits_page("S1", [1908], "p2")),
        (200, visits_page("S1", [4000], "p3")),
        (200, visits_page("S2", [300])),
    )
    return api


def test_visits_json_merges_pages_per_store(paged_visits: FakeApi) -> None:
    result = run(paged_visits, "visits", "--area", "710006", "--format", "json")

    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert [(r["store_id"], [d["perimeter"] for d in r["data"]]) for r in body["results"]] == [
        ("S1", [1908, 4000]),
        ("S2", [300]),
    ]


def test_visits_csv_has_one_row_per_image(paged_visits: FakeApi) -> None:
    result = run(paged_visits, "visits", "--format", "csv")

    assert result.exit_code == 0
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [(r["store_id"], r["store_name"], r["perimeter"]) for r in rows] == [
        ("S1", "A, B", "1908"),
        ("S1", "A, B", "4000"),
        ("S2", "A, B", "300"),
    ]


def test_visits_table_off_a_terminal_is_plain(paged_visits: FakeApi) -> None:
    result = run(paged_visits, "visits", "--store", "S1")

    assert result.exit_code == 0
    assert "4000" in result.stdout and "3 images from 2 stores" in result.stderr
    assert not CONTROL.search(result.output), repr(result.output)


def test_a_bad_date_filter_exits_2_before_asking(api: FakeApi) -> None:
    result = run(api, "visits", "--from", "yesterday")

    assert result.exit_code == 2
    assert "--from: 'yesterday' is not an RFC 3339 timestamp" in result.stderr
    assert api.requests == []


# -- help and usage ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [
        [],
        ["submit"],
        ["status"],
        ["cancel"],
        ["retry"],
        ["jobs"],
        ["results"],
        ["visits"],
        ["stores"],
        ["stores", "import"],
        ["clients"],
        ["clients", "add"],
        ["clients", "list"],
    ],
)
def test_every_command_has_help_with_an_example(command: list[str]) -> None:
    result = CliRunner().invoke(app, [*command, "--help"])

    assert result.exit_code == 0
    assert "Example" in result.stdout or command in (["stores"], ["clients"])


def test_bad_usage_exits_2() -> None:
    assert CliRunner().invoke(app, ["submit"]).exit_code == 2
    assert CliRunner().invoke(app, ["visits", "--format", "xml"]).exit_code == 2
    assert CliRunner().invoke(app, ["cancel"]).exit_code == 2
    assert CliRunner().invoke(app, ["results", "j1", "--format", "xml"]).exit_code == 2


# -- stores import -------------------------------------------------------------------------


def test_stores_import_without_the_service_package_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The client installed alone (pip install ./client): one line, exit 2, no traceback."""
    for name in ("retail_pulse_admin", "retail_pulse_admin.stores.command"):
        monkeypatch.setitem(sys.modules, name, None)  # import of it now fails, as if absent

    result = run(None, "stores", "import", str(tmp_path / "x.csv"))

    assert result.exit_code == 2
    (line,) = result.stderr.splitlines()
    assert line.startswith("retail-pulse stores import needs the service package: pip install -e ")
    assert line.endswith(" (or make install)")
    assert result.stdout == ""


def test_the_hint_names_the_checkout_and_a_missing_dependency() -> None:
    checkout = str(Path(__file__).resolve().parents[2])

    alone = _needs_service_package("stores import", ModuleNotFoundError(name="retail_pulse"))
    broken = _needs_service_package(
        "stores import", ModuleNotFoundError("No module named 'pynamodb'", name="pynamodb")
    )

    assert f"pip install -e {checkout} (or make install)" in alone
    assert "(No module named 'pynamodb')" in broken
