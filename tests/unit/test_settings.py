"""Settings: what each function reads is declared in its template environment, and a missing
or malformed variable fails the cold start with its name."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from local_stack.template import load_template
from retail_pulse.settings import FunctionSettings, Settings, SettingsError, get_settings

ROOT = Path(__file__).resolve().parents[2]


def _environments() -> dict[str, set[str]]:
    """Each function's environment variable names: Globals plus its own."""
    template = load_template(ROOT / "template.yaml")
    shared = set(template["Globals"]["Function"]["Environment"]["Variables"])
    return {
        logical_id: shared
        | set(((resource["Properties"].get("Environment") or {}).get("Variables")) or {})
        for logical_id, resource in template["Resources"].items()
        if resource["Type"] == "AWS::Serverless::Function"
    }


# Set by Lambda itself, not by the template.
LAMBDA_PROVIDES = {"AWS_REGION"}


@pytest.mark.parametrize("function", sorted(_environments()))
def test_every_setting_a_function_reads_is_in_its_template_environment(function: str) -> None:
    missing = FunctionSettings.variables() - LAMBDA_PROVIDES - _environments()[function]
    assert not missing, f"{function} reads {sorted(missing)}, which template.yaml never sets"


def test_a_missing_resource_name_fails_with_its_name() -> None:
    environ = {
        "JOBS_TABLE": "j",
        "IMAGES_TABLE": "i",
        "STORES_TABLE": "s",
        "IDEMPOTENCY_TABLE": "d",
    }
    with pytest.raises(SettingsError, match="IMAGE_QUEUE_URL: Field required"):
        FunctionSettings.from_environment(environ)


def test_a_malformed_number_fails_with_its_name() -> None:
    with pytest.raises(SettingsError, match="MAX_ATTEMPTS: Input should be a valid integer"):
        Settings.from_environment({"MAX_ATTEMPTS": "four"})


def test_blank_variables_take_the_default_and_lists_are_parsed() -> None:
    settings = Settings.from_environment(
        {"AWS_ENDPOINT_URL": " ", "ALLOWED_PRIVATE_HOSTS": "127.0.0.1:8765, Localhost:1 ,"}
    )
    assert settings.endpoint_url is None
    assert settings.allowed_private_hosts == {"127.0.0.1:8765", "localhost:1"}


def test_a_handler_without_its_queue_url_fails_at_import(monkeypatch: pytest.MonkeyPatch) -> None:
    """The init phase, not the first request, says what is wrong."""
    spec = importlib.util.spec_from_file_location(
        "cold_start_probe", ROOT / "functions" / "status" / "app.py"
    )
    assert spec and spec.loader
    monkeypatch.delenv("IMAGE_QUEUE_URL")
    try:
        with pytest.raises(SettingsError, match="IMAGE_QUEUE_URL: Field required"):
            spec.loader.exec_module(importlib.util.module_from_spec(spec))
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()


def test_dynamodb_clients_go_where_its_own_endpoint_says_else_to_the_shared_one() -> None:
    """The local stack points the functions at DynamoDB Local itself and at moto for the
    rest; in AWS both are blank and every client finds its service's own endpoint."""
    both = {"AWS_ENDPOINT_URL": "http://127.0.0.1:4566", "AWS_ENDPOINT_URL_DYNAMODB": ""}
    assert Settings.from_environment(both).dynamodb_endpoint == "http://127.0.0.1:4566"
    both["AWS_ENDPOINT_URL_DYNAMODB"] = "http://127.0.0.1:8000"
    assert Settings.from_environment(both).dynamodb_endpoint == "http://127.0.0.1:8000"
    assert Settings.from_environment(both).endpoint_url == "http://127.0.0.1:4566"
    blank = {"AWS_ENDPOINT_URL": "", "AWS_ENDPOINT_URL_DYNAMODB": " "}
    assert Settings.from_environment(blank).dynamodb_endpoint is None
