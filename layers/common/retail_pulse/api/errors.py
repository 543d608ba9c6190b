"""Turn every way a request can be wrong into a status and a body a person can act on.

ERROR_STATUS below is the whole error contract of the use cases: each domain error
(retail_pulse.errors) and the status it answers. HTTP-level problems found before any use
case runs (a body too large, not UTF-8, not valid for its model) are BadRequest here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from retail_pulse import errors as domain

ERROR_STATUS: dict[type[domain.ServiceError], int] = {
    domain.UnknownJob: 400,  # body exactly {}: the SPEC's answer for an unknown job
    domain.InvalidRequest: 400,
    domain.NotInStoreMaster: 400,
    domain.KeyInProgress: 409,  # retry in a few seconds
    domain.KeyReused: 409,  # use a new key
    domain.StorageInterrupted: 503,  # send the same request again
    domain.WrongJobState: 409,  # the job's status does not allow it
    domain.NoExport: 404,  # POST /api/results/export first
}


def error_response(error: domain.ServiceError) -> tuple[int, dict[str, str]]:
    """The status and body for a domain error: the most specific entry of ERROR_STATUS."""
    status = next(ERROR_STATUS[c] for c in type(error).__mro__ if c in ERROR_STATUS)
    if isinstance(error, domain.UnknownJob):
        return status, {}  # no one learns whether the id exists
    return status, {"error": str(error)}


_TYPE_WORDS = {
    "int_type": "must be an integer",
    "int_parsing": "must be an integer",
    "string_type": "must be a string",
    "list_type": "must be a list",
    "model_type": "must be a JSON object",
    "model_attributes_type": "must be a JSON object",
    "dict_type": "must be a JSON object",
    "missing": "is required",
    "too_short": "must not be empty",
}

# The error type of a value whose own sentence starts with the value (checks.url_problem):
# "visits[1].image_url[3] 'http://[::1/x' is not a valid URL: ...", with no colon between.
SUBJECT_ERROR = "subject_invalid"
# describe_validation_errors words this many errors; past it, they are only counted. A 6 MB
# body can hold millions of bad items, and each sentence is work no reader wants.
_MAX_DESCRIBED = 100


class BadRequest(Exception):
    """A client error: the message is returned as the 400 body's `error`."""

    status_code = 400


class PayloadTooLarge(BadRequest):
    status_code = 413


def _path(loc: Sequence[Any]) -> str:
    # A tagged union's tag ("<body>", "<upload>": api/models.SubmitBody) is not a place.
    parts = [part for part in loc if not (isinstance(part, str) and part.startswith("<"))]
    if parts and parts[0] in ("body", "query", "header", "path"):
        parts = parts[1:]
    text = ""
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += ("." if text else "") + str(part)
    return text


def describe_validation_error(error: dict[str, Any]) -> str:
    """One sentence for one Pydantic/Powertools validation error."""
    loc = tuple(error.get("loc", ()))
    kind = error.get("type", "")
    where = _path(loc)
    if kind == SUBJECT_ERROR:
        return f"{where} {error.get('msg', 'is invalid')}"
    if kind == "json_invalid":
        detail = (error.get("ctx") or {}).get("error", "")
        return f"the request body is not valid JSON ({detail}); send a JSON object"
    if loc and loc[0] == "query" and kind == "missing":
        return f"query parameter '{where}' is required"
    if loc and loc[0] == "query":
        return f"query parameter '{where}': {error.get('msg', 'is invalid')}"
    if not where:
        if kind == "missing":
            return "the request body is missing; send a JSON object"
        if kind == "value_error":  # a rule of the whole body (SubmitRequest's size limits)
            return str(error.get("msg", "")).removeprefix("Value error, ")
        return "the request body must be a JSON object with 'count' and 'visits'"
    if kind == "value_error":
        message = str(error.get("msg", "")).removeprefix("Value error, ")
        return f"{where}: {message}"
    if kind == "too_short":
        return f"{where} must not be empty"
    if kind in ("greater_than_equal", "greater_than"):
        return f"{where} {error.get('msg', 'is too small').lower()}"
    words = _TYPE_WORDS.get(kind)
    if words:
        return f"{where} {words}"
    return f"{where}: {error.get('msg', 'is invalid')}"


def describe_validation_errors(errors: Sequence[dict[str, Any]]) -> str:
    """Join the first few errors; more than that would bury the first one.

    Linear in the number of errors: a dict keeps the distinct sentences (a list searched
    per error was quadratic, minutes for a body of 100,000 bad items), and past
    _MAX_DESCRIBED errors the rest are counted, not worded.
    """
    sentences: dict[str, None] = {}
    for error in errors[:_MAX_DESCRIBED]:
        sentences.setdefault(describe_validation_error(error), None)
    first = list(sentences)
    more = len(first) - 3 + max(0, len(errors) - _MAX_DESCRIBED)
    shown = "; ".join(first[:3])
    if more > 0:
        shown += f"; and {more} more"
    return shown
