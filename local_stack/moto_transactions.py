"""Make moto's TransactWriteItems cost what it costs in DynamoDB: the items it touches.

moto backs up every table a transaction names with `copy.deepcopy(table)` before applying
it, so it can roll back. Every image's result is one transaction on the Images and Jobs
tables, so each deep-copied every image record stored so far: a 1,000-image job spent
most of moto's CPU copying (py-spy), and the cost per image grew with the table. Here only
the transaction's own items are saved and put back on rollback; what a transaction does,
and what it raises, is moto's unchanged code.
"""

from __future__ import annotations

import copy
import functools
import threading
import types
from typing import Any

_state = threading.local()
_PATCHED = False


def cheap_transaction_rollback() -> None:
    """Idempotent: item-level backups for moto's DynamoDB TransactWriteItems."""
    global _PATCHED
    if _PATCHED:
        return
    import moto.dynamodb.models as models
    from moto.dynamodb.models import DynamoDBBackend
    from moto.dynamodb.models.table import Table

    def deepcopy(value: Any, memo: dict[int, Any] | None = None) -> Any:
        # Inside a transaction moto's whole-table backup is skipped: items are saved below.
        if isinstance(value, Table) and getattr(_state, "in_transaction", False):
            return value
        return copy.deepcopy(value, memo)

    # Only this module's `copy.deepcopy` calls change; copy.copy and the rest stay.
    models.copy = types.SimpleNamespace(  # type: ignore[assignment]
        **{**vars(copy), "deepcopy": deepcopy}
    )
    original = DynamoDBBackend.transact_write_items

    @functools.wraps(original)
    def transact_write_items(self: DynamoDBBackend, transact_items: list[dict[str, Any]]) -> None:
        saved = [_save(self, entry) for entry in transact_items]
        _state.in_transaction = True
        try:
            original(self, transact_items)
        except Exception:
            for backup in reversed(saved):
                if backup is not None:
                    _restore(*backup)
            raise
        finally:
            _state.in_transaction = False

    DynamoDBBackend.transact_write_items = transact_write_items  # type: ignore[method-assign]
    _PATCHED = True


def _save(backend: Any, entry: dict[str, Any]) -> tuple[Any, Any, Any, Any] | None:
    """(table, hash key, range key, a copy of the item or None) for one transaction entry."""
    try:
        _, operation = next(iter(entry.items()))
        table = backend.tables.get(operation.get("TableName"))
        if table is None:
            return None
        keys = operation.get("Key") or operation.get("Item") or {}
        hash_key, range_key = backend.get_keys_value(table, keys)
    except Exception:
        return None  # moto's own validation reports a malformed entry
    return table, hash_key, range_key, copy.deepcopy(table.get_item(hash_key, range_key))


def _restore(table: Any, hash_key: Any, range_key: Any, item: Any) -> None:
    """Put one item back as it was before the transaction (absent if it was absent)."""
    if table.range_key_attr:
        if item is None:
            table.items.get(hash_key, {}).pop(range_key, None)
        else:
            table.items[hash_key][range_key] = item
    elif item is None:
        table.items.pop(hash_key, None)
    else:
        table.items[hash_key] = item
