"""The webhook function against moto's SQS and DynamoDB, as the event source mapping drives
it: messages received from the webhook queue with their attributes, the handler's partial
batch response deciding which are deleted, every delivery signed with its client's own
secret and checked with the Standard Webhooks library. Receivers run on 127.0.0.1; the
hostile ones are raw sockets, and nothing waits on a clock."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from local_stack.event_sources import sqs_record
from retail_pulse.data.queue import enqueue_webhook
from retail_pulse.jobs.messages import WebhookDelivery
from retail_pulse.jobs.webhook_secrets import rotate_webhook_secret, webhook_secret
from retail_pulse.jobs.webhooks import ID_HEADER, SIGNATURE_HEADER
from retail_pulse.settings import get_settings
from tests.support.handlers import FakeContext, load_handler
from tests.support.webhook_receiver import HangingReceiver, Receiver, TricklingReceiver

QUEUE_ARN = "arn:aws:sqs:us-east-1:123456789012:Webhooks"


@pytest.fixture
def queue(aws: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The webhook queue, with no visibility timeout of its own: a message hidden after a
    receive was hidden by the function's backoff. And its dead-letter queue."""
    aws.sqs.set_queue_attributes(QueueUrl=aws.webhook_url, Attributes={"VisibilityTimeout": "0"})
    aws.webhook_dlq_url = aws.sqs.create_queue(QueueName="WebhooksDeadLetter")["QueueUrl"]
    monkeypatch.setenv("WEBHOOK_DEAD_LETTER_QUEUE_URL", aws.webhook_dlq_url)
    get_settings.cache_clear()
    yield aws
    monkeypatch.undo()
    get_settings.cache_clear()


@pytest.fixture
def receivers(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Receiver]]:
    """Start receivers; the SSRF guard lets exactly their host:port pairs through."""
    started: list[Receiver] = []

    def start(*answers: int, on_request: Any = None) -> Receiver:
        started.append(Receiver(*answers, on_request=on_request).start())
        monkeypatch.setenv("ALLOWED_PRIVATE_HOSTS", ",".join(r.host_port for r in started))
        get_settings.cache_clear()
        return started[-1]

    yield start
    for receiver in started:
        receiver.stop()
    monkeypatch.undo()
    get_settings.cache_clear()


def enqueue(
    receiver: Receiver | TricklingReceiver, job_id: str = "job-1", tenant: str = "default"
) -> WebhookDelivery:
    """A delivery as jobs/finish.py enqueues it when a job ends."""
    event_id = str(uuid.uuid4())
    payload = json.dumps(
        {
            "event_id": event_id,
            "type": "job.finished",
            "created_at": "2026-12-01T10:00:00.000000Z",
            "job": {
                "status": "completed",
                "job_id": job_id,
                "progress": {"total": 1, "succeeded": 1, "failed": 0},
            },
        },
        separators=(",", ":"),
    )
    delivery = WebhookDelivery(
        event_id=event_id,
        job_id=job_id,
        tenant=tenant,
        callback_url=receiver.url(),
        payload=payload,
    )
    enqueue_webhook(delivery.model_dump())
    return delivery


def receive(aws: Any) -> list[dict[str, Any]]:
    return aws.sqs.receive_message(
        QueueUrl=aws.webhook_url,
        MaxNumberOfMessages=10,
        AttributeNames=["All"],
        MessageSystemAttributeNames=["All"],
    ).get("Messages", [])


def invoke(aws: Any, messages: list[dict[str, Any]]) -> dict[str, Any]:
    """One invocation with these messages; what succeeded is deleted, as Lambda does."""
    event = {"Records": [sqs_record(m, QUEUE_ARN) for m in messages]}
    response = load_handler("webhook").lambda_handler(event, FakeContext())
    failed = {item["itemIdentifier"] for item in response["batchItemFailures"]}
    for message in messages:
        if message["MessageId"] not in failed:
            aws.sqs.delete_message(QueueUrl=aws.webhook_url, ReceiptHandle=message["ReceiptHandle"])
    return response


def test_the_receiver_gets_the_exact_payload_signed(queue, receivers) -> None:
    receiver = receivers(200)
    delivery = enqueue(receiver)

    response = invoke(queue, receive(queue))

    assert response == {"batchItemFailures": []}
    (request,) = receiver.received
    assert request.body == delivery.payload.encode()
    assert request.headers["Content-Type"] == "application/json"
    # The library a receiver would use, unchanged, with the secret the API gives the client.
    event = Webhook(webhook_secret("default")).verify(request.body, request.headers)
    assert request.headers[ID_HEADER] == event["event_id"] == delivery.event_id
    assert receive(queue) == []  # delivered, deleted


def test_a_500_is_retried_later_with_the_same_event_id_then_delivered(queue, receivers) -> None:
    receiver = receivers(500, 200)
    delivery = enqueue(receiver)
    (message,) = receive(queue)

    first = invoke(queue, [message])

    assert first == {"batchItemFailures": [{"itemIdentifier": message["MessageId"]}]}
    # The queue's own visibility timeout is 0: only the function's backoff hides it.
    assert receive(queue) == []
    queue.sqs.change_message_visibility(  # the backoff over, as time would have it
        QueueUrl=queue.webhook_url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
    )
    (again,) = receive(queue)
    assert again["Attributes"]["ApproximateReceiveCount"] == "2"

    second = invoke(queue, [again])

    assert second == {"batchItemFailures": []}
    assert [r.headers[ID_HEADER] for r in receiver.received] == [delivery.event_id] * 2
    assert [r.body for r in receiver.received] == [delivery.payload.encode()] * 2
    secret = webhook_secret("default")
    for request in receiver.received:  # each attempt signed on its own
        Webhook(secret).verify(request.body, request.headers)
    assert receive(queue) == []


def test_the_partial_batch_response_reports_only_the_delivery_to_retry(queue, receivers) -> None:
    ok, failing, gone = receivers(200), receivers(503), receivers(404)
    for receiver in (ok, failing, gone):
        enqueue(receiver, job_id=f"job-{receiver.host_port}")
    messages = receive(queue)
    assert len(messages) == 3
    failing_id = next(m["MessageId"] for m in messages if failing.host_port in m["Body"])

    response = invoke(queue, messages)

    assert response == {"batchItemFailures": [{"itemIdentifier": failing_id}]}
    assert (len(ok.received), len(failing.received), len(gone.received)) == (1, 1, 1)
    assert queue.sqs.receive_message(QueueUrl=queue.webhook_dlq_url).get("Messages", []) == []


def test_a_delivery_failing_for_24_hours_is_moved_to_the_dead_letter_queue(
    queue, receivers
) -> None:
    receiver = receivers(502)
    enqueue(receiver)
    (message,) = receive(queue)
    sent = datetime.now(UTC) - timedelta(hours=24, minutes=5)
    message["Attributes"]["SentTimestamp"] = str(int(sent.timestamp() * 1000))

    response = invoke(queue, [message])

    assert response == {"batchItemFailures": []}  # so the event source deletes it
    (moved,) = queue.sqs.receive_message(
        QueueUrl=queue.webhook_dlq_url, MessageAttributeNames=["All"]
    )["Messages"]
    assert moved["Body"] == message["Body"]
    assert moved["MessageAttributes"]["reason"]["StringValue"].startswith("HTTP 502; still")
    assert receive(queue) == []


# --- Issue 22: a secret per client ------------------------------------------------------


def test_each_client_verifies_only_its_own_deliveries(queue, receivers) -> None:
    """Client A cannot forge B's webhooks: A's secret (all A's receiver holds) verifies no
    delivery of B's, and B's none of A's."""
    receiver = receivers(200, 200)
    enqueue(receiver, job_id="job-of-a", tenant="acme")
    enqueue(receiver, job_id="job-of-b", tenant="globex")

    assert invoke(queue, receive(queue)) == {"batchItemFailures": []}

    secrets = {"acme": webhook_secret("acme"), "globex": webhook_secret("globex")}
    assert secrets["acme"] != secrets["globex"]
    by_job = {json.loads(r.body)["job"]["job_id"]: r for r in receiver.received}
    for owner, other, job_id in (("acme", "globex", "job-of-a"), ("globex", "acme", "job-of-b")):
        request = by_job[job_id]
        Webhook(secrets[owner]).verify(request.body, request.headers)
        with pytest.raises(WebhookVerificationError, match="No matching signature"):
            Webhook(secrets[other]).verify(request.body, request.headers)


def test_a_client_never_asked_for_its_secret_has_one_made_by_its_first_delivery(
    queue, receivers
) -> None:
    receiver = receivers(200)
    enqueue(receiver, tenant="newcomer")

    invoke(queue, receive(queue))

    (request,) = receiver.received
    # What the client is given when it asks afterwards is what signed the delivery.
    Webhook(webhook_secret("newcomer")).verify(request.body, request.headers)


def test_for_a_day_after_a_rotation_deliveries_carry_both_signatures(queue, receivers) -> None:
    receiver = receivers(200, 200)
    old = webhook_secret("acme")
    new = rotate_webhook_secret("acme")
    enqueue(receiver, tenant="acme")

    invoke(queue, receive(queue))

    (request,) = receiver.received
    assert len(request.headers[SIGNATURE_HEADER].split(" ")) == 2
    Webhook(new).verify(request.body, request.headers)  # a receiver already switched
    Webhook(old).verify(request.body, request.headers)  # one that has not yet


def test_a_day_after_a_rotation_only_the_new_secret_signs(queue, receivers) -> None:
    receiver = receivers(200)
    old = webhook_secret("acme")
    new = rotate_webhook_secret("acme", now=datetime.now(UTC) - timedelta(hours=24, seconds=1))
    enqueue(receiver, tenant="acme")

    invoke(queue, receive(queue))

    (request,) = receiver.received
    assert len(request.headers[SIGNATURE_HEADER].split(" ")) == 1
    Webhook(new).verify(request.body, request.headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(old).verify(request.body, request.headers)


# --- Issue 22: fair and bounded ---------------------------------------------------------


def test_each_delivery_is_in_its_clients_message_group(queue, receivers) -> None:
    """SQS fair queues serve a client's messages by their group: one's backlog of hanging
    receivers then does not hold another's deliveries (MessageGroupId on a standard queue)."""
    receiver = receivers()
    enqueue(receiver, tenant="acme")
    enqueue(receiver, tenant="globex")

    groups = {
        json.loads(m["Body"])["tenant"]: m["Attributes"]["MessageGroupId"] for m in receive(queue)
    }

    assert groups == {"acme": "acme", "globex": "globex"}


HOSTILE = {
    "hanging": HangingReceiver,
    # A byte every 0.5 s: its status line ("HTTP/1.1 200 OK") is far from whole when the
    # 3 s deadline cuts it off.
    "trickling": lambda: TricklingReceiver(interval_s=0.5),
}


@pytest.mark.parametrize("hostile", sorted(HOSTILE))
def test_a_victim_last_behind_nine_hanging_receivers_is_delivered_within_one_deadline(
    queue, receivers, monkeypatch: pytest.MonkeyPatch, hostile: str
) -> None:
    """One client's nine receivers take the request and hang (or trickle); another client's
    delivery is last in the same batch. It must reach its receiver before any of the nine
    deliveries' deadlines has passed: each hostile receiver's `released` is set only once
    the sender has given up on it, so the order of the events says it, not a clock."""
    hangers: list[TricklingReceiver] = [HOSTILE[hostile]().start() for _ in range(9)]
    released_when_victim_was_reached: list[list[bool]] = []

    def victim_reached(_: Any) -> None:
        released_when_victim_was_reached.append([h.released.is_set() for h in hangers])

    try:
        victim = receivers(200, on_request=victim_reached)
        allowed = ",".join([victim.host_port, *(h.host_port for h in hangers)])
        monkeypatch.setenv("ALLOWED_PRIVATE_HOSTS", allowed)
        monkeypatch.setenv("WEBHOOK_DEADLINE_S", "3")
        get_settings.cache_clear()
        hostile_ids = {
            enqueue(h, job_id=f"hostile-{i}", tenant="hostile").event_id
            for i, h in enumerate(hangers)
        }
        victim_delivery = enqueue(victim, job_id="victim", tenant="victim")
        messages = receive(queue)
        # The victim's record last, as if SQS had handed the batch over in send order.
        messages.sort(key=lambda m: victim_delivery.event_id in m["Body"])
        assert len(messages) == 10 and victim_delivery.event_id in messages[-1]["Body"]

        response = invoke(queue, messages)

        assert released_when_victim_was_reached == [[False] * 9]
        assert all(h.requested.is_set() for h in hangers)  # each was really tried
        assert all(h.released.wait(10) for h in hangers)  # and given up at its deadline
        failed = {f["itemIdentifier"] for f in response["batchItemFailures"]}
        assert failed == {
            m["MessageId"] for m in messages if json.loads(m["Body"])["event_id"] in hostile_ids
        }
    finally:
        for hanger in hangers:
            hanger.stop()
