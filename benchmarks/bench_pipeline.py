"""Print render pairs per second and detector milliseconds per sample on this machine.

Usage: .venv/bin/python benchmarks/bench_pipeline.py [--scenario quickstart] [--pairs 24]

Render throughput is measured through the engine's own pure sample function
(`scenarios.engine.run_sample`: IK, real render with label pass, twin render, nominal depth
for the missing-material ground truth) in one process, after one warm-up sample. Detector
time is `predict` on the rendered test pairs after `fit` on the training pairs.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import detectors
from scenarios.engine import run_sample, sample_table
from scenarios.interfaces import Observation, Sample
from scenarios.spec import load_scenario


def _as_sample(rec: dict, arrays: dict[str, np.ndarray]) -> Sample:
    K = np.asarray(rec["K"])
    return Sample(
        id=rec["id"],
        real=Observation(
            arrays["real_rgb"], K, np.asarray(rec["T_base_cam"]), depth=arrays["real_depth"]
        ),
        twin=Observation(arrays["twin_rgb"], K, np.asarray(rec["T_base_cam_twin"])),
        fg_mask=arrays["twin_mask"],
        gt_mask=arrays["gt_mask"],
        label=rec["label"],
        part_id=rec["part_id"],
        category=rec["category"],
        view_id=rec["view_id"],
    )


def main() -> None:
    """Run the benchmark and print its figures."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenario", default="quickstart")
    ap.add_argument("--pairs", type=int, default=24, help="render pairs to time")
    args = ap.parse_args()
    sc = load_scenario(args.scenario)
    n_total = len(sample_table(sc))
    run_sample(sc, sc.seed, 0)  # warm-up: GL context, shader compile, part booleans
    samples = []
    t0 = time.perf_counter()
    n_dropped = 0
    for i in range(1, min(n_total, args.pairs + 1)):
        s = run_sample(sc, sc.seed, i)
        if s.dropped:
            n_dropped += 1
            continue
        assert s.arrays is not None
        samples.append(_as_sample(s.record, s.arrays))
    dt = time.perf_counter() - t0
    W, H = sc.cell.camera.width, sc.cell.camera.height
    print(
        f"scenario {sc.name}: {W}x{H} px, {len(samples)} pairs rendered "
        f"({n_dropped} viewpoints dropped) in {dt:.2f} s"
    )
    print(
        f"render: {len(samples) / dt:.2f} pairs/s (one process, "
        f"{1000 * dt / max(1, len(samples)):.0f} ms per pair incl. IK and ground truth)"
    )
    train = [s for s in samples if s.label == 0][: max(1, len(samples) // 3)]
    for name in detectors.available():
        det = detectors.create(name)
        det.fit(train)
        t0 = time.perf_counter()
        for s in samples:
            det.predict(s)
        ms = 1000 * (time.perf_counter() - t0) / len(samples)
        print(f"detector {name:<18} {ms:7.2f} ms/sample")


if __name__ == "__main__":
    main()
