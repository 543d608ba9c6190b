"""What a stretch of the local stack's work would cost on AWS, from what its clients measured.

- Lambda: the functions' own REPORT lines (Billed Duration x Memory Size, and one request
  per invocation), exactly as Lambda bills them.
- DynamoDB and the functions' SQS requests: each invocation's "aws_usage" (the EMF blob its
  clients' botocore hooks fill, retail_pulse/metering.py): every request sent, and the
  ConsumedCapacity DynamoDB answered with (ReturnConsumedCapacity=INDEXES), index writes
  included: DynamoDB Local's own figures, the local stack's DynamoDB.
- The event source's SQS requests (its receives and deletes, Lambda's pollers in AWS) from
  the local stack's pollers' own clients (GET /local/event-source-requests).
- API Gateway: the requests a client makes (a submit and one final status read per job).

Prices are bench/prices.json's. Nothing is estimated from the schema any more.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PRICES_PATH = Path(__file__).with_name("prices.json")

REPORT = re.compile(
    r"^\[(?P<function>\w+)\] REPORT RequestId: \S+\tDuration: (?P<duration>[\d.]+) ms\t"
    r"Billed Duration: (?P<billed>\d+) ms\tMemory Size: (?P<memory>\d+) MB\t"
    r"Max Memory Used: (?P<used>\d+) MB",
    re.M,
)
# A function's EMF blob, as the local stack relays it when its output is not a terminal.
_BLOB = re.compile(r'^\[(?P<function>\w+)\] (?P<json>\{.*"aws_usage".*\})\s*$', re.M)

TERMS = ("lambda_compute", "lambda_requests", "sqs", "dynamodb_write", "dynamodb_read", "api")
# The scheduled reconciler's runs are a fixed cost of time (every 5 minutes in AWS, every few
# seconds locally), not of images: left out of a job's bill (docs/capacity.md prices them).
NOT_PER_IMAGE = ("ReconcilerFunction",)


@dataclass
class LambdaUsage:
    """Invocations and billed GB-seconds by function, from REPORT lines."""

    invocations: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    billed_ms: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    gb_seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    max_memory_mb: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    memory_size_mb: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_log(cls, text: str) -> LambdaUsage:
        usage = cls()
        for match in REPORT.finditer(text):
            name = match["function"]
            billed, memory = int(match["billed"]), int(match["memory"])
            usage.invocations[name] += 1
            usage.billed_ms[name] += billed
            usage.gb_seconds[name] += billed / 1000 * memory / 1024
            usage.max_memory_mb[name] = max(usage.max_memory_mb[name], int(match["used"]))
            usage.memory_size_mb[name] = memory
        return usage


@dataclass
class AwsUsage:
    """What the functions' clients sent, by function: the sum of their invocations'
    "aws_usage" metadata."""

    invocations: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    wru: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    rru: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    requests: dict[str, dict[str, int]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(int))
    )
    wru_by: dict[str, dict[str, float]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(float))
    )
    cancelled_transactions: int = 0

    @classmethod
    def from_log(cls, text: str) -> AwsUsage:
        usage = cls()
        for match in _BLOB.finditer(text):
            try:
                summary = json.loads(match["json"])["aws_usage"]
            except (ValueError, KeyError):
                continue
            name = match["function"]
            usage.invocations[name] += 1
            usage.wru[name] += summary["dynamodb_wru"]
            usage.rru[name] += summary["dynamodb_rru"]
            for key, count in summary["requests"].items():
                usage.requests[name][key] += count
            for key, units in summary["wru_by"].items():
                usage.wru_by[name][_index_name(key)] += units
            usage.cancelled_transactions += summary["cancelled_transactions"]
        return usage

    def sqs_requests(self, function: str) -> int:
        return sum(n for k, n in self.requests[function].items() if k.startswith("sqs."))


def _index_name(key: str) -> str:
    """ "retail-pulse-local-ImagesTable/StoreVisits" -> "ImagesTable/StoreVisits": the local
    stack's table names carry the stack's name, which says nothing here."""
    table, _, index = key.partition("/")
    table = table.rsplit("-", 1)[-1]
    return f"{table}/{index}" if index else table


def requests_difference(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """Requests by key between two readings of a running tally."""
    return {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0)}


def load_prices() -> dict[str, Any]:
    return json.loads(PRICES_PATH.read_text())


def price(
    lambda_usage: LambdaUsage,
    aws_usage: AwsUsage,
    event_source_requests: dict[str, int],
    images: int,
    jobs: int = 1,
    status_reads: int = 1,
    status_function: str = "StatusFunction",
    exclude: tuple[str, ...] = NOT_PER_IMAGE,
) -> dict[str, Any]:
    """The bill of one stretch of work, per image and per million images, term by term.

    The status function is priced per read a client makes (`status_reads` per job, at the
    mean of its measured invocations), not for the benchmark's own 10 Hz polling.
    """
    prices = load_prices()
    skip = {status_function, *exclude}
    functions = {f for f in lambda_usage.invocations if f not in skip}
    clients = {f for f in aws_usage.invocations if f not in skip}
    gb_s = sum(lambda_usage.gb_seconds[f] for f in functions)
    invocations = float(sum(lambda_usage.invocations[f] for f in functions))
    wru = sum(aws_usage.wru[f] for f in clients)
    rru = sum(aws_usage.rru[f] for f in clients)
    sqs = float(
        sum(aws_usage.sqs_requests(f) for f in clients) + sum(event_source_requests.values())
    )
    reads = status_reads * jobs
    if (calls := lambda_usage.invocations.get(status_function, 0)) > 0:
        gb_s += reads * lambda_usage.gb_seconds[status_function] / calls
        invocations += reads
    if (calls := aws_usage.invocations.get(status_function, 0)) > 0:
        rru += reads * aws_usage.rru[status_function] / calls
        wru += reads * aws_usage.wru[status_function] / calls
    api_requests = float(jobs + reads)  # a submit, and the status reads
    wru_by: dict[str, float] = defaultdict(float)
    for function in clients:
        for key, units in aws_usage.wru_by[function].items():
            wru_by[key] += units / images
    per_image = {
        "dynamodb_wru": wru / images,
        "dynamodb_rru": rru / images,
        "sqs_requests": sqs / images,
        "lambda_gb_s": gb_s / images,
        "lambda_requests": invocations / images,
        "api_requests": api_requests / images,
    }
    million = 1e6
    usd = {
        "lambda_compute": per_image["lambda_gb_s"] * prices["lambda_arm64_per_gb_second"],
        "lambda_requests": per_image["lambda_requests"] * prices["lambda_per_million_requests"],
        "sqs": per_image["sqs_requests"] * prices["sqs_standard_per_million_requests"],
        "dynamodb_write": per_image["dynamodb_wru"] * prices["dynamodb_on_demand_per_million_wru"],
        "dynamodb_read": per_image["dynamodb_rru"] * prices["dynamodb_on_demand_per_million_rru"],
        "api": per_image["api_requests"] * prices["api_gateway_rest_per_million_requests"],
    }
    usd["lambda_compute"] *= million  # the others are priced per million already
    return {
        "per_image": per_image,
        "usd_per_million": {**usd, "total": sum(usd.values())},
        "wru_by": dict(sorted(wru_by.items())),
        "requests_by_action": {
            f: dict(sorted(r.items())) for f, r in sorted(aws_usage.requests.items())
        },
        "event_source_requests": dict(sorted(event_source_requests.items())),
        "cancelled_transactions": aws_usage.cancelled_transactions,
        "functions_priced": sorted(functions),
    }
