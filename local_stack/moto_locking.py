"""Make moto's DynamoDB atomic under concurrent requests.

moto's DynamoDB backend is plain Python without locks: two transactions that both add 1 to
the same job counter at once can both read the old value, and one increment is lost. Real
DynamoDB applies each request atomically, so the service relies on it. Serialising moto's
DynamoDB request handling (SQS, whose long polls must run side by side, is left alone)
restores that guarantee for tests and the local stack.
"""

from __future__ import annotations

import functools
import sys
import threading
from typing import Any

_LOCK = threading.RLock()
_PATCHED = False


def serialize_dynamodb() -> None:
    """Idempotent: wrap moto's DynamoDB request handler in one process-wide lock."""
    global _PATCHED
    if _PATCHED:
        return
    from moto.dynamodb.responses import DynamoHandler

    original = DynamoHandler.call_action

    @functools.wraps(original)
    def call_action(self: Any) -> Any:
        with _LOCK:
            return original(self)

    DynamoHandler.call_action = call_action  # type: ignore[method-assign]
    _PATCHED = True


def main(argv: list[str] | None = None) -> None:
    """`python -m local_stack.moto_locking -H 127.0.0.1 -p PORT`: moto's server, patched."""
    serialize_dynamodb()
    from moto.server import main as moto_main

    moto_main(argv if argv is not None else sys.argv[1:])


if __name__ == "__main__":
    main()
