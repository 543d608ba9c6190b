"""What a stretch of the local stack's work would cost on AWS.

Lambda time comes from the functions' own REPORT lines (Billed Duration x Memory Size),
exactly as Lambda bills it. SQS and DynamoDB requests come from the moto child's request
counters (local_stack/request_counts.py). DynamoDB capacity units are derived from those
counts with the stated assumptions: every item the service writes is under 1 KB and every
item it reads under 4 KB, so one item is one unit (two for a transactional write).
Secondary-index writes are not visible in requests; they are estimated from the schema.
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

# Reads: every read the service makes on the hot path is strongly consistent (1 RRU per
# item); Query and BatchGetItem are counted as 1 RRU per request / item (small results).
_READ_UNITS = {"GetItem": 1.0, "Query": 1.0, "Scan": 1.0, "BatchGetItem": 1.0}
_WRITE_UNITS = {"PutItem": 1.0, "UpdateItem": 1.0, "DeleteItem": 1.0, "BatchWriteItem": 1.0}


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


def count_difference(before: dict[str, Any], after: dict[str, Any]) -> dict[str, dict[str, int]]:
    """Requests and items by `service.Action` between two readings of the moto counters."""
    return {
        kind: {
            key: after[kind][key] - before.get(kind, {}).get(key, 0)
            for key in after[kind]
            if after[kind][key] - before.get(kind, {}).get(key, 0)
        }
        for kind in ("requests", "items")
    }


def dynamodb_units(items: dict[str, int], images_succeeded: int, jobs: int) -> dict[str, float]:
    """Estimated RRU and WRU, including index writes the request counts cannot show:
    a measured image enters StoreVisits and AreaVisits (2 WRU), and a job enters and leaves
    OngoingJobs (2 WRU)."""
    read = write = 0.0
    for key, count in items.items():
        service, _, action = key.partition(".")
        if service != "dynamodb":
            continue
        if action in _READ_UNITS:
            read += _READ_UNITS[action] * count
        elif action in _WRITE_UNITS:
            write += _WRITE_UNITS[action] * count
        elif action == "TransactWriteItems":
            write += 2 * count
        elif action == "TransactGetItems":
            read += 2 * count
    index_writes = 2 * images_succeeded + 2 * jobs
    return {"rru": read, "wru": write + index_writes, "wru_index_estimate": index_writes}


def load_prices() -> dict[str, Any]:
    return json.loads(PRICES_PATH.read_text())


def price(
    usage: LambdaUsage,
    counts: dict[str, dict[str, int]],
    api_requests: int,
    images: int,
    jobs: int,
    exclude_functions: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Dollars per 1,000 images for one stretch of work, by service, with the quantities."""
    prices = load_prices()
    per = 1000 / images
    functions = [f for f in usage.invocations if f not in exclude_functions]
    gb_s = sum(usage.gb_seconds[f] for f in functions)
    invocations = sum(usage.invocations[f] for f in functions)
    sqs_requests = sum(n for k, n in counts["requests"].items() if k.startswith("sqs."))
    units = dynamodb_units(counts["items"], images, jobs)
    dollars = {
        "lambda_compute": gb_s * prices["lambda_arm64_per_gb_second"],
        "lambda_requests": invocations * prices["lambda_per_million_requests"] / 1e6,
        "sqs": sqs_requests * prices["sqs_standard_per_million_requests"] / 1e6,
        "dynamodb_write": units["wru"] * prices["dynamodb_on_demand_per_million_wru"] / 1e6,
        "dynamodb_read": units["rru"] * prices["dynamodb_on_demand_per_million_rru"] / 1e6,
        "api_gateway": api_requests * prices["api_gateway_rest_per_million_requests"] / 1e6,
    }
    return {
        "per_1000_images": {
            "gb_seconds": gb_s * per,
            "lambda_invocations": invocations * per,
            "sqs_requests": sqs_requests * per,
            "dynamodb_rru": units["rru"] * per,
            "dynamodb_wru": units["wru"] * per,
            "dynamodb_wru_index_estimate": units["wru_index_estimate"] * per,
            "api_requests": api_requests * per,
            "usd": {k: v * per for k, v in dollars.items()},
            "usd_total": sum(dollars.values()) * per,
        },
        "functions_priced": sorted(functions),
        "requests_by_action": counts["requests"],
    }
