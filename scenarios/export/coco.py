"""COCO instance segmentation of the defects: ``out/annotations.json`` and ``out/images/``.

- images: the real RGB images (``real.png``, byte for byte) of the test split's samples that
  have ground truth, named ``images/<sample id>.png``; each image entry also carries
  ``twincell_id``, ``part_id`` and ``view_id``. The train split is left out (its parts are
  defect-free by construction, so it holds no instance), and so are samples without ground
  truth (label null, no gt_mask.png: nothing says where their defects are); the summary
  counts those. ``file_name`` is relative to ``out/images`` (COCO's image root).
- categories: the defect kinds of the run's parts (visible or not), sorted, ids from 1 in
  that order, supercategory ``defect``; plus ``unspecified`` when an anomalous image has no
  defect record that shows.
- annotations: one per connected region (8-connectivity) of the sample's ``gt_mask.png``,
  segmentation as compressed RLE (pycocotools, counts as str), ``area`` and ``bbox``
  ([x, y, w, h]) from that RLE, ``iscrowd`` 0. The run keeps one ground-truth mask per image,
  not one per defect, so each region's kind is attributed, and ``attributed_by`` says how:
  ``only_visible_kind`` (one kind shows: exact), ``nearest_defect_site`` (several kinds
  show: the kind of the visible defect whose site, ``position_mm`` in the object frame,
  projects nearest to the region), ``largest_visible_px`` (several show and the sites cannot
  be projected: the kind with the most visible pixels) or ``no_visible_kind``.

Needs pycocotools (``pip install 'pycocotools>=2.0.7'``) for the RLE encoding.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from scenarios.export import iter_progress, run_kinds, sample_dir, visible_kinds
from scenarios.interfaces import SpecError
from scenarios.rundir import load_mask

UNSPECIFIED = "unspecified"
ANNOTATIONS = "annotations.json"
#: 8-connectivity: diagonal neighbours belong to the same region.
_EIGHT = np.ones((3, 3), dtype=bool)


def _pycocotools_mask() -> Any:
    """pycocotools.mask, or SpecError saying what to install."""
    try:
        from pycocotools import mask
    except ImportError:
        raise SpecError(
            "--format coco: needs pycocotools, which is not installed; run "
            "`pip install 'pycocotools>=2.0.7'`"
        ) from None
    return mask


def check(run: Path, records: list[dict[str, Any]]) -> None:
    """SpecError, before anything is written, when pycocotools is missing or no test
    sample has ground truth (a hardware recording: its dataset would be empty)."""
    _pycocotools_mask()
    if not any(r["split"] == "test" and _has_truth(run, r) for r in records):
        from scenarios.interfaces import SpecError

        raise SpecError(
            f"--format coco: {run} has no test sample with ground truth (a recording "
            "without labels); label it first (docs/hardware.md: cell.replay.masks) and "
            "export the replay"
        )


def _has_truth(run: Path, r: dict[str, Any]) -> bool:
    """Whether a sample has a label and its ground-truth mask (not so on hardware)."""
    return r["label"] is not None and (run / "samples" / r["id"] / "gt_mask.png").is_file()


def regions(mask: np.ndarray) -> list[np.ndarray]:
    """The 8-connected regions of an (H, W) bool mask as (H, W) bool masks, in label order
    (scipy's raster order of each region's first pixel)."""
    from scipy import ndimage

    labels, n = ndimage.label(mask, structure=_EIGHT)
    return [labels == i for i in range(1, n + 1)]


def _site_pixels(record: dict[str, Any], defects: list[dict[str, Any]]) -> np.ndarray | None:
    """(D, 2) pixels (u, v) where each defect's site projects in the real image, or None
    when the record lacks the poses or a site (hardware, or a defect without
    ``position_mm``)."""
    from sim.geometry import project_points

    if record.get("T_base_obj") is None or any("position_mm" not in d for d in defects):
        return None
    p_obj = np.asarray([d["position_mm"] for d in defects], dtype=np.float64) / 1000.0
    T_cam_obj = np.linalg.inv(np.asarray(record["T_base_cam"], dtype=np.float64)) @ np.asarray(
        record["T_base_obj"], dtype=np.float64
    )
    p_cam = p_obj @ T_cam_obj[:3, :3].T + T_cam_obj[:3, 3]
    dist = record.get("dist")
    uv = project_points(p_cam, np.asarray(record["K"], dtype=np.float64), dist)
    return None if not np.isfinite(uv).all() else uv


def attribute(record: dict[str, Any], parts: list[np.ndarray]) -> list[tuple[str, str]]:
    """(kind, attributed_by) of each region of a sample's ground-truth mask (module doc)."""
    kinds = visible_kinds(record)
    if not kinds:
        return [(UNSPECIFIED, "no_visible_kind")] * len(parts)
    if len(kinds) == 1:
        return [(kinds[0], "only_visible_kind")] * len(parts)
    shown = [
        d for d in record.get("defects") or [] if d.get("visible_px") is None or d["visible_px"] > 0
    ]
    sites = _site_pixels(record, shown)
    if sites is None:
        top = max(shown, key=lambda d: (d.get("visible_px") or 0, d["kind"]))
        return [(top["kind"], "largest_visible_px")] * len(parts)
    found = []
    for part in parts:
        ys, xs = part.nonzero()
        # Distance from each site to the region's nearest pixel (px).
        gap = np.hypot(xs[None, :] - sites[:, :1], ys[None, :] - sites[:, 1:]).min(axis=1)
        found.append((shown[int(np.argmin(gap))]["kind"], "nearest_defect_site"))
    return found


def write(run: Path, records: list[dict[str, Any]], out: Path, progress: bool) -> dict[str, Any]:
    """Write the COCO layout of ``records`` into ``out``; returns the counts written."""
    mask_utils = _pycocotools_mask()
    tests = [r for r in records if r["split"] == "test"]
    chosen = [r for r in tests if _has_truth(run, r)]
    kinds = run_kinds(records)
    category_id = {k: i + 1 for i, k in enumerate(kinds)}
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    (out / "images").mkdir(parents=True, exist_ok=True)
    for r in iter_progress(chosen, len(chosen), "export coco", progress):
        d = sample_dir(run, r)
        W, H = (int(x) for x in r["image_size"])
        image_id = len(images) + 1
        name = f"{r['id']}.png"
        shutil.copyfile(d / "real.png", out / "images" / name)
        images.append(
            {
                "id": image_id,
                "file_name": name,
                "width": W,
                "height": H,
                "twincell_id": r["id"],
                "part_id": r["part_id"],
                "view_id": r["view_id"],
            }
        )
        parts = regions(load_mask(d / "gt_mask.png"))
        for part, (kind, how) in zip(parts, attribute(r, parts), strict=True):
            if kind not in category_id:  # UNSPECIFIED, after the run's kinds
                kinds.append(kind)
                category_id[kind] = len(kinds)
            rle = mask_utils.encode(np.asfortranarray(part.astype(np.uint8)))
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": category_id[kind],
                    "segmentation": {
                        "size": [int(x) for x in rle["size"]],
                        "counts": rle["counts"].decode("ascii"),
                    },
                    "area": float(mask_utils.area(rle)),
                    "bbox": [float(x) for x in mask_utils.toBbox(rle)],
                    "iscrowd": 0,
                    "attributed_by": how,
                }
            )
    dataset = {
        "info": {"description": f"twincell run {run.name}: defect instances of the test split"},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": [{"id": category_id[k], "name": k, "supercategory": "defect"} for k in kinds],
    }
    (out / ANNOTATIONS).write_text(json.dumps(dataset) + "\n")
    skipped = len(tests) - len(chosen)
    return {
        "images": len(images),
        "annotations": len(annotations),
        "categories": len(kinds),
        "skipped_no_ground_truth": skipped,
    }
