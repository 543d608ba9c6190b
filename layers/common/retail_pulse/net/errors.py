"""Why an outbound request failed, and whether trying again could help. str(error) may be
shown to the client that chose the URL: it never quotes more of a host's bytes than a
short cause."""

from __future__ import annotations


class RequestError(Exception):
    """A request to a client-chosen URL that did not get a usable answer."""

    transient = False


class PermanentRequestError(RequestError):
    """The same request would fail the same way: an invalid URL, a malformed answer."""


class Refused(PermanentRequestError):
    """The URL may not be requested at all: its scheme, or an address it resolves to."""


class BodyTooLarge(PermanentRequestError):
    """The answer's body is (or says it is) larger than the caller's cap."""

    def __init__(self, message: str, *, cap: int, url: str) -> None:
        super().__init__(message)
        self.cap = cap
        self.url = url


class HostMisconfigured(PermanentRequestError):
    """The host is not set up to answer: its name does not resolve, its certificate is not
    valid for it, or it speaks no HTTP. Final for one request, but its operator may fix it."""


class TransientRequestError(RequestError):
    """Trying again later may help: connection trouble, timeouts, the deadline."""

    transient = True
