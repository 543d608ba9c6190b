"""One-off, run once after deploying the paged failure summary (jobs/summary.py): give the
failed image records written before it their place in the FailedStores index.

A failed record written before carries `failed_job_id` (so it is in FailedImages) but no
`failed_store_key`, so FailedStores does not hold it: a large failed job with such records
(one that was running at the deploy, or is retried after it with some images still failed
from before) would read fewer failures there than it counts, and its summary would begin
again until the reconciler's tries, never ending. This gives each such record the key its
filing writes now.

A Scan of the Images table, filtered to those records: an operator's command, never a
function's path. Every write is conditional (still failed, still without the key), so it is
safe to run again, or while the service runs; a summary that began again meanwhile ends at
its next try (the reconciler sends it once it stands still).

    IMAGES_TABLE=<name> python -m retail_pulse_admin.backfill_failed_stores
"""

from __future__ import annotations

import sys

from retail_pulse.data.models import FAILED, ImageRecord
from retail_pulse.data.record_keys import failed_store_key
from retail_pulse.data.transactions import update_if


def backfill_failed_stores() -> int:
    """Put every failed record written before FailedStores in it; how many it wrote."""
    missing = ImageRecord.failed_job_id.exists() & ImageRecord.failed_store_key.does_not_exist()
    written = 0
    for record in ImageRecord.scan(
        filter_condition=missing,
        attributes_to_get=["job_id", "image_index", "store_id"],
    ):
        written += update_if(
            ImageRecord(job_id=record.job_id, image_index=record.image_index),
            [
                ImageRecord.failed_store_key.set(
                    failed_store_key(record.store_id, int(record.image_index))
                )
            ],
            (ImageRecord.state == FAILED)
            & ImageRecord.failed_job_id.exists()
            & ImageRecord.failed_store_key.does_not_exist(),
        )
    return written


def main() -> int:
    written = backfill_failed_stores()
    print(f"{written} failed images put in FailedStores", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
