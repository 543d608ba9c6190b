"""The only code that talks to EventBridge: every terminal transition of a job is published
to the deployment's bus (EVENT_BUS_NAME, the account's default), so AWS-native consumers
subscribe with a rule on `source: retail-pulse`, `detail-type: Job Finished`."""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

from retail_pulse.data import aws
from retail_pulse.settings import get_settings

SOURCE = "retail-pulse"
JOB_FINISHED = "Job Finished"


class PublishError(Exception):
    """EventBridge did not take the event (it answered with an entry error)."""


@lru_cache(maxsize=1)
def _events() -> Any:
    return aws.client("events")


def publish_job_finished(event: dict[str, Any]) -> None:
    """One Job Finished event; its `detail` is the job.finished event a webhook receives."""
    response = _events().put_events(
        Entries=[
            {
                "Source": SOURCE,
                "DetailType": JOB_FINISHED,
                "Detail": json.dumps(event),
                "EventBusName": get_settings().event_bus_name,
            }
        ]
    )
    if response.get("FailedEntryCount"):
        entry = response["Entries"][0]
        raise PublishError(f"{entry.get('ErrorCode')}: {entry.get('ErrorMessage')}")
