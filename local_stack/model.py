"""What the template declares, in the few shapes the local stack acts on.

Tables and queues are named `<stack>-<LogicalId>` (or their explicit TableName/QueueName)
and get the ARNs the emulators give them, so `Ref`, `!GetAtt X.Arn` and `!Sub` resolve to the
resources that really exist on loopback. Functions are read after the queues exist,
because their environment holds queue URLs.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from local_stack.template import (
    ACCOUNT_ID,
    FUNCTION,
    PARTITION,
    QUEUE,
    REGION,
    TABLE,
    Resolver,
    TemplateError,
    active_resources,
    load_template,
    make_resolver,
    merge_globals,
)

log = logging.getLogger("local_stack")

# What Lambda uses when a template leaves them out.
DEFAULT_TIMEOUT_S = 3
DEFAULT_MEMORY_MB = 128
DEFAULT_SQS_BATCH_SIZE = 10


BUCKET = "AWS::S3::Bucket"
# What the local stack makes of an AWS::S3::Bucket: the bucket on MiniStack's S3, versioned when
# the template says so (the ingest reads the version its submit found). The properties
# below are AWS's business and ignored here, each for its reason; an AWS::S3::BucketPolicy
# is ignored as a whole (its one rule, TLS only, cannot hold on loopback's plain http).
BUCKET_PROPERTIES_IGNORED_LOCALLY = {
    "BucketEncryption": "the emulator keeps objects on loopback: nothing is at rest in AWS",
    "PublicAccessBlockConfiguration": "nothing on loopback is public",
    "OwnershipControls": "nothing uses ACLs",
    "LifecycleConfiguration": "a local stack lives hours, not the rule's day",
}


@dataclass(frozen=True)
class BucketSpec:
    logical_id: str
    name: str
    properties: dict[str, Any]

    @property
    def versioned(self) -> bool:
        status = (self.properties.get("VersioningConfiguration") or {}).get("Status")
        return str(status) == "Enabled"


@dataclass(frozen=True)
class TableSpec:
    logical_id: str
    name: str
    arn: str
    properties: dict[str, Any]


@dataclass(frozen=True)
class QueueSpec:
    logical_id: str
    name: str
    arn: str
    properties: dict[str, Any]

    @property
    def dead_letter_arn(self) -> str | None:
        policy = self.properties.get("RedrivePolicy")
        if isinstance(policy, str):
            policy = json.loads(policy)
        return (policy or {}).get("deadLetterTargetArn")


@dataclass(frozen=True)
class ApiRoute:
    function: str
    event: str
    path: str
    method: str  # upper case; ANY matches every method


@dataclass(frozen=True)
class SqsSource:
    function: str
    event: str
    queue_arn: str
    batch_size: int
    batching_window_s: float
    report_batch_item_failures: bool
    enabled: bool
    maximum_concurrency: int | None


@dataclass(frozen=True)
class ScheduleSource:
    function: str
    event: str
    expression: str
    input: str | None  # the Input JSON text replaces the Scheduled Event payload
    enabled: bool


@dataclass
class FunctionSpec:
    logical_id: str
    name: str
    arn: str
    code_dir: Path
    handler: str
    runtime: str
    timeout_s: float
    memory_mb: int
    environment: dict[str, str]
    api_routes: list[ApiRoute] = field(default_factory=list)
    sqs_sources: list[SqsSource] = field(default_factory=list)
    schedules: list[ScheduleSource] = field(default_factory=list)


def queue_arn(name: str) -> str:
    return f"arn:{PARTITION}:sqs:{REGION}:{ACCOUNT_ID}:{name}"


def table_arn(name: str) -> str:
    return f"arn:{PARTITION}:dynamodb:{REGION}:{ACCOUNT_ID}:table/{name}"


class StackModel:
    """The template, resolved for a local stack named `stack_name`."""

    def __init__(
        self,
        template_path: str | Path,
        overrides: dict[str, str] | None = None,
        stack_name: str = "retail-pulse-local",
    ) -> None:
        self.template_path = Path(template_path).resolve()
        self.root = self.template_path.parent
        self.template = load_template(self.template_path)
        self.stack_name = stack_name
        self.resolver: Resolver = make_resolver(self.template, overrides, stack_name)
        self.resources = active_resources(self.template, self.resolver)
        self._name_resources()
        self.tables = [
            TableSpec(
                lid,
                self.resolver.refs[lid],
                table_arn(self.resolver.refs[lid]),
                self.resolver.resolve(r.get("Properties") or {}),
            )
            for lid, r in self.resources.items()
            if r["Type"] == TABLE
        ]
        self.queues = self._queues_in_creation_order()
        self.buckets = [
            BucketSpec(
                lid, self.resolver.refs[lid], self.resolver.resolve(r.get("Properties") or {})
            )
            for lid, r in self.resources.items()
            if r["Type"] == BUCKET
        ]

    def _physical_name(self, logical_id: str, explicit: Any) -> str:
        return (
            str(self.resolver.resolve(explicit)) if explicit else f"{self.stack_name}-{logical_id}"
        )

    def _name_resources(self) -> None:
        """Fill the resolver with every resource's Ref and attributes, except queue URLs."""
        refs, attrs = self.resolver.refs, self.resolver.attrs
        for logical_id, resource in self.resources.items():
            kind, props = resource["Type"], resource.get("Properties") or {}
            if kind == TABLE:
                name = self._physical_name(logical_id, props.get("TableName"))
                refs[logical_id] = name
                attrs[(logical_id, "Arn")] = table_arn(name)
                attrs[(logical_id, "StreamArn")] = f"{table_arn(name)}/stream/local"
            elif kind == BUCKET:
                # S3 names are lower case, 3 to 63 characters.
                name = self._physical_name(logical_id, props.get("BucketName")).lower()[:63]
                refs[logical_id] = name
                attrs[(logical_id, "Arn")] = f"arn:{PARTITION}:s3:::{name}"
                attrs[(logical_id, "DomainName")] = f"{name}.s3.amazonaws.com"
            elif kind == QUEUE:
                name = self._physical_name(logical_id, props.get("QueueName"))
                attrs[(logical_id, "Arn")] = queue_arn(name)
                attrs[(logical_id, "QueueName")] = name
            elif kind in (FUNCTION, "AWS::Lambda::Function"):
                name = self._physical_name(logical_id, props.get("FunctionName"))
                refs[logical_id] = name
                attrs[(logical_id, "Arn")] = (
                    f"arn:{PARTITION}:lambda:{REGION}:{ACCOUNT_ID}:function:{name}"
                )
            elif kind == "AWS::Serverless::LayerVersion":
                refs[logical_id] = (
                    f"arn:{PARTITION}:lambda:{REGION}:{ACCOUNT_ID}:layer:{logical_id}:1"
                )
            else:
                # APIs, roles, alarms...: nothing local stands behind them, a stable id will do.
                refs[logical_id] = f"{self.stack_name}-{logical_id}"

    def _queues_in_creation_order(self) -> list[QueueSpec]:
        """Dead-letter targets before the queues that redrive into them."""
        queues = {
            lid: QueueSpec(
                lid,
                self.resolver.attrs[(lid, "QueueName")],
                self.resolver.attrs[(lid, "Arn")],
                self.resolver.resolve(r.get("Properties") or {}),
            )
            for lid, r in self.resources.items()
            if r["Type"] == QUEUE
        }
        by_arn = {q.arn: q for q in queues.values()}
        ordered: list[QueueSpec] = []

        def visit(queue: QueueSpec, path: tuple[str, ...]) -> None:
            if queue in ordered:
                return
            if queue.logical_id in path:
                raise TemplateError(f"redrive cycle through {queue.logical_id}")
            target = by_arn.get(queue.dead_letter_arn or "")
            if target is not None:
                visit(target, (*path, queue.logical_id))
            ordered.append(queue)

        for queue in queues.values():
            visit(queue, ())
        return ordered

    def set_queue_url(self, logical_id: str, url: str) -> None:
        self.resolver.refs[logical_id] = url
        self.resolver.attrs[(logical_id, "QueueUrl")] = url

    @property
    def dead_letter_arns(self) -> set[str]:
        return {q.dead_letter_arn for q in self.queues if q.dead_letter_arn}

    def gateway_response_headers(self) -> dict[str, dict[str, str]]:
        """The APIs' GatewayResponses headers by response type ("DEFAULT_4XX"...): the
        headers API Gateway adds to the answers it gives itself (403, 404, 413, 502...)."""
        found: dict[str, dict[str, str]] = {}
        for resource in self.resources.values():
            if resource["Type"] != "AWS::Serverless::Api":
                continue
            props = self.resolver.resolve(resource.get("Properties") or {})
            for kind, response in (props.get("GatewayResponses") or {}).items():
                headers = ((response or {}).get("ResponseParameters") or {}).get("Headers") or {}
                # Values are mapping expressions: a literal is quoted, "'nosniff'".
                found.setdefault(kind, {}).update(
                    {name: str(value).strip("'") for name, value in headers.items()}
                )
        return found

    def gateway_response_bodies(self) -> dict[str, tuple[int | None, str]]:
        """The APIs' GatewayResponses that say more than headers, by response type
        ("REQUEST_TOO_LARGE"...): (its StatusCode or None, its application/json template)."""
        found: dict[str, tuple[int | None, str]] = {}
        for resource in self.resources.values():
            if resource["Type"] != "AWS::Serverless::Api":
                continue
            props = self.resolver.resolve(resource.get("Properties") or {})
            for kind, response in (props.get("GatewayResponses") or {}).items():
                template = ((response or {}).get("ResponseTemplates") or {}).get("application/json")
                if template is not None:
                    status = (response or {}).get("StatusCode")
                    found[kind] = (int(status) if status else None, str(template))
        return found

    def usage_plan_throttle(self) -> tuple[float, int] | None:
        """(RateLimit, BurstLimit) of the APIs' usage plan (Auth.UsagePlan.Throttle), read
        whatever RequireApiKey says: locally, keys come from LOCAL_API_KEYS instead."""
        for resource in self.resources.values():
            if resource["Type"] != "AWS::Serverless::Api":
                continue
            auth = (resource.get("Properties") or {}).get("Auth") or {}
            if isinstance(auth, dict) and "Fn::If" in auth:
                auth = auth["Fn::If"][1]  # the branch with the usage plan
            throttle = self.resolver.resolve(auth).get("UsagePlan", {}).get("Throttle")
            if throttle:
                return float(throttle["RateLimit"]), int(throttle["BurstLimit"])
        return None

    def functions(self) -> list[FunctionSpec]:
        """Every serverless function with Globals merged and its properties resolved."""
        specs = []
        for logical_id, resource in self.resources.items():
            if resource["Type"] == "AWS::Lambda::Function":
                log.warning("%s: plain AWS::Lambda::Function is not run locally", logical_id)
            if resource["Type"] != FUNCTION:
                continue
            specs.append(self._function(logical_id, resource.get("Properties") or {}))
        return specs

    def _function(self, logical_id: str, raw: dict[str, Any]) -> FunctionSpec:
        merged = merge_globals(self.template, raw)
        resolve = self.resolver.resolve
        env = resolve((merged.get("Environment") or {}).get("Variables") or {})
        code_uri = resolve(merged.get("CodeUri") or ".")
        if not isinstance(code_uri, str):
            raise TemplateError(f"{logical_id}: CodeUri must be a local folder to run locally")
        spec = FunctionSpec(
            logical_id=logical_id,
            name=self.resolver.refs[logical_id],
            arn=self.resolver.attrs[(logical_id, "Arn")],
            code_dir=(self.root / code_uri).resolve(),
            handler=str(resolve(merged.get("Handler") or "")),
            runtime=str(resolve(merged.get("Runtime") or "")),
            timeout_s=float(resolve(merged.get("Timeout", DEFAULT_TIMEOUT_S))),
            memory_mb=int(resolve(merged.get("MemorySize", DEFAULT_MEMORY_MB))),
            environment={k: _env_text(v) for k, v in env.items()},
        )
        for event_name, event in (merged.get("Events") or {}).items():
            kind, props = event.get("Type"), resolve(event.get("Properties") or {})
            if kind == "Api":
                spec.api_routes.append(
                    ApiRoute(logical_id, event_name, props["Path"], props["Method"].upper())
                )
            elif kind == "SQS":
                scaling = props.get("ScalingConfig") or {}
                spec.sqs_sources.append(
                    SqsSource(
                        function=logical_id,
                        event=event_name,
                        queue_arn=props["Queue"],
                        batch_size=int(props.get("BatchSize", DEFAULT_SQS_BATCH_SIZE)),
                        batching_window_s=float(props.get("MaximumBatchingWindowInSeconds", 0)),
                        report_batch_item_failures="ReportBatchItemFailures"
                        in (props.get("FunctionResponseTypes") or []),
                        enabled=_truthy(props.get("Enabled", True)),
                        maximum_concurrency=(
                            int(scaling["MaximumConcurrency"])
                            if "MaximumConcurrency" in scaling
                            else None
                        ),
                    )
                )
            elif kind in ("Schedule", "ScheduleV2"):
                enabled = (
                    _truthy(props.get("Enabled", True))
                    and str(props.get("State", "ENABLED")).upper() != "DISABLED"
                )
                spec.schedules.append(
                    ScheduleSource(
                        logical_id,
                        event_name,
                        str(props.get("Schedule") or props.get("ScheduleExpression") or ""),
                        props.get("Input"),
                        enabled,
                    )
                )
            else:
                log.warning("%s: event %s of type %s is not emulated", logical_id, event_name, kind)
        return spec


def _env_text(value: Any) -> str:
    """Lambda environment values are strings; CloudFormation stringifies numbers and bools."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def _truthy(value: Any) -> bool:
    return value if isinstance(value, bool) else str(value).lower() == "true"
