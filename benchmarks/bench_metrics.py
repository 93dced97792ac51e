"""Time and peak memory of the pixel metrics: all-in-memory scikit-learn vs ``PixelMetrics``.

Usage: .venv/bin/python benchmarks/bench_metrics.py [--images 200] [--size 256] [--seed 0]

The anomaly maps are float32 (H, W) with the structure of real detector output: about 70%
exact zeros (a ReLU-like background), smooth values elsewhere, and 1-3 elliptical defects on
every other image scoring higher. The baseline is the former all-in-memory computation
(every pixel concatenated as float64, scikit-learn's ROC / AP / PR curves, the sort-based
AUPRO). ``PixelMetrics`` is timed fed from the in-memory list and, as the engine will feed
it, from .npy files re-read from disk, at the default budget and at budgets leaving about 5
and 20 chunks of pixels to sort, which it spills to temporary files in one extra pass (the
re-read passes do not grow with the number of chunks; ``spill_MB`` is what it wrote). Peak
extra memory is tracemalloc's peak above the memory held before the call (the in-memory
images are not counted; numpy reports its buffers to it).
"""

from __future__ import annotations

import argparse
import functools
import math
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from scenarios.metrics import DEFAULT_BUDGET_PX, PixelMetrics, auroc, average_precision, f1_max

Pair = tuple[NDArray[np.bool_], NDArray[np.float32]]  # (gt_mask (H, W), anomaly_map (H, W))


def make_images(n: int, size: int, seed: int) -> list[Pair]:
    """``n`` (mask (size, size) bool, map (size, size) float32) pairs, ~70% exact zeros."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    images = []
    for i in range(n):
        mask = np.zeros((size, size), dtype=bool)
        if i % 2:
            for _ in range(rng.integers(1, 4)):
                cy, cx = rng.uniform(0, size, 2)
                ry, rx = rng.uniform(3, size / 12, 2)
                mask |= ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0
        smooth = ndimage.gaussian_filter(rng.standard_normal((size, size)), 4.0)
        raw = smooth / smooth.std() + 3.0 * ndimage.gaussian_filter(mask.astype(np.float64), 2.0)
        # A ReLU-like head: the lowest 70% of each map are exactly 0.
        amap = np.maximum(raw - np.quantile(raw, 0.7), 0.0)
        images.append((mask, amap.astype(np.float32)))
    return images


def old_aupro(masks: list[NDArray[np.bool_]], maps: list[NDArray], fpr_limit: float = 0.3) -> float:
    """The former all-in-memory AUPRO (partition to the FPR cutoff, then one sort)."""
    scores = np.concatenate([a.ravel() for a in maps]).astype(np.float64)
    weights, num_regions = [], 0
    for mask in masks:
        regions, n = ndimage.label(mask, structure=np.ones((3, 3), dtype=int))
        regions = np.asarray(regions).ravel()
        inv_size = np.zeros(n + 1)
        inv_size[1:] = 1.0 / np.bincount(regions, minlength=n + 1)[1:]
        weights.append(inv_size[regions])
        num_regions += int(n)
    normal = ~np.concatenate([m.ravel() for m in masks])
    num_normal = int(np.count_nonzero(normal))
    w = np.concatenate(weights)
    k = min(num_normal, math.ceil(fpr_limit * num_normal) + 1)
    if k < num_normal:
        cutoff = np.partition(scores[normal], num_normal - k)[num_normal - k]
        top = scores >= cutoff
        scores, normal, w = scores[top], normal[top], w[top]
    order = np.argsort(-scores)
    s = scores[order]
    fprs = np.cumsum(normal[order], dtype=np.int64) / num_normal
    pros = np.cumsum(w[order]) / num_regions
    keep = np.append(s[1:] != s[:-1], True)
    fprs = np.concatenate(([0.0], fprs[keep]))
    pros = np.concatenate(([0.0], pros[keep]))
    end = int(np.searchsorted(fprs, fpr_limit, side="right"))
    x, y = fprs[:end], pros[:end]
    if x[-1] < fpr_limit:
        x0, x1, y0, y1 = fprs[end - 1], fprs[end], pros[end - 1], pros[end]
        x = np.append(x, fpr_limit)
        y = np.append(y, y0 + (y1 - y0) * (fpr_limit - x0) / (x1 - x0))
    return float(np.sum(np.diff(x) * (y[1:] + y[:-1]) * 0.5)) / fpr_limit


def old_metrics(images: list[Pair]) -> dict[str, float]:
    """The former ``compute_metrics`` pixel part: all pixels concatenated as float64."""
    labels = np.concatenate([m.ravel() for m, _ in images])
    scores = np.concatenate([a.ravel() for _, a in images]).astype(np.float64)
    return {
        "p_auroc": auroc(labels, scores),
        "p_ap": average_precision(labels, scores),
        "p_f1max": f1_max(labels, scores),
        "aupro": old_aupro([m for m, _ in images], [a for _, a in images]),
    }


def streamed(
    source: Callable[[], Iterator[Pair]], budget_px: int, spill_dir: str, stats: list[int]
) -> dict[str, float]:
    """``PixelMetrics`` fed one pass of ``source``, re-reading it as needed.

    Sets ``stats`` to [re-read passes, bytes spilled to temporary files] of this call.
    """
    stats[:] = [0, 0]

    def reread() -> Iterator[Pair]:
        stats[0] += 1
        return source()

    metrics = PixelMetrics(budget_px=budget_px, spill_dir=spill_dir)
    for mask, amap in source():
        metrics.add(mask, amap)
    out = metrics.result(reread=reread)
    stats[1] = metrics.spilled_bytes
    return out


def measure(fn: Callable[[], dict[str, float]]) -> tuple[dict[str, float], float, float]:
    """(result, best wall time of 2 runs in s, tracemalloc peak above the start in MB)."""
    times = []
    for _ in range(2):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    fn()
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    return out, min(times), peak / 2**20


def main() -> None:
    """Print one line per method: budget, time, re-read passes, peak memory, largest error."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    images = make_images(args.images, args.size, args.seed)
    n_px = sum(m.size for m, _ in images)
    n_zero = sum(int(np.count_nonzero(a == 0)) for _, a in images)
    n_defect = sum(int(m.any()) for m, _ in images)
    print(
        f"{len(images)} maps of {args.size}x{args.size} float32: {n_px / 1e6:.1f} M px, "
        f"{100 * n_zero / n_px:.1f}% exact zeros, {n_defect} images with defects"
    )
    # The exact zeros are one tie group, counted but never read, so ~5 chunks of pixels to
    # sort means a budget of about a fifth of the non-zero pixels (a little more than 5, as
    # the greedy packing leaves chunks partly filled).
    five_chunks = (n_px - n_zero) // 5 + 1
    twenty_chunks = (n_px - n_zero) // 20 + 1

    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for i, (mask, amap) in enumerate(images):
            paths.append((Path(tmp) / f"gt_{i}.npy", Path(tmp) / f"map_{i}.npy"))
            np.save(paths[-1][0], mask)
            np.save(paths[-1][1], amap)

        def from_memory() -> Iterator[Pair]:
            return iter(images)

        def from_disk() -> Iterator[Pair]:
            return ((np.load(g), np.load(a)) for g, a in paths)

        reference, t_old, mem_old = measure(lambda: old_metrics(images))
        print(
            f"{'method':<30} {'budget_px':>10} {'time_s':>7} {'rereads':>7} {'peak_MB':>8} "
            f"{'spill_MB':>8}"
        )
        print(
            f"{'sklearn, all in memory':<30} {'-':>10} {t_old:7.2f} {'-':>7} {mem_old:8.0f} "
            f"{'-':>8}"
        )
        for name, source, budget in (
            ("PixelMetrics, from memory", from_memory, DEFAULT_BUDGET_PX),
            ("PixelMetrics, from .npy files", from_disk, DEFAULT_BUDGET_PX),
            ("PixelMetrics, from memory", from_memory, five_chunks),
            ("PixelMetrics, from .npy files", from_disk, five_chunks),
            ("PixelMetrics, from memory", from_memory, twenty_chunks),
            ("PixelMetrics, from .npy files", from_disk, twenty_chunks),
        ):
            stats = [0, 0]  # of the last of measure()'s three runs, all alike
            out, t, mem = measure(functools.partial(streamed, source, budget, tmp, stats))
            err = max(abs(out[k] - reference[k]) for k in reference)
            print(
                f"{name:<30} {budget:>10} {t:7.2f} {stats[0]:>7} {mem:8.0f} "
                f"{stats[1] / 2**20:8.1f}   max |diff| {err:.1e}"
            )
    print("metrics: " + ", ".join(f"{k} {v:.6f}" for k, v in reference.items()))


if __name__ == "__main__":
    main()
