"""The local stack's console: one line per API request and the functions' warnings and
errors, one readable line each; everything else (routine INFO lines, metric blobs,
START/END/REPORT, tracebacks) only in the full log, so an idle stack prints nothing."""

from __future__ import annotations

import io
import json
import re
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from local_stack.api_gateway import ApiGateway
from local_stack.model import ApiRoute
from local_stack.runtime import Invocation, LogSink
from local_stack.stack import parse_api_keys

RECONCILER = "ReconcilerFunction"
REQUEST_ID = "e9176535-07b6-4cc4-aed8-8aacbb3e5fd7"
# One idle reconciler pass, as the real function printed it under the local stack.
IDLE_PASS = [
    f"START RequestId: {REQUEST_ID} Version: $LATEST",
    json.dumps(
        {
            "level": "INFO",
            "location": "_publish:193",
            "message": "reconcile pass done",
            "timestamp": "2026-12-07 07:07:34,602+0000",
            "service": "retail-pulse",
            "cold_start": False,
            "function_name": "retail-pulse-local-ReconcilerFunction",
            "function_request_id": REQUEST_ID,
            "stuck_jobs": 0,
            "requeued_images": 0,
            "expired_jobs": 0,
        }
    ),
    json.dumps(
        {
            "_aws": {
                "Timestamp": 1796627254608,
                "CloudWatchMetrics": [
                    {
                        "Namespace": "RetailPulse",
                        "Dimensions": [["service"]],
                        "Metrics": [
                            {"Name": "StuckJobs", "Unit": "Count"},
                            {"Name": "DynamoDBRequests", "Unit": "Count"},
                        ],
                    }
                ],
            },
            "service": "retail-pulse",
            "aws_usage": {"dynamodb_requests": 4, "requests": {"dynamodb.Query": 4}},
            "StuckJobs": [0.0],
            "DynamoDBRequests": [4.0],
        }
    ),
    f"END RequestId: {REQUEST_ID}",
    f"REPORT RequestId: {REQUEST_ID}\tDuration: 25.91 ms\tBilled Duration: 26 ms\t"
    "Memory Size: 512 MB\tMax Memory Used: 151 MB",
]
WARNING = json.dumps(
    {
        "level": "WARNING",
        "location": "_requeue:165",
        "message": "stuck job requeued",
        "timestamp": "2026-12-07 07:08:00,250+0000",
        "service": "retail-pulse",
        "function_name": "retail-pulse-local-ReconcilerFunction",
        "job_id": "job-1",
        "images": 3,
    }
)
# What the Python runtime prints for an unhandled exception (worker.py writes it so).
UNHANDLED = [
    "[ERROR] ValueError: bad body",
    "Traceback (most recent call last):",
    '  File "/var/task/app.py", line 12, in lambda_handler',
    "    raise ValueError('bad body')",
    "ValueError: bad body",
]


def sink() -> tuple[LogSink, io.StringIO, io.StringIO]:
    full, console = io.StringIO(), io.StringIO()
    return LogSink(full, colour=False, console=console), full, console


def test_an_idle_reconciler_pass_is_in_the_full_log_and_not_on_the_console() -> None:
    log, full, console = sink()

    for _ in range(12):  # two minutes of passes, 10 s apart
        for line in IDLE_PASS:
            log.write(RECONCILER, line)

    assert console.getvalue() == ""
    assert full.getvalue().splitlines() == [f"[{RECONCILER}] {line}" for line in IDLE_PASS] * 12
    # The metrics the console leaves out are still counted for GET /local/metrics.
    assert log.metrics.snapshot()["metrics"]["DynamoDBRequests"]["sum"] == 48


def test_a_warning_is_one_readable_line_with_its_keys() -> None:
    log, full, console = sink()

    log.write(RECONCILER, WARNING)

    assert console.getvalue().splitlines() == [
        f"[{RECONCILER}] 07:08:00.250 WARNING stuck job requeued  job_id=job-1 images=3"
    ]
    assert full.getvalue() == f"[{RECONCILER}] {WARNING}\n"


def test_a_logged_error_keeps_its_exception_on_its_one_line() -> None:
    log, _, console = sink()
    line = json.dumps(
        {
            "level": "ERROR",
            "message": "image message failed; SQS will deliver it again",
            "exception": "Traceback (most recent call last):\n  File \"x\"\nKeyError: 'job_id'",
            "exception_name": "KeyError",
        }
    )

    log.write("ProcessFunction", line)

    (shown,) = console.getvalue().splitlines()
    assert shown.startswith("[ProcessFunction] ERROR   image message failed")
    assert shown.endswith("KeyError: 'job_id'")


def test_an_unhandled_exception_is_its_runtime_line_alone() -> None:
    log, full, console = sink()

    for line in ["START RequestId: a Version: $LATEST", *UNHANDLED, "END RequestId: a"]:
        log.write("SubmitFunction", line)
    log.write("SubmitFunction", WARNING)  # the function's next invocation warns

    assert console.getvalue().splitlines() == [
        "[SubmitFunction] ERROR   ValueError: bad body",
        "[SubmitFunction] 07:08:00.250 WARNING stuck job requeued  job_id=job-1 images=3",
    ]
    assert len(full.getvalue().splitlines()) == len(UNHANDLED) + 3


def test_a_traceback_at_init_stays_in_the_full_log() -> None:
    log, full, console = sink()
    lines = [
        "Traceback (most recent call last):",
        '  File "/work/local_stack/worker.py", line 90, in _load_handler',
        "ImportError: cannot import name 'send_image_again'",
        "",
        "The above exception was the direct cause of the following exception:",
        "",
        "Traceback (most recent call last):",
        "_InitError: Unable to import module 'app'",
    ]

    for line in lines:
        log.write("ProcessFunction", line)

    assert console.getvalue() == ""
    assert len(full.getvalue().splitlines()) == len(lines)


def test_a_timeout_is_one_error_line() -> None:
    log, _, console = sink()

    log.write("SlowFunction", "2026-12-07T07:09:00Z abc Task timed out after 1.00 seconds")
    log.write("SlowFunction", "END RequestId: abc")
    log.write("SlowFunction", "REPORT RequestId: abc\tDuration: 1000.00 ms\tStatus: timeout")

    assert console.getvalue().splitlines() == [
        "[SlowFunction] ERROR   abc Task timed out after 1.00 seconds"
    ]


def test_two_workers_of_one_function_keep_their_own_traceback() -> None:
    """Each worker's lines come through its own thread: one worker in the middle of a
    traceback hides none of the other's errors."""
    log, _, console = sink()
    first_in_traceback, second_done = threading.Event(), threading.Event()

    def first() -> None:
        log.write("ProcessFunction", UNHANDLED[0])
        log.write("ProcessFunction", UNHANDLED[1])
        first_in_traceback.set()
        assert second_done.wait(10)
        for line in UNHANDLED[2:]:
            log.write("ProcessFunction", line)

    def second() -> None:
        assert first_in_traceback.wait(10)
        log.write("ProcessFunction", "[ERROR] KeyError: 'Records'")
        second_done.set()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)

    assert console.getvalue().splitlines() == [
        "[ProcessFunction] ERROR   ValueError: bad body",
        "[ProcessFunction] ERROR   KeyError: 'Records'",
    ]


def test_the_stacks_own_lines_and_raw_lines_reach_both() -> None:
    log, full, console = sink()

    log.write("local-stack", "INFO started in 4.2 s")
    log.write(
        "local-stack",
        "ERROR EventBridge log: poll failed; retrying in 1 s\nTraceback (most recent call "
        'last):\n  File "x"\nConnectionError: refused',
    )
    log.raw("[EventBridge] Job Finished {}")

    assert console.getvalue().splitlines() == [
        "[local-stack] INFO    started in 4.2 s",
        "[local-stack] ERROR   EventBridge log: poll failed; retrying in 1 s  "
        "ConnectionError: refused",
        "[EventBridge] Job Finished {}",
    ]
    assert "Traceback" in full.getvalue()


def test_at_a_terminal_the_console_is_coloured_and_the_file_is_not() -> None:
    full, console = io.StringIO(), io.StringIO()
    log = LogSink(full, colour=False, console=console, console_colour=True)

    log.write(RECONCILER, WARNING)
    log.request("GET", "/api/status?jobid=j", 404, 3.2, None)

    assert "\033[" in console.getvalue() and "\033[" not in full.getvalue()
    plain = re.sub(r"\033\[[0-9;]*m", "", console.getvalue()).splitlines()
    assert plain[1] == "[api] GET /api/status?jobid=j -> 404 (3 ms)"


# -- the API front door's line ------------------------------------------------------------


class Lines(io.StringIO):
    """A console that tells a waiting test each line it got."""

    def __init__(self) -> None:
        super().__init__()
        self.arrived = threading.Condition()

    def write(self, text: str) -> int:
        with self.arrived:
            written = super().write(text)
            self.arrived.notify_all()
        return written

    def wait_lines(self, count: int) -> list[str]:
        with self.arrived:
            assert self.arrived.wait_for(lambda: len(self.getvalue().splitlines()) >= count, 10)
            return self.getvalue().splitlines()


def answer(function: str, event: dict[str, Any]) -> Invocation:
    return Invocation("req-1", True, {"statusCode": 202, "body": "{}"})


@pytest.fixture
def gateway() -> Iterator[tuple[ApiGateway, Lines, io.StringIO]]:
    full, console = io.StringIO(), Lines()
    gateway = ApiGateway(
        [ApiRoute("SubmitFunction", "/api/submit/", "POST")],
        answer,
        LogSink(full, colour=False, console=console),
        port=0,
        api_keys=parse_api_keys("acme:key-of-acme", None),
    )
    gateway.start()
    yield gateway, console, full
    gateway.stop()


def test_each_request_is_one_line_with_its_client(
    gateway: tuple[ApiGateway, Lines, io.StringIO],
) -> None:
    api, console, full = gateway

    accepted = requests.post(
        api.url + "/api/submit/", headers={"x-api-key": "key-of-acme"}, json={}, timeout=10
    )
    refused = requests.post(api.url + "/api/submit/", json={}, timeout=10)

    assert (accepted.status_code, refused.status_code) == (202, 403)
    first, second = console.wait_lines(2)
    assert re.fullmatch(r"\[api\] POST /api/submit/ -> 202 \(\d+ ms\) client=acme", first)
    assert re.fullmatch(r"\[api\] POST /api/submit/ -> 403 \(\d+ ms\)", second)
    assert full.getvalue().splitlines() == [first, second]
