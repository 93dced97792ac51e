"""Studies: spec errors, grid expansion, running cells (pool and Ray), resume after a kill,
failed cells, the tables and the report."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

import scenarios.study as study_mod
from scenarios.cli import main
from scenarios.interfaces import EXIT_CELLS_FAILED, EXIT_INPUT, RunDirError, SpecError
from scenarios.study import load_study, parse_study, run_study

METRICS = ("i_auroc", "i_ap", "i_f1max", "p_auroc", "p_ap", "p_f1max", "aupro")


def _study(tmp_path: Path, **fields: Any) -> Path:
    data = {"name": "s", "scenario": "tiny", "axes": {"viewpoints.radius_m": [0.2]}}
    data.update(fields)
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


# --- the spec ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"axes": {"viewpoint.radius_m": [0.2]}}, "'viewpoint' is not a scenario field; allowed"),
        ({"axes": {"seed": [1, 2]}}, "seed cannot be swept.*seeds"),
        ({"axes": {"name": ["a"]}}, "name cannot be swept"),
        ({"axes": {"viewpoints.radius_m": [0.2, 0.2]}}, "a value is given twice"),
        ({"axes": {"viewpoints.radius_m": []}}, "give 1 to 100 values"),
        ({"axes": {}}, "axes"),
        ({"seeds": [0, 0]}, "a seed is given twice"),
        ({"seeds": [-1]}, "seed"),
        ({"design": "random"}, "design.*grid.*one_at_a_time"),
        ({"colour": "red"}, "colour"),
        (
            {"set": {"viewpoints.radius_m": 0.3}},
            "set: viewpoints.radius_m is also an axis",
        ),
        # Each cell's scenario is validated: the field and the cell are named.
        (
            {"axes": {"errors.hand_eye.rotaton_deg": [1]}},
            "the cell errors.hand_eye.rotaton_deg = 1.*rotaton_deg",
        ),
        (
            {"axes": {"errors.hand_eye.rotation_deg": [0, 20]}},
            "the cell errors.hand_eye.rotation_deg = 20.*rotation_deg.*10",
        ),
        ({"axes": {"detectors.5.params.x": [1]}}, "'5' is not an index of a list of 2"),
        ({"axes": {"viewpoints.radius_m.x": [1]}}, "viewpoints.radius_m is a value"),
        ({"scenario": "no-such-scenario"}, "scenario: .*no bundled scenario"),
    ],
)
def test_study_spec_errors_are_one_line(tmp_path: Path, fields: dict[str, Any], match: str) -> None:
    path = _study(tmp_path, **fields)
    with pytest.raises(SpecError, match=match) as err:
        load_study(str(path))
    assert "\n" not in str(err.value)
    assert str(err.value).startswith(str(path))


def test_cli_refuses_a_bad_study_with_exit_2_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _study(tmp_path, axes={"errors.hand_eye.rotation_deg": [0, 20]})
    out = tmp_path / "out"
    assert main(["study", str(path), "--out", str(out)]) == EXIT_INPUT
    err = capsys.readouterr().err.strip()
    assert err.startswith("twincell: error:") and "\n" not in err and "rotation_deg" in err
    assert not out.exists()
    assert main(["study", "no-such-study", "--out", str(out)]) == EXIT_INPUT
    assert "no bundled study" in capsys.readouterr().err
    ok = _study(tmp_path)
    assert main(["study", str(ok), "--out", str(out), "--workers", "0"]) == EXIT_INPUT
    assert main(["study", str(ok), "--out", str(out), "--ray-address", "auto"]) == EXIT_INPUT
    assert not out.exists()


def test_grid_expands_every_combination_and_seed() -> None:
    study = parse_study(
        {
            "name": "g",
            "scenario": "tiny",
            "axes": {
                "errors.hand_eye.rotation_deg": [0, 1],
                "viewpoints.elevation_min_deg": [10, 20, 30],
            },
            "seeds": [3, 4],
        }
    )
    assert len(study.cells) == 12
    combos = {
        (c.values["errors.hand_eye.rotation_deg"], c.values["viewpoints.elevation_min_deg"], c.seed)
        for c in study.cells
    }
    assert len(combos) == 12
    for c in study.cells:
        sc = c.scenario
        assert sc.seed == c.seed and c.varied == ""
        assert sc.errors.hand_eye is not None
        assert sc.errors.hand_eye.rotation_deg == c.values["errors.hand_eye.rotation_deg"]
        assert sc.viewpoints.elevation_min_deg == c.values["viewpoints.elevation_min_deg"]
    # Each cell's run directory is named by its scenario's digest.
    assert [c.dirname for c in study.cells] == [c.scenario.digest() for c in study.cells]
    assert len({c.dirname for c in study.cells}) == 12


def test_one_at_a_time_keeps_the_other_axes_at_the_base_and_reaches_into_lists() -> None:
    study = parse_study(
        {
            "name": "o",
            "scenario": "tiny",
            "design": "one_at_a_time",
            "set": {"appearance.clutter": 0},
            "axes": {
                "errors.hand_eye.rotation_deg": [0, 1, 2],
                # tiny lists its detectors by name: the short form is expanded.
                "detectors.1.params.sigma_px": [1.0, 3.0],
            },
        }
    )
    assert len(study.cells) == 5
    by_axis = [c for c in study.cells if c.varied == "errors.hand_eye.rotation_deg"]
    assert [c.values["errors.hand_eye.rotation_deg"] for c in by_axis] == [0, 1, 2]
    for c in by_axis:  # the other axis at tiny's own value (the detector's default)
        assert c.values["detectors.1.params.sigma_px"] == 2.0
        assert c.scenario.appearance.clutter == 0
    sigmas = [c.scenario.detectors[1].params["sigma_px"] for c in study.cells[3:]]
    assert sigmas == [1.0, 3.0]
    # The digest names the cells: another seed list is another study.
    again = parse_study({**study.spec.model_dump(), "seeds": [1]})
    assert again.digest() != study.digest()


def test_bundled_jitter_sweep_is_valid() -> None:
    study = load_study("jitter-sweep")
    assert {d.name for d in study.cells[0].scenario.detectors} >= {"avatar", "ssim_residual"}
    assert len(study.cells) == 30
    assert len({c.dirname for c in study.cells}) == 27  # the base point is on both axes


# --- running ----------------------------------------------------------------------------

TWO_CELLS = {
    "name": "two",
    "scenario": "tiny",
    "axes": {"errors.hand_eye.rotation_deg": [0, 1]},
    "seeds": [0],
}


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A two-cell study of the tiny scenario, run on the pool with one worker."""
    out = tmp_path_factory.mktemp("study") / "out"
    result = run_study(parse_study(TWO_CELLS), out, progress=False)
    assert not result.failed
    return out


def _metrics(out: Path) -> list[tuple[Any, ...]]:
    with open(out / "results.csv") as f:
        return [tuple(r[k] for k in ("cell", "detector", *METRICS)) for r in csv.DictReader(f)]


@pytest.mark.slow
def test_a_study_writes_run_directories_tables_and_a_report(finished: Path) -> None:
    import pyarrow.parquet as pq

    record = json.loads((finished / "study.json").read_text())
    assert record["status"] == "complete"
    assert [c["status"] for c in record["cells"]] == ["complete", "complete"]
    for c in record["cells"]:  # each cell is an ordinary run directory
        cell = finished / c["run"]
        manifest = json.loads((cell / "manifest.json").read_text())
        assert manifest["digest"] == c["digest"] and (cell / "report.html").is_file()
    with open(finished / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4  # 2 cells x 2 detectors
    assert {r["errors.hand_eye.rotation_deg"] for r in rows} == {"0.0", "1.0"}
    table = pq.read_table(finished / "results.parquet").to_pylist()
    assert len(table) == 4
    for r, t in zip(rows, table, strict=True):
        assert t["detector"] == r["detector"] and t["seed"] == int(r["seed"])
        assert t["p_auroc"] == pytest.approx(float(r["p_auroc"]))
    # Per-viewpoint rows: every test pair of each cell counted once per detector.
    views = pq.read_table(finished / "views.parquet").to_pylist()
    for c in record["cells"]:
        test = json.loads((finished / c["run"] / "manifest.json").read_text())
        n = test["counts"]["test_normal"] + test["counts"]["test_anomalous"]
        at = [v for v in views if v["cell"] == c["cell"] and v["detector"] == "ssim_residual"]
        assert sum(v["n_normal"] + v["n_anomalous"] for v in at) == n
        assert all(-90 <= v["elevation_deg"] <= 90 for v in at)
    page = (finished / "report.html").read_text()
    assert "figures/errors_hand_eye_rotation_deg_view.png" in page
    assert (finished / "figures" / "errors_hand_eye_rotation_deg_by_view.png").is_file()


@pytest.mark.slow
def test_a_finished_study_reruns_nothing_and_another_study_is_refused(
    finished: Path, tmp_path: Path
) -> None:
    before = _metrics(finished)
    result = run_study(parse_study(TWO_CELLS), finished, progress=False)
    assert all(o.reused for o in result.outcomes.values())
    assert _metrics(finished) == before
    other = parse_study({**TWO_CELLS, "name": "other"})
    with pytest.raises(RunDirError, match="holds another study"):
        run_study(other, finished, progress=False)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(RunDirError, match="holds no study"):
        run_study(other, foreign, progress=False)


@pytest.mark.slow
def test_a_failed_cell_is_reported_not_fatal_and_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import scenarios.engine as engine

    real = engine.run_scenario

    def flaky(sc: Any, out: Path, **kw: Any) -> Any:
        if sc.errors.hand_eye.rotation_deg == 1:
            raise RuntimeError("the render farm is on fire")
        return real(sc, out, **kw)

    monkeypatch.setattr(engine, "run_scenario", flaky)
    path = tmp_path / "two.yaml"
    path.write_text(yaml.safe_dump(TWO_CELLS))
    out = tmp_path / "out"
    assert main(["study", str(path), "--out", str(out), "-q"]) == EXIT_CELLS_FAILED
    err = capsys.readouterr().err
    assert "cell 1 (errors.hand_eye.rotation_deg=1.0, seed 0) failed: RuntimeError: the " in err
    record = json.loads((out / "study.json").read_text())
    assert [c["status"] for c in record["cells"]] == ["complete", "failed"]
    assert "the render farm is on fire" in (out / "report.html").read_text()
    with open(out / "results.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["cell"] == "1"]
    assert rows and all(r["status"] == "failed" and r["p_auroc"] == "" for r in rows)
    # The rerun retries only the failed cell.
    monkeypatch.setattr(engine, "run_scenario", real)
    result = run_study(parse_study(TWO_CELLS), out, progress=False)
    assert result.outcomes[0].reused and not result.outcomes[1].reused
    assert result.outcomes[1].status == "complete"


@pytest.mark.slow
def test_a_killed_study_resumes_and_runs_only_the_missing_cells(tmp_path: Path) -> None:
    spec = {**TWO_CELLS, "axes": {"errors.hand_eye.rotation_deg": [0, 1, 2]}}
    path = tmp_path / "three.yaml"
    path.write_text(yaml.safe_dump(spec))
    out = tmp_path / "out"
    env = {**os.environ, "PYOPENGL_PLATFORM": "egl"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "scenarios.cli", "study", str(path), "--out", str(out), "-q"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline:  # kill it once the first cell has finished
            try:
                cells = json.loads((out / "study.json").read_text())["cells"]
            except (OSError, ValueError, KeyError):
                cells = []
            if any(c["status"] == "complete" for c in cells):
                break
            assert proc.poll() is None, "the study ended before it could be killed"
            time.sleep(0.2)
        else:
            pytest.fail("no cell finished in time")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    done = {c["cell"] for c in cells if c["status"] == "complete"}
    assert done and len(done) < 3
    result = run_study(parse_study(spec), out, progress=False)
    reused = {i for i, o in result.outcomes.items() if o.reused}
    assert reused == done  # the finished cells are kept, the others run
    assert all(o.status == "complete" for o in result.outcomes.values())
    assert json.loads((out / "study.json").read_text())["status"] == "complete"


@pytest.mark.slow
def test_ray_on_a_local_instance_gives_the_pools_metrics(finished: Path, tmp_path: Path) -> None:
    pytest.importorskip("ray")
    out = tmp_path / "ray"
    result = run_study(parse_study(TWO_CELLS), out, executor="ray", workers=2, progress=False)
    assert result.executor == "ray" and not result.failed
    assert _metrics(out) == _metrics(finished)


def test_a_missing_ray_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(SpecError, match="--executor ray: needs ray.*setup.sh"):
        study_mod.run_ray([], 1, lambda o: None)


@pytest.mark.slow
def test_a_study_that_gains_a_value_keeps_its_runs_and_shared_cells_run_once(
    tmp_path: Path,
) -> None:
    out = tmp_path / "out"
    run_study(parse_study(TWO_CELLS), out, progress=False)
    # tiny's own hand-eye rotation is 0.05: one at a time, the radius axis's cell at
    # tiny's radius is the very scenario of the rotation axis's cell at 0.05.
    grown = parse_study(
        {
            **TWO_CELLS,
            "design": "one_at_a_time",
            "axes": {
                "errors.hand_eye.rotation_deg": [0, 1, 0.05],
                "viewpoints.radius_m": [0.2],
            },
        }
    )
    assert grown.cells[2].dirname == grown.cells[3].dirname
    result = run_study(grown, out, progress=False)
    assert result.outcomes[0].reused and result.outcomes[1].reused
    assert not result.outcomes[2].reused and not result.outcomes[3].reused
    assert result.outcomes[2].seconds == result.outcomes[3].seconds  # one run, two cells
    assert len(list((out / "cells").iterdir())) == 3
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 8 and all(r["status"] == "complete" for r in rows)


# --- failures of the executors themselves -----------------------------------------------


def _die_on_cell_1(task: study_mod.CellTask) -> study_mod.CellOutcome:
    """A cell function whose process dies on cell 1 (a kill, an OOM, a segfault)."""
    if task.index == 1:
        os._exit(3)
    return study_mod.CellOutcome(task.index, "complete")


def _tasks(n: int) -> list[study_mod.CellTask]:
    from scenarios.spec import load_scenario

    sc = load_scenario("tiny")
    return [study_mod.CellTask(i, sc, f"/nonexistent/{i}", 1) for i in range(n)]


@pytest.mark.slow
def test_a_dead_pool_worker_fails_its_cells_instead_of_hanging() -> None:
    got: dict[int, study_mod.CellOutcome] = {}
    study_mod.run_pool(_tasks(3), 2, lambda o: got.setdefault(o.index, o), fn=_die_on_cell_1)
    assert sorted(got) == [0, 1, 2]  # every cell is reported
    assert got[1].status == "failed" and got[1].error == study_mod.WORKER_DIED


@pytest.mark.slow
def test_a_task_ray_loses_is_a_failed_cell() -> None:
    pytest.importorskip("ray")
    got: dict[int, study_mod.CellOutcome] = {}
    study_mod.run_ray(_tasks(2), 1, lambda o: got.setdefault(o.index, o), fn=_die_on_cell_1)
    assert got[0].status == "complete"
    assert got[1].status == "failed" and got[1].error.startswith("Ray lost the task")


# --- the report on made-up metrics: text and single-value axes, a grid, a 3D detector ----


def test_the_report_handles_text_axes_grids_part_detectors_and_undefined_metrics(
    tmp_path: Path,
) -> None:
    import pyarrow.parquet as pq

    from scenarios.study_report import write_study_report

    study = parse_study(
        {
            "name": "made-up",
            "scenario": "tiny",
            "set": {
                "cell.depth.points": True,
                "split.train_normal": 2,
                "detectors": ["ssim_residual", "cosarad"],
            },
            "axes": {
                "appearance.environment": ["studio", "workshop"],
                "errors.hand_eye.rotation_deg": [0.1],
            },
            "seeds": [0, 1],
        }
    )
    out = tmp_path / "study"
    rng = np.random.default_rng(0)
    outcomes = {}
    for c in study.cells:
        run = out / "cells" / c.dirname
        run.mkdir(parents=True)
        view = {m: float(rng.uniform(0.5, 1)) for m in METRICS}
        view["aupro"] = None  # undefined in every cell
        metrics = {
            "detectors": {
                "ssim_residual": view,
                "cosarad": {
                    m: float(rng.uniform(0.5, 1)) for m in ("o_auroc", "o_ap", "p_auroc", "p_ap")
                },
            },
            "levels": {"ssim_residual": "view", "cosarad": "part"},
            "views": {
                "ssim_residual": [
                    {
                        "view_id": v,
                        "frame": "cell",
                        "elevation_deg": 30.0 + 10 * v,
                        "azimuth_deg": -170.0 + 60 * v,
                        "n_normal": 1,
                        "n_anomalous": 1,
                        "i_auroc": 1.0,
                        "p_auroc": None if v == 0 else float(rng.uniform(0.5, 1)),
                        "aupro": None,
                    }
                    for v in range(4)
                ]
            },
        }
        (run / "metrics.json").write_text(json.dumps(metrics))
        outcomes[c.index] = study_mod.CellOutcome(c.index, "complete", 1.0, 9)
    study_mod.write_study_record(out, study, outcomes, "complete", {"seconds": 4.0})
    write_study_report(out, study)

    table = pq.read_table(out / "results.parquet")
    assert str(table.schema.field("aupro").type) == "double"  # typed though all null
    assert str(table.schema.field("o_auroc").type) == "double"
    rows = table.to_pylist()
    assert len(rows) == 8 and {r["level"] for r in rows} == {"view", "part"}
    assert {r["appearance.environment"] for r in rows} == {"studio", "workshop"}
    figures = {p.name for p in (out / "figures").iterdir()}
    assert {
        "appearance_environment_view.png",
        "appearance_environment_part.png",
        "appearance_environment_by_view.png",
        "errors_hand_eye_rotation_deg_view.png",
    } <= figures
    page = (out / "report.html").read_text()
    assert "n/a" in page  # aupro, undefined everywhere
    assert pq.read_table(out / "views.parquet").num_rows == 4 * 4


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"axes": {"render.timeout_s": [10, 20]}}, "make the same run"),
        ({"axes": {"viewpoints.radius_m": [0.3, 0.30000]}}, "a value is given twice"),
        (
            {"set": {"errors.hand_eye.rotaton_deg": 1}},
            "scenario tiny with set: errors.hand_eye.rotaton_deg: unknown field",
        ),
    ],
)
def test_cells_that_would_be_one_run_and_bad_sets_are_refused(
    tmp_path: Path, fields: dict[str, Any], match: str
) -> None:
    with pytest.raises(SpecError, match=match):
        load_study(str(_study(tmp_path, **fields)))
