"""measure_image reads width and height from the header of every accepted format."""

from __future__ import annotations

import dataclasses
import io
import struct
import warnings
import zlib

import pytest
from PIL import Image

from retail_pulse.imaging import ImageSize, PermanentImageError, fetch, measure_image
from retail_pulse.settings import Settings, get_settings
from tests.support.image_server import ImageServer, make_image


def _settings(**changes: object) -> Settings:
    return dataclasses.replace(get_settings(), **changes)


def _png_header(width: int, height: int) -> bytes:
    """A PNG that is only a header: claims any size while weighing a few dozen bytes."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body)
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"")


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


def test_html_page_is_not_an_image_and_says_what_it_was(image_server: ImageServer) -> None:
    fetched = fetch(image_server.url("/text"))
    with pytest.raises(PermanentImageError) as caught:
        measure_image(fetched.data, content_type=fetched.content_type)
    assert str(caught.value) == "not an image (text/html)"
    assert caught.value.reason == "not_image"
    assert not caught.value.transient


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x00" * 64,
        b"GIF89a",  # a signature and nothing after it
        make_image(640, 480, "png")[:20],  # cut inside the IHDR chunk
        make_image(640, 480, "jpg")[:10],
        b"%PDF-1.7 not an image",
    ],
    ids=["empty", "zeros", "bare-gif-signature", "cut-png", "cut-jpeg", "pdf"],
)
def test_garbage_and_truncated_headers_are_not_images(data: bytes) -> None:
    with pytest.raises(PermanentImageError, match=r"^not an image$") as caught:
        measure_image(data)
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
