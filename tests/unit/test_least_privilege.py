"""Every function may do exactly what this file lists to DynamoDB and SQS, and no more.

The table below is the reviewed grant. A policy in template.yaml that adds an action, a
resource or a function fails here until the table is updated in the same change, so a
widening is always a visible, reviewed line. (SAM adds the SQS event sources' poller
permissions and the basic logging/X-Ray policies itself; they are not in the template.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from local_stack.template import load_template

TEMPLATE = Path(__file__).resolve().parents[2] / "template.yaml"
SERVICES = ("dynamodb:", "sqs:")

# Resources are written as the template names them: "JobsTable" is `!GetAtt JobsTable.Arn`,
# "ImagesTable/index/FailedImages" is `!Sub "${ImagesTable.Arn}/index/FailedImages"`.
EXPECTED: dict[str, set[tuple[str, str]]] = {
    "SubmitFunction": {
        ("dynamodb:BatchGetItem", "StoresTable"),
        ("dynamodb:PutItem", "JobsTable"),
        ("dynamodb:BatchWriteItem", "ImagesTable"),
        ("sqs:SendMessage", "ImageQueue"),
        ("dynamodb:GetItem", "IdempotencyTable"),
        ("dynamodb:PutItem", "IdempotencyTable"),
        ("dynamodb:UpdateItem", "IdempotencyTable"),
        ("dynamodb:DeleteItem", "IdempotencyTable"),
    },
    "ProcessFunction": {
        ("dynamodb:UpdateItem", "ImagesTable"),
        ("dynamodb:ConditionCheckItem", "ImagesTable"),
        ("dynamodb:UpdateItem", "JobsTable"),
        ("dynamodb:GetItem", "JobsTable"),
        ("sqs:ChangeMessageVisibility", "ImageQueue"),
    },
    "DeadLetterFunction": {
        ("dynamodb:UpdateItem", "ImagesTable"),
        ("dynamodb:UpdateItem", "JobsTable"),
        ("dynamodb:GetItem", "JobsTable"),
    },
    "ReconcilerFunction": {
        ("dynamodb:Query", "JobsTable/index/OngoingJobs"),
        ("dynamodb:GetItem", "JobsTable"),
        ("dynamodb:UpdateItem", "JobsTable"),
        ("dynamodb:Query", "ImagesTable"),
        ("dynamodb:UpdateItem", "ImagesTable"),
        ("dynamodb:PutItem", "ImagesTable"),
        ("sqs:SendMessage", "ImageQueue"),
    },
    "StatusFunction": {
        ("dynamodb:GetItem", "JobsTable"),
        ("dynamodb:Query", "ImagesTable/index/FailedImages"),
    },
    "VisitsFunction": {
        ("dynamodb:Query", "ImagesTable/index/StoreVisits"),
        ("dynamodb:Query", "ImagesTable/index/AreaVisits"),
        ("dynamodb:Query", "StoresTable/index/StoresByArea"),
        ("dynamodb:GetItem", "StoresTable"),
        ("dynamodb:BatchGetItem", "StoresTable"),
    },
}


def _functions() -> dict[str, dict[str, Any]]:
    template = load_template(TEMPLATE)
    return {
        logical_id: resource.get("Properties") or {}
        for logical_id, resource in template["Resources"].items()
        if resource["Type"] == "AWS::Serverless::Function"
    }


def _resource_name(resource: Any) -> str:
    """A resource as the table above writes it; anything else is returned as text, so it
    shows up in the failure message instead of matching by accident."""
    if isinstance(resource, dict) and set(resource) == {"Fn::GetAtt"}:
        name, attribute = resource["Fn::GetAtt"]
        return name if attribute == "Arn" else f"{name}.{attribute}"
    if isinstance(resource, dict) and set(resource) == {"Fn::Sub"}:
        text = resource["Fn::Sub"]
        if isinstance(text, str) and text.startswith("${") and ".Arn}" in text:
            name, rest = text[2:].split(".Arn}", 1)
            return name + rest
    return repr(resource)


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _statements(properties: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        statement
        for policy in _as_list(properties.get("Policies") or [])
        if isinstance(policy, dict)
        for statement in _as_list(policy.get("Statement") or [])
    ]


def _granted(properties: dict[str, Any]) -> set[tuple[str, str]]:
    return {
        (action, _resource_name(resource))
        for statement in _statements(properties)
        for action in _as_list(statement.get("Action"))
        if str(action).startswith(SERVICES)
        for resource in _as_list(statement.get("Resource"))
    }


def test_the_table_covers_every_function() -> None:
    assert set(_functions()) == set(EXPECTED), (
        "a function was added or removed: list its exact DynamoDB/SQS grants in EXPECTED"
    )


@pytest.mark.parametrize("function", sorted(EXPECTED))
def test_dynamodb_and_sqs_grants_are_exactly_the_reviewed_ones(function: str) -> None:
    granted = _granted(_functions()[function])
    assert granted == EXPECTED[function], (
        f"{function}: added {sorted(granted - EXPECTED[function])}, "
        f"removed {sorted(EXPECTED[function] - granted)}"
    )


@pytest.mark.parametrize("function", sorted(EXPECTED))
def test_no_wildcards_and_only_explicit_allows(function: str) -> None:
    for statement in _statements(_functions()[function]):
        assert statement.get("Effect") == "Allow", statement
        assert not {"NotAction", "NotResource"} & set(statement), statement
        for action in _as_list(statement.get("Action")):
            assert isinstance(action, str) and "*" not in action, statement
        for resource in _as_list(statement.get("Resource")):
            assert "*" not in repr(resource), statement


@pytest.mark.parametrize("function", sorted(EXPECTED))
def test_no_managed_policies_policy_templates_or_own_roles(function: str) -> None:
    properties = _functions()[function]
    for policy in _as_list(properties.get("Policies") or []):
        # A string is a managed policy name or ARN; a dict without Statement is a SAM
        # policy template (DynamoDBCrudPolicy...), which grants whole tables at once.
        assert isinstance(policy, dict) and "Statement" in policy, policy
    assert "ManagedPolicyArns" not in properties
    assert "Role" not in properties, "a role of its own bypasses these policies"
    assert "PermissionsBoundary" not in properties


def test_globals_grant_nothing() -> None:
    function_globals = (load_template(TEMPLATE).get("Globals") or {}).get("Function") or {}
    assert not {"Policies", "Role", "ManagedPolicyArns"} & set(function_globals)
