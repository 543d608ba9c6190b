"""The stack the end-to-end tests drive over HTTP: the local stack by default, or the real
template deployed onto MiniStack (`make test-deployed`), so that the same tests prove both.

- Local (default): `python -m local_stack`, started once per session in its own process with
  the environment a developer would give it: ALLOWED_PRIVATE_HOSTS names exactly this
  session's image server, and a short LOCAL_VISIBILITY_TIMEOUT_S lets failed messages come
  back (and reach the dead-letter queue) in seconds rather than the template's minutes. Its
  endpoints, queue URLs and table names come from its state file.
- Deployed: RETAIL_PULSE_STACK_STATE names the JSON state file `python -m deployed` writes
  (API base URL, AWS endpoint, queues, tables, the functions' log groups, and the image
  port the stack was deployed to allow; its queues have the same short visibility timeout).
  The session serves its images on that port.

A test that needs what only the local stack has (its EMF totals, fair-queue order, its console)
is marked `@pytest.mark.local_stack("why")`: on the deployed stack it is skipped with that reason.
A test that needs no stack (the client's install) is marked `stackless`, and skipped there too.
`make test` runs those on the local stack, and the whole suite on the deployed template, so
each test runs once; `make test-e2e-local` runs the whole suite on the local stack.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests

from tests.support.image_server import ImageServer

ROOT = Path(__file__).resolve().parents[2]
READY = re.compile(r"^Retail Pulse local stack ready at (http://127\.0\.0\.1:\d+)", re.M)
READY_TIMEOUT_S = 300
# Short, so failed messages come back in seconds; longer than a busy 2-core machine's
# slowest batch, so messages still being processed are not delivered twice.
VISIBILITY_TIMEOUT_S = 5
TERMINAL = {"completed", "failed"}
STORE = "S00339218"
OTHER_STORE = "S01408764"
VISIT_TIME = "2026-11-28T10:15:00Z"


STATE_ENV = "RETAIL_PULSE_STACK_STATE"


@dataclass
class Stack:
    api_url: str
    aws_endpoint_url: str
    # DynamoDB's endpoint: DynamoDB Local's on the local stack, MiniStack's when deployed.
    dynamodb_endpoint_url: str
    queues: dict[str, str]
    tables: dict[str, str]
    images: ImageServer
    log_path: Path
    ready_s: float
    # "local": python -m local_stack; "deployed": template.yaml deployed onto MiniStack.
    kind: str = "local"
    # Deployed only: each function's CloudWatch Logs group, by the function's logical id.
    log_groups: dict[str, str] = field(default_factory=dict)
    # "<Function>.<Event>" -> images that SQS source processes at once (both state files).
    sqs_slots: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.http = requests.Session()

    def function_lines(self, function: str) -> list[str]:
        """Every line a function (by logical id) printed so far: relayed into the local
        stack's log with a `[Function] ` prefix, or in its CloudWatch Logs group."""
        if self.kind == "local":
            prefix = f"[{function}] "
            return [
                line.removeprefix(prefix)
                for line in self.log_path.read_text(errors="replace").splitlines()
                if line.startswith(prefix)
            ]
        logs = self.client("logs")
        lines = []
        for page in logs.get_paginator("filter_log_events").paginate(
            logGroupName=self.log_groups[function]
        ):
            for event in page["events"]:
                lines.extend(event["message"].splitlines())
        return lines

    def function_json(self, function: str) -> list[dict[str, Any]]:
        """The JSON (Powertools) lines a function printed."""
        records = []
        for line in self.function_lines(function):
            if line.startswith("{"):
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
        return records

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
        return self.client("sqs")

    def client(self, service: str) -> Any:
        return boto3.client(
            service,
            endpoint_url=self.dynamodb_endpoint_url
            if service == "dynamodb"
            else self.aws_endpoint_url,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    def queue_url(self, dead_letter: bool = False) -> str:
        """The image queue (large jobs), or its dead-letter queue, by logical id."""
        return self.queues["ImageDeadLetterQueue" if dead_letter else "ImageQueue"]

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]


def visit(urls: list[str], store_id: str = STORE) -> dict[str, Any]:
    return {"store_id": store_id, "image_url": urls, "visit_time": VISIT_TIME}


def pytest_runtest_setup(item: pytest.Item) -> None:
    """A `local_stack` test is skipped, with its reason, when the stack is the deployed one;
    so is a `stackless` one, which `make test` runs with the local stack's."""
    if not os.environ.get(STATE_ENV):
        return
    marker = item.get_closest_marker("local_stack")
    if marker is not None:
        pytest.skip(f"local stack only: {marker.args[0] if marker.args else 'see the test'}")
    if item.get_closest_marker("stackless") is not None:
        pytest.skip(
            "needs no stack: run with the local stack's e2e tests "
            '(pytest -m "e2e and (local_stack or stackless)")'
        )


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    if os.environ.get(STATE_ENV):
        yield from _deployed_stack(Path(os.environ[STATE_ENV]))
        return
    yield from _local_stack(tmp_path_factory)


def _deployed_stack(state_path: Path) -> Iterator[Stack]:
    """The stack `python -m deployed` deployed onto MiniStack, from its state file."""
    state = json.loads(state_path.read_text())
    assert state["visibility_timeout_s"] == VISIBILITY_TIMEOUT_S, state
    # The stack allows exactly this host and port (its AllowedPrivateHosts).
    images = ImageServer(port=state["image_port"]).start()
    try:
        yield Stack(
            api_url=state["api_url"],
            aws_endpoint_url=state["aws_endpoint_url"],
            dynamodb_endpoint_url=state["aws_endpoint_url"],
            queues=state["queues"],
            tables=state["tables"],
            images=images,
            log_path=Path(state["log_path"]),
            ready_s=0.0,
            kind="deployed",
            log_groups=state["log_groups"],
            sqs_slots=state["sqs_slots"],
        )
    finally:
        images.stop()


def _local_stack(
    tmp_path_factory: pytest.TempPathFactory, extra_env: dict[str, str] | None = None
) -> Iterator[Stack]:
    """A local stack of its own; `extra_env` adds settings (LOCAL_API_KEYS, pollers...)."""
    workdir = tmp_path_factory.mktemp("local-stack")
    log_path, state_path = workdir / "stack.log", workdir / "state.json"
    images = ImageServer().start()
    # A developer's own stack settings (an API key, a port) must not leak into the tests'.
    inherited = {
        k: v
        for k, v in os.environ.items()
        if k not in ("LOCAL_API_KEY", "LOCAL_API_KEYS", "PORT", "LOCAL_AWS_PORT")
        and k != "LOCAL_DYNAMODB_PORT"
    }
    env = {
        **inherited,
        "ALLOWED_PRIVATE_HOSTS": images.host_port,
        "LOCAL_VISIBILITY_TIMEOUT_S": str(VISIBILITY_TIMEOUT_S),
        "LOCAL_STACK_STATE_FILE": str(state_path),
        "LOCAL_STACK_EXIT_WITH_PARENT": "1",
        "STORE_MASTER_CSV": str(ROOT / "data" / "stores_sample.csv"),
        **(extra_env or {}),
    }
    started = time.monotonic()
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            # --verbose: the full log on stdout, where function_lines() reads it.
            [sys.executable, "-m", "local_stack", "--port", "0", "--aws-port", "0", "--verbose"],
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
            dynamodb_endpoint_url=state["dynamodb_endpoint_url"],
            queues=state["queues"],
            tables=state["tables"],
            images=images,
            log_path=log_path,
            ready_s=time.monotonic() - started,
            sqs_slots=state["sqs_slots"],
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
