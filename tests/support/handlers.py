"""Load a function's handler module from functions/<name>/app.py, as Lambda does: each
function folder holds a module named `app`, so they are loaded under distinct names."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

FUNCTIONS = Path(__file__).resolve().parents[2] / "functions"


# Routes whose function folder is not named after the route's first segment.
_FOLDER_OF = {"cancel": "job_actions", "retry": "job_actions", "webhook-secret": "webhook_secret"}


def function_for(path: str) -> str:
    """The function folder behind an API path, as template.yaml wires it."""
    if path.startswith("/api/submit"):
        return "submit"
    segment = path.split("/")[2]
    return _FOLDER_OF.get(segment, segment)


def load_handler(name: str) -> ModuleType:
    module_name = f"functions_{name}_app"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, FUNCTIONS / name / "app.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


class FakeContext:
    """The parts of the Lambda context object that handlers and Powertools read."""

    function_name = "test-function"
    function_version = "$LATEST"
    memory_limit_in_mb = 512
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:test-function"
    aws_request_id = "00000000-0000-4000-8000-000000000000"
    log_group_name = "/aws/lambda/test-function"
    log_stream_name = "local"

    def get_remaining_time_in_millis(self) -> int:
        return 60_000


class LongContext(FakeContext):
    """An invocation with a 15-minute function's time ahead of it (ingest, export)."""

    def get_remaining_time_in_millis(self) -> int:
        return 900_000
