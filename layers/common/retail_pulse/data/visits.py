"""Reading measured images back, through the sparse StoreVisits and AreaVisits indexes.

Only succeeded images carry the index keys, so every item a query reads is a result: there
is no filter expression and no scan, and a page of N results reads about N items.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pynamodb.exceptions import QueryError
from pynamodb.expressions.condition import Condition

from retail_pulse.data.models import ImageRecord
from retail_pulse.domain import DEFAULT_TENANT

IndexName = Literal["store", "area"]


def results_partition(tenant: str, value: str) -> str:
    """The StoreVisits/AreaVisits partition of a tenant's results for a store id or area code.

    The default tenant's partition is the bare value, so results filed before tenants
    existed are its own with no migration; any other tenant's starts with "#", which no
    store id or area code of the master may (stores/master.py), so the two never meet.
    """
    return value if tenant == DEFAULT_TENANT else f"#{tenant}#{value}"


_INDEXES = {
    "store": (ImageRecord.store_visits, "result_store_id"),
    "area": (ImageRecord.area_visits, "result_area"),
}
# The keys (so a page can stop mid-way and resume) and what a result shows; the URL and
# error text, the bulk of an item, are not read back.
_ATTRIBUTES = [
    "job_id",
    "image_index",
    "store_id",
    "area",
    "result_store_id",
    "result_area",
    "visit_key",
    "visit_time",
    "perimeter",
]


@dataclass(frozen=True)
class VisitRow:
    """One measured image, as the visits API shows it."""

    store_id: str
    area: str | None
    visit_time: str
    visit_key: str
    perimeter: int


class InvalidStartKey(Exception):
    """DynamoDB refused the position a page should resume from (a forged token)."""


def query_visits(
    by: IndexName,
    partition: str,
    count: int,
    *,
    after: str | None = None,
    lower: str | None = None,
    upper: str | None = None,
) -> list[VisitRow]:
    """Up to `count` images of one store or area in visit_key order, with lower <= visit_key
    <= upper, starting after the image whose visit_key is `after`.

    Fewer than `count` rows means the partition has no more within the bounds.
    """
    index, hash_attribute = _INDEXES[by]
    condition: Condition | None = None
    if lower is not None and upper is not None:
        condition = ImageRecord.visit_key.between(lower, upper)
    elif lower is not None:
        condition = ImageRecord.visit_key >= lower
    elif upper is not None:
        condition = ImageRecord.visit_key <= upper
    results = index.query(
        partition,
        range_key_condition=condition,
        limit=count,
        page_size=count,
        last_evaluated_key=_start_key(hash_attribute, partition, after) if after else None,
        attributes_to_get=_ATTRIBUTES,
    )
    try:
        return [
            VisitRow(
                store_id=image.store_id,
                area=image.area,
                visit_time=image.visit_time,
                visit_key=image.visit_key,
                perimeter=int(image.perimeter),
            )
            for image in results
        ]
    except QueryError as error:
        if after and error.cause_response_code == "ValidationException":
            raise InvalidStartKey(str(error)) from error
        raise


def _start_key(hash_attribute: str, partition: str, visit_key: str) -> dict[str, Any]:
    """The index's LastEvaluatedKey for an image, rebuilt from its visit_key
    ("<visit_time>#<job_id>#<image_index>"), which holds the table's keys too."""
    _, job_id, image_index = visit_key.rsplit("#", 2)
    return {
        hash_attribute: {"S": partition},
        "visit_key": {"S": visit_key},
        "job_id": {"S": job_id},
        "image_index": {"N": str(int(image_index))},
    }
