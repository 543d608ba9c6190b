"""TIFF's size, and the MP index inside an MPO JPEG (a TIFF directory), read as Pillow's
ImageFileDirectory_v2 reads them (imaging/measure.py says why readers of our own)."""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass

from retail_pulse.imaging.header import Encoded, Unreadable

MAX_TIFF_ENTRIES = 65_535  # entries read from the first directory: a classic one's maximum
# Pillow's own signatures (each plugin's _accept), so exactly the bytes Pillow would hand to
# a plugin reach a reader. They are disjoint, so the order does not matter.
TIFF_PREFIXES = (
    b"MM\x00\x2a",  # big-endian
    b"II\x2a\x00",  # little-endian
    b"MM\x2a\x00",  # invalid, read as big-endian
    b"II\x00\x2a",  # invalid, read as little-endian
    b"MM\x00\x2b",  # BigTIFF, big-endian (Pillow reads it as classic: see read_tiff)
    b"II\x2b\x00",  # BigTIFF, little-endian
)
_ORIENTATION = 274
MP_TAGS = (0xB001, 0xB002)
_SIZE_TAGS = (256, 257, _ORIENTATION)  # ImageWidth, ImageLength, Orientation
# Bytes per value of each type Pillow loads; it skips an entry of any other type.
_TIFF_UNIT = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8}
_TIFF_UNIT |= {13: 4, 16: 8}
# The types Pillow loads as integers (IFD is a LONG offset) and as floats.
_TIFF_INTEGER = {3: "H", 4: "L", 6: "b", 8: "h", 9: "l", 13: "L", 16: "Q"}
_TIFF_FLOAT = {11: "f", 12: "d"}


@dataclass(frozen=True)
class _Entry:
    kind: int  # the TIFF type: 3 SHORT, 4 LONG, ...
    count: int
    at: int  # where its first value is in the data


def read_tiff(data: Encoded) -> tuple[int, int, str]:
    end_of_data = len(data)
    little = data.startswith(b"II")
    # Pillow's test for BigTIFF, byte for byte: only "II+\0" has 43 at offset 2, so it reads
    # a big-endian BigTIFF as a classic TIFF (whose directory offset is then nonsense).
    bigtiff = data[2] == 0x2B
    if end_of_data < (16 if bigtiff else 8):
        raise Unreadable("TIFF header is cut short")
    first = unpack(little, "Q", data, 8) if bigtiff else unpack(little, "L", data, 4)
    if first == 0:
        raise Unreadable("TIFF has no image directory")
    if first + (8 if bigtiff else 2) > end_of_data:
        raise Unreadable(
            f"TIFF image directory at byte {first:,} is past the end of the data "
            f"({end_of_data:,} bytes)"
        )
    tags = ifd_tags(data, 0, end_of_data, first, little, bigtiff, _SIZE_TAGS)
    width = ifd_int(data, little, tags.get(256))
    height = ifd_int(data, little, tags.get(257))
    if width is None or height is None:
        name, tag = ("ImageWidth", 256) if width is None else ("ImageLength", 257)
        state = "a non-integer" if tag in tags else "no"  # Pillow: "Invalid"/"Missing"
        raise Unreadable(f"TIFF image directory has {state} {name}")
    if _turns_sideways(data, little, tags.get(_ORIENTATION)):
        width, height = height, width  # Pillow reports the size as the image is viewed
    return width, height, "TIFF"


def ifd_tags(
    data: Encoded,
    base: int,
    end: int,
    offset: int,
    little: bool,
    bigtiff: bool,
    wanted: Iterable[int],
) -> dict[int, _Entry]:
    """The entry Pillow's ImageFileDirectory_v2.load keeps for each wanted tag of the
    directory at base + offset, in a TIFF stream that is data[base:end].

    Its rules, all of them: entries are read until the count or the data runs out; an entry
    of a tag already kept, of an unknown type, or with no values is skipped; out-of-line
    values count against a budget of the stream's size (over it, skipped); and out-of-line
    values that run past the end stop the directory there. One pass over at most
    MAX_TIFF_ENTRIES entries, each O(1): about 10 ms for the largest directory.
    """
    wanted = frozenset(wanted)
    found: dict[int, _Entry] = {}
    pos = base + offset
    count_size, entry_size, inline = (8, 20, 8) if bigtiff else (2, 12, 4)
    if pos + count_size > end:
        return found
    declared = unpack(little, "Q" if bigtiff else "H", data, pos)
    first = pos + count_size
    entries = min(declared, (end - first) // entry_size, MAX_TIFF_ENTRIES)
    layout = ("<" if little else ">") + ("HHQQ" if bigtiff else "HHLL")
    kept = bytearray(65_536)  # one flag per tag: no allocation per entry
    budget = end - base
    with memoryview(data) as view:
        rows = struct.iter_unpack(layout, view[first : first + entries * entry_size])
        for index, (tag, kind, count, value) in enumerate(rows):
            if kept[tag] or kind not in _TIFF_UNIT:
                continue
            size = count * _TIFF_UNIT[kind]
            if size > inline:
                if value >= 2**63:
                    continue
                budget -= size
                if budget < 0:
                    continue
                if base + value + size > end:
                    break
                at = base + value
            elif size == 0:
                continue
            else:
                at = first + index * entry_size + entry_size - inline
            kept[tag] = 1
            if tag in wanted:
                found[tag] = _Entry(kind, count, at)
    return found


def ifd_int(data: Encoded, little: bool, entry: _Entry | None) -> int | None:
    """An entry's first value, when Pillow reads it as an integer (it reads a tag meant to
    hold one value as its first value)."""
    if entry is None or entry.kind not in _TIFF_INTEGER:
        return None
    return unpack(little, _TIFF_INTEGER[entry.kind], data, entry.at)


def _turns_sideways(data: Encoded, little: bool, entry: _Entry | None) -> bool:
    """Whether an Orientation entry equals 5, 6, 7 or 8 as Pillow compares it: integers and
    floats by value, rationals as fractions (x/0 is NaN), bytes and text never."""
    if entry is None:
        return False
    if entry.kind in _TIFF_INTEGER or entry.kind in _TIFF_FLOAT:
        layout = _TIFF_INTEGER.get(entry.kind) or _TIFF_FLOAT[entry.kind]
        number: float = struct.unpack_from(("<" if little else ">") + layout, data, entry.at)[0]
        return number in (5, 6, 7, 8)
    if entry.kind in (5, 10):  # RATIONAL, SRATIONAL: numerator, denominator
        layout = "LL" if entry.kind == 5 else "ll"
        numerator, denominator = struct.unpack_from(
            ("<" if little else ">") + layout, data, entry.at
        )
        return (
            bool(denominator)
            and numerator % denominator == 0
            and (numerator // denominator in (5, 6, 7, 8))
        )
    return False


def unpack(little: bool, layout: str, data: Encoded, at: int) -> int:
    """One integer (`layout` is one of struct's integer codes) in the file's byte order."""
    value: int = struct.unpack_from(("<" if little else ">") + layout, data, at)[0]
    return value
