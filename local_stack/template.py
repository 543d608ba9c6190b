"""Read template.yaml the way CloudFormation and SAM would, for one machine.

The local stack derives everything (tables, queues, functions, routes, event sources) from
the template itself, so a resource another engineer adds there runs locally with no change
here. This module loads the YAML (with the short-form tags), evaluates Conditions and
resolves intrinsic functions; SAM's translator (local_stack/sam.py) does the rest, Globals
included. It knows nothing about what the functions do.

It is the one evaluator of the template's conditions: the SAM translation (local_stack/sam.py,
which the least-privilege checks read too) and the MiniStack deployment
(deployed/ministack_compat.py) decide the `Fn::If`s that AWS::LanguageExtensions decides
with `decide_fn_if_in_sam_resources`.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REGION = "us-east-1"
ACCOUNT_ID = "123456789012"  # MiniStack runs as it (MINISTACK_ACCOUNT_ID): ARNs match
PARTITION = "aws"

TABLE = "AWS::DynamoDB::Table"
QUEUE = "AWS::SQS::Queue"

# Short-form tag -> long-form key. `!GetAtt A.B` is special-cased (a dotted scalar).
_TAGS = {
    "Ref": "Ref",
    "Condition": "Condition",
    **{
        name: f"Fn::{name}"
        for name in [
            "Base64",
            "Cidr",
            "FindInMap",
            "GetAtt",
            "GetAZs",
            "ImportValue",
            "Join",
            "Select",
            "Split",
            "Sub",
            "Transform",
            "If",
            "Equals",
            "Not",
            "And",
            "Or",
            "Length",
            "ToJsonString",
        ]
    },
}


class TemplateError(Exception):
    """The template uses something the local stack cannot resolve; the message says what."""


class _Loader(yaml.SafeLoader):
    """SafeLoader that turns CloudFormation's `!Tag` shorthand into `{"Fn::Tag": ...}`."""


def _construct_tag(loader: _Loader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    if suffix not in _TAGS:
        raise TemplateError(f"unknown YAML tag !{suffix}")
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
        if suffix == "GetAtt":
            value = value.split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        assert isinstance(node, yaml.MappingNode)
        value = loader.construct_mapping(node, deep=True)
    return {_TAGS[suffix]: value}


_Loader.add_multi_constructor("!", _construct_tag)


def load_template(path: str | Path) -> dict[str, Any]:
    """The template as plain dicts and lists, short-form tags expanded to long form."""
    with open(path, encoding="utf-8") as handle:
        document = yaml.load(handle, Loader=_Loader)
    if not isinstance(document, dict) or "Resources" not in document:
        raise TemplateError(f"{path} is not a CloudFormation template (no Resources)")
    return document


_NO_VALUE = object()  # AWS::NoValue: the enclosing key or list item disappears


@dataclass
class Resolver:
    """Resolves intrinsic functions against parameters, conditions and physical ids.

    `refs` maps a logical id to what `Ref` returns (a table name, a queue URL...);
    `attrs` maps (logical id, attribute) to what `Fn::GetAtt` returns.
    """

    parameters: dict[str, Any] = field(default_factory=dict)
    refs: dict[str, Any] = field(default_factory=dict)
    attrs: dict[tuple[str, str], Any] = field(default_factory=dict)
    conditions: dict[str, Any] = field(default_factory=dict)
    mappings: dict[str, Any] = field(default_factory=dict)
    stack_name: str = "retail-pulse-local"
    region: str = REGION
    account_id: str = ACCOUNT_ID
    _condition_values: dict[str, bool] = field(default_factory=dict, repr=False)

    def pseudo(self, name: str) -> Any:
        values = {
            "AWS::Region": self.region,
            "AWS::AccountId": self.account_id,
            "AWS::StackName": self.stack_name,
            "AWS::StackId": (
                f"arn:{PARTITION}:cloudformation:{self.region}:{self.account_id}:"
                f"stack/{self.stack_name}/00000000-0000-0000-0000-000000000000"
            ),
            "AWS::Partition": PARTITION,
            "AWS::URLSuffix": "amazonaws.com",
            "AWS::NotificationARNs": [],
            "AWS::NoValue": _NO_VALUE,
        }
        if name not in values:
            raise TemplateError(f"unknown pseudo parameter {name}")
        return values[name]

    def condition(self, name: str) -> bool:
        if name not in self._condition_values:
            if name not in self.conditions:
                raise TemplateError(f"unknown condition {name}")
            self._condition_values[name] = bool(self.resolve(self.conditions[name]))
        return self._condition_values[name]

    def ref(self, name: str) -> Any:
        if name.startswith("AWS::"):
            return self.pseudo(name)
        if name in self.parameters:
            return self.parameters[name]
        if name in self.refs:
            return self.refs[name]
        raise TemplateError(f"cannot resolve Ref {name}: no parameter or known resource")

    def get_att(self, name: str, attribute: str) -> Any:
        if (name, attribute) in self.attrs:
            return self.attrs[(name, attribute)]
        raise TemplateError(f"cannot resolve Fn::GetAtt {name}.{attribute}")

    def resolve(self, value: Any) -> Any:
        """`value` with every intrinsic function replaced by its result."""
        if isinstance(value, list):
            items = [self.resolve(item) for item in value]
            return [item for item in items if item is not _NO_VALUE]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            ((key, arg),) = value.items()
            handler = _INTRINSICS.get(key)
            if handler is not None:
                return handler(self, arg)
        resolved = {key: self.resolve(item) for key, item in value.items()}
        return {key: item for key, item in resolved.items() if item is not _NO_VALUE}

    def sub(self, arg: Any) -> str:
        if isinstance(arg, list):
            text, variables = arg[0], self.resolve(arg[1])
        else:
            text, variables = arg, {}

        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            if name.startswith("!"):  # ${!Literal} stays as ${Literal}
                return "${" + name[1:] + "}"
            if name in variables:
                return str(variables[name])
            if "." in name and not name.startswith("AWS::"):
                resource, attribute = name.split(".", 1)
                return str(self.get_att(resource, attribute))
            return str(self.ref(name))

        return re.sub(r"\$\{([^}]+)\}", replace, text)


def _get_att(resolver: Resolver, arg: Any) -> Any:
    if isinstance(arg, str):
        arg = arg.split(".", 1)
    name, attribute = (resolver.resolve(part) for part in arg)
    return resolver.get_att(name, attribute)


def _select(resolver: Resolver, arg: Any) -> Any:
    index, items = resolver.resolve(arg)
    return items[int(index)]


def _if(resolver: Resolver, arg: Any) -> Any:
    name, when_true, when_false = arg
    return resolver.resolve(when_true if resolver.condition(name) else when_false)


def _find_in_map(resolver: Resolver, arg: Any) -> Any:
    name, top, second = resolver.resolve(arg)
    try:
        return resolver.mappings[name][top][second]
    except KeyError as error:
        raise TemplateError(f"Fn::FindInMap {name}/{top}/{second} not found") from error


def _unsupported(name: str) -> Callable[[Resolver, Any], Any]:
    def fail(_resolver: Resolver, _arg: Any) -> Any:
        raise TemplateError(f"{name} is not supported by the local stack")

    return fail


_INTRINSICS: dict[str, Callable[[Resolver, Any], Any]] = {
    "Ref": lambda r, a: r.ref(r.resolve(a)),
    "Condition": lambda r, a: r.condition(a),
    "Fn::GetAtt": _get_att,
    "Fn::Sub": lambda r, a: r.sub(a),
    "Fn::Join": lambda r, a: str(r.resolve(a[0])).join(str(x) for x in r.resolve(a[1])),
    "Fn::Select": _select,
    "Fn::Split": lambda r, a: str(r.resolve(a[1])).split(r.resolve(a[0])),
    "Fn::If": _if,
    "Fn::Equals": lambda r, a: str(r.resolve(a[0])) == str(r.resolve(a[1])),
    "Fn::Not": lambda r, a: not r.resolve(a[0]),
    "Fn::And": lambda r, a: all(r.resolve(x) for x in a),
    "Fn::Or": lambda r, a: any(r.resolve(x) for x in a),
    "Fn::FindInMap": _find_in_map,
    "Fn::Base64": lambda r, a: base64.b64encode(str(r.resolve(a)).encode()).decode(),
    "Fn::GetAZs": lambda r, a: [f"{r.region}{zone}" for zone in "abc"],
    "Fn::Length": lambda r, a: len(r.resolve(a)),
    "Fn::ToJsonString": lambda r, a: json.dumps(r.resolve(a), separators=(",", ":")),
    "Fn::ImportValue": _unsupported("Fn::ImportValue"),
    "Fn::Cidr": _unsupported("Fn::Cidr"),
    "Fn::Transform": _unsupported("Fn::Transform"),
}


def parameter_values(template: Mapping[str, Any], overrides: Mapping[str, str]) -> dict[str, Any]:
    """Each parameter's default, or its override; a parameter with neither is an error."""
    values: dict[str, Any] = {}
    for name, spec in (template.get("Parameters") or {}).items():
        if name in overrides:
            values[name] = overrides[name]
        elif "Default" in spec:
            values[name] = spec["Default"]
        else:
            raise TemplateError(f"parameter {name} has no Default and no override")
        if spec.get("Type") == "CommaDelimitedList" and isinstance(values[name], str):
            values[name] = [part.strip() for part in values[name].split(",")]
    unknown = set(overrides) - set(values)
    if unknown:
        raise TemplateError(f"overrides for unknown parameters: {sorted(unknown)}")
    return values


def make_resolver(
    template: Mapping[str, Any],
    overrides: Mapping[str, str] | None = None,
    stack_name: str = "retail-pulse-local",
) -> Resolver:
    return Resolver(
        parameters=parameter_values(template, overrides or {}),
        conditions=dict(template.get("Conditions") or {}),
        mappings=dict(template.get("Mappings") or {}),
        stack_name=stack_name,
    )


def active_resources(template: Mapping[str, Any], resolver: Resolver) -> dict[str, dict]:
    """Resources whose `Condition` (if any) holds, as CloudFormation would create them."""
    return {
        logical_id: resource
        for logical_id, resource in template["Resources"].items()
        if "Condition" not in resource or resolver.condition(resource["Condition"])
    }


def decide_fn_if_in_sam_resources(template: dict[str, Any], resolver: Resolver) -> list[str]:
    """What AWS::LanguageExtensions does before the SAM transform reads the template: every
    `Fn::If` inside an `AWS::Serverless::*` resource is decided, since SAM alone cannot make
    a property (an Api's Auth) conditional. Changes `template` in place and says where each
    `Fn::If` was decided and which way."""
    decided: list[str] = []

    def decide(node: Any, where: str) -> Any:
        if isinstance(node, dict) and set(node) == {"Fn::If"}:
            name, when_true, when_false = node["Fn::If"]
            holds = resolver.condition(name)
            decided.append(f"{where}: Fn::If [{name}] -> {'true' if holds else 'false'}")
            return decide(when_true if holds else when_false, where)
        if node == {"Ref": "AWS::NoValue"}:
            return _NO_VALUE
        if isinstance(node, dict):
            items = {key: decide(item, f"{where}.{key}") for key, item in node.items()}
            return {key: item for key, item in items.items() if item is not _NO_VALUE}
        if isinstance(node, list):
            return [item for item in (decide(v, where) for v in node) if item is not _NO_VALUE]
        return node

    for logical_id, resource in (template.get("Resources") or {}).items():
        properties = resource.get("Properties") or {}
        if str(resource.get("Type", "")).startswith("AWS::Serverless::") and _has_fn_if(properties):
            resource["Properties"] = decide(properties, logical_id)
    return decided


def _has_fn_if(node: Any) -> bool:
    if isinstance(node, dict):
        return "Fn::If" in node or any(_has_fn_if(item) for item in node.values())
    if isinstance(node, list):
        return any(_has_fn_if(item) for item in node)
    return False
