"""How the 400 for a body of many bad items scales: describing N validation errors must take
time at most linear in N (it once took minutes for 200,000), so the ratio of the time for
200,000 to the time for 20,000 stays at or under 10 (quadratic would be near 100).

Usage: python -m bench.validation_errors   (part of make bench)
"""

from __future__ import annotations

import time

from retail_pulse.api.errors import describe_validation_errors


def _errors(count: int) -> list[dict[str, object]]:
    return [
        {"type": "string_type", "loc": ("body", "visits", 0, "image_url", i), "msg": "x"}
        for i in range(count)
    ]


def _seconds(count: int) -> float:
    errors = _errors(count)
    started = time.perf_counter()
    describe_validation_errors(errors)
    return time.perf_counter() - started


def main() -> None:
    small, large = _seconds(20_000), _seconds(200_000)
    print(
        f"validation_errors_200k_ms={large * 1000:.1f} "
        f"validation_errors_scaling={large / small:.1f} "
        "(20k -> 200k errors: ~10 would be linear, ~100 quadratic)"
    )


if __name__ == "__main__":
    main()
