"""The whole service on one machine: the AWS emulators (aws.py), the template's resources,
function workers, API Gateway, SQS pollers and schedules, wired from template.yaml alone.

`LocalStack(config).start()` brings everything up and returns its endpoints; `stop()`
takes everything down, children first. Tests use it in-process or through
`python -m local_stack`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from local_stack.api_gateway import ApiGateway, KeyThrottle, LocalEndpoint
from local_stack.aws import DUMMY_CREDENTIALS, Emulators, create_resources
from local_stack.event_sources import (
    RequestTally,
    Schedule,
    SqsEventSource,
    SqsFeeder,
    SqsPoller,
)
from local_stack.events import EventLog
from local_stack.model import FunctionSpec, StackModel
from local_stack.runtime import FunctionRuntime, Invocation, LogSink
from local_stack.sam import translated
from local_stack.template import REGION

log = logging.getLogger("local_stack")

REPO_ROOT = Path(__file__).resolve().parent.parent
POLLER_JOIN_S = 5.0  # an invocation in flight at shutdown gets this long to finish
EVENT_SOURCE_REQUESTS_PATH = "/local/event-source-requests"

# The store master is loaded by the same command a person runs (retail_pulse_admin.stores.
# command behind it), in a process of its own with the functions' environment, so it writes
# to the table the functions read. Its exit status 1 still loaded the good rows.
_IMPORT_COMMAND = [sys.executable, "-m", "retail_pulse_admin.stores", "import"]
_IMPORT_OK, _IMPORT_REJECTED = 0, 1


def _env_int(name: str, default: int | None) -> int | None:
    raw = os.environ.get(name, "").strip()
    return int(raw) if raw else default


@dataclass
class StackConfig:
    """Every knob of the local stack; `from_env()` reads the documented variables."""

    template: Path = REPO_ROOT / "template.yaml"
    port: int = 3000
    aws_port: int = 0  # MiniStack's; 0 picks a free port
    dynamodb_port: int = 0  # DynamoDB Local's
    pollers: int = 4  # for SQS sources on work queues; dead-letter consumers get 1
    api_workers: int = 2
    visibility_timeout_s: int | None = None
    schedule_period_s: float = 10.0
    poll_wait_s: int = 1
    store_master_csv: Path | None = REPO_ROOT / "data" / "stores_sample.csv"
    allowed_private_hosts: str = ""
    stack_name: str = "retail-pulse-local"
    state_file: Path | None = None
    parameter_overrides: dict[str, str] = field(default_factory=dict)
    function_pollers: dict[str, int] = field(default_factory=dict)
    # x-api-key values -> the client (tenant) each stands for: routes answer 403 without a
    # known key. None (neither LOCAL_API_KEYS nor LOCAL_API_KEY set) checks none.
    api_keys: dict[str, str | None] | None = None
    # New values for environment variables the template declares (LOCAL_FUNCTION_ENV), in
    # every function that declares them: tests scale deadlines down with it.
    function_environment: dict[str, str] = field(default_factory=dict)
    # SQS fair queues in the event sources, as AWS has them (local_stack/fair_queue.py);
    # LOCAL_FAIR_QUEUES=0 hands messages over in arrival order, to compare.
    fair_queues: bool = True

    @classmethod
    def from_env(cls) -> StackConfig:
        env = os.environ
        csv = env.get("STORE_MASTER_CSV")
        return cls(
            template=Path(env.get("LOCAL_TEMPLATE") or cls.template),
            port=_env_int("PORT", 3000) or 0,
            aws_port=_env_int("LOCAL_AWS_PORT", 0) or 0,
            dynamodb_port=_env_int("LOCAL_DYNAMODB_PORT", 0) or 0,
            pollers=_env_int("LOCAL_PROCESS_POLLERS", 4) or 1,
            api_workers=_env_int("LOCAL_API_WORKERS", 2) or 1,
            visibility_timeout_s=_env_int("LOCAL_VISIBILITY_TIMEOUT_S", None),
            schedule_period_s=float(env.get("LOCAL_SCHEDULE_PERIOD_S") or 10),
            poll_wait_s=_env_int("LOCAL_POLL_WAIT_S", 1) or 0,
            store_master_csv=(Path(csv) if csv else (None if csv == "" else cls.store_master_csv)),
            allowed_private_hosts=env.get("ALLOWED_PRIVATE_HOSTS", ""),
            stack_name=env.get("LOCAL_STACK_NAME") or cls.stack_name,
            state_file=Path(env["LOCAL_STACK_STATE_FILE"])
            if env.get("LOCAL_STACK_STATE_FILE")
            else None,
            function_pollers={
                key.removeprefix("LOCAL_POLLERS_"): int(value)
                for key, value in env.items()
                if key.startswith("LOCAL_POLLERS_") and value.strip()
            },
            api_keys=parse_api_keys(env.get("LOCAL_API_KEYS"), env.get("LOCAL_API_KEY")),
            function_environment=parse_function_environment(env.get("LOCAL_FUNCTION_ENV")),
            fair_queues=env.get("LOCAL_FAIR_QUEUES", "1").strip().lower()
            not in ("0", "false", "off", "no"),
        )


_CLIENT_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


def parse_api_keys(many: str | None, one: str | None) -> dict[str, str | None] | None:
    """LOCAL_API_KEYS=name:key,name2:key2: each key stands for a client, whose name is its
    requests' apiKeyId (the tenant), as an API key's id is in AWS. LOCAL_API_KEY=key: the
    one-client case, the default tenant (no apiKeyId)."""
    if many and many.strip():
        keys: dict[str, str | None] = {}
        for entry in many.split(","):
            name, _, key = entry.strip().partition(":")
            if not _CLIENT_NAME.fullmatch(name) or not key:
                raise ValueError(
                    f"LOCAL_API_KEYS entry {entry.strip()!r} is not name:key (a name of letters, "
                    "digits, - and _, then a key)"
                )
            if key in keys:
                raise ValueError(f"LOCAL_API_KEYS gives the key of {name!r} to two clients")
            keys[key] = name
        return keys
    if one and one.strip():
        return {one.strip(): None}
    return None


_VARIABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def parse_function_environment(raw: str | None) -> dict[str, str]:
    """LOCAL_FUNCTION_ENV=NAME=value,NAME2=value2: values the functions' template-declared
    variables take instead of the template's (a value cannot hold a comma)."""
    values: dict[str, str] = {}
    for entry in (raw or "").split(","):
        if not entry.strip():
            continue
        name, sep, value = entry.strip().partition("=")
        if not sep or not _VARIABLE_NAME.fullmatch(name):
            raise ValueError(
                f"LOCAL_FUNCTION_ENV entry {entry.strip()!r} is not NAME=value (a variable "
                "name the template declares, then its value)"
            )
        values[name] = value
    return values


def apply_function_environment(specs: list[FunctionSpec], values: dict[str, str]) -> None:
    """Give each function that declares a variable of `values` its new value. A variable no
    function declares is an error: the local stack runs the template's settings, never
    settings of its own."""
    declared = {name for spec in specs for name in spec.environment}
    unknown = sorted(set(values) - declared)
    if unknown:
        raise ValueError(
            f"LOCAL_FUNCTION_ENV sets {', '.join(unknown)}, which no function of the template "
            "declares: declare it in template.yaml first"
        )
    for spec in specs:
        for name in spec.environment.keys() & values.keys():
            spec.environment[name] = values[name]


@dataclass
class StackEndpoints:
    """What a client of the local stack needs: written to the state file as JSON."""

    api_url: str
    aws_endpoint_url: str  # MiniStack: SQS, EventBridge, Logs, S3, Secrets Manager
    dynamodb_endpoint_url: str  # DynamoDB Local
    region: str
    queues: dict[str, str]  # logical id -> queue URL
    tables: dict[str, str]  # logical id -> table name
    functions: dict[str, str]  # logical id -> function name
    routes: list[str]  # "METHOD /path"
    pid: int
    # "<Function>.<Event>" -> images one SQS source processes at once (pollers x BatchSize).
    sqs_slots: dict[str, int] = field(default_factory=dict)


class LocalStack:
    def __init__(self, config: StackConfig | None = None, sink: LogSink | None = None) -> None:
        self.config = config or StackConfig()
        self.sink = sink or LogSink()
        self.aws = Emulators(self.config.aws_port, self.config.dynamodb_port)
        self.model: StackModel | None = None
        self.functions: dict[str, FunctionRuntime] = {}
        self.sqs_slots: dict[str, int] = {}
        self.api: ApiGateway | None = None
        self.local_endpoints: dict[tuple[str, str], LocalEndpoint] = {
            ("GET", "/api/openapi.json"): self._openapi,
            ("GET", EVENT_SOURCE_REQUESTS_PATH): self._event_source_requests,
        }
        # What the SQS pollers (Lambda's, in AWS) sent: billed like the functions' requests.
        self.event_source_requests = RequestTally()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self.endpoints: StackEndpoints | None = None

    # -- start ---------------------------------------------------------------------------

    def start_aws(self) -> StackModel:
        """The emulators and the template's resources only (what template tests need)."""
        self.aws.start()
        self.model = StackModel(self.config.template, self._overrides(), self.config.stack_name)
        create_resources(self.model, self.aws, self.config.visibility_timeout_s)
        return self.model

    def _overrides(self) -> dict[str, str]:
        declared = (translated(self.config.template).get("Parameters") or {}).keys()
        overrides = dict(self.config.parameter_overrides)
        if "AwsEndpointUrl" in declared:
            overrides["AwsEndpointUrl"] = self.aws.url
        if "AwsDynamoDbEndpointUrl" in declared:
            overrides["AwsDynamoDbEndpointUrl"] = self.aws.dynamodb_url
        if "AllowedPrivateHosts" in declared:
            # Whatever the person running the stack allows, never more.
            overrides["AllowedPrivateHosts"] = self.config.allowed_private_hosts
        return overrides

    def start(self) -> StackEndpoints:
        started = time.monotonic()
        try:
            model = self.start_aws()
            specs = model.functions()
            apply_function_environment(specs, self.config.function_environment)
            if self.config.function_environment:
                log.info(
                    "LOCAL_FUNCTION_ENV replaces the template's %s",
                    ", ".join(sorted(self.config.function_environment)),
                )
            pollers = self._event_sources(model, specs)
            import_process = self._start_store_import(specs)
            self._finish_store_import(import_process)
            self.api = ApiGateway(
                [route for spec in specs for route in spec.api_routes],
                self._invoke,
                self.sink,
                self.config.port,
                self.local_endpoints,
                api_keys=self.config.api_keys,
                gateway_response_headers=model.gateway_response_headers(),
                gateway_response_bodies=model.gateway_response_bodies(),
                throttle=KeyThrottle(*throttle)
                if (throttle := model.usage_plan_throttle())
                else None,
            )
            api_url = self.api.start()
            for thread in pollers:
                thread.start()
            self._threads.extend(pollers)
            self._start_schedules(specs)
            event_log = EventLog(self.aws.url, self.config.stack_name, self.sink, self._stopping)
            event_log.create().start()
            self._threads.append(event_log)
        except BaseException:
            self.stop()
            raise
        self.endpoints = StackEndpoints(
            api_url=api_url,
            aws_endpoint_url=self.aws.url,
            dynamodb_endpoint_url=self.aws.dynamodb_url,
            region=REGION,
            queues={q.logical_id: model.resolver.refs[q.logical_id] for q in model.queues},
            tables={t.logical_id: t.name for t in model.tables},
            functions={s.logical_id: s.name for s in specs},
            routes=[f"{r.method} {r.path}" for s in specs for r in s.api_routes],
            pid=os.getpid(),
            sqs_slots=self.sqs_slots,
        )
        if self.config.state_file:
            self.config.state_file.write_text(json.dumps(asdict(self.endpoints), indent=2))
        log.info("started in %.1f s", time.monotonic() - started)
        return self.endpoints

    def _event_sources(
        self, model: StackModel, specs: list[FunctionSpec]
    ) -> list[threading.Thread]:
        """Each function's runtime, its environments all cold (each starts on its first
        invocation); return the SQS event sources' threads (a feeder and its pollers per
        source), not yet started."""
        dead_letter_arns = model.dead_letter_arns
        queue_urls = {q.arn: model.resolver.refs[q.logical_id] for q in model.queues}
        pollers: list[threading.Thread] = []
        for spec in specs:
            pool_size = self.config.api_workers if spec.api_routes else int(bool(spec.schedules))
            function = FunctionRuntime(spec, self.sink, pool_size)
            self.functions[spec.logical_id] = function
            for source in spec.sqs_sources:
                if not source.enabled:
                    continue
                if source.queue_arn not in queue_urls:
                    log.warning(
                        "%s: queue %s is not in the template; not polled",
                        spec.logical_id,
                        source.queue_arn,
                    )
                    continue
                count = self.config.function_pollers.get(
                    spec.logical_id.upper(),
                    1 if source.queue_arn in dead_letter_arns else self.config.pollers,
                )
                if source.maximum_concurrency:
                    count = min(count, source.maximum_concurrency)
                self.sqs_slots[f"{spec.logical_id}.{source.event}"] = count * source.batch_size
                event_source = SqsEventSource(
                    source,
                    queue_urls[source.queue_arn],
                    self.aws.url,
                    self.config.poll_wait_s,
                    dead_letter_queue=source.queue_arn in dead_letter_arns,
                    tally=self.event_source_requests,
                    fair=self.config.fair_queues,
                )
                pollers.append(SqsFeeder(event_source, self._stopping))
                for index in range(count):
                    pollers.append(
                        SqsPoller(event_source, function.new_slot(), self._stopping, index)
                    )
                log.info(
                    "%s <- %s: %d poller(s), batch %d, %s",
                    spec.logical_id,
                    source.queue_arn.rsplit(":", 1)[-1],
                    count,
                    source.batch_size,
                    "fair queue" if self.config.fair_queues else "arrival order",
                )
        return pollers

    def _start_schedules(self, specs: list[FunctionSpec]) -> None:
        for spec in specs:
            for source in spec.schedules:
                if not source.enabled:
                    continue
                schedule = Schedule(
                    source,
                    self.functions[spec.logical_id],
                    self.config.stack_name,
                    self.config.schedule_period_s,
                    self._stopping,
                )
                schedule.start()
                self._threads.append(schedule)
                log.info(
                    "%s: %s (%s) every %.0f s locally",
                    spec.logical_id,
                    source.event,
                    source.expression,
                    self.config.schedule_period_s,
                )

    def _start_store_import(self, specs: list[FunctionSpec]) -> subprocess.Popen[str] | None:
        csv = self.config.store_master_csv
        if csv is None:
            log.info("store master: none (STORE_MASTER_CSV is empty)")
            return None
        if not csv.exists():
            log.error("store master: %s does not exist; the Stores table stays empty", csv)
            return None
        # What every function's environment has (the template's Globals): tables, endpoints.
        shared = (
            {
                k: v
                for k, v in specs[0].environment.items()
                if all(s.environment.get(k) == v for s in specs)
            }
            if specs
            else {}
        )
        env = {
            "PATH": os.environ.get("PATH", ""),
            **DUMMY_CREDENTIALS,
            "AWS_REGION": REGION,
            "AWS_DEFAULT_REGION": REGION,
            "POWERTOOLS_TRACE_DISABLED": "true",
            **shared,
        }
        return subprocess.Popen(
            [*_IMPORT_COMMAND, str(csv.resolve())],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def _finish_store_import(self, process: subprocess.Popen[str] | None) -> None:
        """Log the import's report: its stdout lines, and its error line when rows were
        rejected; anything else (an unreadable file, no table, a crash) with its stderr."""
        if process is None:
            return
        out, err = process.communicate(timeout=120)
        csv = self.config.store_master_csv
        # A crash also exits 1, but only a finished import has printed its report.
        ran = process.returncode == _IMPORT_OK or (
            process.returncode == _IMPORT_REJECTED and out.strip() != ""
        )
        if not ran:
            log.error("store master NOT loaded from %s:\n%s", csv, err.strip()[-2000:])
            return
        level = logging.INFO if process.returncode == _IMPORT_OK else logging.WARNING
        errors = [line for line in err.splitlines() if line.startswith("error:")]
        for line in [*out.splitlines(), *errors]:
            log.log(level, "store master %s: %s", csv, line)

    # -- serve ---------------------------------------------------------------------------

    def _invoke(self, function: str, event: dict[str, Any]) -> Invocation:
        return self.functions[function].invoke(event)

    def _event_source_requests(self) -> tuple[int, dict[str, str], bytes] | None:
        """The pollers' SQS requests so far, by "<function>.<event>.<operation>"."""
        body = json.dumps(self.event_source_requests.snapshot()).encode()
        return 200, {"Content-Type": "application/json"}, body

    def _openapi(self) -> tuple[int, dict[str, str], bytes] | None:
        document = self.config.template.parent / "openapi.json"
        if not document.exists():
            return None
        return 200, {"Content-Type": "application/json"}, document.read_bytes()

    # -- stop ----------------------------------------------------------------------------

    def stop(self) -> None:
        """Pollers and schedules first (no new invocations), then HTTP, workers, emulators."""
        self._stopping.set()
        deadline = time.monotonic() + POLLER_JOIN_S
        for thread in self._threads:
            thread.join(timeout=max(0.1, deadline - time.monotonic()))
        if self.api is not None:
            self.api.stop()
            self.api = None
        for function in self.functions.values():
            with contextlib.suppress(Exception):
                function.stop()
        self.functions.clear()
        self.aws.stop()
        if self.config.state_file and self.config.state_file.exists():
            self.config.state_file.unlink()
        log.info("stopped")
