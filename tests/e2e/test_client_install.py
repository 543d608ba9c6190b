"""`pip install ./client` into a fresh virtualenv gives a working `retail-pulse`, with only
the client's own dependencies, as a user gets it.

The install is real: pip resolves the client's declared dependencies from the package
index the machine is configured with, in a virtualenv that sees no other site-packages,
so a dependency the client forgot to declare (or one of the service's it must not need)
shows up here. That takes about 15 s and the network, so the test is marked e2e: `make
test` runs it in its end-to-end phase, the quick unit run (`make test-fast`) does not. It
needs no stack (marked stackless): `make test` runs it once, with the local stack's own
e2e tests. (A wheelhouse made from .venv would avoid the network, but .venv
has no setuptools the client's build needs, and installing with --no-build-isolation or
extra site-packages would hide exactly what this test is for.)
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer

from retail_pulse_client.cli import app

pytestmark = [pytest.mark.e2e, pytest.mark.stackless]

CLIENT = Path(__file__).resolve().parents[2] / "client"
# What the service needs and the client must not bring along.
SERVICE_ONLY = {"boto3", "botocore", "pynamodb", "pillow", "aws-lambda-powertools", "retail-pulse"}
INSTALL_TIMEOUT_S = 600


def command_paths(command: Any, path: tuple[str, ...] = ()) -> Iterator[list[str]]:
    """Every command and group of the CLI, as the words a user types before --help."""
    yield list(path)
    for name, sub in (getattr(command, "commands", None) or {}).items():  # a group's
        yield from command_paths(sub, (*path, name))


class FreshClient:
    """A virtualenv with nothing but `pip install ./client` in it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.bin = root / "venv" / "bin"
        # Nothing of this process's environment may leak a package in.
        self.env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP")
        }

    def run(self, *argv: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run from an empty folder, so no checkout is on sys.path."""
        return subprocess.run(
            argv,
            cwd=self.root / "work",
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def installed(self) -> set[str]:
        listing = self.run(str(self.bin / "python"), "-m", "pip", "list", "--format=freeze")
        assert listing.returncode == 0, listing.stderr
        return {
            re.sub(r"[-_.]+", "-", line.split("==")[0]).lower()
            for line in listing.stdout.splitlines()
        }


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> FreshClient:
    root = tmp_path_factory.mktemp("fresh-client")
    (root / "work").mkdir()
    # A copy, so the build writes its egg-info and build/ there, not into the checkout.
    source = root / "client"
    shutil.copytree(
        CLIENT, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__")
    )
    made = subprocess.run(
        [sys.executable, "-m", "venv", str(root / "venv")], capture_output=True, text=True
    )
    assert made.returncode == 0, made.stderr
    client = FreshClient(root)
    install = client.run(
        str(client.bin / "python"),
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "--no-input",
        "--retries",
        "5",
        str(source),
        timeout=INSTALL_TIMEOUT_S,
    )
    assert install.returncode == 0, f"pip install ./client failed:\n{install.stderr[-4000:]}"
    return client


def test_only_the_clients_own_dependencies_are_installed(fresh: FreshClient) -> None:
    installed = fresh.installed()

    assert {"retail-pulse-client", "typer", "rich", "requests", "pydantic"} <= installed
    assert installed & SERVICE_ONLY == set()
    no_service = fresh.run(str(fresh.bin / "python"), "-c", "import retail_pulse")
    assert no_service.returncode != 0 and "No module named 'retail_pulse'" in no_service.stderr


@pytest.mark.parametrize("words", list(command_paths(typer.main.get_command(app))), ids=" ".join)
def test_every_command_answers_help(fresh: FreshClient, words: list[str]) -> None:
    result = fresh.run(str(fresh.bin / "retail-pulse"), *words, "--help")

    assert result.returncode == 0, result.stderr
    assert "Usage: retail-pulse" in result.stdout
    assert "Traceback" not in result.stderr


def test_python_m_is_the_same_command(fresh: FreshClient) -> None:
    result = fresh.run(str(fresh.bin / "python"), "-m", "retail_pulse_client", "--help")

    assert result.returncode == 0, result.stderr
    assert "submit" in result.stdout and "visits" in result.stdout


@pytest.mark.parametrize(
    "words",
    [["stores", "import", "x.csv"], ["clients", "add", "acme"], ["clients", "list"]],
    ids=" ".join,
)
def test_an_admin_command_says_in_one_line_what_to_install(
    fresh: FreshClient, words: list[str]
) -> None:
    result = fresh.run(str(fresh.bin / "retail-pulse"), *words)

    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"retail-pulse {' '.join(words[:2])} needs the service package: "
        "pip install -e <repo> (or make install)"
    ]


def test_the_desk_checks_work_without_the_service(fresh: FreshClient) -> None:
    """A bad job file and a bad date are caught before anything is sent, client alone."""
    job = fresh.root / "work" / "job.csv"
    job.write_text("store_id,image_url,visit_time\nS1,ftp://h/a.jpg,28/11/2026\nS1,,x\n")

    submit = fresh.run(str(fresh.bin / "retail-pulse"), "submit", str(job))
    visits = fresh.run(str(fresh.bin / "retail-pulse"), "visits", "--from", "yesterday")

    assert submit.returncode == 2, submit.stderr
    assert "line 2: visit_time '28/11/2026' is not an RFC 3339 timestamp" in submit.stderr
    assert "line 3: image_url is empty" in submit.stderr
    assert visits.returncode == 2
    assert "--from: 'yesterday' is not an RFC 3339 timestamp" in visits.stderr
