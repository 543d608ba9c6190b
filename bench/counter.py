"""How fast one job's counter item takes results: per-image against batch transactions.

Every result moves its job's counter, so a job's item is the one hot item of the design
(docs/capacity.md). This measures, on the local stack's DynamoDB (DynamoDB Local behind its
router), `writers` concurrent filers putting `images` results into one job with the
service's transaction shape: each image's conditional move out of `pending` plus one
update of the job's counter, either per image (2 items) or per batch (99 images + the
counter). Cancelled transactions (TransactionConflict) are retried with the service's
backoff and counted. Scratch tables of its own; the service's tables are not touched.

DynamoDB Local is not DynamoDB: the absolute rates are this machine's, the ratio is the
design's (counter updates per image), and the AWS ceilings are reasoned in capacity.md.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from local_stack.aws import client

IMAGES_TABLE = "counter-bench-images"
JOBS_TABLE = "counter-bench-jobs"
BATCH = 99  # template.yaml's ProcessBatchSize: 99 images and the counter per transaction
_ATTEMPTS = 8  # retail_pulse/data/transactions.py's policy


def counter_ceiling(endpoint_url: str, images: int = 1_980, writers: int = 8) -> dict[str, Any]:
    dynamodb = client(
        "dynamodb", endpoint_url, max_pool_connections=writers, retries={"mode": "standard"}
    )
    _create_tables(dynamodb)
    try:
        runs = {
            "per_image": _file_one_job(dynamodb, images, 1, writers),
            "batch": _file_one_job(dynamodb, images, BATCH, writers),
        }
    finally:
        for table in (IMAGES_TABLE, JOBS_TABLE):
            dynamodb.delete_table(TableName=table)
    runs["ratio"] = runs["batch"]["images_per_s"] / runs["per_image"]["images_per_s"]
    return runs


def _create_tables(dynamodb: Any) -> None:
    dynamodb.create_table(
        TableName=IMAGES_TABLE,
        KeySchema=[
            {"AttributeName": "job_id", "KeyType": "HASH"},
            {"AttributeName": "image_index", "KeyType": "RANGE"},
        ],
        AttributeDefinitions=[
            {"AttributeName": "job_id", "AttributeType": "S"},
            {"AttributeName": "image_index", "AttributeType": "N"},
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    dynamodb.create_table(
        TableName=JOBS_TABLE,
        KeySchema=[{"AttributeName": "job_id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "job_id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )


def _file_one_job(dynamodb: Any, images: int, per_transaction: int, writers: int) -> dict[str, Any]:
    job_id = str(uuid.uuid4())
    dynamodb.put_item(TableName=JOBS_TABLE, Item={"job_id": {"S": job_id}, "n": {"N": "0"}})
    for start in range(0, images, 25):
        dynamodb.batch_write_item(
            RequestItems={
                IMAGES_TABLE: [
                    {
                        "PutRequest": {
                            "Item": {
                                "job_id": {"S": job_id},
                                "image_index": {"N": str(i)},
                                "state": {"S": "pending"},
                            }
                        }
                    }
                    for i in range(start, min(images, start + 25))
                ]
            }
        )
    chunks = [
        list(range(i, min(images, i + per_transaction))) for i in range(0, images, per_transaction)
    ]
    conflicts = 0
    lock = threading.Lock()

    def file(chunk: Sequence[int]) -> None:
        nonlocal conflicts
        for attempt in range(_ATTEMPTS):
            try:
                dynamodb.transact_write_items(TransactItems=_items(job_id, chunk))
                return
            except dynamodb.exceptions.TransactionCanceledException:
                with lock:
                    conflicts += 1
                time.sleep(random.uniform(0, min(1.0, 0.02 * 2**attempt)))
        raise RuntimeError(f"chunk of {len(chunk)} images not filed in {_ATTEMPTS} attempts")

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=writers) as pool:
        list(pool.map(file, chunks))
    elapsed = time.perf_counter() - started
    job = dynamodb.get_item(
        TableName=JOBS_TABLE, Key={"job_id": {"S": job_id}}, ConsistentRead=True
    )
    assert int(job["Item"]["n"]["N"]) == images, job  # nothing lost, nothing twice
    return {
        "images": images,
        "images_per_transaction": per_transaction,
        "counter_updates": len(chunks),
        "writers": writers,
        "seconds": elapsed,
        "images_per_s": images / elapsed,
        "counter_updates_per_s": len(chunks) / elapsed,
        "conflicts_retried": conflicts,
    }


def _items(job_id: str, chunk: Sequence[int]) -> list[dict[str, Any]]:
    return [
        {
            "Update": {
                "TableName": IMAGES_TABLE,
                "Key": {"job_id": {"S": job_id}, "image_index": {"N": str(i)}},
                "UpdateExpression": "SET #s = :done",
                "ConditionExpression": "#s = :pending",
                "ExpressionAttributeNames": {"#s": "state"},
                "ExpressionAttributeValues": {
                    ":done": {"S": "succeeded"},
                    ":pending": {"S": "pending"},
                },
            }
        }
        for i in chunk
    ] + [
        {
            "Update": {
                "TableName": JOBS_TABLE,
                "Key": {"job_id": {"S": job_id}},
                "UpdateExpression": "ADD n :n",
                "ExpressionAttributeValues": {":n": {"N": str(len(chunk))}},
            }
        }
    ]
