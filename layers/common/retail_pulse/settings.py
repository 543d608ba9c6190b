"""Typed settings, read once per container from the environment that template.yaml declares.

Only endpoints and settings differ between Lambda, `sam local`, the local stack and tests;
every one of them is an environment variable listed here and in template.yaml.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import lru_cache


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    return int(raw) if raw else default


def _float(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    return float(raw) if raw else default


def _str(name: str, default: str = "") -> str:
    return os.environ.get(name, "").strip() or default


@dataclass(frozen=True)
class Settings:
    jobs_table: str = field(default_factory=lambda: _str("JOBS_TABLE", "Jobs"))
    images_table: str = field(default_factory=lambda: _str("IMAGES_TABLE", "Images"))
    stores_table: str = field(default_factory=lambda: _str("STORES_TABLE", "Stores"))
    image_queue_url: str = field(default_factory=lambda: _str("IMAGE_QUEUE_URL"))
    idempotency_table: str = field(default_factory=lambda: _str("IDEMPOTENCY_TABLE", "Idempotency"))
    # Empty in AWS; the local stack and `sam local` point it at moto on loopback.
    endpoint_url: str | None = field(default_factory=lambda: _str("AWS_ENDPOINT_URL") or None)
    region: str = field(
        default_factory=lambda: _str("AWS_REGION", _str("AWS_DEFAULT_REGION", "us-east-1"))
    )

    # Request limits: a job must fit one API Gateway request (10 MB) and one submit
    # invocation well inside API Gateway's 29 s.
    max_images_per_job: int = field(default_factory=lambda: _int("MAX_IMAGES_PER_JOB", 10_000))
    max_urls_per_visit: int = field(default_factory=lambda: _int("MAX_URLS_PER_VISIT", 1_000))
    max_url_length: int = field(default_factory=lambda: _int("MAX_URL_LENGTH", 2_048))
    max_body_bytes: int = field(default_factory=lambda: _int("MAX_BODY_BYTES", 6_000_000))

    # Image fetching.
    max_image_bytes: int = field(default_factory=lambda: _int("MAX_IMAGE_BYTES", 20 * 1024 * 1024))
    connect_timeout_s: float = field(default_factory=lambda: _float("CONNECT_TIMEOUT_S", 3.05))
    read_timeout_s: float = field(default_factory=lambda: _float("READ_TIMEOUT_S", 10.0))
    image_deadline_s: float = field(default_factory=lambda: _float("IMAGE_DEADLINE_S", 30.0))
    # Pillow's own DecompressionBombWarning threshold (PIL.Image.MAX_IMAGE_PIXELS): above it
    # Pillow warns (an error where warnings are errors), so a higher limit would accept
    # images that behave differently depending on the warning filter.
    max_image_pixels: int = field(default_factory=lambda: _int("MAX_IMAGE_PIXELS", 89_478_485))
    allowed_private_hosts: frozenset[str] = field(
        default_factory=lambda: frozenset(
            h.strip().lower()
            for h in os.environ.get("ALLOWED_PRIVATE_HOSTS", "").split(",")
            if h.strip()
        )
    )
    # Attempts per image for transient trouble (timeouts, 429, 5xx), counted by SQS receives.
    max_attempts: int = field(default_factory=lambda: _int("MAX_ATTEMPTS", 4))
    retry_base_delay_s: int = field(default_factory=lambda: _int("RETRY_BASE_DELAY_S", 2))
    retry_max_delay_s: int = field(default_factory=lambda: _int("RETRY_MAX_DELAY_S", 120))
    # The image queue's maxReceiveCount (template.yaml sets both): a dead-lettered message
    # was received this many times, whatever its receive count on the dead-letter queue says.
    image_max_receives: int = field(default_factory=lambda: _int("IMAGE_MAX_RECEIVES", 6))

    # The reconciler. A job with no progress for RECONCILE_AFTER_S gets its pending images
    # enqueued again; at JOB_HARD_DEADLINE_S after submit, whatever is still pending fails.
    # The SPEC allows a job an hour, so the hard deadline is two.
    reconcile_after_s: int = field(default_factory=lambda: _int("RECONCILE_AFTER_S", 900))
    job_hard_deadline_s: int = field(default_factory=lambda: _int("JOB_HARD_DEADLINE_S", 7200))

    # The stand-in for GPU inference: a uniform pause per image.
    gpu_sleep_min_s: float = field(default_factory=lambda: _float("GPU_SLEEP_MIN_S", 0.1))
    gpu_sleep_max_s: float = field(default_factory=lambda: _float("GPU_SLEEP_MAX_S", 0.4))


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
