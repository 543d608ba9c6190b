"""DynamoDB and SQS on loopback: moto in server mode, with the template's tables and queues.

moto runs as a child process (not a thread) so the functions' boto3 clients, the pollers
and the stack's own clients all talk to it over HTTP exactly as they would to AWS, and so
it cannot be slowed by the stack's own threads holding the GIL.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

from local_stack.model import BUCKET_PROPERTIES_IGNORED_LOCALLY, StackModel
from local_stack.template import REGION

log = logging.getLogger("local_stack")

DUMMY_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
}
MOTO_START_TIMEOUT_S = 30.0
DYNAMODB_LOCAL_START_TIMEOUT_S = 90.0

# CloudFormation queue properties that are also SQS queue attributes, under the same name.
_QUEUE_ATTRIBUTES = [
    "ContentBasedDeduplication",
    "DeduplicationScope",
    "DelaySeconds",
    "FifoQueue",
    "FifoThroughputLimit",
    "KmsDataKeyReusePeriodSeconds",
    "KmsMasterKeyId",
    "MaximumMessageSize",
    "MessageRetentionPeriod",
    "ReceiveMessageWaitTimeSeconds",
    "RedriveAllowPolicy",
    "RedrivePolicy",
    "SqsManagedSseEnabled",
    "VisibilityTimeout",
]
_INDEX_KEYS = ("IndexName", "KeySchema", "Projection", "ProvisionedThroughput")


def client(service: str, endpoint_url: str, **config: Any) -> Any:
    """A boto3 client for moto: dummy credentials, us-east-1, no profile or real endpoint."""
    return boto3.session.Session(
        aws_access_key_id=DUMMY_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=DUMMY_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        aws_session_token=DUMMY_CREDENTIALS["AWS_SESSION_TOKEN"],
        region_name=REGION,
    ).client(service, endpoint_url=endpoint_url, config=Config(**config) if config else None)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class MotoServer:
    """moto's server as a child process on 127.0.0.1:`port` (0: a free port)."""

    def __init__(
        self, port: int = 0, log_path: Path | None = None, dynamodb_local_jar: Path | None = None
    ) -> None:
        self.requested_port = port
        self.port = 0
        self.log_path = log_path
        # With a jar, DynamoDB requests are answered by DynamoDB Local (dynamodb_local.py),
        # on a port chosen here so the functions can be pointed at it.
        self.dynamodb_local_jar = dynamodb_local_jar
        self.dynamodb_port = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._log_file: Any = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def dynamodb_local_url(self) -> str | None:
        """DynamoDB Local's own endpoint, when it answers for DynamoDB (else None)."""
        return f"http://127.0.0.1:{self.dynamodb_port}" if self.dynamodb_port else None

    def start(self) -> str:
        # A free port found here can be taken before moto binds it: retry with another.
        attempts = 1 if self.requested_port else 3
        failure = ""
        for attempt in range(attempts):
            self.port = self.requested_port or free_port()
            failure = self._launch()
            if not failure:
                log.info("moto listening at %s (log: %s)", self.url, self._log_file.name)
                return self.url
            log.warning("moto did not start on port %s (attempt %d)", self.port, attempt + 1)
        raise RuntimeError(f"moto server failed to start on {self.url}:\n{failure}")

    def _launch(self) -> str:
        """Start moto and wait until it answers: '' when it does, else its log's tail."""
        if self.log_path is not None:
            self._log_file = open(self.log_path, "ab")  # noqa: SIM115 - lives with the child
        else:
            self._log_file = tempfile.NamedTemporaryFile(  # noqa: SIM115
                prefix="local-stack-moto-", suffix=".log", delete=False
            )
        env = {**os.environ, **DUMMY_CREDENTIALS, "AWS_DEFAULT_REGION": REGION}
        env.pop("AWS_ENDPOINT_URL", None)
        timeout_s = MOTO_START_TIMEOUT_S
        if self.dynamodb_local_jar is not None:
            self.dynamodb_port = free_port()
            env["LOCAL_DYNAMODB_JAR"] = str(self.dynamodb_local_jar)
            env["LOCAL_DYNAMODB_PORT"] = str(self.dynamodb_port)
            env["LOCAL_DYNAMODB_LOG"] = self._log_file.name  # its lines beside moto's
            timeout_s += DYNAMODB_LOCAL_START_TIMEOUT_S  # a JVM starts first
        self._process = subprocess.Popen(
            [sys.executable, "-m", "local_stack.moto_process", str(os.getpid()), str(self.port)],
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            env=env,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self._process.poll() is None:
            if self._answers():
                return ""
            time.sleep(0.1)
        tail = Path(self._log_file.name).read_text(errors="replace")[-2000:]
        self.stop()
        return tail or "(no output)"

    def _answers(self) -> bool:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=1)
        try:
            connection.request("GET", "/moto-api/data.json")
            return connection.getresponse().status < 500
        except OSError:
            return False
        finally:
            connection.close()

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None
        if self._log_file is not None:
            self._log_file.close()
            if self.log_path is None:  # our temporary file: only kept while moto runs
                Path(self._log_file.name).unlink(missing_ok=True)
            self._log_file = None


def create_resources(
    model: StackModel, endpoint_url: str, visibility_timeout_s: int | None = None
) -> None:
    """Create every table and queue of the template in moto; tell the model the queue URLs.

    `visibility_timeout_s` replaces every queue's VisibilityTimeout, so tests can see a
    failed message come back (and reach its dead-letter queue) in seconds, not minutes.
    """
    dynamodb = client("dynamodb", endpoint_url)
    for table in model.tables:
        dynamodb.create_table(**table_request(table.name, table.properties))
        ttl = table.properties.get("TimeToLiveSpecification")
        if ttl:
            dynamodb.update_time_to_live(
                TableName=table.name,
                TimeToLiveSpecification={
                    "Enabled": bool(ttl.get("Enabled", False)),
                    "AttributeName": ttl["AttributeName"],
                },
            )
        log.info("table %s -> %s", table.logical_id, table.name)
    secrets_manager = client("secretsmanager", endpoint_url)
    for logical_id, resource in model.resources.items():
        if resource["Type"] != "AWS::SecretsManager::Secret":
            continue
        # As CloudFormation does: GenerateSecretString makes a random value, never in the
        # template. The functions read it by the name their environment's Ref gives.
        properties = resource.get("Properties") or {}
        value = properties.get("SecretString") or secrets.token_urlsafe(32)
        name = model.resolver.refs[logical_id]
        secrets_manager.create_secret(Name=name, SecretString=value)
        log.info("secret %s -> %s", logical_id, name)
    s3 = client("s3", endpoint_url)
    for bucket in model.buckets:
        s3.create_bucket(Bucket=bucket.name)
        if bucket.versioned:
            s3.put_bucket_versioning(
                Bucket=bucket.name, VersioningConfiguration={"Status": "Enabled"}
            )
        ignored = sorted(set(bucket.properties) & set(BUCKET_PROPERTIES_IGNORED_LOCALLY))
        log.info("bucket %s -> %s (ignored locally: %s)", bucket.logical_id, bucket.name, ignored)
    sqs = client("sqs", endpoint_url)
    for queue in model.queues:  # dead-letter targets come first
        attributes = queue_attributes(queue.properties)
        if visibility_timeout_s is not None:
            attributes["VisibilityTimeout"] = str(visibility_timeout_s)
        url = sqs.create_queue(QueueName=queue.name, Attributes=attributes)["QueueUrl"]
        model.set_queue_url(queue.logical_id, url)
        log.info("queue %s -> %s", queue.logical_id, url)


def table_request(name: str, properties: dict[str, Any]) -> dict[str, Any]:
    """CreateTable parameters from an AWS::DynamoDB::Table's Properties."""
    billing = properties.get("BillingMode", "PROVISIONED")
    request: dict[str, Any] = {
        "TableName": name,
        "KeySchema": properties["KeySchema"],
        "AttributeDefinitions": properties["AttributeDefinitions"],
        "BillingMode": billing,
    }
    if billing == "PROVISIONED":
        request["ProvisionedThroughput"] = properties.get(
            "ProvisionedThroughput", {"ReadCapacityUnits": 5, "WriteCapacityUnits": 5}
        )
    for key in ("GlobalSecondaryIndexes", "LocalSecondaryIndexes"):
        if properties.get(key):
            request[key] = [
                {k: v for k, v in index.items() if k in _INDEX_KEYS} for index in properties[key]
            ]
    sse = properties.get("SSESpecification")
    if sse and sse.get("SSEEnabled"):
        # Encrypted at rest as the template says: moto keeps it (a KMS key of its own, in
        # the table's description); DynamoDB Local accepts it and keeps tables in memory.
        request["SSESpecification"] = {"Enabled": True, "SSEType": sse.get("SSEType", "KMS")}
        if sse.get("KMSMasterKeyId"):
            request["SSESpecification"]["KMSMasterKeyId"] = sse["KMSMasterKeyId"]
    stream = properties.get("StreamSpecification")
    if stream:
        request["StreamSpecification"] = {
            "StreamEnabled": True,
            "StreamViewType": stream["StreamViewType"],
        }
    return request


def queue_attributes(properties: dict[str, Any]) -> dict[str, str]:
    """SQS CreateQueue attributes (all strings) from an AWS::SQS::Queue's Properties."""
    attributes: dict[str, str] = {}
    for key in _QUEUE_ATTRIBUTES:
        if key not in properties:
            continue
        value = properties[key]
        if isinstance(value, dict):
            value = json.dumps(value)
        elif isinstance(value, bool):
            value = "true" if value else "false"
        attributes[key] = str(value)
    return attributes
