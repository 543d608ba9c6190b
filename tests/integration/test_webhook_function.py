"""The webhook function against moto's SQS, as the event source mapping drives it: messages
received from the webhook queue with their attributes, the handler's partial batch response
deciding which are deleted. Receivers run on 127.0.0.1."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from local_stack.event_sources import sqs_record
from retail_pulse.data.queue import enqueue_webhook
from retail_pulse.jobs.messages import WebhookDelivery
from retail_pulse.jobs.webhooks import EVENT_ID_HEADER, SIGNATURE_HEADER, verify_signature
from retail_pulse.settings import get_settings
from tests.support.handlers import FakeContext, load_handler
from tests.support.webhook_receiver import Receiver

KEY = b"test-webhook-key"  # the WebhookSigningSecret of tests/conftest.py's `aws`
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

    def start(*answers: int) -> Receiver:
        started.append(Receiver(*answers).start())
        monkeypatch.setenv("ALLOWED_PRIVATE_HOSTS", ",".join(r.host_port for r in started))
        get_settings.cache_clear()
        return started[-1]

    yield start
    for receiver in started:
        receiver.stop()
    monkeypatch.undo()
    get_settings.cache_clear()


def enqueue(receiver: Receiver, job_id: str = "job-1") -> WebhookDelivery:
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
        tenant="default",
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
    assert request.headers[EVENT_ID_HEADER] == delivery.event_id
    assert verify_signature(request.body, request.headers[SIGNATURE_HEADER], KEY)
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
    assert [r.headers[EVENT_ID_HEADER] for r in receiver.received] == [delivery.event_id] * 2
    assert [r.body for r in receiver.received] == [delivery.payload.encode()] * 2
    for request in receiver.received:  # each attempt signed on its own
        assert verify_signature(request.body, request.headers[SIGNATURE_HEADER], KEY)
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
