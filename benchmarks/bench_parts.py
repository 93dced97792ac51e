"""Print milliseconds to build a part instance with defects, per family, and the median
visible defect area in pixels per family x defect kind at the quickstart's camera.

Usage:
  .venv/bin/python benchmarks/bench_parts.py build [--n 20]
  .venv/bin/python benchmarks/bench_parts.py area [--n 3] [--family F] [--markdown]

``build`` times ``sim.cells.factory.build_part`` (seeded design within half the card's range,
as-built tolerance, two defect kinds drawn from those the family can carry, the booleans
and the missing-material split): what a worker does once per part. Goal: under 200 ms, so
building never dominates a capture.

``area`` builds ``--n`` defective parts per (family, kind) and captures every planned
viewpoint of the quickstart scenario (256 x 256 px, 32 deg, 0.2 m), camera placed directly
(no robot); it prints the median ground-truth pixels over the views where the defect is
visible, and in how many views it is.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from scenarios.engine import plan_parts
from scenarios.interfaces import GeometryError
from scenarios.spec import load_scenario, parse_scenario
from sim.cells.factory import RendererPool, SimCells, build_part
from sim.defects import DEFECT_KINDS, check_applicable
from sim.parts import PART_FAMILIES


def _kinds_for(family: str) -> list[str]:
    comps = [c.name for c in PART_FAMILIES[family].card.components]
    out = []
    for k in DEFECT_KINDS:
        try:
            check_applicable(k, comps)
        except Exception:
            continue
        out.append(k)
    return out


def _scenario(family: str, kinds: list[str], per_part: int, n: int, seed: int = 0):  # noqa: ANN202
    base = load_scenario("quickstart").model_dump(mode="json")
    base.pop("split", None)
    base["seed"] = seed
    base["part"] = {
        "placement": base["part"]["placement"],
        "families": [{"family": family, "variation": 0.5, "kinds": kinds, "test_defective": n}],
    }
    base["defects"]["per_part"] = per_part
    return parse_scenario(base)


def bench_build(n: int) -> None:
    print(f"{'family':<22} {'median ms':>10} {'p95 ms':>8} {'failed':>7}   (n={n}, 2 kinds each)")
    for family in PART_FAMILIES:
        sc = _scenario(family, _kinds_for(family), 2, n)
        plans = plan_parts(sc)
        times, failed = [], 0
        build_part(sc, 0, plans[0])  # warm-up (imports, caches)
        for plan in plans:
            t = time.perf_counter()
            try:
                build_part(sc, 1, plan)
            except GeometryError:
                failed += 1
                continue
            times.append((time.perf_counter() - t) * 1e3)
        p95 = float(np.percentile(times, 95)) if times else float("nan")
        med = statistics.median(times) if times else float("nan")
        print(f"{family:<22} {med:>10.1f} {p95:>8.1f} {failed:>7}")


def bench_area(n: int, families: list[str], markdown: bool) -> None:
    worker = RendererPool()
    kinds = list(DEFECT_KINDS)
    rows: dict[str, dict[str, str]] = {}
    try:
        for family in families:
            rows[family] = {}
            for kind in kinds:
                if kind not in _kinds_for(family):
                    rows[family][kind] = "n/a"
                    continue
                sc = _scenario(family, [kind], 1, n)
                px: list[int] = []
                seen = total = 0
                for plan in plan_parts(sc):
                    cells = SimCells(sc, sc.seed, worker)
                    try:
                        cell = cells.cell(plan, 0, 0.0)
                    except GeometryError:
                        cells.close()
                        continue
                    for T in cell.plan_viewpoints().values():
                        cell.place_camera(cell.placement.T_base_obj_twin @ T)
                        cap = cell.capture_pair()
                        total += 1
                        v = int(cap.defect_px[0])
                        if v > 0:
                            seen += 1
                            px.append(v)
                    cells.close()
                med = f"{statistics.median(px):.0f}" if px else "0"
                rows[family][kind] = f"{med} ({seen}/{total})"
                print(
                    f"{family:<20} {kind:<20} median {med:>6} px, visible in {seen}/{total} views",
                    flush=True,
                )
    finally:
        worker.close()
    if markdown:
        print("\n| family | " + " | ".join(kinds) + " |")
        print("|---|" + "---|" * len(kinds))
        for family, r in rows.items():
            print(f"| {family} | " + " | ".join(r[k] for k in kinds) + " |")


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("what", choices=("build", "area"))
    ap.add_argument(
        "--n", type=int, default=None, help="parts per family (build) or per cell (area)"
    )
    ap.add_argument("--family", action="append", help="only these families (area)")
    ap.add_argument("--markdown", action="store_true", help="also print a Markdown table (area)")
    args = ap.parse_args()
    if args.what == "build":
        bench_build(args.n or 20)
    else:
        bench_area(args.n or 3, args.family or list(PART_FAMILIES), args.markdown)


if __name__ == "__main__":
    main()
