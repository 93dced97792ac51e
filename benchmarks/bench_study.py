"""Study executors: the same study on the local process pool and on Ray, 1 and 2 workers.

Prints, per executor and worker count, the wall time, cells and simulated pairs per second,
the parallel efficiency from 1 to N workers (T1 / (N * TN); the goal is >= 0.8 from 1 to 2)
and Ray's overhead against the pool at the same worker count (T_ray / T_pool - 1). Then what
a 1,000-cell study of the same cells would cost on a cluster, from the measured per-cell
time and efficiency.

    PYOPENGL_PLATFORM=egl .venv/bin/python benchmarks/bench_study.py            # 20 cells
    PYOPENGL_PLATFORM=egl .venv/bin/python benchmarks/bench_study.py --cells 40 --workers 1 2

Each configuration runs the whole study from nothing in a fresh directory (no cell is
reused). The pool with 1 worker runs the cells in this process; with 2, in two spawned
processes; Ray starts a local instance of that many CPUs (its start-up is in the time: a
user pays it too). The cells are the bundled ``tiny`` scenario swept over the hand-eye
rotation error (a grid of values x 2 seeds), a few seconds each.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scenarios.study import parse_study, run_study  # noqa: E402


def study_spec(cells: int, scenario: str) -> dict[str, object]:
    seeds = [0, 1]
    n_values = max(1, -(-cells // len(seeds)))
    return {
        "name": "bench-study",
        "scenario": scenario,
        "axes": {"errors.hand_eye.rotation_deg": [round(0.1 * i, 2) for i in range(n_values)]},
        "seeds": seeds,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--cells", type=int, default=20, help="cells in the study (default 20)")
    ap.add_argument("--scenario", default="tiny", help="base scenario (default tiny)")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--executors", nargs="+", default=["pool", "ray"], choices=["pool", "ray"])
    args = ap.parse_args()
    os.environ.setdefault("PYOPENGL_PLATFORM", "egl")
    study = parse_study(study_spec(args.cells, args.scenario))
    print(
        f"study: {len(study.cells)} cells of {args.scenario}; {os.cpu_count()} cores; "
        f"executors {args.executors}, workers {args.workers}"
    )
    wall: dict[tuple[str, int], float] = {}
    pairs = 0
    root = Path(tempfile.mkdtemp(prefix="twincell-bench-study-"))
    try:
        for executor in args.executors:
            for w in args.workers:
                out = root / f"{executor}-{w}"
                t0 = time.perf_counter()
                result = run_study(study, out, executor=executor, workers=w, progress=False)
                wall[(executor, w)] = time.perf_counter() - t0
                pairs = sum(o.pairs for o in result.outcomes.values())
                failed = len(result.failed)
                print(
                    f"{executor:>4} x {w}: {wall[(executor, w)]:7.1f} s  "
                    f"{len(study.cells) / wall[(executor, w)]:.3f} cells/s  "
                    f"{pairs / wall[(executor, w)]:.2f} pairs/s"
                    + (f"  ({failed} cells failed)" if failed else "")
                )
                shutil.rmtree(out)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print()
    for executor in args.executors:
        base = wall.get((executor, min(args.workers)))
        for w in args.workers:
            if w == min(args.workers) or base is None:
                continue
            eff = base * min(args.workers) / (w * wall[(executor, w)])
            print(f"{executor}: parallel efficiency {min(args.workers)} -> {w} workers: {eff:.2f}")
    if "pool" in args.executors and "ray" in args.executors:
        for w in args.workers:
            over = wall[("ray", w)] / wall[("pool", w)] - 1.0
            print(f"ray overhead vs pool at {w} workers: {100 * over:+.0f}%")
    # A 1,000-cell study on a cluster of N machines of this kind (2 cores: 2 workers each),
    # from the per-cell time at the most workers measured, per executor.
    print()
    w = max(args.workers)
    for executor in args.executors:
        per_cell = wall[(executor, w)] * w / len(study.cells)  # worker-seconds a cell
        line = ", ".join(
            f"{n} machines {1000 * per_cell / (n * w) / 60:.1f} min" for n in (1, 10, 50)
        )
        print(f"1,000 cells like these ({executor}, {per_cell:.1f} worker-s a cell): {line}")


if __name__ == "__main__":
    main()
