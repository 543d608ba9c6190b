"""Each client's webhook signing secret, as Standard Webhooks serialises one: `whsec_` and
the base64 of 32 random bytes (the specification asks for at least 24). A client's
deliveries are signed with its own secret only, so no client holds a key that signs for
another.

- The secret is made on first use (the client asking for it, or its first delivery); two
  first uses at once agree on one (data/webhook_secrets.create writes only where none is).
- A rotation makes a new one. For ROTATION_OVERLAP after it, deliveries carry a signature
  by the new secret and one by the secret it replaced, so a receiver can switch over at its
  own pace; a second rotation within that day drops the oldest.
- Rotations that race (two callers at once, or the same request sent again with its
  Idempotency-Key) make one new secret, and every one of them answers it.
"""

from __future__ import annotations

import base64
import secrets
from datetime import UTC, datetime, timedelta

from retail_pulse.data import STORAGE_ERRORS
from retail_pulse.data import webhook_secrets as store
from retail_pulse.domain import WebhookSecrets
from retail_pulse.errors import StorageInterrupted

PREFIX = "whsec_"
SECRET_BYTES = 32
# How long a rotated-out secret still signs deliveries beside the new one.
ROTATION_OVERLAP = timedelta(hours=24)


def new_secret() -> str:
    """A fresh secret: `whsec_` + base64 of SECRET_BYTES from the OS's CSPRNG."""
    return PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii")


def signing_key(secret: str) -> bytes:
    """The HMAC key a `whsec_` secret stands for: the bytes its base64 encodes."""
    return base64.b64decode(secret.removeprefix(PREFIX), validate=True)


def _stored_or_created(tenant: str) -> WebhookSecrets:
    found = store.read(tenant)
    if found is not None:
        return found
    return store.create(WebhookSecrets(tenant=tenant, current=new_secret()))


def _storage(what: str) -> StorageInterrupted:
    return StorageInterrupted(f"{what} could not be read or written just now; ask again")


def webhook_secret(tenant: str) -> str:
    """The client's current secret, made now if it has none yet."""
    try:
        return _stored_or_created(tenant).current
    except STORAGE_ERRORS as error:
        raise _storage("your webhook secret") from error


def rotate_webhook_secret(
    tenant: str, rotation_key: str | None = None, now: datetime | None = None
) -> str:
    """Replace the client's secret with a new one and return it; the replaced one keeps
    signing for ROTATION_OVERLAP. The same `rotation_key` as the last rotation's answers
    that rotation's secret instead of rotating again."""
    now = now or datetime.now(UTC)
    try:
        seen = store.read(tenant)
        if seen is None:
            # Never used: the first secret is as new as a rotation's, and has no
            # predecessor to keep. A concurrent first use's secret wins (store.create).
            first = WebhookSecrets(tenant=tenant, current=new_secret(), rotation_key=rotation_key)
            return store.create(first).current
        if rotation_key is not None and seen.rotation_key == rotation_key:
            return seen.current
        rotated = WebhookSecrets(
            tenant=tenant,
            current=new_secret(),
            previous=seen.current,
            rotated_at=now,
            rotation_key=rotation_key,
        )
        return store.replace(seen, rotated).current
    except STORAGE_ERRORS as error:
        raise _storage("your webhook secret") from error


def signing_secrets(tenant: str, now: datetime | None = None) -> tuple[str, ...]:
    """The secrets a delivery to this client is signed with at `now`: its current one, and
    the one its last rotation replaced while that is under ROTATION_OVERLAP old. Made now if
    the client has none yet (its first delivery before it asked for one)."""
    now = now or datetime.now(UTC)
    try:
        found = _stored_or_created(tenant)
    except STORAGE_ERRORS as error:
        raise _storage("the client's webhook secret") from error
    if (
        found.previous is not None
        and found.rotated_at is not None
        and now - found.rotated_at < ROTATION_OVERLAP
    ):
        return (found.current, found.previous)
    return (found.current,)
