"""The client's own submit rules (retail_pulse_client.checks) agree with the service's.

The client package cannot import the service's models, so it restates their rules; here
both sides get the same inputs, hand-picked and generated, and must agree on what they
accept (and, for times, on the moment they read). A rule changed on one side only fails
here, before a user's file passes the desk check and then meets a 400.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from retail_pulse.api.models import SubmitRequest
from retail_pulse.api.models import parse_timestamp as service_parse_timestamp
from retail_pulse_client.checks import (
    Limits,
    field_problems,
    job_problem,
    parse_timestamp,
    url_problem,
)

LIMITS = Limits()  # the service's defaults: the tests run it with none of MAX_* set


def service_reads(text: str) -> datetime | None:
    try:
        return service_parse_timestamp(text)
    except ValueError:
        return None


def client_reads(text: str) -> datetime | None:
    try:
        return parse_timestamp(text)
    except ValueError:
        return None


def service_accepts(body: dict[str, Any]) -> bool:
    try:
        SubmitRequest.model_validate(body).check_consistency()
    except ValueError:  # pydantic's ValidationError is one
        return False
    return True


def client_accepts(body: dict[str, Any]) -> bool:
    return not field_problems(body, LIMITS) and job_problem(body, LIMITS) is None


def visit(**fields: Any) -> dict[str, Any]:
    return {
        "store_id": "S1",
        "image_url": ["http://h/a.jpg"],
        "visit_time": "2026-11-28T10:15:00Z",
        **fields,
    }


# -- times ---------------------------------------------------------------------------------

TIMES = [
    "2026-11-28T10:15:00Z",
    "2026-11-28t10:15:00z",
    "2026-11-28 10:15:00",
    "2026-11-28T10:15:00+05:30",
    "2026-11-28T10:15:00-00:00",
    "2026-11-28T10:15:00.123456789Z",
    "2026-11-28T10:15:00.5+01:00",
    "  2026-11-28T10:15:00Z\n",
    "2026-11-28",
    "2026-11-28T10:15Z",
    "2026-13-01T00:00:00Z",
    "2026-02-30T00:00:00Z",
    "2026-11-28T24:00:00Z",
    "2026-11-28T10:15:00+24:00",
    "2026-11-28T10:15:00+0530",
    "28/11/2026",
    "",
    "\ud800",
    # Valid timestamps whose UTC form leaves datetime's range.
    "9999-12-31T23:59:59-01:00",
    "0001-01-01T00:00:00+01:00",
    "9999-12-31T23:59:59Z",
]


@pytest.mark.parametrize("text", TIMES)
def test_times_read_alike(text: str) -> None:
    assert client_reads(text) == service_reads(text)


def test_a_bad_time_is_explained_in_the_services_words() -> None:
    with pytest.raises(ValueError) as client_error:
        parse_timestamp("28/11/2026")
    with pytest.raises(ValueError) as service_error:
        service_parse_timestamp("28/11/2026")

    assert str(client_error.value) == str(service_error.value)


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.from_regex(
            r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})?",
            fullmatch=True,
        ),
        st.text(alphabet="0123456789-:TZz+. ", max_size=30),
        st.text(max_size=12),
    )
)
def test_generated_times_read_alike(text: str) -> None:
    assert client_reads(text) == service_reads(text)


# -- URLs and bodies ---------------------------------------------------------------------

URLS = [
    "http://h/a.jpg",
    "HTTPS://H",
    "https://h?x=1",
    "http://",
    "http:///a",
    "ftp://h/a.jpg",
    "//h/a.jpg",
    "http://h/a b.jpg",
    "http://h/\u00e9.jpg",
    "http://h/\x7f",
    "http://h/" + "a" * (LIMITS.url_length - 9),
    "http://h/" + "a" * (LIMITS.url_length - 8),
    "",
    "http://[::1/x.jpg",
    "http://[example.com]/x.jpg",
    "http://[::1]/x.jpg",
    "http://h:0/x.jpg",
    "http://h:99999/x.jpg",
    "http://h:443/x.jpg",
    "http://user@/x.jpg",
    "http://exa..mple.com/x.jpg",
]


@pytest.mark.parametrize("url", URLS)
def test_urls_are_judged_alike(url: str) -> None:
    assert (url_problem(url, LIMITS) is None) == service_accepts(
        {"count": 1, "visits": [visit(image_url=[url])]}
    )


BODIES: list[dict[str, Any]] = [
    {"count": 1, "visits": [visit()]},
    {"count": 1, "visits": [visit(extra="ignored")], "extra": 1},
    {"count": 2, "visits": [visit()]},
    {"count": 0, "visits": [visit()]},
    {"count": True, "visits": [visit()]},
    {"count": 1.0, "visits": [visit()]},
    {"count": "1", "visits": [visit()]},
    {"visits": [visit()]},
    {"count": 1},
    {"count": 0, "visits": []},
    {"count": 1, "visits": {}},
    {"count": 1, "visits": ["S1"]},
    {"count": 1, "visits": [{"store_id": "S1"}]},
    {"count": 1, "visits": [visit(store_id="")]},
    {"count": 1, "visits": [visit(store_id="   ")]},
    {"count": 1, "visits": [visit(store_id=" S1 ")]},
    {"count": 1, "visits": [visit(store_id="S" * 64)]},
    {"count": 1, "visits": [visit(store_id="S" * 65)]},
    {"count": 1, "visits": [visit(store_id=7)]},
    {"count": 1, "visits": [visit(image_url=[])]},
    {"count": 1, "visits": [visit(image_url="http://h/a.jpg")]},
    {"count": 1, "visits": [visit(image_url=["http://h/a.jpg", 3])]},
    {"count": 1, "visits": [visit(image_url=["http://h/a.jpg"] * LIMITS.urls_per_visit)]},
    {"count": 1, "visits": [visit(image_url=["http://h/a.jpg"] * (LIMITS.urls_per_visit + 1))]},
    {"count": 1, "visits": [visit(visit_time="2026-11-28")]},
    {"count": 1, "visits": [visit(visit_time=None)]},
    {
        "count": LIMITS.images_per_job // LIMITS.urls_per_visit,
        "visits": [visit(image_url=["http://h/a.jpg"] * LIMITS.urls_per_visit)]
        * (LIMITS.images_per_job // LIMITS.urls_per_visit),
    },
    {
        "count": LIMITS.images_per_job // LIMITS.urls_per_visit + 1,
        "visits": [visit(image_url=["http://h/a.jpg"] * LIMITS.urls_per_visit)]
        * (LIMITS.images_per_job // LIMITS.urls_per_visit)
        + [visit()],
    },
]


@pytest.mark.parametrize("body", BODIES, ids=range(len(BODIES)))
def test_bodies_are_judged_alike(body: dict[str, Any]) -> None:
    assert client_accepts(body) == service_accepts(body)


def test_every_bad_field_is_named() -> None:
    body = {"count": "2", "visits": [visit(store_id=""), visit(visit_time="28/11/2026")]}

    assert field_problems(body, LIMITS) == [
        "count must be an integer",
        "visits[0].store_id must not be empty",
        "visits[1].visit_time: '28/11/2026' is not an RFC 3339 timestamp; "
        "use a form like 2026-11-28T10:15:00Z",
    ]


_JSON_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-2, 3), st.floats(allow_nan=False), st.text(max_size=4)
)
_VISITS = st.fixed_dictionaries(
    {},
    optional={
        "store_id": st.one_of(st.sampled_from(["S1", " ", "", " S2 ", "S" * 65]), _JSON_SCALARS),
        "image_url": st.one_of(
            st.lists(st.one_of(st.sampled_from(URLS), _JSON_SCALARS), max_size=3), _JSON_SCALARS
        ),
        "visit_time": st.one_of(st.sampled_from(TIMES), _JSON_SCALARS),
        "note": _JSON_SCALARS,
    },
)
_BODIES = st.fixed_dictionaries(
    {},
    optional={
        "count": st.one_of(st.integers(-1, 4), _JSON_SCALARS),
        "visits": st.one_of(st.lists(st.one_of(_VISITS, _JSON_SCALARS), max_size=3), _JSON_SCALARS),
    },
)


@settings(max_examples=400, deadline=None)
@given(_BODIES)
def test_generated_bodies_are_judged_alike(body: dict[str, Any]) -> None:
    assert client_accepts(body) == service_accepts(body)
