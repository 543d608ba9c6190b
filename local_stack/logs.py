"""What the workers print: the whole of it for the log file, one readable line per event
worth a person's attention for the console, and the metrics in it counted like CloudWatch.

A worker's output is Powertools' JSON log lines, Powertools' EMF metric blobs (also JSON,
recognised by their `_aws` key), Lambda's START/END/REPORT lines and the odd traceback.

- The full log (`LineFormatter.format`) keeps every line, prefixed with its source. At a
  terminal each line becomes one short line, coloured by level; in a file or a pipe lines
  pass through unchanged, so the JSON stays machine-readable (the benchmark and the
  end-to-end tests read REPORT and JSON lines from it).
- The console (`LineFormatter.console`) shows what a person watching `make run` acts on:
  one line per API request (api_gateway.py writes it) and each function's warnings and
  errors, one readable line each (a Powertools line of level WARNING or above, the
  runtime's `[ERROR] ...` line for an unhandled exception, a timeout). Routine INFO lines,
  metric blobs, START/END/REPORT and the lines of a traceback stay in the full log, so an
  idle stack, whose reconciler runs every few seconds, prints nothing.
- Either way the EMF blobs are totalled per metric name and per dimension, which is what
  `GET /local/metrics` answers: locally, the numbers the CloudWatch dashboard would show.
"""

from __future__ import annotations

import json
import os
import threading
from typing import Any, TextIO

# Keys every Powertools line carries: shown by position (time, level, message) or not at all.
_QUIET_KEYS = {
    "level",
    "location",
    "message",
    "timestamp",
    "service",
    "cold_start",
    "function_name",
    "function_memory_size",
    "function_arn",
    "function_request_id",
    "xray_trace_id",
    "sampling_rate",
    "exception",
    "exception_name",
    "stack_trace",
}
# Dimensions every blob has: a breakdown by them would only repeat the total.
_UNSPLIT_DIMENSIONS = {"service"}
_MAX_VALUE_CHARS = 200
# Levels a function's line must have to reach the console.
_CONSOLE_LEVELS = {"WARNING", "WARN", "ERROR", "CRITICAL"}
# Lambda's own lines around every invocation: the full log only.
_INVOCATION_LINES = ("START RequestId:", "END RequestId:", "REPORT RequestId:")
# What the Python runtime prints for an unhandled exception ("[ERROR] Type: message", then
# the traceback), and a traceback printed on its own (an import error at init).
_RUNTIME_ERROR = ("[ERROR] ", "[CRITICAL] ", "[WARNING] ")
_TRACEBACK = "Traceback (most recent call last):"
# The line the stack writes when an invocation overran the function's timeout.
_TIMED_OUT = " Task timed out after "
# Sources that are the stack itself, not a function: each of their lines is for the console.
STACK_SOURCES = frozenset(("local-stack", "api"))

_RESET = "\033[0m"
_DIM = "\033[2m"
_BOLD = "\033[1m"
_SOURCE = "\033[36m"  # cyan
_METRIC = "\033[35m"  # magenta
_LEVELS = {
    "DEBUG": "\033[2m",
    "INFO": "\033[32m",  # green
    "WARNING": "\033[33m",  # yellow
    "ERROR": "\033[31m",  # red
    "CRITICAL": "\033[1;31m",
}


def wants_colour(stream: TextIO) -> bool:
    """Colour for a person at a terminal; never in a pipe or file, nor when NO_COLOR is set
    (https://no-color.org)."""
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty()) and not os.environ.get("NO_COLOR")


def parse_json_line(line: str) -> dict[str, Any] | None:
    """The line's JSON object, or None for anything else (cheaply: most lines are not)."""
    if not line.startswith("{"):
        return None
    try:
        value = json.loads(line)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def is_emf(record: dict[str, Any]) -> bool:
    aws = record.get("_aws")
    return isinstance(aws, dict) and isinstance(aws.get("CloudWatchMetrics"), list)


def emf_values(record: dict[str, Any]) -> list[tuple[str, str, str, list[float], dict[str, str]]]:
    """(namespace, name, unit, values, dimensions) of each metric of one EMF blob. A value
    is a number or, when a metric was added several times in one invocation, a list."""
    found = []
    for directive in record["_aws"]["CloudWatchMetrics"]:
        names = {name for group in directive.get("Dimensions") or [] for name in group}
        dimensions = {name: str(record[name]) for name in sorted(names) if name in record}
        for metric in directive.get("Metrics") or []:
            raw = record.get(metric.get("Name"))
            values = raw if isinstance(raw, list) else [raw]
            numbers = [float(v) for v in values if isinstance(v, int | float)]
            if numbers:
                found.append(
                    (
                        str(directive.get("Namespace", "")),
                        metric["Name"],
                        str(metric.get("Unit", "None")),
                        numbers,
                        dimensions,
                    )
                )
    return found


class MetricTotals:
    """Running totals of every metric seen, as the dashboard would sum them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._metrics: dict[str, dict[str, Any]] = {}

    def observe(self, record: dict[str, Any]) -> None:
        with self._lock:
            for namespace, name, unit, values, dimensions in emf_values(record):
                total = self._metrics.setdefault(
                    name,
                    {
                        "namespace": namespace,
                        "unit": unit,
                        "sum": 0.0,
                        "samples": 0,
                        "min": values[0],
                        "max": values[0],
                        "by": {},
                    },
                )
                total["sum"] += sum(values)
                total["samples"] += len(values)
                total["min"] = min(total["min"], *values)
                total["max"] = max(total["max"], *values)
                for dimension, value in dimensions.items():
                    if dimension in _UNSPLIT_DIMENSIONS:
                        continue
                    split = total["by"].setdefault(dimension, {})
                    split[value] = split.get(value, 0.0) + sum(values)

    def snapshot(self) -> dict[str, Any]:
        """{"metrics": {name: {namespace, unit, sum, samples, min, max, by}}}: `by` maps a
        dimension (e.g. `reason`) to the sum per value."""
        with self._lock:
            return {"metrics": json.loads(json.dumps(self._metrics))}


class LineFormatter:
    """The full log's line for each input line (readable and coloured, or the input as it
    was), and the console's (readable, coloured or not, or nothing)."""

    def __init__(self, colour: bool) -> None:
        self.colour = colour

    def _c(self, code: str) -> str:
        return code if self.colour else ""

    def format(self, source: str, line: str, record: dict[str, Any] | None = None) -> str:
        if not self.colour:
            return f"[{source}] {line}"
        prefix = f"{_SOURCE}[{source}]{_RESET} "
        if record is not None and is_emf(record):
            return prefix + self._metrics(record)
        if record is not None and "level" in record and "message" in record:
            return prefix + self._log(record)
        if line.startswith(_INVOCATION_LINES):
            return f"{prefix}{_DIM}{line}{_RESET}"
        return prefix + line

    def console(
        self,
        source: str,
        line: str,
        record: dict[str, Any] | None = None,
        in_traceback: bool = False,
    ) -> str | None:
        """The console's one line for this input line, or None when it is for the full log
        only. `in_traceback`: the line continues a traceback its source began (whose
        `[ERROR]` line, if any, was shown)."""
        prefix = f"{self._c(_SOURCE)}[{source}]{self._c(_RESET)} "
        if source in STACK_SOURCES:
            return prefix + self._stack(line)
        if record is not None:
            if is_emf(record) or "level" not in record or "message" not in record:
                return None
            if str(record["level"]).upper() not in _CONSOLE_LEVELS:
                return None
            return prefix + self._log(record)
        if in_traceback or line.startswith(_INVOCATION_LINES) or line.startswith(_TRACEBACK):
            return None
        if line.startswith(_RUNTIME_ERROR):
            level, _, rest = line[1:].partition("] ")
            return prefix + self._level(level) + " " + _short(rest)
        if _TIMED_OUT in line:
            return prefix + self._level("ERROR") + " " + line.split(" ", 1)[-1]  # no time
        return None

    def request(
        self, method: str, path: str, status: int, duration_ms: float, client: str | None
    ) -> str:
        """One API request: method, path, status, duration and the client (the API key's id,
        the tenant) when the request had one."""
        who = f" client={client}" if client else ""
        if not self.colour:
            return f"[api] {method} {path} -> {status} ({duration_ms:.0f} ms){who}"
        shade = _LEVELS["ERROR"] if status >= 500 else _LEVELS["WARNING"] if status >= 400 else ""
        return (
            f"{_SOURCE}[api]{_RESET} {_BOLD}{method}{_RESET} {path} -> "
            f"{shade}{status}{_RESET if shade else ''} {_DIM}({duration_ms:.0f} ms){_RESET}"
            f"{_DIM}{who}{_RESET if who else ''}"
        )

    def _stack(self, line: str) -> str:
        """The stack's own line, "LEVEL message", with its level coloured; a message with a
        traceback is its first line and the exception's."""
        first, *rest = line.splitlines() or [""]
        if rest:
            first += f"  {self._c(_LEVELS['ERROR'])}{_short(rest[-1].strip())}{self._c(_RESET)}"
        level, _, message = first.partition(" ")
        if level in _LEVELS:
            return f"{self._level(level)} {message}"
        return first

    def _level(self, level: str) -> str:
        level = "WARNING" if level == "WARN" else level
        return f"{self._c(_LEVELS.get(level, ''))}{level:<7}{self._c(_RESET)}"

    def _log(self, record: dict[str, Any]) -> str:
        level = str(record["level"]).upper()
        # Powertools' "2026-11-28 10:15:00,123+0000": the time of day is what a person follows.
        stamp = str(record.get("timestamp", ""))[11:23].replace(",", ".")
        dim, reset = self._c(_DIM), self._c(_RESET)
        message = f"{self._c(_BOLD)}{record['message']}{reset}"
        text = f"{dim}{stamp}{reset} " if stamp else ""
        text += f"{self._level(level)} {message}"
        extras = [
            f"{dim}{key}={reset}{_short(value)}"
            for key, value in record.items()
            if key not in _QUIET_KEYS
        ]
        if extras:
            text += "  " + " ".join(extras)
        if record.get("exception"):
            last = str(record["exception"]).strip().splitlines()[-1]
            text += f"  {self._c(_LEVELS['ERROR'])}{_short(last)}{reset}"
        return text

    def _metrics(self, record: dict[str, Any]) -> str:
        parts = []
        for _namespace, name, unit, values, dimensions in emf_values(record):
            shown = ",".join(f"{v:g}" for v in values)
            suffix = {"Milliseconds": "ms", "Seconds": "s", "Bytes": "B"}.get(unit, "")
            split = "".join(
                f"{{{k}={v}}}" for k, v in dimensions.items() if k not in _UNSPLIT_DIMENSIONS
            )
            parts.append(f"{name}{split}={shown}{suffix}")
        return f"{_METRIC}metrics{_RESET} {_DIM}{' '.join(parts)}{_RESET}"


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= _MAX_VALUE_CHARS else text[: _MAX_VALUE_CHARS - 1] + "…"


class LogRelay:
    """What the log sink does with each line: count its metrics, then format it for the
    full log and for the console.

    A traceback is several lines; the console shows none of them (its `[ERROR]` line says
    what failed). Each worker's lines come through one thread (its output pump), so whether
    a line continues a traceback is remembered per thread, not per function, whose workers
    print side by side."""

    def __init__(self, colour: bool, console_colour: bool | None = None) -> None:
        self.formatter = LineFormatter(colour)
        self.console_formatter = LineFormatter(colour if console_colour is None else console_colour)
        self.metrics = MetricTotals()
        self._traceback = threading.local()

    def relay(self, source: str, line: str) -> str:
        """The full log's line (and the metrics counted)."""
        return self.route(source, line)[0]

    def route(self, source: str, line: str) -> tuple[str, str | None]:
        """(the full log's line, the console's line or None), the metrics counted."""
        record = parse_json_line(line)
        if record is not None and is_emf(record):
            self.metrics.observe(record)
        in_traceback = getattr(self._traceback, "active", False)
        if record is not None or line.startswith(_INVOCATION_LINES):
            self._traceback.active = False  # the function is past its traceback
        elif line.startswith(_RUNTIME_ERROR) or line.startswith(_TRACEBACK):
            self._traceback.active = True
        shown = self.console_formatter.console(source, line, record, in_traceback)
        return self.formatter.format(source, line, record), shown
