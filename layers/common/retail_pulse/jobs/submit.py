"""Submit a job: record it and its images, then fan out one queue message per image; once
per Idempotency-Key when the client sends one.

A client that lost the answer (timeout, dropped connection, 5xx) sends the same request
again with the same key and gets the same job, never a second one: the key's first outcome
stands. Declared with Powertools idempotency (data/idempotency.py), in two steps:

1. The key gets its job id, remembered before anything of the job is written. The key is
   the header alone; the request's hash is stored with it and checked, so one key reused
   for a different job is refused (KeyReused) rather than answered with the first job's id.
2. The job is recorded under that id, once. A submit that fails here (a 503) forgets only
   this step (Powertools deletes its record), so the same request sent again records the
   same job: it finishes what the failed attempt wrote (data/jobs.py resume_job) and
   enqueues the images still without a result. A submit whose invocation died keeps its
   step in progress until its Lambda deadline, then likewise.

A repeat that arrives while the first request is still running is refused at once
(KeyInProgress) instead of waiting: API Gateway gives a request 29 s, and a large submit can
take most of it. Without a key, a submit that fails part-way leaves its job to the
reconciler (requeued, or expired), as the client cannot name it again.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from aws_lambda_powertools.utilities.idempotency import IdempotencyConfig, idempotent_function
from aws_lambda_powertools.utilities.idempotency.exceptions import (
    IdempotencyAlreadyInProgressError,
    IdempotencyPersistenceLayerError,
    IdempotencyValidationError,
)

from retail_pulse.data import STORAGE_ERRORS
from retail_pulse.data.idempotency import persistence_layer
from retail_pulse.data.jobs import create_job, get_job, resume_job
from retail_pulse.data.manifest import submitted_images
from retail_pulse.data.queue import enqueue_images
from retail_pulse.data.stores import find_stores
from retail_pulse.domain import FAILED, Image, Job, JobRequest
from retail_pulse.errors import InvalidRequest, KeyInProgress, KeyReused, StorageInterrupted
from retail_pulse.jobs.finish import finish_job
from retail_pulse.jobs.messages import ImageMessage, is_express
from retail_pulse.observability import (
    IMAGES_SUBMITTED,
    JOBS_SUBMITTED,
    count,
    count_failures,
    logger,
    tracer,
)

UNKNOWN_STORE = "store_id not found in store master"


def new_job_id() -> str:
    """122 random bits: one client cannot find another's jobs by counting."""
    return str(uuid.uuid4())


HEADER = "Idempotency-Key"
# Long enough for a UUID or a client's own order reference, short enough for a log line.
MAX_KEY_LENGTH = 255
# The SPEC's promise: the same request within 24 h gets the same job.
REMEMBER_S = 24 * 3600


@dataclass(frozen=True)
class Submission:
    """What is remembered under a key: the key, and the request whose hash is checked."""

    idempotency_key: str
    request: JobRequest


_STORAGE_TROUBLE: tuple[type[Exception], ...] = (*STORAGE_ERRORS, IdempotencyPersistenceLayerError)

# Step 1: the key's job id. (Each step has its own persistence layer: Powertools configures
# one layer with the first config it serves.)
persistence = persistence_layer()
config = IdempotencyConfig(
    event_key_jmespath="idempotency_key",
    payload_validation_jmespath="request",
    expires_after_seconds=REMEMBER_S,
    raise_on_no_idempotency_key=True,
)
# Step 2: recording that job, keyed by its id (the request was checked in step 1).
recordings = persistence_layer()
recording_config = IdempotencyConfig(
    event_key_jmespath="job_id", expires_after_seconds=REMEMBER_S, raise_on_no_idempotency_key=True
)


def remember_invocation(context: Any) -> None:
    """Let an in-progress record expire with the invocation that wrote it, so a submit
    killed by its timeout does not block its key for 24 hours."""
    config.register_lambda_context(context)
    recording_config.register_lambda_context(context)


def submit_job(request: JobRequest, idempotency_key: str | None = None) -> str:
    """The job's id: a new job, or, for a key seen in the last 24 h, that request's job."""
    try:
        if idempotency_key is None:
            return record_job(request)
        # Scoped to the client: the same key from two clients is two jobs. A tenant (an API
        # key id, or "default") has no "#", so the pair cannot be read two ways.
        key = f"{request.tenant}#{_checked(idempotency_key)}"
        job_id = _submit_once(submission=Submission(idempotency_key=key, request=request))
        return _record_once(recording={"job_id": job_id}, request=request)
    except IdempotencyAlreadyInProgressError as error:
        raise KeyInProgress(
            f"a request with this {HEADER} is still being processed; "
            "retry in a few seconds to get its job_id"
        ) from error
    except IdempotencyValidationError as error:
        raise KeyReused(
            f"this {HEADER} was already used for a different request in the last 24 hours; "
            "use a new key for a new job"
        ) from error
    except _STORAGE_TROUBLE as error:
        raise StorageInterrupted(
            "the job could not be recorded completely; send the same request again"
            + (f" with the same {HEADER}" if idempotency_key is not None else "")
        ) from error


@idempotent_function(
    data_keyword_argument="submission", persistence_store=persistence, config=config
)
def _submit_once(submission: Submission) -> str:
    """Step 1: a new job id for the key (records kept before two-step submits hold the job
    id too: a key remembered across the change keeps its job)."""
    return new_job_id()


@idempotent_function(
    data_keyword_argument="recording", persistence_store=recordings, config=recording_config
)
def _record_once(recording: dict[str, str], request: JobRequest) -> str:
    """Step 2: record the key's job, or finish recording it."""
    return record_job(request, job_id=recording["job_id"])


def _checked(key: str) -> str:
    key = key.strip()
    if not key or len(key) > MAX_KEY_LENGTH or not key.isprintable():
        raise InvalidRequest(
            f"the {HEADER} header must be 1 to {MAX_KEY_LENGTH} printable characters"
        )
    return key


def record_job(request: JobRequest, job_id: str | None = None) -> str:
    """Record the job and enqueue its images; returns the job id once every message is queued.

    Images of stores missing from the store master are recorded failed at once and never
    enqueued, so the job can still end (as `failed`) without them. Given the `job_id` of a
    job a failed attempt of the same request began, finishes that job instead.
    """
    resuming = job_id is not None
    job_id = job_id or new_job_id()
    # Every later line of this request names the job (the handler clears keys per request).
    logger.append_keys(job_id=job_id)
    tracer.put_annotation(key="job_id", value=job_id)
    # A small job takes the express lane: no other client's backlog stands in front of it.
    express = is_express(sum(len(visit.image_url) for visit in request.visits))
    images, messages = _images_and_messages(request, job_id, express)
    unknown = len(images) - len(messages)
    job = Job(
        job_id=job_id,
        tenant=request.tenant,
        total=len(images),
        succeeded=0,
        failed=unknown,
        visit_count=len(request.visits),
        created_at=datetime.now(UTC),
        callback_url=request.callback_url,
    )
    if resuming and get_job(job_id) is not None:
        return _resume(job, images, express)
    create_job(job, images)
    enqueue_images(messages, express)
    logger.info(
        "job accepted",
        extra={
            "job_id": job_id,
            "images": len(images),
            "visits": len(request.visits),
            "unknown_store_images": unknown,
        },
    )
    count(JOBS_SUBMITTED)
    count(IMAGES_SUBMITTED, len(images))
    if unknown:
        count_failures("store_unknown", unknown)
    if not messages:
        # Every image failed at once (no store known): the job ends now, and says so.
        finish_job(job_id)
    return job_id


def _images_and_messages(
    request: JobRequest, job_id: str, express: bool
) -> tuple[list[Image], list[dict[str, Any]]]:
    """The job's images in order, and the messages of those whose store is known: an image
    of a store missing from the store master is failed at once, and never enqueued."""
    stores = find_stores({visit.store_id for visit in request.visits})
    images: list[Image] = []
    messages: list[dict[str, Any]] = []
    for visit in request.visits:
        store = stores.get(visit.store_id)
        for url in visit.image_url:
            image = Image(
                job_id=job_id,
                image_index=len(images),
                store_id=visit.store_id,
                area=store.area_code if store else None,
                url=url,
                visit_time=visit.visit_time,
            )
            if store is None:
                image = replace(image, state=FAILED, error=UNKNOWN_STORE)
            else:
                messages.append(ImageMessage.body(image, request.tenant, express))
            images.append(image)
    return images, messages


def _resume(job: Job, images: list[Image], express: bool) -> str:
    """Finish a job that a failed attempt of the same request began: what that attempt put
    in the manifest stands (a store it did not know has no area there, and its image stays
    failed: the job's counters say so); images it never wrote are as found now. Then every
    image of a known store without a result yet is enqueued (again: a duplicate is filed
    once)."""
    written = {image.image_index: image for image in submitted_images(job.job_id)}
    merged = [
        _as_written(written[i.image_index]) if i.image_index in written else i for i in images
    ]
    recorded = resume_job(job.job_id, merged)
    tenant = job.tenant
    messages = [
        ImageMessage.body(image, tenant, express)
        for image in merged
        if image.state != FAILED and image.image_index not in recorded
    ]
    enqueue_images(messages, express)
    logger.info(
        "job accepted on a resend",
        extra={"job_id": job.job_id, "images": len(merged), "enqueued": len(messages)},
    )
    if not any(image.state != FAILED for image in merged):
        finish_job(job.job_id)
    return job.job_id


def _as_written(image: Image) -> Image:
    """A manifest image as its submit classified it: with no area, its store was unknown."""
    if image.area is None:
        return replace(image, state=FAILED, error=UNKNOWN_STORE)
    return image
