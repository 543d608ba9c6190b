"""The body of one image-queue message: everything the process function needs to measure
one image and write its record (which submit no longer writes), so it reads nothing of the
image before filing it."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from retail_pulse.domain import DEFAULT_TENANT, Image
from retail_pulse.settings import get_settings


class ImageMessage(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    job_id: str
    image_index: int
    url: str
    store_id: str
    area: str | None = None
    # Messages sent before tenants existed carry none: they are the default tenant's.
    tenant: str = DEFAULT_TENANT
    # On the express lane's queue (a small job): a retry is pushed out on the same queue.
    express: bool = False
    # RFC 3339, UTC. Absent from messages sent while submit wrote a `pending` record per
    # image: that record has it.
    visit_time: str = ""
    # The image's attempt number should this delivery's download start: the downloads of it
    # that started before, plus one. A retry sends the message again with the next number,
    # a record given back unstarted with the same one (jobs/process.py). None in messages
    # sent before they carried it: their SQS receive count stood for it then, and still does.
    attempt: int | None = Field(None, ge=1)

    @classmethod
    def body(cls, image: Image, tenant: str, express: bool) -> dict[str, Any]:
        """The message of one image of `tenant`'s job, as enqueue_images sends it."""
        return cls(
            job_id=image.job_id,
            image_index=image.image_index,
            url=image.url,
            store_id=image.store_id,
            area=image.area,
            tenant=tenant,
            express=express,
            visit_time=image.visit_time,
            attempt=1,
        ).model_dump()

    def again(self, attempt: int) -> dict[str, Any]:
        """This message as it is sent again, as attempt number `attempt`."""
        return self.model_copy(update={"attempt": attempt}).model_dump()

    def image(self) -> Image:
        """The image this message carries, as its record is written."""
        return Image(
            job_id=self.job_id,
            image_index=self.image_index,
            store_id=self.store_id,
            area=self.area,
            url=self.url,
            visit_time=self.visit_time,
        )


class WebhookDelivery(BaseModel):
    """One job event on its way to a client's callback_url. `payload` is the exact body
    POSTed (a JSON text), the same on every attempt; the signature is made per attempt."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    event_id: str
    job_id: str
    tenant: str
    callback_url: str
    payload: str


def is_express(images: int) -> bool:
    """Whether a job of this many images takes the express lane (EXPRESS_MAX_IMAGES): its
    messages go to ExpressImageQueue, which no large job's backlog shares."""
    return images <= get_settings().express_max_images
