"""GET /api/webhook-secret and POST /api/webhook-secret/rotate: the caller's own webhook
signing secret (retail_pulse.jobs.webhook_secrets), to verify its deliveries with."""

from __future__ import annotations

from typing import Annotated

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.openapi.params import Header
from aws_lambda_powertools.event_handler.openapi.types import OpenAPIResponse
from aws_lambda_powertools.event_handler.router import APIGatewayRouter
from aws_lambda_powertools.utilities.typing import LambdaContext

from retail_pulse.api.models import INTERNAL_ERROR, ErrorBody, WebhookSecretResponse
from retail_pulse.api.resolver import caller_tenant, json_response, make_resolver
from retail_pulse.entry import lambda_entry
from retail_pulse.jobs.webhook_secrets import rotate_webhook_secret, webhook_secret

router = APIGatewayRouter()

_UNAVAILABLE: dict[int, OpenAPIResponse] = {
    503: {
        "description": "The secret could not be read or stored just now; send the same "
        "request again",
        "content": {"application/json": {"model": ErrorBody}},
    }
}


@router.get(
    "/api/webhook-secret",
    summary="The caller's webhook signing secret",
    description=(
        "The secret that signs every webhook delivery of the caller's jobs (Standard "
        "Webhooks: `webhook-signature` is `v1,` and the base64 HMAC-SHA256 of "
        '"<webhook-id>.<webhook-timestamp>.<body>", keyed by the bytes whose base64 follows '
        "`whsec_`). Made on first use; each client has its own, and no other client's "
        "verifies its deliveries."
    ),
    responses={
        200: {
            "description": "The caller's current secret",
            "content": {"application/json": {"model": WebhookSecretResponse}},
        },
        **_UNAVAILABLE,
        **INTERNAL_ERROR,
    },
)
def current() -> Response[WebhookSecretResponse]:
    secret = webhook_secret(caller_tenant(router.current_event))
    return json_response(200, WebhookSecretResponse(secret=secret))


@router.post(
    "/api/webhook-secret/rotate",
    summary="Replace the caller's webhook signing secret",
    description=(
        "Makes a new secret and answers it. For 24 hours after a rotation every delivery "
        "carries two signatures in `webhook-signature`, by the new secret and by the one it "
        "replaced, so a receiver can switch at its own pace; after that, only the new one "
        "signs. Rotations that race make one new secret, and each of them answers it."
    ),
    responses={
        200: {
            "description": "The caller's new secret",
            "content": {"application/json": {"model": WebhookSecretResponse}},
        },
        400: {
            "description": "The Idempotency-Key header is empty or over 128 characters",
            "content": {"application/json": {"model": ErrorBody}},
        },
        **_UNAVAILABLE,
        **INTERNAL_ERROR,
    },
)
def rotate(
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            min_length=1,
            max_length=128,
            description="Send the same key again (a retry whose answer was lost) to get "
            "the same new secret instead of rotating twice, which would end the old "
            "secret's 24 hours at once",
        ),
    ] = None,
) -> Response[WebhookSecretResponse]:
    secret = rotate_webhook_secret(caller_tenant(router.current_event), idempotency_key)
    return json_response(200, WebhookSecretResponse(secret=secret))


app = make_resolver(router)


@lambda_entry(api=True)
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    return app.resolve(event, context)
