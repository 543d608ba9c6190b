"""The Lambda layer installs layers/common/requirements.txt and the tests run what
pyproject.toml installs: the two name the same packages at the same versions, so the layer
runs what the tests ran."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _layer_requirements() -> list[str]:
    lines = (ROOT / "layers" / "common" / "requirements.txt").read_text().splitlines()
    return sorted(line.strip() for line in lines if line.strip() and not line.startswith("#"))


def test_the_layer_installs_what_the_tests_run() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert sorted(project["dependencies"]) == _layer_requirements()
