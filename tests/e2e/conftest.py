"""The local stack, started once per session as `python -m local_stack`, driven over HTTP.

The stack runs in its own process with the environment a developer would give it:
ALLOWED_PRIVATE_HOSTS names exactly this session's image server, and a short
LOCAL_VISIBILITY_TIMEOUT_S lets failed messages come back (and reach the dead-letter
queue) in seconds rather than the template's minutes. Its endpoints, queue URLs and
table names come from its state file.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests

from tests.support.image_server import ImageServer

ROOT = Path(__file__).resolve().parents[2]
READY = re.compile(r"^Retail Pulse local stack ready at (http://127\.0\.0\.1:\d+)", re.M)
READY_TIMEOUT_S = 90
# Short, so failed messages come back in seconds; longer than a busy 2-core machine's
# slowest batch, so messages still being processed are not delivered twice.
VISIBILITY_TIMEOUT_S = 5
TERMINAL = {"completed", "failed"}
STORE = "S00339218"
OTHER_STORE = "S01408764"
VISIT_TIME = "2026-11-28T10:15:00Z"


@dataclass
class Stack:
    api_url: str
    aws_endpoint_url: str
    queues: dict[str, str]
    tables: dict[str, str]
    images: ImageServer
    log_path: Path
    ready_s: float

    def __post_init__(self) -> None:
        self.http = requests.Session()

    def url(self, path: str) -> str:
        return self.api_url + path

    def submit(self, body: Any) -> requests.Response:
        return self.http.post(self.url("/api/submit/"), json=body, timeout=30)

    def status(self, job_id: str) -> requests.Response:
        return self.http.get(self.url("/api/status"), params={"jobid": job_id}, timeout=30)

    def submit_job(self, visits: list[dict[str, Any]]) -> str:
        response = self.submit({"count": len(visits), "visits": visits})
        assert response.status_code == 201, response.text
        return response.json()["job_id"]

    def wait_until_terminal(self, job_id: str, timeout_s: float = 40) -> dict[str, Any]:
        """Poll status until completed or failed; fail the test (with the log) if not."""
        deadline = time.monotonic() + timeout_s
        while True:
            response = self.status(job_id)
            assert response.status_code == 200, response.text
            body = response.json()
            if body["status"] in TERMINAL:
                return body
            if time.monotonic() > deadline:
                pytest.fail(f"job {job_id} still {body} after {timeout_s} s\n{self.log_tail()}")
            time.sleep(0.25)

    def sqs(self) -> Any:
        return boto3.client(
            "sqs",
            endpoint_url=self.aws_endpoint_url,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    def queue_url(self, dead_letter: bool = False) -> str:
        """The image queue, or its dead-letter queue, found by role in the template."""
        names = [n for n in self.queues if ("DeadLetter" in n) == dead_letter]
        assert len(names) == 1, self.queues
        return self.queues[names[0]]

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]


def visit(urls: list[str], store_id: str = STORE) -> dict[str, Any]:
    return {"store_id": store_id, "image_url": urls, "visit_time": VISIT_TIME}


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("local-stack")
    log_path, state_path = workdir / "stack.log", workdir / "state.json"
    images = ImageServer().start()
    # A developer's own stack settings (an API key, a port) must not leak into the tests'.
    inherited = {
        k: v for k, v in os.environ.items() if k not in ("LOCAL_API_KEY", "PORT", "MOTO_PORT")
    }
    env = {
        **inherited,
        "ALLOWED_PRIVATE_HOSTS": images.host_port,
        "LOCAL_VISIBILITY_TIMEOUT_S": str(VISIBILITY_TIMEOUT_S),
        "LOCAL_STACK_STATE_FILE": str(state_path),
        "LOCAL_STACK_EXIT_WITH_PARENT": "1",
        "STORE_MASTER_CSV": str(ROOT / "data" / "stores_sample.csv"),
    }
    started = time.monotonic()
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "local_stack", "--port", "0", "--moto-port", "0"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        api_url = _wait_ready(process, log_path, started)
        state = json.loads(state_path.read_text())
        yield Stack(
            api_url=api_url,
            aws_endpoint_url=state["aws_endpoint_url"],
            queues=state["queues"],
            tables=state["tables"],
            images=images,
            log_path=log_path,
            ready_s=time.monotonic() - started,
        )
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        images.stop()
        print(f"\nlocal stack log: {log_path}")


def _wait_ready(process: subprocess.Popen[bytes], log_path: Path, started: float) -> str:
    while time.monotonic() - started < READY_TIMEOUT_S:
        text = log_path.read_text(errors="replace")
        match = READY.search(text)
        if match:
            return match.group(1)
        if process.poll() is not None:
            pytest.fail(f"local stack exited with {process.returncode}:\n{text[-4000:]}")
        time.sleep(0.1)
    pytest.fail(f"local stack not ready in {READY_TIMEOUT_S} s:\n{log_path.read_text()[-4000:]}")
