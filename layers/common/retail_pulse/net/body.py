"""Reading an answer's body under a byte cap and the attempt's deadline, or dropping it;
and the numbers a host writes in its headers, read strictly."""

from __future__ import annotations

import contextlib
import re
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Protocol

import requests

from retail_pulse.net.classify import classify
from retail_pulse.net.deadline import Attempt
from retail_pulse.net.errors import BodyTooLarge, PermanentRequestError

# The most one read takes: the byte cap is checked after each, so a body never overshoots it
# by more. read1 returns what has arrived, so a slow host is not waited on to fill it. Just
# under the process function's MALLOC_MMAP_THRESHOLD_ (128 KiB), so each read's buffer comes
# from the heap and is reused, where a larger one is a fresh mapping to fault in. The
# bench's photos (1.4 MB on average), fetched and measured on 100 threads with the
# function's malloc settings: 3.35 ms of CPU per image in 64 KB reads appended to a growing
# buffer, 3.2 ms in 256 KB reads into one buffer of the declared size, 2.2 ms in 120 KB ones.
_CHUNK_BYTES = 120 * 1024
_MIB = 1024 * 1024
# Content-Length and Retry-After: ASCII digits only (str.isdigit() also accepts "²", which
# int() then rejects), and few enough that int() is cheap and cannot hit Python's
# int-from-string digit limit. 15 digits is about 1 PB, far past any byte cap.
_MAX_DIGITS = 15
_DIGITS = re.compile(r"[0-9]+")


class Hold(Protocol):
    """hold(total, timeout_s, up_to=...): the caller now holds `total` bytes for this body,
    having waited at most `timeout_s` for them; `up_to` (for a body without a declared
    length) is what it may grow to. What it raises when they cannot be had reaches the
    caller unchanged."""

    def __call__(self, total: int, timeout_s: float, *, up_to: int | None = None) -> None: ...


# A body without a Content-Length is held in steps of this much as it grows: one wait on
# the caller's budget per megabyte, not per read.
HOLD_STEP_BYTES = 1024 * 1024


def read_capped(
    response: requests.Response,
    url: str,
    cap: int,
    attempt: Attempt,
    hold: Hold | None = None,
) -> bytearray:
    """The body, failing on the byte cap (BodyTooLarge) or the deadline, whichever comes
    first.

    `hold` is told the bytes the body needs before they are read: its Content-Length once
    that is known to be within the cap, or (without one) what has been read so far, in
    steps of HOLD_STEP_BYTES as the body grows, never more than the cap. It is given the
    attempt's time left to wait in.
    """
    declared = _declared_length(response, url, cap)
    held = 0  # what `hold` was last told
    if declared is not None and hold is not None:
        held = declared
        hold(held, attempt.remaining())
    # The body is read into one buffer of the declared size, in place: growing a buffer
    # chunk by chunk and copying it into bytes at the end mapped, faulted in and copied
    # each body two or three times over (see _CHUNK_BYTES). Without a declared size, or
    # past it, the buffer grows, and so does what is held for it.
    body = bytearray(declared if declared is not None else 0)
    filled = 0
    while chunk := _read_some(response, url, attempt):
        end = filled + len(chunk)
        if end > cap:
            raise too_large(cap, url)
        if hold is not None and end > held:
            held = min(cap, max(end, held + HOLD_STEP_BYTES))
            hold(held, attempt.remaining(), up_to=None if declared is not None else cap)
        if end <= len(body):
            body[filled:end] = chunk
        else:
            del body[filled:]
            body += chunk
        filled = end
        attempt.remaining()
    del body[filled:]  # a body shorter than declared (urllib3 raises on one first)
    return body


def _read_some(response: requests.Response, url: str, attempt: Attempt) -> bytes:
    """What has arrived, up to _CHUNK_BYTES; b"" at the end of the body."""
    try:
        # read1 returns whatever has arrived. Not decoded: the caller let only identity
        # through, and nothing here should ever inflate a body.
        return response.raw.read1(_CHUNK_BYTES, decode_content=False)
    except Exception as err:
        if attempt.is_over():
            raise attempt.timed_out() from err
        raise classify(err, url, reading=True) from err


def _declared_length(response: requests.Response, url: str, cap: int) -> int | None:
    """The Content-Length, if the host sent one; refused when it is malformed or over `cap`."""
    declared = response.headers.get("Content-Length")
    if declared is None:
        return None
    # http.client reads the length with int(), which also takes "1_0", "+5" and
    # Arabic-Indic digits: a length it reads one way and we another is a framing
    # disagreement, so it is refused rather than guessed at.
    declared = declared.strip(" \t")
    if not _DIGITS.fullmatch(declared):
        raise PermanentRequestError(f"invalid Content-Length header from {url}")
    if len(declared) > _MAX_DIGITS or int(declared) > cap:
        raise too_large(cap, url)
    return int(declared)


def too_large(cap: int, url: str) -> BodyTooLarge:
    return BodyTooLarge(f"body larger than {format_bytes(cap)}: {url}", cap=cap, url=url)


def discard_body(response: requests.Response, attempt: Attempt, limit: int) -> None:
    """Read and drop the start of the answer, at most `limit` bytes. Its status line and
    headers have decided the outcome already, so a body that trickles, breaks off or
    outlasts the deadline (the watchdog ends the read) changes nothing: whatever reading it
    raises is ignored."""
    left = limit
    with contextlib.suppress(Exception):
        while left > 0 and not attempt.is_over():
            chunk = response.raw.read1(min(_CHUNK_BYTES, left), decode_content=False)
            if not chunk:
                return
            left -= len(chunk)


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (delay-seconds or HTTP-date), or None.

    Anything else, including digits that are not ASCII, is ignored: the caller's own
    backoff applies.
    """
    if not value or not value.strip():
        return None
    value = value.strip()
    if _DIGITS.fullmatch(value):
        return float(value) if len(value) <= _MAX_DIGITS else None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    try:
        return max(0.0, (when - datetime.now(UTC)).total_seconds())
    except OverflowError:
        return None


def format_bytes(n: int) -> str:
    """The cap as people read it: "20 MB" (1 MB = 2**20 bytes, like MAX_IMAGE_BYTES)."""
    return f"{n / _MIB:g} MB" if n >= _MIB else f"{n:,} bytes"
