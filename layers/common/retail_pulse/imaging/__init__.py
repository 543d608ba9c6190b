"""Download and measure one image: the work behind every image record."""

from retail_pulse.imaging.download import FetchedImage, fetch, fetch_image
from retail_pulse.imaging.errors import ImageError, PermanentImageError, TransientImageError
from retail_pulse.imaging.measure import ImageSize, measure_image

__all__ = [
    "FetchedImage",
    "ImageError",
    "ImageSize",
    "PermanentImageError",
    "TransientImageError",
    "fetch",
    "fetch_image",
    "measure_image",
]
