"""template.yaml agrees with the code: table keys with the PynamoDB models, queue timing with
the process function, and least privilege in every policy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from retail_pulse.data.models import (
    ExportRecord,
    ImageRecord,
    JobRecord,
    StoreRecord,
    WebhookSecretRecord,
)
from tests.support.template import TEMPLATE_PATH, resources


def _keys(key_schema: list[dict[str, str]]) -> list[tuple[str, str]]:
    """(name, HASH|RANGE) pairs, hash key first, whatever order they were listed in."""
    return sorted(((k["AttributeName"], k["KeyType"]) for k in key_schema), key=lambda k: k[1])


def model_schema(model: Any) -> dict[str, Any]:
    """The table description PynamoDB would create, in CloudFormation's shape."""
    schema = model._get_schema()
    indexes = {}
    for index in schema.get("global_secondary_indexes", []):
        projection = dict(index["projection"])
        indexes[index["index_name"]] = {
            "keys": _keys(index["key_schema"]),
            "projection": projection["ProjectionType"],
            "non_key": sorted(projection.get("NonKeyAttributes", [])),
        }
    return {
        "keys": _keys(schema["key_schema"]),
        "attributes": sorted(
            (a["AttributeName"], a["AttributeType"]) for a in schema["attribute_definitions"]
        ),
        "indexes": indexes,
    }


def template_schema(table: dict[str, Any]) -> dict[str, Any]:
    props = table["Properties"]
    indexes = {}
    for index in props.get("GlobalSecondaryIndexes", []):
        indexes[index["IndexName"]] = {
            "keys": _keys(index["KeySchema"]),
            "projection": index["Projection"]["ProjectionType"],
            "non_key": sorted(index["Projection"].get("NonKeyAttributes", [])),
        }
    return {
        "keys": _keys(props["KeySchema"]),
        "attributes": sorted(
            (a["AttributeName"], a["AttributeType"]) for a in props["AttributeDefinitions"]
        ),
        "indexes": indexes,
    }


@pytest.mark.parametrize(
    ("logical_id", "model"),
    [
        ("JobsTable", JobRecord),
        ("ImagesTable", ImageRecord),
        ("StoresTable", StoreRecord),
        ("WebhookSecretsTable", WebhookSecretRecord),
        ("ExportsTable", ExportRecord),
    ],
)
def test_table_keys_and_indexes_match_the_pynamodb_model(template, logical_id, model):
    table = template["Resources"][logical_id]
    assert template_schema(table) == model_schema(model)
    assert table["Properties"]["BillingMode"] == "PAY_PER_REQUEST"
    assert table["Properties"]["PointInTimeRecoverySpecification"] == {
        "PointInTimeRecoveryEnabled": True
    }


@pytest.mark.parametrize(
    ("logical_id", "model"),
    [("JobsTable", JobRecord), ("ImagesTable", ImageRecord), ("ExportsTable", ExportRecord)],
)
def test_jobs_and_images_expire_by_the_models_ttl_attribute(template, logical_id, model):
    """Retention: DynamoDB deletes by the attribute the code writes (RETENTION_DAYS)."""
    ttl = model._ttl_attribute()
    assert ttl is not None
    assert template["Resources"][logical_id]["Properties"]["TimeToLiveSpecification"] == {
        "AttributeName": ttl.attr_name,
        "Enabled": True,
    }
    variables = template["Globals"]["Function"]["Environment"]["Variables"]
    assert variables["RETENTION_DAYS"] == {"Ref": "RetentionDays"}
    assert template["Parameters"]["RetentionDays"]["Default"] == 90


def test_webhook_secrets_are_encrypted_at_rest_under_kms_and_kept(template):
    """Each item is a key that signs for a client: KMS (the account's DynamoDB key, whose
    use CloudTrail records), and the table outlives a deleted stack as the data tables do."""
    table = template["Resources"]["WebhookSecretsTable"]
    assert table["Properties"]["SSESpecification"] == {"SSEEnabled": True, "SSEType": "KMS"}
    assert table["DeletionPolicy"] == table["UpdateReplacePolicy"] == "Retain"
    assert "WebhookSigningSecret" not in template["Resources"]  # no deployment-wide key


def test_every_table_is_one_the_code_knows(template):
    env = template["Globals"]["Function"]["Environment"]["Variables"]
    for logical_id in resources(template, "AWS::DynamoDB::Table"):
        assert {"Ref": logical_id} in env.values(), f"{logical_id} reaches no function"


def test_functions_run_python313_on_arm64_with_the_common_layer(template):
    globals_ = template["Globals"]["Function"]
    assert globals_["Runtime"] == "python3.13"
    # arm64 in AWS; a local deployment (make test-deployed) builds for its own machine.
    assert globals_["Architectures"] == [{"Ref": "Architecture"}]
    assert template["Parameters"]["Architecture"]["Default"] == "arm64"
    layer = template["Resources"]["CommonLayer"]
    assert layer["Properties"]["CompatibleArchitectures"] == [{"Ref": "Architecture"}]
    assert layer["Metadata"]["BuildArchitecture"] == {"Ref": "Architecture"}
    assert globals_["Layers"] == [{"Ref": "CommonLayer"}]
    for name, function in resources(template, "AWS::Serverless::Function").items():
        code = Path(TEMPLATE_PATH.parent, function["Properties"]["CodeUri"])
        assert sorted(p.name for p in code.iterdir() if p.suffix == ".py") == ["app.py"], name


def test_api_routes_are_the_specs(template):
    routes = set()
    for function in resources(template, "AWS::Serverless::Function").values():
        for event in function["Properties"].get("Events", {}).values():
            if event["Type"] == "Api":
                routes.add((event["Properties"]["Method"].upper(), event["Properties"]["Path"]))
    assert {("POST", "/api/submit/"), ("POST", "/api/submit"), ("GET", "/api/status")} <= routes
    assert {("GET", "/api/jobs"), ("GET", "/api/results")} <= routes


def test_image_queue_feeds_process_with_partial_batch_failures_and_a_dead_letter_queue(template):
    queue = template["Resources"]["ImageQueue"]["Properties"]
    process = template["Resources"]["ProcessFunction"]["Properties"]
    event = process["Events"]["Images"]["Properties"]
    assert event["Queue"] == {"Fn::GetAtt": ["ImageQueue", "Arn"]}
    assert event["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert queue["VisibilityTimeout"] >= 6 * process["Timeout"]
    assert queue["RedrivePolicy"]["deadLetterTargetArn"] == {
        "Fn::GetAtt": ["ImageDeadLetterQueue", "Arn"]
    }
    # Transient retries must end in a recorded failure before SQS gives up on a message.
    max_attempts = int(template["Globals"]["Function"]["Environment"]["Variables"]["MAX_ATTEMPTS"])
    assert queue["RedrivePolicy"]["maxReceiveCount"] > max_attempts


def test_process_batches_are_large_and_run_whole_within_the_functions_memory(template):
    parameters = template["Parameters"]
    event = template["Resources"]["ProcessFunction"]["Properties"]["Events"]["Images"]
    props = event["Properties"]
    assert props["BatchSize"] == {"Ref": "ProcessBatchSize"}
    assert props["MaximumBatchingWindowInSeconds"] == {"Ref": "ProcessBatchingWindowSeconds"}
    batch = parameters["ProcessBatchSize"]["Default"]
    window = parameters["ProcessBatchingWindowSeconds"]["Default"]
    assert batch >= 100  # ten times the earlier batches of 10 (issue 17)
    # Lambda refuses a BatchSize above 10 without a batching window of at least 1 s.
    assert window >= 1 or batch <= 10
    env = template["Globals"]["Function"]["Environment"]["Variables"]
    # The whole batch runs at once, within the bytes budget, within the function's memory.
    assert int(env["IMAGE_CONCURRENCY"]) >= batch
    memory_mb = template["Resources"]["ProcessFunction"]["Properties"]["MemorySize"]
    assert 2 * int(env["IMAGE_BYTES_IN_FLIGHT"]) + 100 * 2**20 <= memory_mb * 2**20
    assert int(env["IMAGE_BYTES_IN_FLIGHT"]) >= int(env["MAX_IMAGE_BYTES"])
    # Freed image bodies go back to the system, or the bytes budget bounds nothing.
    own = template["Resources"]["ProcessFunction"]["Properties"]["Environment"]["Variables"]
    assert int(own["MALLOC_MMAP_THRESHOLD_"]) <= 1024 * 1024
