"""Filing one image's result in a test as the process function would: from the image as
its job's manifest holds it (submit writes no record for an image it enqueues)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from retail_pulse.data.jobs import Filing, OpenFiling, record_outcome
from retail_pulse.data.manifest import submitted_images
from retail_pulse.domain import ImageResult


def file_result(job_id: str, image_index: int, outcome: ImageResult, attempts: int = 1) -> bool:
    """record_outcome for image `image_index` of a submitted job; False for a duplicate."""
    (image,) = submitted_images(job_id, image_index, image_index)
    return record_outcome(image, outcome, attempts)


@dataclass(frozen=True)
class Filed:
    """What `file_outcomes` did with each image, by position in its `filings`."""

    filed: list[int]
    duplicates: list[int]
    unsettled: list[int]
    closed: bool = True


def file_outcomes(job_id: str, filings: Sequence[Filing]) -> Filed:
    """One job's batch filed as the process function files it (an OpenFiling: opened,
    each image written, closed), from one thread."""
    filing = OpenFiling(job_id, [f.image.image_index for f in filings])
    outcomes = [filing.file(f) for f in filings]
    closed = filing.close()
    return Filed(
        filed=[i for i, o in enumerate(outcomes) if o == "filed"],
        duplicates=[i for i, o in enumerate(outcomes) if o == "duplicate"],
        unsettled=[i for i, o in enumerate(outcomes) if o == "unsettled"],
        closed=closed,
    )
