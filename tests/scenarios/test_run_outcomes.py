"""How runs end: unscorable runs (exit 3), Ctrl-C and SIGKILL mid-run, and the resume after.

The interrupt tests drive the installed command in its own process group, as a terminal
does: Ctrl-C is SIGINT to every process of the group (the main process and its workers).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from scenarios.cli import main
from scenarios.interfaces import EXIT_INTERRUPTED, EXIT_UNSCORED
from scenarios.rundir import TEMP_PREFIX

pytestmark = pytest.mark.slow

TINY_BASE = """\
cell:
  camera: {width: 64, height: 64, hfov_deg: 32}
errors:
  mode: model
  robot: {translation_mm: 0.2, rotation_deg: 0.05}
detectors: [rgb_residual]
"""


def _scenario(tmp_path: Path, name: str, extra: str) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"name: {name}\n{TINY_BASE}{extra}")
    return path


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        (
            "viewpoints: {subdivisions: 0}\nsplit: {train_normal: 1, test_normal: 1, "
            "test_defective: 0}\n",
            "the test split has no anomalous pair",
        ),
        (
            "viewpoints: {subdivisions: 0}\nsplit: {train_normal: 1, test_normal: 0, "
            "test_defective: 0}\n",
            "no test pair was captured",
        ),
        (
            "viewpoints: {subdivisions: 0}\npart: {placement: {position_m: [1.8, 1.8]}}\n"
            "split: {train_normal: 1, test_normal: 1, test_defective: 1}\n",
            "no test pair was captured",
        ),
    ],
    ids=["no-anomalous-pair", "no-test-part", "out-of-reach"],
)
def test_unscorable_run_exits_3_and_its_report_says_why(
    extra: str,
    reason: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "run"
    assert main(["run", str(_scenario(tmp_path, "unscored", extra)), "--out", str(out), "-q"]) == (
        EXIT_UNSCORED
    )
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if x.startswith("twincell: run complete but not scored")]
    assert len(lines) == 1 and reason in lines[0], err
    assert "Traceback" not in err
    m = json.loads((out / "manifest.json").read_text())
    assert m["status"] == "unscored" and reason in m["unscored_reason"]
    metrics = json.loads((out / "metrics.json").read_text())["detectors"]
    assert metrics["rgb_residual"]["i_auroc"] is None
    for page in ("report.md", "report.html"):
        text = (out / page).read_text()
        assert "Not scored" in text and reason in text


def test_a_failed_acquisition_fails_its_part_not_the_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An overview pose out of the arm's reach: the calibration runs, every part's pose
    estimate fails, its samples are recorded as failed with the reason, and the run ends
    unscored with one line, no traceback."""
    path = tmp_path / "acq.yaml"
    path.write_text(
        "name: acq-fail\n"
        "cell:\n"
        "  camera: {width: 160, height: 160, hfov_deg: 40}\n"
        "  calibration: {poses: 8}\n"
        "  pose_estimation: {overview_distance_m: 1.0, overview_elevation_deg: 90}\n"
        "viewpoints: {subdivisions: 0}\n"
        "split: {train_normal: 1, test_normal: 1, test_defective: 0}\n"
        "detectors: [rgb_residual]\n"
    )
    out = tmp_path / "run"
    assert main(["run", str(path), "--out", str(out), "-q"]) == EXIT_UNSCORED
    err = capsys.readouterr().err
    assert "Traceback" not in err
    m = json.loads((out / "manifest.json").read_text())
    assert m["cell"]["hand_eye"]["poses"] >= 4  # the calibration itself worked
    failed = m["failed_samples"]["items"]
    assert failed and all("no overview pose reachable" in f["reason"] for f in failed)
    assert "no overview pose reachable" in (out / "report.md").read_text()


def test_a_stop_that_surfaces_as_another_exception_still_ends_the_run_as_interrupted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A signal that lands inside a ctypes call (PyOpenGL, mid-render) reaches Python as a
    ``ctypes.ArgumentError`` wrapping the KeyboardInterrupt, not as the interrupt itself.
    The handler's flag says what it was: exit 130, manifest "interrupted", samples kept."""
    import ctypes

    from scenarios.cli import _stop
    from sim.cells.eye_in_hand import EyeInHandCell

    real_capture = EyeInHandCell.capture_pair
    calls = {"n": 0}

    def capture(self: EyeInHandCell):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 4:
            try:
                _stop(signal.SIGTERM, None)
            except KeyboardInterrupt as exc:
                raise ctypes.ArgumentError(f"argument 2: KeyboardInterrupt: {exc}") from None
        return real_capture(self)

    monkeypatch.setattr(EyeInHandCell, "capture_pair", capture)
    spec = _scenario(tmp_path, "wrapped", INTERRUPTED)
    out = tmp_path / "run"
    assert main(["run", str(spec), "--out", str(out), "-q", "--workers", "1"]) == EXIT_INTERRUPTED
    err = capsys.readouterr().err
    assert "interrupted; rerun the same command to resume" in err and "Traceback" not in err
    m = json.loads((out / "manifest.json").read_text())
    assert m["status"] == "interrupted"
    assert "error" not in m
    from scenarios.interfaces import STOP

    assert not STOP.is_set()  # the flag lives for one CLI call: nothing stale after it

    monkeypatch.setattr(EyeInHandCell, "capture_pair", real_capture)
    assert main(["run", str(spec), "--out", str(out), "-q", "--workers", "1"]) == 0
    assert json.loads((out / "manifest.json").read_text())["status"] == "complete"


def test_the_cli_reads_a_stop_that_surfaced_outside_a_run_as_an_interrupt(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same wrapped interrupt where no run catches it (before the run starts, in a
    command's own code): exit 130 with the one line, not a traceback; and an ordinary error
    with no stop asked for is still an error."""
    import ctypes

    from scenarios import engine
    from scenarios.cli import _stop

    def stopped(*args: object, **kwargs: object) -> None:
        try:
            _stop(signal.SIGINT, None)
        except KeyboardInterrupt:
            raise ctypes.ArgumentError("argument 2: KeyboardInterrupt: ") from None

    monkeypatch.setattr(engine, "run_scenario", stopped)
    spec = _scenario(tmp_path, "wrapped", INTERRUPTED)
    assert main(["run", str(spec), "--out", str(tmp_path / "run"), "-q"]) == EXIT_INTERRUPTED
    assert "interrupted" in capsys.readouterr().err

    def broken(*args: object, **kwargs: object) -> None:
        raise ctypes.ArgumentError("a real bug")

    monkeypatch.setattr(engine, "run_scenario", broken)
    with pytest.raises(ctypes.ArgumentError, match="a real bug"):
        main(["run", str(spec), "--out", str(tmp_path / "run2"), "-q"])


def _wait_for_samples(out: Path, n: int, proc: subprocess.Popen[bytes], limit_s: float) -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit_s:
        done = [p for p in (out / "samples").glob("part*")] if (out / "samples").is_dir() else []
        if len(done) >= n:
            return
        if proc.poll() is not None:
            pytest.fail(f"run ended early: {proc.returncode}")
        time.sleep(0.05)
    pytest.fail("no samples appeared")


def _group_commands(pgid: int) -> list[str]:
    """Command lines of the live (not zombie) processes of process group ``pgid``."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmd = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            found.append(cmd)
    return found


def _listing(out: Path) -> dict[str, int]:
    return {str(p.relative_to(out)): p.stat().st_mtime_ns for p in out.rglob("*")}


INTERRUPTED = (
    "viewpoints: {subdivisions: 1}\nsplit: {train_normal: 3, test_normal: 3, test_defective: 3}\n"
)


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize(
    "sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL], ids=["ctrl-c", "term", "kill-9"]
)
def test_interrupted_run_stops_keeps_samples_and_resumes(
    workers: int, sig: signal.Signals, tmp_path: Path
) -> None:
    spec = _scenario(tmp_path, "interrupted", INTERRUPTED)
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "scenarios.cli", "run", str(spec), "--out", str(out), "-q"]
    cmd += ["--workers", str(workers)]
    env = {**os.environ, "PYOPENGL_PLATFORM": "egl"}
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, start_new_session=True)
    _wait_for_samples(out, 3, proc, limit_s=120)
    if sig == signal.SIGTERM:  # `kill PID`, `timeout`, a cancelled CI job: the main process only
        os.kill(proc.pid, sig)
    else:  # Ctrl-C in a terminal, or kill -9 of the whole group
        os.killpg(proc.pid, sig)
    t0 = time.monotonic()
    _, err = proc.communicate(timeout=30)
    stopped_s = time.monotonic() - t0
    if sig != signal.SIGKILL:
        # It used to take 77 s with two workers; the goal is 2 s, the bound leaves CI slack.
        assert stopped_s < 10, stopped_s
        assert proc.returncode == EXIT_INTERRUPTED, err.decode()
        assert err.decode().strip().splitlines() == [
            "twincell: interrupted; rerun the same command to resume"
        ]
        assert json.loads((out / "manifest.json").read_text())["status"] == "interrupted"
    else:
        assert proc.returncode == -signal.SIGKILL
    # The pool is gone with the command: no worker lives on to write more samples.
    assert not [c for c in _group_commands(proc.pid) if "spawn_main" in c]
    kept = _listing(out)
    assert kept == _listing(out)
    finished = {p.name for p in (out / "samples").glob("part*")}
    assert finished

    assert main(["run", str(spec), "--out", str(out), "-q"]) == 0
    assert json.loads((out / "manifest.json").read_text())["status"] == "complete"
    assert not list(out.rglob(f"{TEMP_PREFIX}*"))
    after = _listing(out)
    for name in finished:  # finished samples were kept, not redone
        key = f"samples/{name}/real.png"
        assert after[key] == kept[key]
