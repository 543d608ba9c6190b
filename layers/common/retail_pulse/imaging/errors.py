"""Why an image could not be measured, and whether trying again could help."""

from __future__ import annotations

from typing import Literal

# Low-cardinality failure classes: metric dimensions and log fields use these. "internal" is
# an unexpected exception of ours while fetching or measuring: a bug, never the client's.
FailureReason = Literal["download", "not_image", "too_large", "refused", "internal"]


class ImageError(Exception):
    """An image that could not be measured; str(error) is shown to the client."""

    transient = False

    def __init__(self, message: str, reason: FailureReason) -> None:
        super().__init__(message)
        self.reason: FailureReason = reason


class PermanentImageError(ImageError):
    """Trying again cannot help: HTTP 4xx, not an image, over a limit, a refused address."""


class TransientImageError(ImageError):
    """Trying again later may help: connection trouble, timeouts, HTTP 429 and 5xx."""

    transient = True

    def __init__(
        self, message: str, reason: FailureReason = "download", retry_after_s: float | None = None
    ) -> None:
        super().__init__(message, reason)
        self.retry_after_s = retry_after_s
