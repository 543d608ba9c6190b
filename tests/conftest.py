"""Shared fixtures. No test reaches the internet or AWS: AWS is moto, images come from a
server on 127.0.0.1 that the tests start."""

from __future__ import annotations

import os

# Before any retail_pulse import: the settings (table names, queue URLs, endpoints) are read
# from the environment once and cached; the models take them when they first connect.
os.environ.update(
    {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SECURITY_TOKEN": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
        "JOBS_TABLE": "Jobs",
        "IMAGES_TABLE": "Images",
        "STORES_TABLE": "Stores",
        "IMAGE_QUEUE_URL": "https://sqs.us-east-1.amazonaws.com/123456789012/Images",
        "IDEMPOTENCY_TABLE": "Idempotency",
        "EXPRESS_QUEUE_URL": "https://sqs.us-east-1.amazonaws.com/123456789012/ExpressImages",
        # Every job on the image queue, as before the express lane; its tests set their own.
        "EXPRESS_MAX_IMAGES": "0",
        "PAGE_TOKEN_SECRET_ARN": "retail-pulse-PageTokenSecret",
        "UPLOADS_TABLE": "Uploads",
        "UPLOADS_BUCKET": "retail-pulse-uploads",
        "INGEST_QUEUE_URL": "https://sqs.us-east-1.amazonaws.com/123456789012/Ingest",
        "EXPORTS_TABLE": "Exports",
        "EXPORT_QUEUE_URL": "https://sqs.us-east-1.amazonaws.com/123456789012/Export",
        "WEBHOOK_QUEUE_URL": "https://sqs.us-east-1.amazonaws.com/123456789012/Webhooks",
        "WEBHOOK_SECRETS_TABLE": "WebhookSecrets",
        "POWERTOOLS_SERVICE_NAME": "retail-pulse",
        "POWERTOOLS_METRICS_NAMESPACE": "RetailPulse",
        "POWERTOOLS_TRACE_DISABLED": "true",
        "POWERTOOLS_DEV": "false",
    }
)
os.environ.pop("AWS_ENDPOINT_URL", None)
os.environ.pop("AWS_PROFILE", None)

import functools
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from retail_pulse.settings import get_settings
from tests.support.image_server import ImageServer
from tests.support.moto_fixes import make_moto_like_aws
from tests.support.template import create_tables

ROOT = Path(__file__).resolve().parent.parent
SHARED_STORE_MASTER = ROOT.parent / "shared" / "data" / "StoreMasterAssignment.csv"


@dataclass
class Aws:
    sqs: object
    queue_url: str
    dlq_url: str
    webhook_url: str = ""
    ingest_url: str = ""
    export_url: str = ""

    def receive(self, max_messages: int = 10_000) -> list[dict]:
        """Receive (not delete) what is visible on the image queue, as a poller would."""
        messages: list[dict] = []
        while len(messages) < max_messages:
            batch = self.sqs.receive_message(
                QueueUrl=self.queue_url,
                MaxNumberOfMessages=10,
                AttributeNames=["All"],
                MessageSystemAttributeNames=["All"],
            ).get("Messages", [])
            if not batch:
                break
            messages.extend(batch)
        return messages

    def queued_messages(self, max_messages: int = 10_000) -> list[dict]:
        """Drain the image queue: messages are received and deleted."""
        messages = self.receive(max_messages)
        for start in range(0, len(messages), 10):
            self.sqs.delete_message_batch(
                QueueUrl=self.queue_url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                    for i, m in enumerate(messages[start : start + 10])
                ],
            )
        return messages


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[Aws]:
    """Fresh moto DynamoDB tables (from the PynamoDB models) and SQS queues per test."""
    from retail_pulse.data.models import ALL_MODELS, ExportRecord, UploadRecord

    make_moto_like_aws(monkeypatch)  # atomic DynamoDB, SQS O(1) in queue length, as AWS
    with mock_aws():
        # The models keep their connections from test to test: a client made under one mock
        # is served by the next (moto's hook is in every botocore client made after moto is
        # imported), and making one costs a botocore session of its own, ~0.3 s of CPU per
        # model per test. The DynamoDB Local backend forgets them when it moves endpoints.
        for model in (*ALL_MODELS, UploadRecord, ExportRecord):
            if model._connection is not None and model._connection.connection.host:
                model._connection = None  # left pointing elsewhere (an endpoint) by a test
        create_tables(_client("dynamodb"), os.environ)  # ACTIVE at once
        _client("secretsmanager").create_secret(
            Name=os.environ["PAGE_TOKEN_SECRET_ARN"], SecretString="test-page-token-key"
        )
        sqs = _client("sqs")
        dlq_url = sqs.create_queue(QueueName="ImagesDeadLetter")["QueueUrl"]
        dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        queue_url = sqs.create_queue(
            QueueName="Images",
            Attributes={
                "VisibilityTimeout": "360",
                "RedrivePolicy": json.dumps(
                    {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "6"}
                ),
            },
        )["QueueUrl"]
        assert queue_url == os.environ["IMAGE_QUEUE_URL"]
        express_url = sqs.create_queue(QueueName="ExpressImages")["QueueUrl"]
        assert express_url == os.environ["EXPRESS_QUEUE_URL"]
        webhook_url = sqs.create_queue(QueueName="Webhooks")["QueueUrl"]
        assert webhook_url == os.environ["WEBHOOK_QUEUE_URL"]
        # Large jobs: the uploads bucket (versioned, as the template's) and the ingest queue.
        s3 = _client("s3")
        s3.create_bucket(Bucket=os.environ["UPLOADS_BUCKET"])
        s3.put_bucket_versioning(
            Bucket=os.environ["UPLOADS_BUCKET"], VersioningConfiguration={"Status": "Enabled"}
        )
        ingest_url = sqs.create_queue(QueueName="Ingest")["QueueUrl"]
        assert ingest_url == os.environ["INGEST_QUEUE_URL"]
        # Results exports: the export function's queue.
        export_url = sqs.create_queue(QueueName="Export")["QueueUrl"]
        assert export_url == os.environ["EXPORT_QUEUE_URL"]
        yield Aws(
            sqs=sqs,
            queue_url=queue_url,
            dlq_url=dlq_url,
            webhook_url=webhook_url,
            ingest_url=ingest_url,
            export_url=export_url,
        )


@functools.cache
def _client(service: str) -> Any:
    """One boto3 client per service for every test's setup (moto serves each test's own)."""
    return boto3.client(service, region_name="us-east-1")


@pytest.fixture(scope="session")
def image_server() -> Iterator[ImageServer]:
    """Images on 127.0.0.1, and the fetch policy widened to exactly that host and port."""
    server = ImageServer().start()
    os.environ["ALLOWED_PRIVATE_HOSTS"] = server.host_port
    get_settings.cache_clear()
    yield server
    server.stop()
    os.environ.pop("ALLOWED_PRIVATE_HOSTS", None)
    get_settings.cache_clear()


@pytest.fixture
def store_master_csv() -> Path:
    """The assignment's real store master; absent in a user's clone, so the test says why."""
    if not SHARED_STORE_MASTER.exists():
        pytest.skip(f"the assignment's store master is not at {SHARED_STORE_MASTER}")
    return SHARED_STORE_MASTER


@pytest.fixture
def no_gpu_pause(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The 0.1-0.4 s pause is the benchmark's business, not these tests'."""
    monkeypatch.setenv("GPU_SLEEP_MIN_S", "0")
    monkeypatch.setenv("GPU_SLEEP_MAX_S", "0.01")
    get_settings.cache_clear()
    yield
    monkeypatch.undo()
    get_settings.cache_clear()
