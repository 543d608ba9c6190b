"""Download one image from a client-supplied URL, through net's guard.

Every hop is vetted and pinned (net.guard), the whole attempt, redirects included, keeps
one wall-clock deadline (`image_deadline_s`, net.deadline), and the body is read under the
byte cap (`max_image_bytes`, net.body). Redirects are followed by hand, at most
MAX_REDIRECTS, so each hop is vetted too. The body must not be content-encoded (no
decompression, so no decompression bombs). Whatever the host or the URL does, `fetch`
raises only PermanentImageError or TransientImageError.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import requests

from retail_pulse.imaging.errors import ImageError, PermanentImageError, TransientImageError
from retail_pulse.net.body import Hold, format_bytes, parse_retry_after, read_capped
from retail_pulse.net.deadline import Attempt, deadline
from retail_pulse.net.errors import BodyTooLarge, Refused, RequestError
from retail_pulse.net.guard import vet
from retail_pulse.net.transport import send
from retail_pulse.settings import Settings, get_settings

# Enough for http->https and a CDN hop or two; more is a loop or someone probing us.
MAX_REDIRECTS = 3


@dataclass(frozen=True)
class FetchedImage:
    """The body of an image URL, with what the measurer needs to explain a failure."""

    url: str  # the last hop, after redirects
    data: bytes | bytearray  # as read: a bytearray, never copied into bytes
    content_type: str | None  # media type only, e.g. "image/jpeg"; None when not sent


def fetch(url: str, settings: Settings | None = None, *, hold: Hold | None = None) -> FetchedImage:
    """Download `url` following at most MAX_REDIRECTS redirects, each hop vetted.

    `hold` is told the bytes the body needs before they are read (net.body.read_capped).
    Raises PermanentImageError or TransientImageError (whatever ImageError `hold` raised
    among them), and nothing else.
    """
    settings = settings or get_settings()
    try:
        with deadline(url, settings.image_deadline_s, passthrough=(ImageError,)) as attempt:
            fetched = _follow(url, settings, attempt, hold)
            if attempt.expired:
                # A body read until the connection closes ends "cleanly" when the watchdog
                # closes it: what was read may be cut short.
                raise attempt.timed_out()
            return fetched
    except RequestError as err:
        raise _image_error(err) from err


def _image_error(err: RequestError) -> ImageError:
    """What a failed request means for the image."""
    if isinstance(err, BodyTooLarge):
        message = f"image larger than {format_bytes(err.cap)}: {err.url}"
        return PermanentImageError(message, reason="too_large")
    if isinstance(err, Refused):
        return PermanentImageError(str(err), reason="refused")
    if err.transient:
        return TransientImageError(str(err))
    return PermanentImageError(str(err), reason="download")


def _follow(url: str, settings: Settings, attempt: Attempt, hold: Hold | None) -> FetchedImage:
    """The redirect loop of one attempt."""
    current = url
    timeouts = (settings.connect_timeout_s, settings.read_timeout_s)
    for _ in range(MAX_REDIRECTS + 1):
        hop = vet(current, settings.allowed_private_hosts, attempt)
        with send(hop, attempt, timeouts) as response:
            if response.is_redirect:
                current = _redirect_target(current, response.headers["Location"], settings)
                continue
            _raise_for_status(response, current)
            _refuse_content_encoding(response, current)
            data = read_capped(response, current, settings.max_image_bytes, attempt, hold)
            content_type = response.headers.get("Content-Type", "").split(";")[0].strip()
            return FetchedImage(url=current, data=data, content_type=content_type or None)
    raise PermanentImageError(f"more than {MAX_REDIRECTS} redirects from {url}", reason="download")


def _redirect_target(current: str, location: str, settings: Settings) -> str:
    """The next hop's URL; a Location that is not a usable URL fails for good."""
    # The Location is the host's text and may end up in the client's error message.
    if len(location) > settings.max_url_length:
        raise PermanentImageError(
            f"redirect from {current} to a URL longer than {settings.max_url_length} characters",
            reason="download",
        )
    try:
        target = urljoin(current, location)
        _ = urlsplit(target).port  # raises ValueError for a bad port or bracket
    except ValueError as err:
        raise PermanentImageError(
            f"invalid redirect Location from {current}: {err}", reason="download"
        ) from err
    return target


def _raise_for_status(response: requests.Response, url: str) -> None:
    """429 and 5xx may pass (honour Retry-After); any other non-2xx will not."""
    status = response.status_code
    if status == 429 or status >= 500:
        raise TransientImageError(
            f"HTTP {status} for {url}",
            retry_after_s=parse_retry_after(response.headers.get("Retry-After")),
        )
    if not 200 <= status < 300:
        raise PermanentImageError(f"HTTP {status} for {url}", reason="download")


def _refuse_content_encoding(response: requests.Response, url: str) -> None:
    """We asked for identity; decoding anything else would let a small body expand without
    bound (a gzip or brotli bomb), so an encoded answer is refused instead."""
    encoding = response.headers.get("Content-Encoding", "").strip()
    codings = [c.strip().lower() for c in encoding.split(",") if c.strip()]
    if any(c != "identity" for c in codings):
        # The header is the host's text: show it only when it is short and plain.
        shown = encoding if len(encoding) <= 64 and encoding.isascii() else "(unreadable)"
        shown = shown if shown.isprintable() else "(unreadable)"
        raise PermanentImageError(
            f"served with Content-Encoding {shown}; only unencoded images are accepted: {url}",
            reason="download",
        )
