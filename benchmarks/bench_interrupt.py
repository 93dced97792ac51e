"""Print how fast ``twincell run`` stops on Ctrl-C, and what it writes after the interrupt.

Usage: PYOPENGL_PLATFORM=egl .venv/bin/python benchmarks/bench_interrupt.py [--workers 1 2 4]

For each worker count, a run of a 108-pair scenario (64 x 64 images) is started in its own
process group, as a terminal starts it; once ``--after`` samples are on disk the whole group
gets SIGINT, as Ctrl-C sends it. Printed per worker count: seconds from the signal to the
command's exit, its exit code, sample directories written after the signal, and whether any
pool worker outlived the command. Goal (the issue): stop within 2 s, write nothing after.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SCENARIO = """\
name: interrupt-bench
cell:
  camera: {width: 64, height: 64, hfov_deg: 32}
viewpoints: {subdivisions: 1}
split: {train_normal: 3, test_normal: 3, test_defective: 3}
detectors: [rgb_residual]
"""


def _samples(out: Path) -> set[str]:
    d = out / "samples"
    return {p.name for p in d.iterdir() if p.name.startswith("part")} if d.is_dir() else set()


def _workers_alive(pgid: int) -> int:
    n = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmd = (stat.parent / "cmdline").read_bytes()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z" and b"spawn_main" in cmd:
            n += 1
    return n


def measure(workers: int, after: int, work: Path) -> str:
    """One interrupted run; returns its table row."""
    spec = work / "s.yaml"
    spec.write_text(SCENARIO)
    out = work / f"run-w{workers}"
    cmd = [sys.executable, "-m", "scenarios.cli", "run", str(spec), "--out", str(out), "-q"]
    cmd += ["--workers", str(workers)]
    env = {**os.environ, "PYOPENGL_PLATFORM": "egl"}
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, start_new_session=True)
    while len(_samples(out)) < after:
        if proc.poll() is not None:
            raise SystemExit(f"run ended before the interrupt: {proc.stderr.read().decode()}")
        time.sleep(0.02)
    at_signal = _samples(out)
    t0 = time.monotonic()
    os.killpg(proc.pid, signal.SIGINT)
    proc.communicate(timeout=120)
    stop_s = time.monotonic() - t0
    time.sleep(1.0)
    later = _samples(out) - at_signal
    alive = _workers_alive(proc.pid)
    return f"{workers:>7} {stop_s:>8.2f} {proc.returncode:>5} {len(later):>13} {alive:>13}"


def main() -> None:
    """Run the measurements and print the table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--after", type=int, default=6, help="samples on disk before the signal")
    args = ap.parse_args()
    print(f"{'workers':>7} {'stop s':>8} {'exit':>5} {'written after':>13} {'workers alive':>13}")
    with tempfile.TemporaryDirectory() as tmp:
        for w in args.workers:
            print(measure(w, args.after, Path(tmp)), flush=True)
    print("goal: stop s < 2, exit 130, nothing written after the signal, no worker alive")


if __name__ == "__main__":
    main()
