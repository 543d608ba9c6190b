"""measure_image reads width and height from the header of every accepted format, exactly as
Pillow opens it, in bounded time and memory whatever the bytes."""

from __future__ import annotations

import dataclasses
import io
import os
import random
import re
import struct
import sys
import tracemalloc
import warnings
import zlib
from collections.abc import Callable
from functools import cache, lru_cache
from types import FrameType
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, PngImagePlugin

from retail_pulse.imaging.download import fetch
from retail_pulse.imaging.errors import PermanentImageError
from retail_pulse.imaging.gif import MAX_GIF_BLOCKS
from retail_pulse.imaging.measure import (
    _PNG_MODES,
    ACCEPTED_FORMATS,
    BMP_PREFIX_BYTES,
    MAX_JPEG_SEGMENTS,
    MAX_PNG_CHUNKS,
    ImageSize,
    measure_image,
)
from retail_pulse.imaging.tiff import MAX_TIFF_ENTRIES
from retail_pulse.settings import Settings, get_settings
from tests.support.image_server import ImageServer, make_image

MB = 2**20
# The process function's budget per image: Python's peak allocations while measuring one
# (tracemalloc counts them exactly, so the bound is deterministic).
PEAK_LIMIT = 32 * MB
# Python lines executed while measuring one image, however hostile: a deterministic stand-in
# for CPU time. The largest TIFF directory takes about 720,000; Pillow spends about 140
# million (30 per segment) on the 18 MB APP1 flood. bench/hostile_images.py has the times.
LINES_LIMIT = 1_000_000


def _settings(**changes: object) -> Settings:
    return get_settings().model_copy(update=changes)


# Where Pillow's own bomb check would interfere with comparing sizes: no limit of ours.
NO_LIMIT = _settings(max_image_pixels=2**62)


def _save(image: Image.Image, image_format: str, **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=image_format, **options)
    return buffer.getvalue()


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    crc = zlib.crc32(kind + body)
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)


def _ihdr(width: int, height: int) -> bytes:
    return _png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _png_header(width: int, height: int) -> bytes:
    """A PNG that is only a header: claims any size while weighing a few dozen bytes."""
    return PNG_SIGNATURE + _ihdr(width, height) + _png_chunk(b"IDAT", b"")


def _segment(marker: int, payload: bytes) -> bytes:
    return bytes([0xFF, marker]) + struct.pack(">H", len(payload) + 2) + payload


def _frame(width: int, height: int, marker: int = 0xC0, bits: int = 8) -> bytes:
    """A one-component JPEG frame header."""
    return _segment(marker, struct.pack(">BHHB", bits, height, width, 1) + b"\x01\x11\x00")


def _jpeg(width: int, height: int, before: bytes = b"", after: bytes = b"") -> bytes:
    """A JPEG that is only markers: SOI, `before`, a frame header, `after`, a scan header and
    EOI. Pillow opens it: it reads no tables or pixels at open."""
    scan = _segment(0xDA, b"\x01\x01\x00\x00\x3f\x00")
    return b"\xff\xd8" + before + _frame(width, height) + after + scan + b"\xff\xd9"


EMPTY_APP1 = b"\xff\xe1\x00\x02"  # an APP1 segment with no payload: 4 bytes


def _app1_flood(jpeg: bytes, flood_bytes: int = 18 * MB) -> bytes:
    """The attack: a valid JPEG whose frame header sits behind `flood_bytes` of empty APP1s."""
    return jpeg[:2] + EMPTY_APP1 * (flood_bytes // 4) + jpeg[2:]


def _gif(width: int, height: int, blocks: bytes = b"", image: tuple[int, ...] = ()) -> bytes:
    """A GIF with no colour table: the screen, `blocks`, then one image of `image` (left,
    top, width, height; the whole screen by default) with a one-pixel LZW stream."""
    left, top, image_width, image_height = image or (0, 0, width, height)
    screen = b"GIF89a" + struct.pack("<HHBBB", width, height, 0, 0, 0)
    descriptor = b"," + struct.pack("<HHHHB", left, top, image_width, image_height, 0)
    return screen + blocks + descriptor + b"\x02\x02\x44\x01\x00;"


def _tiff(
    entries: list[tuple[int, int, int, bytes]],
    *,
    ifd_at: int = 8,
    next_ifd: int = 0,
    tail: bytes = b"",
    declared: int | None = None,
) -> bytes:
    """A little-endian TIFF: header, padding up to `ifd_at`, one directory of (tag, type,
    count, 4-byte value) entries (`declared` overrides their count), then `tail`."""
    header = b"II*\x00" + struct.pack("<I", ifd_at)
    body = struct.pack("<H", len(entries) if declared is None else declared)
    body += b"".join(struct.pack("<HHI", t, k, c) + v for t, k, c, v in entries)
    return header + bytes(ifd_at - 8) + body + struct.pack("<I", next_ifd) + tail


def _long(tag: int, value: int) -> tuple[int, int, int, bytes]:
    return tag, 4, 1, struct.pack("<I", value)


def _tiff_of(width: int, height: int, *extra: tuple[int, int, int, bytes]) -> bytes:
    """A minimal TIFF Pillow opens: size, one strip at offset 8, and `extra` entries."""
    return _tiff([_long(256, width), _long(257, height), _long(273, 8), *extra])


@lru_cache(maxsize=1)
def _garbage() -> bytes:
    """20 MB of the same random bytes every run."""
    return random.Random(20).randbytes(20 * MB)


def _outcome(data: bytes, config: Settings | None = None) -> tuple[int, int, str] | str:
    """(width, height, format), or the error's message; the same for the body as the
    process function reads it, a bytearray (imaging/download.py), as for bytes."""
    outcome = _measured(data, config)
    assert _measured(bytearray(data), config) == outcome
    return outcome


def _measured(data: bytes | bytearray, config: Settings | None) -> tuple[int, int, str] | str:
    try:
        size = measure_image(data, config)
    except PermanentImageError as err:
        return str(err)
    return size.width, size.height, size.format


def _pillow(data: bytes) -> tuple[int, int, str] | None:
    """What Pillow's Image.open says, as the service measured before: None if it fails."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            with Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS) as image:
                return image.size[0], image.size[1], str(image.format)
        except Exception:
            return None


def _peak_bytes(data: bytes) -> tuple[tuple[int, int, str] | str, int]:
    """The outcome and the peak of Python allocations while measuring `data` (which was
    allocated before, so is not counted)."""
    tracemalloc.start()
    try:
        outcome = _outcome(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return outcome, peak


def _python_lines(data: bytes) -> int:
    """Python lines executed while measuring `data`, every frame counted."""
    lines = 0

    def tracer(frame: FrameType, event: str, arg: object) -> Any:  # sys.settrace's type
        nonlocal lines
        if event == "line":
            lines += 1
        return tracer

    previous = sys.gettrace()
    sys.settrace(tracer)
    try:
        _measured(data, None)
    finally:
        sys.settrace(previous)
    return lines


# --- every accepted format, as Pillow opens it -------------------------------------------


@pytest.mark.parametrize(
    ("ext", "width", "height", "pil_format"),
    [
        ("jpg", 640, 480, "JPEG"),
        ("png", 300, 200, "PNG"),
        ("webp", 320, 240, "WEBP"),
        ("gif", 50, 70, "GIF"),
        ("bmp", 33, 17, "BMP"),
        ("tiff", 120, 90, "TIFF"),
    ],
)
def test_every_accepted_format_is_measured(
    ext: str, width: int, height: int, pil_format: str
) -> None:
    size = measure_image(make_image(width, height, ext))
    assert size == ImageSize(width=width, height=height, format=pil_format)
    assert size.perimeter == 2 * (width + height)


def _exif_with_thumbnail() -> bytes:
    """An EXIF APP1 payload as phones write it: IFD0 (orientation), IFD1 pointing at an
    embedded 160x120 JPEG thumbnail (whose own frame header must not be taken for the
    image's), padded to 60 KB."""
    thumbnail = make_image(160, 120, "jpg")
    tiff = b"MM\x00*" + struct.pack(">I", 8)
    ifd0 = struct.pack(">H", 1) + struct.pack(">HHII", 274, 3, 1, 6 << 16)
    ifd1_at = 8 + len(ifd0) + 4
    tiff += ifd0 + struct.pack(">I", ifd1_at)
    thumb_at = ifd1_at + 2 + 2 * 12 + 4
    tiff += struct.pack(">H", 2) + struct.pack(">HHII", 0x201, 4, 1, thumb_at)
    tiff += struct.pack(">HHII", 0x202, 4, 1, len(thumbnail)) + struct.pack(">I", 0)
    payload = b"Exif\x00\x00" + tiff + thumbnail
    return payload + bytes(60_000 - len(payload))


def _phone_jpeg(width: int, height: int) -> bytes:
    """A JPEG whose frame header sits behind about 340 KB of metadata: EXIF with a
    thumbnail, XMP, two extended-XMP segments and a 100 KB ICC profile in two APP2s."""
    xmp = b"http://ns.adobe.com/xap/1.0/\x00" + b"<x:xmpmeta>" + b" " * 60_000
    extended = b"http://ns.adobe.com/xmp/extension/\x00" + b"0" * 32 + b"\x00" * 8
    metadata = _segment(0xE1, _exif_with_thumbnail()) + _segment(0xE1, xmp)
    metadata += _segment(0xE1, extended + b"x" * 60_000) * 2
    photo = _save(
        Image.new("RGB", (width, height), (90, 20, 200)), "JPEG", icc_profile=b"\x01" * 100_000
    )
    return photo[:2] + metadata + photo[2:]


def _ultra_hdr_mpo() -> bytes:
    """An MPO marked Ultra HDR in an APP1, which Pillow leaves a JPEG."""
    mpo = _mpo(2)
    marker = _segment(0xE1, b'http://ns.adobe.com/xap/1.0/\x00<x hdrgm:Version="1.0"/>')
    return mpo[:2] + marker + mpo[2:]


def _mpo(pictures: int) -> bytes:
    frames = [
        Image.new("RGB", (64 // (i + 1), 48 // (i + 1)), (i * 60, 0, 0)) for i in range(pictures)
    ]
    return _save(frames[0], "MPO", save_all=True, append_images=frames[1:])


def _top_down_bmp(width: int, height: int) -> bytes:
    data = bytearray(make_image(width, height, "bmp"))
    data[22:26] = struct.pack("<i", -height)  # a negative height: rows stored top first
    return bytes(data)


def _gif_larger_first_frame() -> bytes:
    """A GIF whose first image reaches past its 10x10 logical screen: Pillow grows the size."""
    return _gif(10, 10, image=(5, 3, 50, 70))


def _animated(image_format: str, mode: str, size: tuple[int, int], **options: Any) -> bytes:
    first, second = Image.new(mode, size), Image.new(mode, size, (200, 0, 0) if mode != "P" else 5)
    return _save(first, image_format, save_all=True, append_images=[second], **options)


def _new(
    mode: str, size: tuple[int, int], image_format: str, **options: Any
) -> Callable[[], bytes]:
    """A builder of a flat image saved by Pillow: the corpus is built on first use."""
    colour = (1, 2, 3, 4) if mode in ("RGB", "RGBA") else 0
    return lambda: _save(Image.new(mode, size, colour), image_format, **options)


# Generated files of every accepted format, several sizes and variants.
CORPUS: dict[str, Callable[[], bytes]] = {
    **{
        f"jpeg-{mode}-{w}x{h}": _new(mode, (w, h), "JPEG")
        for mode in ("L", "RGB", "CMYK")
        for w, h in ((1, 1), (17, 9), (640, 480), (4000, 3000), (65_500, 2))
    },
    **{
        f"jpeg-progressive-{w}x{h}": _new("RGB", (w, h), "JPEG", progressive=True)
        for w, h in ((1, 1), (550, 404), (1280, 720))
    },
    "jpeg-340kb-of-metadata-before-the-frame": lambda: _phone_jpeg(4000, 3000),
    "jpeg-app1-flood-64kb": lambda: _app1_flood(make_image(640, 480, "jpg"), 3_000),
    "jpeg-hand-made-sof2": lambda: b"\xff\xd8" + _frame(31, 7, 0xC2) + b"\xff\xd9",
    "mpo-2-pictures": lambda: _mpo(2),
    "mpo-3-pictures": lambda: _mpo(3),
    "mpo-ultra-hdr-is-a-jpeg": _ultra_hdr_mpo,
    **{
        f"png-{mode}": _new(mode, (300, 200), "PNG")
        for mode in ("1", "L", "LA", "P", "RGB", "RGBA", "I;16")
    },
    "png-1x1": _new("RGB", (1, 1), "PNG"),
    "png-apng": lambda: _animated("PNG", "RGB", (30, 20)),
    "png-ihdr-not-first": lambda: (
        PNG_SIGNATURE
        + _png_chunk(b"tEXt", b"a\x00b")
        + _ihdr(7, 5)
        + _png_chunk(b"IDAT", zlib.compress(bytes(5 * 22)))
    ),
    **{
        f"webp-{kind}-{w}x{h}": _new(
            "RGBA" if kind == "alpha" else "RGB", (w, h), "WEBP", lossless=kind == "lossless"
        )
        for kind in ("lossy", "lossless", "alpha")
        for w, h in ((1, 1), (320, 240), (16_383, 3))
    },
    "webp-animated": lambda: _animated("WEBP", "RGB", (40, 30)),
    "webp-with-icc": _new("RGB", (41, 31), "WEBP", icc_profile=b"\x00" * 600),
    **{f"gif-{w}x{h}": _new("P", (w, h), "GIF") for w, h in ((1, 1), (50, 70), (65_535, 1))},
    "gif-animated-with-comment": lambda: _animated("GIF", "P", (50, 70), comment=b"hi"),
    "gif-first-frame-larger-than-screen": _gif_larger_first_frame,
    **{f"bmp-{mode}": _new(mode, (33, 17), "BMP") for mode in ("1", "L", "P", "RGB", "RGBA")},
    "bmp-top-down": lambda: _top_down_bmp(33, 17),
    **{
        f"tiff-{mode}": _new(mode, (120, 90), "TIFF")
        for mode in ("1", "L", "RGB", "RGBA", "CMYK", "F", "I;16")
    },
    "tiff-big-endian": _new("I;16B", (120, 90), "TIFF"),
    "tiff-bigtiff": _new("RGB", (120, 90), "TIFF", big_tiff=True),
    **{
        f"tiff-{compression}": _new("RGB", (121, 91), "TIFF", compression=compression)
        for compression in ("tiff_lzw", "tiff_deflate", "jpeg", "packbits")
    },
    "tiff-orientation-6": _new("RGB", (120, 90), "TIFF", tiffinfo={274: 6}),
    "tiff-multi-page": lambda: _animated("TIFF", "RGB", (120, 90)),
}


@pytest.mark.parametrize("name", list(CORPUS))
def test_size_and_format_equal_pillows(name: str) -> None:
    data = CORPUS[name]()
    expected = _pillow(data)
    assert expected is not None, "Pillow opens every file of the corpus"
    assert _outcome(data, NO_LIMIT) == expected


def test_corpus_covers_every_accepted_format_and_mpo() -> None:
    formats = set()
    for build in CORPUS.values():
        opened = _pillow(build())
        assert opened is not None
        formats.add(opened[2])
    assert formats == {*ACCEPTED_FORMATS, "MPO"}


@pytest.mark.parametrize(
    ("path", "perimeter"),
    [
        ("/img/550x404.jpg", 1908),  # SPEC: gstatic webp/gallery/2.jpg
        ("/img/1280x720.jpg", 4000),  # SPEC: gstatic webp/gallery/3.jpg
        ("/img/4000x3000.jpg", 14000),  # a 12-megapixel phone photo
        ("/img/800x600.webp", 2800),
    ],
)
def test_perimeters_of_served_images(image_server: ImageServer, path: str, perimeter: int) -> None:
    fetched = fetch(image_server.url(path))
    assert fetched.content_type is not None and fetched.content_type.startswith("image/")
    assert measure_image(fetched.data, content_type=fetched.content_type).perimeter == perimeter


def test_png_pixel_formats_are_pillows() -> None:
    assert set(PngImagePlugin._MODES) == _PNG_MODES


# Each TIFF type's struct layout, for one value (a rational is the value over 1).
_TIFF_LAYOUTS = {1: "B", 3: "H", 4: "I", 5: "II", 6: "b", 7: "B", 8: "h", 9: "i", 10: "ii"}
_TIFF_LAYOUTS |= {11: "f", 12: "d", 13: "I", 16: "Q", 17: "q", 18: "Q"}


@pytest.mark.parametrize("kind", [2, *_TIFF_LAYOUTS])
@pytest.mark.parametrize(("tag", "value"), [(256, 33), (274, 6)], ids=["width", "orientation"])
def test_tiff_value_types_read_as_pillow_reads_them(kind: int, tag: int, value: int) -> None:
    """ImageWidth, or an Orientation of 6 (which turns the size), stored as every TIFF type:
    Pillow reads integers, and for the orientation floats and fractions, by value."""
    if kind == 2:  # ASCII
        encoded, count = b"%d\x00" % value, 2
    else:
        values = (value, 1) if kind in (5, 10) else (value,)
        encoded, count = struct.pack("<" + _TIFF_LAYOUTS[kind], *values), 1
    entries = [_long(256, 40), _long(257, 30), _long(273, 8)]
    if tag == 256:
        entries = entries[1:]
    after_directory = 8 + 2 + 12 * (len(entries) + 1) + 4
    if len(encoded) <= 4:
        field, tail = encoded.ljust(4, b"\x00"), b""
    else:  # out of line, just after the directory
        field, tail = struct.pack("<I", after_directory), encoded
    data = _tiff([*entries, (tag, kind, count, field)], tail=tail)
    expected = _pillow(data)
    outcome = _outcome(data)
    if expected is not None:
        assert outcome == expected
    else:
        assert isinstance(outcome, str) and outcome.startswith("not an image: TIFF")
    # The common ones, so the comparison above is not vacuous: a SHORT or LONG width is
    # read, and an orientation of 6 turns the size however it is stored as a number.
    if tag == 256 and kind in (3, 4):
        assert outcome == (33, 30, "TIFF")
    if tag == 274 and kind in (3, 4, 5, 11, 12):
        assert outcome == (30, 40, "TIFF")


# --- failures say why ------------------------------------------------------------------


def test_html_page_is_not_an_image_and_says_what_it_was(image_server: ImageServer) -> None:
    fetched = fetch(image_server.url("/text"))
    with pytest.raises(PermanentImageError) as caught:
        measure_image(fetched.data, content_type=fetched.content_type)
    assert str(caught.value) == "not an image (text/html)"
    assert caught.value.reason == "not_image"
    assert not caught.value.transient


@pytest.mark.parametrize(
    "data",
    [b"", b"\x00" * 64, b"%PDF-1.7 not an image", b"RIFF\x00\x00\x00\x00WEBPALPH"],
    ids=["empty", "zeros", "pdf", "riff-but-no-webp-image-chunk"],
)
def test_garbage_is_not_an_image(data: bytes) -> None:
    with pytest.raises(PermanentImageError, match=r"^not an image$") as caught:
        measure_image(data)
    assert caught.value.reason == "not_image"


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"GIF89a", "GIF header is cut short"),
        (make_image(640, 480, "png")[:20], "PNG IHDR chunk is cut short"),
        (
            make_image(640, 480, "jpg")[:10],
            "JPEG segment 0xFFE0 at byte 2 claims 16 bytes, past the end of the data (10 bytes)",
        ),
        (make_image(64, 48, "webp")[:24], "WebP VP8 header is cut short"),
        (make_image(64, 48, "tiff")[:6], "TIFF header is cut short"),
        (make_image(64, 48, "bmp")[:16], "BMP header is cut short"),
        (make_image(64, 48, "bmp")[:40], "BMP header unreadable (Truncated File Read)"),
    ],
    ids=[
        "bare-gif-signature",
        "cut-png",
        "cut-jpeg",
        "cut-webp",
        "cut-tiff",
        "cut-bmp",
        "cut-bmp-info",
    ],
)
def test_truncated_headers_are_not_images_and_say_why(data: bytes, reason: str) -> None:
    with pytest.raises(PermanentImageError) as caught:
        measure_image(data, content_type="image/x-test")
    assert str(caught.value) == f"not an image (image/x-test): {reason}"
    assert caught.value.reason == "not_image"


def test_truncated_body_with_an_intact_header_is_still_measured() -> None:
    """Only the header is read, so a body cut short after it does not matter."""
    data = make_image(640, 480, "jpg")
    assert measure_image(data[: len(data) // 2]).perimeter == 2240


def test_formats_outside_the_accepted_list_are_refused() -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (10, 10)).save(buffer, format="PPM")
    with pytest.raises(PermanentImageError, match="not an image"):
        measure_image(buffer.getvalue(), content_type="image/x-portable-pixmap")


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (_jpeg(0, 480), "JPEG header declares a 0x480 image"),
        (_png_header(300, 0), "PNG header declares a 300x0 image"),
        (b"\xff\xd8" + _frame(64, 48, bits=12) + b"\xff\xd9", "JPEG has 12-bit samples"),
        (_jpeg(64, 48).replace(b"\xff\xc0", b"\xff\x01", 1), "0xFF 0x01 at byte 2 is not"),
        (b"\xff\xd8" + _segment(0xDA, b"\x00") + _frame(4, 4), "data starts before any frame"),
        (_tiff([_long(257, 30)]), "TIFF image directory has no ImageWidth"),
        (_tiff([(256, 2, 4, b"640\x00"), _long(257, 30)]), "has a non-integer ImageWidth"),
        (_tiff([]).replace(b"\x08\x00\x00\x00", b"\x00" * 4, 1), "TIFF has no image directory"),
        (PNG_SIGNATURE + _png_chunk(b"IDAT", b"") + _ihdr(3, 3), "IDAT chunk comes before"),
        (PNG_SIGNATURE + _ihdr(3, 3)[:-1] + bytes([_ihdr(3, 3)[-1] ^ 1]), "fails its checksum"),
        (_gif(10, 10)[:13] + b";", "GIF ends before its first image"),
    ],
    ids=[
        "jpeg-zero-width",
        "png-zero-height",
        "jpeg-12-bit",
        "jpeg-tem-marker",
        "jpeg-scan-before-frame",
        "tiff-no-width",
        "tiff-text-width",
        "tiff-no-directory",
        "png-idat-first",
        "png-bad-crc",
        "gif-no-image",
    ],
)
def test_headers_pillow_refuses_fail_with_their_reason(data: bytes, reason: str) -> None:
    assert _pillow(data) is None
    with pytest.raises(PermanentImageError, match=re.escape(reason)) as caught:
        measure_image(data)
    assert caught.value.reason == "not_image"


# --- limits ----------------------------------------------------------------------------


def test_pixel_limit_from_settings() -> None:
    small_limit = _settings(max_image_pixels=10_000)
    assert measure_image(make_image(100, 100, "png"), small_limit).perimeter == 400
    with pytest.raises(PermanentImageError) as caught:
        measure_image(make_image(101, 100, "png"), small_limit)
    assert caught.value.reason == "too_large"
    assert str(caught.value) == (
        "image too large: 101x100 is 10,100 pixels, over the limit of 10,000"
    )


def test_header_claiming_a_huge_image_fails_without_allocating_it() -> None:
    # 100,000 x 100,000 = 10 gigapixels: over our limit and Pillow's hard limit.
    with pytest.raises(PermanentImageError, match="image too large") as caught:
        measure_image(_png_header(100_000, 100_000))
    assert caught.value.reason == "too_large"


def test_header_over_our_limit_but_under_pillows_fails_on_ours() -> None:
    # 81 MP stays under Pillow's warning threshold (about 89 MP), so only our limit fires.
    with pytest.raises(PermanentImageError, match=r"9000x9000 is 81,000,000 pixels") as caught:
        measure_image(_png_header(9_000, 9_000), _settings(max_image_pixels=50_000_000))
    assert caught.value.reason == "too_large"


def test_pillow_bomb_warning_raised_as_error_is_reported_as_too_large() -> None:
    """Where warnings are errors (e.g. pytest -W error), Pillow's warning is an exception."""
    header = _png_header(10_000, 9_000)  # 90 MP: over Pillow's warning threshold
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with pytest.raises(PermanentImageError, match="image too large") as caught:
            measure_image(header, _settings(max_image_pixels=200_000_000))
    assert caught.value.reason == "too_large"


def test_pillow_hard_limit_still_applies_above_ours() -> None:
    """Over twice Pillow's limit fails even when MAX_IMAGE_PIXELS allows it, as before."""
    with pytest.raises(PermanentImageError, match="over Pillow's limit of 178,956,970"):
        measure_image(_png_header(20_000, 10_000), _settings(max_image_pixels=10**12))


def test_pillow_global_limit_is_left_alone() -> None:
    before = Image.MAX_IMAGE_PIXELS
    with pytest.raises(PermanentImageError):
        measure_image(_png_header(100_000, 100_000))
    measure_image(make_image(10, 10, "png"), _settings(max_image_pixels=1_000_000_000))
    assert before == Image.MAX_IMAGE_PIXELS


def test_image_size_is_immutable() -> None:
    size = ImageSize(width=2, height=3, format="PNG")
    with pytest.raises(dataclasses.FrozenInstanceError):
        size.width = 5  # type: ignore[misc]
    assert size.perimeter == 10


# --- hostile input: bounded whatever the bytes ------------------------------------------


def _tiff_many_entries() -> bytes:
    """65,535 entries (the most a directory holds), each but the last two with 8 bytes of
    out-of-line data, ImageWidth and ImageLength last."""
    tags = [tag for tag in range(65_536) if tag not in (256, 257)][:65_533]
    filler = [(tag, 4, 2, struct.pack("<I", 0)) for tag in tags]
    return _tiff([*filler, _long(256, 640), _long(257, 480)], tail=_garbage()[: 4 * MB])


def _tiff_chain(directories: int) -> bytes:
    """`directories` directories, each naming the next: only the first is read."""
    entries = [_long(256, 64), _long(257, 48), _long(273, 8)]
    one = 2 + 12 * len(entries) + 4
    data = bytearray(_tiff(entries, next_ifd=8 + one))
    for index in range(1, directories):
        following = 8 + one * (index + 1) if index + 1 < directories else 0
        data += struct.pack("<H", 3) + b"".join(
            struct.pack("<HHI", t, k, c) + v for t, k, c, v in entries
        )
        data += struct.pack("<I", following)
    return bytes(data)


def _bigtiff(entries: int, width_at: int) -> bytes:
    """A BigTIFF whose directory declares 2**40 entries and holds `entries`, with ImageWidth
    at index `width_at` and ImageLength after it."""
    rows = [struct.pack("<HHQQ", 300 + i % 60_000, 3, 1, 1) for i in range(entries)]
    rows[width_at] = struct.pack("<HHQQ", 256, 3, 1, 64)
    rows[width_at + 1] = struct.pack("<HHQQ", 257, 3, 1, 48)
    return b"II+\x00\x08\x00\x00\x00" + struct.pack("<QQ", 16, 2**40) + b"".join(rows)


def _gif_sub_block_flood() -> bytes:
    """An application extension of 10 million one-byte sub-blocks before the image."""
    return _gif(64, 48, b"!\xff" + b"\x01x" * (10 * MB) + b"\x00")


def _png_chunk_flood() -> bytes:
    """20 MB of empty ancillary chunks and no IHDR."""
    return PNG_SIGNATURE + _png_chunk(b"tEXt", b"") * (20 * MB // 12)


def _png_long_ihdr() -> bytes:
    """An IHDR chunk 20 MB long with a valid checksum: Pillow accepts it, and so do we."""
    body = struct.pack(">IIBBBBB", 640, 480, 8, 2, 0, 0, 0) + _garbage()
    return PNG_SIGNATURE + _png_chunk(b"IHDR", body) + _png_chunk(b"IDAT", b"")


def _jpeg_mixed_tiny_segments() -> bytes:
    """Millions of tiny segments of several kinds, with fill bytes, before the frame."""
    unit = b"\xff\xfe\x00\x02" + b"\xff\xff\xff\xe5\x00\x02" + b"\xff\xdd\x00\x04\x00\x00"
    return _jpeg(64, 48, before=unit * (18 * MB // len(unit)))


# name: (build, what measure_image answers: (width, height, format) or a regex of its error)
HOSTILE: dict[str, tuple[Callable[[], bytes], tuple[int, int, str] | str]] = {
    "jpeg-app1-flood-18mb": (
        lambda: _app1_flood(make_image(640, 480, "jpg")),
        r"^not an image: no JPEG frame header within the first 1,000 segments$",
    ),
    "jpeg-app1-flood-18mb-after-the-frame": (
        lambda: _jpeg(640, 480, after=EMPTY_APP1 * (18 * MB // 4)),
        (640, 480, "JPEG"),
    ),
    "jpeg-millions-of-mixed-tiny-segments": (
        _jpeg_mixed_tiny_segments,
        r"no JPEG frame header within the first 1,000 segments",
    ),
    "jpeg-escaped-ff-flood": (
        lambda: _jpeg(64, 48, before=_segment(0xE0, b"") + b"\xff\x00" * (9 * MB)),
        r"no JPEG frame header within the first 1,000 segments",
    ),
    "jpeg-20mb-of-fill-bytes": (
        lambda: _jpeg(64, 48, before=b"\xff" * (20 * MB)),
        (64, 48, "JPEG"),
    ),
    "jpeg-20mb-between-segments": (
        lambda: _jpeg(64, 48, before=_segment(0xE0, b"") + bytes(20 * MB)),
        (64, 48, "JPEG"),
    ),
    "jpeg-segment-past-the-end": (
        lambda: b"\xff\xd8\xff\xe1\xff\xff" + bytes(100),
        r"JPEG segment 0xFFE1 at byte 2 claims 65,535 bytes, past the end",
    ),
    "jpeg-then-20mb-of-garbage": (
        lambda: make_image(640, 480, "jpg") + _garbage(),
        (640, 480, "JPEG"),
    ),
    "png-no-ihdr-20mb-of-chunks": (
        _png_chunk_flood,
        r"no PNG IHDR chunk within the first 64 chunks",
    ),
    "png-ihdr-not-first": (lambda: CORPUS["png-ihdr-not-first"](), (7, 5, "PNG")),
    "png-ihdr-20mb-long": (_png_long_ihdr, (640, 480, "PNG")),
    "png-ihdr-then-20mb-of-garbage": (
        lambda: PNG_SIGNATURE + _ihdr(300, 200) + _garbage(),
        (300, 200, "PNG"),
    ),
    "gif-cut-header": (lambda: make_image(50, 70, "gif")[:10], r"GIF header is cut short"),
    "gif-10-million-sub-blocks": (
        _gif_sub_block_flood,
        r"no GIF image within the first 10,000 blocks",
    ),
    "gif-20mb-between-blocks": (
        lambda: _gif(64, 48, b"!\xfe\x01x\x00" + bytes(20 * MB)),
        (64, 48, "GIF"),
    ),
    "gif-then-20mb-of-garbage": (lambda: make_image(50, 70, "gif") + _garbage(), (50, 70, "GIF")),
    "webp-cut-header": (lambda: make_image(64, 48, "webp")[:20], r"WebP VP8 header is cut short"),
    "webp-lossless-cut-header": (
        lambda: CORPUS["webp-lossless-320x240"]()[:22],
        r"WebP VP8L header is cut short",
    ),
    "webp-then-20mb-of-garbage": (
        lambda: make_image(64, 48, "webp") + _garbage(),
        (64, 48, "WEBP"),
    ),
    "tiff-65535-entries": (_tiff_many_entries, (640, 480, "TIFF")),
    "tiff-65535-copies-of-imagewidth": (
        lambda: _tiff([_long(256, 64 + i) for i in range(65_534)] + [_long(257, 48)]),
        (64, 48, "TIFF"),
    ),
    "tiff-10000-chained-directories": (lambda: _tiff_chain(10_000), (64, 48, "TIFF")),
    "tiff-directory-far-away": (
        lambda: _tiff([_long(256, 64)], ifd_at=8)[:4] + struct.pack("<I", 0xFFFF_FF00),
        r"TIFF image directory at byte 4,294,967,040 is past the end of the data \(8 bytes\)",
    ),
    "tiff-directory-after-20mb-of-strips": (
        lambda: b"II*\x00" + struct.pack("<I", 8 + 20 * MB) + _garbage() + _tiff_of(640, 480)[8:],
        (640, 480, "TIFF"),
    ),
    "tiff-directory-declares-more-entries-than-it-holds": (
        lambda: _tiff([_long(256, 64), _long(257, 48)], declared=65_535),
        (64, 48, "TIFF"),
    ),
    "bigtiff-2-to-the-40-entries": (
        lambda: _bigtiff(MAX_TIFF_ENTRIES + 10, MAX_TIFF_ENTRIES),
        r"TIFF image directory has no ImageWidth",
    ),
    "bmp-4gb-info-header": (
        lambda: b"BM" + bytes(12) + struct.pack("<I", 0xFFFF_FFFF) + _garbage(),
        r"BMP header unreadable \(Truncated File Read\)",
    ),
    "bmp-then-20mb-of-garbage": (lambda: make_image(33, 17, "bmp") + _garbage(), (33, 17, "BMP")),
    "bmp-65536-colour-palette": (
        lambda: _bmp_with_palette(65_536) + _garbage(),
        (100, 100, "BMP"),
    ),
}


def _bmp_with_palette(colours: int) -> bytes:
    """An 8-bit BMP declaring `colours` palette entries: Pillow reads them all at open."""
    info = struct.pack("<IiiHHIIiiII", 40, 100, 100, 1, 8, 0, 0, 0, 0, colours, 0)
    palette = bytes(range(256)) * (colours * 4 // 256)
    pixels_at = 14 + len(info) + len(palette)
    return b"BM" + struct.pack("<IHHI", pixels_at + 100 * 100, 0, 0, pixels_at) + info + palette


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_input_is_answered_within_the_memory_bound(name: str) -> None:
    build, expected = HOSTILE[name]
    data = build()
    outcome, peak = _peak_bytes(data)
    if isinstance(expected, tuple):
        assert outcome == expected
    else:
        assert isinstance(outcome, str) and re.search(expected, outcome), outcome
    assert peak < PEAK_LIMIT, f"peak {peak / MB:.1f} MB"


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_input_takes_a_bounded_number_of_python_steps(name: str) -> None:
    assert _python_lines(HOSTILE[name][0]()) < LINES_LIMIT


def test_bmp_prefix_holds_all_pillow_reads() -> None:
    """The largest palette Pillow reads, behind the largest info header, fits the prefix."""
    data = bytearray(_bmp_with_palette(65_536))
    data[14:18] = struct.pack("<I", 124)  # a V5 info header: 84 bytes more before the palette
    data[54:54] = bytes(84)
    assert len(data) <= BMP_PREFIX_BYTES
    assert _outcome(bytes(data) + _garbage()) == _pillow(bytes(data)) == (100, 100, "BMP")


# --- the caps are exact: a structural bound on the work --------------------------------


def test_jpeg_walk_stops_at_its_segment_cap() -> None:
    # The frame header is the step after the empty APP1s: the cap's last step, or one past.
    within = _jpeg(64, 48, before=EMPTY_APP1 * (MAX_JPEG_SEGMENTS - 1))
    assert _outcome(within) == _pillow(within) == (64, 48, "JPEG")
    beyond = _jpeg(64, 48, before=EMPTY_APP1 * MAX_JPEG_SEGMENTS)
    assert _outcome(beyond) == (
        "not an image: no JPEG frame header within the first 1,000 segments"
    )


def test_gif_walk_stops_at_its_block_cap() -> None:
    # The extension's introducer, its sub-blocks, the empty one, then the image descriptor.
    def gif(sub_blocks: int) -> bytes:
        return _gif(64, 48, b"!\xff" + b"\x01x" * sub_blocks + b"\x00")

    within = gif(MAX_GIF_BLOCKS - 3)
    assert _outcome(within) == _pillow(within) == (64, 48, "GIF")
    assert _outcome(gif(MAX_GIF_BLOCKS - 2)) == (
        "not an image: no GIF image within the first 10,000 blocks"
    )


def test_png_walk_stops_at_its_chunk_cap() -> None:
    def png(chunks_before: int) -> bytes:
        return (
            PNG_SIGNATURE
            + _png_chunk(b"tEXt", b"a\x00b") * chunks_before
            + _ihdr(7, 5)
            + _png_chunk(b"IDAT", zlib.compress(bytes(5 * 22)))
        )

    assert _outcome(png(MAX_PNG_CHUNKS - 1)) == _pillow(png(MAX_PNG_CHUNKS - 1)) == (7, 5, "PNG")
    assert _outcome(png(MAX_PNG_CHUNKS)) == (
        "not an image: no PNG IHDR chunk within the first 64 chunks"
    )


def test_tiff_directory_is_read_to_its_entry_cap() -> None:
    assert _outcome(_bigtiff(MAX_TIFF_ENTRIES + 10, MAX_TIFF_ENTRIES - 2)) == (64, 48, "TIFF")
    assert _outcome(_bigtiff(MAX_TIFF_ENTRIES + 10, MAX_TIFF_ENTRIES - 1)) == (
        "not an image: TIFF image directory has no ImageLength"
    )


# --- mutated files: whenever Pillow opens one, the answer is Pillow's --------------------

_EXPLORE = os.environ.get("FUZZ_EXAMPLES")
FUZZ = settings(
    max_examples=int(_EXPLORE or 300),
    derandomize=not _EXPLORE,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

FUZZ_SEEDS = [
    "jpeg-RGB-17x9",
    "jpeg-progressive-1x1",
    "jpeg-hand-made-sof2",
    "mpo-2-pictures",
    "png-RGBA",
    "png-apng",
    "webp-lossy-1x1",
    "webp-lossless-1x1",
    "webp-alpha-1x1",
    "webp-animated",
    "gif-animated-with-comment",
    "gif-first-frame-larger-than-screen",
    "bmp-P",
    "bmp-RGB",
    "tiff-orientation-6",
    "tiff-big-endian",
    "tiff-bigtiff",
]


@cache
def _seed(name: str) -> bytes:
    data = CORPUS[name]()
    return data if len(data) < 4096 else data[:4096]


edits = st.lists(
    st.tuples(
        st.sampled_from(["set", "cut", "insert", "delete"]),
        st.integers(0, 64) | st.integers(0, 4096),  # the header, mostly
        st.binary(min_size=1, max_size=8),
    ),
    min_size=1,
    max_size=3,
)


@FUZZ
@given(seed=st.sampled_from(FUZZ_SEEDS), edits=edits)
def test_mutated_images_measure_as_pillow_opens_them(
    seed: str, edits: list[tuple[str, int, bytes]]
) -> None:
    """Bytes changed, cut, inserted or deleted, mostly in the header: if Pillow still opens
    the file, our size and format are its; if not, we fail with a reason or measure it
    (we are more lenient: see the module docstring), and never raise anything else."""
    data = bytearray(_seed(seed))
    for kind, position, value in edits:
        at = position % (len(data) + 1)
        if kind == "set":
            data[at : at + len(value)] = value
        elif kind == "cut":
            del data[at:]
        elif kind == "insert":
            data[at:at] = value
        else:
            del data[at : at + len(value)]
    mutated = bytes(data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        outcome = _outcome(mutated, NO_LIMIT)
    expected = _pillow(mutated)
    if expected is not None:
        assert outcome == expected
    elif isinstance(outcome, str):
        assert outcome.startswith(("not an image", "image too large"))
