"""A short soak over the e2e stack: 300 images in 6 jobs, 10% flaky, 5% bad, duplicates
injected; nothing lost, nothing stuck, nothing counted twice (`make soak` runs the long one)."""

from __future__ import annotations

import time

import pytest

from bench.soak import SoakConfig, Target, run_soak
from tests.e2e.conftest import Stack

pytestmark = pytest.mark.e2e


def test_300_images_with_flaky_bad_and_duplicate_deliveries_all_end_correctly(
    stack: Stack,
) -> None:
    target = Target(
        api_url=stack.api_url,
        aws_endpoint_url=stack.aws_endpoint_url,
        dynamodb_endpoint_url=stack.dynamodb_endpoint_url,
        queue_url=stack.queue_url(),
        jobs_table=stack.tables["JobsTable"],
        images_table=stack.tables["ImagesTable"],
    )
    config = SoakConfig(jobs=6, images_per_job=50, timeout_s=55, seed=int(time.time()))
    started = time.monotonic()

    report = run_soak(target, stack.images, config, stack.log_path)

    print(f"\n{report.text()}")
    assert report.jobs_terminal == 6, f"{report.text()}\n{stack.log_tail()}"
    assert report.images_lost == 0
    assert report.counter_mismatches == 0
    assert report.unexpected_outcomes == 0
    assert report.duplicates_sent > 0
    assert time.monotonic() - started < 60
