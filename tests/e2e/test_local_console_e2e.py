"""`make run`'s console, as a person sees it: quiet while the stack idles (its reconciler
runs every few seconds), one line per API request, and the full log in the file the ready
banner names.

The stack runs as `make run` runs it (`python -m local_stack`, no VERBOSE), with the
schedule period shortened so that reconciler passes come quickly; the test waits for a
number of passes counted in the full log, not for an amount of time."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from tests.e2e.conftest import ROOT, STATE_ENV

LOCAL_ONLY = "the console of `make run`, not the deployed stack's"
pytestmark = [pytest.mark.e2e, pytest.mark.local_stack(LOCAL_ONLY)]

READY = re.compile(r"^Retail Pulse local stack ready at (http://127\.0\.0\.1:\d+)", re.M)
FULL_LOG = re.compile(r"^  Full log \(.*\): (\S+)", re.M)
END_OF_BANNER = "Ctrl-C stops everything."
PASSES = 3
WAIT_S = 120  # a bound only: each wait ends as soon as what it waits for is there


@dataclass
class Console:
    path: Path  # the stack's stdout
    full_log: Path  # the file its banner names
    api_url: str
    process: subprocess.Popen[bytes]

    def lines(self) -> list[str]:
        return self.path.read_text(errors="replace").splitlines()

    def passes(self) -> int:
        """Reconciler invocations so far, by their REPORT lines in the full log."""
        text = self.full_log.read_text(errors="replace")
        return len(re.findall(r"^\[ReconcilerFunction\] REPORT RequestId: ", text, re.M))

    def wait_for(self, condition: Callable[[], bool], what: str) -> None:
        """Until `condition` holds (checked as the stack writes); WAIT_S bounds it only."""
        deadline = time.monotonic() + WAIT_S
        while not condition():
            assert self.process.poll() is None, f"the stack exited ({what})"
            assert time.monotonic() < deadline, f"no {what} within {WAIT_S} s"
            time.sleep(0.05)


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    if os.environ.get(STATE_ENV):  # the marker skips first; this guards a direct use
        pytest.skip(f"local stack only: {LOCAL_ONLY}")
    workdir = tmp_path_factory.mktemp("console")
    stdout, full_log = workdir / "console.txt", workdir / "full.log"
    env = {
        **{k: v for k, v in os.environ.items() if k not in ("VERBOSE", "LOCAL_API_KEYS")},
        "LOCAL_STACK_LOG": str(full_log),
        "LOCAL_SCHEDULE_PERIOD_S": "0.2",
        "LOCAL_STACK_EXIT_WITH_PARENT": "1",
        "LOCAL_PROCESS_POLLERS": "1",
        "LOCAL_API_WORKERS": "1",
        "LOCAL_API_KEY": "",
    }
    with stdout.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "local_stack", "--port", "0", "--aws-port", "0"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        starting = Console(stdout, full_log, "", process)
        starting.wait_for(lambda: END_OF_BANNER in stdout.read_text(), "ready banner")
        text = stdout.read_text()
        ready, named = READY.search(text), FULL_LOG.search(text)
        assert ready and named, text[-3000:]
        assert Path(named.group(1)) == full_log.resolve()  # LOCAL_STACK_LOG, named in full
        yield Console(stdout, Path(named.group(1)), ready.group(1), process)
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_an_idle_stack_prints_nothing_across_reconciler_passes(console: Console) -> None:
    banner = console.lines()
    before = console.passes()

    console.wait_for(lambda: console.passes() >= before + PASSES, f"{PASSES} reconciler passes")

    assert console.lines() == banner
    full = console.full_log.read_text()
    assert "[ReconcilerFunction] START RequestId: " in full
    assert re.search(r'^\[ReconcilerFunction\] \{"_aws"', full, re.M)  # its metric blobs
    assert '"message":"reconcile pass done"' in full  # its INFO line


def test_a_request_is_one_console_line(console: Console) -> None:
    before = console.lines()

    response = requests.get(console.api_url + "/api/status", params={"jobid": "nope"}, timeout=30)

    console.wait_for(lambda: len(console.lines()) > len(before), "console line for the request")
    new = console.lines()[len(before) :]
    assert len(new) == 1, new
    assert re.fullmatch(
        rf"\[api\] GET /api/status\?jobid=nope -> {response.status_code} \(\d+ ms\)", new[0]
    )
