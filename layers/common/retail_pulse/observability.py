"""One logger, one metrics sink and one tracer for the whole service (Powertools).

Metric names are constants here so that template.yaml's dashboard and alarms can be
checked against what the code emits (tests/unit/test_observability.py).
"""

from __future__ import annotations

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit, single_metric

# POWERTOOLS_SERVICE_NAME, POWERTOOLS_METRICS_NAMESPACE, POWERTOOLS_LOG_LEVEL and
# POWERTOOLS_LOGGER_SAMPLE_RATE come from template.yaml's Globals.
logger = Logger()
metrics = Metrics()
tracer = Tracer()

JOBS_SUBMITTED = "JobsSubmitted"
IMAGES_SUBMITTED = "ImagesSubmitted"
IMAGES_SUCCEEDED = "ImagesSucceeded"
IMAGES_FAILED = "ImagesFailed"  # with the dimension `reason`
IMAGE_RETRIES = "ImageRetries"
DUPLICATE_DELIVERIES = "DuplicateDeliveries"
DOWNLOAD_BYTES = "DownloadBytes"
DOWNLOAD_TIME = "DownloadTime"
MEASURE_TIME = "MeasureTime"
JOB_DURATION = "JobDuration"
QUEUE_AGE = "QueueAge"
JOBS_COMPLETED = "JobsCompleted"
JOBS_FAILED = "JobsFailed"
STUCK_JOBS = "StuckJobs"

# Low-cardinality failure classes: the only values of the `reason` dimension.
FAILURE_REASONS = (
    "download",
    "not_image",
    "too_large",
    "refused",
    "store_unknown",
    "retries_exhausted",
    "dead_letter",
    "deadline",
)


def count(name: str, value: float = 1, unit: MetricUnit = MetricUnit.Count) -> None:
    metrics.add_metric(name=name, unit=unit, value=value)


def count_failures(reason: str, value: int = 1) -> None:
    """ImagesFailed by reason: its own EMF blob, so the `reason` dimension applies to it
    alone and not to every metric of the invocation."""
    with single_metric(
        name=IMAGES_FAILED,
        unit=MetricUnit.Count,
        value=value,
        namespace=metrics.namespace,
        default_dimensions={"service": metrics.service or "retail-pulse"},
    ) as metric:
        metric.add_dimension(name="reason", value=reason)
