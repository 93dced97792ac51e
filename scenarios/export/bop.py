"""BOP layout (classic, bop_toolkit's ``dataset_params.get_split_params``): images, depth,
poses and masks of the run's parts as the 6D pose estimation tools read them.

```
out/camera.json                         fx, fy, cx, cy, width, height, depth_scale
out/models/obj_000001.ply               each part's as-built mesh, millimetres, object frame
out/models/models_info.json             diameter, min_x/y/z, size_x/y/z (mm) per object
out/<split>/<scene_id:06d>/rgb/<im_id:06d>.png
out/<split>/<scene_id:06d>/depth/<im_id:06d>.png       uint16, depth_mm = value * depth_scale
out/<split>/<scene_id:06d>/mask/<im_id:06d>_000000.png        the whole silhouette (0/255)
out/<split>/<scene_id:06d>/mask_visib/<im_id:06d>_000000.png  the visible part (0/255)
out/<split>/<scene_id:06d>/scene_camera.json, scene_gt.json, scene_gt_info.json
out/mapping.json                        object ids -> part ids, images -> sample ids
```

One object and one scene per part: BOP's objects are types, but each twincell part has its
own as-built mesh (its defects, its tolerances), so object id = scene id = the part's rank
among the run's sorted part ids, starting at 1; ``<split>`` is the sample's split. The world
frame is the robot base (``cam_R_w2c``, ``cam_t_w2c`` from ``T_base_cam``); a pose is
``inv(T_base_cam) @ T_base_obj`` in mm. A sample without ``T_base_obj`` (hardware) or whose
part has no mesh gets an empty list in scene_gt.json and scene_gt_info.json and no masks:
the cell's estimate ``T_base_obj_twin`` is not ground truth.

``mask_visib`` is the run's ``real_mask.png`` (the part pixels the renderer drew); ``mask``
rasterises the mesh at the pose (the silhouette including occluded pixels) joined with
``mask_visib``, so visible ⊆ all holds exactly; a sample without ``real_mask.png`` takes the
silhouette as visible (no occluder known). ``scene_gt_info`` follows bop_toolkit's
``scripts/calc_gt_info.py``: ``px_count_all`` counts the silhouette on a canvas three times the
image (truncated pixels too), bounding boxes are ``[x, y, x_max - x, y_max - y]`` and are
``[-1, -1, -1, -1]`` when nothing is visible. Depth is quantised to 0.1 mm (depth_scale 0.1)
unless an image holds depth beyond 6.5535 m, which then uses 1 mm. BOP cameras are pinhole
(``cam_K``): a run with lens distortion has its rgb (bilinear), depth and masks (nearest)
undistorted to the same K with twincell's lens model.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from scenarios.export import iter_progress, sample_dir
from scenarios.interfaces import RunDirError
from scenarios.rundir import load_mask, load_png, mask_to_png

log = logging.getLogger(__name__)

#: depth_scale candidates (mm per uint16 unit), finest first: 0.1 keeps sub-mm depth.
DEPTH_SCALES = (0.1, 1.0)
#: Faces with a vertex closer to the camera plane than this (m) are not rasterised.
MIN_Z_M = 1e-3
#: Triangle rows filled at once (bounds the rasteriser's memory).
_CHUNK = 1 << 20
MAPPING = "mapping.json"


def check(run: Path, records: list[dict[str, Any]]) -> None:
    """RunDirError when a sample's split cannot be a BOP split folder name."""
    for r in records:
        split = r.get("split")
        if not isinstance(split, str) or not split.isidentifier():
            raise RunDirError(f"sample {r['id']}: split {split!r} cannot be a BOP split folder")


def _load_mesh(run: Path, part_id: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(V, 3) float64 vertices (m, object frame) and (F, 3) int64 faces of a part's as-built
    mesh, or None when the run has none (a hardware run without a world model)."""
    import trimesh

    path = run / "meshes" / f"{part_id}.ply"
    if not path.is_file():
        return None
    mesh = trimesh.load(path, file_type="ply", force="mesh", process=False)
    if not isinstance(mesh, trimesh.Trimesh) or len(mesh.faces) == 0:
        raise RunDirError(f"RUN {run}: meshes/{part_id}.ply holds no triangle mesh")
    return np.asarray(mesh.vertices, dtype=np.float64), np.asarray(mesh.faces, dtype=np.int64)


def model_ply_bytes(vertices_mm: np.ndarray, faces: np.ndarray) -> bytes:
    """Binary little-endian PLY of a mesh, as bop_toolkit's ``inout.load_ply`` reads it:
    ``float x y z`` vertices (mm) and ``list uchar int vertex_indices`` triangles only."""
    import trimesh

    mesh = trimesh.Trimesh(vertices_mm, faces, process=False)
    data = mesh.export(file_type="ply", encoding="binary")
    if not isinstance(data, bytes):
        raise TypeError(f"trimesh exported {type(data).__name__}, not PLY bytes")
    return data


def diameter(points: np.ndarray) -> float:
    """Largest distance between two of the (N, 3) ``points`` (bop_toolkit's
    ``misc.calc_pts_diameter``), computed over their convex hull's vertices only."""
    from scipy.spatial import ConvexHull, QhullError
    from scipy.spatial.distance import pdist

    pts = np.asarray(points, dtype=np.float64)
    if len(pts) < 2:
        return 0.0
    try:
        pts = pts[ConvexHull(pts).vertices]  # the farthest pair is always on the hull
    except (QhullError, ValueError):
        pass  # flat or degenerate: all points
    return float(pdist(pts).max())


def model_info(vertices_mm: np.ndarray) -> dict[str, float]:
    """models_info.json's entry of a model: its 3D bounding box and diameter (mm)."""
    lo, hi = vertices_mm.min(axis=0), vertices_mm.max(axis=0)
    size = hi - lo
    return {
        "diameter": diameter(vertices_mm),
        "min_x": float(lo[0]),
        "min_y": float(lo[1]),
        "min_z": float(lo[2]),
        "size_x": float(size[0]),
        "size_y": float(size[1]),
        "size_z": float(size[2]),
    }


def fill_triangles(tri_uv: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(H, W) bool: the pixels whose centre lies in (or on the edge of) any of the (F, 3, 2)
    triangles (u, v in px, pixel centres at integer coordinates, as in K).

    The pixel-centre rule of a GPU rasteriser, so the silhouette matches the renderer's
    mask. Scanline fill, all triangles at once: each triangle's span on each pixel row it
    covers is where the row meets its edges, and the spans are summed into the rows as
    +1 at their first pixel and -1 after their last.
    """
    H, W = shape
    tri = np.asarray(tri_uv, dtype=np.float64)
    if len(tri) == 0:
        return np.zeros((H, W), dtype=bool)
    # Zero-area triangles are dropped: a GPU draws none.
    a, b, c = tri[:, 0], tri[:, 1], tri[:, 2]
    area2: np.ndarray = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (
        c[:, 0] - a[:, 0]
    )
    tri = tri[area2 != 0]
    ys = tri[:, :, 1]
    y_lo = np.maximum(np.ceil(ys.min(axis=1)), 0).astype(np.int64)
    y_hi = np.minimum(np.floor(ys.max(axis=1)), H - 1).astype(np.int64)
    rows = np.maximum(y_hi - y_lo + 1, 0)
    live = np.flatnonzero(rows)
    edges = ((0, 1), (1, 2), (2, 0))
    diff = np.zeros(H * (W + 1), dtype=np.int64)
    total = np.cumsum(rows[live])
    start = 0
    while start < len(live):
        # The next run of triangles with at most _CHUNK rows (at least one triangle).
        base = total[start - 1] if start else 0
        stop = max(start + 1, int(np.searchsorted(total, base + _CHUNK, side="right")))
        part, start = live[start:stop], stop
        n = rows[part]
        owner = np.repeat(part, n)
        y = (y_lo[owner] + np.arange(len(owner)) - np.repeat(np.cumsum(n) - n, n)).astype(
            np.float64
        )
        x_lo = np.full(len(owner), np.inf)
        x_hi = np.full(len(owner), -np.inf)
        for i, j in edges:
            px, py = tri[owner, i, 0], tri[owner, i, 1]
            qx, qy = tri[owner, j, 0], tri[owner, j, 1]
            on = (y >= np.minimum(py, qy)) & (y <= np.maximum(py, qy))
            dy = qy - py
            flat = dy == 0  # a horizontal edge on this row: both its ends bound the span
            # Rows off this edge may overflow here; their x is never used (``on``).
            with np.errstate(over="ignore", invalid="ignore"):
                # Multiply before dividing: a span end exactly on a pixel centre stays
                # exact (no 8.999... for 9), so edges through centres count as inside.
                x = px + np.where(flat, 0.0, (y - py) * (qx - px) / np.where(flat, 1.0, dy))
            lo = np.where(flat, np.minimum(px, qx), x)
            hi = np.where(flat, np.maximum(px, qx), x)
            x_lo = np.where(on, np.minimum(x_lo, lo), x_lo)
            x_hi = np.where(on, np.maximum(x_hi, hi), x_hi)
        first = np.maximum(np.ceil(x_lo), 0)
        last = np.minimum(np.floor(x_hi), W - 1)
        keep = first <= last  # also drops rows no edge reached (inf)
        row = y[keep].astype(np.int64) * (W + 1)
        diff += np.bincount(row + first[keep].astype(np.int64), minlength=len(diff))
        diff -= np.bincount(row + last[keep].astype(np.int64) + 1, minlength=len(diff))
    return np.cumsum(diff.reshape(H, W + 1), axis=1)[:, :W] > 0


def silhouette(
    vertices_m: np.ndarray,
    faces: np.ndarray,
    T_cam_obj: np.ndarray,
    K: np.ndarray,
    size: tuple[int, int],
) -> np.ndarray:
    """(3H, 3W) bool: the mesh's projection through the pinhole ``K`` at pose ``T_cam_obj``
    (metres) on a canvas three times the W x H image, the image at offset (W, H).

    The large canvas counts the pixels of a part truncated by the image border, as
    bop_toolkit's calc_gt_info does for ``px_count_all``. Faces reaching closer than
    ``MIN_Z_M`` to the camera plane are skipped.
    """
    W, H = size
    P = vertices_m @ T_cam_obj[:3, :3].T + T_cam_obj[:3, 3]
    z = P[:, 2]
    keep = (z[faces] > MIN_Z_M).all(axis=1)
    safe_z = np.where(z > MIN_Z_M, z, 1.0)
    u = K[0, 0] * P[:, 0] / safe_z + K[0, 1] * P[:, 1] / safe_z + K[0, 2] + W
    v = K[1, 1] * P[:, 1] / safe_z + K[1, 2] + H
    uv = np.column_stack([u, v])
    return fill_triangles(uv[faces[keep]], (3 * H, 3 * W))


def bbox_xywh(xs: np.ndarray, ys: np.ndarray) -> list[int]:
    """bop_toolkit's ``misc.calc_2d_bbox`` (no clipping): ``[x_min, y_min, x_max - x_min,
    y_max - y_min]`` of pixel coordinates."""
    return [int(xs.min()), int(ys.min()), int(xs.max() - xs.min()), int(ys.max() - ys.min())]


def gt_info(
    large: np.ndarray, visib: np.ndarray, depth: np.ndarray, size: tuple[int, int]
) -> dict[str, Any]:
    """scene_gt_info.json's entry of one instance, as bop_toolkit's calc_gt_info computes it.

    ``large`` (3H, 3W) bool: the whole silhouette (image at offset (W, H)); ``visib`` (H, W)
    bool: its visible part; ``depth`` (H, W): the depth image (0 = no measurement).
    """
    W, H = size
    mask = large[H : 2 * H, W : 2 * W]
    px_all = int(large.sum())
    px_visib = int(visib.sum())
    bbox_obj = bbox_visib = [-1, -1, -1, -1]
    if px_visib > 0:
        ys, xs = large.nonzero()
        bbox_obj = bbox_xywh(xs - W, ys - H)
        ys, xs = visib.nonzero()
        bbox_visib = bbox_xywh(xs, ys)
    return {
        "bbox_obj": bbox_obj,
        "bbox_visib": bbox_visib,
        "px_count_all": px_all,
        "px_count_valid": int((depth[mask] > 0).sum()),
        "px_count_visib": px_visib,
        "visib_fract": float(px_visib / px_all) if px_all > 0 else 0.0,
    }


def depth_to_png_units(depth_m: np.ndarray) -> tuple[np.ndarray, float]:
    """(H, W) float metres (0 = no value) -> ((H, W) uint16, depth_scale in mm per unit).

    The finest scale of ``DEPTH_SCALES`` that holds the image's largest depth; non-finite
    or negative depth becomes 0 (no value). RunDirError when even the coarsest overflows.
    """
    d = np.asarray(depth_m, dtype=np.float64)
    d = np.where(np.isfinite(d) & (d > 0), d, 0.0) * 1000.0
    top = float(d.max(initial=0.0))
    for scale in DEPTH_SCALES:
        if round(top / scale) <= np.iinfo(np.uint16).max:
            return np.round(d / scale).astype(np.uint16), scale
    raise RunDirError(
        f"depth {top / 1000:.1f} m does not fit a 16-bit BOP depth image even at "
        f"depth_scale {DEPTH_SCALES[-1]}"
    )


def has_distortion(dist: Any) -> bool:
    """Whether a record's ``dist`` (k1, k2, p1, p2, k3 or null) bends the image."""
    return dist is not None and bool(np.any(np.asarray(dist, dtype=np.float64) != 0.0))


def undistort_maps(
    K: np.ndarray, dist: np.ndarray, size: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """cv2.remap tables (H, W) float32: for each pixel of the pinhole image with the same K,
    where its ray lands in the distorted image (twincell's OpenCV lens model)."""
    from sim.geometry import project_points

    W, H = size
    u, v = np.meshgrid(np.arange(W, dtype=np.float64), np.arange(H, dtype=np.float64))
    y = (v.ravel() - K[1, 2]) / K[1, 1]
    x = (u.ravel() - K[0, 2] - K[0, 1] * y) / K[0, 0]
    uv = project_points(np.column_stack([x, y, np.ones_like(x)]), K, dist)
    return (
        uv[:, 0].reshape(H, W).astype(np.float32),
        uv[:, 1].reshape(H, W).astype(np.float32),
    )


def undistort(image: np.ndarray, maps: tuple[np.ndarray, np.ndarray], nearest: bool) -> np.ndarray:
    """An image resampled into the pinhole camera (``undistort_maps``); outside -> 0."""
    import cv2

    interp = cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR
    out = cv2.remap(
        image, maps[0], maps[1], interp, borderMode=cv2.BORDER_CONSTANT, borderValue=(0.0,)
    )
    return np.asarray(out, dtype=image.dtype)


def _save_png(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path, format="PNG")


def _save_json(path: Path, content: dict[Any, Any]) -> None:
    """JSON with one top-level key a line, keys in insertion order (bop_toolkit's style)."""
    lines = [f"  {json.dumps(str(k))}: {json.dumps(v, sort_keys=True)}" for k, v in content.items()]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("{\n" + ",\n".join(lines) + "\n}\n")


def _flat(a: np.ndarray) -> list[float]:
    return [float(x) for x in np.asarray(a, dtype=np.float64).ravel()]


def write(run: Path, records: list[dict[str, Any]], out: Path, progress: bool) -> dict[str, Any]:
    """Write the BOP layout of ``records`` into ``out``; returns the counts written."""
    part_ids = sorted({r["part_id"] for r in records})
    obj_id = {p: i + 1 for i, p in enumerate(part_ids)}
    meshes = {p: _load_mesh(run, p) for p in part_ids}
    infos: dict[int, dict[str, float]] = {}
    for p in part_ids:
        m = meshes[p]
        if m is None:
            log.warning("RUN %s: no meshes/%s.ply; its images get no ground-truth pose", run, p)
            continue
        v_mm = m[0] * 1000.0
        path = out / "models" / f"obj_{obj_id[p]:06d}.ply"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(model_ply_bytes(v_mm, m[1]))
        infos[obj_id[p]] = model_info(v_mm)
    if infos:
        _save_json(out / "models" / "models_info.json", infos)

    first = records[0]
    K0 = np.asarray(first["K"], dtype=np.float64)
    W0, H0 = (int(x) for x in first["image_size"])
    camera = {
        "cx": float(K0[0, 2]),
        "cy": float(K0[1, 2]),
        "depth_scale": DEPTH_SCALES[0],
        "fx": float(K0[0, 0]),
        "fy": float(K0[1, 1]),
        "height": H0,
        "width": W0,
    }
    (out / "camera.json").write_text(json.dumps(camera, indent=2) + "\n")

    scenes: dict[tuple[str, int], dict[str, dict[int, Any]]] = {}
    images = []
    counts: Counter[str] = Counter()
    for r in iter_progress(records, len(records), "export bop", progress):
        split, scene_id = r["split"], obj_id[r["part_id"]]
        scene = scenes.setdefault((split, scene_id), {"camera": {}, "gt": {}, "info": {}})
        im_id = len(scene["camera"])
        sdir = out / split / f"{scene_id:06d}"
        d = sample_dir(run, r)
        K = np.asarray(r["K"], dtype=np.float64)
        W, H = (int(x) for x in r["image_size"])
        depth_m = np.load(d / "real_depth.npy")
        visib = load_mask(d / "real_mask.png") if (d / "real_mask.png").is_file() else None
        rgb_path = sdir / "rgb" / f"{im_id:06d}.png"
        rgb_path.parent.mkdir(parents=True, exist_ok=True)
        if has_distortion(r.get("dist")):
            maps = undistort_maps(K, np.asarray(r["dist"], dtype=np.float64), (W, H))
            _save_png(rgb_path, undistort(load_png(d / "real.png"), maps, nearest=False))
            depth_m = undistort(np.asarray(depth_m, dtype=np.float32), maps, nearest=True)
            if visib is not None:
                visib = undistort(visib.astype(np.uint8), maps, nearest=True).astype(bool)
            counts["undistorted"] += 1
        else:
            shutil.copyfile(d / "real.png", rgb_path)
        depth, depth_scale = depth_to_png_units(depth_m)
        _save_png(sdir / "depth" / f"{im_id:06d}.png", depth)

        T_base_cam = np.asarray(r["T_base_cam"], dtype=np.float64)
        T_cam_base = np.linalg.inv(T_base_cam)
        scene["camera"][im_id] = {
            "cam_K": _flat(K),
            "cam_R_w2c": _flat(T_cam_base[:3, :3]),
            "cam_t_w2c": _flat(T_cam_base[:3, 3] * 1000.0),
            "depth_scale": depth_scale,
        }
        gts: list[dict[str, Any]] = []
        gt_infos: list[dict[str, Any]] = []
        mesh = meshes[r["part_id"]]
        if r.get("T_base_obj") is not None and mesh is not None:
            T_cam_obj = T_cam_base @ np.asarray(r["T_base_obj"], dtype=np.float64)
            gts.append(
                {
                    "cam_R_m2c": _flat(T_cam_obj[:3, :3]),
                    "cam_t_m2c": _flat(T_cam_obj[:3, 3] * 1000.0),
                    "obj_id": scene_id,
                }
            )
            large = silhouette(mesh[0], mesh[1], T_cam_obj, K, (W, H))
            inside = large[H : 2 * H, W : 2 * W]  # a view: joining visib updates ``large``
            if visib is None:
                visib = inside.copy()
            inside |= visib
            gt_infos.append(gt_info(large, visib, depth, (W, H)))
            name = f"{im_id:06d}_{0:06d}.png"
            _save_png(sdir / "mask" / name, mask_to_png(inside))
            _save_png(sdir / "mask_visib" / name, mask_to_png(visib))
            counts["poses"] += 1
        else:
            counts["images_without_pose"] += 1
        scene["gt"][im_id] = gts
        scene["info"][im_id] = gt_infos
        images.append({"split": split, "scene_id": scene_id, "im_id": im_id, "sample_id": r["id"]})
        counts["images"] += 1

    for (split, scene_id), scene in scenes.items():
        sdir = out / split / f"{scene_id:06d}"
        _save_json(sdir / "scene_camera.json", scene["camera"])
        _save_json(sdir / "scene_gt.json", scene["gt"])
        _save_json(sdir / "scene_gt_info.json", scene["info"])
    mapping = {"objects": {str(obj_id[p]): p for p in part_ids}, "images": images}
    (out / MAPPING).write_text(json.dumps(mapping, indent=1) + "\n")
    return {"objects": len(infos), "scenes": len(scenes), **dict(sorted(counts.items()))}
