"""Print the figures of the hardware swap and of replay: sim vs hardware-cell samples, and a
run vs its replay (metrics and wall time).

Usage:
    PYOPENGL_PLATFORM=egl OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_hardware.py \\
        [--scenario quickstart] [--out /tmp/bench-hardware]

1. Runs ``--scenario`` (an eye-in-hand scenario) and the same scenario as a hardware cell
   with the sim drivers (``cell.kind: hardware``; a workspace box that holds every view),
   and counts the sample directories whose files are identical (SHA-256 of every file).
2. Replays the first run (``cell.kind: replay``) and compares ``metrics.json`` (detectors,
   part decisions, per-view metrics) and the wall time.
Each run goes to a fresh directory under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path
from typing import Any

from scenarios import engine
from scenarios.rundir import sample_records
from scenarios.spec import load_scenario, parse_scenario


def timed_run(sc: Any, out: Path) -> float:
    """Seconds of one whole run (no report) into a fresh ``out``."""
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    engine.run_scenario(sc, out, progress=False)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenario", default="quickstart")
    ap.add_argument("--out", default="/tmp/bench-hardware")
    args = ap.parse_args()
    root = Path(args.out)
    sim = load_scenario(args.scenario)
    data = sim.model_dump(mode="json", exclude_none=True)
    data["cell"].update(
        kind="hardware",
        hardware={
            "robot": {"driver": "sim"},
            "camera": {"driver": "sim"},
            "safety": {
                "workspace_min_m": [-2, -2, -2],
                "workspace_max_m": [2, 2, 2],
                "max_speed_m_s": 0.25,
            },
        },
    )
    hw = parse_scenario(data)
    t_sim = timed_run(sim, root / "sim")
    t_hw = timed_run(hw, root / "hw")
    a = {r["id"]: r["sha256"] for r in sample_records(root / "sim" / "samples.jsonl")}
    b = {r["id"]: r["sha256"] for r in sample_records(root / "hw" / "samples.jsonl")}
    same = sum(1 for k in a if a[k] == b.get(k))
    print(
        f"{args.scenario}: simulated cell {t_sim:.1f} s, hardware cell (sim drivers) {t_hw:.1f} s"
    )
    print(f"  identical sample directories: {same} of {len(a)} (hardware run: {len(b)})")

    replay = parse_scenario(
        {
            "name": f"{sim.name}-replay",
            "cell": {"kind": "replay", "replay": {"run": str(root / "sim")}},
            "detectors": [d.model_dump(mode="json") for d in sim.detectors],
            "decisions": sim.decisions.model_dump(mode="json"),
        }
    )
    t_rep = timed_run(replay, root / "replay")
    ma = json.loads((root / "sim" / "metrics.json").read_text())
    mb = json.loads((root / "replay" / "metrics.json").read_text())
    keys = ("detectors", "parts", "views", "families")
    print(f"replay of the run: {t_rep:.1f} s (the run: {t_sim:.1f} s)")
    for k in keys:
        print(f"  metrics.json {k}: {'identical' if ma.get(k) == mb.get(k) else 'DIFFERENT'}")


if __name__ == "__main__":
    main()
