"""A job's images as submitted: its manifest, written once at submit in slices of
MANIFEST_SLICE images (ManifestRecord), instead of one `pending` record per image.

Why: a record costs at least one write unit however small, and an image's record is
written again when its result is filed; a slice of 100 compressed images costs a few units
in all (docs/capacity.md). The manifest is read back only where an image with no record yet
matters: the reconciler's requeue, cancel and expiry, and the results export.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Sequence

from retail_pulse.data.models import ManifestRecord
from retail_pulse.data.record_keys import expiry
from retail_pulse.domain import Image

# 100 images of the longest URLs (MAX_URL_LENGTH, 2 KB) are ~220 KB uncompressed: inside
# DynamoDB's 400 KB item whatever a client sends.
MANIFEST_SLICE = 100


def _slice_key(number: int) -> int:
    """Slice `number` (0 for images 0-99) sits at image_index -1, -2, ...: below every image."""
    return -(number + 1)


def _pack(images: Sequence[Image]) -> bytes:
    rows = [[image.store_id, image.area, image.url, image.visit_time] for image in images]
    return zlib.compress(json.dumps(rows, separators=(",", ":")).encode(), 6)


def write_manifest(job_id: str, images: Sequence[Image]) -> None:
    """Write the job's images (consecutive indexes, in order) as its manifest: all of them
    at submit, or a part of them that starts at a slice's first image (an upload's ingest
    writes its job's manifest part by part)."""
    first = images[0].image_index if images else 0
    if first % MANIFEST_SLICE:
        raise ValueError(f"a manifest part starts at a slice boundary, not at image {first}")
    with ManifestRecord.batch_write() as batch:
        for start in range(0, len(images), MANIFEST_SLICE):
            batch.save(
                ManifestRecord(
                    job_id=job_id,
                    image_index=_slice_key((first + start) // MANIFEST_SLICE),
                    images=_pack(images[start : start + MANIFEST_SLICE]),
                    expires_at=expiry(),  # kept as long as the job
                )
            )


def submitted_images(job_id: str, first: int = 0, last: int | None = None) -> list[Image]:
    """The job's images with first <= image_index <= last (all from `first` when last is
    None), as submitted, in order: one strongly consistent Query of the slices they are in.
    An image submit died before writing is missing."""
    lowest = -(10**9) if last is None else _slice_key(last // MANIFEST_SLICE)
    condition = ManifestRecord.image_index.between(lowest, _slice_key(first // MANIFEST_SLICE))
    images: list[Image] = []
    # Slices come highest image_index first from the end of the range: read them in order.
    for record in ManifestRecord.query(
        job_id, range_key_condition=condition, consistent_read=True, scan_index_forward=False
    ):
        for image in unpack_slice(job_id, int(record.image_index), record.images):
            if image.image_index >= first and (last is None or image.image_index <= last):
                images.append(image)
    return images


def unpack_slice(job_id: str, slice_key: int, packed: bytes) -> list[Image]:
    """The images of the slice stored at image_index `slice_key`."""
    start = (-slice_key - 1) * MANIFEST_SLICE
    rows = json.loads(zlib.decompress(packed))
    return [
        Image(job_id, start + offset, store_id, area, url, visit_time)
        for offset, (store_id, area, url, visit_time) in enumerate(rows)
    ]
