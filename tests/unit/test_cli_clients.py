"""`retail-pulse clients add|list` as an admin runs them, against moto's API Gateway: the key
printed once on stdout, the tenant named, exit statuses, and the line that says what to
install when only the client package is there."""

from __future__ import annotations

import json
import re
import sys

import pytest
from typer.testing import CliRunner, Result

from retail_pulse_client.cli import app
from tests.support.api_gateway import STACK, Deployed, deployed_stack  # noqa: F401

CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def run(*args: str) -> Result:
    return CliRunner().invoke(app, ["clients", *args], catch_exceptions=False)


def value_of(deployed: Deployed, name: str) -> tuple[str, str]:
    """(key id, key value) of the key named `name`, as API Gateway has it."""
    (key,) = [k for k in deployed.all_keys() if k["name"] == name]
    return key["id"], key["value"]


def test_add_prints_the_key_once_on_stdout_and_the_tenant_on_stderr(deployed: Deployed) -> None:
    result = run("add", "acme")

    assert result.exit_code == 0, result.output
    key_id, value = value_of(deployed, "acme")
    assert result.stdout == f"{value}\n"
    assert result.output.count(value) == 1 and value not in result.stderr
    assert f"Created client acme on API {deployed.api_id} (stack {STACK}): tenant {key_id}" in (
        result.stderr
    )
    assert "50 requests/s, bursts of 100, 100000 requests a day" in result.stderr
    assert not CONTROL.search(result.output), repr(result.output)


def test_add_json_is_one_object_holding_the_key(deployed: Deployed) -> None:
    result = run("add", "acme", "--format", "json")

    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    key_id, value = value_of(deployed, "acme")
    assert body["api_key"] == value and result.output.count(value) == 1
    assert body["tenant"] == body["key_id"] == key_id
    assert body["plan_id"] == deployed.plan_id and body["enabled"] is True
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", body["created_at"])


def test_add_with_its_own_plan(deployed: Deployed) -> None:
    plan_id = deployed.plan("bulk", rate=5, burst=10)

    result = run("add", "bulk-co", "--plan", "bulk")

    assert result.exit_code == 0, result.output
    assert f"usage plan {plan_id} (bulk): 5 requests/s, bursts of 10" in result.stderr
    assert [key["name"] for key in deployed.plan_keys(plan_id)] == ["bulk-co"]


def test_list_is_a_plain_table_off_a_terminal_and_never_shows_a_key(deployed: Deployed) -> None:
    run("add", "acme")
    plan_id = deployed.plan("bulk")
    run("add", "bulk-co", "--plan", plan_id)

    result = run("list")

    assert result.exit_code == 0, result.output
    acme_id, acme_value = value_of(deployed, "acme")
    bulk_id, bulk_value = value_of(deployed, "bulk-co")
    lines = result.stdout.splitlines()
    assert "tenant (key id)" in lines[1]
    (acme,) = [line for line in lines if " acme " in line]
    assert acme_id in acme and deployed.plan_id in acme and " yes " in acme
    (bulk,) = [line for line in lines if " bulk-co " in line]
    assert bulk_id in bulk and f"{plan_id} (bulk)" in bulk
    assert acme_value not in result.output and bulk_value not in result.output
    assert f"3 clients on API {deployed.api_id} (stack {STACK})" in result.stderr
    assert f"plan {plan_id} (bulk): 5 requests/s" in result.stderr
    assert not CONTROL.search(result.output), repr(result.output)


def test_list_json(deployed: Deployed) -> None:
    run("add", "acme")

    result = run("list", "--format", "json")

    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert body["api_id"] == deployed.api_id and body["stack"] == STACK
    assert body["plans"] == [
        {
            "plan_id": deployed.plan_id,
            "name": f"{STACK}-RetailPulseApiUsagePlan",
            "throttle": {"rate_limit": 50.0, "burst_limit": 100},
            "quota": {"limit": 100000, "period": "DAY"},
        }
    ]
    acme_id, acme_value = value_of(deployed, "acme")
    (acme,) = [c for c in body["clients"] if c["name"] == "acme"]
    assert acme["tenant"] == acme["key_id"] == acme_id and acme["enabled"] is True
    assert acme_value not in result.output


def test_list_of_an_api_with_no_clients_says_how_to_add_one(deployed: Deployed) -> None:
    empty = deployed.api("empty")
    deployed.plan("empty-plan", api_id=empty)
    deployed.stack("empty", {"ApiId": empty})

    result = run("list", "--stack", "empty")

    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert f"No clients on API {empty} (stack empty) yet: add one with" in result.stderr


def test_list_of_an_api_without_keys_says_it_takes_none(deployed: Deployed) -> None:
    """RequireApiKey=false: no usage plan covers the API."""
    deployed.stack("open", {"ApiId": deployed.api("open")})

    result = run("list", "--stack", "open")

    assert result.exit_code == 0, result.output
    assert "No usage plan covers API" in result.stderr and "takes no API keys" in result.stderr


def test_the_stack_comes_from_the_environment_too(
    deployed: Deployed, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RETAIL_PULSE_STACK", "staging")
    assert "no stack staging" in run("list").stderr

    monkeypatch.delenv("RETAIL_PULSE_STACK")
    monkeypatch.setenv("RETAIL_PULSE_API_ID", deployed.api_id)
    result = run("list", "--format", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["stack"] is None


def test_a_duplicate_name_exits_2_in_one_line(deployed: Deployed) -> None:
    run("add", "acme")

    result = run("add", "acme")

    assert result.exit_code == 2
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith("error: a client named acme already exists on API ")


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["add", "acme", "--stack", "nope"], "error: no stack nope in AWS us-east-1"),
        (["list", "--api-id", "abc123"], "error: no REST API abc123"),
        (["add", "acme", "--plan", "nope"], "error: no usage plan nope"),
        (["add", "a b"], "error: client name 'a b' is not usable"),
    ],
    ids=["missing-stack", "missing-api", "missing-plan", "bad-name"],
)
def test_what_cannot_be_found_exits_2_saying_what_to_change(
    deployed: Deployed, args: list[str], expected: str
) -> None:
    result = run(*args)

    assert result.exit_code == 2
    assert result.stderr.startswith(expected), result.stderr
    assert "Traceback" not in result.output


def test_aws_out_of_reach_exits_3(deployed: Deployed, monkeypatch: pytest.MonkeyPatch) -> None:
    from retail_pulse.settings import get_settings

    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    get_settings.cache_clear()
    try:
        result = run("list")
    finally:
        monkeypatch.delenv("AWS_ENDPOINT_URL")
        get_settings.cache_clear()

    assert result.exit_code == 3
    assert "error: DescribeStacks failed: Could not connect" in result.stderr


@pytest.mark.parametrize("command", [["add", "acme"], ["list"]], ids=" ".join)
def test_without_the_service_package_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, command: list[str]
) -> None:
    """The client installed alone (pip install ./client): one line, exit 2, no traceback."""
    for name in ("retail_pulse_admin", "retail_pulse_admin.tenants"):
        monkeypatch.setitem(sys.modules, name, None)  # import of it now fails, as if absent

    result = run(*command)

    assert result.exit_code == 2
    (line,) = result.stderr.splitlines()
    assert line.startswith(
        f"retail-pulse clients {command[0]} needs the service package: pip install -e "
    )
    assert line.endswith(" (or make install)")
    assert result.stdout == ""


@pytest.mark.parametrize("command", [[], ["add"], ["list"]], ids=lambda c: " ".join(c) or "-")
def test_clients_help_has_an_example(command: list[str]) -> None:
    result = run(*command, "--help")

    assert result.exit_code == 0
    assert "Example" in result.stdout or command == []
    assert "RETAIL_PULSE_STACK" in result.stdout or command == []
