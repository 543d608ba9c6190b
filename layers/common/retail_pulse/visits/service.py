"""GET /api/visits: which index partitions a request reads, one page of them, and its token.

- storeid (with or without area): the store's partition of StoreVisits.
- area only: the area's partition of AreaVisits.
- neither: every area of the area registry (written by the store import), in order, each
  through AreaVisits. Still no scan: a handful of areas, each a key-range query.

There is no default time window: paging bounds every response instead (at most `limit`
images, about limit + 1 items read), and a client asking for everything gets everything.
"""

from __future__ import annotations

from functools import partial

from retail_pulse.data.secrets import page_token_key
from retail_pulse.data.stores import area_exists, find_stores, get_store, known_areas
from retail_pulse.data.visits import (
    IndexName,
    InvalidStartKey,
    VisitRow,
    query_visits,
    results_partition,
)
from retail_pulse.domain import VisitsPage
from retail_pulse.errors import InvalidRequest, NotInStoreMaster
from retail_pulse.visits.query import (
    BAD_TOKEN,
    DEFAULT_LIMIT,
    VisitFilter,
    check_id,
    collect_page,
    decode_token,
    encode_token,
    group_by_store,
    key_bounds,
    parse_filter,
)


def find_visits(
    tenant: str,
    area: str | None = None,
    storeid: str | None = None,
    startdate: str | None = None,
    enddate: str | None = None,
    limit: int = DEFAULT_LIMIT,
    next_token: str | None = None,
) -> VisitsPage:
    """One page of measured images, grouped by store. Raises InvalidRequest for an unknown
    store or area, a bad date or range, or a token that is not this query's."""
    query = parse_filter(area, storeid, startdate, enddate, tenant)
    by, partitions, known = _scope(query)
    key = page_token_key()
    cursor = decode_token(next_token, query, partitions, key) if next_token else None
    lower, upper = key_bounds(query.start, query.end)
    fetch = partial(_fetch, by, tenant, lower, upper)
    try:
        rows, next_cursor = collect_page(
            partitions, cursor, limit, fetch, keep=lambda row: query.contains(row.visit_time)
        )
    except InvalidStartKey as error:
        raise InvalidRequest(BAD_TOKEN) from error
    if known is None:
        found = find_stores({row.store_id for row in rows})
        known = {sid: (store.area_code, store.store_name) for sid, store in found.items()}
    return VisitsPage(
        results=group_by_store(rows, known),
        next=encode_token(query, next_cursor, key) if next_cursor else None,
    )


def _fetch(
    by: IndexName,
    tenant: str,
    lower: str | None,
    upper: str | None,
    partition: str,
    after: str | None,
    count: int,
) -> list[VisitRow]:
    """One read of the caller's own partition of the index: never another client's."""
    own = results_partition(tenant, partition)
    return query_visits(by, own, count, after=after, lower=lower, upper=upper)


def _scope(
    query: VisitFilter,
) -> tuple[IndexName, list[str], dict[str, tuple[str, str]] | None]:
    """The index, its partitions in reading order, and the store's (area, name) when the
    request names one store."""
    if query.area is not None:
        check_id("area", query.area)
    if query.store_id is None:
        if query.area is None:
            return "area", known_areas(), None
        if not area_exists(query.area):
            raise NotInStoreMaster(f"area '{query.area}' is not in the store master")
        return "area", [query.area], None

    check_id("storeid", query.store_id)
    store = get_store(query.store_id)
    if store is None:
        raise NotInStoreMaster(f"storeid '{query.store_id}' is not in the store master")
    if query.area is not None and store.area_code != query.area:
        if not area_exists(query.area):
            raise NotInStoreMaster(f"area '{query.area}' is not in the store master")
        raise InvalidRequest(
            f"store {store.store_id} is in area {store.area_code}, not in area {query.area}; "
            "drop one of the two parameters or fix it"
        )
    return "store", [store.store_id], {store.store_id: (store.area_code, store.store_name)}
