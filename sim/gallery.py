"""A contact sheet of the parts library and the defect taxonomy: ``twincell gallery``.

One cell per (family, defect kind): the real capture, the twin and the ground-truth
overlay (defect pixels red), side by side, made by the same cell, factory and label pass
as a run (the quickstart's camera, station and pose errors; a scenario may be given
instead). Rows are families, columns defect kinds; a kind a family cannot carry (a
structural kind on a part without sub-components) is a grey "n/a" cell.

Each cell shows the viewpoint of the planned set that sees the most defect pixels among
the two whose direction from the part is closest to the defect's; the camera is placed
there directly (no robot, so no viewpoint is unreachable).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

#: Pixels per image side in a gallery cell.
TILE = 128
LABEL_H = 18
GREY = (70, 70, 74)


@dataclass(frozen=True)
class Tile:
    """One gallery cell: real, twin and overlay (TILE x TILE RGB each), or ``note`` (n/a)."""

    family: str
    kind: str
    real: np.ndarray | None = None
    twin: np.ndarray | None = None
    overlay: np.ndarray | None = None
    visible_px: int = 0
    note: str = ""


def _scenario_for(base: Any, family: str, kind: str) -> Any:
    """``base`` with one defective part of ``family`` carrying ``kind``."""
    from scenarios.spec import FamilySpec

    fam = FamilySpec(family=family, test_defective=1, kinds=(kind,))
    part = base.part.model_copy(update={"families": (fam,)})
    # A gallery shows defects, not the acquisition: no calibration, no pose estimate.
    errors = base.errors.model_copy(update={"mode": "model"})
    cell = base.cell.model_copy(update={"kind": "eye_in_hand"})
    return base.model_copy(update={"part": part, "errors": errors, "cell": cell})


def _resize(img: np.ndarray, size: int) -> np.ndarray:
    from PIL import Image

    mode = "L" if img.ndim == 2 else "RGB"
    return np.asarray(Image.fromarray(img, mode).resize((size, size), Image.Resampling.BILINEAR))


def _crop_box(mask: np.ndarray, margin: float = 0.25) -> tuple[int, int, int, int]:
    """A square box around the part (``mask``) with a margin, inside the image."""
    H, W = mask.shape
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return 0, 0, W, H
    cx, cy = (xs.min() + xs.max()) / 2, (ys.min() + ys.max()) / 2
    half = max(xs.max() - xs.min(), ys.max() - ys.min()) * (0.5 + margin) + 4
    half = min(half, W / 2, H / 2)
    x0 = int(np.clip(cx - half, 0, W - 2 * half))
    y0 = int(np.clip(cy - half, 0, H - 2 * half))
    return x0, y0, int(x0 + 2 * half), int(y0 + 2 * half)


def overlay(rgb: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """``rgb`` with the ground-truth pixels tinted red and outlined."""
    from scipy import ndimage

    out = rgb.astype(np.float32)
    out[gt] = 0.45 * out[gt] + 0.55 * np.array([255.0, 20.0, 20.0])
    edge = gt & ~ndimage.binary_erosion(gt)
    out[edge] = (255, 0, 0)
    return out.astype(np.uint8)


def render_tile(renderers: Any, sc: Any, family: str, kind: str, seed: int) -> Tile:
    """Render the cell of (family, kind) with ``renderers`` (a
    ``sim.cells.factory.RendererPool``)."""
    from scenarios.engine import plan_parts
    from scenarios.interfaces import GeometryError, SpecError
    from sim.cells.factory import SimCells

    try:
        sc_fk = _scenario_for(sc, family, kind)
        from sim.defects import check_applicable
        from sim.parts import get_family

        check_applicable(kind, [c.name for c in get_family(family).card.components])
        plan = plan_parts(sc_fk)[0]
        cells = SimCells(sc_fk, seed, renderers)
        cell = cells.cell(plan, 0, 0.0)
    except (SpecError, GeometryError) as exc:
        return Tile(family, kind, note=str(exc).split(":")[-1].strip()[:40] or "n/a")
    try:
        return _tile(cell, family, kind)
    finally:
        cells.close()


def _tile(cell: Any, family: str, kind: str) -> Tile:
    """The tile of one defective part's cell: the view that shows the defect best."""
    placement = cell.placement
    part = placement.part
    views = {v: placement.T_base_obj_twin @ T for v, T in cell.plan_viewpoints().items()}
    # The defect's direction from the part centre (object frame -> base frame).
    pos = np.asarray(part.defects[0].record.params.get("position_mm", [0, 0, 0]), float) * 1e-3
    centre = placement.center_obj
    d_obj = pos - centre
    R = placement.T_base_obj[:3, :3]
    d = R @ d_obj
    d = d / (np.linalg.norm(d) + 1e-12)
    c_base = placement.T_base_obj[:3, :3] @ centre + placement.T_base_obj[:3, 3]
    ranked = sorted(
        views.items(),
        key=lambda kv: (
            -float(np.dot((kv[1][:3, 3] - c_base) / np.linalg.norm(kv[1][:3, 3] - c_base), d))
        ),
    )
    best = None
    for _, T in ranked[:2]:
        cell.place_camera(T)
        cap = cell.capture_pair()
        px = int(cap.gt_mask.sum())
        if best is None or px > best[1]:
            best = (cap, px)
    assert best is not None
    cap, px = best
    x0, y0, x1, y1 = _crop_box(cap.real_mask | cap.twin_mask)

    def crop(img: np.ndarray) -> np.ndarray:
        return _resize(np.ascontiguousarray(img[y0:y1, x0:x1]), TILE)

    return Tile(
        family,
        kind,
        crop(cap.real.rgb),
        crop(cap.twin.rgb),
        crop(overlay(cap.real.rgb, cap.gt_mask)),
        px,
    )


def _text(img: Any, xy: tuple[int, int], text: str, fill: tuple[int, int, int]) -> None:
    from PIL import ImageDraw

    ImageDraw.Draw(img).text(xy, text, fill=fill)


def compose(tiles: Sequence[Tile], families: Sequence[str], kinds: Sequence[str]) -> Any:
    """The contact sheet (a PIL image): rows are families, columns kinds."""
    from PIL import Image

    cw, ch = 3 * TILE + 6, TILE + LABEL_H + 4
    left, top = 130, 22
    sheet = Image.new("RGB", (left + cw * len(kinds), top + ch * len(families)), (20, 20, 22))
    by = {(t.family, t.kind): t for t in tiles}
    for c, k in enumerate(kinds):
        _text(sheet, (left + c * cw + 4, 6), f"{k}   (real | twin | ground truth)", (230, 230, 230))
    for r, f in enumerate(families):
        _text(sheet, (6, top + r * ch + TILE // 2), f, (230, 230, 230))
        for c, k in enumerate(kinds):
            t = by[(f, k)]
            x, y = left + c * cw, top + r * ch
            if t.real is None or t.twin is None or t.overlay is None:
                sheet.paste(Image.new("RGB", (3 * TILE + 4, TILE), GREY), (x, y))
                _text(sheet, (x + 8, y + TILE // 2 - 6), f"n/a: {t.note}", (200, 200, 200))
                continue
            for j, img in enumerate((t.real, t.twin, t.overlay)):
                sheet.paste(Image.fromarray(img), (x + j * (TILE + 2), y))
            note = f"{t.visible_px} px" if t.visible_px else "not visible from here"
            _text(sheet, (x + 4, y + TILE + 3), note, (190, 190, 190))
    return sheet


def make_gallery(
    out: Path,
    families: Sequence[str],
    kinds: Sequence[str],
    sc: Any,
    seed: int = 0,
    progress: Callable[[int], None] | None = None,
) -> list[Tile]:
    """Render every (family, kind) cell and write the sheet to ``out`` (PNG, atomically).

    ``progress`` is called with 1 after each cell.
    """
    from sim.cells.factory import RendererPool

    worker = RendererPool()
    tiles = []
    try:
        for f in families:
            for k in kinds:
                tiles.append(render_tile(worker, sc, f, k, seed))
                if progress is not None:
                    progress(1)
    finally:
        worker.close()
    sheet = compose(tiles, families, kinds)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    sheet.save(tmp, format="PNG")
    tmp.replace(out)
    return tiles
