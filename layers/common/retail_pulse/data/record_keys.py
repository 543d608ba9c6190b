"""What the writers of job and image records (data/jobs.py, data/image_records.py) put on
them for the job list and for retention: the TenantJobs key and the DynamoDB TTL. Apart from
data/job_list.py, which reads them back, so that the writers can import these without an
import cycle.

TenantJobs (Jobs table, keys only) has one partition per client and status,
`tenant_status` = "<tenant>#<status>", sorted by created_at. The key is written at submit
and moved in the same update that changes the job's status, so the index never lags a write
that succeeded and never needs a scan.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from pynamodb.expressions.update import Action

from retail_pulse.data.models import JobRecord
from retail_pulse.domain import JobState
from retail_pulse.settings import get_settings


def status_partition(tenant: str, state: JobState) -> str:
    """A client's partition of TenantJobs for one status. A tenant (an API key id, or
    "default") has no "#", so the pair cannot be read two ways."""
    return f"{tenant}#{state}"


def listed_as(tenant: str, state: JobState) -> list[Action]:
    """The update actions that file a job under `state` in its client's list: part of the
    very update that changes its status (mark_finished; later cancel and retry)."""
    return [JobRecord.tenant_status.set(status_partition(tenant, state))]


def expiry() -> datetime:
    """When a job or image record written now expires: RETENTION_DAYS from now. DynamoDB's
    TTL deletes it after that, usually within a few days."""
    return datetime.now(UTC) + timedelta(days=get_settings().retention_days)


# FailedStores' sort key: the store id, escaped so that no character of it is below the
# separator ("\x00" and "\x01" become "\x01\x02" and "\x01\x03"; store ids are any text),
# the separator "\x01\x01", below every escaped character, then the image index, padded.
# Sorted as DynamoDB sorts strings (by UTF-8 bytes, which is code point order, Python's),
# keys run in store id order, a store's own in image order, and a store's keys all come
# before those of any longer id it is a prefix of.
_ESCAPES = str.maketrans({"\x00": "\x01\x02", "\x01": "\x01\x03"})
_STORE_END = "\x01\x01"


def failed_store_key(store_id: str, image_index: int) -> str:
    """An image's place in FailedStores: by store id, then by image index."""
    return f"{store_id.translate(_ESCAPES)}{_STORE_END}{image_index:010d}"
