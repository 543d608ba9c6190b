"""Accept a job: record it and its images, then fan out one queue message per image."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime

from retail_pulse.api.models import SubmitRequest
from retail_pulse.data.jobs import create_job, mark_finished
from retail_pulse.data.queue import enqueue_images
from retail_pulse.data.stores import find_stores
from retail_pulse.domain import FAILED, Image, Job
from retail_pulse.jobs.messages import ImageMessage
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


def submit_job(request: SubmitRequest) -> str:
    """Record the job and enqueue its images; returns the job id once every message is queued.

    Images of stores missing from the store master are recorded failed at once and never
    enqueued, so the job can still end (as `failed`) without them.
    """
    job_id = new_job_id()
    # Every later line of this request names the job (the handler clears keys per request).
    logger.append_keys(job_id=job_id)
    tracer.put_annotation(key="job_id", value=job_id)
    stores = find_stores({visit.store_id for visit in request.visits})
    images: list[Image] = []
    messages: list[dict] = []
    for visit in request.visits:
        store = stores.get(visit.store_id)
        for url in visit.image_url:
            index = len(images)
            image = Image(
                job_id=job_id,
                image_index=index,
                store_id=visit.store_id,
                area=store.area_code if store else None,
                url=url,
                visit_time=visit.visit_time,
            )
            if store is None:
                image = replace(image, state=FAILED, error=UNKNOWN_STORE)
            else:
                messages.append(
                    ImageMessage(
                        job_id=job_id,
                        image_index=index,
                        url=url,
                        store_id=visit.store_id,
                        area=store.area_code,
                    ).model_dump()
                )
            images.append(image)

    unknown = len(images) - len(messages)
    job = Job(
        job_id=job_id,
        total=len(images),
        succeeded=0,
        failed=unknown,
        visit_count=len(request.visits),
        created_at=datetime.now(UTC),
    )
    create_job(job, images)
    enqueue_images(messages)
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
        mark_finished(job_id)
    return job_id
