"""The local stack as the benchmark drives it: `python -m local_stack` in a subprocess (as
tests/e2e/conftest.py starts it), its output in a log file the benchmark reads REPORT lines
from, and its endpoints from the state file.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from local_stack.stack import EVENT_SOURCE_REQUESTS_PATH

ROOT = Path(__file__).resolve().parent.parent
READY = re.compile(r"^Retail Pulse local stack ready at (http://127\.0\.0\.1:\d+)", re.M)
READY_TIMEOUT_S = 120
STORE = "S00339218"  # in data/stores_sample.csv
VISIT_TIME = "2026-11-28T10:15:00Z"
MAX_URLS_PER_VISIT = 1000  # template.yaml's MAX_URLS_PER_VISIT
TERMINAL = {"completed", "failed"}


@dataclass
class RunningStack:
    """A started local stack: its API, AWS endpoints, log and the subprocess itself."""

    api_url: str
    aws_endpoint_url: str  # MiniStack
    dynamodb_endpoint_url: str  # DynamoDB Local
    log_path: Path
    process: subprocess.Popen[bytes]
    ready_s: float
    http: requests.Session = field(default_factory=requests.Session)

    def submit(self, urls: list[str]) -> tuple[str, float]:
        """(job id, seconds to the 201) for a job of these image URLs at one store."""
        visits = [
            {"store_id": STORE, "image_url": part, "visit_time": VISIT_TIME}
            for part in (
                urls[i : i + MAX_URLS_PER_VISIT] for i in range(0, len(urls), MAX_URLS_PER_VISIT)
            )
        ]
        body = json.dumps({"count": len(visits), "visits": visits})
        started = time.perf_counter()
        response = self.http.post(
            f"{self.api_url}/api/submit/",
            data=body,
            headers={"Content-Type": "application/json"},
            timeout=60,
        )
        elapsed = time.perf_counter() - started
        if response.status_code != 201:
            raise RuntimeError(f"submit failed: {response.status_code} {response.text[:500]}")
        return response.json()["job_id"], elapsed

    def status(self, job_id: str, session: requests.Session | None = None) -> dict[str, Any]:
        response = (session or self.http).get(
            f"{self.api_url}/api/status", params={"jobid": job_id}, timeout=30
        )
        response.raise_for_status()
        return response.json()

    def wait_terminal(self, job_id: str, timeout_s: float, poll_s: float = 0.1) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while True:
            body = self.status(job_id)
            if body["status"] in TERMINAL:
                return body
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {body} after {timeout_s:.0f} s")
            time.sleep(poll_s)

    def event_source_requests(self) -> dict[str, int]:
        """The SQS pollers' running tally of requests, by "<function>.<event>.<operation>"
        (what Lambda's pollers would send, and SQS bill, in AWS)."""
        response = self.http.get(self.api_url + EVENT_SOURCE_REQUESTS_PATH, timeout=10)
        response.raise_for_status()
        return response.json()

    def log_offset(self) -> int:
        return self.log_path.stat().st_size

    def log_since(self, offset: int) -> str:
        with self.log_path.open("rb") as log:
            log.seek(offset)
            return log.read().decode(errors="replace")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_stack(
    allowed_hosts: str,
    pollers: int | None = None,
    extra_env: dict[str, str] | None = None,
    parameters: dict[str, str] | None = None,
) -> RunningStack:
    """Start `python -m local_stack` on free ports and wait until it is ready; `parameters`
    override the template's (e.g. {"ProcessBatchSize": "10"})."""
    workdir = Path(tempfile.mkdtemp(prefix="bench-stack-"))
    log_path, state_path = workdir / "stack.log", workdir / "state.json"
    env = {
        **os.environ,
        "ALLOWED_PRIVATE_HOSTS": allowed_hosts,
        "LOCAL_STACK_STATE_FILE": str(state_path),
        "LOCAL_STACK_EXIT_WITH_PARENT": "1",
        "STORE_MASTER_CSV": str(ROOT / "data" / "stores_sample.csv"),
        **(extra_env or {}),
    }
    if pollers is not None:
        env["LOCAL_PROCESS_POLLERS"] = str(pollers)
    started = time.monotonic()
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            # --verbose: the full log on stdout, where the REPORT lines are read from.
            [sys.executable, "-m", "local_stack", "--port", "0", "--aws-port", "0", "--verbose"]
            + [f"--parameter={key}={value}" for key, value in (parameters or {}).items()],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    while True:
        text = log_path.read_text(errors="replace")
        if match := READY.search(text):
            break
        if process.poll() is not None:
            raise RuntimeError(f"local stack exited with {process.returncode}:\n{text[-3000:]}")
        if time.monotonic() - started > READY_TIMEOUT_S:
            process.kill()
            raise RuntimeError(f"local stack not ready in {READY_TIMEOUT_S} s:\n{text[-3000:]}")
        time.sleep(0.1)
    state = json.loads(state_path.read_text())
    return RunningStack(
        api_url=match.group(1),
        aws_endpoint_url=state["aws_endpoint_url"],
        dynamodb_endpoint_url=state["dynamodb_endpoint_url"],
        log_path=log_path,
        process=process,
        ready_s=time.monotonic() - started,
    )
