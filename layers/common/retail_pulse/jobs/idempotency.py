"""Submit with an `Idempotency-Key`: a client that lost the answer (timeout, dropped
connection, 5xx) sends the same request again and gets the same job, not a second one.

Declared with Powertools idempotency on a DynamoDB table (IDEMPOTENCY_TABLE). The key is
the header alone; the body's hash is stored with it and checked, so one key reused for a
different job is refused (409, "use a new key") rather than answered with the first job's id.
(409, not 422: Powertools reserves 422 for request validation in the OpenAPI document.)
A repeat that arrives while the first request is still running gets 409 "retry shortly"
instead of waiting: API Gateway gives a request 29 s, and a large submit can take most of it.
A submit that raises deletes its record (Powertools does), so a retry with the same key
runs again; whatever the failed attempt had written is finished by the reconciler.
"""

from __future__ import annotations

from typing import Any

import boto3
from aws_lambda_powertools.utilities.idempotency import (
    DynamoDBPersistenceLayer,
    IdempotencyConfig,
    idempotent_function,
)
from aws_lambda_powertools.utilities.idempotency.exceptions import (
    IdempotencyAlreadyInProgressError,
    IdempotencyPersistenceLayerError,
    IdempotencyValidationError,
)
from botocore.exceptions import BotoCoreError, ClientError
from pydantic import BaseModel
from pynamodb.exceptions import PynamoDBException

from retail_pulse.api.errors import BadRequest, Conflict
from retail_pulse.api.models import SubmitRequest
from retail_pulse.data.queue import EnqueueError
from retail_pulse.jobs.submit import submit_job
from retail_pulse.settings import get_settings

HEADER = "Idempotency-Key"
# Long enough for a UUID or a client's own order reference, short enough for a log line.
MAX_KEY_LENGTH = 255
# The SPEC's promise: the same request within 24 h gets the same job.
REMEMBER_S = 24 * 3600


class SubmitInterrupted(Exception):
    """Storage failed part-way through a submit: a 503 the client may retry as it is."""


class Submission(BaseModel):
    """What is remembered under a key: the key, and the request whose hash is checked."""

    idempotency_key: str
    request: SubmitRequest


def _persistence_layer() -> DynamoDBPersistenceLayer:
    settings = get_settings()
    # The endpoint is explicit, as for every other client, so moto and the local stack work.
    client = boto3.client(
        "dynamodb", region_name=settings.region, endpoint_url=settings.endpoint_url
    )
    return DynamoDBPersistenceLayer(table_name=settings.idempotency_table, boto3_client=client)


persistence = _persistence_layer()
config = IdempotencyConfig(
    event_key_jmespath="idempotency_key",
    payload_validation_jmespath="request",
    expires_after_seconds=REMEMBER_S,
    raise_on_no_idempotency_key=True,
)


def remember_invocation(context: Any) -> None:
    """Let an in-progress record expire with the invocation that wrote it, so a submit
    killed by its timeout does not block its key for 24 hours."""
    config.register_lambda_context(context)


@idempotent_function(
    data_keyword_argument="submission", persistence_store=persistence, config=config
)
def _submit_once(submission: Submission) -> str:
    return submit_job(submission.request)


def accept_job(request: SubmitRequest, idempotency_key: str | None) -> str:
    """Submit the job, once per idempotency key when the client sent one."""
    try:
        if idempotency_key is None:
            return submit_job(request)
        key = _checked(idempotency_key)
        return _submit_once(submission=Submission(idempotency_key=key, request=request))
    except IdempotencyAlreadyInProgressError as error:
        raise Conflict(
            f"a request with this {HEADER} is still being processed; "
            "retry in a few seconds to get its job_id"
        ) from error
    except IdempotencyValidationError as error:
        raise Conflict(
            f"this {HEADER} was already used for a different request in the last 24 hours; "
            "use a new key for a new job"
        ) from error
    except (
        EnqueueError,
        PynamoDBException,
        ClientError,
        BotoCoreError,
        IdempotencyPersistenceLayerError,
    ) as error:
        raise SubmitInterrupted(
            "the job could not be recorded completely; send the same request again"
            + (f" with the same {HEADER}" if idempotency_key is not None else "")
        ) from error


def _checked(key: str) -> str:
    key = key.strip()
    if not key or len(key) > MAX_KEY_LENGTH or not key.isprintable():
        raise BadRequest(f"the {HEADER} header must be 1 to {MAX_KEY_LENGTH} printable characters")
    return key
