"""GET /api/visits against moto: jobs submitted and processed through the real handlers, then
read back by store, area and time range, page by page."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from retail_pulse.data.stores import register_areas
from retail_pulse_admin.stores.importer import import_stores
from retail_pulse_admin.stores.master import read_store_master
from tests.integration.conftest import job, visit
from tests.support.events import sqs_event
from tests.support.handlers import FakeContext, load_handler

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "stores_sample.csv"
BHARAT, ASHA = "S00339218", "S01408764"  # area 710006 in the real master


pytestmark = pytest.mark.usefixtures("no_gpu_pause")


def run_jobs(aws, call_api, *visits: dict[str, Any]) -> str:
    """Submit one job and process every queued image, as SQS and Lambda would."""
    submitted = call_api("POST", "/api/submit/", body=job(*visits))
    assert submitted.status_code == 201, submitted.body
    while messages := aws.receive():
        event = sqs_event([m["Body"] for m in messages])
        response = load_handler("process").lambda_handler(event, FakeContext())
        assert response == {"batchItemFailures": []}
    return submitted.body["job_id"]


def get_visits(call_api, **query: str) -> Any:
    return call_api("GET", "/api/visits", query=query or None)


def entries(body: dict) -> list[tuple[str, str, int]]:
    """(store_id, date, perimeter) of every data entry, in response order."""
    return [(s["store_id"], d["date"], d["perimeter"]) for s in body["results"] for d in s["data"]]


def img(server, width: int, height: int = 100) -> str:
    """An image whose perimeter, 2 * (width + height), identifies it in the results."""
    return server.url(f"/img/{width}x{height}.png")


# -- the real store master ---------------------------------------------------------------


@pytest.fixture
def real_stores(aws, store_master_csv) -> dict[str, str]:
    """The real master imported; two stores of each of its areas, by role."""
    report = import_stores(store_master_csv)
    assert report.ok
    area_b = [
        r.store_id for r in read_store_master(store_master_csv).rows if r.area_code == "700029"
    ]
    return {"A1": BHARAT, "A2": ASHA, "B1": area_b[0], "B2": area_b[1]}


@pytest.fixture
def spread(aws, call_api, image_server, real_stores) -> dict[str, str]:
    """Visits over four days, four stores, both areas, plus failures that must not show."""
    s = real_stores
    run_jobs(
        aws,
        call_api,
        visit(
            s["A1"],
            [img(image_server, 550, 404), img(image_server, 1280, 720)],
            "2026-11-26T09:00:00Z",
        ),
        visit(s["A2"], [img(image_server, 100)], "2026-11-27T11:40:00+05:30"),  # 06:10Z
        visit(s["B1"], [img(image_server, 200)], "2026-11-27T23:59:59Z"),
    )
    run_jobs(
        aws,
        call_api,
        visit(s["A1"], [img(image_server, 400)], "2026-11-28T10:15:00Z"),
        visit(s["B2"], [img(image_server, 10)], "2026-11-28T00:00:00Z"),
        visit(s["B1"], [img(image_server, 20)], "2026-11-29T12:00:00.5Z"),
        visit(s["A1"], [image_server.url("/status/404")], "2026-11-28T12:00:00Z"),
        visit("S_NOT_IN_MASTER", [img(image_server, 30)], "2026-11-28T12:00:00Z"),
    )
    return s


def test_by_store_by_area_and_unfiltered(call_api, spread):
    result = get_visits(call_api, storeid=spread["A1"])

    assert result.status_code == 200
    assert result.body == {
        "results": [
            {
                "store_id": BHARAT,
                "area": "710006",
                "store_name": "BHARAT STORE",
                "data": [
                    {"date": "2026-11-26T09:00:00Z", "perimeter": 1908},
                    {"date": "2026-11-26T09:00:00Z", "perimeter": 4000},
                    {"date": "2026-11-28T10:15:00Z", "perimeter": 1000},
                ],
            }
        ]
    }
    # The same with its (matching) area.
    assert get_visits(call_api, storeid=BHARAT, area="710006").body == result.body

    # By area: only that area's stores, in store-id order, with their own names.
    body = get_visits(call_api, area="700029").body
    b1, b2 = spread["B1"], spread["B2"]
    assert [s["store_id"] for s in body["results"]] == sorted([b1, b2])
    assert {s["area"] for s in body["results"]} == {"700029"}
    assert sorted(entries(body)) == sorted(
        [
            (b1, "2026-11-27T23:59:59Z", 600),
            (b1, "2026-11-29T12:00:00.500000Z", 240),
            (b2, "2026-11-28T00:00:00Z", 220),
        ]
    )

    area_a = get_visits(call_api, area="710006").body
    assert [s["store_id"] for s in area_a["results"]] == [BHARAT, ASHA]
    assert area_a["results"][1]["store_name"] == "Asha Communication"

    # No filter: both areas.
    body = get_visits(call_api).body
    assert "next" not in body
    assert len(entries(body)) == 7  # every image that succeeded, none that failed
    assert {s["store_id"] for s in body["results"]} == set(spread.values())
    assert [s["store_id"] for s in body["results"]] == sorted(spread.values())
    # The SPEC's URL template, sent as written.
    assert get_visits(call_api, area="", storeid="", startdate="", enddate="").body == body


DATE_CASES = [
    # Both boundaries land exactly on visits: inclusive.
    (
        {"startdate": "2026-11-27T06:10:00Z", "enddate": "2026-11-28T00:00:00Z"},
        {
            ("A2", "2026-11-27T06:10:00Z"),
            ("B1", "2026-11-27T23:59:59Z"),
            ("B2", "2026-11-28T00:00:00Z"),
        },
    ),
    # The same instants written with an offset and without one.
    (
        {"startdate": "2026-11-27T11:40:00+05:30", "enddate": "2026-11-28T00:00:00"},
        {
            ("A2", "2026-11-27T06:10:00Z"),
            ("B1", "2026-11-27T23:59:59Z"),
            ("B2", "2026-11-28T00:00:00Z"),
        },
    ),
    # One second inside each boundary excludes the visits on it.
    (
        {"startdate": "2026-11-27T06:10:01Z", "enddate": "2026-11-27T23:59:58Z"},
        set(),
    ),
    # A bare date is that whole UTC day.
    (
        {"startdate": "2026-11-28", "enddate": "2026-11-28"},
        {("B2", "2026-11-28T00:00:00Z"), ("A1", "2026-11-28T10:15:00Z")},
    ),
    # Fractions of a second count.
    ({"startdate": "2026-11-29T12:00:00Z", "enddate": "2026-11-29T12:00:00.4Z"}, set()),
    ({"startdate": "2026-11-29T12:00:00.5Z"}, {("B1", "2026-11-29T12:00:00.500000Z")}),
    ({"enddate": "2026-11-26T09:00:00Z"}, {("A1", "2026-11-26T09:00:00Z")}),
]


def test_date_range_is_inclusive_and_exact(call_api, spread):
    role = {store_id: name for name, store_id in spread.items()}
    for query, expected in DATE_CASES:
        result = get_visits(call_api, **query)
        assert result.status_code == 200, (query, result.body)
        assert {(role[s], d) for s, d, _ in entries(result.body)} == expected, query

    # With a store, and with an area.
    by_store = get_visits(call_api, storeid=BHARAT, startdate="2026-11-27T00:00:00Z")
    assert entries(by_store.body) == [(BHARAT, "2026-11-28T10:15:00Z", 1000)]
    by_area = get_visits(call_api, area="700029", enddate="2026-11-28T00:00:00Z")
    assert sorted(d for _, d, _ in entries(by_area.body)) == [
        "2026-11-27T23:59:59Z",
        "2026-11-28T00:00:00Z",
    ]


def test_pages_cover_every_result_once_in_every_scope(aws, call_api, image_server, real_stores):
    s = real_stores
    visits = [
        visit(
            s[role],
            [img(image_server, 100 + 10 * i + j) for j in range(2)],
            f"2026-11-{10 + i}T08:00:00Z",
        )
        for i, role in enumerate(["A1", "B1", "A2", "B2", "A1", "B1", "A1", "B2"])
    ]
    run_jobs(aws, call_api, *visits[:4])
    run_jobs(aws, call_api, *visits[4:])

    scopes: list[dict[str, str]] = [
        {},
        {"area": "710006"},
        {"startdate": "2026-11-11T08:00:00Z", "enddate": "2026-11-16T08:00:00Z"},
    ]
    for scope in scopes:
        everything = get_visits(call_api, **scope).body
        assert "next" not in everything
        for limit in (1, 3, len(entries(everything))):
            walked, token, pages = [], None, 0
            while True:
                query = {**scope, "limit": str(limit), **({"next": token} if token else {})}
                page = get_visits(call_api, **query)
                assert page.status_code == 200, page.body
                got = entries(page.body)
                assert 1 <= len(got) <= limit
                walked += got
                pages += 1
                token = page.body.get("next")
                if token is None:
                    break
                assert pages < 50
            assert sorted(walked) == sorted(entries(everything)), (scope, limit)
            assert len(set(walked)) == len(walked)
            assert pages == -(-len(walked) // limit)  # no empty last page


def test_a_token_is_bound_to_its_query_but_the_limit_may_change(
    aws, call_api, image_server, real_stores
):
    run_jobs(aws, call_api, visit(BHARAT, [img(image_server, 100 + i) for i in range(5)]))
    token = get_visits(call_api, storeid=BHARAT, limit="2").body["next"]

    wider = get_visits(call_api, storeid=BHARAT, limit="10", next=token)
    assert wider.status_code == 200
    assert [p for _, _, p in entries(wider.body)] == [2 * (100 + i + 100) for i in range(2, 5)]

    for other in (
        {"area": "710006"},
        {"storeid": ASHA},
        {"storeid": BHARAT, "startdate": "2026-01-01"},
    ):
        result = get_visits(call_api, **other, next=token)
        assert result.status_code == 400
        assert "different query" in result.body["error"]


BAD_REQUESTS = [
    ({"storeid": "S_NOT_IN_MASTER"}, "storeid 'S_NOT_IN_MASTER' is not in the store master"),
    ({"area": "999999"}, "area '999999' is not in the store master"),
    ({"area": "999999", "storeid": BHARAT}, "area '999999' is not in the store master"),
    (
        {"area": "700029", "storeid": BHARAT},
        "store S00339218 is in area 710006, not in area 700029",
    ),
    ({"storeid": "#areas"}, "is not in the store master"),
    ({"storeid": "S" * 3000}, "is not in the store master"),
    ({"startdate": "28/11/2026"}, "startdate: '28/11/2026' is not an RFC 3339 timestamp"),
    (
        {"enddate": "2026-11-31T00:00:00Z"},
        "enddate: '2026-11-31T00:00:00Z' is not a valid date",
    ),
    ({"startdate": "2026-11-29", "enddate": "2026-11-28"}, "is after enddate"),
    ({"limit": "0"}, "query parameter 'limit'"),
    ({"limit": "1001"}, "query parameter 'limit'"),
    ({"limit": "ten"}, "query parameter 'limit'"),
    ({"next": "garbage!"}, "the next token is not valid"),
    ({"next": "eyJ2IjoxfQ"}, "the next token is not valid"),
    # Once 500s: a UTC form outside datetime's range, a token of 1,500 "[" (RecursionError).
    ({"startdate": "0001-01-01T00:00:00+01:00"}, "startdate: '0001-01-01T00:00:00+01:00' is out"),
    ({"enddate": "9999-12-31T23:59:59-01:00"}, "enddate: '9999-12-31T23:59:59-01:00' is out"),
    ({"storeid": BHARAT, "next": "W1tb" * 500}, "the next token is not valid"),
]


def test_every_bad_request_is_a_400_that_says_what_is_wrong(call_api, real_stores):
    for query, words in BAD_REQUESTS:
        result = get_visits(call_api, **query)
        assert result.status_code == 400, query
        assert set(result.body) == {"error"}, query
        assert words in result.body["error"], (query, result.body)


def test_visits_at_the_ends_of_time_are_found_by_the_first_and_last_days(
    aws, call_api, image_server, real_stores
):
    """Year 1 and year 9999 are valid visit times; a date-only range covering them must
    find them. (A key bound before year 1000 was once written "5-01-01...", with no leading
    zeros, which sorts after "2026-...": startdate=0005-01-01 skipped this year's visits.)"""
    run_jobs(
        aws,
        call_api,
        visit(BHARAT, [img(image_server, 1)], "0001-01-01T00:00:00-01:00"),  # 01:00Z
        visit(BHARAT, [img(image_server, 2)], "9999-12-31T23:59:59+01:00"),  # 22:59:59Z
        visit(BHARAT, [img(image_server, 3)], "2026-11-28T10:15:00Z"),
    )
    for query, perimeters in [
        ({"startdate": "0001-01-01", "enddate": "9999-12-31"}, [202, 206, 204]),
        ({"startdate": "0005-01-01"}, [206, 204]),
        ({"enddate": "0001-01-01"}, [202]),
        ({"startdate": "9999-12-31"}, [204]),
        ({"startdate": "0001-01-01T01:00:01Z", "enddate": "9999-12-31T22:59:58Z"}, [206]),
    ]:
        result = get_visits(call_api, storeid=BHARAT, **query)
        assert result.status_code == 200, (query, result.body)
        assert [p for _, _, p in entries(result.body)] == perimeters, query


# -- without the real store master (a user's clone) ---------------------------------------


def test_visits_with_the_small_fixture_stores(aws, stores, call_api, image_server):
    run_jobs(
        aws,
        call_api,
        visit(BHARAT, [img(image_server, 550, 404)], "2026-11-28T10:15:00Z"),
        visit("S90000001", [img(image_server, 1280, 720)], "2026-11-28T11:40:00+05:30"),
    )

    assert get_visits(call_api, storeid=BHARAT).body == {
        "results": [
            {
                "store_id": BHARAT,
                "area": "710006",
                "store_name": "BHARAT STORE",
                "data": [{"date": "2026-11-28T10:15:00Z", "perimeter": 1908}],
            }
        ]
    }
    assert entries(get_visits(call_api, area="560001").body) == [
        ("S90000001", "2026-11-28T06:10:00Z", 4000)
    ]
    assert get_visits(call_api, area="710007").status_code == 400
    # The fixture writes stores directly, so there is no registry of areas yet.
    assert get_visits(call_api).body == {"results": []}
    register_areas(["710006", "560001"])
    assert len(entries(get_visits(call_api).body)) == 2


def test_the_store_import_registers_areas_for_the_unfiltered_query(aws, call_api, image_server):
    assert import_stores(SAMPLE).ok
    run_jobs(aws, call_api, visit(BHARAT, [img(image_server, 10, 10)]))
    assert entries(get_visits(call_api).body) == [(BHARAT, "2026-11-28T10:15:00Z", 40)]
