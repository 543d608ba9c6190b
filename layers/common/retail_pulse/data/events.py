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
# "The total entry size must be less than 256KB" (EventBridge User Guide, "Calculating
# PutEvents event entry size"). Checked here, before sending, because no emulator enforces
# it (moto, MiniStack): an event that grows with its job fails in every test and on the
# local stack as it would in AWS, not first in production.
MAX_ENTRIES_BYTES = 256 * 1024
TOO_LARGE = "Total size of the entries in the request is over the limit."


class PublishError(Exception):
    """EventBridge did not take the event (it answered with an entry error)."""


@lru_cache(maxsize=1)
def _events() -> Any:
    return aws.client("events")


def entry_size(entry: dict[str, Any]) -> int:
    """A PutEvents entry's size as EventBridge computes it: Time 14 bytes if present;
    Source, DetailType, Detail and each of Resources their UTF-8 bytes."""
    size = 14 if entry.get("Time") is not None else 0
    for name in ("Source", "DetailType", "Detail"):
        size += len(str(entry.get(name) or "").encode())
    return size + sum(len(str(r).encode()) for r in entry.get("Resources") or ())


def publish_job_finished(event: dict[str, Any]) -> None:
    """One Job Finished event; its `detail` is the job.finished event a webhook receives.
    Raises PublishError, as AWS would refuse it, for an entry of 256 KB or more."""
    entry = {
        "Source": SOURCE,
        "DetailType": JOB_FINISHED,
        "Detail": json.dumps(event),
        "EventBusName": get_settings().event_bus_name,
    }
    if (size := entry_size(entry)) >= MAX_ENTRIES_BYTES:
        raise PublishError(f"ValidationException: {TOO_LARGE} ({size} bytes, 256KB at most)")
    response = _events().put_events(Entries=[entry])
    if response.get("FailedEntryCount"):
        entry = response["Entries"][0]
        raise PublishError(f"{entry.get('ErrorCode')}: {entry.get('ErrorMessage')}")
