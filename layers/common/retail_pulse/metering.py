"""Metering, the opt-in part of observability: what this execution environment's AWS clients
sent, counted on the client side.

The bill of a serverless service is mostly per request and per capacity unit, so it is
measured where the requests leave: botocore event hooks (its public extension point) on
each client the service builds, once `enable()` has been called (lambda_entry does): every
client the data layer builds (retail_pulse.data.aws shows them to its watchers) and every
PynamoDB model's client, reached through PynamoDB's documented `pre_dynamodb_send` signal
before its first request. The data layer does not know it is metered. No library is
patched for it. For DynamoDB the hooks ask for
`ReturnConsumedCapacity=INDEXES` wherever an operation offers it and add up the
`ConsumedCapacity` each answer carries, index writes included; for SQS, which bills every
request, each request is counted. Attempts are counted one by one (a retried request is
sent, and billed, again); a request that never left (a fault raised above botocore) is not.

`lambda_entry` resets the tally when an invocation starts and publishes it when it ends
(retail_pulse.observability.publish_usage): one EMF blob per invocation with the totals as
metrics and the breakdown as metadata, which the benchmark sums per job.
"""

from __future__ import annotations

import threading
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from pynamodb.connection import Connection
from pynamodb.signals import pre_dynamodb_send

from retail_pulse.data.aws import on_client

# Operations whose consumed capacity is write capacity; every other one reads.
_WRITES = frozenset(("PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", "TransactWriteItems"))
# INDEXES: the total, plus the part of each table and each index (TOTAL has no breakdown).
_CAPACITY_DETAIL = "INDEXES"
_MARK = "_retail_pulse_usage"


@dataclass
class Usage:
    """Requests and capacity units since the last reset. Thread-safe: the process function
    files and reschedules from many threads of one invocation."""

    requests: Counter[str] = field(default_factory=Counter)  # "dynamodb.GetItem": attempts
    # Capacity units by "<table>" and "<table>/<index>".
    write_units: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))
    read_units: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))
    # Transactions DynamoDB cancelled (a condition failed, a conflict): their answers carry
    # no ConsumedCapacity, so what they cost is not in the units above.
    cancelled_transactions: int = 0
    cancelled_items: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            self.write_units.clear()
            self.read_units.clear()
            self.cancelled_transactions = 0
            self.cancelled_items = 0

    def add_request(self, service: str, operation: str) -> None:
        with self._lock:
            self.requests[f"{service}.{operation}"] += 1

    def add_capacity(self, operation: str, consumed: list[dict[str, Any]]) -> None:
        units = self.write_units if operation in _WRITES else self.read_units
        with self._lock:
            for entry in consumed:
                _add_entry(units, entry)

    def add_cancelled(self, items: int) -> None:
        with self._lock:
            self.cancelled_transactions += 1
            self.cancelled_items += items

    @property
    def write_total(self) -> float:
        with self._lock:
            return _total(self.write_units)

    @property
    def read_total(self) -> float:
        with self._lock:
            return _total(self.read_units)

    def summary(self) -> dict[str, Any]:
        """A JSON-ready copy: totals, then the breakdown by operation, table and index."""
        with self._lock:
            return {
                "dynamodb_wru": round(_total(self.write_units), 3),
                "dynamodb_rru": round(_total(self.read_units), 3),
                "dynamodb_requests": sum(
                    n for k, n in self.requests.items() if k.startswith("dynamodb.")
                ),
                "sqs_requests": sum(n for k, n in self.requests.items() if k.startswith("sqs.")),
                "requests": dict(self.requests),
                "wru_by": {k: round(v, 3) for k, v in self.write_units.items()},
                "rru_by": {k: round(v, 3) for k, v in self.read_units.items()},
                "cancelled_transactions": self.cancelled_transactions,
                "cancelled_items": self.cancelled_items,
            }


def _add_entry(units: defaultdict[str, float], entry: dict[str, Any]) -> None:
    """One ConsumedCapacity entry: its table's part and each index's part under
    "<table>/<index>"; with no breakdown (an emulator, or TOTAL) the total is the table's."""
    table = str(entry.get("TableName", "?"))
    parts: dict[str, float] = {}
    if isinstance(entry.get("Table"), dict):
        parts[table] = float(entry["Table"].get("CapacityUnits", 0.0))
    for kind in ("GlobalSecondaryIndexes", "LocalSecondaryIndexes"):
        for index, detail in (entry.get(kind) or {}).items():
            parts[f"{table}/{index}"] = float(detail.get("CapacityUnits", 0.0))
    total = float(entry.get("CapacityUnits", 0.0))
    if not parts:
        parts[table] = total
    elif (rest := total - sum(parts.values())) > 1e-9:
        parts[table] = parts.get(table, 0.0) + rest  # whatever the breakdown does not name
    for key, value in parts.items():
        units[key] += value


def _total(units: defaultdict[str, float]) -> float:
    return float(sum(units.values()))


usage = Usage()


def instrument(client: Any) -> Any:
    """Count what `client` sends from now on; idempotent, returns the client."""
    if getattr(client, _MARK, False):
        return client
    service = client.meta.service_model.service_id.hyphenize()
    events = client.meta.events
    if service == "dynamodb":
        events.register(
            "before-parameter-build.dynamodb", _ask_for_capacity, unique_id=f"{_MARK}-ask"
        )
    # Once per attempt, after its answer (or its connection error) is known.
    events.register(f"response-received.{service}", _received, unique_id=f"{_MARK}-count")
    setattr(client, _MARK, True)
    return client


def _ask_for_capacity(params: dict[str, Any], model: Any, **_: Any) -> None:
    """Where the operation offers it, ask for consumed capacity with the index breakdown
    (PynamoDB itself asks for TOTAL, which hides the index writes)."""
    if "ReturnConsumedCapacity" in model.input_shape.members:
        params["ReturnConsumedCapacity"] = _CAPACITY_DETAIL


def _received(event_name: str, parsed_response: dict[str, Any] | None = None, **_: Any) -> None:
    """Count one attempt, and the capacity its answer reports."""
    _event, service, operation = event_name.split(".", 2)
    usage.add_request(service, operation)
    if service != "dynamodb" or not parsed_response:
        return
    consumed = parsed_response.get("ConsumedCapacity")
    if consumed:
        # One entry for single-table operations, one per table for batches and transactions.
        usage.add_capacity(operation, [consumed] if isinstance(consumed, dict) else consumed)
    error = parsed_response.get("Error") or {}
    if error.get("Code") == "TransactionCanceledException":
        usage.add_cancelled(len(parsed_response.get("CancellationReasons") or []))


def _count_requests_of(sender: Connection, **_: Any) -> None:
    """A model's connection is about to send: count its client from now on. PynamoDB sends
    `pre_dynamodb_send` (its documented signals, with blinker: the layer installs
    pynamodb[signals]) before each request; building the client here costs nothing more,
    PynamoDB would build it a moment later. A client PynamoDB rebuilds is counted too."""
    instrument(sender.client)


def enable() -> None:
    """Count every client from now on (and those built already). Idempotent."""
    on_client(instrument)
    # blinker holds a weak reference: a module-level function lives as long as the module.
    pre_dynamodb_send.connect(_count_requests_of)
