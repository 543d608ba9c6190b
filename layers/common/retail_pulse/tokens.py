"""Page tokens: opaque to clients, signed by the deployment, bound to the client.

A token is base64url(JSON payload) + "." + base64url(HMAC-SHA256), keyed by the deployment's
page token secret (data/secrets.py) over the tenant and the payload: a token altered, or
replayed by another client, is refused before anything reads it. Each route puts its own
query and position in the payload and checks them after `verify`; `kind` names the route,
so a token of one route is no token of another (the visits route predates it and has none).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from typing import Any

from retail_pulse.errors import InvalidRequest

VERSION = 1
MAX_TOKEN_LENGTH = 4096
_SHAPE = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")

BAD_TOKEN = (
    "the next token is not valid: pass back the 'next' value of the previous response unchanged"
)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(key: bytes, tenant: str, raw: bytes) -> bytes:
    """Keyed by the deployment's secret, over the client and the payload."""
    return hmac.new(key, tenant.encode() + b"\n" + raw, hashlib.sha256).digest()


def sign(fields: dict[str, Any], tenant: str, key: bytes, kind: str | None = None) -> str:
    """A token of `fields` for `tenant`; the version (and `kind`) come first."""
    payload: dict[str, Any] = {"v": VERSION, **({"r": kind} if kind else {}), **fields}
    raw = json.dumps(payload, separators=(",", ":")).encode()
    return f"{_b64(raw)}.{_b64(_mac(key, tenant, raw))}"


def verify(token: str, tenant: str, key: bytes, kind: str | None = None) -> dict[str, Any]:
    """The payload of a token this deployment signed for `tenant` and `kind`, of this
    version; raises InvalidRequest(BAD_TOKEN) for anything else, whatever the bytes."""
    token = token.strip()
    if not token or len(token) > MAX_TOKEN_LENGTH or not _SHAPE.fullmatch(token):
        raise InvalidRequest(BAD_TOKEN)
    body, signature = token.split(".")
    try:
        raw, mac = _unb64(body), _unb64(signature)
    except (binascii.Error, ValueError) as error:
        raise InvalidRequest(BAD_TOKEN) from error
    if not hmac.compare_digest(mac, _mac(key, tenant, raw)):
        raise InvalidRequest(BAD_TOKEN)
    try:
        # UTF-8 explicitly: json.loads of bytes would also read UTF-16 and UTF-32.
        payload = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError) as error:
        # ValueError covers bad UTF-8, bad JSON and numbers over the digit limit;
        # RecursionError a token of nested brackets (1,500 "[" fit in 4,096 characters).
        raise InvalidRequest(BAD_TOKEN) from error
    # `type(...) is int`: True == 1, and a forged {"v": true} is no token of ours.
    if not isinstance(payload, dict) or type(payload.get("v")) is not int:
        raise InvalidRequest(BAD_TOKEN)
    if payload["v"] != VERSION or payload.get("r") != kind:
        raise InvalidRequest(BAD_TOKEN)
    return payload
