"""In-process and over-HTTP measurements the benchmark composes: status latency under
concurrent pollers, and header-only measurement against a full decode."""

from __future__ import annotations

import io
import statistics
import threading
import time
import timeit
from pathlib import Path
from typing import Any

import requests
from PIL import Image

from bench.stack import RunningStack
from retail_pulse.imaging.measure import measure_image


def percentile(samples: list[float], q: float) -> float:
    """The q-th percentile (0-100) by nearest rank: no interpolation hides a slow tail."""
    ordered = sorted(samples)
    rank = max(1, round(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def status_latency(
    stack: RunningStack, job_id: str, pollers: int, requests_each: int
) -> dict[str, Any]:
    """`pollers` threads, each with its own connection, read the job's status back to back."""
    samples: list[float] = []
    lock = threading.Lock()
    start = threading.Barrier(pollers)

    def poll() -> None:
        session = requests.Session()
        stack.status(job_id, session)  # connect before the clock starts
        start.wait()
        mine = []
        for _ in range(requests_each):
            began = time.perf_counter()
            stack.status(job_id, session)
            mine.append((time.perf_counter() - began) * 1000)
        with lock:
            samples.extend(mine)

    threads = [threading.Thread(target=poll) for _ in range(pollers)]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    return {
        "requests": len(samples),
        "p50_ms": percentile(samples, 50),
        "p99_ms": percentile(samples, 99),
        "mean_ms": statistics.fmean(samples),
        "requests_per_s": len(samples) / elapsed,
    }


def header_vs_decode(path: Path, decode_runs: int = 5, header_runs: int = 2000) -> dict[str, Any]:
    """measure_image (header only) against Image.open().load() on the same bytes, in-process;
    the best of three repeats of each, so a busy machine's pauses do not count."""
    data = path.read_bytes()

    def decode() -> None:
        with Image.open(io.BytesIO(data)) as image:
            image.load()

    header_s = min(timeit.repeat(lambda: measure_image(data), number=header_runs, repeat=3))
    decode_s = min(timeit.repeat(decode, number=decode_runs, repeat=3))
    header_ms, decode_ms = header_s / header_runs * 1000, decode_s / decode_runs * 1000
    with Image.open(io.BytesIO(data)) as image:
        width, height = image.size
    return {
        "image": f"{width}x{height} JPEG, {len(data)} bytes",
        "header_ms": header_ms,
        "decode_ms": decode_ms,
        "ratio": decode_ms / header_ms,
    }
