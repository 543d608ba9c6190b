"""Read an upload job's body into its images (the ingest function's use case)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class IngestMessage(BaseModel):
    """One message of IngestQueue: read (or go on reading) this job's upload."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    job_id: str
    tenant: str
