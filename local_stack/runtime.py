"""Function workers: child processes that run handlers as Lambda execution environments do.

Each worker has exactly the function's resolved template environment plus what the Lambda
runtime itself sets, its own module namespace and its own memory (reported as Max Memory
Used). A worker whose handler overruns the function's Timeout is killed and replaced on
the next invocation, as Lambda replaces a timed-out environment.
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

from local_stack.aws import DUMMY_CREDENTIALS
from local_stack.logs import LogRelay, MetricTotals, wants_colour
from local_stack.model import FunctionSpec
from local_stack.template import REGION
from local_stack.worker import recv_frame, send_frame

log = logging.getLogger("local_stack")

# Generous: on 2 cores, a dozen workers import boto3 and Powertools at once.
INIT_TIMEOUT_S = 60.0
# How long an invocation waits for its REPORT line to come through the pipe: a bound only,
# so a worker that dies mid-line cannot hang a request.
REPORT_WAIT_S = 10.0


class LogSink:
    """Every worker's output, line by line, prefixed with the function's logical id, and the
    stack's own lines (local_stack/logs.py says what each line becomes).

    `stream` gets every line: the full log (readable and coloured at a terminal, unchanged
    in a file or pipe). `console`, when given, gets only what a person watching acts on: one
    line per API request, the stack's own lines, and the functions' warnings and errors, one
    readable line each (coloured at a terminal). `python -m local_stack` writes the full log
    to a file and the console to stdout (VERBOSE=1: everything to stdout, no console). The
    metrics the lines carry are kept in `metrics`."""

    def __init__(
        self,
        stream: TextIO | None = None,
        colour: bool | None = None,
        console: TextIO | None = None,
        console_colour: bool | None = None,
    ) -> None:
        self._stream = stream or sys.stdout
        self._console = console
        self._lock = threading.Lock()
        self._relay = LogRelay(
            wants_colour(self._stream) if colour is None else colour,
            (wants_colour(console) if console is not None else False)
            if console_colour is None
            else console_colour,
        )

    @property
    def metrics(self) -> MetricTotals:
        return self._relay.metrics

    def write(self, source: str, line: str) -> None:
        text, shown = self._relay.route(source, line)
        with self._lock:
            self._stream.write(text + "\n")
            self._stream.flush()
            if shown is not None and self._console is not None:
                self._console.write(shown + "\n")
                self._console.flush()

    def request(
        self, method: str, path: str, status: int, duration_ms: float, client: str | None
    ) -> None:
        """One API request's line, in the full log and on the console."""
        text = self._relay.formatter.request(method, path, status, duration_ms, client)
        with self._lock:
            self._stream.write(text + "\n")
            self._stream.flush()
            if self._console is not None:
                shown = self._relay.console_formatter.request(
                    method, path, status, duration_ms, client
                )
                self._console.write(shown + "\n")
                self._console.flush()

    def raw(self, line: str) -> None:
        """A line as it is (the ready banner, an EventBridge event), everywhere."""
        with self._lock:
            self._stream.write(line + "\n")
            self._stream.flush()
            if self._console is not None:
                self._console.write(line + "\n")
                self._console.flush()


@dataclass
class Invocation:
    """The outcome of one invocation: `payload` when ok, else Lambda's error shape."""

    request_id: str
    ok: bool
    payload: Any = None
    error: dict[str, Any] = field(default_factory=dict)
    duration_ms: float = 0.0
    timed_out: bool = False


def worker_environment(spec: FunctionSpec) -> dict[str, str]:
    """The template environment plus the variables the Lambda runtime adds, and nothing
    from the shell that started the stack (no AWS profile, no stray endpoint)."""
    log_stream = time.strftime("%Y/%m/%d") + "/[$LATEST]" + uuid.uuid4().hex
    runtime_vars = {
        "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
        "LANG": "en_US.UTF-8",
        "TZ": ":UTC",
        **DUMMY_CREDENTIALS,
        "AWS_REGION": REGION,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_LAMBDA_FUNCTION_NAME": spec.name,
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(spec.memory_mb),
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{spec.name}",
        "AWS_LAMBDA_LOG_STREAM_NAME": log_stream,
        "AWS_EXECUTION_ENV": f"AWS_Lambda_{spec.runtime}",
        "LAMBDA_TASK_ROOT": str(spec.code_dir),
        "_HANDLER": spec.handler,
        # There is no X-Ray daemon on this machine.
        "POWERTOOLS_TRACE_DISABLED": "true",
    }
    return {**runtime_vars, **spec.environment}


class Worker:
    """One execution environment: a child process and the socket that feeds it events."""

    def __init__(self, spec: FunctionSpec, env: dict[str, str], sink: LogSink) -> None:
        self.spec = spec
        self._sink = sink
        parent_sock, child_sock = socket.socketpair()
        self._sock = parent_sock
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "local_stack.worker",
                str(os.getpid()),
                str(child_sock.fileno()),
                spec.handler,
                spec.arn,
            ],
            cwd=spec.code_dir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            pass_fds=[child_sock.fileno()],
            text=True,
            errors="replace",
        )
        child_sock.close()
        # Invocations whose REPORT line the pump has not relayed yet, by request id.
        self._reports: dict[str, threading.Event] = {}
        self._reports_lock = threading.Lock()
        self._reader = threading.Thread(
            target=self._pump_output, name=f"log-{spec.logical_id}", daemon=True
        )
        self._reader.start()
        self.init: dict[str, Any] | None = None

    def _pump_output(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._sink.write(self.spec.logical_id, line.rstrip("\n"))
            if line.startswith("REPORT RequestId: "):
                request_id = line.removeprefix("REPORT RequestId: ").split("\t", 1)[0].strip()
                with self._reports_lock:
                    reported = self._reports.pop(request_id, None)
                if reported is not None:
                    reported.set()

    def wait_init(self, timeout_s: float = INIT_TIMEOUT_S) -> dict[str, Any]:
        """The init phase's outcome; an import error is reported, not raised, as Lambda does."""
        if self.init is None:
            self._sock.settimeout(timeout_s)
            try:
                self.init = recv_frame(self._sock) or {
                    "ok": False,
                    "error": {
                        "errorType": "Runtime.ExitError",
                        "errorMessage": "Runtime exited during init",
                    },
                }
            except TimeoutError:
                self.kill()
                self.init = {
                    "ok": False,
                    "error": {"errorType": "Sandbox.Timedout", "errorMessage": "init timed out"},
                }
            if not self.init["ok"]:
                log.error("%s init failed: %s", self.spec.logical_id, self.init["error"])
        return self.init

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def invoke(self, event: Any) -> Invocation:
        request_id = str(uuid.uuid4())
        self.wait_init()
        timeout_s = self.spec.timeout_s
        reported = threading.Event()
        with self._reports_lock:
            self._reports[request_id] = reported
        try:
            self._sock.settimeout(None)
            send_frame(
                self._sock, {"request_id": request_id, "event": event, "timeout_s": timeout_s}
            )
            self._sock.settimeout(timeout_s)
            reply = recv_frame(self._sock)
            # The reply comes over the socket, the function's lines over its stdout pipe: an
            # invocation is over once its REPORT line is relayed, so everything it printed is
            # in the log before its caller (an API response, a poller) moves on.
            if reply is not None:
                reported.wait(REPORT_WAIT_S)
        except TimeoutError:
            return self._timed_out(request_id, timeout_s)
        except OSError:
            reply = None
        finally:
            with self._reports_lock:
                self._reports.pop(request_id, None)
        if reply is None:
            self.kill()
            return Invocation(
                request_id,
                False,
                error={
                    "errorType": "Runtime.ExitError",
                    "errorMessage": f"RequestId: {request_id} Error: Runtime exited "
                    f"with error: exit status {self.process.returncode}",
                },
            )
        return Invocation(
            request_id,
            reply["ok"],
            reply.get("payload"),
            reply.get("error") or {},
            reply.get("duration_ms", 0.0),
        )

    def _timed_out(self, request_id: str, timeout_s: float) -> Invocation:
        self.kill()
        self._reader.join(timeout=2)  # the handler's last lines before ours
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
        message = f"{stamp}Z {request_id} Task timed out after {timeout_s:.2f} seconds"
        name = self.spec.logical_id
        self._sink.write(name, message)
        self._sink.write(name, f"END RequestId: {request_id}")
        self._sink.write(
            name,
            f"REPORT RequestId: {request_id}\tDuration: {timeout_s * 1000:.2f} ms\t"
            f"Billed Duration: {int(timeout_s * 1000)} ms\tMemory Size: {self.spec.memory_mb} MB"
            f"\tMax Memory Used: {self.spec.memory_mb} MB\tStatus: timeout",
        )
        return Invocation(
            request_id,
            False,
            error={"errorType": "Sandbox.Timedout", "errorMessage": message},
            duration_ms=timeout_s * 1000,
            timed_out=True,
        )

    def kill(self) -> None:
        if self.alive:
            self.process.kill()
        self.process.wait()
        self._sock.close()

    def begin_close(self) -> None:
        """Closing the socket ends the worker's loop once its invocation (if any) is over."""
        self._sock.close()

    def close(self, grace_s: float = 2.0) -> None:
        """End the worker; kill it if it has not exited within `grace_s`."""
        self._sock.close()
        try:
            self.process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._reader.join(timeout=1)


class Slot:
    """A place for one execution environment, started on its first invocation (as Lambda
    starts one when a request or an event source's batch finds none free) and started again
    when its worker dies or times out. A poller or a pool slot that is never used costs no
    process, and the stack is ready before any function has been imported."""

    def __init__(self, spawn: Callable[[], Worker]) -> None:
        self._spawn = spawn
        self._lock = threading.Lock()
        self._closed = False
        self.worker: Worker | None = None

    def invoke(self, event: Any) -> Invocation:
        with self._lock:
            if self._closed:  # stopping: start nothing the stop would miss
                return Invocation(
                    "",
                    False,
                    error={"errorType": "Runtime.Stopped", "errorMessage": "stack stopping"},
                )
            if self.worker is None or not self.worker.alive:
                self.worker = self._spawn()  # a cold start
            worker = self.worker
        return worker.invoke(event)

    def close(self) -> Worker | None:
        """Start no environment from now on; the one it has, if any, for the caller to stop."""
        with self._lock:
            self._closed = True
            return self.worker


class FunctionRuntime:
    """A function's shared pool (API and schedule invocations) and its pollers' workers.

    Like Lambda scaling out, the pool adds an environment (a cold start) when a request finds
    them all busy, up to `pool_size`.
    """

    def __init__(self, spec: FunctionSpec, sink: LogSink, pool_size: int) -> None:
        self.spec = spec
        self._env = worker_environment(spec)
        self._sink = sink
        self._slots: list[Slot] = []
        self._idle: queue.Queue[Slot] = queue.Queue()
        self._lock = threading.Lock()
        self._pool_size = pool_size
        self._pooled = 0

    def new_slot(self) -> Slot:
        """A dedicated environment, e.g. for one SQS poller."""
        slot = Slot(lambda: Worker(self.spec, self._env, self._sink))
        with self._lock:
            self._slots.append(slot)
        return slot

    def invoke(self, event: Any) -> Invocation:
        """Invoke on a free environment of the shared pool, scaling out or waiting if none."""
        try:
            slot = self._idle.get_nowait()
        except queue.Empty:
            with self._lock:
                grow = self._pooled < self._pool_size
                if grow:
                    self._pooled += 1
            slot = self.new_slot() if grow else self._idle.get()
        try:
            return slot.invoke(event)
        finally:
            self._idle.put(slot)

    def stop(self, grace_s: float = 2.0) -> None:
        """Stop every worker; they all get the same `grace_s`, not one after another."""
        with self._lock:
            slots, self._slots = self._slots, []
        workers = [worker for slot in slots if (worker := slot.close()) is not None]
        for worker in workers:
            worker.begin_close()
        deadline = time.monotonic() + grace_s
        for worker in workers:
            worker.close(max(0.0, deadline - time.monotonic()))
