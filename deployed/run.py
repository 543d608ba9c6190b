"""`python -m deployed`: template.yaml, built and deployed by the SAM CLI onto MiniStack, under
the end-to-end tests. What `make test-deployed` (and so `make test`) runs.

1. MiniStack starts on 127.0.0.1 only, in a process group of its own, in a clean
   environment (its Lambda workers inherit it), with its files under one work folder.
2. `sam build` builds template.yaml for this machine's architecture (the `Architecture`
   parameter), with the template's python3.13 on PATH.
3. `deployed.ministack_compat` applies the MiniStack-only workarounds to a copy of the
   built template; `sam deploy --resolve-s3` deploys that copy with dummy credentials and
   AWS_ENDPOINT_URL at MiniStack.
4. The queues get the e2e tests' short visibility timeout, the sample store master is
   imported with `python -m retail_pulse_admin.stores import`, and the API functions' execution
   environments are started (WARM_UP).
5. The e2e tests run against the deployed API (tests/e2e/conftest.py reads the state file
   this writes: RETAIL_PULSE_STACK_STATE).
6. Whatever happened, MiniStack's whole process group is stopped (TERM, then KILL for its
   function workers, which outlive a TERM) and the run checks that nothing of it is left.

Every wait polls for the thing itself with a deadline; nothing sleeps for a fixed time.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import requests
import yaml

from deployed.ministack_compat import (
    MINISTACK_VERSION,
    adapt,
    after_deploy,
    describe,
    parameter_values,
)
from local_stack.sam import translated

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "template.yaml"
STACK_NAME = "retail-pulse"
STAGE = "Prod"
REGION = "us-east-1"
# Small: each process instance is one Python worker; 50 of them on 2 cores spend 88 s and
# 6.5 GB starting up (issue 16). The local stack's e2e runs 4 pollers too.
PROCESS_CONCURRENCY = 4
# As the local stack's e2e (LOCAL_VISIBILITY_TIMEOUT_S): failed messages come back in
# seconds, so the dead-letter test does not wait for the template's 6 minutes.
VISIBILITY_TIMEOUT_S = 5
DUMMY_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "test",
    "AWS_SECRET_ACCESS_KEY": "test",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_REGION": REGION,
}
# Execution environments started before the tests, per API route: as many as the e2e tests
# call at once (ten jobs submitted and polled concurrently). MiniStack, like Lambda, starts
# one per concurrent request, but here all of them on this machine's 2 cores: ten at once
# take ~26 s, where Lambda starts each on its own hardware in about a second. Started once,
# up front (as provisioned concurrency would be), the tests' own requests find them warm.
WARM_UP: tuple[tuple[str, str, bytes | None, int], ...] = (
    ("POST", "/api/submit/", b"{}", 10),
    ("GET", "/api/status", None, 10),
    ("GET", "/api/visits?storeid=S_NOPE", None, 1),
)
WARM_UP_TIMEOUT_S = 240
# Keep every started environment for the whole run (MiniStack reaps extra ones after 300 s).
WARM_TTL_S = 7200
READY_TIMEOUT_S = 90
BUILD_TIMEOUT_S = 900
DEPLOY_TIMEOUT_S = 600
TESTS_TIMEOUT_S = 1500
STOP_TIMEOUT_S = 15
# Every e2e test: one that needs what only the local stack has skips itself, saying what.
E2E_TESTS = ("tests/e2e",)


class DeployedRunError(Exception):
    """A step of the deployed run failed; the message says which and shows its output."""


def log(message: str) -> None:
    print(f"[deployed] {message}", flush=True)


# -- Finding what the run needs -------------------------------------------------------------


def find_python313() -> str | None:
    """A real python3.13 (the template's runtime): $PYTHON313, pyenv's, or one on PATH.
    pyenv's shims answer for every version but fail for one that is not selected."""
    if os.environ.get("PYTHON313"):
        return os.environ["PYTHON313"]
    candidates = []
    pyenv_root = os.environ.get("PYENV_ROOT") or str(Path.home() / ".pyenv")
    candidates += sorted(Path(pyenv_root).glob("versions/3.13*/bin/python3.13"), reverse=True)
    on_path = shutil.which("python3.13")
    if on_path and "/shims/" not in on_path:
        candidates.append(Path(on_path))
    for candidate in candidates:
        try:
            version = subprocess.run(
                [str(candidate), "-c", "import sys; print(sys.version_info[:2])"],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            ).stdout.strip()
        except OSError:
            continue
        if version == "(3, 13)":
            return str(candidate)
    return None


def machine_architecture() -> str:
    """The template's Architecture value for this machine."""
    machine = platform.machine().lower()
    if machine in ("x86_64", "amd64"):
        return "x86_64"
    if machine in ("aarch64", "arm64"):
        return "arm64"
    raise DeployedRunError(f"no Lambda architecture for this machine ({machine})")


def free_port(low: int = 20000, high: int = 32000) -> int:
    """A free port on 127.0.0.1 below the kernel's ephemeral range (32768-60999 by default),
    so nothing else is handed it between this pick and its use (the image server is bound
    by the test session, after the deploy that names it)."""
    for _ in range(200):
        port = random.randint(low, high)
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise DeployedRunError(f"no free port in {low}-{high} on 127.0.0.1")


def wait_for(what: str, check: Callable[[], bool], timeout_s: float, every_s: float = 0.2) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise DeployedRunError(f"{what}: not after {timeout_s:.0f} s")
        time.sleep(every_s)


# -- MiniStack ------------------------------------------------------------------------------


def scratch_folder(workdir: Path) -> Path:
    """MiniStack's TMPDIR: in memory (/dev/shm) when there is one. Each of its function
    workers writes and unpacks its own copy of the code and the 71 MB layer there, ~2 GB for
    a run's workers: on this disk MiniStack spent 130 s of CPU on it (88 of them in the
    kernel) during the warm-up. Otherwise a folder of the run's work folder."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        return Path(tempfile.mkdtemp(prefix="retail-pulse-ministack-", dir=shm))
    tmp = workdir / "ministack-tmp"
    tmp.mkdir()
    return tmp


@dataclass
class MiniStack:
    process: subprocess.Popen[bytes]
    endpoint: str
    log_path: Path
    port: int
    # Its TMPDIR, where each function worker unpacks its own copy of the code and layer.
    scratch: Path

    @classmethod
    def start(cls, python: Path, workdir: Path) -> MiniStack:
        port = free_port()
        tmp = scratch_folder(workdir)
        # Its Lambda workers start with MiniStack's own environment plus the function's:
        # nothing of this shell (credentials, proxies, the tests' settings) goes in.
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": os.environ.get("HOME", "/root"),
            "LANG": os.environ.get("LANG", "C.UTF-8"),
            "TMPDIR": str(tmp),
            "STATE_DIR": str(workdir / "ministack-state"),
            "S3_DATA_DIR": str(workdir / "ministack-s3"),
            "BIND_HOST": "127.0.0.1",
            "GATEWAY_PORT": str(port),
            "IOT_MTLS_ENABLED": "0",
            "SFTP_ENABLED": "0",
            "MINISTACK_REGION": REGION,
            "LAMBDA_WARM_TTL_SECONDS": str(WARM_TTL_S),
        }
        log_path = workdir / "ministack.log"
        with open(log_path, "wb") as out:
            process = subprocess.Popen(
                [str(python), "-m", "ministack"],
                cwd=workdir,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        ministack = cls(process, f"http://127.0.0.1:{port}", log_path, port, tmp)
        try:
            ministack.wait_ready()
        except BaseException:
            ministack.stop()
            remove_in_background(tmp)
            raise
        return ministack

    def wait_ready(self) -> None:
        def ready() -> bool:
            if self.process.poll() is not None:
                raise DeployedRunError(
                    f"MiniStack exited with {self.process.returncode}:\n{self.log_tail()}"
                )
            try:
                return requests.get(f"{self.endpoint}/_ministack/ready", timeout=2).ok
            except requests.RequestException:
                return False

        wait_for("MiniStack ready", ready, READY_TIMEOUT_S)

    def log_tail(self, chars: int = 6000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    def group_members(self) -> list[int]:
        return processes_in_group(self.process.pid)

    def stop(self) -> list[int]:
        """TERM the whole group, KILL what is left (its function workers survive a TERM),
        and return the ids of any process of the group still there afterwards."""
        pgid = self.process.pid
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + STOP_TIMEOUT_S
            while processes_in_group(pgid) and time.monotonic() < deadline:
                if self.process.poll() is None:
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        self.process.wait(timeout=0.2)
                else:
                    time.sleep(0.2)
            if not processes_in_group(pgid):
                break
        if self.process.poll() is None:
            self.process.wait(timeout=STOP_TIMEOUT_S)
        return processes_in_group(pgid)


def processes_in_group(pgid: int) -> list[int]:
    """Live (not zombie) processes whose process group is `pgid`, read from /proc."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        # pid (comm) state ppid pgrp ...; comm may hold spaces and parentheses.
        fields = text[text.rindex(")") + 2 :].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(stat.parent.name))
    return members


def group_rss_mb(pgid: int) -> float:
    """Resident memory of a process group, in MB (each process's VmRSS, summed)."""
    return rss_mb(processes_in_group(pgid))


def rss_mb(pids: Iterable[int]) -> float:
    """Resident memory of these processes, in MB (each one's VmRSS, summed; one that has
    ended counts nothing)."""
    total_kb = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total_kb += int(line.split()[1])
        except OSError:
            continue
    return total_kb / 1024


# -- Build and deploy -----------------------------------------------------------------------


def run_step(
    what: str, command: Sequence[str], env: dict[str, str], timeout_s: float, log_path: Path
) -> None:
    """Run a command with its output in `log_path`; on failure the error shows its tail."""
    log(f"{what}: {' '.join(command)}")
    started = time.monotonic()
    with open(log_path, "wb") as out:
        try:
            result = subprocess.run(
                list(command),
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                timeout=timeout_s,
                check=False,
            )
        except subprocess.TimeoutExpired as expired:
            raise DeployedRunError(
                f"{what}: still running after {timeout_s:.0f} s\n{_tail(log_path)}"
            ) from expired
    if result.returncode != 0:
        raise DeployedRunError(f"{what}: exit {result.returncode}\n{_tail(log_path)}")
    log(f"{what}: done in {time.monotonic() - started:.1f} s")


def _tail(path: Path, chars: int = 6000) -> str:
    return path.read_text(errors="replace")[-chars:]


def aws_env(endpoint: str) -> dict[str, str]:
    """This shell's environment with dummy credentials and every AWS call sent to MiniStack."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(DUMMY_CREDENTIALS, AWS_ENDPOINT_URL=endpoint, SAM_CLI_TELEMETRY="0")
    return env


def build(sam: str, python313: str, architecture: str, build_dir: Path, workdir: Path) -> None:
    env = aws_env("http://127.0.0.1:1")  # sam build calls no AWS API; never a real one
    env["PATH"] = f"{Path(python313).parent}{os.pathsep}{env.get('PATH', '')}"
    run_step(
        "sam build",
        [
            sam,
            "build",
            "--template",
            str(TEMPLATE),
            "--build-dir",
            str(build_dir),
            "--parameter-overrides",
            f"Architecture={architecture}",
            "--no-cached",
            "--parallel",
        ],
        env,
        BUILD_TIMEOUT_S,
        workdir / "sam-build.log",
    )
    kept = trim_botocore_models(build_dir, services_the_functions_may_call(translated(TEMPLATE)))
    if kept is not None:
        log(f"botocore models kept in the layer: {', '.join(kept)} (no role may call the others)")
    compile_bytecode(python313, build_dir, workdir)


# What the managed policies on the template's roles let a function call, by the policy's name.
MANAGED_POLICY_SERVICES = {
    "AWSLambdaBasicExecutionRole": {"logs"},
    "AWSXrayWriteOnlyAccess": {"xray"},
}


def services_the_functions_may_call(template: Mapping[str, Any]) -> set[str] | None:
    """The services the translated template's roles allow: the prefixes of their inline
    policies' actions, and those of the managed policies in MANAGED_POLICY_SERVICES. None
    (trim nothing) when a role has a managed policy not named there, or allows any service."""
    services: set[str] = set()
    for resource in template["Resources"].values():
        if resource["Type"] != "AWS::IAM::Role":
            continue
        properties = resource["Properties"]
        for arn in properties.get("ManagedPolicyArns", []):
            text = arn if isinstance(arn, str) else json.dumps(arn)
            name = text.rsplit("/", 1)[-1].strip('"}')
            if name not in MANAGED_POLICY_SERVICES:
                return None
            services |= MANAGED_POLICY_SERVICES[name]
        for policy in properties.get("Policies", []):
            statements = policy["PolicyDocument"]["Statement"]
            for statement in statements if isinstance(statements, list) else [statements]:
                if statement.get("Effect") != "Allow":
                    continue
                actions = statement.get("Action", [])
                for action in [actions] if isinstance(actions, str) else actions:
                    if not isinstance(action, str) or ":" not in action:
                        return None  # "*", or an intrinsic: any service
                    services.add(action.split(":", 1)[0].lower())
    return services


def trim_botocore_models(build_dir: Path, services: set[str] | None) -> list[str] | None:
    """Remove from the built layer botocore's models of the services no function may call
    (their IAM roles allow none of their actions): 2,000 of the layer's 3,250 files, which
    MiniStack writes out and checks one by one for each execution environment it starts (half
    of a worker's unpacking time). A call to a trimmed service could only be AccessDenied in
    AWS; here it fails at once, naming the service. The endpoint and partition files stay.
    Returns the services kept, or None when nothing was trimmed."""
    if services is None:
        return None
    kept: set[str] = set()
    for data in build_dir.glob("*/python/botocore/data"):
        for model in data.iterdir():
            if not model.is_dir():
                continue
            if model.name in services:
                kept.add(model.name)
            else:
                shutil.rmtree(model)
    return sorted(kept)


def compile_bytecode(python313: str, build_dir: Path, workdir: Path) -> None:
    """Compile the built functions and layer to bytecode, as a deployment package should ship:
    `sam build` leaves none, so each of MiniStack's workers (a fresh copy of the code each)
    compiled boto3, pydantic and the rest again on its cold start. Hash-checked, since
    unpacking a zip does not keep the sources' modification times."""
    run_step(
        "compile bytecode",
        [
            python313,
            "-m",
            "compileall",
            "-q",
            "-j",
            "0",
            "--invalidation-mode",
            "checked-hash",
            str(build_dir),
        ],
        {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"},
        BUILD_TIMEOUT_S,
        workdir / "compile-bytecode.log",
    )


def deploy(
    sam: str, template: Path, overrides: dict[str, str], endpoint: str, workdir: Path
) -> None:
    run_step(
        "sam deploy",
        [
            sam,
            "deploy",
            "--template-file",
            str(template),
            "--stack-name",
            STACK_NAME,
            "--region",
            REGION,
            "--resolve-s3",
            "--capabilities",
            "CAPABILITY_IAM",
            "--no-confirm-changeset",
            "--no-fail-on-empty-changeset",
            "--no-progressbar",
            "--parameter-overrides",
            *(f"{name}={value}" for name, value in overrides.items()),
        ],
        aws_env(endpoint),
        DEPLOY_TIMEOUT_S,
        workdir / "sam-deploy.log",
    )


def _client(service: str, endpoint: str) -> Any:
    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id=DUMMY_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=DUMMY_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
    )


def stack_resources(endpoint: str) -> dict[str, tuple[str, str]]:
    """(type, physical id) of each resource of the deployed stack, by logical id."""
    cloudformation = _client("cloudformation", endpoint)
    return {
        r["LogicalResourceId"]: (r["ResourceType"], r["PhysicalResourceId"])
        for r in cloudformation.describe_stack_resources(StackName=STACK_NAME)["StackResources"]
    }


def stack_state(
    endpoint: str, resources: dict[str, tuple[str, str]], image_port: int, ministack_log: Path
) -> dict[str, Any]:
    """What the e2e fixture needs, read back from CloudFormation."""

    def of_type(kind: str) -> dict[str, str]:
        return {k: physical for k, (t, physical) in resources.items() if t == kind}

    api_id = resources["RetailPulseApi"][1]
    functions = of_type("AWS::Lambda::Function")
    log_groups = {
        function: resources[f"{function}LogGroup"][1]
        for function in functions
        if f"{function}LogGroup" in resources
    }
    return {
        "kind": "deployed",
        "stack_name": STACK_NAME,
        # MiniStack's path-style address of the stage; AWS's is the stack's ApiUrl output.
        "api_url": f"{endpoint}/_aws/execute-api/{api_id}/{STAGE}",
        "aws_endpoint_url": endpoint,
        "queues": of_type("AWS::SQS::Queue"),
        "tables": of_type("AWS::DynamoDB::Table"),
        "functions": functions,
        "log_groups": log_groups,
        "image_port": image_port,
        "visibility_timeout_s": VISIBILITY_TIMEOUT_S,
        "log_path": str(ministack_log),
    }


def shorten_visibility(endpoint: str, queues: dict[str, str]) -> None:
    """The test setting the local stack applies with LOCAL_VISIBILITY_TIMEOUT_S."""
    sqs = _client("sqs", endpoint)
    for url in queues.values():
        sqs.set_queue_attributes(
            QueueUrl=url, Attributes={"VisibilityTimeout": str(VISIBILITY_TIMEOUT_S)}
        )


def warm_up(api_url: str, pgid: int) -> None:
    """Start the API functions' execution environments before the tests (see WARM_UP): each
    route gets its burst of concurrent requests at once, each answered 400 (bad input)."""
    started = time.monotonic()
    calls = [(m, path, body) for m, path, body, count in WARM_UP for _ in range(count)]
    barrier = threading.Barrier(len(calls))
    answers: list[int | str] = [0] * len(calls)

    def call(index: int) -> None:
        method, path, body = calls[index]
        barrier.wait(timeout=30)
        try:
            answers[index] = requests.request(
                method, api_url + path, data=body, timeout=WARM_UP_TIMEOUT_S
            ).status_code
        except requests.RequestException as error:
            answers[index] = repr(error)

    threads = [threading.Thread(target=call, args=(i,), daemon=True) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=WARM_UP_TIMEOUT_S + 30)
    if any(answer != 400 for answer in answers):
        raise DeployedRunError(f"warm-up: not every answer was a 400: {answers}")
    log(
        f"warm-up: {len(calls)} requests in {time.monotonic() - started:.1f} s; "
        f"Lambda workers {worker_counts(pgid)}"
    )


def worker_counts(pgid: int) -> dict[str, int]:
    """MiniStack's Lambda workers in its process group, counted by function."""
    counts: dict[str, int] = {}
    for pid in processes_in_group(pgid):
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if "ministack-lambda-" in command:
            folder = command.split("ministack-lambda-", 1)[1].split("/", 1)[0]
            function = folder.rsplit("-", 2)[0].removeprefix(f"{STACK_NAME}-")
            counts[function] = counts.get(function, 0) + 1
    return counts


def load_store_master(endpoint: str, table: str, workdir: Path) -> None:
    env = aws_env(endpoint)
    env["STORES_TABLE"] = table
    run_step(
        "store master import",
        [
            sys.executable,
            "-m",
            "retail_pulse_admin.stores",
            "import",
            str(ROOT / "data" / "stores_sample.csv"),
        ],
        env,
        120,
        workdir / "stores-import.log",
    )
    log(_tail(workdir / "stores-import.log").strip())


def installed_version(python: Path, package: str) -> str | None:
    result = subprocess.run(
        [str(python), "-c", f"import importlib.metadata as m; print(m.version({package!r}))"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return result.stdout.strip() if result.returncode == 0 else None


def remove_in_background(folder: Path) -> None:
    """Delete `folder` in a process of its own that the run does not wait for: the functions'
    unpacked copies are GBs of small files, ~50 s of deleting at the end of every run."""
    subprocess.Popen(
        ["rm", "-rf", "--", str(folder)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


# -- The run --------------------------------------------------------------------------------


def _raise_on_signal(signum: int, _frame: Any) -> None:
    raise SystemExit(128 + signum)


def deploy_stack(
    ministack: MiniStack,
    sam: str,
    python313: str,
    workdir: Path,
    image_port: int,
    process_concurrency: int = PROCESS_CONCURRENCY,
    warm: bool = True,
) -> dict[str, Any]:
    """Build, adapt, deploy, configure, load and warm up; returns the stack's state for the
    tests (with the seconds each step took, under "timings_s")."""
    timings: dict[str, float] = {}
    mark = time.monotonic()

    def lap(step: str) -> None:
        nonlocal mark
        timings[step] = round(time.monotonic() - mark, 1)
        mark = time.monotonic()

    architecture = machine_architecture()
    build_dir = workdir / "build"
    build(sam, python313, architecture, build_dir, workdir)
    lap("sam build")

    overrides = {
        "Architecture": architecture,
        "AwsEndpointUrl": ministack.endpoint,
        "AllowedPrivateHosts": f"127.0.0.1:{image_port}",
        "ProcessConcurrency": str(process_concurrency),
        # Two cores: the express lane's workers are on top of ProcessConcurrency's.
        "ExpressConcurrency": "2",
        # As the local stack's default: no x-api-key (a private test stack).
        "RequireApiKey": "false",
    }
    built = yaml.safe_load((build_dir / "template.yaml").read_text())
    adapted, applied = adapt(built, overrides)
    log(describe(applied))
    # Beside the built template: its CodeUri/ContentUri are relative to that folder.
    adapted_path = build_dir / "template.ministack.json"
    adapted_path.write_text(json.dumps(adapted, indent=1))

    deploy(sam, adapted_path, overrides, ministack.endpoint, workdir)
    resources = stack_resources(ministack.endpoint)
    physical_ids = {logical_id: physical for logical_id, (_, physical) in resources.items()}
    applied = after_deploy(_client("apigateway", ministack.endpoint), adapted, physical_ids)
    log(describe(applied, "to the deployed stack"))
    state = stack_state(ministack.endpoint, resources, image_port, ministack.log_path)
    state["sqs_slots"] = sqs_slots(adapted, parameter_values(adapted, overrides))
    shorten_visibility(ministack.endpoint, state["queues"])
    lap("sam deploy")
    load_store_master(ministack.endpoint, state["tables"]["StoresTable"], workdir)
    lap("store master import")
    if warm:
        warm_up(state["api_url"], ministack.process.pid)
        lap("warm-up")
    state["timings_s"] = timings
    return state


def sqs_slots(template: Mapping[str, Any], parameters: Mapping[str, str]) -> dict[str, int]:
    """Images each SQS event source processes at once, by "<Function>.<Event>": its
    MaximumConcurrency times its BatchSize (the local stack's state file says the same)."""

    def value(node: Any) -> int:
        return int(parameters[node["Ref"]] if isinstance(node, dict) else node)

    slots = {}
    for logical_id, resource in template["Resources"].items():
        events = resource.get("Properties", {}).get("Events", {})
        for event_id, event in events.items():
            props = event.get("Properties", {})
            concurrency = props.get("ScalingConfig", {}).get("MaximumConcurrency")
            if event.get("Type") == "SQS" and concurrency is not None:
                slots[f"{logical_id}.{event_id}"] = value(concurrency) * value(
                    props.get("BatchSize", 10)
                )
    return slots


def run_tests(state_path: Path, pytest_args: Sequence[str]) -> int:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "LOCAL_"))}
    env["RETAIL_PULSE_STACK_STATE"] = str(state_path)
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-m",
        "e2e",
        "-p",
        "no:cacheprovider",
        "--durations=8",
        *(pytest_args or E2E_TESTS),
    ]
    log(f"e2e tests against the deployed stack: {' '.join(command[1:])}")
    try:
        return subprocess.run(
            command, cwd=ROOT, env=env, timeout=TESTS_TIMEOUT_S, check=False
        ).returncode
    except subprocess.TimeoutExpired:
        log(f"the e2e tests were still running after {TESTS_TIMEOUT_S} s: stopped")
        return 1


@dataclass
class Beside:
    """A command run beside the deployed stack's tests: the stack's build, deploy and warm-up
    take both cores, its tests about one (waiting on deadlines, visibility timeouts and
    trickling hosts), so the local stack's own e2e tests can run in the other (not in `make
    test`: the local stack's flood test once starved MiniStack past a 60 s bound)."""

    command: str
    process: subprocess.Popen[bytes]
    log_path: Path
    started: float

    @classmethod
    def start(cls, command: str, workdir: Path) -> Beside:
        log_path = workdir / "beside.log"
        # Not the deployed stack's state: the command starts stacks of its own.
        env = {k: v for k, v in os.environ.items() if k != "RETAIL_PULSE_STACK_STATE"}
        with open(log_path, "wb") as output:
            process = subprocess.Popen(
                shlex.split(command),
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        log(f"beside the tests: {command} (output: {log_path})")
        return cls(command, process, log_path, time.monotonic())

    def finish(self) -> int:
        """Wait for the command, print its output; its exit code (1 if it ran too long)."""
        try:
            code = self.process.wait(timeout=TESTS_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            log(f"{self.command} was still running after {TESTS_TIMEOUT_S} s: stopped")
            self.stop()
            code = 1
        print(self.log_path.read_text(errors="replace"), end="", flush=True)
        log(
            f"beside the tests: {self.command} exit {code} after "
            f"{time.monotonic() - self.started:.1f} s"
        )
        return code

    def stop(self) -> None:
        """TERM its process group, then KILL: nothing of it outlives the run."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_TIMEOUT_S * 3)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deployed", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--keep",
        action="store_true",
        help="after the tests, keep the stack up until Ctrl-C (prints its state file)",
    )
    parser.add_argument("--no-tests", action="store_true", help="deploy only (with --keep)")
    parser.add_argument(
        "--beside",
        metavar="COMMAND",
        help="run COMMAND (e.g. the local stack's e2e tests) beside the deployed stack's tests, "
        "once the stack is deployed and warm; its output is printed after theirs, and the run "
        "fails if it fails",
    )
    parser.add_argument("pytest_args", nargs="*", help="tests to run (default: the e2e suite)")
    args = parser.parse_args(argv)

    python313 = find_python313()
    if python313 is None:
        print(
            "skipped: make test-deployed (the template deployed onto MiniStack) needs a "
            "python3.13, the template's runtime, and there is none here "
            "(install one, e.g. pyenv install 3.13)",
            flush=True,
        )
        return 0
    ministack_python = ROOT / os.environ.get("MINISTACK_VENV", ".venv-ministack") / "bin/python"
    sam = os.environ.get("SAM", str(ROOT / ".venv-sam/bin/sam"))
    for needed, how in ((ministack_python, "make test-deployed"), (Path(sam), "make sam")):
        if not Path(needed).exists():
            log(f"FAILED: {needed} is missing: run `{how}`")
            return 1
    version = installed_version(ministack_python, "ministack")
    if version != MINISTACK_VERSION:
        log(
            f"FAILED: MiniStack {version} is installed, deployed/ministack_compat.py is for "
            f"{MINISTACK_VERSION}: reinstall it (make test-deployed) or review the workarounds"
        )
        return 1

    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _raise_on_signal)
    workdir = Path(tempfile.mkdtemp(prefix="retail-pulse-deployed-"))
    log(f"work folder {workdir}; MiniStack {version}; python3.13 {python313}")
    started = time.monotonic()
    ministack: MiniStack | None = None
    beside: Beside | None = None
    code = 1
    try:
        ministack = MiniStack.start(ministack_python, workdir)
        log(f"MiniStack ready at {ministack.endpoint} in {time.monotonic() - started:.1f} s")
        image_port = free_port()
        state = deploy_stack(ministack, sam, python313, workdir, image_port)
        state_path = workdir / "state.json"
        state_path.write_text(json.dumps(state, indent=1))
        log(
            f"deployed, {time.monotonic() - started:.1f} s from the start: {state['api_url']} "
            f"(MiniStack group {group_rss_mb(ministack.process.pid):.0f} MB RSS)"
        )
        testing = time.monotonic()
        if args.beside and not args.no_tests:
            beside = Beside.start(args.beside, workdir)
        code = 0 if args.no_tests else run_tests(state_path, args.pytest_args)
        if beside is not None:
            code = beside.finish() or code
        log(
            f"tests exit {code} after {time.monotonic() - testing:.1f} s; MiniStack group "
            f"{group_rss_mb(ministack.process.pid):.0f} MB "
            f"RSS in {len(ministack.group_members())} processes"
        )
        if args.keep:
            log(f"stack kept: RETAIL_PULSE_STACK_STATE={state_path} (Ctrl-C stops it)")
            while ministack.process.poll() is None:
                time.sleep(1)
    except DeployedRunError as error:
        log(f"FAILED: {error}")
        if ministack is not None:
            log(f"MiniStack log ({ministack.log_path}), last lines:\n{ministack.log_tail(3000)}")
        code = 1
    except KeyboardInterrupt:
        log("interrupted")
        code = 130
    finally:
        stopping = time.monotonic()
        if beside is not None:
            beside.stop()
        if ministack is not None:
            left = ministack.stop()
            if left:
                log(f"FAILED: processes of MiniStack's group alive after KILL: {left}")
                code = code or 1
            else:
                log(
                    "MiniStack and its function workers stopped in "
                    f"{time.monotonic() - stopping:.1f} s: nothing of it left running"
                )
        if ministack is not None:
            # The functions' unpacked copies (GBs) go whatever happened.
            remove_in_background(ministack.scratch)
        if code == 0:
            remove_in_background(workdir)
        else:
            log(f"logs kept in {workdir}")
        log(
            f"total {time.monotonic() - started:.1f} s "
            f"({time.monotonic() - stopping:.1f} s to stop and clean up)"
        )
    return code
