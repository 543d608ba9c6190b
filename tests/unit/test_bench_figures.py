"""The benchmark's headline billed seconds: at the default batch size, the express lane's
small jobs (batches of 10 by design) counted apart."""

from __future__ import annotations

from typing import Any

from bench.__main__ import express_max_images, headline_figures, summary_line


def _job(images: int, billed_s: float) -> dict[str, Any]:
    cost = {"per_image": {"lambda_gb_s": 0.01, "dynamodb_wru": 3.0}, "usd_per_million": {}}
    return {"images": images, "process_billed_s": billed_s, "cost": cost}


def test_billed_seconds_per_image_leave_out_express_lane_jobs_but_show_every_job_too() -> None:
    results = {
        "express_max_images": 100,
        "jobs": [_job(1, 0.4), _job(100, 12.0), _job(1_000, 14.0), _job(10_000, 130.0)],
    }

    figures = headline_figures(results)

    assert figures["billed_s_per_image"] == (14.0 + 130.0) / 11_000
    assert figures["billed_s_per_image_all"] == (0.4 + 12.0 + 14.0 + 130.0) / 11_101


def test_the_summary_line_keeps_its_fields_and_adds_the_every_job_figure() -> None:
    results = {
        "express_max_images": 100,
        "jobs": [_job(1, 0.5), _job(2_000, 10.0)],
        "measurement": {"ratio": 12_000},
    }

    fields = dict(pair.split("=") for pair in summary_line(results).split())

    assert fields["billed_s_per_image"] == "0.0050"
    assert fields["billed_s_per_image_all"] == "0.0052"  # 10.5 s over 2,001 images
    assert fields["wru_per_image"] == "NA"  # DynamoDB's capacity was not measured


def test_the_express_lane_bound_is_the_templates() -> None:
    assert express_max_images() == 100  # template.yaml's EXPRESS_MAX_IMAGES
