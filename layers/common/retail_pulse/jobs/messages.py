"""The body of one image-queue message: everything the process function needs to measure
one image and file its result, so it reads nothing before its one transaction."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class ImageMessage(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    job_id: str
    image_index: int
    url: str
    store_id: str
    area: str | None = None
