"""Whatever a client sends, the API answers a documented 4xx or 2xx in JSON, never a 500.

Hypothesis drives the real handlers (submit, status, visits) with API Gateway proxy
events against moto: arbitrary JSON values and arbitrary bytes as submit bodies, valid
jobs with one field mutated, and arbitrary query strings. Every answer must be JSON with
the security headers, carry a status that openapi.json documents for the route, and, when
it is a 400 or 413 with an `error`, say something a person can read and no traceback.

The examples are the same on every run (derandomized) so CI is stable; explore further
with `FUZZ_EXAMPLES=2000 pytest tests/unit/test_api_resolver_fuzz.py`, which draws new ones.
"""

from __future__ import annotations

import json
import os
from datetime import datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from retail_pulse.api.resolver import MAX_JSON_DEPTH, SECURITY_HEADERS
from retail_pulse.settings import get_settings
from tests.integration.conftest import ApiResult, assert_documented
from tests.support.events import api_event
from tests.support.handlers import FakeContext, load_handler

_EXPLORE = os.environ.get("FUZZ_EXAMPLES")
FUZZ = settings(
    max_examples=int(_EXPLORE or 100),
    derandomize=not _EXPLORE,
    database=None,
    deadline=None,  # moto calls on a loaded machine vary; speed is not the property here
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

VALID_VISIT = {
    "store_id": "S00339218",
    "image_url": ["https://images.example/2.jpg"],
    "visit_time": "2026-11-28T10:15:00Z",
}

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
# Strings a JSON body can carry that st.text() never draws: lone surrogates, NUL, controls.
odd_strings = st.text(
    st.characters(codec=None, categories=["Cs", "Cc", "Zs", "Lo", "So"]), max_size=20
)
# Values that pass the first look of a field (a URL's scheme, a store id's shape) and hide
# the trouble further in: these get past the cheap checks to the deeper ones.
# "http://[" and "http://images.example:" reach urlsplit's IPv6 and port parsing.
plausible_strings = st.sampled_from(
    ["https://images.example/", "http://10.0.0.1/", "S0", "http://[", "http://images.example:"]
).flatmap(lambda prefix: (odd_strings | st.text(max_size=20)).map(lambda rest: prefix + rest))


def _rfc3339(moment: datetime, offset_minutes: int) -> str:
    sign = "+" if offset_minutes >= 0 else "-"
    hours, minutes = divmod(abs(offset_minutes), 60)
    return f"{moment.isoformat(timespec='seconds')}{sign}{hours:02d}:{minutes:02d}"


# Any datetime with any offset, a third of them on the first or last day datetime holds,
# where the UTC form of a valid timestamp can leave its range.
moments = (
    st.datetimes()
    | st.datetimes(max_value=datetime(1, 1, 1, 23, 59, 59))
    | st.datetimes(min_value=datetime(9999, 12, 31))
)
timestamps = st.builds(_rfc3339, moments, st.integers(-1439, 1439))
field_values = json_values | odd_strings | plausible_strings | timestamps


def _check(method: str, path: str, raw: dict[str, Any]) -> ApiResult:
    """The properties every answer has, whatever was asked."""
    result = ApiResult(raw)
    assert result.status_code < 500, (result.status_code, raw.get("body"))
    assert_documented(method, path, result.status_code)
    for name, value in SECURITY_HEADERS.items():
        assert result.headers.get(name) == value, (name, result.headers)
    text = raw.get("body") or ""
    assert "Traceback" not in text and 'File "' not in text, text
    if result.status_code in (400, 413) and result.body != {}:
        assert isinstance(result.body, dict), text
        error = result.body.get("error")
        assert isinstance(error, str) and error.strip(), text
    return result


def _submit(body: str | bytes | dict | list | None) -> ApiResult:
    event = api_event("POST", "/api/submit/", body=body)
    return _check(
        "POST", "/api/submit/", load_handler("submit").lambda_handler(event, FakeContext())
    )


@given(body=json_values)
@FUZZ
def test_any_json_value_as_a_submit_body(aws: Any, body: Any) -> None:
    result = _submit(json.dumps(body))
    # Only an object with count and visits can be a job.
    if not (isinstance(body, dict) and {"count", "visits"} <= set(body)):
        assert result.status_code == 400


@given(body=st.binary(max_size=200) | st.text(max_size=200) | odd_strings)
@FUZZ
def test_any_bytes_or_text_as_a_submit_body(aws: Any, body: bytes | str) -> None:
    _submit(body)


@given(when=timestamps)
@FUZZ
def test_any_timestamp_as_visit_time(aws: Any, when: str) -> None:
    result = _submit(json.dumps({"count": 1, "visits": [{**VALID_VISIT, "visit_time": when}]}))
    if result.status_code == 400:
        assert "is out of range" in result.body["error"], result.body


@given(depth=st.integers(0, 3000))
@FUZZ
def test_any_nesting_depth_in_an_ignored_field(aws: Any, depth: int) -> None:
    extra = "[" * depth + "0" + "]" * depth
    body = json.dumps({"count": 1, "visits": [VALID_VISIT]})[:-1] + f', "extra": {extra}}}'
    result = _submit(body)
    # The body object is level 1, so `extra` may hold MAX_JSON_DEPTH - 1 arrays.
    assert result.status_code == (201 if depth < MAX_JSON_DEPTH else 400), result.body


content_types = st.sampled_from(
    [
        "application/json",
        "application/json; charset=utf-8",
        "application/problem+json",
        "Application/JSON",
        " ; charset=utf-8",
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data",
        "multipart/form-data; boundary=x",
        "",
    ]
) | st.text(max_size=40)


@given(content_type=content_types, body=st.sampled_from(["{}", "a=1", "--x\r\n\r\n--x--"]))
@FUZZ
def test_any_content_type_with_a_body(aws: Any, content_type: str, body: str) -> None:
    event = api_event("POST", "/api/submit/", body=body, headers={"Content-Type": content_type})
    result = _check(
        "POST", "/api/submit/", load_handler("submit").lambda_handler(event, FakeContext())
    )
    assert result.status_code == 400


_FIELDS = ["count", "visits", "store_id", "image_url", "image_url[0]", "visit_time", "extra"]


@given(field=st.sampled_from(_FIELDS), value=field_values, delete=st.booleans())
@FUZZ
def test_a_valid_job_with_one_field_mutated(aws: Any, field: str, value: Any, delete: bool) -> None:
    job: dict[str, Any] = {"count": 1, "visits": [json.loads(json.dumps(VALID_VISIT))]}
    visit = job["visits"][0]
    if field in ("count", "visits", "extra"):
        target, key = job, field
    elif field == "image_url[0]":
        target, key = visit["image_url"], 0
    else:
        target, key = visit, field
    if delete and field != "extra":
        target.pop(key)  # a visit's only URL removed leaves an empty list: also invalid
    else:
        target[key] = value
    result = _submit(json.dumps(job))
    if field == "extra":
        assert result.status_code == 201, result.body  # unknown fields are ignored
    elif delete:
        assert result.status_code == 400, result.body


@given(jobid=st.none() | st.text(max_size=80) | odd_strings)
@FUZZ
def test_any_job_id_for_status(aws: Any, jobid: str | None) -> None:
    query = None if jobid is None else {"jobid": jobid}
    event = api_event("GET", "/api/status", query=query)
    result = _check(
        "GET", "/api/status", load_handler("status").lambda_handler(event, FakeContext())
    )
    # No job exists here, so no id can be a 200.
    assert result.status_code == 400


_VISIT_PARAMS = ["area", "storeid", "startdate", "enddate", "limit", "next"]
query_values = (
    st.text(max_size=40)
    | odd_strings
    | st.integers().map(str)
    | st.datetimes().map(lambda moment: moment.isoformat())
    | timestamps
)


@given(query=st.dictionaries(st.sampled_from(_VISIT_PARAMS), query_values, max_size=6))
@FUZZ
def test_any_query_for_visits(aws: Any, query: dict[str, str]) -> None:
    event = api_event("GET", "/api/visits", query=query or None)
    _check("GET", "/api/visits", load_handler("visits").lambda_handler(event, FakeContext()))


# The body limit, at its edge: refused before any parsing, with the sizes in the message.


@pytest.mark.parametrize("as_bytes", [False, True], ids=["text", "base64"])
def test_a_body_over_max_body_bytes_is_413_before_parsing(aws: Any, as_bytes: bool) -> None:
    limit = get_settings().max_body_bytes
    body = "{" * (limit + 1)  # not JSON either: the size is what is reported
    result = _submit(body.encode() if as_bytes else body)
    assert result.status_code == 413
    assert result.body == {
        "error": f"request body is {limit + 1} bytes; the limit is {limit} (MAX_BODY_BYTES): "
        "upload a larger job with POST /api/uploads, then POST /api/submit/ with its upload_id"
    }


def test_a_body_at_max_body_bytes_is_read(aws: Any) -> None:
    limit = get_settings().max_body_bytes
    unpadded = len(json.dumps({"count": 1, "visits": [VALID_VISIT], "pad": ""}))
    body = json.dumps({"count": 1, "visits": [VALID_VISIT], "pad": "x" * (limit - unpadded)})
    assert len(body.encode()) == limit
    assert _submit(body).status_code == 201


def test_multibyte_text_is_counted_in_bytes(aws: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAX_BODY_BYTES", "10")
    get_settings.cache_clear()
    try:
        result = _submit('"ééééé"')  # 7 characters, 12 bytes
    finally:
        monkeypatch.delenv("MAX_BODY_BYTES")
        get_settings.cache_clear()
    assert result.status_code == 413
    assert result.body["error"].startswith("request body is 12 bytes; the limit is 10")


def test_a_body_that_is_not_utf8_is_a_400_not_a_crash(aws: Any) -> None:
    result = _submit(b"\xff\xfe{}")
    assert result.status_code == 400
    assert result.body == {"error": "the request body is not UTF-8 text; send a JSON object"}


def test_multipart_without_a_boundary_is_read_as_json_not_a_crash(aws: Any) -> None:
    event = api_event(
        "POST", "/api/submit/", body="{}", headers={"Content-Type": "multipart/form-data"}
    )
    result = _check(
        "POST", "/api/submit/", load_handler("submit").lambda_handler(event, FakeContext())
    )
    assert result.status_code == 400
    assert "count" in result.body["error"]
