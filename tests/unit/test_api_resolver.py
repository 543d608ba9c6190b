"""Requests built to break the API, each through the real handler: never a 500.

Each kind here once answered a 500 or raised out of the handler: times whose UTC form
leaves datetime's range, bodies nested past the parser's recursion limit or holding a
number over Python's digit limit, crafted `next` tokens, URLs that `urlsplit` refuses or
misreads. Each must now be a 400 whose `error` says what was wrong, while the valid values
at each edge are still accepted. Bodies of millions of bad items, once minutes of error
formatting (a gateway timeout), must be quick 400s. The last section makes a use case
raise for real and checks that the 500 left for our own bugs is JSON, names the request
id and logs the traceback.
"""

from __future__ import annotations

import base64
import io
import json
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from retail_pulse.api.errors import describe_validation_errors
from retail_pulse.api.resolver import MAX_JSON_DEPTH, SECURITY_HEADERS
from retail_pulse.data.models import JobRecord, StoreRecord
from retail_pulse.settings import get_settings
from retail_pulse.visits.query import BAD_TOKEN
from tests.integration.conftest import ApiResult
from tests.support.events import api_event
from tests.support.handlers import FakeContext, load_handler

STORE = "S00339218"
A = "https://images.example/a.jpg"
OUT_OF_RANGE = "is out of range: times must fall between 0001-01-01 and 9999-12-31 in UTC"


@pytest.fixture
def store(aws: Any) -> str:
    StoreRecord(store_id=STORE, area_code="710006", store_name="BHARAT STORE").save()
    return STORE


def call(name: str, method: str, path: str, **kwargs: Any) -> ApiResult:
    """The function's real lambda_handler on an API Gateway proxy event."""
    raw = load_handler(name).lambda_handler(api_event(method, path, **kwargs), FakeContext())
    result = ApiResult(raw)
    for header, value in SECURITY_HEADERS.items():
        assert result.headers.get(header) == value, (header, result.headers)
    return result


def submit(body: str | dict[str, Any] | list[Any]) -> ApiResult:
    return call("submit", "POST", "/api/submit/", body=body)


def visits(**query: str) -> ApiResult:
    return call("visits", "GET", "/api/visits", query=query)


def job(*visits: dict[str, Any]) -> dict[str, Any]:
    return {"count": len(visits), "visits": list(visits)}


def visit(urls: list[Any], when: str = "2026-11-28T10:15:00Z") -> dict[str, Any]:
    return {"store_id": STORE, "image_url": urls, "visit_time": when}


def assert_400(result: ApiResult, *words: str) -> str:
    assert result.status_code == 400, result.body
    assert set(result.body) == {"error"}, result.body
    for word in words:
        assert word in result.body["error"], result.body["error"]
    return result.body["error"]


# -- 1. times whose UTC form is outside datetime's range ------------------------------------


@pytest.mark.parametrize("when", ["9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+01:00"])
def test_a_visit_time_beyond_the_utc_range_is_a_400(aws: Any, when: str) -> None:
    result = submit(job(visit([A]), visit([A], when)))
    assert assert_400(result) == f"visits[1].visit_time: '{when}' {OUT_OF_RANGE}"
    assert list(JobRecord.scan()) == []


@pytest.mark.parametrize(
    ("when", "stored"),
    [
        ("9999-12-31T23:59:59Z", "9999-12-31T23:59:59Z"),
        ("9999-12-31T23:59:59+01:00", "9999-12-31T22:59:59Z"),
        ("0001-01-01T00:00:00Z", "0001-01-01T00:00:00Z"),
        ("0001-01-01T00:00:00-01:00", "0001-01-01T01:00:00Z"),
    ],
)
def test_the_edges_of_the_range_are_accepted(store: str, when: str, stored: str) -> None:
    from retail_pulse.data.manifest import submitted_images
    from retail_pulse.data.models import ImageRecord
    from retail_pulse.domain import ImageSuccess
    from tests.support.filing import file_result

    result = submit(job(visit([A], when)))
    assert result.status_code == 201, result.body
    job_id = result.body["job_id"]
    # Kept in the job's manifest as submitted, in UTC; and so in the image's record once
    # its result is filed (submit writes none for an image it enqueues).
    (image,) = submitted_images(job_id)
    assert image.visit_time == stored
    success = ImageSuccess(perimeter=4, width=1, height=1, store_id=STORE, area="710006")
    assert file_result(job_id, 0, success)
    assert ImageRecord.get(job_id, 0, consistent_read=True).visit_time == stored


@pytest.mark.parametrize(
    ("query", "message"),
    [
        (
            {"startdate": "0001-01-01T00:00:00+01:00"},
            f"startdate: '0001-01-01T00:00:00+01:00' {OUT_OF_RANGE}",
        ),
        (
            {"enddate": "9999-12-31T23:59:59-01:00"},
            f"enddate: '9999-12-31T23:59:59-01:00' {OUT_OF_RANGE}",
        ),
    ],
)
def test_visits_dates_beyond_the_utc_range_are_400s(
    store: str, query: dict[str, str], message: str
) -> None:
    assert assert_400(visits(storeid=store, **query)) == message


@pytest.mark.parametrize(
    "query",
    [
        {"enddate": "9999-12-31"},  # the end of that day: once a day added past year 9999
        {"startdate": "0001-01-01"},
        {"startdate": "0001-01-01", "enddate": "9999-12-31"},
        {"startdate": "0001-01-01T00:00:00Z", "enddate": "9999-12-31T23:59:59.999999Z"},
    ],
)
def test_visits_dates_at_the_edges_of_the_range_are_read(store: str, query: dict[str, str]) -> None:
    result = visits(storeid=store, **query)
    assert result.status_code == 200, result.body
    assert result.body == {"results": []}


# -- 2. bodies the JSON parser cannot read ---------------------------------------------------


def nested(depth: int, inner: str = "1") -> str:
    return "[" * depth + inner + "]" * depth


@pytest.mark.parametrize(
    "body",
    [
        '{"count": 1, "visits": ' + nested(3000) + "}",
        nested(3000),
        "[" * 3000,  # never closed: the depth is what is reported
        '{"a":' * 3000 + "1" + "}" * 3000,
        '{"count": 1, "visits": ['
        + json.dumps(visit([A]))[:-1]
        + ', "extra": '
        + nested(MAX_JSON_DEPTH - 2)  # 3 levels to the visit, so 33 in all
        + "}]}",
    ],
    ids=["visits", "bare-array", "unclosed", "objects", "just-over-the-limit"],
)
def test_a_body_nested_too_deeply_is_a_400(aws: Any, body: str) -> None:
    assert_400(submit(body), f"the request body is nested too deeply (over {MAX_JSON_DEPTH} levels")


def test_a_body_nested_up_to_the_limit_is_read(store: str) -> None:
    # The job itself is 4 levels deep; an ignored extra field takes it to the limit exactly.
    body = job(visit([A]))
    body["visits"][0]["extra"] = json.loads(nested(MAX_JSON_DEPTH - 3))
    assert submit(body).status_code == 201


@pytest.mark.parametrize(
    "body",
    [
        '{"count": ' + "1" * 5000 + ', "visits": []}',
        '{"count": 1, "visits": [], "extra": -' + "9" * 5000 + "}",
        "1" * 5000,
        json.dumps(job(visit([A])))[:-1] + ', "extra": [' + "7" * 4301 + "]}",
    ],
    ids=["count", "extra", "bare", "just-over-the-limit"],
)
def test_a_number_over_the_digit_limit_is_a_400(aws: Any, body: str) -> None:
    limit = sys.get_int_max_str_digits()
    assert_400(submit(body), f"the request body has a number with more than {limit} digits")


def test_a_number_at_the_digit_limit_is_read(aws: Any) -> None:
    count = "1" * sys.get_int_max_str_digits()
    error = assert_400(
        submit('{"count": ' + count + ', "visits": [' + json.dumps(visit([A])) + "]}")
    )
    assert error.startswith("count is 111") and "but visits has 1 entries" in error


# -- 3. crafted next tokens -------------------------------------------------------------------


def token(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def forge(payload: Any) -> str:
    return token(json.dumps(payload).encode())


@pytest.mark.parametrize(
    "next_token",
    [
        token(b"[" * 1500),
        token(b"[" * 1500 + b"]" * 1500),
        token(b'{"v":' * 600 + b"1" + b"}" * 600),
        forge({"v": int("9" * 3000)}),
        forge({"v": float("inf"), "q": [None] * 4, "p": STORE, "k": "x"}),
        forge({"v": True, "q": [None, STORE, None, None], "p": STORE, "k": "x"}),
        forge({"v": 1, "q": {"a": 1}, "p": [STORE], "k": 7}),
        forge([1, 2, 3]),
        token(b"\xff\xfe\xfd"),
        token('{"v": 1}'.encode("utf-16")),
        token(b'{"v": 1, "k": "\xc3\x28"}'),
    ],
    ids=[
        "1500-brackets",
        "1500-closed",
        "deep-objects",
        "huge-number",
        "infinity",
        "bool-version",
        "wrong-types",
        "a-list",
        "not-utf8",
        "utf16",
        "bad-utf8-inside",
    ],
)
def test_a_crafted_next_token_is_the_bad_token_400(store: str, next_token: str) -> None:
    assert assert_400(visits(storeid=store, next=next_token)) == BAD_TOKEN


# -- 4. image URLs that do not split, or split into something unusable ------------------------


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://[::1/x.jpg", "its IPv6 host has no closing ']'"),
        ("http://[example.com]/x.jpg", "'example.com' in brackets is not an IPv6 address"),
        ("http://[v1.x]/x.jpg", "'v1.x' in brackets is not an IPv6 address"),
        ("http://[::1]junk/x.jpg", "only ':' and a port may follow its IPv6 host"),
        (
            "http://example.com]/x.jpg",
            "its host has a '[' or ']' that is not around an IPv6 address",
        ),
        ("http://example.com:0/x.jpg", "its port must be a number from 1 to 65535"),
        ("http://example.com:65536/x.jpg", "its port must be a number from 1 to 65535"),
        (
            "http://example.com:99999999999999999999/x.jpg",
            "its port must be a number from 1 to 65535",
        ),
        ("http://example.com:http/x.jpg", "its port must be a number from 1 to 65535"),
        ("http://example.com:+80/x.jpg", "its port must be a number from 1 to 65535"),
        ("http://user@/x.jpg", "it has no host"),
        ("http://:8080/x.jpg", "it has no host"),
        (
            "http://exa..mple.com/x.jpg",
            "its host 'exa..mple.com' is not a valid host name (each dot-separated part must "
            "be 1 to 63 characters)",
        ),
        (
            f"http://{'a' * 64}.example/x.jpg",
            f"its host '{'a' * 64}.example' is not a valid host name (each dot-separated part "
            "must be 1 to 63 characters)",
        ),
    ],
)
def test_an_image_url_that_is_not_a_valid_url_is_a_400_naming_its_position(
    aws: Any, url: str, why: str
) -> None:
    urls = [A, A, A, url]
    error = assert_400(submit(job(visit([A]), visit(urls))))
    assert error == f"visits[1].image_url[3] '{url}' is not a valid URL: {why}"


@pytest.mark.parametrize(
    ("url", "words"),
    [
        (
            "ftp://example.com/x.jpg",
            "visits[0].image_url[0] 'ftp://example.com/x.jpg' is not an http or https URL",
        ),
        (
            "http://exa mple.com/x.jpg",
            "visits[0].image_url[0] is not an http or https URL: it "
            "contains a space or an unprintable character",
        ),
        ("http://example.com/\x00.jpg", "visits[0].image_url[0] is not an http or https URL"),
        ("http://example.com/\ud800.jpg", "visits[0].image_url[0] is not an http or https URL"),
        ("//example.com/x.jpg", "is not an http or https URL"),
    ],
)
def test_urls_refused_before_splitting_keep_their_messages(aws: Any, url: str, words: str) -> None:
    assert_400(submit(job(visit([url]))), words)


def test_every_bad_url_is_named_up_to_three(aws: Any) -> None:
    urls = [A, "http://[::1/a", A, "ftp://x/b", "http://h:0/c", "http://[x]/d"]
    error = assert_400(submit(job(visit(urls))))
    assert error.startswith("visits[0].image_url[1] 'http://[::1/a' is not a valid URL")
    assert "visits[0].image_url[3] 'ftp://x/b'" in error
    assert "visits[0].image_url[4] 'http://h:0/c'" in error
    assert error.endswith("; and 1 more")


@pytest.mark.parametrize(
    "url",
    [
        "http://[::1]:8080/x.jpg",  # a literal address splits; the fetcher's SSRF guard decides
        "http://[2001:db8::1]/x.jpg",
        "https://bücher.example/x.jpg",
        "HTTPS://IMAGES.EXAMPLE:65535/x.jpg",
        "http://images.example:1/x.jpg",
        "http://user:secret@images.example/x.jpg",
        "http://images.example:/x.jpg",  # an empty port is the scheme's default (RFC 3986)
        "http://images.example/a[1].jpg?b=]",  # brackets outside the host are the path's
    ],
)
def test_valid_urls_are_accepted(store: str, url: str) -> None:
    result = submit(job(visit([url])))
    assert result.status_code == 201, result.body


# -- bounds before per-item validation: a 6 MB body of bad items is a quick 400 ------------------


@pytest.fixture
def small_limits(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("MAX_IMAGES_PER_JOB", "3")
    monkeypatch.setenv("MAX_URLS_PER_VISIT", "2")
    get_settings.cache_clear()
    yield
    monkeypatch.undo()
    get_settings.cache_clear()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            job(visit([42, 42, 42])),
            "visits[0].image_url: a visit may have at most 2 image URLs (limit "
            "MAX_URLS_PER_VISIT); this one has 3: split it into more visits",
        ),
        (
            job(visit([A, 1]), visit([2, A])),
            "the job has 4 images; the limit is 3 per job (MAX_IMAGES_PER_JOB): split it "
            "into several jobs",
        ),
        (
            {"count": 1, "visits": [{}, {}, {}, {}]},
            "the job has 4 visits; the limit is 3 images per job (MAX_IMAGES_PER_JOB) and "
            "each visit has at least one: split it into several jobs",
        ),
    ],
)
def test_size_limits_are_checked_before_each_item(
    aws: Any, small_limits: None, body: dict[str, Any], message: str
) -> None:
    assert assert_400(submit(body)) == message


def test_a_huge_list_of_bad_urls_is_answered_quickly(aws: Any) -> None:
    """Each bad item is one validation error: of the 10,000 the limits let through, the first
    three are described in words and the rest counted (how long it takes: make bench)."""
    urls: list[Any] = [1] * get_settings().max_urls_per_visit
    body = job(*(visit(urls) for _ in range(10)))
    error = assert_400(submit(body), "visits[0].image_url[0] must be a string")
    assert error.endswith("; and 9997 more")


@pytest.mark.parametrize(
    ("visit_count", "urls", "words"),
    [
        (1, 2_000_000, "the job has 2000000 images; the limit is 50000 per job"),
        (700_000, 0, "the job has 700000 visits; the limit is 50000 images per job"),
        (2_500, 1_000, "the job has 2500000 images; the limit is 50000 per job"),
    ],
    ids=["one-visit", "many-visits", "many-urls"],
)
def test_a_body_of_millions_of_bad_items_is_a_quick_400(
    aws: Any, visit_count: int, urls: int, words: str
) -> None:
    """Under MAX_BODY_BYTES, yet millions of items, each a validation error: the limits
    are checked before any item (the answer names the limit, not an item), so this is a 400
    in well under API Gateway's 29 s."""
    bad_visit = '{"image_url": [' + ",".join(["1"] * urls) + "]}" if urls else "{}"
    body = '{"count": 1, "visits": [' + ",".join([bad_visit] * visit_count) + "]}"
    assert len(body) <= get_settings().max_body_bytes
    error = assert_400(submit(body), words)
    assert "visits[" not in error  # no item was described


def test_describing_many_validation_errors_words_three_and_counts_the_rest() -> None:
    errors = [
        {"type": "string_type", "loc": ("body", "visits", 0, "image_url", i), "msg": "x"}
        for i in range(200_000)
    ]
    text = describe_validation_errors(errors)  # how long: python -m bench.validation_errors
    assert text == (
        "visits[0].image_url[0] must be a string; visits[0].image_url[1] must be a string; "
        "visits[0].image_url[2] must be a string; and 199997 more"
    )


# -- 5. our own bugs: a JSON 500 with the request id, and the traceback in the log -------------


@pytest.fixture
def log() -> Iterator[io.StringIO]:
    """What the Powertools logger writes (its handler keeps the stream of import time)."""
    from retail_pulse.observability import logger

    stream = io.StringIO()
    handler = logger.registered_handler
    original = handler.stream
    handler.stream = stream
    yield stream
    handler.stream = original


def _broken(*_: Any, **__: Any) -> Any:
    raise RuntimeError("the use case broke")


@pytest.mark.parametrize(
    ("name", "use_case", "method", "path", "kwargs"),
    [
        ("status", "job_status", "GET", "/api/status", {"query": {"jobid": "a-job"}}),
        ("visits", "find_visits", "GET", "/api/visits", {"query": {"storeid": STORE}}),
        ("submit", "submit_job", "POST", "/api/submit/", {"body": job(visit([A]))}),
    ],
)
def test_an_unexpected_error_is_a_json_500_with_the_request_id_and_is_logged(
    aws: Any,
    log: io.StringIO,
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    use_case: str,
    method: str,
    path: str,
    kwargs: dict[str, Any],
) -> None:
    monkeypatch.setattr(load_handler(name), use_case, _broken)
    request_id = FakeContext.aws_request_id

    result = call(name, method, path, **kwargs)

    assert result.status_code == 500
    assert result.body == {
        "error": f"internal error; it has been logged (request id {request_id})",
        "request_id": request_id,
    }
    assert "the use case broke" not in result.raw["body"]  # no detail leaks to the client
    lines = [json.loads(line) for line in log.getvalue().splitlines() if line.startswith("{")]
    errors = [line for line in lines if line.get("level") == "ERROR"]
    assert len(errors) == 1, lines
    assert errors[0]["exception_name"] == "RuntimeError"
    assert "Traceback" in errors[0]["exception"]
    assert "RuntimeError: the use case broke" in errors[0]["exception"]
    assert errors[0]["function_request_id"] == request_id


def test_a_bad_request_is_still_a_400_not_the_catch_all(aws: Any, log: io.StringIO) -> None:
    assert call("status", "GET", "/api/status").status_code == 400
    assert '"level":"ERROR"' not in log.getvalue()


def _lines(log: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.getvalue().splitlines() if line.startswith("{")]


def test_an_error_outside_the_route_is_a_json_500_too(
    aws: Any, log: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Powertools' exception handlers only see the route; the resolver's own net catches
    what is raised around it (here, while the event is prepared)."""
    from retail_pulse.api import resolver

    monkeypatch.setattr(resolver, "as_json_request", _broken)
    result = call("status", "GET", "/api/status", query={"jobid": "a-job"})

    assert result.status_code == 500
    assert result.body["request_id"] == FakeContext.aws_request_id
    errors = [line for line in _lines(log) if line.get("level") == "ERROR"]
    assert [e["exception_name"] for e in errors] == ["RuntimeError"]


def test_a_response_that_breaks_its_declared_model_is_a_json_500(
    aws: Any, log: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(load_handler("status"), "job_status", lambda _: {"status": "lost"})
    result = call("status", "GET", "/api/status", query={"jobid": "a-job"})

    assert result.status_code == 500
    assert result.body["error"].startswith("internal error; it has been logged (request id ")
    assert [e["message"] for e in _lines(log) if e.get("level") == "ERROR"] == ["unhandled error"]
