"""The part-decision figure of the report: TPR and TNR against the threshold, per rule."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from detectors.decisions import part_curve
from scenarios.report import plot_part_curves


def test_plot_part_curves_writes_a_png(tmp_path: Path) -> None:
    curves = {
        "max": part_curve([1.0, 2.0, 3.0, 2.5, 4.0], [0, 0, 0, 1, 1]),
        "cluster": part_curve([1.0, 2.0, 8.0, 9.0], [0, 0, 1, 1], thresholds=range(0, 16)),
    }
    out = tmp_path / "report" / "part_curves.png"
    out.parent.mkdir()
    plot_part_curves(curves, out)
    with Image.open(out) as im:
        assert im.format == "PNG"
        assert im.size[0] > 0 and im.size[1] > 0
        assert im.size[0] > im.size[1]  # one panel per rule, side by side
    assert [p.name for p in out.parent.iterdir()] == ["part_curves.png"]  # no temporaries
