"""RFC 3339 timestamps as the service reads and writes them: one parser for the API's
bodies, its query parameters and the visits logic, so all three agree on every edge."""

from __future__ import annotations

import re
from datetime import UTC, datetime

# RFC 3339 needs a full date and time; the offset is optional here (no offset means UTC).
_RFC3339 = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})?$"
)
OUT_OF_RANGE = "is out of range: times must fall between 0001-01-01 and 9999-12-31 in UTC"


def shown(text: str) -> str:
    """`text` fit to quote in an error message: characters UTF-8 cannot carry (lone
    surrogates from a JSON escape) are written as escapes; Pydantic fails on them."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def parse_timestamp(value: str) -> datetime:
    """Parse an RFC 3339 timestamp to an aware UTC datetime; no offset means UTC."""
    text = value.strip()
    if not _RFC3339.match(text):
        raise ValueError(
            f"'{shown(value)}' is not an RFC 3339 timestamp; use a form like 2026-11-28T10:15:00Z"
        )
    text = text.replace("z", "Z").replace("Z", "+00:00")
    fraction = re.search(r"\.(\d+)", text)
    if fraction and len(fraction.group(1)) > 6:  # datetime keeps microseconds only
        text = text.replace(fraction.group(0), "." + fraction.group(1)[:6])
    try:
        parsed = datetime.fromisoformat(text.replace("t", "T"))
    except ValueError as exc:
        raise ValueError(f"'{shown(value)}' is not a valid date and time ({exc})") from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except OverflowError as exc:
        # 9999-12-31T23:59:59-01:00 is a valid timestamp whose UTC form is in year 10000,
        # which datetime cannot hold (and 0001-01-01T00:00:00+01:00 in year 0). A
        # ValueError, so every caller (and Pydantic) reports it as the bad input it is.
        raise ValueError(f"'{shown(value)}' {OUT_OF_RANGE}") from exc


def format_timestamp(moment: datetime) -> str:
    """RFC 3339 in UTC with a Z, to the second unless the moment has microseconds."""
    moment = moment.astimezone(UTC)
    spec = "seconds" if moment.microsecond == 0 else "microseconds"
    return moment.isoformat(timespec=spec).replace("+00:00", "Z")
