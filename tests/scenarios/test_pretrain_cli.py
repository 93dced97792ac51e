"""`twincell pretrain` end to end on a tiny scenario: renders, trains, saves a checkpoint the
detectors load, learns from normal pairs only, and never overwrites a checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scenarios.cli import main


@pytest.mark.slow
def test_pretrain_end_to_end_on_a_tiny_scenario(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import torch

    from detectors.backbones.weights import load_backbone

    spec = tmp_path / "ssl.yaml"
    spec.write_text(
        "name: ssl-tiny\n"
        "cell: {camera: {width: 64, height: 64, hfov_deg: 32}}\n"
        "viewpoints: {radius_m: 0.2, subdivisions: 0}\n"
        "split: {train_normal: 1, test_normal: 0, test_defective: 1}\n"
        "errors: {mode: model, robot: {translation_mm: 0.1, rotation_deg: 0.05}}\n"
    )
    out = tmp_path / "b.pth"
    args = ["pretrain", "--scenario", str(spec), "--out", str(out), "-q"]
    args += ["--epochs", "1", "--batch-size", "2", "--image-size", "32"]
    assert main(args) == 0
    assert "checkpoint:" in capsys.readouterr().out
    ckpt = torch.load(out, weights_only=True)
    meta = ckpt["meta"]
    # Only the normal pairs are learned from: the defective part's views are left out.
    records = [
        json.loads(line)
        for line in (tmp_path / "b.pth.renders" / "ssl-tiny-seed0" / "samples.jsonl").open()
    ]
    normal = sum(1 for r in records if r.get("label") == 0 and "error" not in r)
    assert meta["pairs"] == normal < len(records)
    assert meta["scenarios"][0]["name"] == "ssl-tiny" and len(meta["history"]) == 1
    model, info = load_backbone("resnet18_compact", str(out))
    assert info.source == "file"
    # A second run into the same file is refused rather than overwriting it.
    assert main(args) == 2
