from __future__ import annotations

from typing import Any

import pytest

from tests.support.fake_dns import fake_dns  # noqa: F401  (a fixture the fetcher tests share)
from tests.support.template import load_template


@pytest.fixture
def template() -> dict[str, Any]:
    """template.yaml, parsed once per session; each test gets the same read-only dict."""
    return load_template()
