"""How every Lambda handler of the service is entered: one decorator, one convention.

`lambda_entry` validates the function's settings when the handler's module is imported (the
init phase: a missing variable fails the cold start, with its name), and wraps the handler
in the three Powertools decorators every function needs:
- the logger's Lambda context, with the state of the previous invocation cleared, so a key
  appended in one request or batch never labels the next one's lines; for API functions
  the API Gateway request id is the correlation id of every line;
- the tracer's handler segment;
- the metrics flush, with the cold-start metric;
- metering (retail_pulse.metering), enabled here: the tally of what the invocation sent to
  AWS, reset when it starts and published with its metrics when it ends: one EMF blob per
  invocation.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar, cast

from aws_lambda_powertools.logging import correlation_paths

from retail_pulse import metering
from retail_pulse.metering import usage
from retail_pulse.observability import logger, metrics, publish_usage, tracer
from retail_pulse.settings import FunctionSettings, Settings, load_settings

Handler = TypeVar("Handler", bound=Callable[..., Any])


def lambda_entry(
    *, api: bool = False, settings: type[Settings] = FunctionSettings
) -> Callable[[Handler], Handler]:
    """Decorate a module's `lambda_handler`; `api=True` for API Gateway proxy functions."""
    load_settings(settings)
    metering.enable()

    def wrap(handler: Handler) -> Handler:
        @functools.wraps(handler)
        def counted(event: Any, context: Any) -> Any:
            usage.reset()
            try:
                return handler(event, context)
            finally:
                publish_usage()  # inside the metrics flush below, so in the same blob

        wrapped = metrics.log_metrics(capture_cold_start_metric=True)(counted)
        wrapped = tracer.capture_lambda_handler(wrapped)
        wrapped = logger.inject_lambda_context(
            correlation_id_path=correlation_paths.API_GATEWAY_REST if api else None,
            clear_state=True,
        )(wrapped)
        return cast(Handler, wrapped)

    return wrap
