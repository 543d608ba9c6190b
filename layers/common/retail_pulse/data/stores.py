"""The Stores table: the only code that reads or writes store records.

Writes are whole-item puts keyed by store id, so importing the same master twice leaves
the table as it was. Reads are batched because a job names up to thousands of stores.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Protocol

from retail_pulse.data.models import AREA_REGISTRY_ID, StoreRecord
from retail_pulse.domain import Store

# DynamoDB's BatchWriteItem limit; PynamoDB commits (and retries unprocessed items) per 25.
_WRITE_BATCH = 25


class StoreFields(Protocol):
    """What a store needs to be saved (a master.StoreRow fits); keeps this module free of
    the CSV parser."""

    @property
    def store_id(self) -> str: ...

    @property
    def area_code(self) -> str: ...

    @property
    def store_name(self) -> str: ...


def save_stores(
    rows: Iterable[StoreFields],
    on_saved: Callable[[int], None] | None = None,
) -> int:
    """Put every store (overwriting any with the same id) and return how many were written.

    `on_saved(count)` is called after each batch reaches DynamoDB with the running total,
    so a caller can show progress on a master of thousands of stores.
    """
    saved = 0
    pending: list[StoreRecord] = []
    for row in rows:
        pending.append(
            StoreRecord(store_id=row.store_id, area_code=row.area_code, store_name=row.store_name)
        )
        if len(pending) == _WRITE_BATCH:
            saved += _write(pending)
            pending = []
            if on_saved is not None:
                on_saved(saved)
    if pending:
        saved += _write(pending)
        if on_saved is not None:
            on_saved(saved)
    return saved


def _write(records: list[StoreRecord]) -> int:
    # batch_write() resends unprocessed items and raises PutError if they never land.
    with StoreRecord.batch_write() as batch:
        for record in records:
            batch.save(record)
    return len(records)


def _store(record: StoreRecord) -> Store:
    return Store(store_id=record.store_id, area_code=record.area_code, store_name=record.store_name)


def find_stores(store_ids: Iterable[str]) -> dict[str, Store]:
    """The stores that exist among `store_ids`, by id; unknown ids are simply absent.

    Ids are deduplicated first; PynamoDB pages the keys 100 to a request and retries
    unprocessed keys. An empty id cannot be a DynamoDB key, so it is never asked for.
    """
    wanted = {
        store_id
        for store_id in store_ids
        if isinstance(store_id, str) and store_id and store_id != AREA_REGISTRY_ID
    }
    if not wanted:
        return {}
    return {record.store_id: _store(record) for record in StoreRecord.batch_get(wanted)}


def get_store(store_id: str) -> Store | None:
    """One store by id; None when the master has no such store."""
    if not store_id or store_id == AREA_REGISTRY_ID:
        return None
    try:
        return _store(StoreRecord.get(store_id))
    except StoreRecord.DoesNotExist:
        return None


def area_exists(area_code: str) -> bool:
    """Whether any store of the master is in this area: one key-only item of StoresByArea."""
    if not area_code:
        return False
    return any(True for _ in StoreRecord.stores_by_area.query(area_code, limit=1))


def register_areas(area_codes: Iterable[str]) -> None:
    """Add area codes to the registry item (a set union, so imports of different files add
    up and a repeated import changes nothing)."""
    codes = {code for code in area_codes if code}
    if codes:
        StoreRecord(store_id=AREA_REGISTRY_ID).update(actions=[StoreRecord.areas.add(codes)])


def known_areas() -> list[str]:
    """Every area code an import has registered, sorted; one GetItem."""
    try:
        registry = StoreRecord.get(AREA_REGISTRY_ID)
    except StoreRecord.DoesNotExist:
        return []
    return sorted(registry.areas or ())
