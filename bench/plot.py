"""The makespan plot: measured job times against the ideal and the sequential design."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def plot_makespan(results: dict[str, Any], path: Path, mean_gpu_s: float) -> None:
    """Log-log makespan against job size, beside N x 0.25 s / C and N x 0.25 s."""
    import matplotlib

    matplotlib.use("Agg")  # no display: files only
    import matplotlib.pyplot as plt

    jobs = sorted(results.get("jobs", []), key=lambda j: j["images"])
    if not jobs:
        return
    concurrency = results["concurrency"]["C"]
    sizes = [j["images"] for j in jobs]
    span = [min(sizes), max(sizes)] if min(sizes) < max(sizes) else [1, max(10, max(sizes))]
    grid = [span[0] * (span[1] / span[0]) ** (i / 60) for i in range(61)]
    figure, axes = plt.subplots(figsize=(7, 5))
    axes.plot(grid, [mean_gpu_s * n for n in grid], "--", color="grey", label="sequential")
    axes.plot(
        grid,
        [mean_gpu_s * max(1.0, n / concurrency) for n in grid],
        ":",
        color="green",
        label=f"ideal (C = {concurrency})",
    )
    axes.plot(sizes, [j["terminal_s"] for j in jobs], "o-", color="C0", label="measured")
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_xlabel("images in the job")
    axes.set_ylabel("submit to terminal status (s)")
    axes.set_title(f"Retail Pulse local stack, {results['date'][:10]}")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
