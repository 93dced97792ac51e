"""The learned detectors run in the engine like the baselines, and the run records which
weights each used (a report states them)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scenarios.engine import run_scenario
from scenarios.report import write_report
from scenarios.spec import parse_scenario

pytestmark = pytest.mark.slow

ERR = {"translation_mm": 0.2, "rotation_deg": 0.05}


def test_padim_and_patchcore_run_side_by_side_and_their_weights_are_recorded(
    tmp_path: Path,
) -> None:
    sc = parse_scenario(
        {
            "name": "learned",
            "cell": {"camera": {"width": 96, "height": 96, "hfov_deg": 32}},
            "viewpoints": {"radius_m": 0.2, "subdivisions": 0},
            "defects": {"kinds": ["hole", "scratch"], "per_part": 2},
            "split": {"train_normal": 2, "test_normal": 1, "test_defective": 1},
            "errors": {"mode": "model", "robot": ERR, "hand_eye": ERR, "object_pose": ERR},
            "detectors": [
                "rgb_residual",
                {"name": "padim", "params": {"weights": "random", "image_size": 96}},
                {
                    "name": "patchcore",
                    "params": {"weights": "random", "backbone": "resnet18", "image_size": 96},
                },
                # One detector twice, told apart by a label.
                {
                    "name": "padim",
                    "label": "padim-seed1",
                    "params": {"weights": "random", "image_size": 96, "seed": 1},
                },
                {
                    "name": "avatar",
                    "params": {
                        "weights": "random",
                        "backbone": "resnet18_compact",
                        "image_size": 96,
                        "epochs": 1,
                    },
                },
            ],
        }
    )
    out = tmp_path / "run"
    manifest = run_scenario(sc, out, workers=1, progress=False, report=write_report)
    assert manifest["status"] == "complete"
    weights = manifest["detector_weights"]
    assert weights["rgb_residual"] == {}
    assert weights["padim"] == {"backbone": "resnet18", "source": "random", "seed": 0}
    assert weights["patchcore"]["source"] == "random"
    metrics = json.loads((out / "metrics.json").read_text())["detectors"]
    assert set(metrics) == {"rgb_residual", "padim", "patchcore", "padim-seed1", "avatar"}
    assert weights["padim-seed1"] == {"backbone": "resnet18", "source": "random", "seed": 1}
    assert (out / "predictions" / "padim-seed1" / "scores.csv").is_file()
    assert metrics["padim-seed1"] != metrics["padim"]
    # AVATAR's backbone tokens are cached in the run directory.
    assert any((out / "features").iterdir())
    report = (out / "report.md").read_text()
    assert "padim: resnet18, random (seed 0)" in report
    # Whole-part decisions by the three rules, with the paper's D_T, and their figure.
    parts = json.loads((out / "metrics.json").read_text())["parts"]
    assert set(parts["padim"]) == {"max", "percentile", "cluster"}
    for rule in parts["padim"].values():
        assert rule["n_parts"] == 2 and rule["n_anomalous"] == 1
        assert rule["dt"] is None or 0.0 <= rule["dt"] <= 1.0
        assert len(rule["thresholds"]) == len(rule["tpr"]) == len(rule["tnr"])
    assert "## Part decisions" in report and (out / "figures" / "parts_padim.png").is_file()


def test_a_rerun_recomputes_predictions_when_auto_finds_other_weights(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    from detectors.backbones.weights import WEIGHTS_ENV, build_backbone

    cache = tmp_path / "weights"
    cache.mkdir()
    monkeypatch.setenv(WEIGHTS_ENV, str(cache))
    ckpt = cache / "resnet18_compact-twincell-ssl.pth"

    def put(seed: int) -> None:
        torch.manual_seed(seed)
        torch.save(build_backbone("resnet18_compact").state_dict(), ckpt)

    put(1)
    sc = parse_scenario(
        {
            "name": "reweigh",
            "cell": {"camera": {"width": 64, "height": 64, "hfov_deg": 32}},
            "viewpoints": {"radius_m": 0.2, "subdivisions": 0},
            "defects": {"kinds": ["hole"], "per_part": 1},
            "split": {"train_normal": 1, "test_normal": 1, "test_defective": 1},
            "errors": {"mode": "model", "robot": ERR, "hand_eye": ERR, "object_pose": ERR},
            "detectors": [
                {"name": "padim", "params": {"backbone": "resnet18_compact", "image_size": 64}}
            ],
        }
    )
    out = tmp_path / "run"
    run_scenario(sc, out, workers=1, progress=False)
    first = (out / "predictions" / "padim" / "scores.csv").read_text()
    sha1 = json.loads((out / "predictions" / "padim" / "weights.json").read_text())["sha256"]
    again = run_scenario(sc, out, workers=1, progress=False)  # same weights: reused
    assert "reuse" in again["timings_s"]["detectors"]["padim"]
    assert (out / "predictions" / "padim" / "scores.csv").read_text() == first
    put(2)
    manifest = run_scenario(sc, out, workers=1, progress=False)
    assert "fit" in manifest["timings_s"]["detectors"]["padim"]
    assert manifest["detector_weights"]["padim"]["sha256"] != sha1
    assert (out / "predictions" / "padim" / "scores.csv").read_text() != first
