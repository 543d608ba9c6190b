"""The AWS behind the local stack: two emulators as they ship, each a child process on
127.0.0.1, with the template's tables, queues, buckets and secrets.

- DynamoDB: Amazon's DynamoDB Local (Java 17; local_stack/dynamodb_local.py installs the
  jar): conditional writes, transactions, TTL, indexes and ConsumedCapacity as DynamoDB
  has them, and each request atomic.
- SQS, EventBridge, CloudWatch Logs, S3 and Secrets Manager: MiniStack's services (PyPI
  `ministack`, in a virtualenv of its own, .venv-ministack, since it pins its own botocore;
  `make run` creates it). MiniStack's SQS stays O(1) per request at any queue length, and
  its EventBridge delivers to SQS targets. Its DynamoDB is not used.

Neither is patched or wrapped: the functions reach each at its own endpoint (the
template's AwsEndpointUrl and AwsDynamoDbEndpointUrl), as they reach AWS.
"""

from __future__ import annotations

import contextlib
import functools
import http.client
import json
import logging
import os
import secrets
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

from local_stack import dynamodb_local
from local_stack.model import BUCKET_PROPERTIES_IGNORED_LOCALLY, StackModel
from local_stack.template import ACCOUNT_ID, REGION

log = logging.getLogger("local_stack")

REPO_ROOT = Path(__file__).resolve().parent.parent
DUMMY_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
}
MINISTACK_START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 5.0
# What the template's resources and the functions use of MiniStack; it loads no other.
MINISTACK_SERVICES = "sqs,events,logs,s3,secretsmanager"

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


class EmulatorUnavailable(RuntimeError):
    """An emulator cannot run here: the message says what to install."""


@functools.cache
def _session() -> boto3.session.Session:
    """One session for the process: a session loads and parses botocore's endpoint and
    service models once, where a session per client did it again for each of the stack's
    ~20 clients (8 of its 14 s of start-up, by cProfile)."""
    return boto3.session.Session(
        aws_access_key_id=DUMMY_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=DUMMY_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        aws_session_token=DUMMY_CREDENTIALS["AWS_SESSION_TOKEN"],
        region_name=REGION,
    )


# boto3 sessions are not thread-safe; the clients they make are.
_SESSION_LOCK = threading.Lock()


def client(service: str, endpoint_url: str, **config: Any) -> Any:
    """A boto3 client for an emulator: dummy credentials, us-east-1, no profile. Each client
    has its own copy of the session's event hooks, so one registered on it stays on it."""
    with _SESSION_LOCK:
        return _session().client(
            service, endpoint_url=endpoint_url, config=Config(**config) if config else None
        )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def ministack_python() -> Path:
    """MiniStack's interpreter: MINISTACK_VENV (default .venv-ministack) of this checkout."""
    venv = Path(os.environ.get("MINISTACK_VENV") or REPO_ROOT / ".venv-ministack")
    python = (venv if venv.is_absolute() else REPO_ROOT / venv) / "bin" / "python"
    if not python.exists():
        raise EmulatorUnavailable(
            f"MiniStack is not installed ({python} is missing): `make run` installs it "
            "(make .venv-ministack/.installed-<version>), with python3.13 or else python3"
        )
    return python


class Emulators:
    """DynamoDB Local and MiniStack, started together (`start`), stopped together (`stop`).

    `port`: MiniStack's (the AWS endpoint); `dynamodb_port`: DynamoDB Local's; 0 picks a
    free one. Both emulators' output goes to one log file (`log_path`, else a temporary
    file kept while they run)."""

    def __init__(self, port: int = 0, dynamodb_port: int = 0, log_path: Path | None = None):
        self.requested = (port, dynamodb_port)
        self.port = self.dynamodb_port = 0
        self.log_path = log_path
        self._log_file: Any = None
        self._ministack: subprocess.Popen[bytes] | None = None
        self._dynamodb: subprocess.Popen[bytes] | None = None
        self._workdir: tempfile.TemporaryDirectory[str] | None = None

    @property
    def url(self) -> str:
        """MiniStack: SQS, EventBridge, Logs, S3, Secrets Manager."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def dynamodb_url(self) -> str:
        return f"http://127.0.0.1:{self.dynamodb_port}"

    def start(self) -> None:
        """Both emulators, started side by side (the JVM takes the longer), until both
        answer; on failure, both stopped and the log's tail in the error."""
        jar = dynamodb_local.ensure_jar()  # DynamoDbLocalUnavailable says what to install
        python = ministack_python()
        if self.log_path is not None:
            self._log_file = open(self.log_path, "ab")  # noqa: SIM115 - lives with the children
        else:
            self._log_file = tempfile.NamedTemporaryFile(  # noqa: SIM115
                prefix="local-stack-aws-", suffix=".log", delete=False
            )
        try:
            self.dynamodb_port = self.requested[1] or free_port()
            self._dynamodb = dynamodb_local.start(
                jar, self.dynamodb_port, Path(self._log_file.name)
            )
            self._start_ministack(python)
            self._wait_ministack()
            dynamodb_local.wait_ready(
                self.dynamodb_port, self._dynamodb, dynamodb_local.START_TIMEOUT_S
            )
        except BaseException as error:
            tail = Path(self._log_file.name).read_text(errors="replace")[-2000:]
            self.stop()
            if isinstance(error, RuntimeError):
                raise RuntimeError(f"{error}\n{tail}") from error
            raise
        log.info(
            "AWS: MiniStack at %s, DynamoDB Local at %s (log: %s)",
            self.url,
            self.dynamodb_url,
            self._log_file.name,
        )

    def _start_ministack(self, python: Path) -> None:
        self.port = self.requested[0] or free_port()
        self._workdir = tempfile.TemporaryDirectory(prefix="local-stack-ministack-")
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": os.environ.get("HOME", "/root"),
            "LANG": os.environ.get("LANG", "C.UTF-8"),
            "TMPDIR": self._workdir.name,  # its pid file
            "BIND_HOST": "127.0.0.1",
            "GATEWAY_PORT": str(self.port),
            "IOT_MTLS_ENABLED": "0",
            "SFTP_ENABLED": "0",
            "SERVICES": MINISTACK_SERVICES,
            "MINISTACK_REGION": REGION,
            # Queue URLs on the address it listens on; ARNs in the account the template's
            # resolver (local_stack/template.py) gives the resources.
            "MINISTACK_HOST": "127.0.0.1",
            "MINISTACK_ACCOUNT_ID": ACCOUNT_ID,
            "LOG_LEVEL": "WARNING",
            # Its root caller's keys: it checks presigned S3 URLs (the exports' downloads)
            # against them, and the functions sign with these.
            **DUMMY_CREDENTIALS,
        }
        # Its own process group: `stop` ends the group, whatever workers it started.
        self._ministack = subprocess.Popen(
            [str(python), "-m", "ministack"],
            cwd=self._workdir.name,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=dynamodb_local.die_with_this_process,
        )

    def _wait_ministack(self) -> None:
        deadline = time.monotonic() + MINISTACK_START_TIMEOUT_S
        while time.monotonic() < deadline:
            assert self._ministack is not None
            if self._ministack.poll() is not None:
                raise RuntimeError(f"MiniStack exited with {self._ministack.returncode}")
            connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
            try:
                connection.request("GET", "/_ministack/ready")
                if connection.getresponse().status == 200:
                    return
            except OSError:
                pass
            finally:
                connection.close()
            time.sleep(0.1)
        raise RuntimeError(f"MiniStack did not answer within {MINISTACK_START_TIMEOUT_S:.0f} s")

    def stop(self) -> None:
        if self._ministack is not None:
            _stop_group(self._ministack)
            self._ministack = None
        if self._dynamodb is not None:
            _stop(self._dynamodb)
            self._dynamodb = None
        if self._workdir is not None:
            self._workdir.cleanup()
            self._workdir = None
        if self._log_file is not None:
            self._log_file.close()
            if self.log_path is None:  # our temporary file: only kept while they run
                Path(self._log_file.name).unlink(missing_ok=True)
            self._log_file = None


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _stop_group(process: subprocess.Popen[bytes]) -> None:
    """TERM MiniStack's process group, then KILL what is left: its workers outlive it."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=STOP_TIMEOUT_S)
    process.wait()


def create_resources(
    model: StackModel, aws: Emulators, visibility_timeout_s: int | None = None
) -> None:
    """Create the template's tables (DynamoDB Local), secrets, buckets and queues
    (MiniStack); tell the model the queue URLs.

    `visibility_timeout_s` replaces every queue's VisibilityTimeout, so tests can see a
    failed message come back (and reach its dead-letter queue) in seconds, not minutes.
    """
    endpoint_url = aws.url
    dynamodb = client("dynamodb", aws.dynamodb_url)
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
        # Encrypted at rest as the template says: DynamoDB Local accepts it and keeps
        # tables in memory.
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
