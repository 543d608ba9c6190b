"""Every few minutes: jobs that stopped moving are requeued, or failed past their deadline;
lost counts are recounted and owed events published, with backoff (jobs/reconcile.py)."""

from __future__ import annotations

from aws_lambda_powertools.utilities.typing import LambdaContext

from retail_pulse.entry import lambda_entry
from retail_pulse.jobs.reconcile import reconcile


@lambda_entry()
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    report = reconcile(time_left_s=lambda: context.get_remaining_time_in_millis() / 1000)
    return dict(report.__dict__)
