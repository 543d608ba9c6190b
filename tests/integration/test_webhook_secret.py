"""Issue 22: each client's own webhook secret, over the API (GET /api/webhook-secret, POST
/api/webhook-secret/rotate) and in its table: made on first use, one secret however many
first uses race, rotated with a day of overlap, never another client's, never logged.
Races are forced with a barrier between the read and the write, never with sleeps."""

from __future__ import annotations

import base64
import itertools
import json
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from retail_pulse.data import webhook_secrets as store
from retail_pulse.jobs import webhook_secrets
from retail_pulse.jobs.webhook_secrets import (
    ROTATION_OVERLAP,
    rotate_webhook_secret,
    signing_key,
    signing_secrets,
    webhook_secret,
)
from tests.integration.conftest import ApiResult

A, B = "keyidaaaa1", "keyidbbbb2"  # API key ids, as API Gateway writes them
SECRET_PATH = "/api/webhook-secret"
ROTATE_PATH = "/api/webhook-secret/rotate"

Call = Callable[..., ApiResult]


def get_secret(call_api: Call, tenant: str | None = None) -> str:
    result = call_api("GET", SECRET_PATH, tenant=tenant)
    assert result.status_code == 200, result.body
    assert set(result.body) == {"secret"}
    return str(result.body["secret"])


def rotate(call_api: Call, tenant: str | None = None, key: str | None = None) -> str:
    headers = {"Idempotency-Key": key} if key is not None else None
    result = call_api("POST", ROTATE_PATH, tenant=tenant, headers=headers)
    assert result.status_code == 200, result.body
    return str(result.body["secret"])


# --- Over the API ------------------------------------------------------------------------


def test_the_secret_is_made_on_first_use_and_then_stays(aws, call_api) -> None:
    first = get_secret(call_api, A)

    assert first.startswith("whsec_")
    assert len(base64.b64decode(first.removeprefix("whsec_"), validate=True)) >= 24
    assert get_secret(call_api, A) == first


def test_the_answer_is_never_cached_nor_sniffed(aws, call_api) -> None:
    result = call_api("GET", SECRET_PATH, tenant=A)

    assert result.headers["Cache-Control"] == "no-store"
    assert result.headers["X-Content-Type-Options"] == "nosniff"


def test_each_client_has_its_own_secret_and_sees_only_its_own(aws, call_api) -> None:
    secrets = {tenant: get_secret(call_api, tenant) for tenant in (A, B, None)}

    assert len(set(secrets.values())) == 3  # None: the keyless stack's one client, default
    assert get_secret(call_api, A) == secrets[A]
    assert get_secret(call_api, B) == secrets[B]


def test_a_rotation_answers_a_new_secret_that_get_then_answers(aws, call_api) -> None:
    old = get_secret(call_api, A)

    new = rotate(call_api, A)

    assert new != old and new.startswith("whsec_")
    assert get_secret(call_api, A) == new
    assert signing_secrets(A) == (new, old)  # both sign for a day


def test_one_clients_rotation_leaves_anothers_secret_alone(aws, call_api) -> None:
    theirs = get_secret(call_api, B)
    get_secret(call_api, A)

    rotate(call_api, A)

    assert get_secret(call_api, B) == theirs
    assert signing_secrets(B) == (theirs,)


def test_rotating_before_any_use_makes_the_first_secret(aws, call_api) -> None:
    first = rotate(call_api, A)

    assert get_secret(call_api, A) == first
    assert signing_secrets(A) == (first,)  # nothing was replaced


def test_a_rotation_sent_again_with_its_idempotency_key_rotates_once(aws, call_api) -> None:
    """The client retries a rotation whose answer was lost: the same key must not rotate
    again, or the secret the receivers still use would stop signing at once."""
    old = get_secret(call_api, A)

    first = rotate(call_api, A, key="rotation-1")
    again = rotate(call_api, A, key="rotation-1")
    later = rotate(call_api, A, key="rotation-2")

    assert again == first
    assert later not in (first, old)
    assert signing_secrets(A) == (later, first)


@pytest.mark.parametrize(
    ("key", "words"),
    [("", "at least 1 character"), ("k" * 129, "at most 128 characters")],
)
def test_a_bad_idempotency_key_is_a_400_that_names_the_header(
    aws, call_api, key: str, words: str
) -> None:
    result = call_api("POST", ROTATE_PATH, tenant=A, headers={"Idempotency-Key": key})

    assert result.status_code == 400
    assert "idempotency-key" in result.body["error"].lower()
    assert words in result.body["error"]


def test_storage_trouble_is_a_503_that_says_to_ask_again(
    aws, call_api, monkeypatch: pytest.MonkeyPatch
) -> None:
    from botocore.exceptions import EndpointConnectionError

    def unreachable(tenant: str) -> None:
        raise EndpointConnectionError(endpoint_url="http://dynamodb")

    monkeypatch.setattr(store, "read", unreachable)

    for method, path in (("GET", SECRET_PATH), ("POST", ROTATE_PATH)):
        result = call_api(method, path, tenant=A)
        assert result.status_code == 503
        assert result.body == {
            "error": "your webhook secret could not be read or written just now; ask again"
        }


# --- The rotation window ------------------------------------------------------------------


def test_the_replaced_secret_signs_for_a_day_and_then_no_more(aws) -> None:
    rotated_at = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    old = webhook_secret(A)
    new = rotate_webhook_secret(A, now=rotated_at)

    assert signing_secrets(A, now=rotated_at) == (new, old)
    last_moment = rotated_at + ROTATION_OVERLAP - timedelta(microseconds=1)
    assert signing_secrets(A, now=last_moment) == (new, old)
    assert signing_secrets(A, now=rotated_at + ROTATION_OVERLAP) == (new,)


def test_a_second_rotation_within_the_day_drops_the_oldest(aws) -> None:
    oldest = webhook_secret(A)
    middle = rotate_webhook_secret(A)
    newest = rotate_webhook_secret(A)

    assert signing_secrets(A) == (newest, middle)
    assert oldest not in signing_secrets(A)


# --- Races, forced --------------------------------------------------------------------------


def both_read_before_either_writes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hold each of the two callers after its first read until the other has read too:
    both see the same state, so both go on to write. (A read after a refused write, to
    learn what the other wrote, is not held.)"""
    barrier = threading.Barrier(2, timeout=30)
    first_reads = itertools.count()
    real_read = store.read

    def read_then_wait(tenant: str) -> Any:
        found = real_read(tenant)
        if next(first_reads) < 2:
            barrier.wait()
        return found

    monkeypatch.setattr(webhook_secrets.store, "read", read_then_wait)


def run_together(*calls: Callable[[], str]) -> list[str]:
    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        return [future.result() for future in [pool.submit(call) for call in calls]]


def test_two_first_uses_at_once_make_one_secret(aws, monkeypatch: pytest.MonkeyPatch) -> None:
    both_read_before_either_writes(monkeypatch)

    answers = run_together(lambda: webhook_secret(A), lambda: webhook_secret(A))

    monkeypatch.undo()
    assert answers[0] == answers[1] == webhook_secret(A)


def test_a_first_delivery_and_a_first_get_at_once_agree(aws, monkeypatch) -> None:
    both_read_before_either_writes(monkeypatch)

    signed_with, answered = run_together(lambda: signing_secrets(A)[0], lambda: webhook_secret(A))

    monkeypatch.undo()
    assert signed_with == answered == webhook_secret(A)


def test_two_rotations_at_once_make_one_new_secret(aws, monkeypatch) -> None:
    old = webhook_secret(A)
    both_read_before_either_writes(monkeypatch)

    answers = run_together(lambda: rotate_webhook_secret(A), lambda: rotate_webhook_secret(A))

    monkeypatch.undo()
    assert answers[0] == answers[1] != old
    # One rotation happened: the secret every receiver had still signs beside the new one.
    assert signing_secrets(A) == (answers[0], old)


def test_a_rotation_racing_a_first_use_answers_the_one_secret(aws, monkeypatch) -> None:
    both_read_before_either_writes(monkeypatch)

    answers = run_together(lambda: rotate_webhook_secret(A), lambda: webhook_secret(A))

    monkeypatch.undo()
    assert answers[0] == answers[1] == webhook_secret(A)
    assert signing_secrets(A) == (answers[0],)


# --- Never logged ---------------------------------------------------------------------------


def test_no_log_line_carries_a_secret(
    aws, call_api, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from retail_pulse.observability import logger
    from tests.unit.test_webhooks import _CurrentStdout

    monkeypatch.setattr(logger.registered_handler, "stream", _CurrentStdout())
    monkeypatch.setenv("POWERTOOLS_LOG_LEVEL", "DEBUG")
    logger.setLevel("DEBUG")
    try:
        secrets = [get_secret(call_api, A), rotate(call_api, A), rotate(call_api, A, key="k")]
        call_api("POST", ROTATE_PATH, tenant=A, headers={"Idempotency-Key": ""})  # a 400
    finally:
        logger.setLevel("INFO")

    out = capsys.readouterr()
    lines = [json.loads(line) for line in out.out.splitlines() if line.startswith("{")]
    assert lines, "the routes log their requests"
    for secret in secrets:
        key = base64.b64encode(signing_key(secret)).decode()
        assert key not in out.out and key not in out.err
