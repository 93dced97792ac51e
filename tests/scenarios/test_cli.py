"""Behaviour tests of the ``twincell`` command line on bad input (no simulation is run).

Every case here must fail before anything is simulated; ``simulate`` is replaced by a function
that fails the test, so a regression in the checks cannot silently start a real run.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import scenarios.engine
from scenarios.cli import main
from scenarios.spec import bundled_scenarios


@pytest.fixture(autouse=True)
def _no_simulation(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Fail loudly if a test gets as far as simulating; run in a scratch working directory."""

    def _boom(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a CLI error test reached the simulator")

    monkeypatch.setattr(scenarios.engine, "simulate", _boom)
    monkeypatch.chdir(tmp_path)


def _error_line(capsys: pytest.CaptureFixture[str]) -> str:
    """The single stderr line of a failed command (nothing on stdout)."""
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("twincell: error: "), err
    return lines[0]


def _snapshot(root: Path) -> dict[str, bytes | None]:
    """Every path under ``root`` with its bytes (None for directories)."""
    return {
        str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None)
        for p in sorted(root.rglob("*"))
    }


@pytest.fixture
def bad_yaml(tmp_path: Path) -> Path:
    path = tmp_path / "bad.yaml"
    path.write_text("name: bad\nviewpoints: {radius_m: 0.2, subdivisions: 9}\n")
    return path


# ----------------------------------------------------------------------------------------------
# twincell list
# ----------------------------------------------------------------------------------------------


def test_list_prints_one_line_per_bundled_scenario(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list"]) == 0
    out, err = capsys.readouterr()
    lines = out.strip().splitlines()
    names = list(bundled_scenarios())
    assert {"quickstart", "tiny"} <= set(names)
    assert len(lines) == len(names)
    for name, line in zip(names, lines, strict=True):
        assert line.split()[0] == name
        assert len(line.split()) > 1  # followed by its description
    assert err == ""


# ----------------------------------------------------------------------------------------------
# twincell run: bad input exits 2 with one line and writes nothing
# ----------------------------------------------------------------------------------------------


def test_run_bad_yaml_exits_2_and_creates_nothing(
    bad_yaml: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_dir = tmp_path / "x"
    before = _snapshot(tmp_path)
    assert main(["run", str(bad_yaml), "--out", str(out_dir)]) == 2
    line = _error_line(capsys)
    assert "viewpoints.subdivisions" in line
    assert "less than or equal to 4" in line
    assert not out_dir.exists()
    assert _snapshot(tmp_path) == before


def test_run_bad_yaml_without_out_creates_no_default_dir(
    bad_yaml: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", str(bad_yaml), "-q"]) == 2
    assert "viewpoints.subdivisions" in _error_line(capsys)
    assert not (tmp_path / "runs").exists()


def test_run_unknown_scenario_exits_2_listing_bundled(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", "nonexistent", "--out", str(tmp_path / "x")]) == 2
    line = _error_line(capsys)
    assert "'nonexistent'" in line
    for name in bundled_scenarios():
        assert name in line
    assert not (tmp_path / "x").exists()


def test_run_invalid_yaml_syntax_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\ncell: {robot: panda\n")
    assert main(["run", str(path), "--out", str(tmp_path / "x")]) == 2
    assert "invalid YAML" in _error_line(capsys)
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("workers", ["0", "-3"])
def test_run_workers_below_one_fails_before_creating_out(
    workers: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_dir = tmp_path / "x"
    assert main(["run", "tiny", "--out", str(out_dir), "--workers", workers]) == 2
    line = _error_line(capsys)
    assert "--workers" in line and ">= 1" in line
    assert not out_dir.exists()
    assert not (tmp_path / "runs").exists()


def test_run_negative_seed_exits_2_naming_seed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_dir = tmp_path / "x"
    assert main(["run", "tiny", "--seed", "-1", "--out", str(out_dir)]) == 2
    line = _error_line(capsys)
    assert "--seed: must be >= 0" in line and "got -1" in line
    assert not out_dir.exists()


def test_run_seed_too_large_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "tiny", "--seed", str(2**31), "--out", str(tmp_path / "x")]) == 2
    assert "seed:" in _error_line(capsys)
    assert not (tmp_path / "x").exists()


def test_run_into_foreign_non_empty_dir_exits_2_and_leaves_it_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_dir = tmp_path / "mine"
    (out_dir / "sub").mkdir(parents=True)
    (out_dir / "notes.txt").write_text("precious\n")
    (out_dir / "sub" / "data.bin").write_bytes(b"\x00\x01\x02")
    before = _snapshot(tmp_path)
    assert main(["run", "tiny", "--out", str(out_dir), "-q"]) == 2
    line = _error_line(capsys)
    assert "--out" in line and str(out_dir) in line
    assert _snapshot(tmp_path) == before


def test_run_into_dir_of_another_run_exits_2_and_leaves_it_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_dir = tmp_path / "other"
    out_dir.mkdir()
    manifest = {
        "twincell_run": 1,
        "status": "complete",
        "digest": "0" * 16,
        "scenario": {"name": "quickstart"},
        "seed": 3,
    }
    (out_dir / "manifest.json").write_text(json.dumps(manifest))
    before = _snapshot(tmp_path)
    assert main(["run", "tiny", "--out", str(out_dir), "-q"]) == 2
    line = _error_line(capsys)
    assert "--out" in line and "another scenario or seed" in line
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize(
    "argv",
    [
        ["run"],
        ["run", "tiny", "--seed", "abc"],
        ["run", "tiny", "--workers", "x"],
        ["frobnicate"],
        [],
    ],
    ids=["no-scenario", "seed-not-int", "workers-not-int", "unknown-command", "no-command"],
)
def test_usage_errors_exit_2(
    argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    # One line, like every other input error, pointing at the help.
    line = _error_line(capsys)
    assert "--help`)" in line and len(line) < 200
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------------------------
# The installed console script
# ----------------------------------------------------------------------------------------------


def test_console_script_exits_2_on_bad_spec(bad_yaml: Path, tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "twincell"
    if not script.exists():
        pytest.skip(f"console script not installed next to {sys.executable}")
    out_dir = tmp_path / "x"
    proc = subprocess.run(
        [str(script), "run", str(bad_yaml), "--out", str(out_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("twincell: error: ")
    assert "viewpoints.subdivisions" in lines[0]
    assert not out_dir.exists()


def test_run_out_is_a_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "a_file"
    target.write_text("keep me")
    assert main(["run", "tiny", "--out", str(target)]) == 2
    err = capsys.readouterr().err
    assert "--out" in err and "not a directory" in err
    assert target.read_text() == "keep me"


# ----------------------------------------------------------------------------------------------
# --out that cannot hold a run, found before any work
# ----------------------------------------------------------------------------------------------


def test_out_under_a_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "afile").write_text("keep me")
    before = _snapshot(tmp_path)
    assert main(["run", "tiny", "--out", str(tmp_path / "afile" / "sub"), "-q"]) == 2
    line = _error_line(capsys)
    assert "--out" in line and "is a file, not a directory" in line
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize("where", ["/proc/twincell-test-run", "/proc/self/twincell-test/run"])
def test_out_where_nothing_can_be_written_exits_2(
    where: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", "tiny", "--out", where, "-q"]) == 2
    line = _error_line(capsys)
    assert f"--out {where}: cannot write there" in line
    assert not Path(where).exists()


@pytest.mark.parametrize(
    ("content", "why"),
    [
        ('{"twincell_run": 1, "digest": "ab', "JSONDecodeError"),
        ("[1, 2, 3]", "not a twincell manifest"),
        ('{"status": "complete"}', "not a twincell manifest"),
        ("", "JSONDecodeError"),
    ],
    ids=["truncated", "list", "no-digest", "empty"],
)
def test_damaged_manifest_in_out_is_refused_with_a_way_out(
    content: str, why: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_dir = tmp_path / "run"
    (out_dir / "samples").mkdir(parents=True)
    (out_dir / "manifest.json").write_text(content)
    before = _snapshot(tmp_path)
    assert main(["run", "tiny", "--out", str(out_dir), "-q"]) == 2
    line = _error_line(capsys)
    assert "manifest.json is damaged" in line and why in line
    assert "delete the directory or choose another --out" in line
    assert _snapshot(tmp_path) == before


def test_long_scenario_name_is_a_spec_error_not_an_os_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "long.yaml"
    path.write_text(f"name: {'n' * 300}\n")
    assert main(["run", str(path), "-q"]) == 2
    line = _error_line(capsys)
    assert "name:" in line and "at most 64 characters" in line
    assert len(line) < 250
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ("{bogus: 1}", "unknown parameter 'bogus'"),
        ("{sigma_px: -1}", "detectors.1.params.sigma_px: Input should be greater than or equal"),
        ("{dilate_px: 2.5}", "detectors.1.params.dilate_px: Input should be a valid integer"),
        ("{dilate_px: 100000}", "detectors.1.params.dilate_px: Input should be less than or equal"),
        ("{sigma_px: 1.0e+9}", "detectors.1.params.sigma_px: Input should be less than or equal"),
        ("{sigma_px: true}", "detectors.1.params.sigma_px: Input should be a valid number"),
    ],
)
def test_detector_params_are_checked_before_anything_runs(
    params: str, fragment: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "det.yaml"
    path.write_text(
        "name: det\ndetectors:\n  - rgb_residual\n  - {name: ssim_residual, params: "
        + params
        + "}\n"
    )
    assert main(["run", str(path), "--out", str(tmp_path / "x"), "-q"]) == 2
    line = _error_line(capsys)
    assert line.startswith(f"twincell: error: {path}: "), line
    assert fragment in line
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    ("yaml_text", "fragment"),
    [
        ("cell: {camera: {width: true}}", "cell.camera.width: Input should be a valid integer"),
        ("cell: {camera: {width: '96'}}", "cell.camera.width: Input should be a valid integer"),
        ("cell: {camera: {width: 4096}}", "cell.camera.width: Input should be less than or equal"),
        ("viewpoints: {radius_m: true}", "viewpoints.radius_m: Input should be a valid number"),
        ("part: {params: {segments: 12.7}}", "part.params.segments: must be an integer"),
        ("part: {params: {segments: 2000000}}", "part.params.segments: must be an integer in"),
        ("part: {params: {hub_height_mm: true}}", "part.params.hub_height_mm: must be a number"),
        ("part: {placement: {position_m: [5.0, 5.0]}}", "part.placement.position_m.0"),
        (
            "viewpoints: {subdivisions: 3}\nsplit: {train_normal: 1000, test_defective: 1000}",
            "at most 100000",
        ),
        (
            "part: {families: [{family: flange_bearing_seat, train_normal: 1,"
            " params: {segments: 12.7}}]}",
            "part.families.0.params.segments: must be an integer",
        ),
        (
            "part: {families: [{family: flange_bearing_seat, train_normal: '2'}]}",
            "part.families.0.train_normal: Input should be a valid integer",
        ),
        (
            "viewpoints: {subdivisions: 3}\npart: {families: [{family: flange_bearing_seat,"
            " train_normal: 1000, test_defective: 1000}]}",
            "at most 100000",
        ),
    ],
)
def test_loose_types_and_unbounded_values_are_refused(
    yaml_text: str, fragment: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(f"name: s\n{yaml_text}\n")
    assert main(["validate", str(path)]) == 2
    assert fragment in _error_line(capsys)


def test_workers_above_the_limit_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "tiny", "--workers", "1000", "-q"]) == 2
    assert "--workers" in _error_line(capsys)


# ----------------------------------------------------------------------------------------------
# What a new user sees
# ----------------------------------------------------------------------------------------------


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    from importlib import metadata

    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"twincell {metadata.version('twincell')}"


def test_help_is_for_users_and_lists_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    assert "The ``twincell`` command line" not in text  # not the module docstring
    for fragment in ("twincell run quickstart", "exit codes:", "0    success", "130"):
        assert fragment in text
    assert "bad input" in text and "cannot be scored" in text


def test_validate_prints_the_plan(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "tiny"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("ok: tiny (seed 0") and "planned pairs" in out


def test_pybullet_banner_does_not_reach_the_terminal() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", "import sim.robot_scene"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0
    assert "pybullet build time" not in proc.stdout + proc.stderr


def test_a_parent_another_run_creates_meanwhile_is_shared_not_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two cells of a parallel study start at once under one new ``cells/``: both find it
    missing, one creates it first. The other uses it (it was "File exists": a failed cell)."""
    from scenarios.engine import open_out_dir
    from scenarios.spec import load_scenario

    parent = tmp_path / "cells"
    real_mkdir = Path.mkdir

    def raced(self: Path, *args: object, **kwargs: object) -> None:
        if self == parent and not parent.exists():
            real_mkdir(parent)  # the other process wins the race
        real_mkdir(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Path, "mkdir", raced)
    with open_out_dir(parent / "cell0", load_scenario("tiny")):
        assert (parent / "cell0").is_dir()


def test_second_run_into_a_directory_in_use_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import fcntl
    import os

    from scenarios.engine import LOCK_NAME

    out_dir = tmp_path / "busy"
    out_dir.mkdir()
    fd = os.open(out_dir / LOCK_NAME, os.O_WRONLY | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # as a run in progress holds it
        before = _snapshot(tmp_path)
        assert main(["run", "tiny", "--out", str(out_dir), "-q"]) == 2
        assert "another twincell run is writing there" in _error_line(capsys)
        assert _snapshot(tmp_path) == before
    finally:
        os.close(fd)


def test_out_name_too_long_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "tiny", "--out", str(tmp_path / ("a" * 300)), "-q"]) == 2
    assert "cannot use it (File name too long)" in _error_line(capsys)


def test_scenario_path_too_long_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "a" * 300 + ".yaml"]) == 2
    assert "File name too long" in _error_line(capsys)


def test_duplicate_key_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "dup.yaml"
    path.write_text("name: a\nseed: 1\nname: b\n")
    assert main(["validate", str(path)]) == 2
    assert "invalid YAML at line 3: duplicate key 'name'" in _error_line(capsys)


def test_band_without_viewpoints_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "band.yaml"
    path.write_text(
        "name: a\nviewpoints: {subdivisions: 1, elevation_min_deg: 50, elevation_max_deg: 50}\n"
    )
    assert main(["validate", str(path)]) == 2
    assert "no viewpoint of subdivision level 1 lies in the elevation band" in _error_line(capsys)


@pytest.mark.parametrize(
    ("args", "expect"),
    [
        (["--out", "{tmp}/ssl.pt"], "--out: must name a .pth file"),
        (["--out", "{tmp}/exists.pth"], "exists; choose another file"),
        (["--out", "{tmp}/ssl.pth", "--epochs", "0"], "--epochs"),
        (["--out", "{tmp}/ssl.pth", "--image-size", "8"], "--image-size"),
        (["--out", "{tmp}/ssl.pth", "--workers", "0"], "--workers"),
        (["--out", "{tmp}/ssl.pth", "--scenario", "nope"], "nope"),
    ],
)
def test_pretrain_bad_input_exits_2_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], expect: str
) -> None:
    (tmp_path / "exists.pth").write_bytes(b"x")
    before = sorted(tmp_path.iterdir())
    code = main(["pretrain", *(a.format(tmp=tmp_path) for a in args)])
    err = capsys.readouterr().err
    assert code == 2 and expect in err and "\n" not in err.strip()
    assert sorted(tmp_path.iterdir()) == before
