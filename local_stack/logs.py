"""What the workers print, made readable for a person and counted like CloudWatch would.

A worker's output is Powertools' JSON log lines, Powertools' EMF metric blobs (also JSON,
recognised by their `_aws` key), Lambda's START/END/REPORT lines and the odd traceback.
On a terminal every line becomes one short line, coloured by level; piped (to a file, to
`jq`, to a test) lines pass through unchanged, so the JSON stays machine-readable. Either
way the EMF blobs are totalled per metric name and per dimension, which is what
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
    """One output line per input line: readable and coloured, or the input as it was."""

    def __init__(self, colour: bool) -> None:
        self.colour = colour

    def format(self, source: str, line: str, record: dict[str, Any] | None = None) -> str:
        if not self.colour:
            return f"[{source}] {line}"
        prefix = f"{_SOURCE}[{source}]{_RESET} "
        if record is not None and is_emf(record):
            return prefix + self._metrics(record)
        if record is not None and "level" in record and "message" in record:
            return prefix + self._log(record)
        if line.startswith(("START RequestId:", "END RequestId:", "REPORT RequestId:")):
            return f"{prefix}{_DIM}{line}{_RESET}"
        return prefix + line

    def _log(self, record: dict[str, Any]) -> str:
        level = str(record["level"]).upper()
        # Powertools' "2026-11-28 10:15:00,123+0000": the time of day is what a person follows.
        stamp = str(record.get("timestamp", ""))[11:23].replace(",", ".")
        colour = _LEVELS.get(level, "")
        message = f"{_BOLD}{record['message']}{_RESET}"
        text = f"{_DIM}{stamp}{_RESET} {colour}{level:<7}{_RESET} {message}"
        extras = [
            f"{_DIM}{key}={_RESET}{_short(value)}"
            for key, value in record.items()
            if key not in _QUIET_KEYS
        ]
        if extras:
            text += "  " + " ".join(extras)
        if record.get("exception"):
            last = str(record["exception"]).strip().splitlines()[-1]
            text += f"  {_LEVELS['ERROR']}{_short(last)}{_RESET}"
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
    """What the log sink does with each line: count its metrics, then format it."""

    def __init__(self, colour: bool) -> None:
        self.formatter = LineFormatter(colour)
        self.metrics = MetricTotals()

    def relay(self, source: str, line: str) -> str:
        record = parse_json_line(line)
        if record is not None and is_emf(record):
            self.metrics.observe(record)
        return self.formatter.format(source, line, record)
