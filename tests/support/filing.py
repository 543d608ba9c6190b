"""Filing one image's result in a test as the process function would: from the image as
its job's manifest holds it (submit writes no record for an image it enqueues)."""

from __future__ import annotations

from retail_pulse.data.image_records import record_outcome
from retail_pulse.data.manifest import submitted_images
from retail_pulse.domain import ImageResult


def file_result(job_id: str, image_index: int, outcome: ImageResult, attempts: int = 1) -> bool:
    """record_outcome for image `image_index` of a submitted job; False for a duplicate."""
    (image,) = submitted_images(job_id, image_index, image_index)
    return record_outcome(image, outcome, attempts)
