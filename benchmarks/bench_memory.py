"""Print the peak memory (RSS) of a full ``twincell run`` by number of render pairs and workers.

Usage: PYOPENGL_PLATFORM=egl .venv/bin/python benchmarks/bench_memory.py --pairs 500 --workers 1
(defaults: ``--pairs 500 5000 --workers 1 2``; ``--keep`` keeps the run directories).

For each target number of pairs the script writes a scenario YAML derived from the bundled
quickstart (same cell, 256x256 camera, appearance, errors and detectors) whose part counts give
about that many planned pairs (parts x viewpoints, within 10 %, in the quickstart's
train : test-normal : test-defective proportions), then runs ``twincell run <yaml> --out <dir>
--workers W -q`` as a subprocess for each worker count. While it runs, every 0.2 s it reads
VmRSS from /proc/<pid>/status for the main process and all its descendants (simulation workers,
multiprocessing's resource tracker), found through /proc/<pid>/task/*/children or, where the
kernel lacks that file, by following parent ids in /proc/*/stat. It records the peak of the
main process alone and the peak of the sum over the tree (the sum counts pages shared between
processes once per process, including the copy-on-write pages of a short-lived fork, so it
over-states the tree's footprint; sampling may miss spikes shorter than 0.2 s). The goal is
judged on that sum. Next to it: the peak of the tree's summed PSS (/proc/<pid>/smaps_rollup,
shared pages split among their users: the de-duplicated footprint), and ``os.wait4``'s
ru_maxrss as a cross-check, the exact peak of the largest single process among the main one and
its reaped children.

Captured pairs are fewer than planned ones where viewpoints are unreachable: captured counts
and dropped viewpoints are read from the run's manifest.json, with its per-phase timings.
Columns: procs = most live processes seen at once in the tree; main MB / tree MB = peak VmRSS
of the main process / of the tree's sum; PSS MB = peak summed PSS; maxrss MB = ru_maxrss.

The goal it checks: peak tree RSS under 1.5 GB in every configuration, and not growing with the
number of pairs (peak at the largest target at most 10 % above the smallest, per worker count).
Exit status 1 when a run fails (its stderr tail is printed), 0 otherwise; whether the goal held
is printed, not encoded in the exit status.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from scenarios.engine import planned_view_ids, sample_table
from scenarios.interfaces import TwincellError
from scenarios.spec import bundled_scenarios, parse_scenario

GOAL_MB = 1500.0  # peak RSS limit per configuration (1 MB = 10**6 bytes)
GROWTH_TOLERANCE = 0.10  # allowed rise of peak RSS from the smallest to the largest target
POLL_S = 0.2
# Icosphere levels tried, most views per part first (level 2: 50 views, level 1: 12). Level 3
# (208 views) is left out so that 500 and 5,000 pairs both use level 2 and differ only in the
# number of parts: the growth check then compares runs with the same per-part task size.
SUBDIVISION_CHOICES = (2, 1)
MIN_PARTS = 7  # the quickstart's part count: keeps its split proportions meaningful


@dataclass
class Plan:
    """A derived scenario: its YAML file, the target and the planned pair count."""

    target: int
    path: Path
    subdivisions: int
    views: int
    split: dict[str, int]
    planned: int


@dataclass
class Result:
    """One measured run: memory peaks, wall time and what the manifest says."""

    plan: Plan
    workers: int
    wall_s: float
    peak_main_kb: int
    peak_tree_kb: int
    peak_tree_pss_kb: int
    max_procs: int
    ru_maxrss_kb: int
    manifest: dict[str, Any] = field(default_factory=dict)


def _mb(kib: int) -> float:
    """KiB (as /proc and ru_maxrss report them on Linux) to MB."""
    return kib * 1024 / 1e6


def _proportional_split(base: dict[str, int], n_parts: int) -> dict[str, int]:
    """Split ``n_parts`` in the proportions of ``base`` (largest remainder, at least 1 each)."""
    keys = list(base)
    total = sum(base.values())
    exact = {k: n_parts * base[k] / total for k in keys}
    split = {k: max(1, int(exact[k])) for k in keys}
    while sum(split.values()) < n_parts:
        k = max(keys, key=lambda k: exact[k] - split[k])
        split[k] += 1
    while sum(split.values()) > n_parts:
        k = max((k for k in keys if split[k] > 1), key=lambda k: split[k] - exact[k])
        split[k] -= 1
    return split


def make_plan(target: int, work: Path, subdivisions: int | None) -> Plan:
    """Write a quickstart-derived scenario YAML with about ``target`` planned pairs."""
    base = yaml.safe_load(bundled_scenarios()["quickstart"].read_text())
    base_split = {
        k: int(base["split"][k]) for k in ("train_normal", "test_normal", "test_defective")
    }
    choices = (subdivisions,) if subdivisions is not None else SUBDIVISION_CHOICES
    candidates: list[tuple[bool, float, int, dict[str, Any], int, int, dict[str, int]]] = []
    for level in choices:
        data = json.loads(json.dumps(base))  # deep copy
        data["name"] = f"bench-memory-{target}"
        data["description"] = f"quickstart with about {target} planned pairs (bench_memory.py)"
        data["viewpoints"]["subdivisions"] = level
        views = len(planned_view_ids(parse_scenario(data, f"bench-memory-{target}")))
        n_parts = max(len(base_split), round(target / views))
        split = _proportional_split(base_split, n_parts)
        data["split"] = split
        planned = len(sample_table(parse_scenario(data, f"bench-memory-{target}")))
        err = abs(planned - target) / target
        # Prefer: within 10 % and at least the quickstart's part count, then most views.
        good = err <= 0.10 and n_parts >= MIN_PARTS
        candidates.append((good, err, level, data, views, planned, split))
        if good:
            break
    good, err, level, data, views, planned, split = min(candidates, key=lambda c: (not c[0], c[1]))
    if err > 0.10:
        print(
            f"note: target {target}: closest plan has {planned} pairs ({100 * err:.0f} % off)",
            file=sys.stderr,
        )
    path = work / f"bench-memory-{target}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False, default_flow_style=None))
    return Plan(target, path, level, views, split, planned)


def _children_via_task(pid: int) -> list[int]:
    """Children of ``pid`` from /proc/<pid>/task/*/children (needs CONFIG_PROC_CHILDREN)."""
    kids: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        kids += [int(c) for c in (task / "children").read_text().split()]
    return kids


def _parent_map() -> dict[int, list[int]]:
    """Parent pid -> child pids for every process, from the ppid field of /proc/*/stat."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        # The command name (field 2) may hold spaces or parentheses: split after the last ')'.
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    return children


_HAS_CHILDREN_FILE = Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children").exists()


def tree_pids(root: int) -> list[int]:
    """``root`` and all its live descendants."""
    pmap = None if _HAS_CHILDREN_FILE else _parent_map()
    pids, todo = [], [root]
    while todo:
        pid = todo.pop()
        pids.append(pid)
        if pmap is not None:
            todo += pmap.get(pid, [])
        else:
            try:
                todo += _children_via_task(pid)
            except OSError:
                pass  # exited meanwhile
    return pids


def _proc_field_kb(path: str, key: str) -> int:
    """The ``key:`` line of a /proc file in KiB; 0 for a process that is gone or a zombie."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def rss_kb(pid: int) -> int:
    """VmRSS of ``pid`` in KiB (0 when gone)."""
    return _proc_field_kb(f"/proc/{pid}/status", "VmRSS:")


def pss_kb(pid: int) -> int:
    """Proportional set size of ``pid`` in KiB: shared pages split among their users."""
    return _proc_field_kb(f"/proc/{pid}/smaps_rollup", "Pss:")


def _tail(path: Path, lines: int = 40, width: int = 400) -> str:
    """The last ``lines`` lines of a text file, each cut to ``width`` characters."""
    tail = path.read_text(errors="replace").splitlines()[-lines:]
    return "\n".join(t if len(t) <= width else t[:width] + " ..." for t in tail)


def measure(plan: Plan, workers: int, work: Path) -> Result:
    """Run one ``twincell run`` and sample its process tree's RSS until it exits."""
    out = work / f"run-p{plan.target}-w{workers}"
    if out.exists():
        shutil.rmtree(out)  # a leftover run dir would resume instead of running afresh
    twincell = Path(sys.executable).with_name("twincell")
    cmd = [str(twincell)] if twincell.is_file() else [sys.executable, "-m", "scenarios.cli"]
    cmd += ["run", str(plan.path), "--out", str(out), "--workers", str(workers), "-q"]
    env = {**os.environ, "PYOPENGL_PLATFORM": "egl"}
    log_out, log_err = out.with_suffix(".stdout"), out.with_suffix(".stderr")
    peak_main = peak_tree = peak_pss = max_procs = 0
    with open(log_out, "w") as fo, open(log_err, "w") as fe:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=fo, stderr=fe, env=env)
        try:
            while True:
                pids = tree_pids(proc.pid)
                sizes = [rss_kb(p) for p in pids]
                peak_main = max(peak_main, sizes[0])
                peak_tree = max(peak_tree, sum(sizes))
                peak_pss = max(peak_pss, sum(pss_kb(p) for p in pids))
                max_procs = max(max_procs, sum(1 for s in sizes if s))
                done, status, rusage = os.wait4(proc.pid, os.WNOHANG)
                if done:
                    break
                time.sleep(POLL_S)
        except KeyboardInterrupt:
            proc.wait()  # the child got the same SIGINT from the terminal
            raise
        wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped by wait4, not by Popen
    if proc.returncode != 0:
        print(
            f"\nFAILED: {' '.join(cmd)} exited with {proc.returncode}\n"
            f"--- stderr (tail) ---\n{_tail(log_err)}\n--- stdout (tail) ---\n{_tail(log_out)}",
            file=sys.stderr,
        )
        sys.exit(1)
    manifest = json.loads((out / "manifest.json").read_text())
    return Result(
        plan, workers, wall, peak_main, peak_tree, peak_pss, max_procs, rusage.ru_maxrss, manifest
    )


HEADER = (
    f"{'target':>6} {'planned':>7} {'captured':>8} {'dropped':>7} {'workers':>7} {'procs':>5} "
    f"{'wall s':>7} {'main MB':>8} {'tree MB':>8} {'PSS MB':>7} {'maxrss MB':>9}  "
    "timings s (manifest)"
)


def row(r: Result) -> str:
    """One table row for a measured run."""
    m = r.manifest
    c = m.get("counts", {})
    captured = c.get("train", 0) + c.get("test_normal", 0) + c.get("test_anomalous", 0)
    dropped = m.get("dropped_viewpoints", {}).get("count", "?")
    timings = []
    for k, v in m.get("timings_s", {}).items():
        if not isinstance(v, dict):  # the phases; "detectors" breaks "detect" down
            timings.append(f"{k} {v:.1f}")
    return (
        f"{r.plan.target:>6} {r.plan.planned:>7} {captured:>8} {dropped:>7} {r.workers:>7} "
        f"{r.max_procs:>5} {r.wall_s:>7.1f} {_mb(r.peak_main_kb):>8.0f} "
        f"{_mb(r.peak_tree_kb):>8.0f} {_mb(r.peak_tree_pss_kb):>7.0f} {_mb(r.ru_maxrss_kb):>9.0f}  "
        + ", ".join(timings)
    )


def verdict(results: list[Result]) -> tuple[bool | None, list[str]]:
    """Whether the goal held (None: growth not judged), with one line per check."""
    lines = []
    worst = max(results, key=lambda r: r.peak_tree_kb)
    under = _mb(worst.peak_tree_kb) < GOAL_MB
    lines.append(
        f"peak tree RSS < {GOAL_MB:.0f} MB in every configuration: {'yes' if under else 'NO'} "
        f"(highest {_mb(worst.peak_tree_kb):.0f} MB at {worst.plan.planned} planned pairs, "
        f"{worst.workers} worker(s))"
    )
    flat: bool | None = None
    for w in sorted({r.workers for r in results}):
        rs = sorted((r for r in results if r.workers == w), key=lambda r: r.plan.planned)
        if len(rs) < 2:
            lines.append(f"growth with pairs, {w} worker(s): not judged (one pair count only)")
            continue
        lo, hi = rs[0], rs[-1]
        growth = hi.peak_tree_kb / lo.peak_tree_kb - 1
        ok = growth <= GROWTH_TOLERANCE
        flat = ok if flat is None else flat and ok
        lines.append(
            f"growth with pairs, {w} worker(s): {100 * growth:+.1f} % from {lo.plan.planned} to "
            f"{hi.plan.planned} planned pairs (limit +{100 * GROWTH_TOLERANCE:.0f} %): "
            f"{'ok' if ok else 'GROWS'}"
        )
    held = None if flat is None and under else under and (flat is not False)
    return held, lines


def main() -> None:
    """Parse arguments, run every (pairs, workers) configuration and print the table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, nargs="+", default=[500, 5000], help="target pairs")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts")
    ap.add_argument("--subdivisions", type=int, help="force the icosphere level (default: auto)")
    ap.add_argument("--dir", type=Path, help="parent of the work directory (default: temp)")
    ap.add_argument("--keep", action="store_true", help="keep the scenario files and run dirs")
    args = ap.parse_args()
    if any(p < 1 for p in args.pairs) or any(w < 1 for w in args.workers):
        ap.error("--pairs and --workers must be >= 1")
    if args.dir is not None:
        args.dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bench_memory-", dir=args.dir))
    try:
        try:
            plans = [make_plan(t, work, args.subdivisions) for t in args.pairs]
        except TwincellError as exc:
            print(f"cannot derive a scenario from the quickstart: {exc}", file=sys.stderr)
            sys.exit(1)
        for p in plans:
            s = p.split
            print(
                f"target {p.target}: {p.planned} planned pairs = {sum(s.values())} parts "
                f"(train {s['train_normal']}, test normal {s['test_normal']}, defective "
                f"{s['test_defective']}) x {p.views} views (subdivisions {p.subdivisions})"
            )
        print(f"polling every {POLL_S} s; MB = 10^6 bytes; work dir {work}\n")
        print(HEADER, flush=True)
        results = []
        for p in plans:
            for w in args.workers:
                r = measure(p, w, work)
                results.append(r)
                print(row(r), flush=True)
                if not args.keep:
                    shutil.rmtree(work / f"run-p{p.target}-w{w}", ignore_errors=True)
        held, lines = verdict(results)
        print()
        for line in lines:
            print(line)
        goal = (
            f"peak RSS < {GOAL_MB / 1000:.1f} GB for every configuration and not growing with "
            "the number of pairs"
        )
        state = {
            True: "HELD",
            False: "NOT HELD",
            None: "HELD for the size limit; growth not judged",
        }
        print(f"goal ({goal}): {state[held]}")
    finally:
        if args.keep:
            print(f"kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
