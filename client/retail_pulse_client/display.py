"""How a job's progress looks: a live Rich bar on a terminal, plain lines anywhere else.

Progress goes to stderr so stdout carries only results (a job id, a final status, visits)
that a script can read. Plain lines carry no ANSI codes or carriage returns, so a CI log or
a file shows exactly what a person would want to read later.
"""

from __future__ import annotations

import sys
import time
from types import TracebackType
from typing import Self, TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.text import Text

from retail_pulse_client.client import JobStatus


def is_terminal(stream: TextIO) -> bool:
    """A live display only where a person watches: stdout and the stream itself a tty."""
    try:
        return stream.isatty() and sys.stdout.isatty()
    except (AttributeError, ValueError):  # a closed or replaced stream
        return False


class _RateColumn(ProgressColumn):
    """Images finished per second (Rich's own speed column counts bytes)."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("-- img/s" if speed is None else f"{speed:.1f} img/s", style="cyan")


class _TimeColumn(ProgressColumn):
    """Elapsed and estimated time left, in words rather than bare clock faces."""

    def render(self, task: Task) -> Text:
        text = f"{_duration(task.finished_time or task.elapsed or 0)} elapsed"
        if not task.finished and task.time_remaining is not None:
            text += f", about {_duration(task.time_remaining)} left"
        return Text(text, style="yellow")


class _CountsColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        text = Text(f"{task.fields.get('succeeded', 0)} ok", style="green")
        failed = task.fields.get("failed", 0)
        text.append(f"  {failed} failed", style="red" if failed else "dim")
        cancelled = task.fields.get("cancelled")
        if cancelled is not None:
            text.append(f"  {cancelled} cancelled", style="yellow")
        text.append(f"  of {task.total:.0f}" if task.total is not None else "", style="bold")
        return text


class _Bar:
    """A Rich progress bar on a terminal (None elsewhere), started and stopped as a context
    manager."""

    _bar: Progress | None = None

    def __enter__(self) -> Self:
        if self._bar is not None:
            self._bar.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._bar is not None:
            self._bar.stop()


class JobProgress(_Bar):
    """Show a job's progress from successive status reads; use as a context manager."""

    def __init__(self, job_id: str, stream: TextIO | None = None) -> None:
        self.job_id = job_id
        self.stream = stream or sys.stderr
        self.live = is_terminal(self.stream)
        self._started = time.monotonic()
        self._first_done: int | None = None
        self._last_line: tuple[str, int, int, int | None, int] | None = None
        self._bar: Progress | None = None
        self._task = None
        if self.live:
            self._bar = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                TaskProgressColumn(),
                _CountsColumn(),
                _RateColumn(),
                _TimeColumn(),
                console=Console(file=self.stream),
                transient=False,
            )
            self._task = self._bar.add_task(
                "waiting", total=None, succeeded=0, failed=0, cancelled=None
            )

    def update(self, status: JobStatus) -> None:
        progress = status.progress
        succeeded, failed, cancelled, total = (
            (progress.succeeded, progress.failed, progress.cancelled, progress.total)
            if progress
            else (0, 0, None, 0)
        )
        if self._bar is not None and self._task is not None:
            self._bar.update(
                self._task,
                description=status.status,
                total=total or None,
                completed=succeeded + failed + (cancelled or 0),
                succeeded=succeeded,
                failed=failed,
                cancelled=cancelled,
            )
            return
        self._plain_line(status.status, succeeded, failed, cancelled, total)

    def _plain_line(
        self, state: str, succeeded: int, failed: int, cancelled: int | None, total: int
    ) -> None:
        """One line per change; an unchanged poll prints nothing, so a long wait stays short."""
        key = (state, succeeded, failed, cancelled, total)
        if key == self._last_line:
            return
        self._last_line = key
        processed = succeeded + failed  # the rate is of images processed, never cancelled
        done = processed + (cancelled or 0)
        elapsed = time.monotonic() - self._started
        if self._first_done is None:
            self._first_done = processed  # the rate counts only what finished while we watched
        counts = f"{succeeded} succeeded, {failed} failed"
        if cancelled is not None:
            counts += f", {cancelled} cancelled"
        line = f"{state}: {done}/{total} images done ({counts})"
        rate = (processed - self._first_done) / elapsed if elapsed > 0 else 0.0
        if rate > 0:
            line += f", {rate:.1f} images/s"
            if done < total:
                line += f", about {_duration((total - done) / rate)} left"
        line += f", {_duration(elapsed)} elapsed"
        print(line, file=self.stream, flush=True)


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


class UploadProgress(_Bar):
    """Show an upload's bytes as they go: a Rich bar (size, speed, time left) on a terminal,
    a plain line at each quarter anywhere else. A context manager; `update` is the upload's
    progress callback (bytes sent, size)."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self._bar: Progress | None = None
        self._task: TaskID | None = None
        self._quarter = -1
        if is_terminal(self.stream):
            self._bar = Progress(
                TextColumn("[bold]uploading"),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
                console=Console(file=self.stream),
            )
            self._task = self._bar.add_task("upload", total=None)

    def update(self, sent: int, size: int) -> None:
        if self._bar is not None and self._task is not None:
            self._bar.update(self._task, total=size, completed=sent)
            return
        quarter = 4 * sent // size if size else 4
        if quarter > self._quarter:
            self._quarter = quarter
            print(f"uploading: {sent:,} of {size:,} bytes ({25 * quarter}%)", file=self.stream)
