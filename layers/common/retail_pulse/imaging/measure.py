"""Read an image's width and height from its header, without decoding a single pixel.

`Image.open` only parses the header; nothing here calls `load()`, so a 12-megapixel photo
costs the same as a thumbnail and a hostile header cannot make us allocate its pixels.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from PIL import Image

from retail_pulse.imaging.errors import PermanentImageError
from retail_pulse.settings import Settings, get_settings

# The formats the service accepts. Naming them keeps Pillow's rarer, less-hardened
# parsers (EPS, PSD, ...) away from client-supplied bytes.
ACCEPTED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")


@dataclass(frozen=True)
class ImageSize:
    width: int
    height: int
    format: str  # Pillow's name, e.g. "JPEG"; a multi-picture JPEG reports "MPO"

    @property
    def perimeter(self) -> int:
        return 2 * (self.width + self.height)


def measure_image(
    data: bytes, settings: Settings | None = None, *, content_type: str | None = None
) -> ImageSize:
    """Width, height and format of an encoded image; raises PermanentImageError.

    `content_type` is only used to explain a failure ("not an image (text/html)").
    """
    settings = settings or get_settings()
    try:
        with Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS) as image:
            width, height = image.size
            image_format = image.format or "unknown"
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        # Pillow's own guard (its global limit, left untouched) fired before ours could.
        raise PermanentImageError(f"image too large: {err}", reason="too_large") from err
    except Exception as err:
        # Pillow's format plugins raise many types (UnidentifiedImageError, SyntaxError,
        # ValueError, EOFError, ...) for a header they cannot parse; all mean the same.
        detail = f" ({content_type})" if content_type else ""
        raise PermanentImageError(f"not an image{detail}", reason="not_image") from err

    pixels = width * height
    if pixels > settings.max_image_pixels:
        raise PermanentImageError(
            f"image too large: {width}x{height} is {pixels:,} pixels, "
            f"over the limit of {settings.max_image_pixels:,}",
            reason="too_large",
        )
    return ImageSize(width=width, height=height, format=image_format)
