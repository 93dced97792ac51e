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


def test_a_part_detector_needs_point_clouds() -> None:
    """A cell without its depth sensor would give cosarad nothing: refused at load."""
    data = _scenario(cell={"depth": {"points": False}})
    with pytest.raises(SpecError, match=r"detectors\.1: cosarad .*cell\.depth\.points"):
        parse_scenario(data)
