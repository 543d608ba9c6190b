"""GIF's size, as Pillow reads it: the logical screen, enlarged to the first image's extent
where that is larger, walking extension sub-blocks by their length (imaging/measure.py says
why readers of our own)."""

from __future__ import annotations

import struct

from retail_pulse.imaging.header import Encoded, Unreadable

MAX_GIF_BLOCKS = 10_000  # blocks and sub-blocks before the first image: 2.5 MB of 255s


def read_gif(data: Encoded) -> tuple[int, int, str]:
    end_of_data = len(data)
    if end_of_data < 13:
        raise Unreadable("GIF header is cut short")
    width, height, flags = struct.unpack_from("<HHB", data, 6)
    pos = 13
    if flags & 0x80:
        pos += 3 << ((flags & 7) + 1)  # the global colour table
    next_block = _BlockFinder(data)
    in_extension = False
    for _ in range(MAX_GIF_BLOCKS):
        if pos >= end_of_data:
            break
        byte = data[pos]
        if in_extension:  # a sub-block of `byte` bytes, or the empty one that ends it
            pos += 1 + byte
            in_extension = byte != 0
        elif byte == 0x3B:  # the trailer: no image at all
            break
        elif byte == 0x21:  # an extension: its label, then sub-blocks
            if pos + 1 >= end_of_data:
                break
            if data[pos + 1] == 0xF9:
                _check_graphic_control(data, pos + 2)
            pos += 2
            in_extension = True
        elif byte == 0x2C:  # the first image descriptor: where Pillow stops
            return _gif_image(data, pos, width, height)
        else:  # not a block: Pillow skips such bytes one by one; one scan does the same
            pos = next_block(pos + 1)
    else:
        raise Unreadable(f"no GIF image within the first {MAX_GIF_BLOCKS:,} blocks")
    raise Unreadable("GIF ends before its first image")


def _check_graphic_control(data: Encoded, pos: int) -> None:
    """Pillow reads a graphic control block's flags, delay and (when flagged) transparent
    colour, and fails when the first sub-block is too short for them."""
    if pos < len(data) and (length := data[pos]):
        flags = data[pos + 1] if pos + 1 < len(data) else 0
        if length < 3 or (flags & 1 and length < 4):
            raise Unreadable(f"GIF graphic control block at byte {pos - 2:,} is cut short")


def _gif_image(data: Encoded, pos: int, width: int, height: int) -> tuple[int, int, str]:
    """The size Pillow gives: the logical screen, grown to the first image's extent."""
    if pos + 10 > len(data):
        raise Unreadable("GIF image descriptor is cut short")
    left, top, image_width, image_height, flags = struct.unpack_from("<HHHHB", data, pos + 1)
    pos += 10
    if flags & 0x80:
        pos += 3 << ((flags & 7) + 1)  # the local colour table
    if pos >= len(data):  # Pillow reads the LZW code size that follows
        raise Unreadable("GIF image descriptor is cut short")
    return max(width, left + image_width), max(height, top + image_height), "GIF"


class _BlockFinder:
    """The index of the next GIF block introducer ('!', ',' or ';') at or after a position.
    Each byte's last find is remembered and only repeated once passed, so the scans never
    overlap: all the junk in a file costs one C-speed pass, however it is spread."""

    def __init__(self, data: Encoded) -> None:
        self._data = data
        self._found = {introducer: -2 for introducer in (b"!", b",", b";")}

    def __call__(self, pos: int) -> int:
        nearest = len(self._data)
        for introducer, found in self._found.items():
            if -1 < found < pos or found == -2:
                found = self._found[introducer] = self._data.find(introducer, pos)
            if pos <= found < nearest:
                nearest = found
        return nearest
