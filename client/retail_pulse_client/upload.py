"""A job too large for a request body, sent as the service says: POST /api/uploads gives a
presigned S3 POST; the job's JSON body goes there as multipart/form-data (the upload's
fields first, the file last, as S3 documents), streamed in pieces so a progress bar can
follow it; then POST /api/submit/ {upload_id} makes the job.

The upload goes straight to S3 with its own signature: the API key is never sent there.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

import requests

from retail_pulse_client.client import _Model

# Pieces of the body handed to the connection at a time (and progress reported after each).
PIECE = 256 * 1024


class UploadTicket(_Model):
    """The body of POST /api/uploads (201)."""

    upload_id: str
    upload_url: str
    upload_method: str
    upload_fields: dict[str, str]
    expires_at: str
    max_bytes: int


class MultipartBody:
    """The form S3's POST takes: `fields`, then `body` as the field `file`, read in pieces
    (a file-like object requests streams; its len is the Content-Length). `progress` is
    called with (bytes of the file sent, file size) as the file goes out."""

    def __init__(
        self,
        fields: dict[str, str],
        body: bytes,
        progress: Callable[[int, int], None] | None = None,
    ) -> None:
        self.boundary = uuid.uuid4().hex
        head = "".join(
            f'--{self.boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
            for name, value in fields.items()
        )
        head += (
            f'--{self.boundary}\r\nContent-Disposition: form-data; name="file"; '
            'filename="job.json"\r\nContent-Type: application/json\r\n\r\n'
        )
        self._parts = [head.encode(), body, f"\r\n--{self.boundary}--\r\n".encode()]
        self._length = sum(len(part) for part in self._parts)
        self._body_size = len(body)
        self._part = 0
        self._offset = 0
        self._sent = 0
        self._progress = progress

    @property
    def content_type(self) -> str:
        return f"multipart/form-data; boundary={self.boundary}"

    def __len__(self) -> int:
        return self._length

    def read(self, size: int = -1) -> bytes:
        size = PIECE if size is None or size < 0 else min(size, PIECE)
        while self._part < len(self._parts):
            part = self._parts[self._part]
            if self._offset < len(part):
                piece = part[self._offset : self._offset + size]
                self._offset += len(piece)
                if self._part == 1:
                    self._sent += len(piece)
                    if self._progress is not None:
                        self._progress(self._sent, self._body_size)
                return piece
            self._part += 1
            self._offset = 0
        return b""


def send_upload(
    ticket: UploadTicket,
    body: bytes,
    timeout: float,
    progress: Callable[[int, int], None] | None = None,
) -> None:
    """POST `body` to the ticket's presigned URL; raises UploadRefused with S3's answer."""
    if len(body) > ticket.max_bytes:
        raise UploadRefused(
            f"the job is {len(body)} bytes; an upload takes at most {ticket.max_bytes}: "
            "split it into several jobs"
        )
    form = MultipartBody(ticket.upload_fields, body, progress)
    response = requests.post(
        ticket.upload_url,
        data=form,
        headers={"Content-Type": form.content_type},
        timeout=timeout,
    )
    if response.status_code not in (200, 201, 204):
        raise UploadRefused(
            f"the upload was refused (HTTP {response.status_code}): {response.text[:300]}"
        )


class UploadRefused(Exception):
    """S3 (or the size limit) refused the upload; the message says why."""
