"""Read a job from a file: a SPEC submit body (JSON) or a CSV of one image per row.

Every problem is found before anything is sent, and each one names the line to fix: a job
of thousands of rows should fail on the desk, not halfway through the service. The checks
are the service's rules as `checks` restates them (the client needs no service package),
so a file that passes here is not turned away with a 400 later, short of the store ids,
which only the service knows.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from retail_pulse_client.checks import (
    VISIT_FIELDS,
    Limits,
    field_problems,
    job_problem,
    parse_timestamp,
    url_problem,
)

CSV_COLUMNS = VISIT_FIELDS
# Beyond this many, more messages bury the first ones; the count says how many were left.
MAX_REPORTED = 10


class JobFileError(Exception):
    """The file cannot become a job; `problems` are sentences, each naming its line."""

    def __init__(self, path: Path, problems: list[str]) -> None:
        self.path = path
        self.problems = problems
        shown = problems[:MAX_REPORTED]
        if len(problems) > MAX_REPORTED:
            shown.append(f"... and {len(problems) - MAX_REPORTED} more problems")
        super().__init__(f"{path}: " + "\n  ".join(shown))


@dataclass(frozen=True)
class Job:
    """A validated submit body, ready to send."""

    payload: dict[str, Any]

    @property
    def visits(self) -> int:
        return len(self.payload["visits"])

    @property
    def images(self) -> int:
        return sum(len(visit["image_url"]) for visit in self.payload["visits"])


def load_job(path: Path, limits: Limits | None = None) -> Job:
    """A `.csv` file is read as CSV, anything else as JSON unless it does not look like it.

    `limits` are the service's (by default its defaults, or the MAX_* variables)."""
    limits = limits or Limits.from_env()
    try:
        text = path.read_text(encoding="utf-8-sig")  # tolerate the BOM spreadsheets write
    except FileNotFoundError:
        raise JobFileError(path, ["no such file"]) from None
    except (OSError, UnicodeDecodeError) as error:
        raise JobFileError(path, [f"cannot be read: {error}"]) from None
    if not text.strip():
        raise JobFileError(path, ["the file is empty"])
    is_csv = path.suffix.lower() == ".csv" or (
        path.suffix.lower() != ".json" and not text.lstrip().startswith("{")
    )
    payload = _payload_from_csv(path, text, limits) if is_csv else _payload_from_json(path, text)
    _validate(path, payload, limits, from_csv=is_csv)
    return Job(payload)


def _payload_from_json(path: Path, text: str) -> dict[str, Any]:
    try:
        payload = json.loads(text)
    except json.JSONDecodeError as error:
        raise JobFileError(
            path, [f"line {error.lineno}, column {error.colno}: not valid JSON ({error.msg})"]
        ) from None
    if not isinstance(payload, dict):
        raise JobFileError(path, ['the JSON must be an object: {"count": N, "visits": [...]}'])
    return payload


def _payload_from_csv(path: Path, text: str, limits: Limits) -> dict[str, Any]:
    """One row per image; rows of the same store and visit time form one visit, visits in
    the order they first appear."""
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = [(name or "").strip().lower() for name in reader.fieldnames or []]
    missing = [column for column in CSV_COLUMNS if column not in header]
    if missing:
        raise JobFileError(
            path,
            [
                f"line 1: missing column{'s' if len(missing) > 1 else ''} {', '.join(missing)}; "
                f"the header must name {','.join(CSV_COLUMNS)}"
            ],
        )
    reader.fieldnames = header
    problems: list[str] = []
    visits: dict[tuple[str, datetime], dict[str, Any]] = {}
    for row in reader:
        line = reader.line_num
        if None in row:
            problems.append(f"line {line}: more fields than the header has columns")
            continue
        values = {column: (row.get(column) or "").strip() for column in CSV_COLUMNS}
        empty = [column for column in CSV_COLUMNS if not values[column]]
        if empty:
            problems.append(f"line {line}: {' and '.join(empty)} is empty")
            continue
        try:
            moment = parse_timestamp(values["visit_time"])
        except ValueError as error:
            problems.append(f"line {line}: visit_time {error}")
            continue
        bad_url = url_problem(values["image_url"], limits)
        if bad_url:
            problems.append(f"line {line}: image_url {bad_url}")
            continue
        visit = visits.setdefault(
            (values["store_id"], moment),
            {"store_id": values["store_id"], "image_url": [], "visit_time": values["visit_time"]},
        )
        visit["image_url"].append(values["image_url"])
    if problems:
        raise JobFileError(path, problems)
    if not visits:
        raise JobFileError(path, ["no data rows after the header"])
    return {"count": len(visits), "visits": list(visits.values())}


def _validate(path: Path, payload: dict[str, Any], limits: Limits, *, from_csv: bool) -> None:
    problems = field_problems(payload, limits)
    if problems:
        raise JobFileError(path, problems)
    problem = job_problem(payload, limits)
    if problem:  # count, size limits: the whole job, not one line
        hint = " (each row is one image)" if from_csv else ""
        raise JobFileError(path, [f"{problem}{hint}"])
