"""Random interleavings of everything that moves a small job (issue 23): deliveries and
duplicate deliveries of its images, invocations that die between two of their writes,
cancel, retry, EventBridge refusing events, and reconciler passes; Hypothesis's stateful
testing picks the order, and shrinks a failure to the shortest story that breaks.

After every step: the job's counters equal its image records with a final state (but the
records of a filing still open, which its close or the reconciler counts). At the end,
with EventBridge back and the reconciler run: the job has ended, with a final record for
every image and nothing left open, and each terminal transition it went through was
published exactly once (one event id, sent once), but the failure a retry replaced while
it could not be published.

Single-threaded on purpose: every step runs to its end or to its forced crash, so a
failing sequence replays exactly. The threaded races are in test_races.py.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime, timedelta
from typing import Any
from unittest import mock

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from retail_pulse.data import filing as filing_data
from retail_pulse.data.events import PublishError
from retail_pulse.data.filing import Filing, file_outcomes
from retail_pulse.data.jobs import create_job, get_job
from retail_pulse.data.manifest import submitted_images
from retail_pulse.data.models import PENDING, ImageRecord, connection
from retail_pulse.data.ranges import parse_index_ranges
from retail_pulse.domain import (
    DEFAULT_TENANT,
    Image,
    ImageCancelled,
    ImageFailure,
    ImageSuccess,
    Job,
)
from retail_pulse.errors import ServiceError
from retail_pulse.jobs import finish
from retail_pulse.jobs.actions import cancel_job, retry_job
from retail_pulse.jobs.reconcile import reconcile
from retail_pulse.settings import get_settings
from tests.support.pipeline import assert_accounted, open_filings

BHARAT = "S00339218"
IMAGES = 3
# Where an invocation filing one image may die: after opening its filing, after writing
# the image's record, after closing the filing (counted, not stamped), after stamping the
# job (its event not published), after publishing (not marked emitted).
CRASH_POINTS = ("none", "opened", "written", "counted", "stamped", "published")


class Crash(BaseException):
    """The invocation dies here: nothing of it runs after (no handler catches it)."""


class Bus:
    """EventBridge as the machine drives it: takes events, refuses them while `down`, or
    lets the invocation die just before or after taking one."""

    def __init__(self) -> None:
        self.published: list[dict[str, Any]] = []
        self.down = False
        self.crash: str = "none"

    def publish(self, event: dict[str, Any]) -> None:
        if self.crash == "stamped":
            raise Crash("died before publishing")
        if self.down:
            raise PublishError("ServiceUnavailable: EventBridge is down")
        self.published.append(event)
        if self.crash == "published":
            raise Crash("died after publishing, before marking it emitted")


class JobInterleavings(RuleBasedStateMachine):
    """One small job, and everything that can happen to it, in any order."""

    bus: Bus  # set by the test, shared by its examples

    def __init__(self) -> None:
        super().__init__()
        self.job_id = ""
        self.images: list[Image] = []
        # The reconciler's clock: it only moves forward, in passes.
        self.clock = datetime.now(UTC)
        # Every terminal transition seen (event id -> status), and those whose event a
        # retry replaced while EventBridge was refusing it (never published, by design).
        self.transitions: dict[str, str] = {}
        self.replaced: set[str] = set()
        # Event ids published, then the invocation died before marking them emitted: the
        # reconciler sends the same event again (receivers deduplicate on its id).
        self.sent_twice_ok: set[str] = set()

    @initialize()
    def submit(self) -> None:
        job = Job(
            job_id=str(uuid.uuid4()),
            total=IMAGES,
            succeeded=0,
            failed=0,
            visit_count=1,
            created_at=datetime.now(UTC),
        )
        self.job_id = job.job_id
        create_job(
            job,
            [
                Image(job.job_id, i, BHARAT, "710006", f"http://127.0.0.1:9/{i}.jpg", "2026-11-28")
                for i in range(IMAGES)
            ],
        )
        self.images = submitted_images(job.job_id)
        self.first_event = len(self.bus.published)

    # -- what moves the job -----------------------------------------------------------

    @rule(
        index=st.integers(0, IMAGES - 1),
        succeeds=st.booleans(),
        in_flight=st.booleans(),
        crash=st.sampled_from(CRASH_POINTS),
    )
    def deliver(self, index: int, succeeds: bool, in_flight: bool, crash: str) -> None:
        """A delivery of one image's message (its first, a duplicate, or one a retry made
        due again), filed as the process function files it, dying at `crash`. An image of
        a cancelled job is filed `cancelled`, unless it was already being measured."""
        job = get_job(self.job_id)
        assert job is not None
        outcome: Any
        if job.cancelled_at is not None and not in_flight:
            outcome = ImageCancelled()
        elif succeeds:
            outcome = ImageSuccess(
                perimeter=60, width=20, height=10, store_id=BHARAT, area="710006"
            )
        else:
            outcome = ImageFailure("image download failed: HTTP 404")
        with self._dying_at(crash):
            file_outcomes(self.job_id, [Filing(self.images[index], outcome, 1)])
            if crash == "counted":
                raise Crash("died after counting, before finishing")
            finish.finish_job(self.job_id)

    @contextmanager
    def _dying_at(self, crash: str) -> Iterator[None]:
        patches = []
        if crash == "opened":
            patches.append(mock.patch.object(filing_data, "_file_image", side_effect=Crash()))
        elif crash == "written":
            patches.append(mock.patch.object(filing_data, "_close_filing", side_effect=Crash()))
        self.bus.crash = crash
        try:
            for patch in patches:
                patch.start()
            yield
        except Crash:
            event = self.bus.published[-1] if self.bus.published else None
            if crash == "published" and event and event["job"]["job_id"] == self.job_id:
                self.sent_twice_ok.add(event["event_id"])
        finally:
            self.bus.crash = "none"
            for patch in patches:
                patch.stop()

    @rule()
    def cancel(self) -> None:
        with suppress(ServiceError):  # 409: finished already; the job is as it was
            cancel_job(DEFAULT_TENANT, self.job_id)

    @rule()
    def retry(self) -> None:
        before = get_job(self.job_id)
        try:
            retry_job(DEFAULT_TENANT, self.job_id)
        except ServiceError:
            return  # 409: not failed, or nothing to re-run
        if self.bus.down and before is not None and before.event_pending and before.event_id:
            # Its failure's event could not go out; the retry's own end is announced.
            self.replaced.add(before.event_id)
        # A failure stamped and replaced within the retry while EventBridge was down was
        # never seen between steps; only what was published of it is checked.

    @rule(down=st.booleans())
    def eventbridge(self, down: bool) -> None:
        self.bus.down = down

    @rule(late=st.booleans())
    def reconciler_pass(self, late: bool) -> None:
        """A pass once the job is due (20 minutes on), or past its hard deadline."""
        self.clock += timedelta(hours=3) if late else timedelta(minutes=20)
        reconcile(now=self.clock)

    # -- what must hold -----------------------------------------------------------------

    @invariant()
    def counters_equal_final_records(self) -> None:
        if not self.job_id:
            return
        job = get_job(self.job_id)
        assert job is not None
        counted = job.succeeded + job.failed + job.cancelled
        held = self._held_by_open_filings()
        final = [
            record
            for record in ImageRecord.query(
                self.job_id, range_key_condition=ImageRecord.image_index >= 0, consistent_read=True
            )
            if record.state != PENDING and (record.filed_by, int(record.image_index)) not in held
        ]
        assert counted == len(final), (job, [(r.image_index, r.state) for r in final])
        assert counted <= job.total
        self._note_transition(job)

    def _held_by_open_filings(self) -> set[tuple[str, int]]:
        item = connection().client.get_item(
            TableName=get_settings().jobs_table,
            Key={"job_id": {"S": self.job_id}},
            ConsistentRead=True,
        )["Item"]
        return {
            (name.removeprefix("filing_"), index)
            for name, value in item.items()
            if name.startswith("filing_")
            for index in parse_index_ranges(value["M"]["images"]["S"])
        }

    def _note_transition(self, job: Job) -> None:
        if job.finished_at is not None and job.event_id is not None:
            self.transitions.setdefault(job.event_id, job.state)

    def teardown(self) -> None:
        """EventBridge back, and the reconciler's passes: the job must end, announced."""
        if not self.job_id:
            return
        self.bus.down = False
        for _ in range(3):
            self.clock += timedelta(hours=3)
            reconcile(now=self.clock)
        job = get_job(self.job_id)
        assert job is not None
        self._note_transition(job)
        record = assert_accounted(self.job_id)  # every image final, counted, nothing open
        assert not record.event_pending and open_filings(self.job_id) == []

        events = [e for e in self.bus.published[self.first_event :] if _of(e, self.job_id)]
        sent = Counter(e["event_id"] for e in events)
        for event_id, times in sent.items():
            assert times == 1 or event_id in self.sent_twice_ok, (event_id, times)
        for event in events:
            progress = event["job"]["progress"]
            assert event["job"]["status"] in {"completed", "failed", "cancelled"}
            counted = progress["succeeded"] + progress["failed"] + progress.get("cancelled", 0)
            assert counted == IMAGES, event
        for event_id, state in self.transitions.items():
            if event_id not in self.replaced:
                assert event_id in sent, ("a transition never announced", state, event_id)
        # The job's last transition is the last event sent, with its final status.
        assert events, "the job's end was never announced"
        assert events[-1]["event_id"] == job.event_id
        assert events[-1]["job"]["status"] == job.state


def _of(event: dict[str, Any], job_id: str) -> bool:
    return bool(event["job"]["job_id"] == job_id)


# Modest: a few dozen short stories, well under a minute on two shared cores.
STORIES = settings(
    max_examples=20,
    stateful_step_count=10,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


def test_every_interleaving_counts_once_ends_and_announces_once(
    aws: Any, stores: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    bus = Bus()
    monkeypatch.setattr(finish, "publish_job_finished", bus.publish)
    JobInterleavings.bus = bus
    run_state_machine_as_test(JobInterleavings, settings=STORIES)
