"""Issue 15: webhook deliveries are signed, and each answer a receiver can give (or fail to
give) leads to exactly one of: delivered, retried later through the queue, ended, or moved
to the dead-letter queue after 24 h. Issue 22: signed as Standard Webhooks signs, checked
with its own verifier library (standardwebhooks), unchanged. Receivers run on 127.0.0.1;
the hostile one is raw sockets; nothing waits on a clock."""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from retail_pulse.jobs import webhooks
from retail_pulse.jobs.messages import WebhookDelivery
from retail_pulse.jobs.webhook_secrets import new_secret, signing_key
from retail_pulse.jobs.webhooks import (
    ID_HEADER,
    MAX_RETRY_DELAY_S,
    RETRY_WINDOW_S,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    DeliveryOutcome,
    RetryScheduled,
    deliver_webhook,
    handle_delivery,
    retry_delay,
    signature,
    signed_headers,
)
from retail_pulse.settings import get_settings
from tests.support.webhook_receiver import Receiver, TricklingReceiver, closed_port

SECRET = "whsec_" + base64.b64encode(bytes(range(32))).decode()
OTHER_SECRET = "whsec_" + base64.b64encode(bytes(range(100, 132))).decode()
README = Path(__file__).resolve().parents[2] / "README.md"
PAYLOAD = json.dumps(
    {
        "event_id": "evt_1",
        "type": "job.finished",
        "created_at": "2026-12-01T10:00:00Z",
        "job": {"status": "completed", "job_id": "job-1"},
    },
    separators=(",", ":"),
)


def delivery(url: str, **changes: Any) -> WebhookDelivery:
    fields = {
        "event_id": "evt_1",
        "job_id": "job-1",
        "tenant": "default",
        "callback_url": url,
        "payload": PAYLOAD,
        **changes,
    }
    return WebhookDelivery(**fields)


@pytest.fixture(autouse=True)
def client_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    """The client's secret, without its table (tests/integration/test_webhook_function.py
    signs with the stored ones)."""
    monkeypatch.setattr(webhooks, "signing_secrets", lambda tenant, now=None: (SECRET,))


@pytest.fixture
def allow(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., None]]:
    """Let the SSRF guard through to exactly these 127.0.0.1 host:port pairs."""

    def allow_hosts(*host_ports: str, deadline_s: float = 10) -> None:
        monkeypatch.setenv("ALLOWED_PRIVATE_HOSTS", ",".join(host_ports))
        monkeypatch.setenv("WEBHOOK_DEADLINE_S", str(deadline_s))
        get_settings.cache_clear()

    yield allow_hosts
    monkeypatch.undo()
    get_settings.cache_clear()


@pytest.fixture
def receiver(allow: Callable[..., None]) -> Iterator[Callable[..., Receiver]]:
    started: list[Receiver] = []

    def start(*answers: int | tuple[int, dict[str, str]]) -> Receiver:
        server = Receiver(*answers).start()
        started.append(server)
        allow(*(s.host_port for s in started))
        return server

    yield start
    for server in started:
        server.stop()


def attempt(url: str, receive_count: int = 1, age: timedelta = timedelta(0)) -> DeliveryOutcome:
    now = datetime.now(UTC)
    return deliver_webhook(delivery(url), receive_count, now - age, now=now)


# --- Signing ---------------------------------------------------------------------------


def now_s() -> int:
    return int(time.time())


def test_the_signature_is_the_standard_webhooks_one() -> None:
    # The example of the Standard Webhooks libraries' own tests, worked out apart from this
    # code: the HMAC-SHA256 of "<id>.<timestamp>.<body>" keyed by the base64 after whsec_.
    key = signing_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    body = b'{"test": 2432232314}'

    assert signature(key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body) == (
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    )


def test_the_standard_webhooks_library_verifies_the_headers_unchanged() -> None:
    body = PAYLOAD.encode()
    headers = signed_headers(body, "evt_1", now_s(), [SECRET])

    assert set(headers) == {ID_HEADER, TIMESTAMP_HEADER, SIGNATURE_HEADER}
    assert Webhook(SECRET).verify(body, headers) == json.loads(PAYLOAD)


@pytest.mark.parametrize(
    "tamper",
    [
        lambda body, headers: (body + b" ", headers),
        lambda body, headers: (body.replace(b"completed", b"failed"), headers),
        lambda body, headers: (body, {**headers, ID_HEADER: "evt_2"}),  # a replay, new id
        lambda body, headers: (
            body,
            {**headers, TIMESTAMP_HEADER: str(int(headers[TIMESTAMP_HEADER]) + 1)},
        ),
    ],
    ids=["body-appended", "body-changed", "id-changed", "timestamp-changed"],
)
def test_nothing_signed_can_be_changed(tamper: Any) -> None:
    body = PAYLOAD.encode()
    altered_body, altered_headers = tamper(body, signed_headers(body, "evt_1", now_s(), [SECRET]))

    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(altered_body, altered_headers)


def test_another_secret_never_verifies() -> None:
    body = PAYLOAD.encode()
    headers = signed_headers(body, "evt_1", now_s(), [SECRET])

    with pytest.raises(WebhookVerificationError, match="No matching signature"):
        Webhook(OTHER_SECRET).verify(body, headers)


def test_several_secrets_sign_space_separated_and_each_verifies() -> None:
    body = PAYLOAD.encode()
    headers = signed_headers(body, "evt_1", now_s(), [SECRET, OTHER_SECRET])

    assert len(headers[SIGNATURE_HEADER].split(" ")) == 2
    assert all(part.startswith("v1,") for part in headers[SIGNATURE_HEADER].split(" "))
    Webhook(SECRET).verify(body, headers)
    Webhook(OTHER_SECRET).verify(body, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(body, headers)


def test_a_stale_signature_is_refused_by_the_library() -> None:
    body = PAYLOAD.encode()
    headers = signed_headers(body, "evt_1", now_s() - 600, [SECRET])

    with pytest.raises(WebhookVerificationError, match="too old"):
        Webhook(SECRET).verify(body, headers)


def test_new_secrets_are_standard_webhooks_secrets_of_32_random_bytes() -> None:
    made = {new_secret() for _ in range(50)}

    assert len(made) == 50
    for secret in made:
        assert secret.startswith("whsec_")
        assert len(signing_key(secret)) == 32  # the specification asks for at least 24


def readme_receivers() -> dict[str, Any]:
    """The README's receiver examples, run as a receiver would run them."""
    section = README.read_text().split("### Webhooks", 1)[1].split("\n### ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.DOTALL)
    namespace: dict[str, Any] = {}
    for code in blocks:
        exec(code, namespace)
    return namespace


def test_the_readme_stdlib_receiver_verifies_what_the_service_signs() -> None:
    verify = readme_receivers()["verify"]
    body = PAYLOAD.encode()
    headers = signed_headers(body, "evt_1", now_s(), [OTHER_SECRET, SECRET])

    assert verify(body, headers, SECRET)
    assert verify(body, headers, OTHER_SECRET)
    assert not verify(body + b"x", headers, SECRET)
    assert not verify(body, {**headers, ID_HEADER: "evt_2"}, SECRET)
    assert not verify(body, headers, new_secret())
    stale = signed_headers(body, "evt_1", now_s() - 600, [SECRET])
    assert not verify(body, stale, SECRET)
    assert not verify(body, {k: v for k, v in headers.items() if k != ID_HEADER}, SECRET)


def test_the_readme_library_receiver_is_the_one_line_verify() -> None:
    section = README.read_text().split("### Webhooks", 1)[1].split("\n### ", 1)[0]
    assert "Webhook(secret).verify(body, headers)" in section
    receive = readme_receivers()["receive"]
    body = PAYLOAD.encode()

    assert receive(body, signed_headers(body, "evt_1", now_s(), [SECRET]), SECRET)["event_id"]
    with pytest.raises(WebhookVerificationError):
        receive(body, signed_headers(body, "evt_1", now_s(), [OTHER_SECRET]), SECRET)


# --- Backoff ---------------------------------------------------------------------------


def test_the_first_retry_comes_within_30_s_and_each_ceiling_doubles_up_to_an_hour() -> None:
    for _ in range(200):
        assert 10 <= retry_delay(1) <= 20
        assert 20 <= retry_delay(2) <= 40
        assert 40 <= retry_delay(3) <= 80
        assert MAX_RETRY_DELAY_S / 2 <= retry_delay(30) <= MAX_RETRY_DELAY_S
        assert retry_delay(10_000) <= MAX_RETRY_DELAY_S


def test_retry_after_is_honoured_up_to_the_cap() -> None:
    assert retry_delay(1, retry_after_s=120) >= 120
    assert retry_delay(1, retry_after_s=10 * MAX_RETRY_DELAY_S) == MAX_RETRY_DELAY_S
    assert 10 <= retry_delay(1, retry_after_s=0) <= 20  # never sooner than the backoff


def test_24_hours_of_retries_fit_well_inside_the_queues_max_receive_count() -> None:
    from tests.support.template import load_template

    queue = load_template()["Resources"]["WebhookQueue"]["Properties"]
    # The most attempts 24 h can take: every delay at its least (half its ceiling).
    elapsed, attempts = 0.0, 1
    while elapsed < RETRY_WINDOW_S:
        elapsed += min(MAX_RETRY_DELAY_S, 20 * 2 ** (attempts - 1)) / 2
        attempts += 1
    assert attempts <= 60 < queue["RedrivePolicy"]["maxReceiveCount"]


# --- What each answer leads to ---------------------------------------------------------


def test_the_receiver_gets_the_exact_payload_signed_with_its_headers(receiver) -> None:
    server = receiver(200)

    outcome = attempt(server.url())

    assert outcome == DeliveryOutcome("delivered", "HTTP 200", 200)
    (request,) = server.received
    assert request.method == "POST" and request.path == "/hooks/retail-pulse"
    assert request.body == PAYLOAD.encode()
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers[ID_HEADER] == "evt_1"
    assert request.headers["User-Agent"].startswith("retail-pulse-webhooks")
    assert Webhook(SECRET).verify(request.body, request.headers)["event_id"] == "evt_1"
    assert "Retail-Pulse-Signature" not in request.headers  # the deployment-wide scheme


@pytest.mark.parametrize("status", [200, 201, 202, 204])
def test_a_2xx_is_delivered(receiver, status: int) -> None:
    assert attempt(receiver(status).url()).verdict == "delivered"


@pytest.mark.parametrize("status", [500, 502, 503, 429])
def test_5xx_and_429_are_retried_first_within_30_s_then_later(receiver, status: int) -> None:
    server = receiver(status, status)

    first = attempt(server.url(), receive_count=1)
    later = attempt(server.url(), receive_count=6)

    assert first.verdict == "retry" and first.status == status
    assert first.delay_s is not None and 10 <= first.delay_s <= 20
    assert later.verdict == "retry" and later.delay_s is not None and later.delay_s >= 320


def test_retry_after_from_the_receiver_is_honoured(receiver) -> None:
    server = receiver((503, {"Retry-After": "120"}), (429, {"Retry-After": "86400"}))

    assert attempt(server.url()).delay_s == 120
    assert attempt(server.url()).delay_s == MAX_RETRY_DELAY_S


@pytest.mark.parametrize("status", [400, 401, 404, 410, 422, 301, 302, 307])
def test_other_answers_end_the_delivery(receiver, status: int) -> None:
    server = receiver((status, {"Location": "http://127.0.0.1:9/elsewhere"}))

    outcome = attempt(server.url())

    assert outcome.verdict == "rejected" and outcome.status == status
    assert outcome.detail.startswith(f"HTTP {status}")
    assert len(server.received) == 1  # a redirect is not followed


def test_a_receiver_that_trickles_its_answer_times_out_and_is_retried(allow) -> None:
    server = TricklingReceiver().start()
    try:
        allow(server.host_port, deadline_s=1)
        outcome = attempt(server.url())
    finally:
        server.stop()

    assert outcome.verdict == "retry"
    assert outcome.detail == f"did not finish within 1 s for {server.url()}"
    assert outcome.delay_s is not None and outcome.delay_s <= 20


def test_a_refused_connection_is_retried(allow) -> None:
    host_port = closed_port()
    allow(host_port)

    outcome = attempt(f"http://{host_port}/hook")

    assert outcome.verdict == "retry"
    assert outcome.detail.startswith("could not connect")


def test_a_receiver_whose_name_does_not_resolve_is_retried(fake_dns) -> None:
    # Its operator may fix DNS (or a certificate) within the window; an image URL's host
    # that does not resolve fails at once instead (test_download.py).
    outcome = attempt("https://hooks.receiver.example/retail-pulse")

    assert outcome.verdict == "retry"
    assert outcome.detail == (
        "host hooks.receiver.example not found for https://hooks.receiver.example/retail-pulse"
    )
    assert fake_dns.queries == ["hooks.receiver.example"]


def test_a_name_lookup_that_never_answers_ends_at_the_deadline(
    allow, fake_dns, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The callback host's name server never answers: the lookup counts against the
    delivery's deadline like everything after it, so the delivery is retried later instead
    of holding its thread (and its batch) for as long as the name server likes."""
    import socket
    import threading

    fake_dns["hooks.receiver.example"] = ["203.0.113.7"]
    asked, answer = threading.Event(), threading.Event()
    answered_by_dict = fake_dns.getaddrinfo

    def silent(host: str, port: int, *args: object, **kwargs: object) -> list[tuple]:
        asked.set()
        answer.wait()  # released only when the test ends
        return answered_by_dict(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", silent)
    allow(deadline_s=0.5)
    outcomes: list[DeliveryOutcome] = []
    sender = threading.Thread(
        target=lambda: outcomes.append(attempt("https://hooks.receiver.example/hook"))
    )
    try:
        sender.start()
        sender.join(timeout=60)  # a guard against a hang, not a measurement
        assert not sender.is_alive(), "the delivery waited on the name server past its deadline"
        assert asked.is_set() and not answer.is_set()  # given up while the lookup still hung
        (outcome,) = outcomes
        assert outcome.verdict == "retry"
        assert (
            outcome.detail == "did not finish within 0.5 s for https://hooks.receiver.example/hook"
        )
    finally:
        answer.set()
        sender.join()


def test_a_receiver_that_speaks_no_http_is_retried(allow) -> None:
    import socket
    import threading

    listener = socket.create_server(("127.0.0.1", 0))
    host_port = f"127.0.0.1:{listener.getsockname()[1]}"

    def garbage() -> None:
        connection, _ = listener.accept()
        with connection:
            connection.recv(65536)
            connection.sendall(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")

    server = threading.Thread(target=garbage, daemon=True)
    server.start()
    allow(host_port)
    try:
        outcome = attempt(f"http://{host_port}/hook")
    finally:
        server.join(timeout=10)
        listener.close()

    assert outcome.verdict == "retry"
    assert outcome.detail.startswith(f"malformed response from http://{host_port}/hook")


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://10.0.0.7/hook", "refused: 10.0.0.7 is a private address"),
        ("http://169.254.169.254/latest/meta-data/", "refused: 169.254.169.254 is a link-local"),
        ("http://[::1]:8080/hook", "refused: ::1 is a loopback address"),
        ("ftp://example.com/hook", "refused: only http and https URLs"),
    ],
)
def test_a_callback_the_ssrf_guard_refuses_ends_without_a_connection(
    receiver, url: str, why: str
) -> None:
    receiver()  # allowed: 127.0.0.1 on its own port only

    outcome = attempt(url)

    assert outcome.verdict == "rejected"
    assert outcome.detail.startswith(why)


def test_loopback_on_a_port_that_is_not_allowed_is_refused(receiver) -> None:
    server = receiver(200)
    other_port = closed_port()

    outcome = attempt(f"http://{other_port}/hook")

    assert outcome.verdict == "rejected"
    assert outcome.detail.startswith("refused: 127.0.0.1 is a loopback address")
    assert server.received == []


def test_past_24_hours_a_failing_delivery_is_abandoned(receiver) -> None:
    server = receiver(500, 500)

    assert attempt(server.url(), receive_count=30, age=timedelta(hours=2)).verdict == "retry"
    outcome = attempt(server.url(), receive_count=40, age=timedelta(hours=24, minutes=1))

    assert outcome.verdict == "abandoned"
    assert outcome.detail == "HTTP 500; still failing 24 h after it was first sent"


def test_a_success_after_24_hours_is_still_a_success(receiver) -> None:
    """A delivery redriven from the dead-letter queue gets its try."""
    assert attempt(receiver(200).url(), age=timedelta(days=3)).verdict == "delivered"


# --- Settling the queue message --------------------------------------------------------


@pytest.fixture
def dead_letter_queue(aws: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    url = aws.sqs.create_queue(QueueName="WebhooksDeadLetter")["QueueUrl"]
    monkeypatch.setenv("WEBHOOK_DEAD_LETTER_QUEUE_URL", url)
    get_settings.cache_clear()
    yield url
    get_settings.cache_clear()


def _received(aws: Any, url: str) -> list[dict[str, Any]]:
    return aws.sqs.receive_message(
        QueueUrl=url, MaxNumberOfMessages=10, MessageAttributeNames=["All"]
    ).get("Messages", [])


def test_an_abandoned_delivery_is_moved_to_the_dead_letter_queue_unchanged(
    aws, receiver, dead_letter_queue: str
) -> None:
    server = receiver(503)
    body = delivery(server.url()).model_dump_json()

    handle_delivery(body, 40, datetime.now(UTC) - timedelta(hours=25), "unused-receipt")

    (message,) = _received(aws, dead_letter_queue)
    assert message["Body"] == body
    assert message["MessageAttributes"]["reason"]["StringValue"].startswith("HTTP 503; still")


def test_a_retry_hides_the_message_and_raises_so_the_record_fails(aws, receiver) -> None:
    server = receiver(500)
    # Without the backoff a received message would be visible again at once.
    aws.sqs.set_queue_attributes(QueueUrl=aws.webhook_url, Attributes={"VisibilityTimeout": "0"})
    aws.sqs.send_message(QueueUrl=aws.webhook_url, MessageBody="x")
    (message,) = aws.sqs.receive_message(QueueUrl=aws.webhook_url).get("Messages", [])
    body = delivery(server.url()).model_dump_json()

    with pytest.raises(RetryScheduled, match=r"retried in \d+ s"):
        handle_delivery(body, 1, datetime.now(UTC), message["ReceiptHandle"])

    assert aws.sqs.receive_message(QueueUrl=aws.webhook_url).get("Messages", []) == []
    aws.sqs.change_message_visibility(  # the backoff lifted, as time would
        QueueUrl=aws.webhook_url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
    )
    assert len(aws.sqs.receive_message(QueueUrl=aws.webhook_url).get("Messages", [])) == 1


def test_an_unreadable_message_goes_to_the_dead_letter_queue(aws, dead_letter_queue) -> None:
    handle_delivery('{"job_id": "j"}', 1, None, "unused-receipt")

    (message,) = _received(aws, dead_letter_queue)
    assert message["Body"] == '{"job_id": "j"}'
    assert message["MessageAttributes"]["reason"]["StringValue"] == "not a webhook delivery"


def test_log_lines_never_carry_the_callbacks_userinfo_or_query(
    receiver, allow, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from retail_pulse.observability import logger

    monkeypatch.setattr(logger.registered_handler, "stream", _CurrentStdout())
    monkeypatch.setattr(webhooks, "delay_webhook", lambda receipt, seconds: None)
    server = receiver(404)
    host_port = server.host_port
    trickle = TricklingReceiver().start()
    try:
        allow(host_port, trickle.host_port, deadline_s=1)
        rejected = f"http://hook-user:hunter2@{host_port}/hooks?token=s3cret-token"
        handle_delivery(delivery(rejected).model_dump_json(), 1, None, "r")
        timed_out = f"http://hook-user:hunter2@{trickle.host_port}/slow?token=s3cret-token"
        with pytest.raises(RetryScheduled):
            handle_delivery(delivery(timed_out).model_dump_json(), 1, None, "r")
    finally:
        trickle.stop()

    out = capsys.readouterr().out
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    messages = {line["message"] for line in lines}
    assert {"webhook delivery ended without retry", "webhook delivery failed; retrying"} <= messages
    assert f"http://{host_port}/hooks?<redacted>" in out
    assert "hunter2" not in out and "s3cret-token" not in out and "hook-user" not in out
    assert server.received[0].path == "/hooks?token=s3cret-token"  # the receiver got it all


class _CurrentStdout:
    """Powertools' handler holds the stdout of import time; capsys swaps in its own later."""

    def write(self, text: str) -> int:
        import sys

        return sys.stdout.write(text)

    def flush(self) -> None:
        import sys

        sys.stdout.flush()
