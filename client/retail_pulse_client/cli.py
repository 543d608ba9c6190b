"""`retail-pulse`: submit jobs, watch them, read visits back, import the store master,
add and list the API's clients.

stdout carries results (a job id, a final status, visits) and stderr carries progress and
messages, so `JOB=$(retail-pulse submit job.csv)` and `retail-pulse visits --format csv >
out.csv` do what they say.

Exit status: 0 done (the job completed, or is still going for `status` without --watch);
1 the job failed (or, for `stores import`, some rows were rejected); 2 bad usage or bad
input, with what to fix; 3 the service, the table or (for `clients`) AWS could not be
reached; 130 stopped by Ctrl-C (the job itself goes on).
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import date, datetime
from enum import StrEnum
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from retail_pulse_client.checks import parse_timestamp
from retail_pulse_client.client import (
    DEFAULT_API_URL,
    ApiError,
    ClientError,
    JobStatus,
    RetailPulseClient,
    ServiceUnavailable,
    VisitResult,
)
from retail_pulse_client.display import JobProgress, is_terminal
from retail_pulse_client.jobfile import JobFileError, load_job

if TYPE_CHECKING:  # the service package is optional at run time (`stores`, `clients`)
    from retail_pulse.clients import ClientListing
    from retail_pulse.domain import NewClient
    from retail_pulse.stores.command import ImportOutput
    from retail_pulse.stores.master import Rejection

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


@contextmanager
def _reporting_errors() -> Iterator[None]:
    """Turn every expected failure into one readable line and its exit status."""
    try:
        yield
    except JobFileError as error:
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


def _report(status: JobStatus, output_format: TextOrJson) -> int:
    """Print a job's status (stdout) and return the exit status it deserves."""
    code = EXIT_FAILED if status.status == "failed" else EXIT_OK
    if output_format is TextOrJson.json:
        print(_status_json(status))
        return code
    progress = status.progress
    counts = ""
    if progress is not None:
        counts = (
            f": {progress.done}/{progress.total} images done, "
            f"{progress.succeeded} succeeded, {progress.failed} failed"
        )
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
    output_format: Format = TextOrJson.text,
    api: ApiUrl = DEFAULT_API_URL,
    api_key: ApiKey = None,
) -> None:
    """Check a job file locally, submit it, and print the job id.

    With --wait, exit 0 when the job completed and 1 when it failed (the failed stores are
    listed); bad input exits 2 and names the line to fix.
    """
    with _reporting_errors(), RetailPulseClient(api, api_key) as client:
        job = load_job(file)
        job_id = client.submit(job.payload, idempotency_key)
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

    Exit 0 for a completed or ongoing job, 1 for a failed one, 2 for an unknown job id.
    """
    with _reporting_errors(), RetailPulseClient(api, api_key) as client:
        final = _watch(client, job_id) if watch else client.status(job_id)
        raise typer.Exit(_report(final, output_format))


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
        from retail_pulse.stores.command import PlainOutput, run_import
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
    detail = "" if (missing.name or "").split(".")[0] == "retail_pulse" else f" ({missing})"
    return (
        f"retail-pulse {command} needs the service package{detail}: "
        f"pip install -e {target} (or make install)"
    )


class _RichImportOutput:
    """A Rich bar and a table of rejected rows at a terminal; the service's own plain lines
    everywhere else, so a piped import prints exactly what `python -m retail_pulse.stores`
    prints."""

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
        import retail_pulse.clients as service
    except ModuleNotFoundError as missing:
        _say(_needs_service_package(command, missing))
        raise typer.Exit(EXIT_USAGE) from None
    return service


@contextmanager
def _reporting_aws_errors(service: ModuleType) -> Iterator[None]:
    """A request that cannot be done exits 2 saying what to change; AWS trouble exits 3."""
    try:
        yield
    except service.ClientsError as error:
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
def add_client(
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
        added = service.add_client(name, stack=stack, api_id=api_id, plan=plan)
        _report_new_client(
            added.created,
            added.api.describe(),
            service.describe_limits(added.created.plan),
            output_format,
        )


def _report_new_client(
    created: NewClient, where: str, limits: str, output_format: TextOrJson
) -> None:
    """The key on stdout, once; everything else on stderr."""
    client, plan = created.client, created.plan
    plan_label = f"{plan.plan_id} ({plan.name})" if plan.name else plan.plan_id
    _say(
        f"Created client {client.name} on {where}: tenant {client.tenant} (its API key's "
        f"id), usage plan {plan_label}: {limits}"
    )
    if output_format is TextOrJson.json:
        print(
            json.dumps(
                {
                    "name": client.name,
                    "tenant": client.tenant,
                    "key_id": client.key_id,
                    "plan_id": plan.plan_id,
                    "plan_name": plan.name,
                    "created_at": _when(client.created_at),
                    "enabled": client.enabled,
                    "api_key": created.api_key,
                }
            )
        )
    else:
        _say("Its API key, printed only now (send it as x-api-key; clients list never shows it):")
        print(created.api_key, flush=True)


@clients_app.command("list", epilog="Example: retail-pulse clients list --format json")
def list_clients(
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
        listing = service.list_clients(stack=stack, api_id=api_id)
        limits = {plan.plan_id: service.describe_limits(plan) for plan in listing.plans}
        if output_format is TableOrJson.json:
            print(json.dumps(_listing_json(listing), indent=2))
        else:
            _print_clients(listing, limits)


def _listing_json(listing: ClientListing) -> dict[str, Any]:
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
                "name": client.name,
                "tenant": client.tenant,
                "key_id": client.key_id,
                "plan_id": client.plan_id,
                "created_at": _when(client.created_at),
                "enabled": client.enabled,
            }
            for client in listing.clients
        ],
    }


def _print_clients(listing: ClientListing, limits: dict[str, str]) -> None:
    where = listing.api.describe()
    if not listing.plans:
        _say(f"No usage plan covers {where}: it takes no API keys, so it has no clients")
        return
    if not listing.clients:
        _say(f"No clients on {where} yet: add one with retail-pulse clients add NAME")
        return
    names = {plan.plan_id: plan.name for plan in listing.plans}
    table = Table("name", "tenant (key id)", "plan", "created", "enabled")
    for client in listing.clients:
        name = names.get(client.plan_id)
        table.add_row(
            client.name,
            client.tenant,
            f"{client.plan_id} ({name})" if name else client.plan_id,
            _when(client.created_at),
            "yes" if client.enabled else "no",
        )
    _stdout_console().print(table)
    _say(f"{_count(len(listing.clients), 'client')} on {where}")
    for plan in listing.plans:
        _say(f"plan {plan.plan_id}{f' ({plan.name})' if plan.name else ''}: {limits[plan.plan_id]}")
