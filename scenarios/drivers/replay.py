"""The replay cell (``cell.kind: replay``): a recorded run directory played back through
``Cell``, so every detector and scenario runs on recorded data unchanged.

The recording may come from simulation or from hardware. Its parts, views, images,
poses, depth and points are played back as recorded (the twin too: it was rendered at
recording time, at the pose the robot reported); the replay's own scenario adds the
detectors and decisions. A replay of a simulated run scores exactly as the run did.

Ground truth is the recording's; a hardware recording has none, so its samples stay
unlabelled, unless ``cell.replay.masks`` names a directory of masks drawn later
(``<sample id>.png``, non-zero = defect): those samples get that mask as their ground
truth (their points are labelled by projecting them into it), and the part pixels
(``real_mask``) are taken from the twin's, the best a drawn mask can say.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from scenarios.interfaces import (
    DefectRecord,
    GroundTruth,
    Observation,
    PartInfo,
    PartPlan,
    RunDirError,
)
from scenarios.rundir import is_failed, load_mask, load_png, read_manifest, sample_records


@lru_cache(maxsize=4)
def _recording(run: str, stamp: float) -> tuple[dict[str, Any], dict[str, dict[str, Any]], list]:
    """(manifest, {sample id: record}, dropped viewpoints) of the run at ``run`` (cached
    per process while its ``samples.jsonl`` is unchanged: ``stamp`` is its mtime)."""
    out = Path(run)
    manifest = read_manifest(out)
    if manifest is None:
        raise RunDirError(f"cell.replay.run {run}: not a twincell run directory")
    records = {r["id"]: r for r in sample_records(out / "samples.jsonl") if not is_failed(r)}
    dropped = list(manifest.get("dropped_viewpoints", {}).get("items", []))
    return manifest, records, dropped


def recording(sc: Any) -> tuple[Path, dict[str, Any], dict[str, dict[str, Any]], list]:
    """(run directory, manifest, records by id, dropped viewpoints) of the replayed run."""
    run = Path(sc.cell.replay.run)
    index = run / "samples.jsonl"
    if not index.is_file():
        raise RunDirError(f"cell.replay.run {run}: no samples.jsonl; not a finished run")
    return (run, *_recording(str(run), index.stat().st_mtime))


def plan_parts(sc: Any) -> list[PartPlan]:
    """The recorded parts in their recorded order (with their split, family order and the
    kinds of their defects)."""
    _, _, records, _ = recording(sc)
    parts: dict[str, dict[str, Any]] = {}
    for r in records.values():
        parts.setdefault(r["part_id"], r)
    families = list(dict.fromkeys(r["category"] for r in parts.values()))
    return [
        PartPlan(
            i,
            pid,
            r["split"],
            tuple(d["kind"] for d in r.get("defects", [])),
            families.index(r["category"]),
        )
        for i, (pid, r) in enumerate(sorted(parts.items()))
    ]


def view_ids(sc: Any) -> list[int]:
    """Every view id the recording captured or dropped, sorted."""
    _, _, records, dropped = recording(sc)
    return sorted(
        {int(r["view_id"]) for r in records.values()} | {int(d["view_id"]) for d in dropped}
    )


def view_frame(sc: Any) -> str:
    """The recorded cell's view frame ("part" for a part-in-hand cell, else "cell")."""
    _, manifest, _, _ = recording(sc)
    kind = manifest.get("scenario", {}).get("cell", {}).get("kind")
    return "part" if kind == "part_in_hand" else "cell"


def open_cells(
    sc: Any, seed: int, render_threads: int = 0, prior: dict[str, Any] | None = None
) -> ReplayCells:
    """The ``CellSource`` of a replay. (A changed recording or changed masks are another
    replay: ``cell.replay.sha256`` is in the scenario's digest, so an ``--out`` holding the
    old one is refused before anything is written.)"""
    return ReplayCells(sc)


class ReplayCells:
    """The cells of a replay: one per recorded (part, view)."""

    def __init__(self, sc: Any) -> None:
        self.sc = sc
        self.run, self.manifest, self.records, dropped = recording(sc)
        self.dropped = {(d["part_id"], int(d["view_id"])): d for d in dropped}
        masks = sc.cell.replay.masks
        self.masks = Path(masks) if masks is not None else None

    def cell(self, plan: PartPlan, view_id: int, progress: float) -> ReplayCell:
        """The recorded capture of view ``view_id`` of part ``plan``."""
        return ReplayCell(self, plan, view_id)

    def part_files(self, plan: PartPlan) -> dict[str, bytes]:
        """The recorded part mesh, where the recording has one."""
        path = self.run / "meshes" / f"{plan.part_id}.ply"
        return {"mesh.ply": path.read_bytes()} if path.is_file() else {}

    def run_info(self) -> dict[str, Any]:
        """Which run is replayed (path and scenario digest) and what its cell measured."""
        recorded = self.run / "cell.json"
        return {
            "replay": {"run": str(self.run), "digest": self.manifest.get("digest")},
            "recorded": json.loads(recorded.read_text()) if recorded.is_file() else {},
        }

    def close(self) -> None:
        """Nothing to release."""


def _pose(T: Any) -> np.ndarray | None:
    return None if T is None else np.asarray(T, dtype=np.float64)


class ReplayCell:
    """One recorded capture behind ``Cell``: moving to a view that was recorded succeeds; to
    one the recording dropped fails with the recorded reason."""

    def __init__(self, source: ReplayCells, plan: PartPlan, view_id: int) -> None:
        self._src = source
        self._plan = plan
        self._view = view_id
        from scenarios.engine import sample_id

        sid = sample_id(plan, view_id)
        self._record = source.records.get(sid)
        self._dir = source.run / "samples" / sid
        self._points: tuple[np.ndarray, np.ndarray | None, np.ndarray] | None = None
        self.last_failure = ""

    def _require(self) -> dict[str, Any]:
        if self._record is None:
            raise RuntimeError("capture of a view the recording does not have")
        return self._record

    def part(self) -> PartInfo:
        """The recorded part: id, family, defects (as recorded) and acquisition record."""
        r = self._record or next(
            (x for x in self._src.records.values() if x["part_id"] == self._plan.part_id), {}
        )
        defects = tuple(
            DefectRecord(
                d["kind"],
                float(d["size_mm"]),
                {k: v for k, v in d.items() if k not in ("kind", "size_mm", "visible_px")},
            )
            for d in r.get("defects", [])
        )
        return PartInfo(
            self._plan.part_id, r.get("category", ""), defects, r.get("acquisition", {})
        )

    def plan_viewpoints(self) -> dict[int, np.ndarray]:
        """The recorded planned viewpoints ``T_obj_cam`` of this part."""
        out: dict[int, np.ndarray] = {}
        pid = self._plan.part_id
        for r in [*self._src.records.values(), *self._src.dropped.values()]:
            if r["part_id"] == pid:
                out[int(r["view_id"])] = np.asarray(r["T_obj_cam_planned"], dtype=np.float64)
        return out

    def move_to(self, view_id: int) -> bool:
        """True when the recording has this capture; else False with why."""
        if view_id != self._view:
            self.last_failure = f"the replay cell of view {self._view} cannot play view {view_id}"
            return False
        if self._record is not None:
            return True
        drop = self._src.dropped.get((self._plan.part_id, view_id))
        self.last_failure = drop["reason"] if drop else "not in the recording (failed or absent)"
        return False

    def _cloud(self) -> tuple[np.ndarray, np.ndarray | None, np.ndarray] | None:
        """(real points, their recorded labels or None, twin points), when recorded."""
        if self._points is None and (self._dir / "real_points.ply").exists():
            from sim.points import read_ply

            real, labels = read_ply(self._dir / "real_points.ply")
            twin, _ = read_ply(self._dir / "twin_points.ply")
            self._points = (real, labels, twin)
        return self._points

    def _observation(self, side: str, **extra: Any) -> Observation:
        """The recorded ``real`` or ``twin`` observation: its image, the recorded lens and
        camera pose, the part pose where recorded, and ``extra`` fields."""
        r = self._require()
        twin = side == "twin"
        cloud = self._cloud()
        dist = None if r.get("dist") is None else np.asarray(r["dist"], dtype=np.float64)
        T_obj = _pose(r.get("T_base_obj_twin" if twin else "T_base_obj"))
        return Observation(
            load_png(self._dir / f"{side}.png"),
            np.asarray(r["K"], dtype=np.float64),
            np.asarray(r["T_base_cam_twin" if twin else "T_base_cam"], dtype=np.float64),
            dist=dist,
            meta={} if T_obj is None else {"T_base_obj": T_obj},
            points=None if cloud is None else cloud[2 if twin else 0],
            **extra,
        )

    def capture(self) -> Observation:
        """The recorded real image, depth and points, at the recorded camera pose."""
        return self._observation("real", depth=np.load(self._dir / "real_depth.npy"))

    def render_twin(self) -> Observation:
        """The recorded twin (rendered at recording time, at the pose the robot reported)."""
        return self._observation("twin", mask=load_mask(self._dir / "twin_mask.png"))

    def ground_truth(self) -> GroundTruth | None:
        """The recorded ground truth; a mask drawn later (``cell.replay.masks``); or None."""
        r = self._require()
        cloud = self._cloud()
        if r["label"] is not None:
            px = tuple(int(d.get("visible_px", 0)) for d in r.get("defects", []))
            return GroundTruth(
                load_mask(self._dir / "real_mask.png"),
                load_mask(self._dir / "gt_mask.png"),
                px,
                None if cloud is None else cloud[1],
            )
        masks = self._src.masks
        drawn = None if masks is None else masks / f"{r['id']}.png"
        if drawn is None or not drawn.is_file():
            return None
        gt = read_drawn_mask(drawn)
        labels = None
        if cloud is not None:
            labels = _project_labels(cloud[0], r, gt)
        defects = r.get("defects", [])
        return GroundTruth(
            load_mask(self._dir / "twin_mask.png"), gt, tuple(0 for _ in defects), labels
        )


def read_drawn_mask(path: Path) -> np.ndarray:
    """A mask drawn later: (H, W) bool, True where its grey value (PIL mode ``L``: colour
    averaged, alpha ignored) is non-zero."""
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("L")) > 0


def check(sc: Any) -> None:
    """Refuse, before anything is written, drawn masks that fit no recorded sample (a name
    that is no sample id, or another size than its image); warn about a recording that did
    not finish and about the unlabelled test samples that still lack a mask (the run then
    stays unscored)."""
    import logging

    from PIL import Image

    from scenarios.interfaces import SpecError, excerpt

    run, manifest, records, _ = recording(sc)
    status = manifest.get("status")
    if status not in ("complete", "unscored"):
        import logging

        logging.getLogger(__name__).warning(
            "cell.replay.run %s: the recording is %s, not finished; its missing samples are "
            "replayed as dropped (rerun the recording to finish it first)",
            run,
            status,
        )
    masks = sc.cell.replay.masks
    if masks is None:
        return
    for m in sorted(Path(masks).glob("*.png")):
        r = records.get(m.stem)
        if r is None:
            close = ", ".join(sorted(records)[:3])
            raise SpecError(
                f"cell.replay.masks: {excerpt(m.name, 60)} names no recorded sample; a mask "
                f"is <sample id>.png (e.g. {close})"
            )
        with Image.open(m) as im:
            size = list(im.size)
        if size != list(r["image_size"]):
            raise SpecError(
                f"cell.replay.masks: {m.name} is {size[0]}x{size[1]} px, its image "
                f"{r['image_size'][0]}x{r['image_size'][1]}"
            )
    missing = [
        i
        for i, r in records.items()
        if r["split"] == "test" and r["label"] is None and not (Path(masks) / f"{i}.png").exists()
    ]
    if missing:
        logging.getLogger(__name__).warning(
            "cell.replay.masks: %d unlabelled test sample(s) have no mask (first: %s); the "
            "run is scored only when every test sample has a label",
            len(missing),
            missing[0],
        )


def _project_labels(points: np.ndarray, record: dict[str, Any], mask: np.ndarray) -> np.ndarray:
    """Per-point labels (N,) from a drawn mask: each base-frame point projected into the
    image with the recorded lens and camera pose."""
    from sim.geometry import invert_pose, project_points, transform_points

    p = transform_points(invert_pose(np.asarray(record["T_base_cam"], dtype=np.float64)), points)
    uv = project_points(p, np.asarray(record["K"], dtype=np.float64), record.get("dist"))
    ok = np.all(np.isfinite(uv), axis=1)
    px = np.full(uv.shape, -1, dtype=np.int64)
    px[ok] = np.round(uv[ok]).astype(np.int64)
    h, w = mask.shape
    inside = (px[:, 0] >= 0) & (px[:, 0] < w) & (px[:, 1] >= 0) & (px[:, 1] < h)
    labels = np.zeros(len(points), dtype=bool)
    labels[inside] = mask[px[inside, 1], px[inside, 0]]
    return labels
