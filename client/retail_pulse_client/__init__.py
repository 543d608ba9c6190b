"""A small typed client for the Retail Pulse API, and the `retail-pulse` command built on it.

The client needs only `requests` and Pydantic; the command adds Typer and Rich (the `cli`
extra). Neither is part of the Lambda layer.
"""

from retail_pulse_client.client import (
    ApiError,
    ClientError,
    ImageResult,
    JobStatus,
    Progress,
    RetailPulseClient,
    ServiceUnavailable,
    StoreError,
    UnknownJob,
    VisitResult,
)

__all__ = [
    "ApiError",
    "ClientError",
    "ImageResult",
    "JobStatus",
    "Progress",
    "RetailPulseClient",
    "ServiceUnavailable",
    "StoreError",
    "UnknownJob",
    "VisitResult",
]
