"""SQS fair queues in the local stack's event source (local_stack/fair_queue.py and
event_sources.SqsEventSource): a tenant with more than its share of messages in flight is
served after the quiet tenants, is never starved when no one else waits, and no message is
lost or handed over twice. Deterministic: batches are taken directly, no poller threads and
no sleeps; the event source runs against moto in-process."""

from __future__ import annotations

import itertools
import threading
from collections import Counter, deque
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from moto import mock_aws

from local_stack.event_sources import HOLD_S, SqsEventSource
from local_stack.fair_queue import NOISY_MIN_IN_FLIGHT, NOISY_SHARE, FairPool, Waiting
from local_stack.model import SqsSource
from local_stack.runtime import Invocation
from local_stack.stack import StackConfig

_ids = itertools.count()


def messages(group: str | None, count: int) -> list[dict[str, Any]]:
    """Received messages as ReceiveMessage returns them (only what the pool reads)."""
    made = []
    for _ in range(count):
        n = next(_ids)
        attributes = {"MessageGroupId": group} if group is not None else {}
        made.append(
            {"MessageId": f"m{n}", "ReceiptHandle": f"r{n}", "Body": "", "Attributes": attributes}
        )
    return made


def groups(taken: list[Waiting]) -> list[str | None]:
    return [w.group for w in taken]


def test_a_quiet_tenants_messages_go_before_a_noisy_tenants_backlog() -> None:
    pool = FairPool(capacity=10_000)
    pool.add(messages("A", 300), visible_at=0)
    in_flight = pool.take(100)  # A's first batch is being processed
    assert pool.noisy() == {"A"}
    pool.add(messages("B", 5), visible_at=0)  # B's arrive behind 200 of A's

    batch = pool.take(10)
    assert groups(batch) == ["B"] * 5 + ["A"] * 5
    # A's in arrival order after them: its backlog is delayed, not reordered or dropped.
    assert [w.seq for w in batch[5:]] == sorted(w.seq for w in batch[5:])
    assert min(w.seq for w in batch[5:]) == max(w.seq for w in in_flight) + 1


def test_without_fairness_a_backlog_stands_in_front_of_a_quiet_tenant() -> None:
    """LOCAL_FAIR_QUEUES=0, the comparison: the order the queue delivered them in."""
    pool = FairPool(capacity=10_000, fair=False)
    pool.add(messages("A", 300), visible_at=0)
    pool.take(100)
    pool.add(messages("B", 5), visible_at=0)
    assert groups(pool.take(200)) == ["A"] * 200
    assert groups(pool.take(10)) == ["B"] * 5


def test_a_noisy_tenant_alone_is_served_as_usual() -> None:
    pool = FairPool(capacity=10_000)
    pool.add(messages("A", 250), visible_at=0)
    first = pool.take(100)
    assert pool.noisy() == {"A"}
    second = pool.take(100)
    assert groups(second) == ["A"] * 100
    assert pool.waiting() == 50
    assert {w.message["MessageId"] for w in first}.isdisjoint(
        w.message["MessageId"] for w in second
    )


def test_below_the_noisy_threshold_messages_go_in_arrival_order() -> None:
    """Not a round robin: a tenant is only put back once it holds a disproportionate share."""
    pool = FairPool(capacity=10_000)
    pool.add(messages("A", NOISY_MIN_IN_FLIGHT - 5), visible_at=0)
    pool.take(NOISY_MIN_IN_FLIGHT - 5)
    assert pool.noisy() == set()
    pool.add(messages("A", 3) + messages("B", 2), visible_at=0)  # A stays under 30
    assert groups(pool.take(5)) == ["A", "A", "A", "B", "B"]


def test_a_small_share_of_a_busy_queue_is_not_noisy() -> None:
    """At least 30 in flight is not enough: the tenant must also hold over 10 % of them."""
    pool = FairPool(capacity=10_000)
    pool.add(messages("big", 400) + messages("small", 30), visible_at=0)
    pool.take(430)
    assert NOISY_SHARE * 430 > 30  # small holds less than its share
    assert pool.noisy() == {"big"}
    pool.add(messages("small", 1) + messages("other", 1), visible_at=0)
    assert groups(pool.take(2)) == ["small", "other"]


def test_among_noisy_tenants_the_one_with_fewest_in_flight_goes_first() -> None:
    pool = FairPool(capacity=10_000)
    pool.add(messages("A", 100) + messages("B", 40), visible_at=0)
    pool.take(140)
    assert pool.noisy() == {"A", "B"}
    pool.add(messages("A", 2) + messages("B", 2), visible_at=0)
    assert groups(pool.take(4)) == ["B", "B", "A", "A"]


def test_a_message_without_a_group_is_a_tenant_of_its_own() -> None:
    pool = FairPool(capacity=10_000)
    pool.add(messages("A", 100), visible_at=0)
    pool.take(60)
    pool.add(messages(None, 2), visible_at=0)  # behind A's 40 still waiting
    assert groups(pool.take(3)) == [None, None, "A"]


def test_a_tenant_is_quiet_again_once_its_batches_finish() -> None:
    pool = FairPool(capacity=10_000)
    pool.add(messages("A", 100), visible_at=0)
    batch = pool.take(50)
    pool.add(messages("B", 1), visible_at=0)
    assert pool.noisy() == {"A"}
    pool.finished(batch)
    assert pool.noisy() == set() and pool.in_flight() == {}
    assert groups(pool.take(2)) == ["A", "A"]  # arrival order again


def test_a_message_delivered_again_while_it_waits_is_kept_once_with_its_new_receipt() -> None:
    pool = FairPool(capacity=10_000)
    (first,) = messages("A", 1)
    pool.add([first], visible_at=10)
    again = {**first, "ReceiptHandle": "newer"}
    pool.add([again], visible_at=20)
    assert pool.waiting() == 1
    (taken,) = pool.take(10)
    assert taken.message["ReceiptHandle"] == "newer" and taken.visible_at == 20


def test_the_pool_holds_at_most_its_capacity_waiting() -> None:
    pool = FairPool(capacity=25)
    pool.add(messages("A", 20), visible_at=0)
    assert pool.room() == 5
    pool.take(10)
    assert pool.room() == 15


class FairPoolMachine(RuleBasedStateMachine):
    """Any interleaving of arrivals, batches and finished invocations: nothing lost or
    handed over twice, each tenant's messages in arrival order, a batch as full as what
    waits, and a noisy tenant's message handed over only when no quiet tenant's waits."""

    def __init__(self) -> None:
        super().__init__()
        self.pool = FairPool(capacity=10_000)
        self.added: dict[str, str | None] = {}
        self.queues: dict[str | None, deque[str]] = {}  # what waits, per tenant, in order
        self.handed: set[str] = set()
        self.in_flight: list[list[Waiting]] = []
        self.counts: Counter[str | None] = Counter()

    @rule(
        group=st.sampled_from(["A", "B", "C", None]),
        count=st.integers(min_value=1, max_value=60),
    )
    def arrive(self, group: str | None, count: int) -> None:
        batch = messages(group, count)
        self.pool.add(batch, visible_at=0)
        for message in batch:
            self.added[message["MessageId"]] = group
            self.queues.setdefault(group, deque()).append(message["MessageId"])

    @rule(count=st.integers(min_value=1, max_value=100))
    def take(self, count: int) -> None:
        waiting = sum(len(q) for q in self.queues.values())
        batch = self.pool.take(count)
        assert len(batch) == min(count, waiting)
        for waiting_message in batch:
            message_id, group = waiting_message.message["MessageId"], waiting_message.group
            assert message_id not in self.handed
            assert self.queues[group].popleft() == message_id  # per-tenant arrival order
            total = sum(self.counts.values())

            def noisy(tenant: str | None, total: int = total) -> bool:
                count = self.counts[tenant]
                return (
                    tenant is not None
                    and count >= NOISY_MIN_IN_FLIGHT
                    and count > NOISY_SHARE * total
                )

            if noisy(group):
                quiet_waiting = [g for g, q in self.queues.items() if q and not noisy(g)]
                # (the popleft above already took this message out of its own queue)
                assert not quiet_waiting, (group, quiet_waiting, dict(self.counts))
            self.handed.add(message_id)
            self.counts[group] += 1
        if batch:
            self.in_flight.append(batch)

    @precondition(lambda self: any(self.queues.values()))
    @rule(index=st.integers(min_value=0))
    def gone(self, index: int) -> None:
        """A waiting message the queue no longer has is dropped, the others keep order."""
        waiting = self.pool.expiring(before=float("inf"))
        dropped = waiting[index % len(waiting)]
        assert self.pool.discard([dropped]) == 1
        assert self.pool.discard([dropped]) == 0  # once
        message_id = dropped.message["MessageId"]
        self.queues[dropped.group].remove(message_id)
        del self.added[message_id]

    @precondition(lambda self: bool(self.in_flight))
    @rule(index=st.integers(min_value=0))
    def finish(self, index: int) -> None:
        batch = self.in_flight.pop(index % len(self.in_flight))
        self.pool.finished(batch)
        for waiting_message in batch:
            self.counts[waiting_message.group] -= 1

    @invariant()
    def nothing_lost(self) -> None:
        waiting = {m for q in self.queues.values() for m in q}
        assert waiting | self.handed == set(self.added)
        assert self.pool.waiting() == len(waiting)
        assert self.pool.in_flight() == {g: n for g, n in self.counts.items() if g and n}


FairPoolMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=40)
test_fair_pool_any_interleaving = FairPoolMachine.TestCase


# -- the event source against SQS (moto in-process) -------------------------------------

ENDPOINT = "https://sqs.us-east-1.amazonaws.com"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def queue() -> Iterator[tuple[Any, str]]:
    with mock_aws():
        sqs = boto3.client("sqs", region_name="us-east-1")
        url = sqs.create_queue(QueueName="Images", Attributes={"VisibilityTimeout": "30"})[
            "QueueUrl"
        ]
        yield sqs, url


def send(sqs: Any, url: str, group: str, count: int) -> None:
    for start in range(0, count, 10):
        sqs.send_message_batch(
            QueueUrl=url,
            Entries=[
                {"Id": str(i), "MessageBody": f"{group}-{start + i}", "MessageGroupId": group}
                for i in range(min(10, count - start))
            ],
        )


def event_source(url: str, clock: Clock, batch_size: int = 100) -> SqsEventSource:
    source = SqsSource(
        function="Process",
        event="Images",
        queue_arn="arn:aws:sqs:us-east-1:123456789012:Images",
        batch_size=batch_size,
        batching_window_s=0.0,
        report_batch_item_failures=True,
        enabled=True,
        maximum_concurrency=None,
    )
    return SqsEventSource(source, url, ENDPOINT, wait_s=0, clock=clock)


def visibility_changes(source: SqsEventSource) -> list[int]:
    """The VisibilityTimeout of every entry the source's uncounted client changed, in the
    order SQS answered the requests."""
    seen: list[int] = []

    def remember(params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        context["timeouts"] = [entry["VisibilityTimeout"] for entry in params["Entries"]]

    def answered(context: dict[str, Any], **_: Any) -> None:
        seen.extend(context["timeouts"])

    events = source._control.meta.events
    events.register("provide-client-params.sqs.ChangeMessageVisibilityBatch", remember)
    events.register("after-call.sqs.ChangeMessageVisibilityBatch", answered)
    return seen


def fill_all(source: SqsEventSource) -> int:
    received = 0
    while got := source.fill():
        received += got
    return received


def test_the_event_source_hands_a_quiet_tenants_messages_over_before_a_backlog(
    queue: tuple[Any, str],
) -> None:
    sqs, url = queue
    # moto hides received messages for real seconds: an hour, so that a slow machine's pass
    # over 320 messages never sees one of them again (the source's clock here is fake).
    sqs.set_queue_attributes(QueueUrl=url, Attributes={"VisibilityTimeout": "3600"})
    send(sqs, url, "flooder", 300)
    send(sqs, url, "quiet", 20)  # after the whole flood, as moto delivers them last
    source = event_source(url, Clock())
    assert fill_all(source) == 320

    first = source.next_batch()
    bodies = [w.message["Body"] for w in first]
    # The flooder is noisy once 30 of its messages are in flight: the quiet client's 20
    # come next, ahead of the 270 the flooder sent before them.
    assert bodies[:30] == [f"flooder-{i}" for i in range(30)]
    assert bodies[30:50] == [f"quiet-{i}" for i in range(20)]
    assert bodies[50:] == [f"flooder-{i}" for i in range(30, 80)]

    handed = list(bodies)
    source.finish(first, Invocation("r", True, None))
    while batch := source.next_batch():
        handed.extend(w.message["Body"] for w in batch)
        source.finish(batch, Invocation("r", True, None))
    sent = [f"flooder-{i}" for i in range(300)] + [f"quiet-{i}" for i in range(20)]
    assert sorted(handed) == sorted(sent)  # each exactly once
    assert source.pool.in_flight() == {}
    left = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert left["ApproximateNumberOfMessages"] == "0"
    assert left["ApproximateNumberOfMessagesNotVisible"] == "0"


def test_what_an_invocation_fails_stays_on_the_queue_and_leaves_flight(
    queue: tuple[Any, str],
) -> None:
    sqs, url = queue
    send(sqs, url, "A", 40)
    source = event_source(url, Clock())
    fill_all(source)
    batch = source.next_batch()
    failed = batch[0].message["MessageId"]
    source.finish(batch, Invocation("r", True, {"batchItemFailures": [{"itemIdentifier": failed}]}))
    assert source.pool.in_flight() == {}
    left = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert left["ApproximateNumberOfMessagesNotVisible"] == "1"  # back after its timeout
    assert left["ApproximateNumberOfMessages"] == "0"  # the 39 others were deleted


def test_a_message_received_and_handed_over_at_once_costs_no_visibility_request(
    queue: tuple[Any, str],
) -> None:
    sqs, url = queue
    send(sqs, url, "A", 25)
    clock = Clock()
    source = event_source(url, clock)
    changes = visibility_changes(source)
    fill_all(source)
    clock.now += 1  # well inside the 30 s visibility timeout
    assert source.hold_expiring() == 0
    assert len(source.next_batch()) == 25
    assert changes == []


def test_a_message_handed_over_with_under_half_its_timeout_left_gets_the_queues_timeout(
    queue: tuple[Any, str],
) -> None:
    sqs, url = queue
    send(sqs, url, "A", 20)
    clock = Clock()
    source = event_source(url, clock, batch_size=10)
    changes = visibility_changes(source)
    fill_all(source)
    clock.now += 14  # 16 s of 30 left: kept
    assert len(source.next_batch()) == 10 and changes == []
    clock.now += 2  # 14 s left: an invocation would risk a second delivery
    assert len(source.next_batch()) == 10 and changes == [30] * 10


def test_a_held_message_is_hidden_while_it_waits_and_handed_over_with_the_queues_timeout(
    queue: tuple[Any, str],
) -> None:
    sqs, url = queue
    send(sqs, url, "A", 25)
    clock = Clock()
    source = event_source(url, clock, batch_size=10)
    changes = visibility_changes(source)
    fill_all(source)
    clock.now += 29  # the queue would show them again within the feeder's next pass
    assert source.hold_expiring() == 25
    assert changes == [HOLD_S] * 25
    # Handed over later: an invocation gets the queue's own timeout from now, as Lambda's.
    clock.now += 100
    assert len(source.next_batch()) == 10
    assert changes[25:] == [30] * 10
    # Nothing came back meanwhile: the 15 still waiting are hidden, the 10 in flight too.
    assert sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", []) == []


def test_a_second_delivery_of_a_message_deleted_meanwhile_is_dropped_not_handed_over(
    queue: tuple[Any, str],
) -> None:
    """A message whose visibility ran out while an invocation had it is received again
    into the pool; once that invocation deletes it, the queue no longer has it, and the
    event source hands it to no one (SQS would not) and stops holding it."""
    sqs, url = queue
    send(sqs, url, "A", 2)
    clock = Clock()
    source = event_source(url, clock)
    fill_all(source)
    first = source.next_batch()
    # Both visible again before the invocation ends (a slow batch), received again:
    sqs.change_message_visibility_batch(
        QueueUrl=url,
        Entries=[
            {"Id": str(i), "ReceiptHandle": w.message["ReceiptHandle"], "VisibilityTimeout": 0}
            for i, w in enumerate(first)
        ],
    )
    assert fill_all(source) == 2 and source.pool.waiting() == 2
    source.finish(first, Invocation("r", True, None))  # deletes both

    clock.now += 29  # due to be held: they are dropped instead
    assert source.hold_expiring() == 0
    assert source.pool.waiting() == 0
    send(sqs, url, "B", 1)
    fill_all(source)
    assert [w.message["Body"] for w in source.next_batch()] == ["B-0"]
    assert source.pool.in_flight() == {"B": 1}


def test_a_batch_leaves_out_what_the_queue_no_longer_has(queue: tuple[Any, str]) -> None:
    sqs, url = queue
    send(sqs, url, "A", 3)
    clock = Clock()
    source = event_source(url, clock)
    fill_all(source)
    first = source.next_batch()
    sqs.change_message_visibility(
        QueueUrl=url, ReceiptHandle=first[0].message["ReceiptHandle"], VisibilityTimeout=0
    )
    fill_all(source)
    source.finish(first, Invocation("r", True, None))
    send(sqs, url, "B", 1)
    fill_all(source)
    clock.now += 20  # handed over late: each has its visibility set, and one is gone
    assert [w.message["Body"] for w in source.next_batch()] == ["B-0"]
    assert source.pool.in_flight() == {"B": 1} and source.pool.waiting() == 0


class SignallingPool(FairPool):
    """The pool, telling the test when a poller has taken its batch."""

    def __init__(self, capacity: int) -> None:
        super().__init__(capacity)
        self.taken = threading.Event()

    def take(self, count: int, window_s: float = 0.0, wait_s: float = 0.0) -> list[Waiting]:
        batch = super().take(count, window_s, wait_s)
        self.taken.set()
        return batch


def test_a_poller_taking_a_message_the_feeder_is_hiding_sets_its_visibility_after_it(
    queue: tuple[Any, str],
) -> None:
    """The race: the feeder has sent "hide these for HOLD_S" and, before SQS answers, a
    poller takes them. The poller's "the queue's own timeout" must reach SQS after the
    feeder's hold, or an invocation that fails them leaves them hidden for minutes."""
    sqs, url = queue
    send(sqs, url, "A", 5)
    clock = Clock()
    source = event_source(url, clock)
    source.pool = pool = SignallingPool(capacity=100)
    changes = visibility_changes(source)
    fill_all(source)
    clock.now += 29
    batches: list[list[Waiting]] = []
    poller = threading.Thread(target=lambda: batches.append(source.next_batch()))

    def take_while_the_hold_is_on_its_way(**_: Any) -> None:
        if not poller.is_alive() and not batches:
            poller.start()
            assert pool.taken.wait(timeout=30), "the poller never took its batch"

    source._control.meta.events.register(
        "before-send.sqs.ChangeMessageVisibilityBatch", take_while_the_hold_is_on_its_way
    )
    source.hold_expiring()
    poller.join(timeout=30)
    assert [len(b) for b in batches] == [5]
    assert changes == [HOLD_S] * 5 + [30] * 5


@pytest.mark.parametrize(
    ("value", "fair"), [(None, True), ("1", True), ("0", False), ("off", False)]
)
def test_the_local_stack_has_fair_queues_unless_told_otherwise(
    monkeypatch: pytest.MonkeyPatch, value: str | None, fair: bool
) -> None:
    if value is None:
        monkeypatch.delenv("LOCAL_FAIR_QUEUES", raising=False)
    else:
        monkeypatch.setenv("LOCAL_FAIR_QUEUES", value)
    assert StackConfig.from_env().fair_queues is fair
