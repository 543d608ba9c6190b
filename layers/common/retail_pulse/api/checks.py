"""The checks a request's values pass beyond their types: a URL the fetcher can use (the
one rule for image_url and callback_url), and a job's size."""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import AfterValidator, StrictStr
from pydantic_core import PydanticCustomError

from retail_pulse.api.errors import SUBJECT_ERROR
from retail_pulse.settings import get_settings
from retail_pulse.timestamps import shown

# Scheme, then the authority (userinfo@host:port) up to the path, query or fragment.
_HTTP_URL = re.compile(r"^https?://(?P<authority>[^/?#]+)", re.IGNORECASE)
_IDNA_REASON = re.compile(r"\((?:\w+Error: )?(?P<reason>.*)\)$")


def url_problem(url: str) -> str | None:
    """Why `url` is not an http or https URL the service can fetch, or None when it is.

    The one rule for every URL a client sends (image_url; callback_url is checked the
    same way), so a URL the fetcher could not even split is refused at submit with its
    position, not accepted and failed later. The answer finishes a sentence that starts
    with where the URL is: "visits[1].image_url[3] " + "'http://[::1/x' is not a valid
    URL: its IPv6 host has no closing ']'".
    """
    limit = get_settings().max_url_length
    if len(url) > limit:
        return f"is {len(url)} characters long; the limit is {limit} (MAX_URL_LENGTH)"
    # Unprintable characters include lone surrogates, which no store can encode; urlsplit
    # would also silently drop tabs and newlines, so the URL fetched is not the one sent.
    if any(c.isspace() or not c.isprintable() for c in url):
        return (
            "is not an http or https URL: it contains a space or an unprintable character "
            "(percent-encode it)"
        )
    match = _HTTP_URL.match(url)
    if not match:
        return f"'{shown(url[:100])}' is not an http or https URL"
    reason = _authority_problem(match.group("authority"))
    if reason is None:
        # What the fetcher will do with it (net/guard.py): nothing here may raise.
        try:
            parts = urlsplit(url)
            _ = parts.hostname, parts.port
        except ValueError as error:
            reason = str(error)
    return None if reason is None else f"'{shown(url[:100])}' is not a valid URL: {reason}"


def _authority_problem(authority: str) -> str | None:
    """What is wrong with `user@host:port`, in words (urlsplit's own are terse, and it
    lets some broken forms through: "[::1]junk", "[v1.x]", port 0)."""
    host_port = authority.rpartition("@")[2]  # the last @ ends the userinfo, as in urlsplit
    if host_port.startswith("["):
        end = host_port.find("]")
        if end < 0:
            return "its IPv6 host has no closing ']'"
        host, rest = host_port[1:end], host_port[end + 1 :]
        if rest and not rest.startswith(":"):
            return "only ':' and a port may follow its IPv6 host"
        try:
            ipaddress.IPv6Address(host)  # a zone (fe80::1%25eth0) is part of the address
        except ValueError:
            return f"'{host}' in brackets is not an IPv6 address"
        port = rest[1:]
    else:
        if "[" in host_port or "]" in host_port:
            return "its host has a '[' or ']' that is not around an IPv6 address"
        host, _, port = host_port.partition(":")
    if not host:
        return "it has no host"
    # An empty port means the scheme's default (RFC 3986), as urlsplit reads it.
    if port and not (
        len(port) <= 5 and port.isascii() and port.isdigit() and 0 < int(port) < 65536
    ):
        return "its port must be a number from 1 to 65535"
    if not host_port.startswith("["):
        try:
            host.encode("idna")  # what the fetcher sends to DNS and in the Host header
        except UnicodeError as error:
            found = _IDNA_REASON.search(str(error))
            why = found.group("reason") if found else str(error)
            if why == "label empty or too long":  # the codec's usual complaint, in words
                why = "each dot-separated part must be 1 to 63 characters"
            return f"its host '{host}' is not a valid host name ({why})"
    return None


def _checked_url(url: str) -> str:
    problem = url_problem(url)
    if problem is not None:
        # A custom type, so the sentence reads "<where> '<url>' is not ...", no colon.
        raise PydanticCustomError(SUBJECT_ERROR, "{problem}", {"problem": problem})
    return url


FetchableUrl = Annotated[StrictStr, AfterValidator(_checked_url)]
"""A string that url_problem accepts; each bad one is its own error, at its position."""


def too_many_images(images: int, limit: int, name: str = "MAX_IMAGES_PER_JOB") -> str:
    return (
        f"the job has {images} images; the limit is {limit} per job "
        f"({name}): split it into several jobs"
    )


def too_many_uploaded_images(images: int) -> str | None:
    """Why an uploaded job of this many images is refused, or None: its limit is
    MAX_IMAGES_PER_UPLOAD_JOB (the ingest reads it, not a request)."""
    limit = get_settings().max_images_per_upload_job
    return too_many_images(images, limit, "MAX_IMAGES_PER_UPLOAD_JOB") if images > limit else None
