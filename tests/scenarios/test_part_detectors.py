"""A part-level (3D) detector runs in the one engine beside the view-level ones: one
registry, one run directory, one report; its predictions are per point of each part's
fused cloud and its metrics are object and point level, per family."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from scenarios.engine import run_scenario
from scenarios.interfaces import SpecError
from scenarios.report import write_report
from scenarios.rundir import load_part, part_records
from scenarios.spec import parse_scenario

pytestmark = pytest.mark.slow
pytest.importorskip("open3d")

ERR = {"translation_mm": 0.2, "rotation_deg": 0.05}
COSARAD_FAST = {"patches": 32, "radius_mm": 8.0}


def _scenario(**over: object) -> dict[str, object]:
    data: dict[str, object] = {
        "name": "parts3d",
        "cell": {"camera": {"width": 128, "height": 128, "hfov_deg": 36}},
        "viewpoints": {"radius_m": 0.22, "subdivisions": 0},
        "defects": {"kinds": ["bulge"], "per_part": 1},
        "split": {"train_normal": 2, "test_normal": 1, "test_defective": 1},
        "errors": {"mode": "model", "robot": ERR, "hand_eye": ERR, "object_pose": ERR},
        "detectors": [
            "rgb_residual",
            {"name": "cosarad", "params": COSARAD_FAST},
            {
                "name": "cosarad",
                "label": "cosarad-global",
                "params": {**COSARAD_FAST, "bank": "global"},
            },
        ],
    }
    data.update(over)
    return data


def test_cosarad_runs_beside_an_image_detector(tmp_path: Path) -> None:
    sc = parse_scenario(_scenario())
    out = tmp_path / "run"
    manifest = run_scenario(sc, out, workers=1, progress=False, report=write_report)
    assert manifest["status"] == "complete"
    parts = part_records(out)
    assert [p["split"] for p in parts].count("train") == 2
    test = [p for p in parts if p["split"] == "test"]
    assert sorted(p["label"] for p in test) == [0, 1]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["levels"] == {
        "rgb_residual": "view",
        "cosarad": "part",
        "cosarad-global": "part",
    }
    assert set(metrics["detectors"]["cosarad"]) == {"o_auroc", "o_ap", "p_auroc", "p_ap"}
    assert set(metrics["detectors"]["rgb_residual"]) >= {"i_auroc", "aupro"}
    fam = metrics["families"]["cosarad"]["flange_bearing_seat"]
    assert fam["n_parts"] == 2 and fam["n_anomalous"] == 1
    # One score per point of each test part's fused cloud, in the one run directory.
    for p in test:
        ps = np.load(out / "predictions" / "cosarad" / f"{p['id']}.npy")
        assert ps.shape == (len(load_part(out, p).points),) and np.isfinite(ps).all()
    # Part decisions (per view rules) are for view-level detectors only.
    assert set(metrics["parts"]) == {"rgb_residual"}
    report = (out / "report.md").read_text()
    assert "## 3D: part-level detectors" in report and "| cosarad |" in report
    assert (out / "figures" / "points.png").is_file()
    # A rerun reuses the verified point scores.
    again = run_scenario(sc, out, workers=1, progress=False)
    assert "reuse" in again["timings_s"]["detectors"]["cosarad"]
    again_metrics = json.loads((out / "metrics.json").read_text())["detectors"]["cosarad"]
    assert again_metrics == metrics["detectors"]["cosarad"]

    # The fused clouds lie in the part's (believed) frame: on the part's mesh, to within
    # the sensor noise and the small pose errors of this scenario.
    import trimesh

    for p in parts:
        cloud = load_part(out, p).points
        mesh = trimesh.load(out / "meshes" / f"{p['id']}.ply")
        sample = cloud[np.random.default_rng(0).choice(len(cloud), 500, replace=False)]
        _, dist, _ = trimesh.proximity.closest_point(mesh, sample)
        assert np.median(dist) < 0.001, f"{p['id']}: median {np.median(dist) * 1e3:.2f} mm"

    # A part whose cloud changed (a rerun that retried a failed capture re-fuses it) is
    # predicted again, never scored with the old point scores.
    from scenarios.engine import _run_part_detector
    from scenarios.rundir import PART_CLOUD, PART_RECORD, write_json
    from sim.points import ply_bytes

    spec = next(d for d in sc.detectors if d.key == "cosarad")
    changed = test[0]
    part = load_part(out, changed)
    keep = slice(0, len(part.points) // 2)
    labels = None if part.gt_point_labels is None else part.gt_point_labels[keep]
    (out / "parts" / changed["id"] / PART_CLOUD).write_bytes(ply_bytes(part.points[keep], labels))
    changed = {**changed, "n_points": len(part.points[keep])}
    write_json(out / "parts" / changed["id"] / PART_RECORD, changed)
    train = [p for p in part_records(out) if p["split"] == "train"]
    test = [p for p in part_records(out) if p["split"] == "test"]
    _, _, seconds = _run_part_detector(spec, out, train, test, progress=False)
    assert "predict" in seconds and "reuse" not in seconds
    ps = np.load(out / "predictions" / "cosarad" / f"{changed['id']}.npy")
    assert ps.shape == (changed["n_points"],)


def test_a_part_detector_needs_point_clouds() -> None:
    """A cell without its depth sensor would give cosarad nothing: refused at load."""
    data = _scenario(cell={"depth": {"points": False}})
    with pytest.raises(SpecError, match=r"detectors\.1: cosarad .*cell\.depth\.points"):
        parse_scenario(data)


def test_a_part_detector_needs_two_templates_per_tested_family() -> None:
    """Cohen's d compares the templates with each other: one normal training part of a
    tested family is refused at load, naming the field."""
    data = _scenario(split={"train_normal": 1, "test_normal": 1, "test_defective": 1})
    with pytest.raises(SpecError, match=r"part\.families\.0\.train_normal: cosarad"):
        parse_scenario(data)
