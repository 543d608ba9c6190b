"""One logger, one metrics sink and one tracer for the whole service (Powertools).

Metric names are constants here so that template.yaml's dashboard and alarms can be
checked against what the code emits (tests/unit/test_observability_template.py).
"""

from __future__ import annotations

import json
import re
import sys
import threading
from urllib.parse import urlsplit

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.logging.formatter import LambdaPowertoolsFormatter
from aws_lambda_powertools.logging.types import LogRecord
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.metrics.base import SingleMetric

from retail_pulse.metering import usage

# A URL as it appears in a JSON log line: it ends at a quote, a space or a backslash, except
# the JSON escapes a URL's text may carry (\u00e9, \/). A URL redacted already keeps its
# "?<redacted>", so redacting twice changes nothing.
_URL_IN_JSON = re.compile(
    r"""https?://(?:[^\s"'<>\\]|\\u[0-9a-fA-F]{4}|\\/)+(?:<redacted>)?""", re.IGNORECASE
)


def redact_url(url: str) -> str:
    """`url` fit for a log line: no userinfo and no query string (a presigned URL's query is
    a credential), no fragment. Scheme, host, port and path stay, to debug by."""
    try:
        parts = urlsplit(url)
        host = parts.netloc.rpartition("@")[2]
    except ValueError:
        return "<unparseable URL>"
    query = "?<redacted>" if parts.query else ""
    return f"{parts.scheme}://{host}{parts.path}{query}"


def redact_urls(text: str) -> str:
    """Every http(s) URL in `text` redacted as by redact_url."""
    return _URL_IN_JSON.sub(lambda match: redact_url(match.group(0)), text)


class _RedactingFormatter(LambdaPowertoolsFormatter):
    """Powertools' JSON lines, with every URL redacted on the way out: whatever a message,
    an extra key or a traceback quotes (an image URL inside an error, a refused redirect),
    no credential reaches CloudWatch. Clients still get their own URL in the job's error."""

    def serialize(self, log: LogRecord) -> str:
        return redact_urls(super().serialize(log))


# POWERTOOLS_SERVICE_NAME, POWERTOOLS_METRICS_NAMESPACE, POWERTOOLS_LOG_LEVEL and
# POWERTOOLS_LOGGER_SAMPLE_RATE come from template.yaml's Globals.
logger = Logger(logger_formatter=_RedactingFormatter())
metrics = Metrics()
tracer = Tracer()
# The process function records metrics from worker threads; Powertools' add_metric is a
# read-modify-write of a shared dict, so two threads adding a new name at once lose one.
_metrics_lock = threading.Lock()

JOBS_SUBMITTED = "JobsSubmitted"
IMAGES_SUBMITTED = "ImagesSubmitted"
IMAGES_SUCCEEDED = "ImagesSucceeded"
IMAGES_CANCELLED = "ImagesCancelled"  # of a cancelled job, filed without a download
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
IMAGES_REQUEUED = "ImagesRequeued"
JOBS_EXPIRED = "JobsExpired"
# Terminal jobs whose event the reconciler failed to publish RECONCILE_ALARM_AFTER times or
# more (EventBridge refusing it, or down): each pass reports how many it saw.
UNANNOUNCED_JOBS = "UnannouncedJobs"
# Jobs whose counters the reconciler set from their records (a filing's count was lost).
JOBS_RECOUNTED = "JobsRecounted"
DEAD_LETTERS_UNREADABLE = "DeadLettersUnreadable"
# Webhook deliveries (jobs/webhooks.py): a 2xx; an attempt that will be retried; a delivery
# ended by the receiver's answer (3xx, 4xx) or refused before sending; one given up on
# after 24 h of retries and moved to WebhookDeadLetterQueue.
WEBHOOKS_DELIVERED = "WebhooksDelivered"
WEBHOOK_RETRIES = "WebhookRetries"
WEBHOOKS_REJECTED = "WebhooksRejected"
WEBHOOKS_ABANDONED = "WebhooksAbandoned"
# Emitted by Powertools itself (capture_cold_start_metric), with a `function_name` dimension.
COLD_START = "ColdStart"
# What each invocation sent to AWS, measured by its clients (retail_pulse.metering): the
# drivers of the bill, per function (docs/capacity.md prices them).
DYNAMODB_WRITE_UNITS = "DynamoDBWriteUnits"
DYNAMODB_READ_UNITS = "DynamoDBReadUnits"
DYNAMODB_REQUESTS = "DynamoDBRequests"
SQS_REQUESTS = "SQSRequests"

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
    "internal",
)


def count(name: str, value: float = 1, unit: MetricUnit = MetricUnit.Count) -> None:
    with _metrics_lock:
        metrics.add_metric(name=name, unit=unit, value=value)


def count_failures(reason: str, value: int = 1) -> None:
    """ImagesFailed by reason: its own EMF blob, so the `reason` dimension applies to it
    alone and not to every metric of the invocation."""
    if value <= 0:
        return  # a zero would only add a blob per invocation to the logs
    metric = SingleMetric(namespace=metrics.namespace)
    metric.add_metric(name=IMAGES_FAILED, unit=MetricUnit.Count, value=value)
    metric.add_dimension(name="service", value=metrics.service or "retail-pulse")
    metric.add_dimension(name="reason", value=reason)
    blob = json.dumps(metric.serialize_metric_set(), separators=(",", ":"))
    # One write, where single_metric's print() makes two: a log line from another thread
    # could land between the blob and its newline, and CloudWatch would drop the metric.
    sys.stdout.write(blob + "\n")


def publish_usage() -> None:
    """The invocation's AWS requests and capacity units: totals as metrics, the breakdown
    by operation, table and index as the blob's metadata (searchable in Logs Insights).
    Nothing when the invocation sent nothing."""
    summary = usage.summary()
    if not summary["requests"]:
        return
    count(DYNAMODB_WRITE_UNITS, summary["dynamodb_wru"])
    count(DYNAMODB_READ_UNITS, summary["dynamodb_rru"])
    count(DYNAMODB_REQUESTS, summary["dynamodb_requests"])
    count(SQS_REQUESTS, summary["sqs_requests"])
    with _metrics_lock:
        metrics.add_metadata(key="aws_usage", value=summary)
