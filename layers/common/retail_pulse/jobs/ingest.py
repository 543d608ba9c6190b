"""Read an upload job's body into its images (the ingest function's use case).

The body is streamed from S3 and parsed one visit at a time (api/upload_body.py), never
whole in memory, in two passes over the same object version:

1. validate: every rule of the submit body is checked and nothing is written but the
   progress (`total` = images read so far, what status shows while `ingesting`). A body that
   breaks a rule fails the job with one error that says what and where; no image of it is
   enqueued, so none is processed.
2. enqueue: the images are written to the job's manifest and sent to the image queue in
   chunks of CHUNK; after each chunk the checkpoint (`ingest_enqueued`) moves, conditional
   on this invocation's lease and on the checkpoint being where the chunk began.

An invocation short of time gives its lease up and sends the ingest message again; the next
one goes on from the checkpoint (the first pass starts over: it writes nothing). One that
dies is replaced when its message comes back (IngestQueue's visibility timeout) and its
lease has run out. Only the chunk a dead invocation was sending can be sent twice, and the
process function files a duplicate message once; no image is skipped.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, BinaryIO, Literal, Protocol

from pydantic import BaseModel, ConfigDict

from retail_pulse.data import ingest as checkpoint
from retail_pulse.data.queue import enqueue_images
from retail_pulse.data.stores import find_stores
from retail_pulse.data.uploads import UploadChanged, get_upload, read_upload
from retail_pulse.domain import FAILED, Image, VisitRequest
from retail_pulse.errors import UploadInvalid
from retail_pulse.jobs.finish import finish_job
from retail_pulse.jobs.messages import ImageMessage, is_express
from retail_pulse.jobs.submit import UNKNOWN_STORE
from retail_pulse.observability import logger
from retail_pulse.settings import get_settings

# Images per manifest write, enqueue and checkpoint: a multiple of MANIFEST_SLICE (100).
CHUNK = 1_000
# The first pass records its progress (status's `total`) every this many images.
PROGRESS_EVERY = 5_000
# Invocations that took the lease without moving the checkpoint before the job fails: an
# upload that kills every invocation (out of memory, say) must not be retried for ever.
MAX_ATTEMPTS = 3


class IngestMessage(BaseModel):
    """One message of IngestQueue: read (or go on reading) this job's upload; or, of kind
    "retry", go on reopening its retry's pages (jobs/retry.py); or, of kind "summary", go
    on summing up its failures (jobs/summary.py)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    job_id: str
    tenant: str
    kind: Literal["ingest", "retry", "summary"] = "ingest"


class JobBody(Protocol):
    """One pass over an uploaded body (api/upload_body.UploadedBody)."""

    callback_url: str | None
    visit_count: int

    def visits(self) -> Iterator[VisitRequest]: ...


class OutOfTime(Exception):
    """Less than INGEST_RESERVE_S of the invocation is left: hand over to a new one."""


class Ingest:
    """One invocation's work on one job's ingest, holding its lease as `owner`."""

    def __init__(
        self,
        message: IngestMessage,
        owner: str,
        read_body: Callable[[BinaryIO], JobBody],
        time_left_s: Callable[[], float],
    ) -> None:
        self.message = message
        self.job_id = message.job_id
        self.owner = owner
        self.read_body = read_body
        self.time_left_s = time_left_s
        self.reserve_s = get_settings().ingest_reserve_s
        self.enqueued = 0  # images written and enqueued, as the checkpoint has it
        self.sent = 0  # images whose messages are out (ahead of the checkpoint by a chunk)

    def lease_s(self) -> float:
        return self.time_left_s() + 60.0

    def check_time(self) -> None:
        if self.time_left_s() < self.reserve_s:
            raise OutOfTime

    def run(self) -> None:
        state = checkpoint.acquire(self.job_id, self.owner, datetime.now(UTC), self.lease_s())
        if state is None:
            return  # another invocation holds it, or the job is no longer being ingested
        logger.append_keys(job_id=self.job_id)
        self.enqueued = self.sent = state.enqueued
        if state.job.cancelled_at is not None:
            self._stop_cancelled()
            return
        if state.attempts > MAX_ATTEMPTS:
            self._fail(f"the upload could not be read: {MAX_ATTEMPTS} attempts died on it")
            return
        upload = get_upload(state.job.upload_id or "")
        if upload is None or upload.job_id != self.job_id:
            self._fail("the upload is gone (uploads are kept a day): upload the job again")
            return
        try:
            if state.phase == checkpoint.VALIDATE:
                with contextlib.suppress(checkpoint.LeaseLost):  # begun by an earlier holder
                    checkpoint.start_ingest_phase(self.job_id, self.owner)
                total = self._validate(read_upload(upload))
                if total is None:
                    return
            else:
                total = state.job.total
            self._enqueue(read_upload(upload), total)
        except OutOfTime:
            self._hand_over()
        except UploadChanged:
            self._fail("the uploaded object changed or vanished while it was read")
        except checkpoint.LeaseLost:
            job = checkpoint.ingest_job(self.job_id)
            if job is not None and job.cancelled_at is not None and job.ingesting:
                self._stop_cancelled()
            else:
                logger.warning("ingest lease lost; another invocation goes on")

    def _validate(self, stream: BinaryIO) -> int | None:
        """The first pass: the job's image count, or None when the body failed it."""
        body = self.read_body(stream)
        images = 0
        noted = 0
        try:
            for visit in body.visits():
                images += len(visit.image_url)
                if images - noted >= PROGRESS_EVERY:
                    self.check_time()
                    checkpoint.note_read(
                        self.job_id, self.owner, images, datetime.now(UTC), self.lease_s()
                    )
                    noted = images
        except UploadInvalid as error:
            self._fail(str(error))
            return None
        checkpoint.validated(
            self.job_id,
            self.owner,
            images,
            body.visit_count,
            body.callback_url,
            datetime.now(UTC),
            self.lease_s(),
        )
        logger.info("upload validated", extra={"images": images, "visits": body.visit_count})
        return images

    def _enqueue(self, stream: BinaryIO, total: int) -> None:
        """The second pass, from the checkpoint on (the images before it are done)."""
        express = is_express(total)
        chunk: list[tuple[int, str, str, str]] = []
        index = 0
        for visit in self.read_body(stream).visits():
            for url in visit.image_url:
                if index >= self.enqueued:
                    chunk.append((index, visit.store_id, url, visit.visit_time))
                index += 1
                if len(chunk) == CHUNK:
                    self.check_time()
                    self._send(chunk, express)
                    chunk = []
        if chunk:
            self._send(chunk, express)
        checkpoint.finish(self.job_id, self.owner)
        logger.info("upload ingested", extra={"images": self.enqueued})
        finish_job(self.job_id)  # every image may have been done (or failed) already

    def _send(self, chunk: list[tuple[int, str, str, str]], express: bool) -> None:
        """Write and enqueue one chunk, then move the checkpoint past it."""
        start = self.enqueued
        stores = find_stores({store_id for _, store_id, _, _ in chunk})
        images: list[Image] = []
        messages: list[dict[str, Any]] = []
        for index, store_id, url, visit_time in chunk:
            store = stores.get(store_id)
            image = Image(
                job_id=self.job_id,
                image_index=index,
                store_id=store_id,
                area=store.area_code if store else None,
                url=url,
                visit_time=visit_time,
            )
            if store is None:
                image = replace(image, state=FAILED, error=UNKNOWN_STORE)
            else:
                messages.append(ImageMessage.body(image, self.message.tenant, express))
            images.append(image)
        checkpoint.write_chunk(self.job_id, images)
        enqueue_images(messages, express)
        end = start + len(images)
        self.sent = end
        checkpoint.chunk_done(
            self.job_id,
            self.owner,
            start,
            end,
            len(images) - len(messages),
            datetime.now(UTC),
            self.lease_s(),
        )
        self.enqueued = end

    def _hand_over(self) -> None:
        checkpoint.release(self.job_id, self.owner)
        checkpoint.enqueue_ingest(self.message.model_dump())
        logger.info("ingest handed over to a new invocation")

    def _stop_cancelled(self) -> None:
        """The client cancelled the job while it was read: it keeps the images enqueued so
        far (filed `cancelled` as their messages come), and no more is read."""
        with contextlib.suppress(checkpoint.LeaseLost):
            checkpoint.stop_cancelled(self.job_id, self.owner, self.sent)
            logger.info("ingest stopped: the job was cancelled", extra={"images": self.sent})
        finish_job(self.job_id)

    def _fail(self, error: str) -> None:
        """The job ends with `error` and the images enqueued so far (none when the first
        pass refused the body: nothing of it is processed)."""
        checkpoint.fail(self.job_id, self.owner, error, self.enqueued)
        logger.info("upload refused", extra={"error": error})
        finish_job(self.job_id)


def ingest_upload(
    message: IngestMessage,
    owner: str,
    read_body: Callable[[BinaryIO], JobBody],
    time_left_s: Callable[[], float],
) -> None:
    """Read the job's upload, or go on reading it, as far as this invocation's time goes."""
    Ingest(message, owner, read_body, time_left_s).run()
