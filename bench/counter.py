"""How fast one job takes results: per-image transactions against batch filings.

Every result moves its job's counter, so a job's item is the one hot item of the design
(docs/capacity.md). This measures, on the local stack's DynamoDB (DynamoDB Local, at its own
endpoint), `writers` concurrent filers putting `images` results into one job with the
service's two shapes (data/jobs.py): per image, one transaction of the image's conditional
write and the job's counter (2 items); per batch of 100, the filing opened on the job's item,
one plain conditional write per image, and the filing closed with the counters moved (two
updates of the job's item per 100 images). Cancelled transactions (TransactionConflict) are
retried with the service's backoff and counted. Scratch tables of its own; the service's
tables are not touched.

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
BATCH = 100  # template.yaml's ProcessBatchSize: the images of one filing
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


def _file_one_job(dynamodb: Any, images: int, per_filing: int, writers: int) -> dict[str, Any]:
    job_id = str(uuid.uuid4())
    dynamodb.put_item(TableName=JOBS_TABLE, Item={"job_id": {"S": job_id}, "n": {"N": "0"}})
    chunks = [list(range(i, min(images, i + per_filing))) for i in range(0, images, per_filing)]
    conflicts = 0
    lock = threading.Lock()

    def transact(chunk: Sequence[int]) -> None:
        nonlocal conflicts
        for attempt in range(_ATTEMPTS):
            try:
                dynamodb.transact_write_items(TransactItems=_transaction(job_id, chunk))
                return
            except dynamodb.exceptions.TransactionCanceledException:
                with lock:
                    conflicts += 1
                time.sleep(random.uniform(0, min(1.0, 0.02 * 2**attempt)))
        raise RuntimeError(f"image {chunk} not filed in {_ATTEMPTS} attempts")

    def file(chunk: Sequence[int]) -> None:
        filing = f"filing_{uuid.uuid4().hex}"
        key = {"job_id": {"S": job_id}}
        dynamodb.update_item(
            TableName=JOBS_TABLE,
            Key=key,
            UpdateExpression="SET #f = :f",
            ExpressionAttributeNames={"#f": filing},
            ExpressionAttributeValues={":f": {"S": f"{chunk[0]}-{chunk[-1]}"}},
        )
        for i in chunk:
            dynamodb.update_item(**_image_write(job_id, i))
        dynamodb.update_item(
            TableName=JOBS_TABLE,
            Key=key,
            UpdateExpression="ADD n :n REMOVE #f",
            ConditionExpression="attribute_exists(#f)",
            ExpressionAttributeNames={"#f": filing},
            ExpressionAttributeValues={":n": {"N": str(len(chunk))}},
        )

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=writers) as pool:
        list(pool.map(transact if per_filing == 1 else file, chunks))
    elapsed = time.perf_counter() - started
    job = dynamodb.get_item(
        TableName=JOBS_TABLE, Key={"job_id": {"S": job_id}}, ConsistentRead=True
    )
    assert int(job["Item"]["n"]["N"]) == images, job  # nothing lost, nothing twice
    return {
        "images": images,
        "images_per_filing": per_filing,
        "counter_updates": len(chunks) * (1 if per_filing == 1 else 2),
        "writers": writers,
        "seconds": elapsed,
        "images_per_s": images / elapsed,
        "counter_updates_per_s": len(chunks) * (1 if per_filing == 1 else 2) / elapsed,
        "conflicts_retried": conflicts,
    }


def _image_write(job_id: str, index: int) -> dict[str, Any]:
    """An image's result, written only if it has none yet (the service's condition)."""
    return {
        "TableName": IMAGES_TABLE,
        "Key": {"job_id": {"S": job_id}, "image_index": {"N": str(index)}},
        "UpdateExpression": "SET #s = :done",
        "ConditionExpression": "attribute_not_exists(job_id) OR #s = :pending",
        "ExpressionAttributeNames": {"#s": "state"},
        "ExpressionAttributeValues": {":done": {"S": "succeeded"}, ":pending": {"S": "pending"}},
    }


def _transaction(job_id: str, chunk: Sequence[int]) -> list[dict[str, Any]]:
    return [{"Update": _image_write(job_id, i)} for i in chunk] + [
        {
            "Update": {
                "TableName": JOBS_TABLE,
                "Key": {"job_id": {"S": job_id}},
                "UpdateExpression": "ADD n :n",
                "ExpressionAttributeValues": {":n": {"N": str(len(chunk))}},
            }
        }
    ]
