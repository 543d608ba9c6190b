"""`python -m bench.hostile_images`: what hostile images cost to measure, before and after.

Builds each attack in memory (every one within MAX_IMAGE_BYTES, 20 MiB) and measures it
twice: with measure_image (the service's header readers) and with plain Pillow,
`Image.open(...).size` on the same bytes, which is how the service measured before. For
each it prints:

  cpu_ms   time.process_time() of one measurement: the best of three for measure_image
           (a busy machine's pauses do not count), a single run for Pillow
  peak_mb  the peak of Python allocations during one measurement (tracemalloc, a separate
           run, so tracing does not inflate cpu_ms); the input itself is not counted

Pillow runs in a child process under a CPU limit (--pillow-cpu-limit, 15 s by default; its
peak run, slowed by tracing, gets PEAK_RUN_ALLOWANCE times that): some attacks keep it busy
for longer, and the flood takes it to hundreds of MB. Past the limit the row says
"stopped". --no-pillow skips the "before" columns. The last line is a summary:
measure_cpu_ms_max=... measure_peak_mb_max=... pillow_flood_cpu_ms=... pillow_flood_peak_mb=...
"""

from __future__ import annotations

import argparse
import io
import multiprocessing
import resource
import struct
import sys
import time
import tracemalloc
import warnings
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from multiprocessing.connection import Connection
from typing import Any

from PIL import Image

from retail_pulse.imaging.errors import PermanentImageError
from retail_pulse.imaging.measure import ACCEPTED_FORMATS, measure_image

MB = 2**20
FLOOD = "jpeg-app1-flood-18mb"  # the attack of issue 12, the summary's "before"
MEASURE_REPEATS = 3


@dataclass(frozen=True)
class Attack:
    name: str
    build: Callable[[], bytes]
    what: str  # what it does, for the table's reader


def _save(image: Image.Image, image_format: str, **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=image_format, **options)
    return buffer.getvalue()


@cache
def _jpeg_640() -> bytes:
    return _save(Image.new("RGB", (640, 480), (200, 40, 40)), "JPEG")


def _segment(marker: int, payload: bytes) -> bytes:
    return bytes([0xFF, marker]) + struct.pack(">H", len(payload) + 2) + payload


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _after_soi(jpeg: bytes, inserted: bytes) -> bytes:
    return jpeg[:2] + inserted + jpeg[2:]


def _after_frame(jpeg: bytes, inserted: bytes) -> bytes:
    """`inserted` just after the frame header (SOF0), before the tables and scan."""
    frame = jpeg.index(b"\xff\xc0")
    end = frame + 2 + struct.unpack_from(">H", jpeg, frame + 2)[0]
    return jpeg[:end] + inserted + jpeg[end:]


def _phone_jpeg() -> bytes:
    """A 12 MP JPEG behind 240 KB of EXIF, XMP and ICC segments: the benign baseline."""
    metadata = _segment(0xE1, b"Exif\x00\x00MM\x00*\x00\x00\x00\x08" + bytes(60_000))
    metadata += _segment(0xE1, b"http://ns.adobe.com/xap/1.0/\x00" + b" " * 60_000) * 2
    photo = _save(Image.new("RGB", (4000, 3000)), "JPEG", icc_profile=b"\x01" * 60_000)
    return _after_soi(photo, metadata)


def _png_text_bomb() -> bytes:
    """64 zTXt chunks, each 1 KB that inflates to 1 MB (Pillow's per-chunk limit), before
    the image data: Pillow inflates them all at open, to its 64 MB text budget."""
    text = zlib.compress(bytes(MB - 64), 9)
    ihdr = _png_chunk(b"IHDR", struct.pack(">IIBBBBB", 640, 480, 8, 2, 0, 0, 0))
    chunks = b"".join(_png_chunk(b"zTXt", b"k%02d\x00\x00" % i + text) for i in range(64))
    return b"\x89PNG\r\n\x1a\n" + ihdr + chunks + _png_chunk(b"IDAT", b"")


def _png_chunk_flood() -> bytes:
    """IHDR, then 20 MB of empty ancillary chunks before the image data."""
    ihdr = _png_chunk(b"IHDR", struct.pack(">IIBBBBB", 640, 480, 8, 2, 0, 0, 0))
    flood = _png_chunk(b"tEXt", b"") * (20 * MB // 12)
    return b"\x89PNG\r\n\x1a\n" + ihdr + flood + _png_chunk(b"IDAT", b"")


def _gif(blocks: bytes) -> bytes:
    screen = b"GIF89a" + struct.pack("<HHBBB", 640, 480, 0, 0, 0)
    image = b"," + struct.pack("<HHHHB", 0, 0, 640, 480, 0) + b"\x02\x02\x44\x01\x00;"
    return screen + blocks + image


def _tiff(entries: list[tuple[int, int, int, int]], tail: bytes = b"") -> bytes:
    """A little-endian TIFF with one directory of (tag, type, count, value) at offset 8."""
    directory = struct.pack("<H", len(entries))
    directory += b"".join(struct.pack("<HHII", *entry) for entry in entries)
    return b"II*\x00" + struct.pack("<I", 8) + directory + struct.pack("<I", 0) + tail


def _tiff_full_directory() -> bytes:
    """65,535 entries (a directory's maximum), each with 320 bytes of out-of-line data:
    Pillow reads them all, twice, up to its budget of the file's size."""
    # Private-range tags Pillow stores and otherwise ignores (0xBC01 would make it refuse
    # the file), then repeats of one, which it skips: 65,532 in all.
    tags = [tag for tag in range(1024, 65_536) if tag != 0xBC01]
    filler = [(tag, 4, 80, 0) for tag in tags + [1024] * (65_532 - len(tags))]
    entries = [(256, 4, 1, 640), (257, 4, 1, 480), (273, 4, 1, 8), *filler]
    return _tiff(entries, tail=bytes(20 * MB - 65_535 * 12))


def _tiff_many_strips() -> bytes:
    """5 million strip offsets (20 MB): Pillow builds a tile for each at open."""
    strips = 5_000_000
    header_size = 8 + 2 + 4 * 12 + 4
    entries = [(256, 4, 1, 1), (257, 4, 1, strips), (273, 4, strips, header_size), (278, 4, 1, 1)]
    return _tiff(entries, tail=struct.pack("<I", 8) * strips)


def _bmp_huge_info_header() -> bytes:
    """An info header that claims 4 GB: Pillow reads the whole file before refusing it."""
    return b"BM" + bytes(12) + struct.pack("<I", 0xFFFF_FFFF) + bytes(20 * MB)


def _bmp_large_palette() -> bytes:
    """An 8-bit BMP declaring 65,536 palette entries, the most Pillow reads."""
    info = struct.pack("<IiiHHIIiiII", 40, 100, 100, 1, 8, 0, 0, 0, 0, 65_536, 0)
    palette = bytes(range(256)) * 1024
    offset = 14 + len(info) + len(palette)
    return b"BM" + struct.pack("<IHHI", offset + 10_000, 0, 0, offset) + info + palette


ATTACKS: tuple[Attack, ...] = (
    Attack("jpeg-phone-photo-12mp", _phone_jpeg, "benign: 240 KB of metadata before the frame"),
    Attack(
        FLOOD,
        lambda: _after_soi(_jpeg_640(), b"\xff\xe1\x00\x02" * (18 * MB // 4)),
        "a 640x480 JPEG behind 4.7 M empty APP1 segments",
    ),
    Attack(
        "jpeg-app1-flood-after-frame",
        lambda: _after_frame(_jpeg_640(), b"\xff\xe1\x00\x02" * (18 * MB // 4)),
        "the same flood between the frame and the scan",
    ),
    Attack(
        "jpeg-fill-bytes-20mb",
        lambda: _after_soi(_jpeg_640(), b"\xff" * (20 * MB)),
        "20 MB of 0xFF fill before a marker",
    ),
    Attack(
        "jpeg-gap-20mb",
        lambda: _after_soi(_jpeg_640(), _segment(0xFE, b"") + bytes(20 * MB)),
        "20 MB of zeros between two segments",
    ),
    Attack(
        "jpeg-escaped-ff-flood",
        lambda: _after_soi(_jpeg_640(), _segment(0xFE, b"") + b"\xff\x00" * (9 * MB)),
        "9 M escaped 0xFF00 pairs before the frame",
    ),
    Attack("png-text-bomb", _png_text_bomb, "64 zTXt chunks inflating to 1 MB each"),
    Attack("png-chunk-flood", _png_chunk_flood, "1.7 M empty chunks before the image data"),
    Attack(
        "gif-sub-block-flood",
        lambda: _gif(b"!\xff" + b"\x01x" * (10 * MB) + b"\x00"),
        "10 M one-byte sub-blocks before the image",
    ),
    Attack("gif-gap-20mb", lambda: _gif(bytes(20 * MB)), "20 MB of junk between blocks"),
    Attack(
        "webp-then-20mb",
        lambda: _save(Image.new("RGB", (640, 480)), "WEBP") + bytes(20 * MB),
        "a WebP followed by 20 MB",
    ),
    Attack("tiff-full-directory", _tiff_full_directory, "65,535 entries with out-of-line data"),
    Attack("tiff-5m-strips", _tiff_many_strips, "5 million strip offsets"),
    Attack("bmp-4gb-info-header", _bmp_huge_info_header, "an info header claiming 4 GB"),
    Attack("bmp-65536-palette", _bmp_large_palette, "the largest palette Pillow reads"),
)


def _ours(data: bytes) -> str:
    try:
        size = measure_image(data)
    except PermanentImageError as err:
        return f"error: {err}"
    return f"{size.width}x{size.height} {size.format}"


def _pillow(data: bytes) -> str:
    """What the service did before: Image.open(...).size, header only."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # its "Metadata Warning"s on the TIFF attacks
        try:
            with Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS) as image:
                width, height = image.size
                return f"{width}x{height} {image.format}"
        except Exception as err:
            return f"error: {type(err).__name__}"


def cpu_ms(measure: Callable[[bytes], str], data: bytes) -> tuple[float, str]:
    began = time.process_time()
    outcome = measure(data)
    return (time.process_time() - began) * 1000, outcome


def peak_mb(measure: Callable[[bytes], str], data: bytes) -> float:
    tracemalloc.start()
    try:
        measure(data)
        return tracemalloc.get_traced_memory()[1] / MB
    finally:
        tracemalloc.stop()


def measured(data: bytes) -> dict[str, Any]:
    """measure_image on `data`, in this process."""
    runs = [cpu_ms(_ours, data) for _ in range(MEASURE_REPEATS)]
    return {
        "outcome": runs[0][1],
        "cpu_ms": min(ms for ms, _ in runs),
        "peak_mb": peak_mb(_ours, data),
    }


# Tracing every allocation slows Pillow's allocation-heavy loops several times over, so
# the peak run gets this many times the CPU limit of the timed one.
PEAK_RUN_ALLOWANCE = 6


def _child(task: str, data: bytes, cpu_limit_s: int, conn: Connection) -> None:
    # Past the soft limit the kernel sends SIGXCPU, which ends the process: the parent
    # then gets no answer and reports the run as stopped.
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_limit_s, cpu_limit_s + 1))
    conn.send(cpu_ms(_pillow, data) if task == "cpu" else peak_mb(_pillow, data))
    conn.close()


def _in_child(task: str, data: bytes, cpu_limit_s: int) -> Any:
    """Run one Pillow measurement in a forked child (which inherits `data`, no copy over a
    pipe); None if it ran out of CPU time."""
    context = multiprocessing.get_context("fork")
    receiver, sender = context.Pipe(duplex=False)
    child = context.Process(target=_child, args=(task, data, cpu_limit_s, sender))
    child.start()
    sender.close()
    try:
        # Wall time can exceed CPU time on a busy machine: allow for it.
        return receiver.recv() if receiver.poll(cpu_limit_s * 4 + 30) else None
    except EOFError:  # the child died: over its CPU limit
        return None
    finally:
        child.kill()
        child.join()


def pillow(data: bytes, cpu_limit_s: int) -> dict[str, Any]:
    """Plain Pillow on `data`: CPU in one child, then (if that finished) the peak in another."""
    timed = _in_child("cpu", data, cpu_limit_s)
    if timed is None:
        return {"outcome": "stopped", "cpu_ms": None, "peak_mb": None}
    ms, outcome = timed
    peak = _in_child("peak", data, cpu_limit_s * PEAK_RUN_ALLOWANCE)
    return {"outcome": outcome, "cpu_ms": ms, "peak_mb": peak}


def run(with_pillow: bool = True, cpu_limit_s: int = 15) -> list[dict[str, Any]]:
    rows = []
    for attack in ATTACKS:
        data = attack.build()
        row: dict[str, Any] = {"attack": attack.name, "what": attack.what, "bytes": len(data)}
        row["measure"] = measured(data)
        row["pillow"] = pillow(data, cpu_limit_s) if with_pillow else None
        print(_render_row(row), flush=True)
        rows.append(row)
        del data
    return rows


def _cell(value: float | None, unit: str) -> str:
    return "stopped" if value is None else f"{value:,.1f} {unit}"


def _render_row(row: dict[str, Any]) -> str:
    """attack, size; measure_image cpu_ms peak_mb; Pillow cpu_ms peak_mb (its answer); ours."""
    ours, before = row["measure"], row["pillow"]
    line = (
        f"{row['attack']:<28} {row['bytes'] / MB:>5.1f} MB  "
        f"measure {ours['cpu_ms']:>6.2f} ms {ours['peak_mb']:>5.2f} MB  "
    )
    if before is not None:
        line += (
            f"pillow {_cell(before['cpu_ms'], 'ms'):>11} {_cell(before['peak_mb'], 'MB'):>9} "
            f"({before['outcome']})  "
        )
    return line + f"-> {ours['outcome']}"


def summary_line(rows: list[dict[str, Any]]) -> str:
    """One machine-readable line: our worst case over all attacks, Pillow's on the flood
    ("NA" with --no-pillow, "stopped" past its CPU limit)."""

    def plain(value: float | None, digits: int) -> str:
        return "stopped" if value is None else f"{value:.{digits}f}"

    flood = next(row for row in rows if row["attack"] == FLOOD)["pillow"]
    fields = {
        "measure_cpu_ms_max": plain(max(row["measure"]["cpu_ms"] for row in rows), 2),
        "measure_peak_mb_max": plain(max(row["measure"]["peak_mb"] for row in rows), 2),
        "pillow_flood_cpu_ms": plain(flood["cpu_ms"], 0) if flood else "NA",
        "pillow_flood_peak_mb": plain(flood["peak_mb"], 0) if flood else "NA",
    }
    return " ".join(f"{key}={value}" for key, value in fields.items())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.hostile_images", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--no-pillow", action="store_true", help="skip plain Pillow (before)")
    parser.add_argument(
        "--pillow-cpu-limit", type=int, default=15, help="seconds of CPU per Pillow run"
    )
    args = parser.parse_args(argv)
    print(
        f"hostile images: {len(ATTACKS)} attacks; measure_image best of {MEASURE_REPEATS}, "
        f"Pillow {'skipped' if args.no_pillow else f'limited to {args.pillow_cpu_limit} s'}",
        flush=True,
    )
    rows = run(with_pillow=not args.no_pillow, cpu_limit_s=args.pillow_cpu_limit)
    print(summary_line(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
