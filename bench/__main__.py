"""`make bench` / `python -m bench`: the service end to end on the local stack, at every size.

Starts a local image host (realistic JPEGs of 0.3 to 12 megapixels, generated once into
.cache/bench-images) and the local stack (`python -m local_stack`), then measures:

- jobs of 1, 100, 1,000 and 10,000 images: submit latency, time to terminal, images per
  second, makespan / ideal and speedup over a one-image-at-a-time design;
- status latency (p50, p99) of a 1-image and a 10,000-image job under 50 concurrent pollers;
- header-only measurement against a full decode of a 12-megapixel JPEG;
- the bill per image and per million images, term by term, from what the functions'
  clients measured (bench/costs.py): DynamoDB WRU and RRU as DynamoDB Local reports them
  (index writes included), SQS requests (the functions' and the event source's), Lambda
  GB-seconds and requests (REPORT lines), API requests, priced with bench/prices.json;
- how fast one job takes results, per-image transactions against batch filings
  (bench/counter.py, on DynamoDB Local);
- the process function's peak memory, and with a 20 MB image in every record of a batch;
- then, each in its own process (`--no-ingest`, `--no-upload-job` skip them): the ingest
  function's peak memory at 10,000 and 100,000 uploaded images and its images per second
  (bench/ingest.py), and a 20,000-image job through POST /api/uploads on a local stack of
  its own, with the 413 of its body and a malformed upload (bench/upload_job.py).

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
from bench.costs import TERMS, AwsUsage, LambdaUsage, price, requests_difference
from bench.counter import counter_ceiling
from bench.images import LARGE_NAME, PHOTO_SIZES, ImageHost, ensure_images
from bench.stack import ROOT, RunningStack, start_stack
from local_stack.template import load_template

RESULTS_DIR = Path(__file__).resolve().parent / "results"
FULL_SIZES = (1, 100, 1_000, 10_000)
QUICK_SIZES = (1, 100)
MEAN_GPU_S = 0.25  # settings.GPU_SLEEP_MIN_S/MAX_S: uniform 0.1 to 0.4 s
STATUS_POLLERS = 50
STATUS_REQUESTS_PER_POLLER = 20
SETTLE_S = 2.0  # after a job ends, for the last batch's REPORT line and deletes
# Targets of issue 17, checked on the summary's figures.
TARGETS = {"wru_per_image": 4.0, "usd_per_million": 2.50, "billed_s_per_image": 0.012}


def template_default(parameter: str) -> str:
    """A parameter's default in template.yaml (the batch size the stack runs with)."""
    return str(load_template(ROOT / "template.yaml")["Parameters"][parameter]["Default"])


def express_max_images() -> int:
    """Jobs of at most this many images take the express lane (batches of 10, no window):
    template.yaml's EXPRESS_MAX_IMAGES."""
    variables = load_template(ROOT / "template.yaml")["Globals"]["Function"]["Environment"]
    return int(variables["Variables"]["EXPRESS_MAX_IMAGES"])


def ideal_makespan(images: int, concurrency: int) -> float:
    return MEAN_GPU_S * max(1.0, images / concurrency)


def run_job(stack: RunningStack, host: ImageHost, images: int, concurrency: int) -> dict[str, Any]:
    """One job of `images` photos of mixed sizes, with its Lambda and AWS usage and bill."""
    names = [name for name, _, _ in PHOTO_SIZES]
    urls = [host.url(names[i % len(names)], i) for i in range(images)]
    offset, before = stack.log_offset(), stack.event_source_requests()
    started = time.perf_counter()
    job_id, submit_s = stack.submit(urls)
    ideal = ideal_makespan(images, concurrency)
    body = stack.wait_terminal(job_id, timeout_s=max(120.0, 30 * ideal), poll_s=0.1)
    makespan = time.perf_counter() - started
    time.sleep(SETTLE_S)
    log = stack.log_since(offset)
    usage = LambdaUsage.from_log(log)
    pollers = requests_difference(before, stack.event_source_requests())
    bill = price(usage, AwsUsage.from_log(log), pollers, images)
    return {
        "images": images,
        "job_id": job_id,
        "status": body["status"],
        "succeeded": body.get("progress", {}).get("succeeded", images),
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
        # A submit and one final status read: the benchmark's own 10 Hz polling is not what
        # a client does, so the status function is priced per read (bench/costs.py).
        "cost": bill,
        "status_function": {
            "invocations": usage.invocations.get("StatusFunction", 0),
            "gb_seconds": usage.gb_seconds.get("StatusFunction", 0.0),
        },
    }


def memory_run(
    stack: RunningStack, host: ImageHost, pollers: int, batch_size: int
) -> dict[str, Any]:
    """A full batch per poller whose every record is a ~20 MB JPEG: the bytes budget
    (IMAGE_BYTES_IN_FLIGHT), not the batch size, bounds what one invocation holds."""
    images = batch_size * pollers
    offset = stack.log_offset()
    job_id, _ = stack.submit([host.url(LARGE_NAME, i) for i in range(images)])
    body = stack.wait_terminal(job_id, timeout_s=600, poll_s=0.2)
    time.sleep(SETTLE_S)
    usage = LambdaUsage.from_log(stack.log_since(offset))
    return {
        "images": images,
        "image_bytes": host.sizes[LARGE_NAME],
        "status": body["status"],
        "peak_mb": usage.max_memory_mb.get("ProcessFunction", 0),
        "memory_size_mb": usage.memory_size_mb.get("ProcessFunction", 0),
    }


def warm_up(stack: RunningStack, host: ImageHost, concurrency: int) -> None:
    """Every poller's cold start, before anything is measured: a job that fills every poller
    of the image queue, and one of the express lane's largest size (the lane's own pollers
    and environments; small jobs are measured there)."""
    warm, _ = stack.submit([host.url("vga", i) for i in range(concurrency)])
    express, _ = stack.submit([host.url("vga", i) for i in range(express_max_images())])
    for job_id in (warm, express):
        stack.wait_terminal(job_id, timeout_s=180)
    time.sleep(SETTLE_S)  # its last REPORT and usage lines belong to no measured job


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="jobs of 1 and 100 images only")
    parser.add_argument(
        "--sizes", type=lambda s: tuple(int(x) for x in s.split(",")), help="e.g. 1,100,1000"
    )
    parser.add_argument("--pollers", type=int, default=4, help="process pollers (default 4)")
    parser.add_argument("--no-memory", action="store_true", help="skip the 20 MB batch run")
    parser.add_argument("--no-write", action="store_true", help="do not write bench/results")
    parser.add_argument(
        "--no-ingest", action="store_true", help="skip bench.ingest (10,000 and 100,000 images)"
    )
    parser.add_argument(
        "--no-upload-job", action="store_true", help="skip bench.upload_job (20,000 images)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = args.sizes or (QUICK_SIZES if args.quick else FULL_SIZES)
    batch_size = int(template_default("ProcessBatchSize"))
    window_s = float(template_default("ProcessBatchingWindowSeconds"))
    concurrency = args.pollers * batch_size
    backend = "dynamodb-local"  # the local stack's DynamoDB, always (local_stack/aws.py)
    load_before = _load()
    print(
        f"bench: sizes {list(sizes)}, concurrency {concurrency} ({args.pollers} pollers x batch "
        f"{batch_size}, window {window_s:g} s), DynamoDB {backend}, load {load_before}",
        flush=True,
    )
    host = ImageHost(ensure_images()).start()
    results: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": _cpus(), "python": platform.python_version(), "load": load_before},
        "concurrency": {
            "pollers": args.pollers,
            "batch_size": batch_size,
            "batching_window_s": window_s,
            "C": concurrency,
        },
        "dynamodb": backend,
        "express_max_images": express_max_images(),
        "image_bytes": host.sizes,
    }
    try:
        stack = start_stack(host.host_port, pollers=args.pollers)
        print(f"local stack ready in {stack.ready_s:.1f} s at {stack.api_url}", flush=True)
        try:
            warm_up(stack, host, concurrency)
            jobs = []
            for images in sizes:
                job = run_job(stack, host, images, concurrency)
                jobs.append(job)
                print(
                    f"  {images:>6} images: {job['status']} in {job['terminal_s']:.2f} s "
                    f"({job['ratio_to_ideal']:.2f} x ideal), "
                    f"{job['cost']['per_image']['dynamodb_wru']:.2f} WRU/image",
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
            results["counter_ceiling"] = counter_ceiling(stack.dynamodb_endpoint_url)
            if not args.no_memory:
                results["memory_20mb_batch"] = memory_run(stack, host, args.pollers, batch_size)
        finally:
            stack.stop()
    finally:
        host.stop()
    results["measurement"] = measure.header_vs_decode(ensure_images()["12mp"])
    # Hostile inputs: CPU and memory of measure_image per attack (issue 12's bound). Plain
    # Pillow's "before" figures take minutes: `python -m bench.hostile_images` prints them.
    subprocess.run([sys.executable, "-m", "bench.hostile_images", "--no-pillow"], check=True)
    # Issue 24: the ingest's memory and rate (10,000 and 100,000 images, moto in-process),
    # and the done-when run (20,000 images through uploads on a local stack of its own).
    if not args.no_ingest:
        results["ingest"] = chained("bench.ingest")
    if not args.no_upload_job:
        results["upload_job"] = chained("bench.upload_job")
    results["load_after"] = _load()
    print(render(results))
    if not args.no_write:
        written = write_results(results)
        print(f"results: {written[0]}  plot: {written[1]}")
    print(summary_line(results))
    return 0


def chained(module: str) -> dict[str, str]:
    """Run another bench (`python -m <module>`), its output shown as it goes; the
    `key=value` fields of its summary lines, for this bench's summary line."""
    done = subprocess.run(
        [sys.executable, "-m", module], cwd=ROOT, stdout=subprocess.PIPE, text=True, check=False
    )
    print(done.stdout, end="", flush=True)
    fields: dict[str, str] = {}
    for line in done.stdout.splitlines():
        pairs = [part.partition("=") for part in line.split()]
        if pairs and all(sep and key.isidentifier() for key, sep, _ in pairs):
            fields.update({key: value for key, _, value in pairs})
    if done.returncode:
        fields[f"{module.rpartition('.')[2]}_exit"] = str(done.returncode)
    return fields


def _pick(results: dict[str, Any], images: int) -> dict[str, Any] | None:
    return next((j for j in results.get("jobs", []) if j["images"] == images), None)


def render(results: dict[str, Any]) -> str:
    lines = [
        "",
        f"{'images':>7} {'submit s':>9} {'terminal s':>11} {'images/s':>9} "
        f"{'x ideal':>8} {'speedup':>8} {'billed s/img':>13} {'WRU/img':>8} {'$/M img':>8}",
    ]
    for job in results.get("jobs", []):
        cost = job["cost"]
        lines.append(
            f"{job['images']:>7} {job['submit_s']:>9.3f} {job['terminal_s']:>11.2f} "
            f"{job['images_per_s']:>9.1f} {job['ratio_to_ideal']:>8.2f} "
            f"{job['speedup_over_sequential']:>8.1f} {job['process_billed_s_per_image']:>13.4f} "
            f"{cost['per_image']['dynamodb_wru']:>8.2f} {cost['usd_per_million']['total']:>8.3f}"
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
    if job := _cost_job(results):
        concurrency = results["concurrency"]
        lines += _bill_lines(
            f"batch filing, batches of {concurrency['batch_size']}, "
            f"window {concurrency['batching_window_s']:g} s",
            job,
        )
    if results.get("dynamodb") != "dynamodb-local":
        lines.append("  (DynamoDB on moto: WRU and RRU are moto's, not DynamoDB's)")
    if counter := results.get("counter_ceiling"):
        one, batch = counter["per_image"], counter["batch"]
        lines.append(
            f"\none job's counter, {one['writers']} concurrent filers on DynamoDB Local: "
            f"per-image transactions {one['images_per_s']:.0f} images/s "
            f"({one['conflicts_retried']} conflicts retried), batch filings "
            f"{batch['images_per_s']:.0f} images/s: "
            f"{counter['ratio']:.1f}x"
        )
    peak = max((j["process_max_memory_mb"] for j in results.get("jobs", [])), default=0)
    lines.append(f"process function peak memory, mixed photos: {peak} MB")
    if memory := results.get("memory_20mb_batch"):
        lines.append(
            f"process function peak memory, {memory['image_bytes'] / 1e6:.1f} MB image in every "
            f"record: {memory['peak_mb']} MB of {memory['memory_size_mb']} MB ({memory['status']})"
        )
    lines.append(f"load average before {results['machine']['load']}, after {results['load_after']}")
    lines += ["targets (issue 17):", *target_lines(results)]
    return "\n".join(lines)


def _bill_lines(title: str, job: dict[str, Any]) -> list[str]:
    """The bill of one job, per image and per million images, with each term."""
    cost = job["cost"]
    per, usd = cost["per_image"], cost["usd_per_million"]
    index_wru = sum(v for k, v in cost["wru_by"].items() if "/" in k)
    terms = ", ".join(f"{term} {usd[term]:.3f}" for term in TERMS)
    return [
        f"\nper image, {job['images']}-image job ({title}):",
        f"  DynamoDB {per['dynamodb_wru']:.3f} WRU ({index_wru:.3f} of them index writes) "
        f"and {per['dynamodb_rru']:.3f} RRU (measured), {per['sqs_requests']:.3f} SQS requests, "
        f"{per['lambda_gb_s']:.4f} Lambda GB-s and {per['lambda_requests']:.4f} invocations, "
        f"{per['api_requests']:.4f} API requests; billed process s/image "
        f"{job['process_billed_s_per_image']:.4f}",
        "  WRU by table and index: " + ", ".join(f"{k} {v:.3f}" for k, v in cost["wru_by"].items()),
        f"  usd_per_million {usd['total']:.3f}: {terms}",
    ]


def _cost_job(results: dict[str, Any]) -> dict[str, Any] | None:
    """The job the bill is quoted from: 1,000 images, or the largest run."""
    jobs = results.get("jobs") or []
    return _pick(results, 1000) or (max(jobs, key=_images) if jobs else None)


def _images(job: dict[str, Any]) -> int:
    return job["images"]


def headline_figures(results: dict[str, Any]) -> dict[str, float]:
    """The bill's headline figures, only where DynamoDB's own capacity was measured (on moto
    they would be moto's guesses, so they are left out)."""
    figures: dict[str, float] = {}
    jobs = results.get("jobs") or []
    # Issue 17's target is at the default batch size: the jobs the main queue's event
    # source gathers into batches of ProcessBatchSize. Express-lane jobs run in batches of
    # 10 with no window, by design; the figure over every job is printed beside it.
    batched = [j for j in jobs if j["images"] > results.get("express_max_images", 0)]
    for name, some in (("billed_s_per_image", batched), ("billed_s_per_image_all", jobs)):
        if some:
            figures[name] = sum(j["process_billed_s"] for j in some) / sum(
                j["images"] for j in some
            )
    if results.get("dynamodb") != "dynamodb-local":
        return figures
    if job := _cost_job(results):
        figures["wru_per_image"] = job["cost"]["per_image"]["dynamodb_wru"]
        figures["usd_per_million"] = job["cost"]["usd_per_million"]["total"]
    return figures


def target_lines(results: dict[str, Any]) -> list[str]:
    """Each target of issue 17 beside its measured figure: met or not."""
    figures = headline_figures(results)
    lines = []
    for name, limit in TARGETS.items():
        value = figures.get(name)
        verdict = "not measured" if value is None else ("met" if value <= limit else "NOT met")
        shown = "NA" if value is None else f"{value:.4g}"
        lines.append(f"  {name} {shown} (target <= {limit:g}): {verdict}")
        if name == "billed_s_per_image" and "billed_s_per_image_all" in figures:
            every = figures["billed_s_per_image_all"]
            lines.append(
                f"    (jobs above {results.get('express_max_images')} images, in batches of "
                f"{results['concurrency']['batch_size']}; over every job, express lane "
                f"included: {every:.4g})"
            )
    if latency := results.get("status_latency"):
        ratio = latency["large"]["p99_ms"] / latency["small"]["p99_ms"]
        verdict = "met" if ratio <= 1.5 else "NOT met"
        lines.append(f"  status_p99_ratio {ratio:.2f} (target <= 1.5): {verdict}")
    return lines


def summary_line(results: dict[str, Any]) -> str:
    def fmt(value: float | None, digits: int = 3) -> str:
        return "NA" if value is None else f"{value:.{digits}f}"

    job_1000, job_10000 = _pick(results, 1000), _pick(results, 10_000)
    cost_job = _cost_job(results)
    latency = results.get("status_latency")
    memory = results.get("memory_20mb_batch")
    cost = cost_job["cost"] if cost_job else None
    headline = headline_figures(results)
    billed = headline.get("billed_s_per_image")
    fields = {
        "ratio_to_ideal_1000": fmt(job_1000["ratio_to_ideal"] if job_1000 else None, 2),
        "submit_10000_s": fmt(job_10000["submit_s"] if job_10000 else None, 2),
        "status_p99_ratio": fmt(
            latency and latency["large"]["p99_ms"] / latency["small"]["p99_ms"], 2
        ),
        "gbs_per_1000": fmt(cost and cost["per_image"]["lambda_gb_s"] * 1000, 2),
        "header_vs_decode": fmt(results["measurement"]["ratio"], 0),
        "billed_s_per_image": fmt(billed, 4),
        "billed_s_per_image_all": fmt(headline.get("billed_s_per_image_all"), 4),
        "peak_mb_20mb_batch": str(memory["peak_mb"]) if memory else "NA",
        "wru_per_image": fmt(headline.get("wru_per_image"), 2),
        "usd_per_million": fmt(headline.get("usd_per_million"), 2),
    }
    for chain in ("ingest", "upload_job"):
        fields.update(results.get(chain) or {})
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
