"""Every few minutes: jobs that stopped moving are requeued, or failed past their deadline
(jobs/reconcile.py)."""

from __future__ import annotations

from aws_lambda_powertools.utilities.typing import LambdaContext

from retail_pulse.jobs.reconcile import reconcile
from retail_pulse.observability import logger, metrics, tracer


# clear_state: no key of an earlier invocation labels this one's lines.
@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    report = reconcile(time_left_s=lambda: context.get_remaining_time_in_millis() / 1000)
    return dict(report.__dict__)
