"""Acquisition figures of a scenario: hand-eye calibration and object pose estimation.

    PYOPENGL_PLATFORM=egl .venv/bin/python benchmarks/bench_acquisition.py \
        [--scenario r2t-flange-j6] [--seeds 0 1 2]

For each seed it runs the cell's set-up (the checkerboard hand-eye calibration) and, for
every part of the scenario, the physics placement and the pose estimate from one overview
capture, exactly as a run does (``sim.cells.factory.SimCells``). It prints the errors
against the truth (median and 95th percentile over all parts and seeds: translation,
rotation, ADD-S, silhouette IoU; calibration translation and rotation) and the seconds
each step took (calibration per run, estimation per part, placement per part).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from scenarios.engine import plan_parts
from scenarios.spec import load_scenario
from sim.cells.factory import SimCells, build_placement, open_cells


def _stats(values: list[float]) -> str:
    a = np.asarray(values, dtype=np.float64)
    return f"median {np.median(a):8.3f}   p95 {np.percentile(a, 95):8.3f}   max {a.max():8.3f}"


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--scenario", default="r2t-flange-j6")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = ap.parse_args()
    sc = load_scenario(args.scenario)
    if sc.errors.mode != "acquisition" or sc.cell.kind != "eye_in_hand":
        raise SystemExit(f"{args.scenario}: needs an eye-in-hand cell in errors.mode acquisition")
    cal_t, cal_r, cal_s = [], [], []
    est: dict[str, list[float]] = {
        k: [] for k in ("translation_mm", "rotation_deg", "add_s_mm", "add_mm")
    }
    ious, est_s, place_s, families = [], [], [], []
    for seed in args.seeds:
        source: SimCells = open_cells(sc, seed)
        try:
            t = time.perf_counter()
            info = source.setup().info["hand_eye"]
            cal_s.append(time.perf_counter() - t)
            cal_t.append(info["translation_error_mm"])
            cal_r.append(info["rotation_error_deg"])
            print(
                f"seed {seed}: hand-eye {info['translation_error_mm']:.3f} mm "
                f"{info['rotation_error_deg']:.4f} deg from {info['poses']} poses "
                f"({info['rejected']} rejected), {cal_s[-1]:.1f} s",
                flush=True,
            )
            for plan in plan_parts(sc):
                t = time.perf_counter()
                build_placement(sc, seed, plan)  # part build + drop, as inside part()
                place_s.append(time.perf_counter() - t)
                t = time.perf_counter()
                placement, _ = source.part(plan)
                est_s.append(time.perf_counter() - t - place_s[-1])
                pe = placement.info["pose_estimate"]
                for k in est:
                    est[k].append(pe[k])
                ious.append(pe["iou"])
                families.append(placement.part.category)
                print(
                    f"  {plan.part_id} {placement.part.category:<22} "
                    f"t {pe['translation_mm']:7.2f} mm  r {pe['rotation_deg']:7.2f} deg  "
                    f"ADD-S {pe['add_s_mm']:6.2f} mm  ADD {pe['add_mm']:6.2f} mm  "
                    f"IoU {pe['iou']:.3f}  "
                    f"{est_s[-1]:.2f} s",
                    flush=True,
                )
        finally:
            source.close()
    print(f"\n{args.scenario}, seeds {args.seeds}: {len(est_s)} parts, {len(cal_s)} calibrations")
    print(f"hand-eye translation error (mm)   {_stats(cal_t)}")
    print(f"hand-eye rotation error (deg)     {_stats(cal_r)}")
    print(f"calibration time (s per run)      {_stats(cal_s)}")
    for name in sorted(set(families)):
        idx = [i for i, f in enumerate(families) if f == name]
        print(f"-- {name} ({len(idx)} parts)")
        for k, v in est.items():
            print(f"pose {k:<28} {_stats([v[i] for i in idx])}")
        print(f"pose silhouette IoU               {_stats([ious[i] for i in idx])}")
    print(f"estimation time (s per part)      {_stats(est_s)}")
    print(f"placement time (s per part)       {_stats(place_s)}")


if __name__ == "__main__":
    main()
