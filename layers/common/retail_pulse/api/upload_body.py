"""An uploaded job's body, read as a stream: the JSON body POST /api/submit/ takes (`count`,
`visits`, optional `callback_url`), parsed with ijson one visit at a time and checked by the
submit body's own rules (api/models.Visit, JobFields), so memory holds one visit, never the
body. A body that breaks a rule raises UploadInvalid with the sentence the 400 would have
had, and where: `visits[812].image_url[3] 'htp://x' is not a valid URL: ...`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, BinaryIO

import ijson
from ijson.common import ObjectBuilder
from pydantic import ValidationError

from retail_pulse.api.checks import too_many_uploaded_images
from retail_pulse.api.errors import describe_validation_errors
from retail_pulse.api.models import JobFields, Visit
from retail_pulse.domain import VisitRequest
from retail_pulse.errors import UploadInvalid

_OPEN = ("start_map", "start_array")
_CLOSE = ("end_map", "end_array")
_HINT = "upload the JSON body POST /api/submit/ takes: {count, visits, callback_url}"


class UploadedBody:
    """One pass over an uploaded body. `visits()` yields its visits, validated, in order;
    once it is exhausted the body was valid as a whole (count matches, within the limits)
    and `callback_url` is its callback."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self.callback_url: str | None = None
        self.visit_count = 0
        self.image_count = 0

    def visits(self) -> Iterator[VisitRequest]:
        fields: dict[str, Any] = {}
        seen_visits = False
        try:
            events = ijson.basic_parse(self._stream, use_float=True)
            first = next(events, None)
            if first is None or first[0] != "start_map":
                raise UploadInvalid(f"the upload must be a JSON object; {_HINT}")
            key: str | None = None
            for event, value in events:
                if event == "map_key":
                    key = value
                    continue
                if event == "end_map":
                    break
                if key == "visits" and event == "start_array":
                    seen_visits = True
                    yield from self._visits(events)
                elif key in ("count", "callback_url") and event not in _OPEN:
                    fields[key] = value
                else:
                    _skip(events, event)
            if next(events, None) is not None:
                raise UploadInvalid(f"the upload has more after its JSON object; {_HINT}")
        except ijson.JSONError as error:
            raise UploadInvalid(
                f"the upload is not valid JSON ({_reason(error)}) after visits"
                f"[{self.visit_count - 1}]; {_HINT}"
                if self.visit_count
                else f"the upload is not valid JSON ({_reason(error)}); {_HINT}"
            ) from error
        self._check_fields(fields, seen_visits)

    def _visits(self, events: Iterator[tuple[str, Any]]) -> Iterator[VisitRequest]:
        for event, value in events:
            if event == "end_array":
                return
            index = self.visit_count
            item = _build(events, event, value)
            try:
                visit = Visit.model_validate(item)
            except ValidationError as error:
                located = [{**e, "loc": ("visits", index, *e["loc"])} for e in error.errors()]
                raise UploadInvalid(describe_validation_errors(located)) from None
            self.visit_count += 1
            self.image_count += len(visit.image_url)
            problem = too_many_uploaded_images(self.image_count)
            if problem is not None:
                raise UploadInvalid(f"visits[{index}]: {problem}")
            yield VisitRequest(
                store_id=visit.store_id,
                image_url=tuple(visit.image_url),
                visit_time=visit.visit_time,
            )

    def _check_fields(self, fields: dict[str, Any], seen_visits: bool) -> None:
        if not seen_visits:
            raise UploadInvalid(f"visits is missing or not a list; {_HINT}")
        if self.visit_count == 0:
            raise UploadInvalid("visits must not be empty")
        try:
            checked = JobFields.model_validate(fields)
        except ValidationError as error:
            raise UploadInvalid(
                describe_validation_errors([dict(e) for e in error.errors()])
            ) from None
        if checked.count != self.visit_count:
            raise UploadInvalid(
                f"count is {checked.count} but visits has {self.visit_count} entries; "
                "they must match"
            )
        self.callback_url = checked.callback_url


def _build(events: Iterator[tuple[str, Any]], event: str, value: Any) -> Any:
    """The value that starts with (event, value), read to its end (one visit)."""
    if event not in _OPEN:
        return value
    builder = ObjectBuilder()
    builder.event(event, value)
    depth = 1
    for event, value in events:
        builder.event(event, value)
        depth += 1 if event in _OPEN else -1 if event in _CLOSE else 0
        if depth == 0:
            break
    return builder.value


def _skip(events: Iterator[tuple[str, Any]], event: str) -> None:
    """Read past a value of no interest (an unknown field) without keeping it."""
    if event not in _OPEN:
        return
    depth = 1
    for event, _ in events:
        depth += 1 if event in _OPEN else -1 if event in _CLOSE else 0
        if depth == 0:
            return


def _reason(error: Exception) -> str:
    text = str(error).strip() or type(error).__name__
    return text[:200]
