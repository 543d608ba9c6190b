"""A small typed client for the Retail Pulse API, and the `retail-pulse` command built on it.

A package of its own (client/pyproject.toml, `retail-pulse-client`): `pip install ./client`
brings `requests` and Pydantic for the client and Typer and Rich for the command, and
nothing of the service. Only `retail-pulse stores import`, which writes DynamoDB directly,
needs the service package too. None of it is part of the Lambda layer.
"""

from retail_pulse_client.client import (
    ApiError,
    ClientError,
    Conflict,
    ImageResult,
    JobsPage,
    JobStatus,
    JobSummary,
    Progress,
    ResultRow,
    ResultsPage,
    RetailPulseClient,
    ServiceUnavailable,
    StoreError,
    SubmitAccepted,
    UnknownJob,
    VisitResult,
    VisitsPage,
)

__all__ = [
    "ApiError",
    "ClientError",
    "Conflict",
    "ImageResult",
    "JobStatus",
    "JobSummary",
    "JobsPage",
    "Progress",
    "ResultRow",
    "ResultsPage",
    "RetailPulseClient",
    "ServiceUnavailable",
    "StoreError",
    "SubmitAccepted",
    "UnknownJob",
    "VisitResult",
    "VisitsPage",
]
