"""The deployment's secrets, read from Secrets Manager once per container (Powertools
parameters), as bytes for an HMAC key. (Webhooks are signed with each client's own secret
instead: data/webhook_secrets.py.)"""

from __future__ import annotations

from functools import cache

from aws_lambda_powertools.utilities import parameters

from retail_pulse.settings import SettingsError, get_settings


@cache
def page_token_key() -> bytes:
    """The key of the HMAC over visits page tokens (template.yaml's PageTokenSecret)."""
    arn = get_settings().page_token_secret_arn
    if not arn:
        raise SettingsError("PAGE_TOKEN_SECRET_ARN is not set: page tokens cannot be signed")
    # Cached here for the container's life: a token signed now must verify on the next page.
    value = parameters.get_secret(arn, max_age=0)
    return str(value).encode()
