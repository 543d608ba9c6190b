"""Every function may do exactly what this file lists to DynamoDB and SQS, and no more, as
deployed: the checks read the template after the SAM transform (local_stack/sam.py, SAM's
own translator, the local stack's reading too), so what SAM adds by itself is checked too. (For a
function with an SQS event and a role SAM generates, SAM attaches the managed
AWSLambdaSQSQueueExecutionRole: receive and delete on every queue of the account.)

The table below is the reviewed grant. A policy that adds an action, a resource or a
function fails here until the table is updated in the same change, so a widening is always
a visible, reviewed line.
"""

from __future__ import annotations

import json
import re
import sys
from functools import cache
from pathlib import Path
from typing import Any

from local_stack.sam import translate
from local_stack.template import load_template

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "template.yaml"
SERVICES = ("dynamodb:", "sqs:", "events:", "s3:")
# S3 grants name objects by key prefix, "UploadsBucket/uploads/*": the one wildcard allowed,
# at the end of a named prefix, in statements of s3 actions only.
OBJECT_PREFIX = re.compile(r"^\w+Bucket/[a-z]+/\*$")
# Logs and X-Ray only: the managed policies SAM itself gives a function with Tracing on.
ALLOWED_MANAGED_POLICIES = {
    "service-role/AWSLambdaBasicExecutionRole",
    "AWSXrayWriteOnlyAccess",
}
POLLER = ("sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes")
DEFAULT_BUS = "arn:${AWS::Partition}:events:${AWS::Region}:${AWS::AccountId}:event-bus/default"
# What announcing a job's end takes (jobs/finish.py): its failures (summed up once from
# FailedImages, or from the job's records while the index lags), its event, its webhook; a
# large failed job's paged summary handed on to the ingest function (jobs/summary.py).
ANNOUNCE = {
    ("dynamodb:Query", "ImagesTable/index/FailedImages"),
    ("dynamodb:Query", "ImagesTable"),
    ("events:PutEvents", "default event bus"),
    ("sqs:SendMessage", "WebhookQueue"),
    ("sqs:SendMessage", "IngestQueue"),
}

# Resources are written as the template names them: "JobsTable" is `!GetAtt JobsTable.Arn`,
# "ImagesTable/index/FailedImages" is `!Sub "${ImagesTable.Arn}/index/FailedImages"`.
EXPECTED: dict[str, set[tuple[str, str]]] = {
    "SubmitFunction": {
        ("dynamodb:BatchGetItem", "StoresTable"),
        ("dynamodb:PutItem", "JobsTable"),
        ("dynamodb:GetItem", "JobsTable"),
        ("dynamodb:UpdateItem", "JobsTable"),
        *ANNOUNCE,
        ("dynamodb:BatchWriteItem", "ImagesTable"),
        ("sqs:SendMessage", "ImageQueue"),
        ("sqs:SendMessage", "ExpressImageQueue"),
        ("dynamodb:GetItem", "IdempotencyTable"),
        ("dynamodb:PutItem", "IdempotencyTable"),
        ("dynamodb:UpdateItem", "IdempotencyTable"),
        ("dynamodb:DeleteItem", "IdempotencyTable"),
        # An upload's job: its record claimed, its object looked at, the ingest's message.
        ("dynamodb:GetItem", "UploadsTable"),
        ("dynamodb:UpdateItem", "UploadsTable"),
        ("s3:GetObject", "UploadsBucket/uploads/*"),
        ("sqs:SendMessage", "IngestQueue"),
    },
    "UploadsFunction": {
        ("dynamodb:PutItem", "UploadsTable"),
        # What its presigned POSTs may do: put objects under uploads/, nothing else.
        ("s3:PutObject", "UploadsBucket/uploads/*"),
    },
    "IngestFunction": {
        ("dynamodb:UpdateItem", "JobsTable"),
        ("dynamodb:GetItem", "JobsTable"),
        ("dynamodb:GetItem", "UploadsTable"),
        # The upload, the version submit found: under uploads/ only, never written.
        ("s3:GetObject", "UploadsBucket/uploads/*"),
        ("s3:GetObjectVersion", "UploadsBucket/uploads/*"),
        ("dynamodb:BatchWriteItem", "ImagesTable"),
        # A large retry's pages (jobs/retry.py): failed records back to pending.
        ("dynamodb:UpdateItem", "ImagesTable"),
        # A large failed job's summary, page by page (jobs/summary.py).
        ("dynamodb:Query", "ImagesTable/index/FailedStores"),
        ("dynamodb:BatchGetItem", "StoresTable"),
        ("sqs:SendMessage", "ImageQueue"),
        ("sqs:SendMessage", "ExpressImageQueue"),
        ("sqs:SendMessage", "IngestQueue"),
        *((action, "IngestQueue") for action in POLLER),
        *ANNOUNCE,
    },
    "ProcessFunction": {
        ("dynamodb:UpdateItem", "ImagesTable"),
        # A refused image write told from a duplicate (data/jobs.py _file_image).
        ("dynamodb:GetItem", "ImagesTable"),
        ("dynamodb:ConditionCheckItem", "ImagesTable"),
        ("dynamodb:UpdateItem", "JobsTable"),
        ("dynamodb:GetItem", "JobsTable"),
        # An image sent again (a retry or a give-back), hidden instead if that send fails.
        ("sqs:SendMessage", "ImageQueue"),
        ("sqs:SendMessage", "ExpressImageQueue"),
        ("sqs:ChangeMessageVisibility", "ImageQueue"),
        ("sqs:ChangeMessageVisibility", "ExpressImageQueue"),
        *((action, "ImageQueue") for action in POLLER),
        *((action, "ExpressImageQueue") for action in POLLER),
        *ANNOUNCE,
    },
    "DeadLetterFunction": {
        ("dynamodb:UpdateItem", "ImagesTable"),
        ("dynamodb:UpdateItem", "JobsTable"),
        ("dynamodb:GetItem", "JobsTable"),
        *((action, "ImageDeadLetterQueue") for action in POLLER),
        *((action, "ExpressDeadLetterQueue") for action in POLLER),
        *ANNOUNCE,
    },
    "WebhookFunction": {
        ("sqs:ChangeMessageVisibility", "WebhookQueue"),
        *((action, "WebhookQueue") for action in POLLER),
        ("sqs:SendMessage", "WebhookDeadLetterQueue"),
        # The client's secrets, made by its first delivery if it never asked for them.
        ("dynamodb:GetItem", "WebhookSecretsTable"),
        ("dynamodb:PutItem", "WebhookSecretsTable"),
    },
    "WebhookSecretFunction": {
        ("dynamodb:GetItem", "WebhookSecretsTable"),
        ("dynamodb:PutItem", "WebhookSecretsTable"),
        ("dynamodb:UpdateItem", "WebhookSecretsTable"),
    },
    "ReconcilerFunction": {
        ("dynamodb:Query", "JobsTable/index/OngoingJobs"),
        ("dynamodb:GetItem", "JobsTable"),
        ("dynamodb:UpdateItem", "JobsTable"),
        ("dynamodb:Query", "ImagesTable"),
        ("dynamodb:UpdateItem", "ImagesTable"),
        ("dynamodb:PutItem", "ImagesTable"),
        # A stale filing's records, and images a retry reopened.
        ("dynamodb:BatchGetItem", "ImagesTable"),
        ("sqs:SendMessage", "ImageQueue"),
        ("sqs:SendMessage", "ExpressImageQueue"),
        # A lost ingest's or large retry's message, sent again.
        ("sqs:SendMessage", "IngestQueue"),
        *ANNOUNCE,
    },
    "JobActionsFunction": {
        ("dynamodb:GetItem", "JobsTable"),
        ("dynamodb:UpdateItem", "JobsTable"),
        ("dynamodb:Query", "ImagesTable"),
        ("dynamodb:UpdateItem", "ImagesTable"),
        ("dynamodb:BatchGetItem", "StoresTable"),
        ("sqs:SendMessage", "ImageQueue"),
        ("sqs:SendMessage", "ExpressImageQueue"),
        # A retry of more than one page hands the rest on to the ingest function.
        ("sqs:SendMessage", "IngestQueue"),
        *ANNOUNCE,
    },
    "StatusFunction": {
        ("dynamodb:GetItem", "JobsTable"),
        # A job that failed before summaries were kept: summed up once, and kept.
        ("dynamodb:Query", "ImagesTable/index/FailedImages"),
        ("dynamodb:Query", "ImagesTable"),
        ("dynamodb:UpdateItem", "JobsTable"),
    },
    "VisitsFunction": {
        ("dynamodb:Query", "ImagesTable/index/StoreVisits"),
        ("dynamodb:Query", "ImagesTable/index/AreaVisits"),
        ("dynamodb:Query", "StoresTable/index/StoresByArea"),
        ("dynamodb:GetItem", "StoresTable"),
        ("dynamodb:BatchGetItem", "StoresTable"),
    },
    "ListJobsFunction": {
        ("dynamodb:Query", "JobsTable/index/TenantJobs"),
        ("dynamodb:BatchGetItem", "JobsTable"),
    },
    "ExportFunction": {
        # The export's lease and checkpoint, the job, its images by the table's keys.
        ("dynamodb:UpdateItem", "ExportsTable"),
        ("dynamodb:GetItem", "JobsTable"),
        ("dynamodb:Query", "ImagesTable"),
        # The file: a multipart upload under exports/ only, dropped when the export fails.
        ("s3:PutObject", "UploadsBucket/exports/*"),
        ("s3:AbortMultipartUpload", "UploadsBucket/exports/*"),
        ("s3:GetObject", "UploadsBucket/exports/*"),
        ("sqs:SendMessage", "ExportQueue"),
        *((action, "ExportQueue") for action in POLLER),
    },
    "ResultsFunction": {
        # POST /api/results/export: the export's record, the export function's message, and
        # what its presigned GET may read (files under exports/, nothing else).
        ("dynamodb:GetItem", "ExportsTable"),
        ("dynamodb:PutItem", "ExportsTable"),
        ("sqs:SendMessage", "ExportQueue"),
        ("s3:GetObject", "UploadsBucket/exports/*"),
        ("dynamodb:GetItem", "JobsTable"),
        ("dynamodb:Query", "ImagesTable"),
        # status=failed: the failures' keys from the index, their records in one batch.
        ("dynamodb:Query", "ImagesTable/index/FailedImages"),
        ("dynamodb:BatchGetItem", "ImagesTable"),
    },
}


@cache
def _translated(template: Path = TEMPLATE) -> dict[str, Any]:
    """The CloudFormation template SAM makes of `template` (what AWS provisions)."""
    return translate(load_template(template))


def _roles(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each Lambda function's execution role (its properties), by the function's logical id."""
    resources = template["Resources"]
    roles = {}
    for logical_id, resource in resources.items():
        if resource["Type"] != "AWS::Lambda::Function":
            continue
        role = resource["Properties"]["Role"]
        assert isinstance(role, dict) and set(role) == {"Fn::GetAtt"}, (
            f"{logical_id}: its role must be one of this stack's roles, not {role!r}"
        )
        role_id, attribute = role["Fn::GetAtt"]
        assert attribute == "Arn" and resources[role_id]["Type"] == "AWS::IAM::Role"
        roles[logical_id] = resources[role_id]["Properties"]
    return roles


def _resource_name(resource: Any) -> str:
    """A resource as the table above writes it; anything else is returned as text, so it
    shows up in the failure message instead of matching by accident."""
    if isinstance(resource, dict) and set(resource) == {"Fn::GetAtt"}:
        name, attribute = resource["Fn::GetAtt"]
        return name if attribute == "Arn" else f"{name}.{attribute}"
    if isinstance(resource, dict) and set(resource) == {"Fn::Sub"}:
        text = resource["Fn::Sub"]
        if text == DEFAULT_BUS:
            return "default event bus"
        if isinstance(text, str) and text.startswith("${") and ".Arn}" in text:
            name, rest = text[2:].split(".Arn}", 1)
            return name + rest
    return repr(resource)


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _statements(role: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        statement
        for policy in role.get("Policies") or []
        for statement in _as_list(policy["PolicyDocument"].get("Statement") or [])
    ]


def _granted(role: dict[str, Any]) -> set[tuple[str, str]]:
    return {
        (action, _resource_name(resource))
        for statement in _statements(role)
        for action in _as_list(statement.get("Action"))
        if str(action).startswith(SERVICES)
        for resource in _as_list(statement.get("Resource"))
    }


def _managed_policy_names(role: dict[str, Any]) -> set[str]:
    names = set()
    for arn in role.get("ManagedPolicyArns") or []:
        text = arn.get("Fn::Sub") if isinstance(arn, dict) else arn
        assert isinstance(text, str), f"a managed policy this test cannot read: {arn!r}"
        names.add(text.split(":policy/", 1)[1])
    return names


def _object_prefix(statement: dict[str, Any], resource: Any) -> bool:
    """An S3 statement on the objects under one named prefix of a bucket of the stack."""
    actions = _as_list(statement.get("Action"))
    return all(str(action).startswith("s3:") for action in actions) and bool(
        OBJECT_PREFIX.match(_resource_name(resource))
    )


def _problems(template: dict[str, Any]) -> list[str]:
    """Every grant that is not in the reviewed table or reaches beyond it."""
    problems = []
    roles = _roles(template)
    if set(roles) != set(EXPECTED):
        problems.append(f"functions {sorted(roles)} differ from the table {sorted(EXPECTED)}")
    for function, role in roles.items():
        for name in sorted(_managed_policy_names(role) - ALLOWED_MANAGED_POLICIES):
            problems.append(f"{function}: managed policy {name} is attached")
        granted = _granted(role)
        expected = EXPECTED.get(function, set())
        if granted != expected:
            problems.append(
                f"{function}: added {sorted(granted - expected)}, "
                f"removed {sorted(expected - granted)}"
            )
        for statement in _statements(role):
            if statement.get("Effect") != "Allow" or {"NotAction", "NotResource"} & set(statement):
                problems.append(f"{function}: only explicit Allow statements, not {statement}")
            for action in _as_list(statement.get("Action")):
                if "*" in str(action):
                    problems.append(f"{function}: wildcard action {action}")
            if any(str(a).startswith(SERVICES) for a in _as_list(statement.get("Action"))):
                for resource in _as_list(statement.get("Resource")):
                    if "*" in repr(resource) and not _object_prefix(statement, resource):
                        problems.append(f"{function}: {statement['Action']} on {resource!r}")
    return problems


def test_deployed_roles_grant_exactly_the_reviewed_dynamodb_and_sqs_access() -> None:
    assert _problems(_translated()) == []


def test_the_check_sees_what_sam_adds_on_its_own(tmp_path: Path) -> None:
    """Give ProcessFunction a role SAM generates (as the template once did): the managed
    SQS policy SAM then attaches must be caught, or the check above proves nothing."""
    template = load_template(TEMPLATE)
    process = template["Resources"]["ProcessFunction"]["Properties"]
    del process["Role"]
    role = template["Resources"]["ProcessFunctionRole"]["Properties"]
    process["Policies"] = [role["Policies"][0]["PolicyDocument"]]
    del template["Resources"]["ProcessFunctionRole"]
    variant = tmp_path / "template.json"
    variant.write_text(json.dumps(template))

    problems = _problems(_translated(variant))

    assert (
        "ProcessFunction: managed policy service-role/AWSLambdaSQSQueueExecutionRole is attached"
        in problems
    )


def test_globals_grant_nothing() -> None:
    function_globals = (load_template(TEMPLATE).get("Globals") or {}).get("Function") or {}
    assert not {"Policies", "Role", "ManagedPolicyArns"} & set(function_globals)


if __name__ == "__main__":  # pragma: no cover - a quick look at the deployed grants
    json.dump({f: sorted(_granted(r)) for f, r in _roles(_translated()).items()}, sys.stdout)
