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
