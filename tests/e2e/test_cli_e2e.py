"""`retail-pulse` against the local stack, run as a user runs it: a separate process, no tty."""

from __future__ import annotations

import csv
import io
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from tests.e2e.conftest import OTHER_STORE, STORE, Stack

pytestmark = pytest.mark.e2e

CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
# Visit times no other test uses, so the visits read back are this test's alone.
MORNING, EVENING = "2031-05-17T08:00:00Z", "2031-05-17T18:30:00+05:30"
# The other tests' visits are on another day, so they never join the perimeters read back.
ELSEWHEN = "2031-06-01T09:00:00Z"


def cli(stack: Stack, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            [sys.executable, "-m", "retail_pulse_client", *args, "--api", stack.api_url],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as stuck:
        pytest.fail(
            f"retail-pulse {' '.join(args)} still running after {timeout} s\n"
            f"stdout: {stuck.stdout!r}\nstderr: {stuck.stderr!r}\n{stack.log_tail()}"
        )


def test_submit_a_csv_wait_for_it_and_read_the_perimeters_back(
    stack: Stack, tmp_path: Path
) -> None:
    sizes = {STORE: [(100 + i, 60 + i % 5) for i in range(12)], OTHER_STORE: [(640, 480)] * 3}
    job = tmp_path / "job.csv"
    with job.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["store_id", "image_url", "visit_time"])
        for store, store_sizes in sizes.items():
            for n, (width, height) in enumerate(store_sizes):
                url = stack.images.url(f"/img/{width}x{height}.{'png' if n % 2 else 'jpg'}")
                writer.writerow([store, url, MORNING if n % 3 else EVENING])

    submitted = cli(stack, "submit", str(job), "--wait")

    assert submitted.returncode == 0, submitted.stderr + submitted.stdout
    assert "completed: 15/15 images done, 15 succeeded, 0 failed" in submitted.stdout
    assert "Submitted 15 images in 4 visits" in submitted.stderr
    assert not CONTROL.search(submitted.stdout + submitted.stderr)

    read = cli(stack, "visits", "--from", "2031-05-17", "--to", "2031-05-17", "--format", "csv")
    assert read.returncode == 0, read.stderr
    rows = list(csv.DictReader(io.StringIO(read.stdout)))
    for store, store_sizes in sizes.items():
        got = Counter(int(r["perimeter"]) for r in rows if r["store_id"] == store)
        assert got == Counter(2 * (w + h) for w, h in store_sizes), store


def test_a_failed_job_exits_1_and_names_the_store(stack: Stack, tmp_path: Path) -> None:
    job = tmp_path / "job.csv"
    job.write_text(
        "store_id,image_url,visit_time\n"
        f"{STORE},{stack.images.url('/img/50x50.gif')},{ELSEWHEN}\n"
        f"{OTHER_STORE},{stack.images.url('/status/404')},{ELSEWHEN}\n"
    )

    result = cli(stack, "submit", str(job), "--wait")

    assert result.returncode == 1, result.stderr + result.stdout
    failures = [line for line in result.stdout.splitlines() if ": " in line]
    assert any(line.startswith(f"{OTHER_STORE}: ") and "404" in line for line in failures)
    assert not any(line.startswith(f"{STORE}: ") for line in failures)


def test_the_same_idempotency_key_gives_the_same_job(stack: Stack, tmp_path: Path) -> None:
    job = tmp_path / "job.csv"
    job.write_text(
        f"store_id,image_url,visit_time\n{STORE},{stack.images.url('/img/30x40.png')},{ELSEWHEN}\n"
    )

    first = cli(stack, "submit", str(job), "--idempotency-key", f"cli-e2e-{tmp_path.name}")
    again = cli(stack, "submit", str(job), "--idempotency-key", f"cli-e2e-{tmp_path.name}")

    assert first.returncode == again.returncode == 0, first.stderr + again.stderr
    assert first.stdout.strip() == again.stdout.strip() != ""


def test_the_lifecycle_commands_against_the_stack(stack: Stack, tmp_path: Path) -> None:
    """submit --callback, jobs, results --output, cancel and retry as a user runs them."""
    import json
    import uuid

    key = uuid.uuid4().hex[:12]
    job = tmp_path / "job.csv"
    urls = [stack.images.url(f"/img/{30 + i}x20.jpg") for i in range(3)]
    job.write_text(
        "store_id,image_url,visit_time\n" + "".join(f"{STORE},{url},{ELSEWHEN}\n" for url in urls)
    )

    submitted = cli(stack, "submit", str(job), "--callback", stack.images.url(f"/hook/{key}/0"))
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.strip()
    (delivery,) = stack.images.wait_for_deliveries(key, 1, timeout_s=60)
    assert json.loads(delivery.body)["job"]["job_id"] == job_id

    listed = cli(stack, "jobs", "--status", "completed", "--all")
    assert listed.returncode == 0, listed.stderr
    assert job_id in listed.stdout

    export = tmp_path / "results.csv"
    exported = cli(stack, "results", job_id, "--format", "csv", "--output", str(export))
    assert exported.returncode == 0, exported.stderr
    rows = list(csv.DictReader(export.open()))
    assert [(r["image_url"], r["status"], r["perimeter"]) for r in rows] == [
        (url, "succeeded", str(2 * (30 + i + 20))) for i, url in enumerate(urls)
    ]

    # A finished job can be neither cancelled nor (not having failed) retried: exit 2, why.
    for command in ("cancel", "retry"):
        refused = cli(stack, command, job_id)
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert "completed" in refused.stderr, refused.stderr
