"""Figures of a run's acquisition, for the docs: views of one part, and its fused points.

    .venv/bin/python scripts/acquisition_figures.py RUN_DIR OUT_PREFIX [--part part005]

Writes ``OUT_PREFIX_views.jpg`` (real | twin | ground truth in red, for up to 8 views of
the part) and ``OUT_PREFIX_points.jpg`` (the part's fused real points,
``parts/<part>/real_fused.ply``, two views, coloured by label: grey-blue normal, red
defect).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from PIL import Image

from sim.points import label_colors, read_ply


def views_figure(
    run: Path, part: str, out: Path, n: int = 8, views: list[int] | None = None
) -> None:
    ids = sorted(p.name for p in (run / "samples").glob(f"{part}_v*"))
    if views is not None:
        ids = [i for i in ids if int(i.rsplit("_v", 1)[1]) in views]
    else:
        ids = ids[:: max(1, len(ids) // n)][:n]
    rows = []
    for sid in ids:
        d = run / "samples" / sid
        real = np.asarray(Image.open(d / "real.png").convert("RGB"))
        twin = np.asarray(Image.open(d / "twin.png").convert("RGB"))
        gt = np.asarray(Image.open(d / "gt_mask.png")) > 0
        over = real.copy()
        over[gt] = (0.4 * over[gt] + 0.6 * np.array([255, 0, 0])).astype(np.uint8)
        rows.append(np.concatenate([real, twin, over], axis=1))
    grid = np.concatenate(rows, axis=0)
    Image.fromarray(grid).save(out, quality=88)


def points_figure(run: Path, part: str, out: Path) -> None:
    pts, labels = read_ply(run / "parts" / part / "real_fused.ply")
    lab = np.zeros(len(pts), bool) if labels is None else labels
    colors = label_colors(lab) / 255.0
    c = pts.mean(axis=0)
    p = (pts - c) * 1e3
    fig = plt.figure(figsize=(9, 4.5))
    for k, (elev, azim) in enumerate(((35, -60), (60, 120))):
        ax = fig.add_subplot(1, 2, k + 1, projection="3d")
        order = np.argsort(lab)  # defects drawn last, on top
        ax.scatter(p[order, 0], p[order, 1], p[order, 2], c=colors[order], s=0.3, linewidths=0)
        ax.view_init(elev=elev, azim=azim)
        ax.set_box_aspect(np.ptp(p, axis=0) + 1e-6)
        ax.set_xlabel("x (mm)", fontsize=7)
        ax.set_ylabel("y (mm)", fontsize=7)
        ax.set_zlabel("z (mm)", fontsize=7)
        ax.tick_params(labelsize=6)
    fig.suptitle(
        f"{part}: {len(pts)} fused real points, {int(lab.sum())} labelled defect (red)", fontsize=9
    )
    fig.tight_layout()
    fig.savefig(out, dpi=130)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("run", type=Path)
    ap.add_argument("out_prefix")
    ap.add_argument("--part", default=None, help="part id (default: the first defective part)")
    ap.add_argument("--views", type=int, nargs="+", default=None, help="view ids to show")
    args = ap.parse_args()
    part = args.part
    if part is None:
        with open(args.run / "samples.jsonl") as f:
            recs = [json.loads(line) for line in f if line.strip()]
        part = next(r["part_id"] for r in recs if r.get("part_defective") and r.get("label"))
    views_figure(args.run, part, Path(f"{args.out_prefix}_views.jpg"), views=args.views)
    points_figure(args.run, part, Path(f"{args.out_prefix}_points.jpg"))
    print(f"{args.out_prefix}_views.jpg {args.out_prefix}_points.jpg ({part})")


if __name__ == "__main__":
    main()
