"""The moto child's additions: request counting for the benchmark's bill, item-level rollback
of transactions, and the benchmark's reading of REPORT lines. Correctness only; speed is the
benchmark's business."""

from __future__ import annotations

import io
import json
from typing import Any

import boto3
import pytest
from moto import mock_aws

from bench.costs import LambdaUsage, dynamodb_units
from local_stack.moto_transactions import cheap_transaction_rollback
from local_stack.request_counts import COUNTS_PATH, RequestCounter


def _call(app: RequestCounter, target: str = "", body: dict[str, Any] | None = None) -> bytes:
    raw = json.dumps(body or {}).encode()
    environ = {
        "PATH_INFO": "/",
        "HTTP_X_AMZ_TARGET": target,
        "CONTENT_LENGTH": str(len(raw)),
        "wsgi.input": io.BytesIO(raw),
    }
    return b"".join(app(environ, lambda *args: None))


def test_requests_and_items_are_counted_and_the_body_still_reaches_moto() -> None:
    seen: list[bytes] = []

    def moto(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        seen.append(environ["wsgi.input"].read())
        return [b"{}"]

    app = RequestCounter(moto)
    transaction = {"TransactItems": [{"Update": {}}, {"Update": {}}]}
    _call(app, "DynamoDB_20120810.TransactWriteItems", transaction)
    _call(app, "DynamoDB_20120810.GetItem")
    _call(app, "AmazonSQS.ReceiveMessage")
    _call(app, "AmazonSQS.ReceiveMessage")

    assert json.loads(seen[0]) == transaction
    counts = json.loads(_counts(app))
    assert counts["requests"] == {
        "dynamodb.TransactWriteItems": 1,
        "dynamodb.GetItem": 1,
        "sqs.ReceiveMessage": 2,
    }
    assert counts["items"]["dynamodb.TransactWriteItems"] == 2


def _counts(app: RequestCounter) -> bytes:
    environ = {"PATH_INFO": COUNTS_PATH, "wsgi.input": io.BytesIO()}
    return b"".join(app(environ, lambda *args: None))


def test_capacity_units_count_transactional_writes_twice_and_index_writes() -> None:
    units = dynamodb_units(
        {"dynamodb.TransactWriteItems": 20, "dynamodb.GetItem": 3, "sqs.ReceiveMessage": 9},
        images_succeeded=10,
        jobs=1,
    )
    assert units == {"rru": 3.0, "wru": 40.0 + 22.0, "wru_index_estimate": 22.0}


def test_report_lines_give_billed_gb_seconds_and_peak_memory() -> None:
    log = (
        "[ProcessFunction] REPORT RequestId: a\tDuration: 400.10 ms\tBilled Duration: 401 ms"
        "\tMemory Size: 512 MB\tMax Memory Used: 120 MB\n"
        "[ProcessFunction] REPORT RequestId: b\tDuration: 598.20 ms\tBilled Duration: 599 ms"
        "\tMemory Size: 512 MB\tMax Memory Used: 140 MB\tInit Duration: 900.00 ms\n"
        "[ProcessFunction] some log line\n"
    )
    usage = LambdaUsage.from_log(log)
    assert usage.invocations["ProcessFunction"] == 2
    assert usage.gb_seconds["ProcessFunction"] == pytest.approx(0.5)
    assert usage.max_memory_mb["ProcessFunction"] == 140


def _tables(dynamodb: Any) -> None:
    dynamodb.create_table(
        TableName="Img",
        KeySchema=[
            {"AttributeName": "j", "KeyType": "HASH"},
            {"AttributeName": "i", "KeyType": "RANGE"},
        ],
        AttributeDefinitions=[
            {"AttributeName": "j", "AttributeType": "S"},
            {"AttributeName": "i", "AttributeType": "N"},
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    dynamodb.create_table(
        TableName="Job",
        KeySchema=[{"AttributeName": "j", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "j", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )


def test_a_cancelled_transaction_leaves_every_item_as_it_was() -> None:
    cheap_transaction_rollback()
    with mock_aws():
        dynamodb = boto3.client("dynamodb", region_name="us-east-1")
        _tables(dynamodb)
        dynamodb.put_item(TableName="Job", Item={"j": {"S": "a"}, "n": {"N": "0"}})
        dynamodb.put_item(TableName="Img", Item={"j": {"S": "a"}, "i": {"N": "0"}})

        def file(index: int) -> None:
            dynamodb.transact_write_items(
                TransactItems=[
                    {
                        "Update": {
                            "TableName": "Job",
                            "Key": {"j": {"S": "a"}},
                            "UpdateExpression": "ADD n :one",
                            "ExpressionAttributeValues": {":one": {"N": "1"}},
                        }
                    },
                    {
                        "Put": {
                            "TableName": "Img",
                            "Item": {"j": {"S": "a"}, "i": {"N": str(index)}},
                            "ConditionExpression": "attribute_not_exists(j)",
                        }
                    },
                ]
            )

        file(1)
        with pytest.raises(dynamodb.exceptions.TransactionCanceledException):
            file(0)  # the image exists: the job's increment, applied first, is undone

        job = dynamodb.get_item(TableName="Job", Key={"j": {"S": "a"}})["Item"]
        assert job["n"] == {"N": "1"}
        images = dynamodb.scan(TableName="Img")["Items"]
        assert sorted(int(item["i"]["N"]) for item in images) == [0, 1]
