"""What requests, urllib3, http.client or ssl raised, as a RequestError that says what went
wrong in our words (their text often quotes the host's bytes)."""

from __future__ import annotations

import http.client
import ssl

import requests
import urllib3

from retail_pulse.net.errors import (
    HostMisconfigured,
    PermanentRequestError,
    RequestError,
    TransientRequestError,
)

# Causes reach the client (an image's error in the job status, a webhook's log line).
_MAX_CAUSE_CHARS = 200

# Connection trouble that can clear up on its own, although it looks like a TLS error.
_TLS_CUT_SHORT = (ssl.SSLEOFError, ssl.SSLZeroReturnError, ssl.SSLSyscallError)
_INVALID_URL = (
    requests.exceptions.InvalidURL,
    requests.exceptions.InvalidSchema,
    requests.exceptions.MissingSchema,
    urllib3.exceptions.LocationValueError,
    http.client.InvalidURL,
)
_NETWORK_ERRORS = (
    requests.RequestException,
    urllib3.exceptions.HTTPError,
    http.client.HTTPException,
    OSError,
)


def classify(err: BaseException, url: str, *, reading: bool) -> RequestError:
    """What requests, urllib3, http.client or ssl raised, as a RequestError for `url`.

    Malformed responses are permanent: a host that sends a 70 KB header line, 101
    headers or a status line that is not HTTP will do so next time too. Timeouts and
    connections cut short are transient.
    """
    if isinstance(err, RequestError):
        return err
    chain = _chain(err)
    if malformed := _malformed_because(chain):
        return HostMisconfigured(f"malformed response from {url}: {malformed}")
    if any(isinstance(e, _INVALID_URL) for e in chain):
        return PermanentRequestError(f"invalid URL {url}")
    tls = [e for e in chain if isinstance(e, (ssl.SSLError, ssl.CertificateError))]
    if tls or isinstance(err, requests.exceptions.SSLError):
        if any(isinstance(e, _TLS_CUT_SHORT) for e in tls):
            return TransientRequestError(f"TLS connection cut short for {url}")
        # A certificate that does not match or is not trusted will not fix itself.
        return HostMisconfigured(f"TLS failed for {url}: {root_cause(err)}")
    if isinstance(err, requests.exceptions.ConnectTimeout):
        return TransientRequestError(f"connect timed out for {url}")
    timed_out = isinstance(err, requests.exceptions.ReadTimeout) or any(
        isinstance(e, (urllib3.exceptions.ReadTimeoutError, TimeoutError)) for e in chain
    )
    if timed_out:
        return TransientRequestError(
            f"reading {url} timed out" if reading else f"no response in time from {url}"
        )
    if not isinstance(err, _NETWORK_ERRORS):
        # Not a network failure we know: likely a bug (ours or a library's) that this
        # host's answer triggered. Transient, so a retry may tell; the type says what.
        return TransientRequestError(f"unexpected {type(err).__name__} while fetching {url}")
    if reading:
        return TransientRequestError(f"reading {url} failed: {root_cause(err)}")
    return TransientRequestError(f"could not connect for {url}: {root_cause(err)}")


def _malformed_because(chain: list[BaseException]) -> str | None:
    """Why the response cannot be HTTP, in our words: the exceptions' own text often
    quotes the host's bytes."""
    for e in chain:
        if isinstance(e, http.client.RemoteDisconnected):
            continue  # a BadStatusLine, but only a closed connection
        if isinstance(e, http.client.LineTooLong):
            return str(e)  # "got more than 65536 bytes when reading header line"
        if isinstance(e, http.client.UnknownProtocol):
            return "an unknown HTTP version"
        if isinstance(e, http.client.BadStatusLine):
            return "an invalid status line"
        if type(e) is http.client.HTTPException and "headers" in str(e):
            return str(e)  # "got more than 100 headers"
        if isinstance(e, urllib3.exceptions.InvalidChunkLength) and e.length:
            return "an invalid chunk size"  # (an empty one is the connection closing)
        if isinstance(e, http.client.IncompleteRead) and isinstance(e.__context__, ValueError):
            return "an invalid chunk size"  # http.client's own chunked reader, via read1
        if isinstance(e, (urllib3.exceptions.InvalidHeader, requests.exceptions.InvalidHeader)):
            return "an invalid header"
    return None


def _chain(err: BaseException) -> list[BaseException]:
    """`err` and every exception it wraps, outermost first (requests nests urllib3 nests
    http.client, through causes, contexts, `reason` and arguments)."""
    found: list[BaseException] = []
    seen: set[int] = set()
    pending = [err]
    while pending:
        current = pending.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        found.append(current)
        nested = (current.__cause__, getattr(current, "reason", None), *current.args)
        pending.extend(e for e in (*nested, current.__context__) if isinstance(e, BaseException))
    return found


def root_cause(err: BaseException) -> str:
    """The innermost cause, e.g. "Connection refused", instead of requests' long chain."""
    seen: set[int] = set()
    current: BaseException = err
    while id(current) not in seen:
        seen.add(id(current))
        reason = getattr(current, "reason", None)
        first_arg = current.args[0] if current.args else None
        nxt = next(
            (
                e
                for e in (current.__cause__, reason, first_arg, current.__context__)
                if isinstance(e, BaseException)
            ),
            None,
        )
        if nxt is None:
            break
        current = nxt
    if isinstance(current, OSError) and current.strerror:
        return current.strerror
    # Library messages can quote the host's bytes: never let one grow the error much.
    text = str(current) or type(current).__name__
    return text if len(text) <= _MAX_CAUSE_CHARS else text[:_MAX_CAUSE_CHARS] + "..."
