"""Count the AWS requests moto serves, so a benchmark can price them like an AWS bill.

A WSGI middleware in the moto child: every request is tallied by service and action
(`dynamodb.TransactWriteItems`, `sqs.ReceiveMessage`, ...) together with the number of items
it carried, which is what DynamoDB bills per (a transaction of two updates is two items,
each billed twice). `GET /_local/request-counts` returns the tallies as JSON; nothing is
reset, so callers take differences between two readings.
"""

from __future__ import annotations

import io
import json
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

COUNTS_PATH = "/_local/request-counts"
_MULTI_ITEM_ACTIONS = frozenset(
    ("TransactWriteItems", "TransactGetItems", "BatchWriteItem", "BatchGetItem")
)

Environ = dict[str, Any]
StartResponse = Callable[..., Any]
WsgiApp = Callable[[Environ, StartResponse], Iterable[bytes]]


def _items(action: str, body: dict[str, Any]) -> int:
    """The items a DynamoDB request reads or writes (1 for single-item calls)."""
    if action in ("TransactWriteItems", "TransactGetItems"):
        return len(body.get("TransactItems") or [])
    if action == "BatchWriteItem":
        return sum(len(v) for v in (body.get("RequestItems") or {}).values())
    if action == "BatchGetItem":
        return sum(len(v.get("Keys") or []) for v in (body.get("RequestItems") or {}).values())
    return 1


class RequestCounter:
    """Wraps moto's WSGI app; thread-safe, as moto serves each connection on a thread."""

    def __init__(self, app: WsgiApp) -> None:
        self.app = app
        self._lock = threading.Lock()
        self.requests: Counter[str] = Counter()
        self.items: Counter[str] = Counter()

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == COUNTS_PATH:
            with self._lock:
                payload = {"requests": dict(self.requests), "items": dict(self.items)}
            data = json.dumps(payload).encode()
            start_response(
                "200 OK",
                [("Content-Type", "application/json"), ("Content-Length", str(len(data)))],
            )
            return [data]
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        if target:
            prefix, _, action = target.partition(".")
            service = "dynamodb" if prefix.startswith("DynamoDB") else prefix.lower()
            service = "sqs" if service == "amazonsqs" else service
            items = 1
            if service == "dynamodb":
                items = self._dynamodb_items(environ, action)
            key = f"{service}.{action}"
            with self._lock:
                self.requests[key] += 1
                self.items[key] += items
        return self.app(environ, start_response)

    @staticmethod
    def _dynamodb_items(environ: Environ, action: str) -> int:
        """Reads the body (and puts it back for moto) only for multi-item actions."""
        if action not in _MULTI_ITEM_ACTIONS:
            return 1
        length = int(environ.get("CONTENT_LENGTH") or 0)
        raw = environ["wsgi.input"].read(length) if length else b""
        environ["wsgi.input"] = io.BytesIO(raw)
        try:
            return _items(action, json.loads(raw or b"{}"))
        except ValueError:
            return 1


def install() -> None:
    """Make moto's server wrap its app in a RequestCounter (call before moto's main)."""
    import moto.server
    from werkzeug.serving import run_simple

    def counting_run_simple(host: str, port: int, app: WsgiApp, **kwargs: Any) -> None:
        run_simple(host, port, RequestCounter(app), **kwargs)

    moto.server.run_simple = counting_run_simple  # type: ignore[assignment]
