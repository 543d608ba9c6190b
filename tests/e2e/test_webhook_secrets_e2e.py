"""Issue 22: each client's webhooks are signed with its own secret, end to end. Two keys on
one local stack (LOCAL_API_KEYS): each client asks for its secret over the API, and its
receiver verifies its deliveries with the Standard Webhooks library, unchanged; the other
client's secret verifies none of them, so neither can forge the other's webhooks. After a
rotation, the next delivery carries two signatures, by the new secret and the old one."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest
import requests
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from tests.e2e.conftest import Stack, _local_stack, visit
from tests.support.image_server import HookDelivery

pytestmark = pytest.mark.e2e

KEYS = {"acme": "key-of-acme-webhooks-0123", "globex": "key-of-globex-webhooks-0123"}


@pytest.fixture(scope="module")
def keyed_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    keys = ",".join(f"{name}:{key}" for name, key in KEYS.items())
    yield from _local_stack(tmp_path_factory, {"LOCAL_API_KEYS": keys})


def as_client(name: str) -> requests.Session:
    session = requests.Session()
    session.headers["x-api-key"] = KEYS[name]
    return session


def secret(stack: Stack, client: requests.Session, rotate: bool = False) -> str:
    if rotate:
        response = client.post(stack.url("/api/webhook-secret/rotate"), timeout=30)
    else:
        response = client.get(stack.url("/api/webhook-secret"), timeout=30)
    assert response.status_code == 200, response.text
    return str(response.json()["secret"])


def delivered(stack: Stack, client: requests.Session) -> HookDelivery:
    """Submit a one-image job with a callback; its one delivery, once it arrives."""
    key = uuid.uuid4().hex[:12]
    body = {
        "count": 1,
        "visits": [visit([stack.images.url("/img/40x30.jpg")])],
        "callback_url": stack.images.url(f"/hook/{key}/0"),
    }
    response = client.post(stack.url("/api/submit/"), json=body, timeout=30)
    assert response.status_code == 201, response.text
    (delivery,) = stack.images.wait_for_deliveries(key, 1, timeout_s=90)
    event = json.loads(delivery.body)
    assert event["job"]["job_id"] == response.json()["job_id"]
    assert delivery.headers["webhook-id"] == event["event_id"]
    return delivery


@pytest.mark.local_stack("two API keys are LOCAL_API_KEYS, a local stack setting")
def test_each_clients_webhooks_verify_with_its_own_secret_only(keyed_stack: Stack) -> None:
    stack = keyed_stack
    acme, globex = as_client("acme"), as_client("globex")
    secrets = {"acme": secret(stack, acme), "globex": secret(stack, globex)}
    assert secrets["acme"] != secrets["globex"]

    for owner, other in (("acme", "globex"), ("globex", "acme")):
        delivery = delivered(stack, as_client(owner))
        Webhook(secrets[owner]).verify(delivery.body, delivery.headers)
        with pytest.raises(WebhookVerificationError, match="No matching signature"):
            Webhook(secrets[other]).verify(delivery.body, delivery.headers)

    # acme rotates: its next delivery is signed by both of its secrets, still not by globex's.
    new = secret(stack, acme, rotate=True)
    assert new not in secrets.values()
    assert secret(stack, globex) == secrets["globex"]
    delivery = delivered(stack, acme)
    assert len(delivery.headers["webhook-signature"].split(" ")) == 2
    Webhook(new).verify(delivery.body, delivery.headers)
    Webhook(secrets["acme"]).verify(delivery.body, delivery.headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(secrets["globex"]).verify(delivery.body, delivery.headers)
