"""The moto child's additions: item-level rollback of transactions, and the benchmark's
reading of REPORT lines and of the functions' own AWS usage. Correctness only; speed is the
benchmark's business."""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest
from moto import mock_aws

from bench.costs import AwsUsage, LambdaUsage, price
from local_stack.moto_transactions import cheap_transaction_rollback


def _usage_line(function: str, wru: float, rru: float, requests: dict[str, int]) -> str:
    summary = {
        "dynamodb_wru": wru,
        "dynamodb_rru": rru,
        "requests": requests,
        "wru_by": {"retail-pulse-local-ImagesTable/StoreVisits": wru},
        "cancelled_transactions": 0,
    }
    return f"[{function}] " + json.dumps({"_aws": {}, "aws_usage": summary})


def test_the_bill_sums_what_the_functions_clients_measured() -> None:
    log = "\n".join(
        [
            _usage_line("SubmitFunction", 10.0, 1.0, {"sqs.SendMessageBatch": 1}),
            _usage_line("ProcessFunction", 30.0, 2.0, {"dynamodb.TransactWriteItems": 1}),
            _usage_line("StatusFunction", 0.0, 1.0, {"dynamodb.GetItem": 1}),
            _usage_line("StatusFunction", 0.0, 1.0, {"dynamodb.GetItem": 1}),
            _usage_line("ReconcilerFunction", 5.0, 4.0, {"dynamodb.Query": 4}),
            "[ProcessFunction] REPORT RequestId: a\tDuration: 1.0 ms\tBilled Duration: 1000 ms"
            "\tMemory Size: 1024 MB\tMax Memory Used: 100 MB",
            "[StatusFunction] REPORT RequestId: b\tDuration: 1.0 ms\tBilled Duration: 500 ms"
            "\tMemory Size: 1024 MB\tMax Memory Used: 100 MB",
            "[StatusFunction] REPORT RequestId: c\tDuration: 1.0 ms\tBilled Duration: 500 ms"
            "\tMemory Size: 1024 MB\tMax Memory Used: 100 MB",
        ]
    )
    bill = price(
        LambdaUsage.from_log(log),
        AwsUsage.from_log(log),
        {
            "ProcessFunction.Images.ReceiveMessage": 3,
            "ProcessFunction.Images.DeleteMessageBatch": 1,
        },
        images=10,
    )
    per = bill["per_image"]
    # The reconciler is a cost of time, not of images; the status function is one read.
    assert per["dynamodb_wru"] == pytest.approx((10 + 30) / 10)
    assert per["dynamodb_rru"] == pytest.approx((1 + 2 + 1) / 10)
    assert per["sqs_requests"] == pytest.approx((1 + 3 + 1) / 10)
    assert per["lambda_gb_s"] == pytest.approx((1.0 + 0.5) / 10)
    assert per["lambda_requests"] == pytest.approx(2 / 10)
    assert per["api_requests"] == pytest.approx(2 / 10)
    assert bill["wru_by"] == {"ImagesTable/StoreVisits": pytest.approx(4.0)}
    usd = bill["usd_per_million"]
    assert usd["dynamodb_write"] == pytest.approx(4.0 * 0.625)
    assert usd["total"] == pytest.approx(sum(v for k, v in usd.items() if k != "total"))


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
