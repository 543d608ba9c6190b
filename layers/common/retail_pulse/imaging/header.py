"""What every header reader shares: the bytes it reads, and the error that says why a
recognised format gives no size."""

from __future__ import annotations

from collections.abc import Callable


class Unreadable(Exception):
    """A recognised format whose header gives no size; the message says why, for a person."""


# An image as downloaded: the process function reads a body into one bytearray in place
# (imaging/download.py) and measures it without copying it into bytes.
Encoded = bytes | bytearray
Reader = Callable[[Encoded], tuple[int, int, str]]


def u16be(data: Encoded, at: int) -> int:
    return (data[at] << 8) | data[at + 1]
