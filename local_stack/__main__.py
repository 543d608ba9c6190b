"""`python -m local_stack`: run the stack until Ctrl-C or SIGTERM.

Prints one line `Retail Pulse local stack ready at http://127.0.0.1:<port>` (tests parse
it) followed by example requests and where the full log is. After that the console shows
one line per API request and the functions' warnings and errors; the full log (every
function's lines: its JSON, metric blobs, START/END/REPORT) goes to a file, LOCAL_STACK_LOG
or a new one in the temporary directory. VERBOSE=1 prints the full log on the console
instead, as the benchmark and the end-to-end tests, which read it, run the stack.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from local_stack.runtime import LogSink
from local_stack.stack import LocalStack, StackConfig

READY_PREFIX = "Retail Pulse local stack ready at "
EXAMPLE_STORE = "S00339218"
FULL_LOG_PREFIX = "  Full log (every function line, metrics, REPORT lines): "


class _SinkHandler(logging.Handler):
    """The stack's own log lines go through the same sink as the functions', whole lines."""

    def __init__(self, sink: LogSink) -> None:
        super().__init__()
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        self.sink.write("local-stack", self.format(record))


@dataclass
class Output:
    """Where the stack's lines go: the console, and the full log's file (None: VERBOSE,
    the full log is the console)."""

    log_file: Path | None
    verbose: bool


def _env_path(name: str) -> Path | None:
    value = os.environ.get(name, "").strip()
    return Path(value) if value else None


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def parse_args(argv: list[str] | None) -> tuple[StackConfig, Output]:
    config = StackConfig.from_env()
    parser = argparse.ArgumentParser(prog="python -m local_stack", description=__doc__)
    parser.add_argument(
        "--port",
        type=int,
        default=config.port,
        help="API port on 127.0.0.1; 0 picks a free one (env PORT, 3000)",
    )
    parser.add_argument(
        "--aws-port",
        type=int,
        default=config.aws_port,
        help="the AWS endpoint's port (MiniStack); 0 picks a free one (env LOCAL_AWS_PORT, 0)",
    )
    parser.add_argument(
        "--pollers",
        type=int,
        default=config.pollers,
        help="pollers per work-queue SQS source (env LOCAL_PROCESS_POLLERS, 4)",
    )
    parser.add_argument(
        "--api-workers",
        type=int,
        default=config.api_workers,
        help="workers per API function (env LOCAL_API_WORKERS, 2)",
    )
    parser.add_argument(
        "--template",
        type=Path,
        default=config.template,
        help="SAM template (env LOCAL_TEMPLATE, the repo's template.yaml)",
    )
    parser.add_argument(
        "--state-file",
        type=Path,
        default=config.state_file,
        help="write endpoints, queue URLs and table names here as JSON "
        "(env LOCAL_STACK_STATE_FILE)",
    )
    parser.add_argument(
        "--log-file",
        type=Path,
        default=_env_path("LOCAL_STACK_LOG"),
        help="write the full log here (env LOCAL_STACK_LOG; default: a new file in the "
        "temporary directory); the console shows requests, warnings and errors",
    )
    parser.add_argument(
        "--verbose",
        action="store_true",
        default=_env_flag("VERBOSE"),
        help="print the full log on the console instead of to a file (env VERBOSE=1)",
    )
    parser.add_argument(
        "--parameter",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a template parameter (repeatable)",
    )
    args = parser.parse_args(argv)
    config.port, config.aws_port, config.pollers = args.port, args.aws_port, args.pollers
    config.api_workers, config.template, config.state_file = (
        args.api_workers,
        args.template.resolve(),
        args.state_file,
    )
    for item in args.parameter:
        key, _, value = item.partition("=")
        config.parameter_overrides[key] = value
    return config, Output(args.log_file, args.verbose)


def open_sink(output: Output, console: TextIO) -> tuple[LogSink, Path | None]:
    """The sink for `output`: (it, the full log's path, None when it is the console)."""
    if output.verbose:
        return LogSink(console), None
    path = output.log_file
    if path is None:
        handle, name = tempfile.mkstemp(prefix="retail-pulse-local-", suffix=".log")
        os.close(handle)
        path = Path(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    full = path.open("w", encoding="utf-8")  # open as long as the stack runs
    return LogSink(full, colour=False, console=console), path.resolve()


def _exit_with_parent(stopping: threading.Event) -> None:
    """LOCAL_STACK_EXIT_WITH_PARENT=1: stop cleanly if whoever started us dies (tests)."""
    parent = os.getppid()

    def watch() -> None:
        while not stopping.is_set():
            if os.getppid() != parent:
                stopping.set()
            time.sleep(0.5)

    threading.Thread(target=watch, daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    config, output = parse_args(argv)
    sink, log_path = open_sink(output, sys.stdout)
    handler = _SinkHandler(sink)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logging.getLogger("local_stack").addHandler(handler)
    logging.getLogger("local_stack").setLevel(logging.INFO)

    stopping = threading.Event()
    interrupts = 0

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal interrupts
        interrupts += 1
        if interrupts > 1:
            os._exit(130)  # a second Ctrl-C: children follow via their parent watch
        stopping.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    if os.environ.get("LOCAL_STACK_EXIT_WITH_PARENT") == "1":
        _exit_with_parent(stopping)

    stack = LocalStack(config, sink)
    try:
        endpoints = stack.start()
    except Exception as error:
        logging.getLogger("local_stack").exception("local stack failed to start: %s", error)
        if log_path is not None:
            sink.raw(f"{FULL_LOG_PREFIX}{log_path}")
        return 1
    api = endpoints.api_url
    sink.raw(
        f"{READY_PREFIX}{api} (AWS endpoint {endpoints.aws_endpoint_url}, "
        f"DynamoDB {endpoints.dynamodb_endpoint_url})"
    )
    sink.raw(
        f"  curl -s -X POST {api}/api/submit/ -H 'Content-Type: application/json' -d "
        f'\'{{"count": 1, "visits": [{{"store_id": "{EXAMPLE_STORE}", '
        f'"image_url": ["https://www.gstatic.com/webp/gallery/2.jpg"], '
        f'"visit_time": "2026-11-28T10:15:00Z"}}]}}\''
    )
    sink.raw(f"  curl -s '{api}/api/status?jobid=<job_id>'")
    # Each client's own, made on first use: what its webhook receiver verifies with.
    sink.raw(f"  curl -s '{api}/api/webhook-secret'   # your webhook signing secret")
    # A job too large for a body (README: "Jobs too large for a body: uploads").
    sink.raw(
        f"  curl -s -X POST {api}/api/uploads   # then POST the job file to its upload_url "
        'with its upload_fields, and submit {"upload_id": ...}; '
        "retail-pulse submit does it for a large file"
    )
    if log_path is not None:
        sink.raw(f"{FULL_LOG_PREFIX}{log_path}  (VERBOSE=1 prints it here)")
    sink.raw("  Ctrl-C stops everything.")
    while not stopping.wait(1):
        pass
    stack.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
