"""`retail-pulse`: submit jobs, watch, cancel and retry them, list them, export a job's
results, read visits back, import the store master, add and list the API's clients.

stdout carries results (a job id, a final status, jobs, results, visits) and stderr carries
progress and messages, so `JOB=$(retail-pulse submit job.csv)` and `retail-pulse results
"$JOB" > out.csv` do what they say.

Exit status: 0 done (the job completed, or is still going for `status` without --watch; for
`cancel` and `retry`, the job was cancelled or is going again); 1 the job failed or was
cancelled (or, for `stores import`, some rows were rejected); 2 bad usage or bad input, an
unknown job, or a job whose state does not allow it (the API's 409), with what to fix; 3 the
service, the table or (for `clients`) AWS could not be reached; 130 stopped by Ctrl-C (the
job itself goes on).
"""

from __future__ import annotations

import csv
import json
import os
import sys
import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import date, datetime
from enum import StrEnum
from pathlib import Path
from types import ModuleType
from typing import IO, TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from retail_pulse_client.checks import Limits, callback_problem, parse_timestamp
from retail_pulse_client.client import (
    DEFAULT_API_URL,
    JOBS_MAX_LIMIT,
    RESULTS_MAX_LIMIT,
    ApiError,
    ClientError,
    JobsPage,
    JobStatus,
    JobSummary,
    Progress,
    RetailPulseClient,
    ServiceUnavailable,
    VisitResult,
)
from retail_pulse_client.display import JobProgress, UploadProgress, is_terminal
from retail_pulse_client.jobfile import JobFileError, load_job

if TYPE_CHECKING:  # the service package is optional at run time (`stores`, `clients`)
    from retail_pulse.domain import NewTenant
    from retail_pulse_admin.stores.command import ImportOutput
    from retail_pulse_admin.stores.master import Rejection
    from retail_pulse_admin.tenants import TenantListing

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3
EXIT_INTERRUPTED = 130

app = typer.Typer(
    name="retail-pulse",
    help="Submit store-visit image jobs to Retail Pulse, watch them, and read the results.",
    epilog="Example: retail-pulse submit visits.csv --wait",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",  # joins a docstring's wrapped lines into paragraphs
)
stores_app = typer.Typer(
    help="Manage the store master in the Stores table (DynamoDB, from the environment).",
    no_args_is_help=True,
    rich_markup_mode="markdown",
)
app.add_typer(stores_app, name="stores")
clients_app = typer.Typer(
    help="Add and list the API's clients: API keys on the usage plan of a deployed stack.",
    no_args_is_help=True,
    rich_markup_mode="markdown",
)
app.add_typer(clients_app, name="clients")


class TextOrJson(StrEnum):
    text = "text"
    json = "json"


class VisitsFormat(StrEnum):
    table = "table"
    json = "json"
    csv = "csv"


class TableOrJson(StrEnum):
    table = "table"
    json = "json"


class CsvOrJson(StrEnum):
    csv = "csv"
    json = "json"


class ExportFormatChoice(StrEnum):
    csv = "csv"
    jsonl = "jsonl"


class JobStateChoice(StrEnum):
    """The statuses GET /api/jobs filters by (client.JOB_STATES)."""

    ongoing = "ongoing"
    completed = "completed"
    failed = "failed"
    cancelled = "cancelled"


class ImageStateChoice(StrEnum):
    """The statuses GET /api/results filters by (client.ImageState)."""

    pending = "pending"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"


ApiUrl = Annotated[
    str,
    typer.Option(
        "--api",
        envvar="RETAIL_PULSE_API",
        help="Base URL of the Retail Pulse API (env RETAIL_PULSE_API).",
    ),
]
ApiKey = Annotated[
    str | None,
    typer.Option(
        "--api-key",
        envvar="RETAIL_PULSE_API_KEY",
        help="Sent as the x-api-key header (env RETAIL_PULSE_API_KEY).",
        show_default=False,
    ),
]
Format = Annotated[
    TextOrJson, typer.Option("--format", help="json prints one machine-readable object.")
]
Stack = Annotated[
    str | None,
    typer.Option(
        "--stack",
        envvar="RETAIL_PULSE_STACK",
        help="The deployed CloudFormation stack; its ApiId and UsagePlanId outputs are read "
        "(env RETAIL_PULSE_STACK; default retail-pulse, as in samconfig.toml).",
        show_default=False,
    ),
]
ApiId = Annotated[
    str | None,
    typer.Option(
        "--api-id",
        envvar="RETAIL_PULSE_API_ID",
        help="The REST API's id, instead of --stack (env RETAIL_PULSE_API_ID).",
        show_default=False,
    ),
]


def main() -> None:
    """The console script's entry point."""
    app()


# -- helpers ---------------------------------------------------------------------------


def _say(message: str) -> None:
    """A message for the person, never part of the results."""
    print(message, file=sys.stderr, flush=True)


def _stdout_console() -> Console:
    """Rich on a terminal; on a pipe no colours and no wrapping at 80 columns."""
    if is_terminal(sys.stdout):
        return Console()
    return Console(color_system=None, width=1000, soft_wrap=True)


class UsageError(Exception):
    """A flag's value cannot be used (an --output that cannot be written, ...); the message
    names the flag and says what is wrong."""


@contextmanager
def _reporting_errors() -> Iterator[None]:
    """Turn every expected failure into one readable line and its exit status."""
    try:
        yield
    except (JobFileError, UsageError) as error:
        _say(f"error: {error}")
        raise typer.Exit(EXIT_USAGE) from None
    except ApiError as error:
        _say(f"error: the API said: {error}")
        raise typer.Exit(EXIT_USAGE if error.status_code < 500 else EXIT_UNAVAILABLE) from None
    except ServiceUnavailable as error:
        _say(f"error: {error}\nIs the service running? Point --api (or RETAIL_PULSE_API) at it.")
        raise typer.Exit(EXIT_UNAVAILABLE) from None
    except ClientError as error:
        _say(f"error: {error}")
        raise typer.Exit(EXIT_UNAVAILABLE) from None


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def _watch(client: RetailPulseClient, job_id: str) -> JobStatus:
    try:
        with JobProgress(job_id) as progress:
            return client.wait(job_id, on_progress=progress.update)
    except KeyboardInterrupt:
        _say(
            f"\nStopped watching; job {job_id} goes on. "
            f"Resume with: retail-pulse status {job_id} --watch"
        )
        raise typer.Exit(EXIT_INTERRUPTED) from None


def _status_json(status: JobStatus) -> str:
    """The SPEC's shape: `error` only on a failed job."""
    body = status.model_dump(mode="json", by_alias=True, exclude_none=True)
    if not status.errors:
        body.pop("error", None)
    return json.dumps(body)


def _outcome(status: JobStatus) -> int:
    """The exit status a job's state deserves: only a job that failed or was cancelled (its
    work not done) is a failure; an ongoing one is not yet anything."""
    return EXIT_FAILED if status.status in ("failed", "cancelled") else EXIT_OK


def _counts(progress: Progress) -> str:
    """`3 succeeded, 1 failed`, and the cancelled images when the job has any."""
    text = f"{progress.succeeded} succeeded, {progress.failed} failed"
    if progress.cancelled is not None:
        text += f", {progress.cancelled} cancelled"
    return text


def _report(status: JobStatus, output_format: TextOrJson) -> int:
    """Print a job's status (stdout) and return the exit status it deserves."""
    code = _outcome(status)
    if output_format is TextOrJson.json:
        print(_status_json(status))
        return code
    progress = status.progress
    counts = ""
    if progress is not None:
        counts = f": {progress.done}/{progress.total} images done, {_counts(progress)}"
    print(f"Job {status.job_id} {status.status}{counts}")
    if status.errors:
        if is_terminal(sys.stdout):
            table = Table(title="Failed stores", title_justify="left")
            table.add_column("store_id", style="bold")
            table.add_column("error", style="red")
            for failure in status.errors:
                table.add_row(failure.store_id, failure.error)
            Console().print(table)
        else:
            for failure in status.errors:
                print(f"{failure.store_id}: {failure.error}")
    if status.error_truncated and status.error_count is not None:
        unlisted = status.error_count - len(status.errors)
        _say(
            f"{_count(unlisted, 'more failed store')} not listed; every failure: "
            f"retail-pulse results {status.job_id} --status failed"
        )
    return code


# -- commands --------------------------------------------------------------------------


@app.command(
    epilog=(
        "Example: `retail-pulse submit visits.csv --wait` where visits.csv has lines like "
        "`S00339218,https://example.com/a.jpg,2026-11-28T10:15:00Z` "
        "under the header `store_id,image_url,visit_time`."
    )
)
def submit(
    file: Annotated[
        Path,
        typer.Argument(
            help="A SPEC submit body (.json) or a CSV with columns store_id,image_url,"
            "visit_time, one image per row; rows of one store and visit time form a visit.",
            show_default=False,
        ),
    ],
    wait: Annotated[
        bool, typer.Option("--wait", help="Show live progress and wait until the job ends.")
    ] = False,
    idempotency_key: Annotated[
        str | None,
        typer.Option(
            "--idempotency-key",
            help="Reuse a key to make re-running this submit safe (default: a fresh one).",
            show_default=False,
        ),
    ] = None,
    callback: Annotated[
        str | None,
        typer.Option(
            "--callback",
            help="An http or https URL the service POSTs a signed job.finished webhook to "
            "when the job ends (the body's callback_url; this flag wins over the file's).",
            show_default=False,
        ),
    ] = None,
    output_format: Format = TextOrJson.text,
    api: ApiUrl = DEFAULT_API_URL,
    api_key: ApiKey = None,
) -> None:
    """Check a job file locally, submit it, and print the job id.

    With --wait, exit 0 when the job completed and 1 when it failed or was cancelled (the
    failed stores are listed); bad input, a bad --callback URL included, exits 2 and names
    what to fix.
    """
    if callback is not None:
        problem = callback_problem(callback, Limits.from_env())
        if problem:
            _say(f"error: --callback {problem}")
            raise typer.Exit(EXIT_USAGE)
    with _reporting_errors(), RetailPulseClient(api, api_key) as client:
        limits = Limits.from_env()
        # A file too large for a request body is uploaded (POST /api/uploads), up to the
        # upload path's own image limit.
        job = load_job(file, replace(limits, images_per_job=limits.images_per_upload_job))
        payload = job.payload if callback is None else {**job.payload, "callback_url": callback}
        body = json.dumps(payload, separators=(",", ":")).encode()
        if len(body) > limits.body_bytes or job.images > limits.images_per_job:
            _say(f"The job is {len(body):,} bytes: too large for a request body, uploading it")
            with UploadProgress() as shown:
                job_id = client.submit_upload(body, shown.update)
        else:
            job_id = client.submit(payload, idempotency_key)
        _say(
            f"Submitted {_count(job.images, 'image')} in {_count(job.visits, 'visit')} "
            f"as job {job_id}"
        )
        if not wait:
            if output_format is TextOrJson.json:
                print(json.dumps({"job_id": job_id, "visits": job.visits, "images": job.images}))
            else:
                print(job_id)
            return
        final = _watch(client, job_id)
        raise typer.Exit(_report(final, output_format))


@app.command(epilog="Example: retail-pulse status 0b6a6f3e-... --watch")
def status(
    job_id: Annotated[str, typer.Argument(help="The job id that submit printed.")],
    watch: Annotated[
        bool, typer.Option("--watch", help="Show live progress until the job ends.")
    ] = False,
    output_format: Format = TextOrJson.text,
    api: ApiUrl = DEFAULT_API_URL,
    api_key: ApiKey = None,
) -> None:
    """Print a job's status and progress; failed stores are listed with their errors.

    Exit 0 for a completed or ongoing job, 1 for a failed or cancelled one, 2 for an unknown
    job id.
    """
    with _reporting_errors(), RetailPulseClient(api, api_key) as client:
        final = _watch(client, job_id) if watch else client.status(job_id)
        raise typer.Exit(_report(final, output_format))


JobId = Annotated[str, typer.Argument(help="The job id that submit printed.", show_default=False)]


@app.command(epilog="Example: retail-pulse cancel 0b6a6f3e-...")
def cancel(
    job_id: JobId,
    output_format: Format = TextOrJson.text,
    api: ApiUrl = DEFAULT_API_URL,
    api_key: ApiKey = None,
) -> None:
    """Cancel an ongoing job: its images not yet processed never are. Print its status, now
    cancelled, with how many images were cancelled.

    Exit 0 cancelled; 2 for an unknown job id, or a job that has already ended (the API
    says how); 3 the API could not be reached.
    """
    with _reporting_errors(), RetailPulseClient(api, api_key) as client:
        final = client.cancel(job_id)
        code = _report(final, output_format)
        raise typer.Exit(EXIT_OK if final.status == "cancelled" else code)


@app.command(epilog="Example: retail-pulse retry 0b6a6f3e-... --wait")
def retry(
    job_id: JobId,
    wait: Annotated[
        bool, typer.Option("--wait", help="Show live progress and wait until the job ends.")
    ] = False,
    output_format: Format = TextOrJson.text,
    api: ApiUrl = DEFAULT_API_URL,
    api_key: ApiKey = None,
) -> None:
    """Retry a failed job: its failed images are processed again. Print its status, ongoing
    again.

    Exit 0 once it is going again (with --wait, 0 when it then completed and 1 when it
    failed again); 2 for an unknown job id, or a job that did not fail (the API says how);
    3 the API could not be reached.
    """
    with _reporting_errors(), RetailPulseClient(api, api_key) as client:
        restarted = client.retry(job_id)
        if not wait:
            code = _report(restarted, output_format)
            raise typer.Exit(EXIT_OK if restarted.status == "ongoing" else code)
        _say(f"Retrying job {job_id}")
        raise typer.Exit(_report(_watch(client, job_id), output_format))


@app.command(epilog="Example: retail-pulse jobs --status failed --all")
def jobs(
    status_filter: Annotated[
        JobStateChoice | None,
        typer.Option("--status", help="Only jobs of this status.", show_default=False),
    ] = None,
    limit: Annotated[
        int | None,
        typer.Option(
            "--limit",
            min=1,
            max=JOBS_MAX_LIMIT,
            help="Jobs per page (the API's default is 20).",
            show_default=False,
        ),
    ] = None,
    all_pages: Annotated[
        bool, typer.Option("--all", help="Follow every page to the oldest job.")
    ] = False,
    output_format: Annotated[
        TableOrJson,
        typer.Option("--format", help="json is for programs: the API's body, one object."),
    ] = TableOrJson.table,
    api: ApiUrl = DEFAULT_API_URL,
    api_key: ApiKey = None,
) -> None:
    """List your jobs, newest first: id, status, when created and finished, and progress.

    One page, unless --all follows every page; when more jobs exist than shown, stderr says
    so (and with --format json the object carries the API's `next`). Exit 0 listed; 2 bad
    usage; 3 the API could not be reached.
    """
    state = None if status_filter is None else status_filter.value
    with _reporting_errors(), RetailPulseClient(api, api_key) as client:
        if all_pages:
            page = JobsPage(jobs=tuple(client.jobs(status=state, limit=limit)))
        else:
            page = client.jobs_page(status=state, limit=limit)
        if output_format is TableOrJson.json:
            print(json.dumps(_jobs_json(page), indent=2))
        else:
            _print_jobs(page.jobs, state)
        if page.next:
            _say("More jobs exist: --all lists every one.")


def _jobs_json(page: JobsPage) -> dict[str, Any]:
    """The API's body: finished_at null until a job ends, `cancelled` and `next` only when
    there are such."""
    body: dict[str, Any] = {
        "jobs": [
            {
                **job.model_dump(mode="json"),
                "progress": job.progress.model_dump(mode="json", exclude_none=True),
            }
            for job in page.jobs
        ]
    }
    if page.next:
        body["next"] = page.next
    return body


def _progress_cell(progress: Progress) -> str:
    return f"{progress.done}/{progress.total} ({_counts(progress)})"


def _print_jobs(listed: Sequence[JobSummary], state: str | None) -> None:
    if not listed:
        _say(f"No {state} jobs." if state else "No jobs yet: submit one with retail-pulse submit")
        return
    table = Table("job_id", "status", "created_at", "finished_at", "progress")
    for job in listed:
        table.add_row(
            job.job_id,
            job.status,
            job.created_at,
            job.finished_at or "",
            _progress_cell(job.progress),
        )
    _stdout_console().print(table)
    _say(_count(len(listed), f"{state} job" if state else "job"))


@app.command(
    epilog="Example: retail-pulse results 0b6a6f3e-... --format csv --output results.csv; "
    "retail-pulse results 0b6a6f3e-... --status failed (every failure, when the status lists "
    "100 stores)"
)
def results(
    job_id: JobId,
    status_filter: Annotated[
        ImageStateChoice | None,
        typer.Option(
            "--status",
            help="Only the images of this status (the API filters; other rows are not sent).",
            show_default=False,
        ),
    ] = None,
    output_format: Annotated[
        CsvOrJson,
        typer.Option(
            "--format",
            help="csv: one header row, then one row per image; json: one object, "
            '{"job_id": ..., "results": [...]}.',
        ),
    ] = CsvOrJson.csv,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="Write to this file (replaced only once every page is read) instead of stdout.",
            show_default=False,
        ),
    ] = None,
    page_size: Annotated[
        int | None,
        typer.Option(
            "--page-size",
            min=1,
            max=RESULTS_MAX_LIMIT,
            help="Images per request.",
            show_default=False,
        ),
    ] = None,
    api: ApiUrl = DEFAULT_API_URL,
    api_key: ApiKey = None,
) -> None:
    """Export every image's result of a job (or only those of --status), across all result
    pages, in submit order: store_id, image_url, visit_time, status (pending, succeeded,
    failed, cancelled), perimeter, width, height, error.

    A summary of the statuses goes to stderr. Exit 0 exported; 2 for an unknown job id or
    an --output that cannot be written; 3 the API could not be reached.
    """
    with (
        _reporting_errors(),
        RetailPulseClient(api, api_key) as client,
        _output_stream(output) as stream,
    ):
        state = None if status_filter is None else status_filter.value
        if output_format is CsvOrJson.csv:
            pages = client.results_csv(job_id, limit=page_size, status=state)
            states = _write_results_csv(stream, pages)
        else:
            rows = [
                row.model_dump(mode="json")
                for row in client.results(job_id, page_size, status=state)
            ]
            json.dump({"job_id": job_id, "results": rows}, stream, indent=2)
            stream.write("\n")
            states = Counter(str(row["status"]) for row in rows)
    total = sum(states.values())
    where = f" to {output}" if output is not None else ""
    summary = ", ".join(f"{number} {state}" for state, number in sorted(states.items()))
    nothing = f"no {state} images" if state else "no images"
    _say(f"Wrote {_count(total, 'result')} of job {job_id}{where}: {summary or nothing}")


@app.command(epilog="Example: retail-pulse export 0b6a6f3e-... --format jsonl -o results.jsonl")
def export(
    job_id: JobId,
    output_format: Annotated[
        ExportFormatChoice,
        typer.Option(
            "--format",
            help="csv: the header and rows of `results --format csv`; jsonl: one JSON row a line.",
        ),
    ] = ExportFormatChoice.csv,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="Write to this file (replaced only once the whole file is downloaded) "
            "instead of stdout.",
            show_default=False,
        ),
    ] = None,
    api: ApiUrl = DEFAULT_API_URL,
    api_key: ApiKey = None,
) -> None:
    """Download a finished job's whole results as one file, which the service writes
    (POST /api/results/export): waits while it is written, then downloads it. For a job
    of any size (a million images are one file); `results` reads page by page instead.

    Exit 0 downloaded; 2 for an unknown or unfinished job or an --output that cannot be
    written; 3 the export failed or the API could not be reached.
    """
    with (
        _reporting_errors(),
        RetailPulseClient(api, api_key) as client,
        _output_stream(output, binary=True) as stream,
    ):
        written = client.export_results(
            job_id,
            stream,
            output_format.value,
            progress=lambda e: _say(f"The service is writing the export: {_count(e.rows, 'row')}"),
        )
    where = f" to {output}" if output is not None else ""
    _say(
        f"Wrote {_count(written.rows, 'result')} of job {job_id}{where} "
        f"({_count(written.bytes, 'byte')}, {output_format.value})"
    )


def _write_results_csv(stream: IO[str], rows: Iterable[Sequence[str]]) -> Counter[str]:
    """The service's CSV, its header once, row by row as the pages arrive (so a large
    export starts at once); returns how many images are in each status."""
    writer = csv.writer(stream, lineterminator="\n")
    states: Counter[str] = Counter()
    status_column = -1
    for number, row in enumerate(rows):
        writer.writerow(row)
        if number == 0:  # the header: the service names the columns
            status_column = list(row).index("status") if "status" in row else -1
        elif 0 <= status_column < len(row):
            states[row[status_column]] += 1
    return states


@contextmanager
def _output_stream(path: Path | None, binary: bool = False) -> Iterator[IO[Any]]:
    """stdout, or a file next to `path` that replaces it only when everything was written:
    an export that fails half way never leaves a file that looks complete. Text, or bytes
    with `binary` (a file downloaded as it is)."""
    if path is None:
        yield sys.stdout.buffer if binary else sys.stdout
        if binary:
            sys.stdout.buffer.flush()
        return
    target = path.expanduser()
    if target.is_dir():
        raise UsageError(f"--output: {path} is a directory; name a file in it")
    text: dict[str, Any] = {} if binary else {"encoding": "utf-8", "newline": ""}
    try:
        handle = tempfile.NamedTemporaryFile(  # noqa: SIM115 (closed below, then renamed)
            "wb" if binary else "w",
            **text,
            dir=target.parent,
            prefix=f".{target.name}.",
            suffix=".part",
            delete=False,
        )
    except OSError as error:
        raise UsageError(f"--output: cannot write {path}: {error.strerror or error}") from None
    partial = Path(handle.name)
    try:
        with handle:
            yield handle
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    try:
        partial.chmod(_new_file_mode(target))
        partial.replace(target)
    except OSError as error:
        partial.unlink(missing_ok=True)
        raise UsageError(f"--output: cannot write {path}: {error.strerror or error}") from None


def _new_file_mode(target: Path) -> int:
    """The mode the file would have had if written in place: its own when it exists, else
    what the umask leaves of rw-rw-rw- (a temporary file is created rw-------)."""
    try:
        return target.stat().st_mode & 0o7777
    except OSError:
        umask = os.umask(0o022)
        os.umask(umask)
        return 0o666 & ~umask


@app.command(
    "webhook-secret",
    epilog="Example: retail-pulse webhook-secret --api-key $KEY > whsec.txt; "
    "retail-pulse webhook-secret --rotate",
)
def webhook_secret(
    rotate: Annotated[
        bool,
        typer.Option(
            "--rotate",
            help="Make a new secret and print it. For 24 h deliveries carry a signature by "
            "it and one by the secret it replaces, so receivers can switch over in that day.",
        ),
    ] = False,
    output_format: Format = TextOrJson.text,
    api: ApiUrl = DEFAULT_API_URL,
    api_key: ApiKey = None,
) -> None:
    """Print this client's webhook signing secret (whsec_...), the key its receivers verify
    each delivery's webhook-signature with (Standard Webhooks; README: Webhooks). Made by
    the service on first use; no other client's secret verifies this client's deliveries.

    The secret alone goes to stdout (or {"secret": ...} with --format json), anything else
    to stderr. Exit 0 printed; 2 the API refused (a wrong --api-key, say); 3 the API could
    not be reached.
    """
    with _reporting_errors(), RetailPulseClient(api, api_key) as client:
        secret = client.rotate_webhook_secret() if rotate else client.webhook_secret()
    if output_format is TextOrJson.json:
        print(json.dumps({"secret": secret}))
    else:
        print(secret)
    if rotate:
        _say(
            "New webhook secret. For 24 h deliveries are signed with it and with the one it "
            "replaced; switch your receivers to it within that day."
        )


@app.command(
    epilog=(
        "Example: retail-pulse visits --area 710006 --from 2026-11-28T00:00:00Z "
        "--format csv > visits.csv"
    )
)
def visits(
    store: Annotated[
        str | None, typer.Option("--store", help="Only this store id.", show_default=False)
    ] = None,
    area: Annotated[
        str | None, typer.Option("--area", help="Only this area code.", show_default=False)
    ] = None,
    start: Annotated[
        str | None,
        typer.Option(
            "--from", help="Visits at or after this RFC 3339 time or date.", show_default=False
        ),
    ] = None,
    end: Annotated[
        str | None,
        typer.Option(
            "--to", help="Visits at or before this RFC 3339 time or date.", show_default=False
        ),
    ] = None,
    output_format: Annotated[
        VisitsFormat,
        typer.Option("--format", help="csv and json are for programs: one row per image."),
    ] = VisitsFormat.table,
    page_size: Annotated[
        int | None,
        typer.Option(
            "--page-size", min=1, max=1000, help="Images per request.", show_default=False
        ),
    ] = None,
    api: ApiUrl = DEFAULT_API_URL,
    api_key: ApiKey = None,
) -> None:
    """Print every measured image of the matching visits, across all result pages."""
    for flag, value in (("--from", start), ("--to", end)):
        problem = _time_problem(value)
        if problem:
            _say(f"error: {flag}: {problem}")
            raise typer.Exit(EXIT_USAGE)
    with _reporting_errors(), RetailPulseClient(api, api_key) as client:
        results = client.visits(store=store, area=area, start=start, end=end, limit=page_size)
        if output_format is VisitsFormat.csv:
            _print_csv(results)
        elif output_format is VisitsFormat.json:
            print(json.dumps({"results": _merged(results)}, indent=2))
        else:
            _print_table(results)


def _time_problem(value: str | None) -> str | None:
    """The service takes an RFC 3339 time or a plain date (that whole UTC day)."""
    if value is None:
        return None
    try:
        date.fromisoformat(value.strip())
        return None
    except ValueError:
        pass
    try:
        parse_timestamp(value)
    except ValueError as error:
        return f"{error}, or a date like 2026-11-28"
    return None


def _rows(results: Iterator[VisitResult]) -> Iterator[list[Any]]:
    for result in results:
        for image in result.data:
            yield [result.store_id, result.area, result.store_name, image.date, image.perimeter]


_COLUMNS = ["store_id", "area", "store_name", "date", "perimeter"]


def _print_csv(results: Iterator[VisitResult]) -> None:
    """Row by row as the pages arrive, so a large export starts at once."""
    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(_COLUMNS)
    for row in _rows(results):
        writer.writerow(row)


def _merged(results: Iterator[VisitResult]) -> list[dict[str, Any]]:
    """One entry per store, as in the SPEC, even when a store's images span pages."""
    by_store: dict[str, dict[str, Any]] = {}
    for result in results:
        entry = by_store.setdefault(
            result.store_id,
            {
                "store_id": result.store_id,
                "area": result.area,
                "store_name": result.store_name,
                "data": [],
            },
        )
        entry["data"].extend(image.model_dump() for image in result.data)
    return list(by_store.values())


def _print_table(results: Iterator[VisitResult]) -> None:
    table = Table(*_COLUMNS)
    table.columns[-1].justify = "right"
    stores: set[str] = set()
    images = 0
    for row in _rows(results):
        table.add_row(*(str(value) for value in row))
        stores.add(row[0])
        images += 1
    if not images:
        _say("No measured images match these filters.")
        return
    _stdout_console().print(table)
    _say(f"{_count(images, 'image')} from {_count(len(stores), 'store')}")


@stores_app.command(
    "import", epilog="Example: STORES_TABLE=Stores retail-pulse stores import stores.csv"
)
def import_stores(
    file: Annotated[
        Path, typer.Argument(help="Store master CSV with header AreaCode,StoreName,StoreID.")
    ],
) -> None:
    """Load a store master CSV into the Stores table; safe to run again (it overwrites).

    The table comes from the environment, as for the functions: STORES_TABLE, AWS_REGION,
    and AWS_ENDPOINT_URL for a local stack. Writing DynamoDB needs the service package
    (`make install` installs it). Exit 0 all rows loaded, 1 some rows rejected (the good
    ones are still loaded), 2 the file cannot be read (or the service package is not
    installed), 3 the table cannot be written.
    """
    # Imported here, and only here: every other command works with the client alone.
    try:
        from retail_pulse_admin.stores.command import PlainOutput, run_import
    except ModuleNotFoundError as missing:
        _say(_needs_service_package("stores import", missing))
        raise typer.Exit(EXIT_USAGE) from None

    with _RichImportOutput(PlainOutput()) as output:
        code = run_import(file, output)
    raise typer.Exit(code)


def _needs_service_package(command: str, missing: ModuleNotFoundError) -> str:
    """One line saying what to install; names the checkout when the client runs from one."""
    repo = Path(__file__).resolve().parents[2]
    target = str(repo) if (repo / "layers" / "common" / "retail_pulse").is_dir() else "<repo>"
    ours = ("retail_pulse", "retail_pulse_admin")
    detail = "" if (missing.name or "").split(".")[0] in ours else f" ({missing})"
    return (
        f"retail-pulse {command} needs the service package{detail}: "
        f"pip install -e {target} (or make install)"
    )


class _RichImportOutput:
    """A Rich bar and a table of rejected rows at a terminal; the service's own plain lines
    everywhere else, so a piped import prints exactly what
    `python -m retail_pulse_admin.stores` prints."""

    def __init__(self, plain: ImportOutput) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        self._plain = plain
        self._bar = (
            Progress(
                TextColumn("writing stores"),
                BarColumn(),
                MofNCompleteColumn(),
                console=Console(file=sys.stderr),
            )
            if is_terminal(sys.stderr)
            else None
        )
        self._task = self._bar.add_task("stores", total=None) if self._bar else None
        self._writing = False

    def __enter__(self) -> _RichImportOutput:
        if self._bar is not None:
            self._bar.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop_bar()

    def _stop_bar(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def progress(self, done: int, total: int) -> None:
        self._writing = True
        if self._bar is not None and self._task is not None:
            self._bar.update(self._task, completed=done, total=total)
        else:
            self._plain.progress(done, total)

    def result(self, line: str) -> None:
        # The writing is over once the report begins; a live bar would send stdout to stderr.
        self._stop_bar()
        self._plain.result(line)

    def rejections(self, rejected: Sequence[Rejection]) -> None:
        if not rejected or not is_terminal(sys.stdout):
            self._plain.rejections(rejected)
            return
        table = Table("line", "reason", title="Rejected rows", title_justify="left")
        for rejection in rejected:
            table.add_row(str(rejection.line), rejection.reason)
        Console().print(table)

    def message(self, line: str) -> None:
        # Before the writing, a live bar shows the line above itself; after it, the line is
        # how the import ended, so it goes below the finished bar.
        if self._writing:
            self._stop_bar()
        self._plain.message(line)


# -- clients -------------------------------------------------------------------------------


def _clients_service(command: str) -> ModuleType:
    """The service's clients module; with the client installed alone, one line and exit 2."""
    try:
        import retail_pulse_admin.tenants as service
    except ModuleNotFoundError as missing:
        _say(_needs_service_package(command, missing))
        raise typer.Exit(EXIT_USAGE) from None
    return service


@contextmanager
def _reporting_aws_errors(service: ModuleType) -> Iterator[None]:
    """A request that cannot be done exits 2 saying what to change; AWS trouble exits 3."""
    try:
        yield
    except service.TenantsError as error:
        _say(f"error: {error}")
        raise typer.Exit(EXIT_USAGE) from None
    except service.GatewayError as error:
        _say(f"error: {error}\nCheck the AWS credentials and AWS_REGION of this shell.")
        raise typer.Exit(EXIT_UNAVAILABLE) from None


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ") if moment is not None else ""


@clients_app.command(
    "add", epilog="Example: `KEY=$(retail-pulse clients add acme --stack retail-pulse)`"
)
def add_tenant(
    name: Annotated[str, typer.Argument(help="The client's name: letters, digits, . _ -")],
    plan: Annotated[
        str | None,
        typer.Option(
            "--plan",
            help="Put the key on this usage plan (id or name) instead of the stack's own, "
            "for limits of its own; the plan must cover the stack's API.",
            show_default=False,
        ),
    ] = None,
    stack: Stack = None,
    api_id: ApiId = None,
    output_format: Format = TextOrJson.text,
) -> None:
    """Create the client NAME: a new API key on the stack's usage plan, and print the key,
    this once.

    stdout is the key alone (with --format json, one object holding it); stderr names the
    client's tenant (its key's id, which its jobs and results are filed under) and the
    plan's throttle and quota, which every key on the plan gets for itself. AWS comes from
    the environment (AWS_PROFILE, AWS_REGION; AWS_ENDPOINT_URL for an emulator), and this
    needs the service package (`make install` installs it). Exit 0 created; 2 the name is
    taken, or the stack, API or plan is not found; 3 AWS could not be reached or refused.
    """
    service = _clients_service("clients add")
    with _reporting_aws_errors(service):
        added = service.add_tenant(name, stack=stack, api_id=api_id, plan=plan)
        _report_new_client(
            added.created,
            added.api.describe(),
            service.describe_limits(added.created.plan),
            output_format,
        )


def _report_new_client(
    created: NewTenant, where: str, limits: str, output_format: TextOrJson
) -> None:
    """The key on stdout, once; everything else on stderr."""
    tenant, plan = created.tenant, created.plan
    plan_label = f"{plan.plan_id} ({plan.name})" if plan.name else plan.plan_id
    _say(
        f"Created client {tenant.name} on {where}: tenant {tenant.tenant_id} (its API key's "
        f"id), usage plan {plan_label}: {limits}"
    )
    if output_format is TextOrJson.json:
        print(
            json.dumps(
                {
                    "name": tenant.name,
                    "tenant": tenant.tenant_id,
                    "key_id": tenant.key_id,
                    "plan_id": plan.plan_id,
                    "plan_name": plan.name,
                    "created_at": _when(tenant.created_at),
                    "enabled": tenant.enabled,
                    "api_key": created.api_key,
                }
            )
        )
    else:
        _say("Its API key, printed only now (send it as x-api-key; clients list never shows it):")
        print(created.api_key, flush=True)


@clients_app.command("list", epilog="Example: retail-pulse clients list --format json")
def list_tenants(
    stack: Stack = None,
    api_id: ApiId = None,
    output_format: Annotated[
        TableOrJson, typer.Option("--format", help="json is for programs: one object.")
    ] = TableOrJson.table,
) -> None:
    """List the clients of the stack's API: every API key on a usage plan covering it, with
    its tenant (the key's id), plan, creation time and whether it is enabled; never a key.

    A table (without colours off a terminal), or one JSON object; each plan's limits
    follow on stderr. AWS comes from the environment, as for `clients add`, and this needs
    the service package. Exit 0 listed; 2 the stack or API is not found; 3 AWS could not
    be reached or refused.
    """
    service = _clients_service("clients list")
    with _reporting_aws_errors(service):
        listing = service.list_tenants(stack=stack, api_id=api_id)
        limits = {plan.plan_id: service.describe_limits(plan) for plan in listing.plans}
        if output_format is TableOrJson.json:
            print(json.dumps(_listing_json(listing), indent=2))
        else:
            _print_clients(listing, limits)


def _listing_json(listing: TenantListing) -> dict[str, Any]:
    return {
        "api_id": listing.api.api_id,
        "stack": listing.api.stack,
        "plans": [
            {
                "plan_id": plan.plan_id,
                "name": plan.name,
                "throttle": {"rate_limit": plan.rate_limit, "burst_limit": plan.burst_limit},
                "quota": {"limit": plan.quota_limit, "period": plan.quota_period},
            }
            for plan in listing.plans
        ],
        "clients": [
            {
                "name": tenant.name,
                "tenant": tenant.tenant_id,
                "key_id": tenant.key_id,
                "plan_id": tenant.plan_id,
                "created_at": _when(tenant.created_at),
                "enabled": tenant.enabled,
            }
            for tenant in listing.tenants
        ],
    }


def _print_clients(listing: TenantListing, limits: dict[str, str]) -> None:
    where = listing.api.describe()
    if not listing.plans:
        _say(f"No usage plan covers {where}: it takes no API keys, so it has no clients")
        return
    if not listing.tenants:
        _say(f"No clients on {where} yet: add one with retail-pulse clients add NAME")
        return
    names = {plan.plan_id: plan.name for plan in listing.plans}
    table = Table("name", "tenant (key id)", "plan", "created", "enabled")
    for tenant in listing.tenants:
        name = names.get(tenant.plan_id)
        table.add_row(
            tenant.name,
            tenant.tenant_id,
            f"{tenant.plan_id} ({name})" if name else tenant.plan_id,
            _when(tenant.created_at),
            "yes" if tenant.enabled else "no",
        )
    _stdout_console().print(table)
    _say(f"{_count(len(listing.tenants), 'client')} on {where}")
    for plan in listing.plans:
        _say(f"plan {plan.plan_id}{f' ({plan.name})' if plan.name else ''}: {limits[plan.plan_id]}")
