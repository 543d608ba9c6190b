"""Read an image's width and height from its header, in bounded time and memory whatever the
bytes, without decoding a single pixel.

Why not just `Image.open(...).size`: Pillow parses headers in Python loops whose length the
file controls. A valid 640x480 JPEG whose frame header sits behind 18 MB of empty APP1
segments costs Pillow 13 5 to 10 s of CPU and over 500 MB (an object per segment), in a
512 MB function that measures a whole batch of images at once. Feeding Pillow only a bounded prefix
does not fix that in general: the cost is in the structure inside the prefix, and real
files need more than any small prefix (a phone JPEG's frame header can sit behind 100 KB of
EXIF, XMP and ICC segments; a TIFF's first directory is often at the end of the file).

The design is a hybrid, chosen per format by where its size lives:

- JPEG, PNG, GIF, WebP, TIFF: small readers of our own, which follow Pillow's grammar (the
  same markers, chunks, blocks and tags, the same choices where a file is ambiguous) but
  skip structure by its length instead of reading it, scan only at C speed (bytes.find,
  startswith), never copy a segment, and stop at a cap on the steps they take:
  - JPEG: the segment walk, from SOI to the first SOS (start of scan). Pillow's frame
    header is the last SOF0-SOF15 (not C4 DHT, C8 JPG, CC DAC) or DHP before the scan;
    runs of 0xFF fill and bytes between segments are skipped in one scan each; RSTn, SOI,
    EOI and JPGn carry no length. At most MAX_JPEG_SEGMENTS steps (real files have fewer
    than 100). "MPO" when an APP2 MPF index lists more than one picture, as Pillow says.
  - PNG: the IHDR chunk (the first chunk in every real file; at most MAX_PNG_CHUNKS chunks
    are stepped over to find it), its CRC checked. Pillow also walks every chunk up to the
    first IDAT, inflating text chunks on the way; none of them can change the size.
  - GIF: the logical screen, enlarged to the first image's extent where that is larger
    (Pillow does), walking extension sub-blocks by their length: at most MAX_GIF_BLOCKS (gif.py).
  - WebP: the VP8 (lossy: 14-bit sizes after the start code), VP8L (lossless: packed
    14-bit sizes) or VP8X (extended, animated or with alpha: 24-bit canvas size minus one)
    chunk at the fixed offset 12, with libwebp's header checks. Pillow hands libwebp's
    demuxer a copy of the whole file instead.
  - TIFF: the first image file directory wherever its offset points (TIFF allows the end
    of the file), BigTIFF too; ImageWidth and ImageLength, swapped for an Orientation of
    5 to 8, as Pillow does. Entries are read as Pillow's ImageFileDirectory_v2.load reads
    them (the first loadable entry of a tag wins; out-of-line data past the end ends the
    directory), at most MAX_TIFF_ENTRIES of them (the most a classic TIFF directory has;
    tiff.py).
    Later directories (frames) are never followed.
- BMP: Pillow itself (its BMP plugin, the only format it tries), on the first
  BMP_PREFIX_BYTES. A BMP's size is at a fixed offset, and Pillow's open reads nothing past
  its file and info headers, bitfield masks and palette, which all fit in that prefix;
  Pillow then also validates depth, compression and masks, which a copy of ours would
  only have to track.

So the work per image is a capped number of Python steps plus C-speed scans that never
pass a byte twice: about ten microseconds for a real photo, and at most about 10 ms of CPU
and 3 MB of Python allocations for the worst inputs bench/hostile_images.py knows (the
largest TIFF directory, the largest BMP palette). A header that gives no size within those
bounds fails with its reason, e.g. "not an image: no JPEG frame header within the first
1,000 segments".

Where a reader could differ from Pillow it follows Pillow: whenever Pillow 13 opens an image
within those caps, our size and format equal its (tests/unit/test_measure.py checks
generated and mutated files of every format). We are more lenient in two ways: a file cut
short after its header still measures (Pillow refuses a PNG cut before its IDAT, or a WebP
before its RIFF length, but accepts a JPEG cut after its frame header), and metadata Pillow
parses at open but that cannot change the size is not validated (JPEG quantisation tables,
ICC fragment headers, EXIF, PNG chunks after IHDR, WebP chunks after the first, TIFF tags
other than the three above). Nothing here decodes, so that only matters to code that later
does.
"""

from __future__ import annotations

import io
import re
import struct
import warnings
import zlib
from dataclasses import dataclass

from PIL import BmpImagePlugin, Image

from retail_pulse.imaging.errors import PermanentImageError
from retail_pulse.imaging.gif import read_gif
from retail_pulse.imaging.header import Encoded, Reader, Unreadable, u16be
from retail_pulse.imaging.tiff import MP_TAGS, TIFF_PREFIXES, ifd_int, ifd_tags, read_tiff, unpack
from retail_pulse.settings import Settings, get_settings

# The formats the service accepts, by Pillow's names: each has a reader below (_reader_for),
# and no other bytes reach a parser, so Pillow's rarer, less-hardened ones (EPS, PSD, ...)
# never see client-supplied data.
ACCEPTED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")

# Caps on the steps a reader takes. Each step is O(1) Python (a scan it starts runs in C and
# never revisits a byte), so these bound the CPU whatever the size of the data.
MAX_JPEG_SEGMENTS = 1_000  # markers, fill runs and gaps from SOI to the frame header and scan
MAX_PNG_CHUNKS = 64  # chunks examined for the IHDR, which the PNG spec puts first
# Everything Pillow's BMP open reads: the 14-byte file header, the largest (V5, 124-byte)
# info header, three bitfield masks and a palette of up to 65,536 four-byte entries.
BMP_PREFIX_BYTES = 14 + 124 + 12 + 4 * 65_536


@dataclass(frozen=True)
class ImageSize:
    width: int
    height: int
    format: str  # Pillow's name, e.g. "JPEG"; a multi-picture JPEG reports "MPO"

    @property
    def perimeter(self) -> int:
        return 2 * (self.width + self.height)


def measure_image(
    data: Encoded, settings: Settings | None = None, *, content_type: str | None = None
) -> ImageSize:
    """Width, height and format of an encoded image; raises PermanentImageError.

    `content_type` is only used to explain a failure ("not an image (text/html)").
    """
    settings = settings or get_settings()
    detail = f" ({content_type})" if content_type else ""
    reader = _reader_for(data)
    if reader is None:
        raise PermanentImageError(f"not an image{detail}", reason="not_image")
    try:
        width, height, image_format = reader(data)
    except Unreadable as err:
        raise PermanentImageError(f"not an image{detail}: {err}", reason="not_image") from err
    except (struct.error, IndexError) as err:
        # Every read is bounds-checked first; this is the backstop that keeps a read past
        # the end, should one slip through, a verdict on the image rather than a crash.
        raise PermanentImageError(
            f"not an image{detail}: header is cut short", reason="not_image"
        ) from err
    if width <= 0 or height <= 0:  # Pillow refuses these too ("not identified")
        raise PermanentImageError(
            f"not an image{detail}: {image_format} header declares a {width}x{height} image",
            reason="not_image",
        )
    _check_pixels(width, height, settings)
    return ImageSize(width=width, height=height, format=image_format)


def _check_pixels(width: int, height: int, settings: Settings) -> None:
    pixels = width * height
    if pixels > settings.max_image_pixels:
        raise PermanentImageError(
            f"image too large: {width}x{height} is {pixels:,} pixels, "
            f"over the limit of {settings.max_image_pixels:,}",
            reason="too_large",
        )
    # Pillow's own decompression-bomb guard, which Image.open applied before ours when we
    # measured with it: an error over twice Image.MAX_IMAGE_PIXELS, a warning over it (an
    # error where warnings are errors). It only matters when MAX_IMAGE_PIXELS is set above
    # Pillow's limit. The global is read, never changed.
    limit = Image.MAX_IMAGE_PIXELS
    if limit is None:
        return
    if pixels > 2 * limit:
        raise PermanentImageError(
            f"image too large: {width}x{height} is {pixels:,} pixels, "
            f"over Pillow's limit of {2 * limit:,}",
            reason="too_large",
        )
    if pixels > limit:
        try:
            warnings.warn(
                f"Image size ({pixels} pixels) exceeds limit of {limit} pixels, "
                "could be decompression bomb DOS attack.",
                Image.DecompressionBombWarning,
                stacklevel=3,
            )
        except Image.DecompressionBombWarning as err:
            raise PermanentImageError(f"image too large: {err}", reason="too_large") from err


_WEBP_CHUNKS = (b"VP8 ", b"VP8L", b"VP8X")


def _reader_for(data: Encoded) -> Reader | None:
    if data.startswith(b"\xff\xd8\xff"):
        return _jpeg
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return _png
    if data.startswith(b"RIFF") and data[8:12] == b"WEBP" and data[12:16] in _WEBP_CHUNKS:
        return _webp
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return read_gif
    if data.startswith(b"BM"):
        return _bmp
    if data.startswith(TIFF_PREFIXES):
        return read_tiff
    return None


# --- JPEG -------------------------------------------------------------------------------

# Markers Pillow reads as a frame header: SOF0-SOF15 but DHT, JPG and DAC, and DHP.
_JPEG_FRAME = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC} | {0xDE}
# Markers Pillow reads no length for: JPG, RST0-7, SOI, EOI, JPG0-13. Everything else from
# 0xC0 up has a length; 0x01-0xBF (TEM and the reserved codes) are an error, as in Pillow.
_JPEG_STANDALONE = frozenset({0xC8, *range(0xD0, 0xDA), *range(0xF0, 0xFE)})
_JPEG_SOS = 0xDA
_FF_RUN = b"\xff" * 4096
_ULTRA_HDR = b' hdrgm:Version="'  # Pillow leaves an Ultra HDR JPEG a JPEG, not an MPO


def _jpeg(data: Encoded) -> tuple[int, int, str]:
    end_of_data = len(data)
    # Just past FF D8 FF: Pillow reads that third byte as the 0xFF of the first marker, so
    # `pos` is always the index of a marker code, the byte after an 0xFF.
    pos = 3
    size: tuple[int, int] | None = None
    mpf: tuple[int, int] | None = None  # the last APP2 "MPF" payload: Pillow keeps the last
    app1: list[tuple[int, int]] = []
    stopped = "end"
    for _ in range(MAX_JPEG_SEGMENTS):
        if pos >= end_of_data:
            break  # Pillow stops at the end too, with whatever frame header it saw
        code = data[pos]
        if code == 0xFF:  # fill bytes: the last 0xFF of the run is the marker's
            pos = _skip_ff(data, pos)
            continue
        if code == 0x00 or code in _JPEG_STANDALONE:
            # An escaped 0xFF outside a segment, or a marker without a length: Pillow reads
            # on byte by byte to the next 0xFF; one find does the same.
            pos = _after_next_ff(data, pos + 1)
            continue
        if code < 0xC0:
            raise Unreadable(f"0xFF 0x{code:02X} at byte {pos - 1:,} is not a JPEG marker")
        if pos + 3 > end_of_data:
            raise Unreadable(f"JPEG segment at byte {pos - 1:,} is cut short")
        length = u16be(data, pos + 1)
        body = pos + 3
        end = body + max(length - 2, 0)  # Pillow reads nothing for a length under 2
        if end > end_of_data:
            raise Unreadable(
                f"JPEG segment 0xFF{code:02X} at byte {pos - 1:,} claims {length:,} bytes, "
                f"past the end of the data ({end_of_data:,} bytes)"
            )
        if code in _JPEG_FRAME:
            size = _jpeg_frame(data, body, end, pos - 1)
        elif code == 0xE1:
            app1.append((body, end))
        elif code == 0xE2 and data.startswith(b"MPF\x00", body, end):
            mpf = (body + 4, end)
        if code == _JPEG_SOS:
            stopped = "scan"
            break
        pos = _after_next_ff(data, end)
    else:
        stopped = "cap"
    if size is None:
        if stopped == "cap":
            raise Unreadable(
                f"no JPEG frame header within the first {MAX_JPEG_SEGMENTS:,} segments"
            )
        if stopped == "scan":
            raise Unreadable("JPEG image data starts before any frame header")
        raise Unreadable("no JPEG frame header before the data ends")
    # Past the cap with a frame header seen, that header is the answer: Pillow would walk
    # on, and only another frame header (which no real file has) could change it.
    width, height = size
    image_format = "MPO" if mpf is not None and _is_mpo(data, mpf, app1) else "JPEG"
    return width, height, image_format


def _jpeg_frame(data: Encoded, body: int, end: int, at: int) -> tuple[int, int]:
    """(width, height) of the frame header whose payload is data[body:end], or the reason
    Pillow refuses it."""
    if end - body < 6:
        raise Unreadable(f"JPEG frame header at byte {at:,} is cut short")
    if data[body] != 8:
        raise Unreadable(f"JPEG has {data[body]}-bit samples: only 8-bit JPEG is supported")
    components = data[body + 5]
    if components not in (1, 3, 4):
        raise Unreadable(f"JPEG has {components} components: only 1, 3 or 4 are supported")
    if (end - body - 6) % 3:  # three bytes per component; Pillow fails on a partial one
        raise Unreadable(f"JPEG frame header at byte {at:,} has a cut-short component list")
    return u16be(data, body + 3), u16be(data, body + 1)


def _skip_ff(data: Encoded, pos: int) -> int:
    """The index of the first byte at or after `pos` that is not 0xFF (or the end): a few
    KB at a time with startswith (a memcmp, no copy), so 20 MB of fill is 5,000 steps."""
    while data.startswith(_FF_RUN, pos):
        pos += len(_FF_RUN)
    tail = data[pos : pos + len(_FF_RUN)]
    return pos + len(tail) - len(tail.lstrip(b"\xff"))


def _after_next_ff(data: Encoded, pos: int) -> int:
    """The index just past the next 0xFF at or after `pos`, or the end of the data."""
    found = data.find(b"\xff", pos)
    return len(data) if found < 0 else found + 1


def _is_mpo(data: Encoded, mpf: tuple[int, int], app1: list[tuple[int, int]]) -> bool:
    """Whether Pillow makes this JPEG an MPO: its MP index (a TIFF directory inside the APP2
    segment) reads, numbers more than one picture, and lists each as a JPEG; and no APP1
    marks it Ultra HDR. Anything unreadable leaves it a JPEG, as in Pillow's jpeg_factory."""
    start, end = mpf
    head = data[start : min(start + 8, end)]
    # Pillow reads the index header as 8 bytes: a BigTIFF header fails there.
    if len(head) < 8 or head[:4] not in TIFF_PREFIXES or head[2] == 0x2B:
        return False
    little = head.startswith(b"II")
    tags = ifd_tags(data, start, end, unpack(little, "L", head, 4), little, False, MP_TAGS)
    number = ifd_int(data, little, tags.get(0xB001))  # NumberOfImages
    entries = tags.get(0xB002)  # MPEntry: 16 bytes per picture
    if number is None or number <= 1 or entries is None or entries.kind not in (1, 7):
        return False
    if entries.count < 16 * number:
        return False
    # Pillow unpacks the entries big-endian only for an exact "MM\0*" header.
    attribute = struct.Struct(">L" if head.startswith(b"MM\x00\x2a") else "<L")
    for index in range(number):  # at most 4,096: the entries fit in one 64 KB segment
        if (attribute.unpack_from(data, entries.at + 16 * index)[0] >> 24) & 7:
            return False  # a picture in another format: "unsupported picture format"
    return not any(data.find(_ULTRA_HDR, body, stop) >= 0 for body, stop in app1)


# --- PNG --------------------------------------------------------------------------------

_PNG_CHUNK_TYPE = re.compile(rb"\w\w\w\w")  # Pillow's is_cid
# (bit depth, colour type) pairs Pillow has a mode for: exactly those the PNG spec allows.
_PNG_MODES = frozenset(
    {(1, 0), (2, 0), (4, 0), (8, 0), (16, 0), (8, 2), (16, 2), (1, 3), (2, 3), (4, 3)}
    | {(8, 3), (8, 4), (16, 4), (8, 6), (16, 6)}
)


def _png(data: Encoded) -> tuple[int, int, str]:
    end_of_data = len(data)
    pos = 8
    for _ in range(MAX_PNG_CHUNKS):
        if pos + 8 > end_of_data:
            raise Unreadable("PNG ends before its IHDR chunk")
        length = struct.unpack_from(">L", data, pos)[0]
        kind = data[pos + 4 : pos + 8]
        if not _PNG_CHUNK_TYPE.match(kind):
            raise Unreadable(f"PNG chunk at byte {pos:,} has no valid type")
        if kind == b"IHDR":
            return _png_header(data, pos, length)
        if kind in (b"IDAT", b"fdAT", b"IEND"):
            raise Unreadable(f"PNG {kind.decode()} chunk comes before the IHDR chunk")
        pos += 12 + length  # length, type, data, CRC
    raise Unreadable(f"no PNG IHDR chunk within the first {MAX_PNG_CHUNKS:,} chunks")


def _png_header(data: Encoded, pos: int, length: int) -> tuple[int, int, str]:
    body = pos + 8
    if length < 13 or body + length + 4 > len(data):
        raise Unreadable("PNG IHDR chunk is cut short")
    with memoryview(data) as view:  # no copy: the chunk may be as long as the data
        crc = zlib.crc32(view[pos + 4 : body + length])
    if crc != struct.unpack_from(">L", data, body + length)[0]:
        raise Unreadable("PNG IHDR chunk fails its checksum")
    width, height, depth, colour = struct.unpack_from(">LLBB", data, body)
    if (depth, colour) not in _PNG_MODES:
        raise Unreadable(f"PNG IHDR declares bit depth {depth} with colour type {colour}")
    if data[body + 11]:
        raise Unreadable(f"PNG IHDR declares an unknown filter method {data[body + 11]}")
    return width, height, "PNG"


# --- WebP -------------------------------------------------------------------------------


def _webp(data: Encoded) -> tuple[int, int, str]:
    kind = data[12:16]
    chunk_size = struct.unpack_from("<L", data, 16)[0] if len(data) >= 20 else 0
    if kind == b"VP8X":  # extended: the canvas size, 24 bits each, minus one
        if len(data) < 30 or chunk_size < 10:
            raise Unreadable("WebP VP8X header is cut short")
        width = 1 + int.from_bytes(data[24:27], "little")
        height = 1 + int.from_bytes(data[27:30], "little")
    elif kind == b"VP8L":  # lossless: a signature byte, then 14 + 14 bits of size minus one
        if len(data) < 25 or chunk_size < 5:
            raise Unreadable("WebP VP8L header is cut short")
        if data[20] != 0x2F:
            raise Unreadable("WebP VP8L stream lacks its signature")
        bits = struct.unpack_from("<L", data, 21)[0]
        if bits >> 29:
            raise Unreadable(f"WebP VP8L stream has unknown version {bits >> 29}")
        width, height = (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    else:  # "VP8 ", lossy: a frame tag, a start code, 14 bits of width and of height
        if len(data) < 30 or chunk_size < 10:
            raise Unreadable("WebP VP8 header is cut short")
        tag = int.from_bytes(data[20:23], "little")
        # libwebp's VP8GetInfo: a shown key frame of a known profile whose first partition
        # fits in the chunk, behind the start code.
        if tag & 1 or (tag >> 1) & 7 > 3 or not (tag >> 4) & 1 or tag >> 5 >= chunk_size:
            raise Unreadable("WebP VP8 stream does not start with a key frame")
        if data[23:26] != b"\x9d\x01\x2a":
            raise Unreadable("WebP VP8 stream lacks its start code")
        width, height = struct.unpack_from("<HH", data, 26)
        width, height = width & 0x3FFF, height & 0x3FFF  # the top 2 bits are a scale
    return width, height, "WEBP"


# --- BMP --------------------------------------------------------------------------------


def _bmp(data: Encoded) -> tuple[int, int, str]:
    if len(data) < 18:
        raise Unreadable("BMP header is cut short")
    # The plugin itself rather than Image.open: the same parse, but with its own reasons
    # ("Unsupported BMP compression (9)") instead of "cannot identify image file", and
    # without a second bomb check (ours follows, for every format alike).
    try:
        with BmpImagePlugin.BmpImageFile(io.BytesIO(data[:BMP_PREFIX_BYTES])) as image:
            width, height = image.size
    except Exception as err:  # SyntaxError, OSError, ...: all mean the same here
        raise Unreadable(f"BMP header unreadable ({err})") from err
    return width, height, "BMP"
