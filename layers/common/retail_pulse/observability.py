"""One logger, one metrics sink and one tracer for the whole service (Powertools)."""

from __future__ import annotations

from aws_lambda_powertools import Logger, Metrics, Tracer

# POWERTOOLS_SERVICE_NAME, POWERTOOLS_METRICS_NAMESPACE, POWERTOOLS_LOG_LEVEL and
# POWERTOOLS_LOGGER_SAMPLE_RATE come from template.yaml's Globals.
logger = Logger()
metrics = Metrics()
tracer = Tracer()
