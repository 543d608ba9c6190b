"""The store import as a command: run the import, show its progress and report, and say
how it went in an exit status.

Every entry point comes here: `python -m retail_pulse_admin.stores import`, `retail-pulse stores
import` and the local stack's start-up import, so all of them print the same lines and
exit with the same status. Each passes an ImportOutput to show things its own way (the
command line adds a progress bar and a table at a terminal); PlainOutput prints lines.

Exit status: 0 stores loaded and no row rejected; 1 some rows rejected (the good ones are
still loaded) or no stores in the file; 2 the file cannot be read; 3 the table could not
be written.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Protocol

from retail_pulse.settings import get_settings
from retail_pulse_admin.stores.importer import ImportReport, StoreTableError, import_stores
from retail_pulse_admin.stores.master import Rejection, StoreMasterError

EXIT_OK = 0
EXIT_REJECTED = 1
EXIT_USAGE = 2
EXIT_TABLE = 3


class ImportOutput(Protocol):
    """Where an import's progress, results and messages go."""

    def progress(self, done: int, total: int) -> None:
        """`done` of `total` stores written so far."""

    def result(self, line: str) -> None:
        """A line of the report: what a script reads (stdout)."""

    def rejections(self, rejected: Sequence[Rejection]) -> None:
        """The rows that were not loaded, each with its line and reason."""

    def message(self, line: str) -> None:
        """A line for the person, never part of the report (stderr)."""


class PlainOutput:
    """Plain lines: the report on stdout; messages, and progress at each tenth of the way,
    on stderr. The streams are looked up at each call, so captured streams work."""

    def __init__(self) -> None:
        self._last_tenth = -1

    def progress(self, done: int, total: int) -> None:
        tenth = done * 10 // total if total else 10
        if tenth != self._last_tenth:
            self._last_tenth = tenth
            self.message(f"writing stores: {done}/{total}")

    def result(self, line: str) -> None:
        print(line, flush=True)

    def rejections(self, rejected: Sequence[Rejection]) -> None:
        for rejection in rejected:
            self.result(f"line {rejection.line}: {rejection.reason}")

    def message(self, line: str) -> None:
        print(line, file=sys.stderr, flush=True)


def run_import(path: str | os.PathLike[str], output: ImportOutput | None = None) -> int:
    """Import the store master at `path` into the Stores table named by the environment
    (STORES_TABLE, AWS_REGION, AWS_ENDPOINT_URL) and return the exit status."""
    output = output or PlainOutput()
    settings = get_settings()
    where = settings.dynamodb_endpoint or f"AWS {settings.region}"
    output.message(f"Importing {os.fspath(path)} into table {settings.stores_table} at {where}")
    try:
        report = import_stores(path, on_progress=output.progress)
    except StoreMasterError as error:
        output.message(f"error: {error}")
        return EXIT_USAGE
    except StoreTableError as error:
        output.message(f"error: {error}")
        return EXIT_TABLE
    for line in summary(report):
        output.result(line)
    output.rejections(report.rejected)
    if report.ok:
        return EXIT_OK
    if not report.rejected:
        output.message(f"error: no stores found in {os.fspath(path)}")
    return EXIT_REJECTED


def summary(report: ImportReport) -> list[str]:
    """The counts a person checks after an import, in words."""
    lines = [
        f"Read {_count(report.read, 'row')}, loaded {_count(report.loaded, 'store')}, "
        f"rejected {_count(len(report.rejected), 'row')}"
    ]
    if report.duplicates:
        lines.append(
            f"{_count(report.duplicates, 'row')} repeated an earlier store exactly and loaded once"
        )
    return lines


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"
