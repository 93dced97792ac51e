"""A capture whose render fails costs that sample only: recorded, reported, retried on rerun."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scenarios import engine
from scenarios.engine import run_scenario
from scenarios.report import write_report
from scenarios.rundir import iter_jsonl, load_samples
from scenarios.spec import load_scenario
from sim.cells.eye_in_hand import EyeInHandCell
from sim.render import RenderFailed

pytestmark = pytest.mark.slow


def test_a_failed_render_is_recorded_and_the_run_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sc = load_scenario("tiny")
    real_capture = EyeInHandCell.capture_pair
    calls = {"n": 0}

    def flaky(self: EyeInHandCell):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 6:  # the sixth capture of the run
            raise RenderFailed("blender worker died (signal 9) while rendering; restarted")
        return real_capture(self)

    monkeypatch.setattr(EyeInHandCell, "capture_pair", flaky)
    out = tmp_path / "run"
    run_scenario(sc, out, workers=1, progress=False, report=write_report)

    lines = list(iter_jsonl(out / "samples.jsonl"))
    failed = [r for r in lines if r.get("status") == "failed"]
    assert len(failed) == 1
    victim = failed[0]["id"]
    assert victim in {engine.sample_id(p, v) for p, v in engine.sample_table(sc)}
    assert failed[0]["split"] in ("train", "test")
    assert "signal 9" in failed[0]["reason"]
    assert not (out / "samples" / victim).exists()
    assert victim not in {s.id for s in load_samples(out)}  # readers skip it
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] in ("complete", "unscored")
    assert manifest["failed_samples"]["count"] == 1
    report = (out / "report.md").read_text()
    assert "failed samples (render)**: 1" in report
    assert f"- {victim} (" in report and "signal 9" in report

    # A rerun into the same directory retries the failed sample and keeps the rest.
    monkeypatch.setattr(EyeInHandCell, "capture_pair", real_capture)
    run_scenario(sc, out, workers=1, progress=False, report=write_report)
    lines = list(iter_jsonl(out / "samples.jsonl"))
    assert not [r for r in lines if r.get("status") == "failed"]
    assert (out / "samples" / victim / "record.json").is_file()
    assert json.loads((out / "manifest.json").read_text())["failed_samples"]["count"] == 0


def test_a_missing_render_backend_is_refused_before_anything_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.util

    from scenarios.interfaces import SpecError
    from scenarios.spec import parse_scenario

    data = load_scenario("tiny").model_dump(mode="json")
    data["render"] = {"real": "blender"}
    sc = parse_scenario(data, "test")
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "bpy" else real_find_spec(name, *a),
    )
    with pytest.raises(SpecError, match=r"render\.real: blender needs bpy.*setup\.sh"):
        run_scenario(sc, tmp_path / "run", workers=1, progress=False)
    assert not (tmp_path / "run").exists()
