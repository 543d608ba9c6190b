"""The write capacity of a TransactWriteItems, item by item, for DynamoDB Local to report.

DynamoDB Local answers a transaction's ConsumedCapacity wrongly once it holds more than one
item of a table: it adds up the *distinct* per-item figures, so 99 alike image updates are
reported as one (2 WRU where DynamoDB bills 198). It is right for a transaction of one item
per table. The local stack's DynamoDB router (dynamodb_local.py) therefore reads each item
of a committed transaction before and after it, and reports the sum of the per-item figures
computed here by DynamoDB's published rules, the way DynamoDB Local prices a one-item
transaction (tests/unit/test_local_stack_dynamodb.py checks the two agree item by item):

- an item's size is the sum of its attribute names and values (strings as UTF-8, numbers
  by significant digits, lists and maps with their overheads); a write is billed
  ceil(max(size before, size after) / 1 KB) units, at least 1;
- a global secondary index is written when the item enters or leaves it (1 write), when its
  index key changes (2: the old entry deleted, the new one put), or when an attribute the
  index projects changes (1); its entry is the projected attributes;
- a transactional write is two writes (prepare and commit): every figure above doubles,
  index writes included, as DynamoDB Local prices them.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

Item = dict[str, Any]  # DynamoDB JSON: {"name": {"S": "..."}, ...}
_KB = 1024
TRANSACTIONAL = 2


@dataclass(frozen=True)
class Index:
    name: str
    keys: tuple[str, ...]
    projection: str  # ALL, KEYS_ONLY or INCLUDE
    included: tuple[str, ...] = ()


@dataclass(frozen=True)
class TableSchema:
    name: str
    keys: tuple[str, ...]
    indexes: tuple[Index, ...] = field(default_factory=tuple)

    @classmethod
    def from_description(cls, table: Mapping[str, Any]) -> TableSchema:
        """From DescribeTable's `Table`."""
        indexes = []
        for index in table.get("GlobalSecondaryIndexes") or []:
            projection = index.get("Projection") or {}
            indexes.append(
                Index(
                    name=index["IndexName"],
                    keys=tuple(k["AttributeName"] for k in index["KeySchema"]),
                    projection=projection.get("ProjectionType", "ALL"),
                    included=tuple(projection.get("NonKeyAttributes") or ()),
                )
            )
        return cls(
            name=table["TableName"],
            keys=tuple(k["AttributeName"] for k in table["KeySchema"]),
            indexes=tuple(indexes),
        )

    def key_of(self, item: Item) -> Item:
        return {name: item[name] for name in self.keys}


def value_size(value: Mapping[str, Any]) -> int:
    """Bytes of one attribute value (DynamoDB's item size rules)."""
    ((kind, data),) = value.items()
    if kind == "S":
        return len(data.encode())
    if kind == "N":
        return _number_size(data)
    if kind == "B":
        return len(_binary(data))
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "SS":
        return sum(len(s.encode()) for s in data)
    if kind == "NS":
        return sum(_number_size(n) for n in data)
    if kind == "BS":
        return sum(len(_binary(b)) for b in data)
    if kind == "L":
        return 3 + sum(1 + value_size(v) for v in data)
    if kind == "M":
        return 3 + sum(1 + len(k.encode()) + value_size(v) for k, v in data.items())
    raise ValueError(f"unknown attribute type {kind}")


def _number_size(text: str) -> int:
    """1 byte per two significant digits, plus 1 (leading and trailing zeros trimmed)."""
    digits = text.lstrip("-").replace(".", "").lstrip("0").rstrip("0") or "0"
    return math.ceil(len(digits) / 2) + 1


def _binary(data: Any) -> bytes:
    return data if isinstance(data, bytes) else base64.b64decode(data)


def item_size(item: Item | None) -> int:
    if not item:
        return 0
    return sum(len(name.encode()) + value_size(value) for name, value in item.items())


def _units(size: int) -> int:
    return max(1, math.ceil(size / _KB))


def _projected(index: Index, table: TableSchema, item: Item) -> Item:
    if index.projection == "ALL":
        return dict(item)
    names = set(table.keys) | set(index.keys)
    if index.projection == "INCLUDE":
        names |= set(index.included)
    return {name: value for name, value in item.items() if name in names}


def index_units(index: Index, table: TableSchema, before: Item | None, after: Item | None) -> int:
    """Standard write units the index takes for one item going from `before` to `after`."""
    was = before is not None and all(k in before for k in index.keys)
    now = after is not None and all(k in after for k in index.keys)
    if not was and not now:
        return 0
    old = _projected(index, table, before) if was and before is not None else None
    new = _projected(index, table, after) if now and after is not None else None
    if old is None and new is not None:
        return _units(item_size(new))
    if new is None and old is not None:
        return _units(item_size(old))
    assert old is not None and new is not None
    if any(old[k] != new[k] for k in index.keys):
        return _units(item_size(old)) + _units(item_size(new))  # moved: delete and put
    if old != new:
        return _units(max(item_size(old), item_size(new)))
    return 0


def write_capacity(
    table: TableSchema, before: Item | None, after: Item | None, multiplier: int = 1
) -> dict[str, float]:
    """{"<table>": units, "<table>/<index>": units} of one item's write."""
    parts = {table.name: float(multiplier * _units(max(item_size(before), item_size(after))))}
    for index in table.indexes:
        units = index_units(index, table, before, after)
        if units:
            parts[f"{table.name}/{index.name}"] = float(multiplier * units)
    return parts


def consumed_capacity(parts_by_table: Mapping[str, Mapping[str, float]], detail: str) -> list[Any]:
    """The ConsumedCapacity list of a TransactWriteItems answer (TOTAL or INDEXES)."""
    answer = []
    for table, parts in parts_by_table.items():
        entry: dict[str, Any] = {"TableName": table, "CapacityUnits": sum(parts.values())}
        if detail == "INDEXES":
            entry["Table"] = {"CapacityUnits": parts.get(table, 0.0)}
            indexes = {
                key.split("/", 1)[1]: {"CapacityUnits": units}
                for key, units in parts.items()
                if "/" in key
            }
            if indexes:
                entry["GlobalSecondaryIndexes"] = indexes
        answer.append(entry)
    return answer
