"""A whole run with the Blender "real" backend, and a render worker killed in the middle.

The worker is SIGKILLed while it renders (its CPU time is rising): that one sample is
recorded as failed with the reason, the worker restarts, and the run completes.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from scenarios.engine import close_worker, run_scenario
from scenarios.report import write_report
from scenarios.rundir import iter_jsonl
from scenarios.spec import load_scenario, parse_scenario

pytestmark = pytest.mark.slow
pytest.importorskip("bpy", reason="bpy (Blender) is not installed; run bash scripts/setup.sh")


def _blender_workers() -> list[int]:
    """Pids of this process's Blender worker children."""
    me, pids = os.getpid(), []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmd = (d / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == me and b"sim.render.blender.worker" in cmd:
            pids.append(int(d.name))
    return pids


def _cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def _kill_while_rendering(killed: list[int], stop: threading.Event, out: Path) -> None:
    """SIGKILL the first Blender worker seen busy after the run wrote its first sample (so
    the worker is past its start-up, whose failure a restart absorbs, and mid-run)."""
    samples = out / "samples"
    while not stop.is_set():
        pids = _blender_workers()
        if pids and samples.is_dir() and any(samples.iterdir()):
            pid = pids[0]
            try:
                a = _cpu_ticks(pid)
                time.sleep(0.03)
                if _cpu_ticks(pid) > a:  # busy: a frame is in flight
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                    return
            except OSError:
                pass
        time.sleep(0.01)


def test_blender_run_survives_a_killed_worker(tmp_path: Path) -> None:
    data = load_scenario("tiny").model_dump(mode="json")
    # Enough samples that a frame takes most of a worker's time between samples.
    data["render"] = {"real": "blender", "twin": "pyrender", "samples": 16}
    sc = parse_scenario(data, "test")
    killed: list[int] = []
    stop = threading.Event()
    out = tmp_path / "run"
    killer = threading.Thread(target=_kill_while_rendering, args=(killed, stop, out), daemon=True)
    killer.start()
    try:
        run_scenario(sc, out, workers=1, progress=False, report=write_report)
    finally:
        stop.set()
        killer.join()
        close_worker()
    assert killed, "the worker was never seen rendering"
    lines = list(iter_jsonl(out / "samples.jsonl"))
    failed = [r for r in lines if r.get("status") == "failed"]
    assert len(failed) == 1
    assert "blender worker" in failed[0]["reason"]
    assert len(lines) - len(failed) >= 3  # the others were captured, after a restart too
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["failed_samples"]["count"] == 1
    assert "failed samples (render)**: 1" in (out / "report.md").read_text()
    assert not _blender_workers()  # closed with the run's worker


def test_blender_runs_match_with_one_or_two_workers_and_leave_no_worker(tmp_path: Path) -> None:
    """Two pool workers share the cores (one Cycles thread each) and write the same bytes as
    one worker with two threads; no Blender process outlives the run."""
    data = load_scenario("tiny").model_dump(mode="json")
    data["render"] = {"real": "blender", "twin": "pyrender", "samples": 2}
    # A resolved scenario lists its parts as part.families: the counts are the family's.
    data["part"]["families"][0].update(train_normal=1, test_normal=1, test_defective=1)
    sc = parse_scenario(data, "test")
    before = _all_blender_workers()
    runs = {}
    for workers in (1, 2):
        out = tmp_path / f"w{workers}"
        run_scenario(sc, out, workers=workers, progress=False)
        runs[workers] = out
    close_worker()
    ids = [r["id"] for r in iter_jsonl(runs[1] / "samples.jsonl")]
    assert ids and ids == [r["id"] for r in iter_jsonl(runs[2] / "samples.jsonl")]
    for sid in ids:
        one = (runs[1] / "samples" / sid / "real.png").read_bytes()
        assert one == (runs[2] / "samples" / sid / "real.png").read_bytes(), sid
    time.sleep(0.5)  # pool workers' render workers go with them
    assert not _all_blender_workers() - before


def _all_blender_workers() -> set[int]:
    """Pids of every Blender worker process on the machine (an orphan has init as parent,
    so it is found by its command line, not by its ancestry)."""
    pids = set()
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                cmd = (d / "cmdline").read_bytes()
            except OSError:
                continue
            if b"sim.render.blender.worker" in cmd:
                pids.add(int(d.name))
    return pids
