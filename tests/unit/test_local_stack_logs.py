"""The local stack's log output: readable and coloured at a terminal, the raw JSON when piped,
and the EMF metrics in it totalled for GET /local/metrics."""

from __future__ import annotations

import io
import json

import pytest

from local_stack.logs import MetricTotals, wants_colour
from local_stack.runtime import LogSink

LOG_LINE = json.dumps(
    {
        "level": "INFO",
        "location": "_log_failure:151",
        "message": "image failed",
        "timestamp": "2026-11-28 10:15:00,123+0000",
        "service": "retail-pulse",
        "cold_start": False,
        "function_name": "retail-pulse-local-ProcessFunction",
        "job_id": "job-1",
        "image": "job-1/0",
        "reason": "download",
        "host": "img.example:8080",
    }
)


def emf(name: str, value: float | list[float], unit: str = "Count", **dims: str) -> str:
    """An EMF blob as Powertools prints it."""
    dimensions = {"service": "retail-pulse", **dims}
    return json.dumps(
        {
            "_aws": {
                "Timestamp": 1795948072410,
                "CloudWatchMetrics": [
                    {
                        "Namespace": "RetailPulse",
                        "Dimensions": [sorted(dimensions)],
                        "Metrics": [{"Name": name, "Unit": unit}],
                    }
                ],
            },
            **dimensions,
            name: value,
        }
    )


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_piped_output_is_the_raw_json_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    out = io.StringIO()
    sink = LogSink(out)

    sink.write("ProcessFunction", LOG_LINE)
    sink.write("ProcessFunction", emf("ImagesSucceeded", 1))

    first, second = out.getvalue().splitlines()
    assert first == f"[ProcessFunction] {LOG_LINE}"
    assert json.loads(second.removeprefix("[ProcessFunction] "))["ImagesSucceeded"] == 1
    assert "\033[" not in out.getvalue()


def test_a_terminal_gets_one_coloured_readable_line_per_event(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    out = Terminal()
    sink = LogSink(out)

    sink.write("ProcessFunction", LOG_LINE)
    sink.write("ProcessFunction", emf("DownloadTime", [12.5, 30.0], "Milliseconds"))
    sink.write("ProcessFunction", "START RequestId: abc Version: $LATEST")

    lines = out.getvalue().splitlines()
    assert len(lines) == 3
    assert all("\033[" in line for line in lines)
    plain = [_strip_colour(line) for line in lines]
    assert plain[0].startswith("[ProcessFunction] 10:15:00.123 INFO    image failed")
    for shown in ("job_id=job-1", "image=job-1/0", "reason=download", "host=img.example:8080"):
        assert shown in plain[0]
    assert "function_name" not in plain[0] and not plain[0].lstrip().startswith("{")
    assert plain[1] == "[ProcessFunction] metrics DownloadTime=12.5,30ms"
    assert plain[2] == "[ProcessFunction] START RequestId: abc Version: $LATEST"


def test_errors_stay_on_one_line_with_their_exception() -> None:
    line = json.dumps(
        {
            "level": "ERROR",
            "message": "image message failed; SQS will deliver it again",
            "exception": 'Traceback (most recent call last):\n  File "x"\nValueError: bad body',
            "exception_name": "ValueError",
        }
    )
    out = Terminal()
    LogSink(out, colour=True).write("ProcessFunction", line)

    (shown,) = out.getvalue().splitlines()
    assert _strip_colour(shown).endswith("ValueError: bad body")


def test_no_color_turns_colour_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    assert not wants_colour(Terminal())
    monkeypatch.delenv("NO_COLOR")
    assert wants_colour(Terminal())
    assert not wants_colour(io.StringIO())


def test_metrics_are_totalled_per_name_and_per_reason() -> None:
    sink = LogSink(io.StringIO())
    for line in [
        emf("ImagesSucceeded", [1, 1]),
        emf("ImagesSucceeded", 1),
        emf("ImagesFailed", 1, reason="download"),
        emf("ImagesFailed", 2, reason="not_image"),
        emf("ImagesFailed", 1, reason="download"),
        emf("ColdStart", 1, function_name="retail-pulse-local-SubmitFunction"),
        LOG_LINE,
        "REPORT RequestId: abc\tDuration: 1.00 ms",
        "{not json",
    ]:
        sink.write("ProcessFunction", line)

    totals = sink.metrics.snapshot()["metrics"]

    assert set(totals) == {"ImagesSucceeded", "ImagesFailed", "ColdStart"}
    assert (totals["ImagesSucceeded"]["sum"], totals["ImagesSucceeded"]["samples"]) == (3, 3)
    assert totals["ImagesFailed"]["sum"] == 4
    assert totals["ImagesFailed"]["by"] == {"reason": {"download": 2, "not_image": 2}}
    assert totals["ImagesSucceeded"]["by"] == {}
    assert totals["ColdStart"]["by"]["function_name"] == {"retail-pulse-local-SubmitFunction": 1}
    assert totals["ImagesFailed"]["namespace"] == "RetailPulse"


def test_a_blob_of_several_metrics_counts_each() -> None:
    blob = json.loads(emf("JobsSubmitted", 1))
    blob["_aws"]["CloudWatchMetrics"][0]["Metrics"].append({"Name": "ImagesSubmitted"})
    blob["ImagesSubmitted"] = 3
    totals = MetricTotals()

    totals.observe(blob)

    snapshot = totals.snapshot()["metrics"]
    assert (snapshot["JobsSubmitted"]["sum"], snapshot["ImagesSubmitted"]["sum"]) == (1, 3)


def _strip_colour(text: str) -> str:
    import re

    return re.sub(r"\033\[[0-9;]*m", "", text)
