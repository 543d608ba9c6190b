"""template.yaml as CloudFormation sees it (short-form tags expanded), for tests that check
the template against the code."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from cfnlint.decode import decode

TEMPLATE_PATH = Path(__file__).resolve().parents[2] / "template.yaml"


@lru_cache(maxsize=1)
def load_template() -> dict[str, Any]:
    parsed, errors = decode(str(TEMPLATE_PATH))
    assert not errors, errors
    return parsed


def resources(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    """The template's resources of one type, by logical id."""
    return {k: v for k, v in template["Resources"].items() if v["Type"] == kind}
