"""In-process measurements of the handlers against moto: submit latency for 1,000 and
10,000 images, and the wall time of one SQS batch of 10 images against the sum of its
images' own times (what a sequential handler would take).

    .venv/bin/python -m bench.handlers_moto

Figures are for comparing runs on one machine: moto in-process is slower per request than
DynamoDB and SQS, so AWS figures are lower.
"""

from __future__ import annotations

import json
import os
import time

os.environ.update(
    AWS_ACCESS_KEY_ID="bench",
    AWS_SECRET_ACCESS_KEY="bench",
    AWS_DEFAULT_REGION="us-east-1",
    AWS_REGION="us-east-1",
    IMAGE_QUEUE_URL="https://sqs.us-east-1.amazonaws.com/123456789012/Images",
    JOBS_TABLE="Jobs",
    IMAGES_TABLE="Images",
    STORES_TABLE="Stores",
    IDEMPOTENCY_TABLE="Idempotency",
    POWERTOOLS_TRACE_DISABLED="true",
    POWERTOOLS_LOG_LEVEL="WARNING",
    POWERTOOLS_METRICS_DISABLED="true",
    POWERTOOLS_SERVICE_NAME="retail-pulse",
    POWERTOOLS_METRICS_NAMESPACE="RetailPulse",
)
os.environ.pop("AWS_ENDPOINT_URL", None)

import boto3
from moto import mock_aws

from retail_pulse.settings import get_settings
from tests.support.events import api_event, sqs_event
from tests.support.handlers import FakeContext, load_handler
from tests.support.image_server import ImageServer


def _setup() -> None:
    from retail_pulse.data.models import ALL_MODELS, TABLE_MODELS, StoreRecord

    for model in ALL_MODELS:
        model._connection = None
    for model in TABLE_MODELS:
        model.create_table(billing_mode="PAY_PER_REQUEST", wait=True)
    boto3.client("sqs", region_name="us-east-1").create_queue(QueueName="Images")
    StoreRecord(store_id="S00339218", area_code="710006", store_name="BHARAT STORE").save()


def submit_seconds(images: int, url: str) -> float:
    per_visit = 1000
    visits = [
        {
            "store_id": "S00339218",
            "image_url": [url] * min(per_visit, images - start),
            "visit_time": "2026-11-28T10:15:00Z",
        }
        for start in range(0, images, per_visit)
    ]
    event = api_event("POST", "/api/submit/", body={"count": len(visits), "visits": visits})
    handler = load_handler("submit").lambda_handler
    started = time.perf_counter()
    response = handler(event, FakeContext())
    elapsed = time.perf_counter() - started
    assert response["statusCode"] == 201, response
    return elapsed


def batch_of_ten(server: ImageServer) -> tuple[float, float]:
    """(wall time of one batch of 10, sum of the 10 images' own processing times)."""
    from retail_pulse.jobs.messages import ImageMessage
    from retail_pulse.jobs.process import measure_url

    sqs = boto3.client("sqs", region_name="us-east-1")
    queue_url = get_settings().image_queue_url
    handler = load_handler("process").lambda_handler
    for _warm_then_measure in range(2):  # the first batch pays the cold start
        submit_seconds(10, server.url("/img/1280x720.jpg"))
        messages = sqs.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=10, AttributeNames=["All"]
        )["Messages"]
        event = sqs_event([m["Body"] for m in messages])
        started = time.perf_counter()
        response = handler(event, FakeContext())
        wall = time.perf_counter() - started
    assert response == {"batchItemFailures": []}, response
    sequential = 0.0
    for m in messages:  # the same work one image at a time, without filing results
        one = time.perf_counter()
        measure_url(ImageMessage.model_validate_json(m["Body"]), 1, get_settings())
        sequential += time.perf_counter() - one
    return wall, sequential


def main() -> None:
    server = ImageServer().start()
    os.environ["ALLOWED_PRIVATE_HOSTS"] = server.host_port
    get_settings.cache_clear()
    results = {}
    with mock_aws():
        _setup()
        # The batch first, while the queue holds only its messages; it also warms submit.
        wall, sequential = batch_of_ten(server)
        results["batch10_wall_s"] = round(wall, 3)
        results["batch10_sequential_s"] = round(sequential, 3)
        results["batch10_speedup"] = round(sequential / wall, 2)
        for n in (1_000, 10_000):
            url = "https://images.example.com/a.jpg"
            results[f"submit_{n}_s"] = round(submit_seconds(n, url), 3)
    server.stop()
    print(json.dumps(results))


if __name__ == "__main__":
    main()
