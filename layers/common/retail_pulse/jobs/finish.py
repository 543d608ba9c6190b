"""A job's end, announced exactly once per terminal transition: the log line and metrics,
a job.finished event on EventBridge, and a webhook delivery to its callback_url.

Whoever makes a job terminal (the invocation that filed its last image, or a cancel) writes
a new event id and `event_pending` in that very update; only that caller emits, and clears
the flag afterwards. If it dies in between, the job is still in OngoingJobs, and the
reconciler emits the same event (same event_id) later: receivers deduplicate on it.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit

from retail_pulse.data import STORAGE_ERRORS
from retail_pulse.data.events import publish_job_finished
from retail_pulse.data.ingest import enqueue_ingest
from retail_pulse.data.jobs import event_emitted, mark_finished
from retail_pulse.data.queue import enqueue_webhook
from retail_pulse.domain import Job
from retail_pulse.jobs.messages import WebhookDelivery
from retail_pulse.jobs.status import status_document, status_of
from retail_pulse.observability import (
    JOB_DURATION,
    JOBS_COMPLETED,
    JOBS_FAILED,
    count,
    logger,
)
from retail_pulse.timestamps import format_timestamp

EVENT_TYPE = "job.finished"


# The IngestQueue message kind that goes on with a failed job's paged summary.
SUMMARY = "summary"


def finish_job(job_id: str) -> None:
    """Finish a job whose images are all done, once, from whichever invocation filed its
    last image; then announce it. A failed job with too many failures to sum up here has
    its summary handed on instead (jobs/summary.py), which finishes it."""
    job = mark_finished(job_id)
    if job is None:
        return
    if job.summarizing:
        hand_on_summary(job.job_id, job.tenant)
        return
    finished(job)


def hand_on_summary(job_id: str, tenant: str, delay_s: int = 0) -> None:
    """Send the message that goes on with the job's paged summary. When it cannot be sent,
    the reconciler sends it once the summary has stood still for RECONCILE_AFTER_S."""
    try:
        enqueue_ingest({"job_id": job_id, "tenant": tenant, "kind": SUMMARY}, delay_s)
    except STORAGE_ERRORS:
        logger.exception(
            "failure summary not handed on; the reconciler will", extra={"job_id": job_id}
        )


def finished(job: Job) -> None:
    """What follows the stamp of a job's end, from the one caller that stamped it: the log
    line, the metrics, the event."""
    job_id = job.job_id
    duration = (datetime.now(UTC) - job.created_at).total_seconds()
    logger.info(
        "job finished",
        extra={
            "job_id": job_id,
            "outcome": job.state,
            "duration_s": round(duration, 3),
            "succeeded": job.succeeded,
            "failed": job.failed,
        },
    )
    count(JOB_DURATION, duration, MetricUnit.Seconds)
    count(JOBS_FAILED if job.failed else JOBS_COMPLETED)
    announce(job)


def announce(job: Job) -> None:
    """Emit the event of a transition this caller made. Trouble here never fails the
    caller (the transition stands): the event stays pending, and the reconciler emits it."""
    try:
        emit_job_finished(job)
    except Exception:
        logger.exception(
            "job event not emitted yet; the reconciler will emit it",
            extra={"job_id": job.job_id, "event_id": job.event_id},
        )


def job_finished_event(job: Job) -> dict[str, Any]:
    """The event of the job's last terminal transition: the status body as it stands."""
    if job.event_id is None or job.finished_at is None:
        raise ValueError(f"job {job.job_id} has no terminal transition to announce")
    return {
        "event_id": job.event_id,
        "type": EVENT_TYPE,
        "created_at": format_timestamp(job.finished_at),
        "job": status_document(status_of(job)),
    }


def emit_job_finished(job: Job) -> None:
    """Publish the transition's event and hand its webhook to the queue, then mark it
    emitted. Raises if either fails: the flag stays, and the event goes out again later."""
    event = job_finished_event(job)
    publish_job_finished(event)
    if job.callback_url:
        payload = json.dumps(event, separators=(",", ":"))
        delivery = WebhookDelivery(
            event_id=event["event_id"],
            job_id=job.job_id,
            tenant=job.tenant,
            callback_url=job.callback_url,
            payload=payload,
        )
        enqueue_webhook(delivery.model_dump())
    logger.info(
        "job event emitted",
        extra={
            "job_id": job.job_id,
            "event_id": event["event_id"],
            "status": job.state,
            "webhook": bool(job.callback_url),
        },
    )
    event_emitted(job)
