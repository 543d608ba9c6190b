"""What the template declares, in the few shapes the local stack acts on.

It reads the CloudFormation SAM makes of template.yaml (local_stack/sam.py), not the SAM
source: functions from AWS::Lambda::Function, SQS sources from the event source mappings,
routes and gateway responses from the REST API's OpenAPI body, schedules from EventBridge
rules, so what SAM generates is what runs. Every other type of that template is named in
NOT_EMULATED with the reason; a type in neither fails the start.

Tables and queues are named `<stack>-<LogicalId>` (or their explicit TableName/QueueName)
and get the ARNs the emulators give them, so `Ref`, `!GetAtt X.Arn` and `!Sub` resolve to the
resources that really exist on loopback. Functions are read after the queues exist,
because their environment holds queue URLs.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from local_stack.sam import code_folder, translated
from local_stack.template import (
    ACCOUNT_ID,
    PARTITION,
    QUEUE,
    REGION,
    TABLE,
    Resolver,
    TemplateError,
    active_resources,
    make_resolver,
)

log = logging.getLogger("local_stack")

# What Lambda uses when a template leaves them out.
DEFAULT_TIMEOUT_S = 3
DEFAULT_MEMORY_MB = 128
DEFAULT_SQS_BATCH_SIZE = 10

BUCKET = "AWS::S3::Bucket"
FUNCTION = "AWS::Lambda::Function"
EVENT_SOURCE_MAPPING = "AWS::Lambda::EventSourceMapping"
REST_API = "AWS::ApiGateway::RestApi"
USAGE_PLAN = "AWS::ApiGateway::UsagePlan"
RULE = "AWS::Events::Rule"
SCHEDULE = "AWS::Scheduler::Schedule"
SECRET = "AWS::SecretsManager::Secret"
# What the local stack makes of the translated template: these types, read here (secrets
# by aws.py) ...
EMULATED = frozenset(
    (
        TABLE,
        QUEUE,
        BUCKET,
        SECRET,
        FUNCTION,
        EVENT_SOURCE_MAPPING,
        REST_API,
        USAGE_PLAN,
        RULE,
        SCHEDULE,
    )
)
# ... and these, left alone, each for its reason. A type in neither stops the start.
NOT_EMULATED = {
    "AWS::IAM::Role": "no IAM locally: every function may call everything "
    "(tests/unit/test_least_privilege.py checks the roles as deployed)",
    "AWS::Lambda::Permission": "API Gateway and the schedules invoke the functions directly",
    "AWS::Lambda::LayerVersion": "the functions import the layer's package from the "
    "project's virtualenv (make install), where the tests run it too",
    "AWS::ApiGateway::Deployment": "the one API is served as deployed, at the root",
    "AWS::ApiGateway::Stage": "the one API is served as deployed, at the root: no stage path",
    "AWS::ApiGateway::ApiKey": "keys come from LOCAL_API_KEYS (the usage plan's throttle is read)",
    "AWS::ApiGateway::UsagePlanKey": "keys come from LOCAL_API_KEYS, all on the usage plan",
    "AWS::Logs::LogGroup": "the functions' lines go to the console and the full log (logs.py)",
    "AWS::Logs::QueryDefinition": "saved Logs Insights queries: the full log is a file to grep",
    "AWS::CloudWatch::Alarm": "no CloudWatch metrics locally: GET /local/metrics totals the "
    "functions' EMF",
    "AWS::CloudWatch::Dashboard": "no CloudWatch metrics locally: GET /local/metrics totals "
    "the functions' EMF",
    "AWS::S3::BucketPolicy": "its one rule, TLS only, cannot hold on loopback's plain http",
}
# What the local stack makes of an AWS::S3::Bucket: the bucket on MiniStack's S3, versioned when
# the template says so (the ingest reads the version its submit found). The properties
# below are AWS's business and ignored here, each for its reason.
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
    """The template, translated by SAM and resolved for a local stack named `stack_name`."""

    def __init__(
        self,
        template_path: str | Path,
        overrides: dict[str, str] | None = None,
        stack_name: str = "retail-pulse-local",
    ) -> None:
        self.template_path = Path(template_path).resolve()
        self.root = self.template_path.parent
        self.template = translated(self.template_path)
        refuse_unknown_types(self.template)
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
            for lid, r in self._of_type(TABLE)
        ]
        self.queues = self._queues_in_creation_order()
        self.buckets = [
            BucketSpec(
                lid, self.resolver.refs[lid], self.resolver.resolve(r.get("Properties") or {})
            )
            for lid, r in self._of_type(BUCKET)
        ]

    def _of_type(self, kind: str) -> list[tuple[str, dict[str, Any]]]:
        return [(lid, r) for lid, r in self.resources.items() if r["Type"] == kind]

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
            elif kind == FUNCTION:
                name = self._physical_name(logical_id, props.get("FunctionName"))
                refs[logical_id] = name
                attrs[(logical_id, "Arn")] = (
                    f"arn:{PARTITION}:lambda:{REGION}:{ACCOUNT_ID}:function:{name}"
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
            for lid, r in self._of_type(QUEUE)
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

    def _gateway_responses(self) -> dict[str, dict[str, Any]]:
        """The REST APIs' gateway responses (x-amazon-apigateway-gateway-responses)."""
        found: dict[str, dict[str, Any]] = {}
        for _, api in self._of_type(REST_API):
            body = (api.get("Properties") or {}).get("Body") or {}
            responses = body.get("x-amazon-apigateway-gateway-responses") or {}
            for kind, response in self.resolver.resolve(responses).items():
                found.setdefault(kind, {}).update(response or {})
        return found

    def gateway_response_headers(self) -> dict[str, dict[str, str]]:
        """The APIs' gateway response headers by response type ("DEFAULT_4XX"...): the
        headers API Gateway adds to the answers it gives itself (403, 404, 413, 502...)."""
        prefix = "gatewayresponse.header."
        return {
            kind: {
                # Values are mapping expressions: a literal is quoted, "'nosniff'".
                name[len(prefix) :]: str(value).strip("'")
                for name, value in (response.get("responseParameters") or {}).items()
                if name.startswith(prefix)
            }
            for kind, response in self._gateway_responses().items()
        }

    def gateway_response_bodies(self) -> dict[str, tuple[int | None, str]]:
        """The APIs' gateway responses that say more than headers, by response type
        ("REQUEST_TOO_LARGE"...): (its status code or None, its application/json template)."""
        found: dict[str, tuple[int | None, str]] = {}
        for kind, response in self._gateway_responses().items():
            template = (response.get("responseTemplates") or {}).get("application/json")
            if template is not None:
                status = response.get("statusCode")
                found[kind] = (int(status) if status else None, str(template))
        return found

    def usage_plan_throttle(self) -> tuple[float, int] | None:
        """(RateLimit, BurstLimit) of the APIs' usage plan. Translation reads RequireApiKey
        at its default ("true"): locally, keys come from LOCAL_API_KEYS instead."""
        for _, plan in self._of_type(USAGE_PLAN):
            throttle = self.resolver.resolve((plan.get("Properties") or {}).get("Throttle"))
            if throttle:
                return float(throttle["RateLimit"]), int(throttle["BurstLimit"])
        return None

    def functions(self) -> list[FunctionSpec]:
        """Every function with its properties resolved, its routes, SQS sources, schedules."""
        specs = {
            lid: self._function(lid, r.get("Properties") or {})
            for lid, r in self._of_type(FUNCTION)
        }
        by_name = {spec.name: spec for spec in specs.values()}
        by_arn = {spec.arn: spec for spec in specs.values()}
        for route in self._api_routes(by_arn):
            specs[route.function].api_routes.append(route)
        for logical_id, mapping in self._of_type(EVENT_SOURCE_MAPPING):
            source = self._sqs_source(logical_id, mapping.get("Properties") or {}, by_name)
            if source is not None:
                specs[source.function].sqs_sources.append(source)
        for schedule in self._schedules(by_arn):
            specs[schedule.function].schedules.append(schedule)
        return list(specs.values())

    def _function(self, logical_id: str, raw: dict[str, Any]) -> FunctionSpec:
        resolve = self.resolver.resolve
        env = resolve((raw.get("Environment") or {}).get("Variables") or {})
        code_dir = code_folder(self.root, raw.get("Code"))
        if code_dir is None:
            raise TemplateError(f"{logical_id}: its code must be a local folder to run locally")
        return FunctionSpec(
            logical_id=logical_id,
            name=self.resolver.refs[logical_id],
            arn=self.resolver.attrs[(logical_id, "Arn")],
            code_dir=code_dir,
            handler=str(resolve(raw.get("Handler") or "")),
            runtime=str(resolve(raw.get("Runtime") or "")),
            timeout_s=float(resolve(raw.get("Timeout", DEFAULT_TIMEOUT_S))),
            memory_mb=int(resolve(raw.get("MemorySize", DEFAULT_MEMORY_MB))),
            environment={k: _env_text(v) for k, v in env.items()},
        )

    def _api_routes(self, functions: dict[str, FunctionSpec]) -> list[ApiRoute]:
        """Each path and method of the REST APIs' OpenAPI bodies whose integration invokes
        a function of the stack."""
        routes = []
        for _, api in self._of_type(REST_API):
            paths = ((api.get("Properties") or {}).get("Body") or {}).get("paths") or {}
            for path, methods in paths.items():
                for method, operation in methods.items():
                    integration = operation.get("x-amazon-apigateway-integration") or {}
                    uri = str(self.resolver.resolve(integration.get("uri", "")))
                    found = _INVOKED_FUNCTION.search(uri)
                    spec = functions.get(found.group(1)) if found else None
                    if spec is None:
                        log.warning("%s %s: integration %s is not emulated", method, path, uri)
                        continue
                    verb = "ANY" if method == "x-amazon-apigateway-any-method" else method.upper()
                    routes.append(ApiRoute(spec.logical_id, path, verb))
        return routes

    def _sqs_source(
        self, logical_id: str, raw: dict[str, Any], functions: dict[str, FunctionSpec]
    ) -> SqsSource | None:
        props = self.resolver.resolve(raw)
        spec = functions.get(str(props.get("FunctionName")))
        queue = str(props.get("EventSourceArn"))
        if spec is None or queue not in {q.arn for q in self.queues}:
            log.warning("%s: only SQS queues of the stack are polled locally", logical_id)
            return None
        scaling = props.get("ScalingConfig") or {}
        return SqsSource(
            function=spec.logical_id,
            event=_event_name(logical_id, spec.logical_id),
            queue_arn=queue,
            batch_size=int(props.get("BatchSize", DEFAULT_SQS_BATCH_SIZE)),
            batching_window_s=float(props.get("MaximumBatchingWindowInSeconds", 0)),
            report_batch_item_failures="ReportBatchItemFailures"
            in (props.get("FunctionResponseTypes") or []),
            enabled=_truthy(props.get("Enabled", True)),
            maximum_concurrency=(
                int(scaling["MaximumConcurrency"]) if "MaximumConcurrency" in scaling else None
            ),
        )

    def _schedules(self, functions: dict[str, FunctionSpec]) -> list[ScheduleSource]:
        """EventBridge rules with a schedule (and EventBridge Scheduler schedules) whose
        target is a function of the stack."""
        found = []
        for logical_id, resource in self.resources.items():
            if resource["Type"] not in (RULE, SCHEDULE):
                continue
            props = self.resolver.resolve(resource.get("Properties") or {})
            targets = props.get("Targets") or [props.get("Target") or {}]
            for target in targets:
                spec = functions.get(str(target.get("Arn")))
                if spec is None or not props.get("ScheduleExpression"):
                    log.warning("%s: only schedules of a function run locally", logical_id)
                    continue
                found.append(
                    ScheduleSource(
                        spec.logical_id,
                        _event_name(logical_id, spec.logical_id),
                        str(props["ScheduleExpression"]),
                        target.get("Input"),
                        str(props.get("State", "ENABLED")).upper() != "DISABLED",
                    )
                )
        return found


# An API Gateway Lambda integration's URI: ".../functions/<function ARN>/invocations".
_INVOKED_FUNCTION = re.compile(r"/functions/(arn:[^/]+)/invocations$")


def refuse_unknown_types(template: dict[str, Any]) -> None:
    """Fail the start on a resource type that is neither emulated nor in NOT_EMULATED, so
    nothing the template adds is left out silently."""
    for logical_id, resource in template["Resources"].items():
        kind = resource.get("Type")
        if kind not in EMULATED and kind not in NOT_EMULATED:
            raise TemplateError(
                f"{logical_id}: the local stack does not know resource type {kind}: emulate "
                "it (local_stack/model.py EMULATED) or name it in NOT_EMULATED with the reason "
                "it can be left out locally"
            )


def _event_name(logical_id: str, function: str) -> str:
    """The SAM event a generated resource came from: SAM names it <Function><Event>."""
    return logical_id[len(function) :] if logical_id.startswith(function) else logical_id


def _env_text(value: Any) -> str:
    """Lambda environment values are strings; CloudFormation stringifies numbers and bools."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def _truthy(value: Any) -> bool:
    return value if isinstance(value, bool) else str(value).lower() == "true"
