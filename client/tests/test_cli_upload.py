"""`retail-pulse submit` of a job too large for a request body: it uploads the body with the
presigned POST the service gives (fields first, the file last), shows the upload's progress,
then submits the upload_id; a job that fits still goes in the body."""

from __future__ import annotations

import json
from collections.abc import Iterator
from email.parser import BytesParser
from email.policy import HTTP
from pathlib import Path

import pytest
from fake_api import FakeApi, fake_api
from typer.testing import CliRunner

from retail_pulse_client.cli import app
from retail_pulse_client.upload import MultipartBody

FIELDS = {"key": "uploads/default/u1", "policy": "cG9saWN5", "x-amz-signature": "c2ln"}


@pytest.fixture
def api() -> Iterator[FakeApi]:
    with fake_api() as server:
        yield server


def job_file(tmp_path: Path, images: int) -> tuple[Path, dict]:
    visits = [
        {
            "store_id": "S00339218",
            "image_url": [f"https://images.example.com/{n}.jpg"],
            "visit_time": "2026-11-28T10:15:00Z",
        }
        for n in range(images)
    ]
    body = {"count": images, "visits": visits}
    path = tmp_path / "job.json"
    path.write_text(json.dumps(body))
    return path, body


def uploads_answer(api: FakeApi) -> None:
    ticket = {
        "upload_id": "u1",
        "upload_url": f"{api.base_url}/bucket",
        "upload_method": "POST",
        "upload_fields": FIELDS,
        "expires_at": "2026-12-07T13:00:00Z",
        "max_bytes": 1024**3,
    }
    api.on("POST", "/api/uploads", (201, ticket))
    api.on("POST", "/bucket", (204, b""))
    api.on("POST", "/api/submit/", (201, {"job_id": "j1"}))


def form_parts(raw: str, content_type: str) -> dict[str, str]:
    message = BytesParser(policy=HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + raw.encode()
    )
    return {
        part.get_param("name", header="content-disposition"): part.get_content()
        for part in message.iter_parts()
    }


def test_a_job_over_the_body_limit_is_uploaded_then_submitted_by_its_id(
    api: FakeApi, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAX_BODY_BYTES", "2000")
    path, body = job_file(tmp_path, 40)
    uploads_answer(api)

    result = CliRunner().invoke(
        app, ["submit", str(path), "--api", api.base_url, "--api-key", "the-clients-key"]
    )

    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "j1"
    assert "too large for a request body, uploading it" in result.stderr
    assert "uploading: " in result.stderr and "(100%)" in result.stderr
    [upload] = api.sent("POST", "/bucket")
    parts = form_parts(upload.body, upload.headers["content-type"])
    # The fields as given, then the job's body as the file, last.
    assert list(parts) == [*FIELDS, "file"]
    assert {name: parts[name] for name in FIELDS} == FIELDS
    assert json.loads(parts["file"]) == body
    assert "x-api-key" not in upload.headers  # the API key never goes to S3 ...
    [submitted] = api.sent("POST", "/api/submit/")
    assert submitted.body == {"upload_id": "u1"}
    assert submitted.headers["x-api-key"] == "the-clients-key"  # ... only to the API


def test_a_job_that_fits_goes_in_the_body_as_before(api: FakeApi, tmp_path: Path) -> None:
    path, body = job_file(tmp_path, 3)
    api.on("POST", "/api/submit/", (201, {"job_id": "j1"}))

    result = CliRunner().invoke(app, ["submit", str(path), "--api", api.base_url])

    assert result.exit_code == 0, result.output
    assert api.sent("POST", "/api/uploads") == []
    assert [r.body for r in api.sent("POST", "/api/submit/")] == [body]


def test_the_multipart_body_reports_the_files_bytes_as_they_go() -> None:
    seen: list[tuple[int, int]] = []
    form = MultipartBody({"key": "k"}, b"x" * 600_000, lambda sent, size: seen.append((sent, size)))

    streamed = b"".join(iter(lambda: form.read(8192), b""))

    assert len(streamed) == len(form)
    assert seen[-1] == (600_000, 600_000)
    assert [sent for sent, _ in seen] == sorted(sent for sent, _ in seen)
