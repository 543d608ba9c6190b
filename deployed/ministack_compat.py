"""What MiniStack alone lacks, worked around on a COPY of the built template.

template.yaml is the template AWS gets; nothing here changes it. `adapt` takes the template
`sam build` wrote (long-form intrinsics) and the parameter values of the deployment, and
returns a copy that MiniStack MINISTACK_VERSION deploys and runs as AWS would run the
original; `after_deploy` does, through the deployed stack's APIs, what MiniStack did not do
from the template. Each workaround names what MiniStack does and what AWS does instead, so it can be
deleted when MiniStack does the same (tests/unit/test_ministack_compat.py pins each one).

Nothing here is about this machine or about tests: the architecture, the endpoint and the
allowed image host are template parameters, passed to `sam build` and `sam deploy`.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from local_stack.template import Resolver, TemplateError, decide_fn_if_in_sam_resources

# The MiniStack these workarounds were written against (and `make test-deployed` installs).
MINISTACK_VERSION = "1.5.33"


class CompatError(Exception):
    """The template uses something these workarounds cannot carry over; the message says what."""


@dataclass(frozen=True)
class Workaround:
    name: str
    ministack: str  # what MiniStack MINISTACK_VERSION does with the template as it is
    upstream: str  # what AWS (CloudFormation, the transforms, the services) does
    # On the copy of the template, before the deployment: returns what it changed.
    apply: Callable[[dict[str, Any], Mapping[str, str]], list[str]] | None = None
    # On the deployed stack, through API Gateway's API (apigateway client, the template,
    # the stack's physical ids by logical id): returns what it changed.
    after_deploy: Callable[[Any, dict[str, Any], Mapping[str, str]], list[str]] | None = None


# -- AWS::LanguageExtensions: Fn::If inside SAM resources ----------------------------------


def _resolve_fn_if_in_sam_resources(
    template: dict[str, Any], parameters: Mapping[str, str]
) -> list[str]:
    """Decide every `Fn::If` inside an `AWS::Serverless::*` resource, as the transform does,
    by the local stack's evaluator of the template's conditions."""
    resolver = Resolver(
        parameters=dict(parameters),
        conditions=dict(template.get("Conditions") or {}),
        mappings=dict(template.get("Mappings") or {}),
    )
    try:
        return decide_fn_if_in_sam_resources(template, resolver)
    except TemplateError as error:
        raise CompatError(f"a condition cannot be decided before the deployment: {error}") from None


# -- Resource types and properties MiniStack does not provision -----------------------------


def _drop_query_definitions(template: dict[str, Any], parameters: Mapping[str, str]) -> list[str]:
    return _drop(template, lambda r: r.get("Type") == "AWS::Logs::QueryDefinition")


def _drop_metric_math_alarms(template: dict[str, Any], parameters: Mapping[str, str]) -> list[str]:
    return _drop(
        template,
        lambda r: (
            r.get("Type") == "AWS::CloudWatch::Alarm" and "Metrics" in (r.get("Properties") or {})
        ),
    )


def _drop(template: dict[str, Any], unsupported: Callable[[dict[str, Any]], bool]) -> list[str]:
    """Remove the resources; a `${Alarm.Arn}` in an `Fn::Sub` (the dashboard's alarm widget)
    becomes the ARN the alarm would have had. Any other reference to a dropped resource is
    an error: silently deploying something else would prove nothing."""
    resources = template["Resources"]
    dropped = {k: r for k, r in resources.items() if unsupported(r)}
    for logical_id in dropped:
        del resources[logical_id]
    changed = [f"dropped {k} ({r['Type']})" for k, r in dropped.items()]
    for logical_id, resource in dropped.items():
        arn = _alarm_arn(logical_id, resource)
        for holder, key in _subs(template):
            text = holder[key]
            placeholder = f"${{{logical_id}.Arn}}"
            if arn and placeholder in text:
                holder[key] = text.replace(placeholder, arn)
                changed.append(f"an Fn::Sub names {logical_id} by its ARN {arn}")
        if logical_id in _references(template):
            raise CompatError(f"{logical_id} is dropped for MiniStack but still referenced")
    return changed


def _alarm_arn(logical_id: str, resource: dict[str, Any]) -> str | None:
    if resource.get("Type") != "AWS::CloudWatch::Alarm":
        return None
    name = (resource.get("Properties") or {}).get("AlarmName")
    if isinstance(name, dict) and set(name) == {"Fn::Sub"} and isinstance(name["Fn::Sub"], str):
        name = name["Fn::Sub"]
    if not isinstance(name, str):
        raise CompatError(f"{logical_id}: its AlarmName must be a string or an Fn::Sub string")
    return f"arn:${{AWS::Partition}}:cloudwatch:${{AWS::Region}}:${{AWS::AccountId}}:alarm:{name}"


# -- Types CloudFormation converts and MiniStack does not ----------------------------------


def _integer_maximum_concurrency(
    template: dict[str, Any], parameters: Mapping[str, str]
) -> list[str]:
    changed = []
    for logical_id, resource in (template.get("Resources") or {}).items():
        if resource.get("Type") != "AWS::Serverless::Function":
            continue
        for event_id, event in ((resource.get("Properties") or {}).get("Events") or {}).items():
            scaling = (event.get("Properties") or {}).get("ScalingConfig") or {}
            limit = scaling.get("MaximumConcurrency")
            if isinstance(limit, dict) and set(limit) == {"Ref"}:
                name = limit["Ref"]
                if name not in parameters:
                    raise CompatError(f"{logical_id}.{event_id}: {name} is not a parameter")
                scaling["MaximumConcurrency"] = int(parameters[name])
                changed.append(
                    f"{logical_id}.{event_id}: MaximumConcurrency {{Ref: {name}}} -> "
                    f"{scaling['MaximumConcurrency']}"
                )
    return changed


# -- API Gateway: the gateway responses of the OpenAPI body ---------------------------------

_PARAMETER_KINDS = {"Headers": "header", "Paths": "path", "QueryStrings": "querystring"}


def gateway_responses(template: Mapping[str, Any]) -> dict[str, dict[str, dict[str, Any]]]:
    """Each SAM API's GatewayResponses as API Gateway's PutGatewayResponse takes them."""
    apis = {}
    for logical_id, resource in (template.get("Resources") or {}).items():
        if resource.get("Type") != "AWS::Serverless::Api":
            continue
        responses = {}
        for kind, spec in (
            (resource.get("Properties") or {}).get("GatewayResponses") or {}
        ).items():
            call: dict[str, Any] = {"responseType": kind}
            parameters = {
                f"gatewayresponse.{_PARAMETER_KINDS[group]}.{name}": value
                for group, values in (spec.get("ResponseParameters") or {}).items()
                for name, value in values.items()
            }
            if parameters:
                call["responseParameters"] = parameters
            if spec.get("ResponseTemplates"):
                call["responseTemplates"] = dict(spec["ResponseTemplates"])
            if spec.get("StatusCode"):
                call["statusCode"] = str(spec["StatusCode"])
            responses[kind] = call
        if responses:
            apis[logical_id] = responses
    return apis


def _put_gateway_responses(
    apigateway: Any, template: dict[str, Any], physical_ids: Mapping[str, str]
) -> list[str]:
    """Put each API's gateway responses, then redeploy its stages so that they take effect
    (what AWS needs too after a gateway response changes outside the OpenAPI body)."""
    changed = []
    for logical_id, responses in gateway_responses(template).items():
        rest_api_id = physical_ids[logical_id]
        for call in responses.values():
            apigateway.put_gateway_response(restApiId=rest_api_id, **call)
            changed.append(f"{logical_id}: put gateway response {call['responseType']}")
        for stage in apigateway.get_stages(restApiId=rest_api_id)["item"]:
            apigateway.create_deployment(restApiId=rest_api_id, stageName=stage["stageName"])
            changed.append(f"{logical_id}: stage {stage['stageName']} redeployed")
    return changed


WORKAROUNDS: tuple[Workaround, ...] = (
    Workaround(
        name="fn-if-under-language-extensions",
        ministack=(
            "its AWS::LanguageExtensions expands Fn::ForEach, Fn::Length and Fn::ToJsonString "
            "only, so the SAM transform gets the API's Auth as an Fn::If and refuses it: "
            "\"Invalid value for 'Auth' property\""
        ),
        upstream=(
            "AWS::LanguageExtensions resolves an Fn::If whose condition depends on parameters "
            "only before the SAM transform runs (SAM alone cannot make Auth conditional, "
            "aws/serverless-application-model#1859; its Auth.ApiKeyRequired is a plain "
            "boolean, decided when the template is transformed)"
        ),
        apply=_resolve_fn_if_in_sam_resources,
    ),
    Workaround(
        name="no-query-definitions",
        ministack='"Unrecognized resource types: [AWS::Logs::QueryDefinition]"',
        upstream="CloudFormation saves the Logs Insights queries (AWS::Logs::QueryDefinition)",
        apply=_drop_query_definitions,
    ),
    Workaround(
        name="no-metric-math-alarms",
        ministack=(
            '"AWS::CloudWatch::Alarm Properties.Metrics (metric math) is not supported; use '
            'MetricName and Namespace." and the stack rolls back'
        ),
        upstream="CloudWatch alarms on metric math expressions (Metrics with Expression)",
        apply=_drop_metric_math_alarms,
    ),
    Workaround(
        name="integer-maximum-concurrency",
        ministack=(
            "the event source mapping keeps ScalingConfig.MaximumConcurrency from !Ref as the "
            "parameter's string; its SQS poller then fails every pass (\"'>=' not supported "
            "between instances of 'int' and 'str'\") and delivers no message to any function"
        ),
        upstream="CloudFormation passes a Number parameter to the integer property as a number",
        apply=_integer_maximum_concurrency,
    ),
    Workaround(
        name="gateway-responses-from-the-openapi-body",
        ministack=(
            "imports a REST API's OpenAPI body without its x-amazon-apigateway-gateway-responses, "
            "where SAM puts the Api's GatewayResponses: API Gateway's own answers (403, 413, "
            "429...) then lack the template's headers (X-Content-Type-Options, Cache-Control)"
        ),
        upstream="API Gateway imports the gateway responses of the body with the REST API",
        after_deploy=_put_gateway_responses,
    ),
)


@dataclass(frozen=True)
class Applied:
    workaround: Workaround
    changes: list[str]


def parameter_values(template: Mapping[str, Any], overrides: Mapping[str, str]) -> dict[str, str]:
    """Each parameter's value for the deployment: its override, else its default."""
    declared = template.get("Parameters") or {}
    unknown = sorted(set(overrides) - set(declared))
    if unknown:
        raise CompatError(f"overrides for parameters the template does not declare: {unknown}")
    values = {}
    for name, spec in declared.items():
        if name in overrides:
            values[name] = str(overrides[name])
        elif "Default" in spec:
            values[name] = str(spec["Default"])
    return values


def adapt(
    template: Mapping[str, Any], overrides: Mapping[str, str]
) -> tuple[dict[str, Any], list[Applied]]:
    """A copy of `template` that MiniStack deploys, and what each workaround changed in it."""
    adapted = copy.deepcopy(dict(template))
    parameters = parameter_values(adapted, overrides)
    applied = []
    for workaround in WORKAROUNDS:
        changes = workaround.apply(adapted, parameters) if workaround.apply else []
        if changes:
            applied.append(Applied(workaround, changes))
    return adapted, applied


def after_deploy(
    apigateway: Any, template: Mapping[str, Any], physical_ids: Mapping[str, str]
) -> list[Applied]:
    """The workarounds made through the deployed stack's APIs; `template` is the adapted
    copy that was deployed."""
    applied = []
    for workaround in WORKAROUNDS:
        if workaround.after_deploy:
            changes = workaround.after_deploy(apigateway, dict(template), physical_ids)
            if changes:
                applied.append(Applied(workaround, changes))
    return applied


def describe(applied: list[Applied], where: str = "to a copy of the template") -> str:
    """What was changed and why, for the deployed run's log."""
    lines = [f"MiniStack {MINISTACK_VERSION} workarounds applied {where}:"]
    for item in applied:
        lines.append(f"- {item.workaround.name}: MiniStack {item.workaround.ministack}")
        lines.append(f"  AWS: {item.workaround.upstream}")
        lines.extend(f"  changed: {change}" for change in item.changes)
    return "\n".join(lines)


# -- Walking the template -----------------------------------------------------------------


def _walk(node: Any) -> Iterator[Any]:
    yield node
    if isinstance(node, dict):
        for item in node.values():
            yield from _walk(item)
    elif isinstance(node, list):
        for item in node:
            yield from _walk(item)


def _subs(template: dict[str, Any]) -> Iterator[tuple[Any, Any]]:
    """(container, key) of every Fn::Sub string, so that it can be rewritten in place."""
    for node in list(_walk(template)):
        if isinstance(node, dict) and "Fn::Sub" in node:
            if isinstance(node["Fn::Sub"], str):
                yield node, "Fn::Sub"
            elif isinstance(node["Fn::Sub"], list) and isinstance(node["Fn::Sub"][0], str):
                yield node["Fn::Sub"], 0


_SUB_NAME = re.compile(r"\$\{([A-Za-z0-9]+)(?:\.[^}]*)?\}")


def _references(template: dict[str, Any]) -> set[str]:
    """Every logical id a Ref, Fn::GetAtt, Fn::Sub or DependsOn of the template names."""
    names: set[str] = set()
    for node in _walk(template):
        if not isinstance(node, dict):
            continue
        if isinstance(node.get("Ref"), str):
            names.add(node["Ref"])
        attribute = node.get("Fn::GetAtt")
        if isinstance(attribute, list) and attribute and isinstance(attribute[0], str):
            names.add(attribute[0])
        elif isinstance(attribute, str):
            names.add(attribute.split(".", 1)[0])
        depends = node.get("DependsOn")
        if isinstance(depends, str):
            names.add(depends)
        elif isinstance(depends, list):
            names.update(d for d in depends if isinstance(d, str))
    for holder, key in _subs(template):
        names.update(_SUB_NAME.findall(holder[key]))
    return names
