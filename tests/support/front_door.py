"""The local stack's API front door on its own, for tests of what API Gateway answers before
any function runs: the template's routes and gateway responses, and a recorder standing in
for the function workers."""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from local_stack.api_gateway import ApiGateway
from local_stack.model import StackModel
from local_stack.runtime import Invocation, LogSink

TEMPLATE_PATH = Path(__file__).resolve().parents[2] / "template.yaml"


class Recorder:
    """Stands in for the function workers: counts the invocations, answers `status_code`."""

    def __init__(self, status_code: int = 200) -> None:
        self.calls = 0
        self.status_code = status_code

    def __call__(self, function: str, event: dict[str, Any]) -> Invocation:
        self.calls += 1
        return Invocation("req-1", True, {"statusCode": self.status_code, "body": "{}"})


def template_model() -> StackModel:
    """template.yaml's stack model, its queues given the URLs the stack would learn."""
    model = StackModel(TEMPLATE_PATH)
    for queue in model.queues:
        model.set_queue_url(queue.logical_id, f"http://127.0.0.1/{queue.name}")
    return model


@contextmanager
def front_door(model: StackModel, recorder: Recorder, **options: Any) -> Iterator[ApiGateway]:
    """The template's routes and gateway responses behind a started front door on
    127.0.0.1; `options` go to ApiGateway (api_keys, throttle)."""
    api = ApiGateway(
        [route for spec in model.functions() for route in spec.api_routes],
        recorder,
        LogSink(io.StringIO()),
        port=0,
        gateway_response_headers=model.gateway_response_headers(),
        gateway_response_bodies=model.gateway_response_bodies(),
        **options,
    )
    api.start()
    try:
        yield api
    finally:
        api.stop()
