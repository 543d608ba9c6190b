"""LOCAL_FUNCTION_ENV: tests scale the template's own settings (a deadline, say) without a
template of their own, and cannot invent settings the template does not declare."""

from __future__ import annotations

from pathlib import Path

import pytest

from local_stack.model import FunctionSpec, StackModel
from local_stack.stack import (
    REPO_ROOT,
    StackConfig,
    apply_function_environment,
    parse_function_environment,
)


def spec(name: str, **environment: str) -> FunctionSpec:
    return FunctionSpec(
        logical_id=name,
        name=name,
        arn=f"arn:{name}",
        code_dir=Path("."),
        handler="app.handler",
        runtime="python3.13",
        timeout_s=3,
        memory_mb=128,
        environment=dict(environment),
    )


def test_entries_are_name_equals_value() -> None:
    assert parse_function_environment("IMAGE_DEADLINE_S=3, READ_TIMEOUT_S=1.5,") == {
        "IMAGE_DEADLINE_S": "3",
        "READ_TIMEOUT_S": "1.5",
    }
    assert parse_function_environment(None) == {} == parse_function_environment(" ")


@pytest.mark.parametrize("raw", ["IMAGE_DEADLINE_S", "3X=1", "=1", "A B=1"])
def test_a_malformed_entry_is_named(raw: str) -> None:
    with pytest.raises(ValueError, match="is not NAME=value") as error:
        parse_function_environment(raw)
    assert repr(raw) in str(error.value)


def test_only_functions_that_declare_a_variable_get_its_value() -> None:
    process, status = spec("Process", IMAGE_DEADLINE_S="30", X="1"), spec("Status", X="1")
    apply_function_environment([process, status], {"IMAGE_DEADLINE_S": "3"})
    assert process.environment == {"IMAGE_DEADLINE_S": "3", "X": "1"}
    assert status.environment == {"X": "1"}


def test_a_variable_no_function_declares_is_refused() -> None:
    functions = [spec("Process", IMAGE_DEADLINE_S="30")]
    with pytest.raises(ValueError, match="IMAGE_DEADLINE_SECONDS, which no function"):
        apply_function_environment(functions, {"IMAGE_DEADLINE_SECONDS": "3"})
    assert functions[0].environment == {"IMAGE_DEADLINE_S": "30"}


def test_the_templates_deadline_can_be_scaled(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOCAL_FUNCTION_ENV", "IMAGE_DEADLINE_S=3")
    config = StackConfig.from_env()
    model = StackModel(REPO_ROOT / "template.yaml", {"AwsEndpointUrl": "http://127.0.0.1:1"})
    for queue in model.queues:  # what the functions' environment refers to
        model.set_queue_url(queue.logical_id, f"http://127.0.0.1:1/{queue.name}")
    functions = model.functions()
    apply_function_environment(functions, config.function_environment)
    process = next(f for f in functions if f.logical_id == "ProcessFunction")
    assert process.environment["IMAGE_DEADLINE_S"] == "3"
