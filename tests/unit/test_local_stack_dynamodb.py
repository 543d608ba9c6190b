"""The local stack's DynamoDB Local router: DynamoDB requests reach DynamoDB Local, others
moto, and a multi-item transaction's consumed capacity is the sum of its items' figures,
each equal to what DynamoDB Local itself answers for that item alone.

Needs Java (DynamoDB Local); skipped with the reason without it.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from werkzeug.serving import make_server

from local_stack.dynamodb_capacity import TRANSACTIONAL, TableSchema, item_size, write_capacity
from local_stack.dynamodb_local import DynamoDbRouter
from tests.support.dynamodb_local import dynamodb_local

IMAGES = {
    "TableName": "CapImages",
    "KeySchema": [
        {"AttributeName": "job_id", "KeyType": "HASH"},
        {"AttributeName": "image_index", "KeyType": "RANGE"},
    ],
    "AttributeDefinitions": [
        {"AttributeName": "job_id", "AttributeType": "S"},
        {"AttributeName": "image_index", "AttributeType": "N"},
        {"AttributeName": "store_id_r", "AttributeType": "S"},
        {"AttributeName": "failed_job", "AttributeType": "S"},
        {"AttributeName": "visit_key", "AttributeType": "S"},
    ],
    "GlobalSecondaryIndexes": [
        {
            "IndexName": "ByStore",
            "KeySchema": [
                {"AttributeName": "store_id_r", "KeyType": "HASH"},
                {"AttributeName": "visit_key", "KeyType": "RANGE"},
            ],
            "Projection": {"ProjectionType": "ALL"},
        },
        {
            "IndexName": "Failures",
            "KeySchema": [
                {"AttributeName": "failed_job", "KeyType": "HASH"},
                {"AttributeName": "image_index", "KeyType": "RANGE"},
            ],
            "Projection": {"ProjectionType": "INCLUDE", "NonKeyAttributes": ["error"]},
        },
    ],
    "BillingMode": "PAY_PER_REQUEST",
}
JOBS = {
    "TableName": "CapJobs",
    "KeySchema": [{"AttributeName": "job_id", "KeyType": "HASH"}],
    "AttributeDefinitions": [
        {"AttributeName": "job_id", "AttributeType": "S"},
        {"AttributeName": "shard", "AttributeType": "S"},
    ],
    "GlobalSecondaryIndexes": [
        {
            "IndexName": "Ongoing",
            "KeySchema": [{"AttributeName": "shard", "KeyType": "HASH"}],
            "Projection": {"ProjectionType": "KEYS_ONLY"},
        }
    ],
    "BillingMode": "PAY_PER_REQUEST",
}


def _client(url: str) -> Any:
    return boto3.client(
        "dynamodb",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


@pytest.fixture(scope="module")
def local() -> Iterator[Any]:
    """DynamoDB Local with the two tables, fresh for this module."""
    client = _client(dynamodb_local())
    for table in (IMAGES, JOBS):
        with contextlib.suppress(client.exceptions.ResourceNotFoundException):
            client.delete_table(TableName=table["TableName"])
        client.create_table(**table)
    yield client


@pytest.fixture(scope="module")
def routed(local: Any) -> Iterator[Any]:
    """A client of a DynamoDbRouter in front of that DynamoDB Local (and of a stand-in for
    moto that answers every other request with 418)."""
    port = int(local.meta.endpoint_url.rsplit(":", 1)[1])

    def not_dynamodb(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("418 I'm a teapot", [("Content-Length", "2")])
        return [b"{}"]

    server = make_server("127.0.0.1", 0, DynamoDbRouter(not_dynamodb, port), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield _client(f"http://127.0.0.1:{server.server_port}")
    server.shutdown()


def _image(index: int, **extra: Any) -> dict[str, Any]:
    item = {
        "job_id": {"S": "job-a"},
        "image_index": {"N": str(index)},
        "url": {"S": f"https://img.example/photos/{index}.jpg"},
        "visit_key": {"S": f"2026-11-28T10:15:00Z#job-a#{index:05d}"},
        "state": {"S": "pending"},
    }
    item.update(extra)
    return item


TRANSITIONS = {
    "pending -> succeeded, into an ALL index": (
        "SET #s = :done, store_id_r = :store, perimeter = :p",
        {":done": {"S": "succeeded"}, ":store": {"S": "S00339218"}, ":p": {"N": "1908"}},
    ),
    "pending -> failed, into an INCLUDE index": (
        "SET #s = :failed, failed_job = :job, #e = :error",
        {":failed": {"S": "failed"}, ":job": {"S": "job-a"}, ":error": {"S": "HTTP 404 " * 40}},
    ),
    "an attribute no index projects, on an item outside every index": (
        "SET #s = :other",
        {":other": {"S": "other"}},
    ),
}


@pytest.mark.parametrize("transition", sorted(TRANSITIONS))
def test_one_items_figures_are_dynamodb_locals_own(local: Any, transition: str) -> None:
    """DynamoDB Local is right for a transaction of one item: the model must agree."""
    index = sorted(TRANSITIONS).index(transition) + 10
    expression, values = TRANSITIONS[transition]
    local.put_item(TableName="CapImages", Item=_image(index))
    key = {"job_id": {"S": "job-a"}, "image_index": {"N": str(index)}}
    before = local.get_item(TableName="CapImages", Key=key, ConsistentRead=True)["Item"]
    names = {"#s": "state"} | ({"#e": "error"} if "#e" in expression else {})
    answer = local.transact_write_items(
        TransactItems=[
            {
                "Update": {
                    "TableName": "CapImages",
                    "Key": key,
                    "UpdateExpression": expression,
                    "ExpressionAttributeNames": names,
                    "ExpressionAttributeValues": values,
                }
            }
        ],
        ReturnConsumedCapacity="INDEXES",
    )
    after = local.get_item(TableName="CapImages", Key=key, ConsistentRead=True)["Item"]
    schema = TableSchema.from_description(local.describe_table(TableName="CapImages")["Table"])

    (reported,) = answer["ConsumedCapacity"]
    expected = write_capacity(schema, before, after, TRANSACTIONAL)
    assert reported["Table"]["CapacityUnits"] == expected["CapImages"]
    indexes = {k: v["CapacityUnits"] for k, v in reported.get("GlobalSecondaryIndexes", {}).items()}
    assert indexes == {k.split("/")[1]: v for k, v in expected.items() if "/" in k}


def test_a_counter_update_writes_no_keys_only_index_and_leaving_it_does(local: Any) -> None:
    local.put_item(
        TableName="CapJobs", Item={"job_id": {"S": "j"}, "shard": {"S": "1"}, "n": {"N": "0"}}
    )
    schema = TableSchema.from_description(local.describe_table(TableName="CapJobs")["Table"])
    before = {"job_id": {"S": "j"}, "shard": {"S": "1"}, "n": {"N": "0"}}
    counted = {**before, "n": {"N": "99"}}
    finished = {"job_id": {"S": "j"}, "n": {"N": "99"}}
    assert write_capacity(schema, before, counted, TRANSACTIONAL) == {"CapJobs": 2.0}
    assert write_capacity(schema, counted, finished) == {"CapJobs": 1.0, "CapJobs/Ongoing": 1.0}


def _succeeded(index: int, job_id: str) -> dict[str, Any]:
    """A transaction's item: one pending image of `job_id` moved to succeeded."""
    return {
        "Update": {
            "TableName": "CapImages",
            "Key": {"job_id": {"S": job_id}, "image_index": {"N": str(index)}},
            "UpdateExpression": "SET #s = :done, store_id_r = :store",
            "ConditionExpression": "#s = :pending",
            "ExpressionAttributeNames": {"#s": "state"},
            "ExpressionAttributeValues": {
                ":done": {"S": "succeeded"},
                ":store": {"S": "S00339218"},
                ":pending": {"S": "pending"},
            },
        }
    }


def test_a_multi_item_transaction_is_the_sum_of_its_items(local: Any, routed: Any) -> None:
    """DynamoDB Local alone answers 99 alike updates as one; through the router, 99."""
    images = list(range(100, 199))
    for index in images:
        local.put_item(TableName="CapImages", Item=_image(index))
    local.put_item(TableName="CapJobs", Item={"job_id": {"S": "job-a"}, "n": {"N": "0"}})
    items = [_succeeded(index, "job-a") for index in images] + [
        {
            "Update": {
                "TableName": "CapJobs",
                "Key": {"job_id": {"S": "job-a"}},
                "UpdateExpression": "ADD n :n",
                "ExpressionAttributeValues": {":n": {"N": str(len(images))}},
            }
        }
    ]

    answer = routed.transact_write_items(TransactItems=items, ReturnConsumedCapacity="INDEXES")

    by_table = {entry["TableName"]: entry for entry in answer["ConsumedCapacity"]}
    images_entry = by_table["CapImages"]
    assert images_entry["Table"]["CapacityUnits"] == 2 * len(images)  # each item under 1 KB
    assert images_entry["GlobalSecondaryIndexes"] == {"ByStore": {"CapacityUnits": 2 * 99}}
    assert images_entry["CapacityUnits"] == 4 * len(images)
    assert by_table["CapJobs"]["CapacityUnits"] == 2
    # Everything else passes through untouched: DynamoDB Local's own answer.
    got = routed.get_item(
        TableName="CapJobs", Key={"job_id": {"S": "job-a"}}, ReturnConsumedCapacity="TOTAL"
    )
    assert got["Item"]["n"] == {"N": "99"}
    assert got["ConsumedCapacity"]["CapacityUnits"] == 0.5


def _image_and_counter(index: int, job_id: str) -> list[dict[str, Any]]:
    """The transaction of per-image filing: one image's record and its job's counter."""
    return [
        _succeeded(index, job_id),
        {
            "Update": {
                "TableName": "CapJobs",
                "Key": {"job_id": {"S": job_id}},
                "UpdateExpression": "ADD n :one",
                "ExpressionAttributeValues": {":one": {"N": "1"}},
            }
        },
    ]


def test_a_transaction_of_one_item_per_table_is_dynamodb_locals_own_figure(
    local: Any, routed: Any
) -> None:
    """The functions reach DynamoDB Local directly, not through the router: exact for every
    transaction they write of one item per table (per-image filing, the dead-letter and
    reconciler paths), which DynamoDB Local prices as the router does."""
    answers = []
    for client, job_id in ((local, "job-direct"), (routed, "job-routed")):
        local.put_item(TableName="CapImages", Item=_image(400, job_id={"S": job_id}))
        local.put_item(TableName="CapJobs", Item={"job_id": {"S": job_id}, "n": {"N": "0"}})
        answer = client.transact_write_items(
            TransactItems=_image_and_counter(400, job_id), ReturnConsumedCapacity="INDEXES"
        )
        answers.append(sorted(answer["ConsumedCapacity"], key=lambda e: e["TableName"]))

    direct, through_router = answers
    assert direct == through_router
    images = next(e for e in direct if e["TableName"] == "CapImages")
    assert images["CapacityUnits"] == 4  # the record and its ByStore entry, 2 each


def test_a_cancelled_transaction_is_answered_as_dynamodb_local_answers_it(
    local: Any, routed: Any
) -> None:
    local.put_item(TableName="CapImages", Item=_image(300, state={"S": "succeeded"}))
    with pytest.raises(routed.exceptions.TransactionCanceledException) as cancelled:
        routed.transact_write_items(
            TransactItems=[
                {
                    "Update": {
                        "TableName": "CapImages",
                        "Key": {"job_id": {"S": "job-a"}, "image_index": {"N": "300"}},
                        "UpdateExpression": "SET #s = :done",
                        "ConditionExpression": "#s = :pending",
                        "ExpressionAttributeNames": {"#s": "state"},
                        "ExpressionAttributeValues": {
                            ":done": {"S": "failed"},
                            ":pending": {"S": "pending"},
                        },
                    }
                }
            ],
            ReturnConsumedCapacity="TOTAL",
        )
    reasons = cancelled.value.response["CancellationReasons"]
    assert [r["Code"] for r in reasons] == ["ConditionalCheckFailed"]


def test_sizes_follow_dynamodbs_rules() -> None:
    assert item_size({"a": {"S": "héllo"}}) == 1 + 6
    assert item_size({"n": {"N": "1908"}}) == 1 + 3  # 4 significant digits: 2 + 1
    assert item_size({"n": {"N": "-0.00120"}}) == 1 + 2  # "12": 1 + 1
    assert item_size({"m": {"M": {"k": {"BOOL": True}}}}) == 1 + 3 + 1 + 1 + 1
    assert item_size({"l": {"L": [{"NULL": True}, {"S": "ab"}]}}) == 1 + 3 + 2 + 3
