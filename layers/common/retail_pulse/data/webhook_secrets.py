"""Each client's webhook signing secrets: one item per tenant in WebhookSecretsTable, which
DynamoDB keeps encrypted at rest under a KMS key (template.yaml's SSESpecification), so the
secrets are never in a template, an environment variable or a log line.

Every write is conditional, so callers racing on the same client agree on one answer:
`create` writes only where there is no item yet, `replace` only over the secret its caller
read. Neither logs, and WebhookSecrets' repr leaves the values out.
"""

from __future__ import annotations

from pynamodb.exceptions import PutError
from pynamodb.expressions.update import Action

from retail_pulse.data.models import WebhookSecretRecord
from retail_pulse.data.transactions import update_if
from retail_pulse.domain import WebhookSecrets


def _secrets(record: WebhookSecretRecord) -> WebhookSecrets:
    return WebhookSecrets(
        tenant=record.tenant,
        current=record.secret,
        previous=record.previous_secret,
        rotated_at=record.rotated_at,
        rotation_key=record.rotation_key,
    )


def read(tenant: str) -> WebhookSecrets | None:
    """The client's secrets as last written (a strongly consistent read: a rotation just
    answered is what the next delivery signs with), or None before its first use."""
    try:
        return _secrets(WebhookSecretRecord.get(tenant, consistent_read=True))
    except WebhookSecretRecord.DoesNotExist:
        return None


def create(secrets: WebhookSecrets) -> WebhookSecrets:
    """Store a client's first secrets unless it has some already; return what is stored
    (the ones a concurrent first use wrote, when it won)."""
    record = WebhookSecretRecord(
        secrets.tenant,
        secret=secrets.current,
        previous_secret=secrets.previous,
        rotated_at=secrets.rotated_at,
        rotation_key=secrets.rotation_key,
    )
    try:
        record.save(condition=WebhookSecretRecord.tenant.does_not_exist())
    except PutError as error:
        if error.cause_response_code != "ConditionalCheckFailedException":
            raise
        stored = read(secrets.tenant)
        if stored is None:  # written and deleted in between: nothing deletes these items
            raise
        return stored
    return secrets


def replace(seen: WebhookSecrets, new: WebhookSecrets) -> WebhookSecrets:
    """Write `new` over `seen` if the item still holds the secret `seen` has; return what
    is stored (the secrets of whoever changed them first, when someone did)."""
    record = WebhookSecretRecord(seen.tenant)
    actions: list[Action] = [
        WebhookSecretRecord.secret.set(new.current),
        (
            WebhookSecretRecord.previous_secret.set(new.previous)
            if new.previous is not None
            else WebhookSecretRecord.previous_secret.remove()
        ),
        (
            WebhookSecretRecord.rotated_at.set(new.rotated_at)
            if new.rotated_at is not None
            else WebhookSecretRecord.rotated_at.remove()
        ),
        (
            WebhookSecretRecord.rotation_key.set(new.rotation_key)
            if new.rotation_key is not None
            else WebhookSecretRecord.rotation_key.remove()
        ),
    ]
    if update_if(record, actions, WebhookSecretRecord.secret == seen.current):
        return new
    stored = read(seen.tenant)
    if stored is None:
        raise LookupError(f"the webhook secrets of {seen.tenant!r} are gone")
    return stored
