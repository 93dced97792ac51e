"""Render the same captures with both "real" backends, side by side, to a PNG.

    .venv/bin/python scripts/compare_backends.py                      # r2t-flange, 4 views
    .venv/bin/python scripts/compare_backends.py --scenario my.yaml --samples 0 5 9 --out x.png

Columns: real (pyrender) | real (Blender) | twin | ground truth (red on the Blender real).
Both real renders see the same part, pose, station and camera draws (the backend is not part
of any draw), so the figure shows what each backend makes of one capture.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("PYOPENGL_PLATFORM", "egl")

import numpy as np  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

from scenarios import engine  # noqa: E402
from scenarios.interfaces import TwincellError  # noqa: E402
from scenarios.spec import load_scenario, parse_scenario  # noqa: E402


def _with_real(data: dict, backend: str) -> object:
    data = {**data, "render": {**data["render"], "real": backend}}
    return parse_scenario(data, f"{data['name']} (real: {backend})")


def _overlay(rgb: np.ndarray, mask: np.ndarray) -> np.ndarray:
    out = rgb.astype(np.float32)
    out[mask] = 0.4 * out[mask] + 0.6 * np.array([255.0, 0.0, 0.0])
    return out.astype(np.uint8)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenario", default="r2t-flange", help="bundled name or YAML path")
    ap.add_argument("--samples", type=int, nargs="+", default=None, help="sample indices")
    ap.add_argument("--out", type=Path, default=Path("docs/figures/backends.jpg"))
    args = ap.parse_args()
    try:
        base = load_scenario(args.scenario).model_dump(mode="json")
    except TwincellError as exc:
        print(f"compare_backends: {exc}", file=sys.stderr)
        return 2
    scs = {b: _with_real(base, b) for b in ("pyrender", "blender")}
    table = engine.sample_table(scs["pyrender"])
    wanted = args.samples
    if wanted is None:  # the first captured view of four different defective test parts
        wanted = [i for i, (p, v) in enumerate(table) if p.kinds and v == 4][:4]
    rows = []
    for i in wanted:
        if not 0 <= i < len(table):
            print(
                f"compare_backends: --samples: {i} is not in 0..{len(table) - 1}", file=sys.stderr
            )
            return 2
        got = {b: engine.run_sample(sc, sc.seed, i) for b, sc in scs.items()}  # type: ignore[attr-defined]
        if any(s.arrays is None for s in got.values()):
            print(f"sample {i}: not captured ({got['pyrender'].dropped or got['blender'].failed})")
            continue
        p, b = got["pyrender"].arrays, got["blender"].arrays
        assert p is not None and b is not None
        rows.append(
            np.concatenate(
                [
                    p["real_rgb"],
                    b["real_rgb"],
                    b["twin_rgb"],
                    _overlay(b["real_rgb"], b["gt_mask"]),
                ],
                axis=1,
            )
        )
    engine.close_worker()
    if not rows:
        print("compare_backends: no sample was captured", file=sys.stderr)
        return 1
    grid = np.concatenate(rows, axis=0)
    head = 18
    img = Image.new("RGB", (grid.shape[1], grid.shape[0] + head), "white")
    img.paste(Image.fromarray(grid), (0, head))
    draw = ImageDraw.Draw(img)
    w = grid.shape[1] // 4
    for k, title in enumerate(("real: pyrender", "real: Blender", "twin", "ground truth")):
        draw.text((k * w + 6, 3), title, fill="black")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    img.save(args.out)
    print(f"wrote {args.out} ({len(rows)} captures)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
