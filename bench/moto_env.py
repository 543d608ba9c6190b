"""The environment the functions get when a benchmark runs them in-process on moto: the
table, queue and secret names tests/conftest.py gives them too, and quiet Powertools."""

from __future__ import annotations

REGION = "us-east-1"
ACCOUNT_URL = f"https://sqs.{REGION}.amazonaws.com/123456789012"
MOTO_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_REGION": REGION,
    "JOBS_TABLE": "Jobs",
    "IMAGES_TABLE": "Images",
    "STORES_TABLE": "Stores",
    "IDEMPOTENCY_TABLE": "Idempotency",
    "UPLOADS_TABLE": "Uploads",
    "EXPORTS_TABLE": "Exports",
    "UPLOADS_BUCKET": "retail-pulse-uploads",
    "IMAGE_QUEUE_URL": f"{ACCOUNT_URL}/Images",
    "EXPRESS_QUEUE_URL": f"{ACCOUNT_URL}/ExpressImages",
    "INGEST_QUEUE_URL": f"{ACCOUNT_URL}/Ingest",
    "EXPORT_QUEUE_URL": f"{ACCOUNT_URL}/Export",
    "WEBHOOK_QUEUE_URL": f"{ACCOUNT_URL}/Webhooks",
    "WEBHOOK_SECRETS_TABLE": "WebhookSecrets",
    "PAGE_TOKEN_SECRET_ARN": "retail-pulse-PageTokenSecret",
    "POWERTOOLS_SERVICE_NAME": "retail-pulse",
    "POWERTOOLS_METRICS_NAMESPACE": "RetailPulse",
    "POWERTOOLS_TRACE_DISABLED": "true",
    "POWERTOOLS_LOG_LEVEL": "CRITICAL",
}
