"""Issue 22: `retail-pulse webhook-secret [--rotate]` against a scripted API on 127.0.0.1:
the secret alone on stdout (for `> whsec.txt`), a rotation sent with one Idempotency-Key
however often it is retried, and the usual exit statuses."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from fake_api import FakeApi, closed_port, fake_api
from typer.testing import CliRunner, Result

from retail_pulse_client.cli import app
from retail_pulse_client.client import RetailPulseClient

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
NEW_SECRET = "whsec_2pwqZx9bO3RZCIkP7Hwfr6nxqgXjv1U2"
SECRET_PATH = "/api/webhook-secret"
ROTATE_PATH = "/api/webhook-secret/rotate"


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeApi]:
    # Retries come back at once: these tests are about what is sent and shown, not when.
    monkeypatch.setattr("retail_pulse_client.client.time.sleep", lambda _: None)
    with fake_api() as server:
        yield server


def run(api: FakeApi, *args: str) -> Result:
    return CliRunner().invoke(
        app, ["webhook-secret", *args, "--api", api.base_url], catch_exceptions=False
    )


def test_it_prints_the_callers_secret_alone_on_stdout(api: FakeApi) -> None:
    api.on("GET", SECRET_PATH, (200, {"secret": SECRET}))

    result = run(api, "--api-key", "k-123")

    assert result.exit_code == 0
    assert result.stdout == SECRET + "\n"
    (sent,) = api.sent("GET", SECRET_PATH)
    assert sent.headers["x-api-key"] == "k-123"  # whose secret: the key's client's
    assert api.sent("POST", ROTATE_PATH) == []  # asking never rotates


def test_json_prints_the_body(api: FakeApi) -> None:
    api.on("GET", SECRET_PATH, (200, {"secret": SECRET}))

    result = run(api, "--format", "json")

    assert result.exit_code == 0
    assert json.loads(result.stdout) == {"secret": SECRET}


def test_rotate_prints_the_new_secret_and_says_the_old_one_signs_for_a_day(api: FakeApi) -> None:
    api.on("POST", ROTATE_PATH, (200, {"secret": NEW_SECRET}))

    result = run(api, "--rotate")

    assert result.exit_code == 0
    assert result.stdout == NEW_SECRET + "\n"
    assert "24 h" in result.stderr
    (sent,) = api.sent("POST", ROTATE_PATH)
    assert sent.headers["idempotency-key"]
    assert api.sent("GET", SECRET_PATH) == []


def test_a_rotation_retried_after_a_lost_answer_sends_the_same_key(api: FakeApi) -> None:
    """The service answers a repeated key with the first rotation's secret; a new key on
    the retry would rotate twice and end the replaced secret's day at once."""
    api.on("POST", ROTATE_PATH, (503, {"error": "ask again"}), (200, {"secret": NEW_SECRET}))

    result = run(api, "--rotate")

    assert result.exit_code == 0 and result.stdout == NEW_SECRET + "\n"
    keys = [r.headers["idempotency-key"] for r in api.sent("POST", ROTATE_PATH)]
    assert len(keys) == 2 and keys[0] == keys[1]


def test_two_rotations_send_two_keys(api: FakeApi) -> None:
    api.on("POST", ROTATE_PATH, (200, {"secret": NEW_SECRET}))

    with RetailPulseClient(api.base_url) as client:
        client.rotate_webhook_secret()
        client.rotate_webhook_secret()

    keys = [r.headers["idempotency-key"] for r in api.sent("POST", ROTATE_PATH)]
    assert len(set(keys)) == 2


def test_a_refused_key_exits_2_with_the_apis_words(api: FakeApi) -> None:
    api.on("GET", SECRET_PATH, (403, {"message": "Forbidden"}))

    result = run(api, "--api-key", "wrong")

    assert result.exit_code == 2
    assert result.stdout == ""  # nothing a script could take for a secret
    assert "Forbidden" in result.stderr


def test_an_unreachable_api_exits_3(api: FakeApi) -> None:
    result = CliRunner().invoke(
        app, ["webhook-secret", "--api", f"http://{closed_port()}"], catch_exceptions=False
    )

    assert result.exit_code == 3
    assert result.stdout == ""
    assert "Is the service running?" in result.stderr


def test_help_has_an_example() -> None:
    result = CliRunner().invoke(app, ["webhook-secret", "--help"])

    assert result.exit_code == 0
    assert "Example" in result.stdout and "--rotate" in result.stdout
