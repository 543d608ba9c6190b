"""POST one webhook delivery to a client's URL through net's guard: the URL vetted and
pinned, one wall-clock deadline, no redirects followed; the receiver's answer is its status,
and Retry-After."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from retail_pulse.net.body import discard_body, parse_retry_after
from retail_pulse.net.deadline import deadline
from retail_pulse.net.guard import vet
from retail_pulse.net.transport import send
from retail_pulse.settings import Settings, get_settings

# The answer's body means nothing to the sender; reading a little of it lets a receiver
# finish writing, and no receiver can make a delivery read (or hold) more.
MAX_POST_RESPONSE_BYTES = 64 * 1024


@dataclass(frozen=True)
class PostResponse:
    """A receiver's answer to a POST: its status, and Retry-After in seconds when it sent one."""

    status: int
    retry_after_s: float | None


def post(
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    settings: Settings | None = None,
    *,
    deadline_s: float | None = None,
) -> PostResponse:
    """POST `body` to `url`, vetted and pinned as an image fetch vets every hop, in one
    attempt with a wall-clock deadline (`deadline_s`, else image_deadline_s).

    Redirects are not followed: a 3xx is returned like any status, for the caller to treat
    as final (the receiver must give its real URL; a body is never replayed to wherever a
    Location points). At most MAX_POST_RESPONSE_BYTES of the answer are read, and dropped.
    Raises net.errors' PermanentRequestError (refused, invalid URL, TLS certificate,
    malformed answer; HostMisconfigured among them) or TransientRequestError (timeouts,
    connection trouble), and nothing else.
    """
    settings = settings or get_settings()
    timeouts = (settings.connect_timeout_s, settings.read_timeout_s)
    with deadline(url, deadline_s or settings.image_deadline_s) as attempt:
        hop = vet(url, settings.allowed_private_hosts, attempt)
        response = send(hop, attempt, timeouts, "POST", body, headers)
        with response:
            discard_body(response, attempt, MAX_POST_RESPONSE_BYTES)
        return PostResponse(
            status=response.status_code,
            retry_after_s=parse_retry_after(response.headers.get("Retry-After")),
        )
