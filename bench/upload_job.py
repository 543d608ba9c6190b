"""`python -m bench.upload_job`: issue 24's done-when run, through the local stack.

A job of 20,000 images (default; `--images`) with 1.3 KB presigned-style URLs of images
served on 127.0.0.1, as a client with a large job sends it:

1. the body posted to POST /api/submit/ as it is: a 413 whose error names POST /api/uploads
   (API Gateway's own above 10 MB, the submit function's above MAX_BODY_BYTES);
2. POST /api/uploads, the body uploaded to S3 with the presigned POST, POST /api/submit/
   with its upload_id: the job runs to its end with every image counted;
3. a malformed upload (a bad URL in its last visit): its job fails with one readable
   error and no image of it is processed.

Prints each step's counts and times, then one machine-readable line (`upload_job_*=`).
Exits non-zero when a check fails.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests

from bench.images import ImageHost, ensure_images
from bench.stack import STORE, VISIT_TIME, RunningStack, start_stack

URL_BYTES = 1_300
IMAGES_PER_VISIT = 3
DEFAULT_IMAGES = 20_000
MAX_BODY_BYTES = 6_000_000  # template.yaml's MAX_BODY_BYTES


def photo_url(host: ImageHost, index: int) -> str:
    """An image of the local host behind a URL as long as a presigned S3 URL (1.3 KB)."""
    base = host.url("vga", index) + "&X-Amz-Signature="
    return base + "s" * (URL_BYTES - len(base))


def write_body(path: Path, urls: list[str]) -> int:
    """The job's JSON body (3 images a visit), written visit by visit; its size in bytes."""
    visits = [urls[i : i + IMAGES_PER_VISIT] for i in range(0, len(urls), IMAGES_PER_VISIT)]
    with path.open("w") as out:
        out.write(f'{{"count": {len(visits)}, "visits": [')
        for number, part in enumerate(visits):
            visit = {"store_id": STORE, "image_url": part, "visit_time": VISIT_TIME}
            out.write(("," if number else "") + json.dumps(visit))
        out.write("]}")
    return path.stat().st_size


def upload(stack: RunningStack, body: Path) -> str:
    """POST /api/uploads, then the body to its presigned POST: the upload_id."""
    created = stack.http.post(f"{stack.api_url}/api/uploads", timeout=60)
    if created.status_code != 201:
        raise RuntimeError(f"POST /api/uploads: {created.status_code} {created.text[:300]}")
    ticket = created.json()
    with body.open("rb") as file:
        sent = stack.http.post(
            ticket["upload_url"],
            data=ticket["upload_fields"],
            files={"file": ("job.json", file, "application/json")},
            timeout=600,
        )
    if sent.status_code not in (200, 201, 204):
        raise RuntimeError(f"upload to S3: {sent.status_code} {sent.text[:300]}")
    return str(ticket["upload_id"])


def submit_upload(stack: RunningStack, upload_id: str) -> str:
    response = stack.http.post(
        f"{stack.api_url}/api/submit/", json={"upload_id": upload_id}, timeout=60
    )
    if response.status_code != 201:
        raise RuntimeError(f"submit of the upload: {response.status_code} {response.text[:300]}")
    return str(response.json()["job_id"])


def body_refused(stack: RunningStack, body: Path) -> dict[str, Any]:
    """The body posted to submit as it is: its status and error."""
    response = stack.http.post(
        f"{stack.api_url}/api/submit/",
        data=body.read_bytes(),
        headers={"Content-Type": "application/json"},
        timeout=120,
    )
    text = response.json().get("error") or response.json().get("message") or response.text
    return {"status": response.status_code, "error": text}


def large_job(stack: RunningStack, host: ImageHost, images: int, workdir: Path) -> dict[str, Any]:
    body = workdir / "job.json"
    size = write_body(body, [photo_url(host, i) for i in range(images)])
    # A body that fits (under MAX_BODY_BYTES, ~4,600 such images) would just be a job.
    refused = body_refused(stack, body) if size > MAX_BODY_BYTES else {"status": 0, "error": ""}
    print(f"  submit of the {size / 1e6:.1f} MB body: {refused['status']} {refused['error']}")
    started = time.perf_counter()
    upload_id = upload(stack, body)
    uploaded_s = time.perf_counter() - started
    job_id = submit_upload(stack, upload_id)
    submitted_s = time.perf_counter() - started
    ingested_s = None
    poll_errors = 0
    while True:
        try:
            status = stack.status(job_id)
        except requests.HTTPError as error:
            # Counted and printed: a status answer lost under load is not the job's end.
            poll_errors += 1
            print(f"  status poll failed: {error}", flush=True)
            time.sleep(1.0)
            continue
        if ingested_s is None and not status.get("ingesting"):
            ingested_s = time.perf_counter() - started
        if status["status"] in ("completed", "failed", "cancelled"):
            break
        if time.perf_counter() - started > max(1800.0, images * 0.1):
            raise TimeoutError(f"job {job_id} still {status} after {images * 0.1:.0f} s")
        time.sleep(1.0)
    total_s = time.perf_counter() - started
    progress = status["progress"]
    print(
        f"  upload job {job_id}: {status['status']}, {progress} in {total_s:.1f} s (uploaded "
        f"{uploaded_s:.1f} s, submitted {submitted_s:.1f} s, ingested {ingested_s:.1f} s)"
    )
    return {
        "images": images,
        "body_mb": round(size / 1e6, 1),
        "refused": refused,
        "status": status["status"],
        "progress": progress,
        "upload_s": round(uploaded_s, 1),
        "ingested_s": round(ingested_s or 0.0, 1),
        "seconds": round(total_s, 1),
        "status_poll_errors": poll_errors,
    }


def malformed_job(stack: RunningStack, host: ImageHost, workdir: Path) -> dict[str, Any]:
    body = workdir / "malformed.json"
    urls = [photo_url(host, i) for i in range(30)]
    write_body(body, urls)
    text = body.read_text()
    # The last visit's last URL is not a URL: visits[9].image_url[2].
    body.write_text(text.replace(urls[-1], "http://[::1/x.jpg"))
    job_id = submit_upload(stack, upload(stack, body))
    status = stack.wait_terminal(job_id, timeout_s=300, poll_s=0.5)
    found = {key: status.get(key) for key in ("status", "progress", "error")}
    print(f"  malformed upload {job_id}: {found}")
    return found


def checks(large: dict[str, Any], malformed: dict[str, Any]) -> dict[str, bool]:
    images = large["images"]
    return {
        "refused_413_names_upload": large["refused"]["status"] == 413
        and "/api/uploads" in large["refused"]["error"],
        "every_image_counted": large["status"] == "completed"
        and large["progress"] == {"total": images, "succeeded": images, "failed": 0},
        "malformed_failed_readably": malformed["status"] == "failed"
        and malformed["progress"] == {"total": 0, "succeeded": 0, "failed": 0}
        and len(malformed["error"] or []) == 1
        and malformed["error"][0]["store_id"] is None
        and malformed["error"][0]["error"].startswith("visits[9].image_url[2]"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.upload_job", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--images", type=int, default=DEFAULT_IMAGES)
    parser.add_argument("--pollers", type=int, default=4, help="process pollers (default 4)")
    args = parser.parse_args(argv)
    host = ImageHost(ensure_images()).start()
    try:
        stack = start_stack(host.host_port, pollers=args.pollers)
        print(f"local stack ready in {stack.ready_s:.1f} s at {stack.api_url}", flush=True)
        try:
            with tempfile.TemporaryDirectory(prefix="bench-upload-job-") as workdir:
                large = large_job(stack, host, args.images, Path(workdir))
                malformed = malformed_job(stack, host, Path(workdir))
        finally:
            stack.stop()
    finally:
        host.stop()
    verdicts = checks(large, malformed)
    progress = large["progress"]
    fields = {
        "upload_job_images": large["images"],
        "upload_job_status": large["status"],
        "upload_job_succeeded": progress.get("succeeded"),
        "upload_job_failed": progress.get("failed"),
        "upload_job_s": large["seconds"],
        "upload_job_ingest_s": large["ingested_s"],
        "upload_job_413": large["refused"]["status"],
        "upload_job_status_poll_errors": large["status_poll_errors"],
        **{f"upload_job_{name}": "ok" if ok else "FAILED" for name, ok in verdicts.items()},
    }
    print(" ".join(f"{key}={value}" for key, value in fields.items()))
    return 0 if all(verdicts.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
