"""`make bench` / `python -m bench`: the service end to end on the local stack, at every size.

Starts a local image host (realistic JPEGs of 0.3 to 12 megapixels, generated once into
.cache/bench-images) and the local stack (`python -m local_stack`), then measures:

- jobs of 1, 100, 1,000 and 10,000 images: submit latency, time to terminal, images per
  second, makespan / ideal and speedup over a one-image-at-a-time design;
- status latency (p50, p99) of a 1-image and a 10,000-image job under 50 concurrent pollers;
- header-only measurement against a full decode of a 12-megapixel JPEG;
- Lambda GB-seconds and AWS requests per 1,000 images, priced with bench/prices.json;
- the process function's peak memory, and with a 20 MB image in every record of a batch.

Ideal makespan is N x 0.25 s / C, where 0.25 s is the mean GPU stand-in per image and C
the configured concurrency (process pollers x batch size); one image cannot beat its own
0.25 s, so the ideal is never below that. Writes bench/results/<date>.json and a log-log
plot beside it; the last line printed is a machine-readable summary.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import measure
from bench.costs import LambdaUsage, count_difference, price
from bench.images import LARGE_NAME, PHOTO_SIZES, ImageHost, ensure_images
from bench.stack import RunningStack, start_stack

RESULTS_DIR = Path(__file__).resolve().parent / "results"
FULL_SIZES = (1, 100, 1_000, 10_000)
QUICK_SIZES = (1, 100)
MEAN_GPU_S = 0.25  # settings.GPU_SLEEP_MIN_S/MAX_S: uniform 0.1 to 0.4 s
BATCH_SIZE = 10  # template.yaml: ProcessFunction's SQS BatchSize
STATUS_POLLERS = 50
STATUS_REQUESTS_PER_POLLER = 20
MEMORY_BATCHES = 4  # one batch of 20 MB images per process poller
SETTLE_S = 2.0  # after a job ends, for the last batch's REPORT line and deletes


def ideal_makespan(images: int, concurrency: int) -> float:
    return MEAN_GPU_S * max(1.0, images / concurrency)


def run_job(stack: RunningStack, host: ImageHost, images: int, concurrency: int) -> dict[str, Any]:
    """One job of `images` photos of mixed sizes, with its Lambda and request usage."""
    names = [name for name, _, _ in PHOTO_SIZES]
    urls = [host.url(names[i % len(names)], i) for i in range(images)]
    offset, before = stack.log_offset(), stack.request_counts()
    started = time.perf_counter()
    job_id, submit_s = stack.submit(urls)
    ideal = ideal_makespan(images, concurrency)
    body = stack.wait_terminal(job_id, timeout_s=max(120.0, 30 * ideal), poll_s=0.1)
    makespan = time.perf_counter() - started
    time.sleep(SETTLE_S)
    usage = LambdaUsage.from_log(stack.log_since(offset))
    counts = count_difference(before, stack.request_counts())
    return {
        "images": images,
        "job_id": job_id,
        "status": body["status"],
        "submit_s": submit_s,
        "terminal_s": makespan,
        "images_per_s": images / makespan,
        "ideal_s": ideal,
        "ratio_to_ideal": makespan / ideal,
        "speedup_over_sequential": images * MEAN_GPU_S / makespan,
        "process_invocations": usage.invocations.get("ProcessFunction", 0),
        "process_billed_s": usage.billed_ms.get("ProcessFunction", 0) / 1000,
        "process_billed_s_per_image": usage.billed_ms.get("ProcessFunction", 0) / 1000 / images,
        "process_max_memory_mb": usage.max_memory_mb.get("ProcessFunction", 0),
        # One submit and one final status read: the benchmark's own 10 Hz polling is not
        # what a client does, so the status function is priced per request separately.
        "cost": price(usage, counts, 2, images, 1, exclude_functions=("StatusFunction",)),
        "status_function": {
            "invocations": usage.invocations.get("StatusFunction", 0),
            "gb_seconds": usage.gb_seconds.get("StatusFunction", 0.0),
        },
    }


def memory_run(stack: RunningStack, host: ImageHost, pollers: int) -> dict[str, Any]:
    """Batches whose every record is a ~20 MB JPEG: ten concurrent large downloads each."""
    images = BATCH_SIZE * max(pollers, MEMORY_BATCHES)
    offset = stack.log_offset()
    job_id, _ = stack.submit([host.url(LARGE_NAME, i) for i in range(images)])
    body = stack.wait_terminal(job_id, timeout_s=300, poll_s=0.2)
    time.sleep(SETTLE_S)
    usage = LambdaUsage.from_log(stack.log_since(offset))
    return {
        "images": images,
        "image_bytes": host.sizes[LARGE_NAME],
        "status": body["status"],
        "peak_mb": usage.max_memory_mb.get("ProcessFunction", 0),
        "memory_size_mb": usage.memory_size_mb.get("ProcessFunction", 0),
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="jobs of 1 and 100 images only")
    parser.add_argument(
        "--sizes", type=lambda s: tuple(int(x) for x in s.split(",")), help="e.g. 1,100,1000"
    )
    parser.add_argument("--pollers", type=int, default=4, help="process pollers (default 4)")
    parser.add_argument("--no-memory", action="store_true", help="skip the 20 MB batch run")
    parser.add_argument("--no-write", action="store_true", help="do not write bench/results")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = args.sizes or (QUICK_SIZES if args.quick else FULL_SIZES)
    concurrency = args.pollers * BATCH_SIZE
    load_before = _load()
    print(f"bench: sizes {list(sizes)}, concurrency {concurrency}, load {load_before}", flush=True)
    host = ImageHost(ensure_images()).start()
    stack = start_stack(host.host_port, pollers=args.pollers)
    print(f"local stack ready in {stack.ready_s:.1f} s at {stack.api_url}", flush=True)
    results: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": _cpus(), "python": platform.python_version(), "load": load_before},
        "concurrency": {"pollers": args.pollers, "batch_size": BATCH_SIZE, "C": concurrency},
        "image_bytes": host.sizes,
    }
    try:
        warm, _ = stack.submit([host.url("vga", 0)] * concurrency)  # every poller's cold start
        stack.wait_terminal(warm, timeout_s=120)
        jobs = []
        for images in sizes:
            job = run_job(stack, host, images, concurrency)
            jobs.append(job)
            print(
                f"  {images:>6} images: {job['status']} in {job['terminal_s']:.2f} s "
                f"({job['ratio_to_ideal']:.2f} x ideal)",
                flush=True,
            )
        results["jobs"] = jobs
        small = next((j for j in jobs if j["images"] == 1), None)
        large = max(jobs, key=lambda j: j["images"])
        if small is not None:
            results["status_latency"] = {
                "pollers": STATUS_POLLERS,
                "small": measure.status_latency(
                    stack, small["job_id"], STATUS_POLLERS, STATUS_REQUESTS_PER_POLLER
                ),
                "large": measure.status_latency(
                    stack, large["job_id"], STATUS_POLLERS, STATUS_REQUESTS_PER_POLLER
                ),
                "large_images": large["images"],
            }
        if not args.no_memory:
            results["memory_20mb_batch"] = memory_run(stack, host, args.pollers)
    finally:
        stack.stop()
        host.stop()
    results["measurement"] = measure.header_vs_decode(ensure_images()["12mp"])
    # Hostile inputs: CPU and memory of measure_image per attack (issue 12's bound). Plain
    # Pillow's "before" figures take minutes: `python -m bench.hostile_images` prints them.
    subprocess.run([sys.executable, "-m", "bench.hostile_images", "--no-pillow"], check=True)
    results["load_after"] = _load()
    print(render(results))
    if not args.no_write:
        written = write_results(results)
        print(f"results: {written[0]}  plot: {written[1]}")
    print(summary_line(results))
    return 0


def _pick(results: dict[str, Any], images: int) -> dict[str, Any] | None:
    return next((j for j in results.get("jobs", []) if j["images"] == images), None)


def render(results: dict[str, Any]) -> str:
    lines = [
        "",
        f"{'images':>7} {'submit s':>9} {'terminal s':>11} {'images/s':>9} "
        f"{'x ideal':>8} {'speedup':>8} {'billed s/img':>13} {'GB-s/1k':>8} {'$/1k':>8}",
    ]
    for job in results.get("jobs", []):
        per = job["cost"]["per_1000_images"]
        lines.append(
            f"{job['images']:>7} {job['submit_s']:>9.3f} {job['terminal_s']:>11.2f} "
            f"{job['images_per_s']:>9.1f} {job['ratio_to_ideal']:>8.2f} "
            f"{job['speedup_over_sequential']:>8.1f} {job['process_billed_s_per_image']:>13.4f} "
            f"{per['gb_seconds']:>8.2f} {per['usd_total']:>8.4f}"
        )
    if latency := results.get("status_latency"):
        small, large = latency["small"], latency["large"]
        lines.append(
            f"\nstatus latency, {latency['pollers']} concurrent pollers: 1 image "
            f"p50 {small['p50_ms']:.1f} ms p99 {small['p99_ms']:.1f} ms; "
            f"{latency['large_images']} images p50 {large['p50_ms']:.1f} ms "
            f"p99 {large['p99_ms']:.1f} ms; p99 ratio {large['p99_ms'] / small['p99_ms']:.2f}"
        )
    m = results["measurement"]
    lines.append(
        f"measure 12 MP JPEG: header {m['header_ms']:.3f} ms, full decode "
        f"{m['decode_ms']:.1f} ms: {m['ratio']:.0f}x cheaper"
    )
    if (job := _pick(results, 1000)) or (job := max(results.get("jobs", []), key=_images)):
        per = job["cost"]["per_1000_images"]
        usd = ", ".join(f"{k} {v:.5f}" for k, v in per["usd"].items())
        lines.append(
            f"per 1,000 images ({job['images']}-image job): {per['gb_seconds']:.2f} GB-s, "
            f"{per['lambda_invocations']:.0f} invocations, {per['sqs_requests']:.0f} SQS requests, "
            f"{per['dynamodb_rru']:.0f} RRU, {per['dynamodb_wru']:.0f} WRU "
            f"({per['dynamodb_wru_index_estimate']:.0f} of them index writes, estimated), "
            f"{per['api_requests']:.1f} API requests\n  USD {per['usd_total']:.4f}: {usd}"
        )
    peak = max((j["process_max_memory_mb"] for j in results.get("jobs", [])), default=0)
    lines.append(f"process function peak memory, mixed photos: {peak} MB")
    if memory := results.get("memory_20mb_batch"):
        lines.append(
            f"process function peak memory, {memory['image_bytes'] / 1e6:.1f} MB image in every "
            f"record: {memory['peak_mb']} MB of {memory['memory_size_mb']} MB ({memory['status']})"
        )
    lines.append(f"load average before {results['machine']['load']}, after {results['load_after']}")
    return "\n".join(lines)


def _images(job: dict[str, Any]) -> int:
    return job["images"]


def summary_line(results: dict[str, Any]) -> str:
    def fmt(value: float | None, digits: int = 3) -> str:
        return "NA" if value is None else f"{value:.{digits}f}"

    job_1000, job_10000 = _pick(results, 1000), _pick(results, 10_000)
    cost_job = job_1000 or (max(results["jobs"], key=_images) if results.get("jobs") else None)
    latency = results.get("status_latency")
    memory = results.get("memory_20mb_batch")
    billed = (
        sum(j["process_billed_s"] for j in results.get("jobs", []))
        / sum(j["images"] for j in results["jobs"])
        if results.get("jobs")
        else None
    )
    fields = {
        "ratio_to_ideal_1000": fmt(job_1000 and job_1000["ratio_to_ideal"], 2),
        "submit_10000_s": fmt(job_10000 and job_10000["submit_s"], 2),
        "status_p99_ratio": fmt(
            latency and latency["large"]["p99_ms"] / latency["small"]["p99_ms"], 2
        ),
        "gbs_per_1000": fmt(cost_job and cost_job["cost"]["per_1000_images"]["gb_seconds"], 2),
        "header_vs_decode": fmt(results["measurement"]["ratio"], 0),
        "billed_s_per_image": fmt(billed, 4),
        "peak_mb_20mb_batch": str(memory["peak_mb"]) if memory else "NA",
    }
    return " ".join(f"{k}={v}" for k, v in fields.items())


def write_results(results: dict[str, Any]) -> tuple[Path, Path]:
    """bench/results/<date>.json (committed: the latest run) and its plot (git-ignored)."""
    RESULTS_DIR.mkdir(exist_ok=True)
    stem = datetime.now(UTC).strftime("%Y-%m-%d")
    json_path, png_path = RESULTS_DIR / f"{stem}.json", RESULTS_DIR / f"{stem}.png"
    json_path.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    from bench.plot import plot_makespan

    plot_makespan(results, png_path, MEAN_GPU_S)
    return json_path, png_path


def _load() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return "unknown"


def _cpus() -> int:
    import os

    return os.cpu_count() or 0


if __name__ == "__main__":
    sys.exit(main())
