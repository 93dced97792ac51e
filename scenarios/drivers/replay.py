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
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Recording:
    """A recorded run, indexed once: its manifest, its sample records by id (failed ones
    left out), its dropped viewpoints by (part id, view id), its parts (``PartPlan`` in
    part-id order, each with a representative record), its view ids, and each part's
    planned viewpoints ``T_obj_cam`` (captured and dropped)."""

    run: Path
    manifest: dict[str, Any]
    records: dict[str, dict[str, Any]]
    dropped: dict[tuple[str, int], dict[str, Any]]
    parts: tuple[PartPlan, ...]
    part_records: dict[str, dict[str, Any]]
    views: tuple[int, ...]
    planned: dict[str, dict[int, np.ndarray]]


@lru_cache(maxsize=4)
def _recording(run: str, stamp: float) -> Recording:
    """The ``Recording`` of the run at ``run`` (cached per process while its
    ``samples.jsonl`` is unchanged: ``stamp`` is its mtime)."""
    out = Path(run)
    manifest = read_manifest(out)
    if manifest is None:
        raise RunDirError(f"cell.replay.run {run}: not a twincell run directory")
    records = {r["id"]: r for r in sample_records(out / "samples.jsonl") if not is_failed(r)}
    dropped = {
        (d["part_id"], int(d["view_id"])): d
        for d in manifest.get("dropped_viewpoints", {}).get("items", [])
    }
    firsts: dict[str, dict[str, Any]] = {}
    planned: dict[str, dict[int, np.ndarray]] = {}
    for r in [*records.values(), *dropped.values()]:
        planned.setdefault(r["part_id"], {})[int(r["view_id"])] = np.asarray(
            r["T_obj_cam_planned"], dtype=np.float64
        )
    for r in records.values():
        firsts.setdefault(r["part_id"], r)
    families = list(dict.fromkeys(r["category"] for r in firsts.values()))
    parts = tuple(
        PartPlan(
            i,
            pid,
            r["split"],
            tuple(d["kind"] for d in r.get("defects", [])),
            families.index(r["category"]),
        )
        for i, (pid, r) in enumerate(sorted(firsts.items()))
    )
    views = tuple(sorted({v for per_part in planned.values() for v in per_part}))
    return Recording(out, manifest, records, dropped, parts, firsts, views, planned)


def recording(sc: Any) -> Recording:
    """The replayed run's ``Recording``."""
    run = Path(sc.cell.replay.run)
    index = run / "samples.jsonl"
    if not index.is_file():
        raise RunDirError(f"cell.replay.run {run}: no samples.jsonl; not a finished run")
    return _recording(str(run), index.stat().st_mtime)


def plan_parts(sc: Any) -> list[PartPlan]:
    """The recorded parts in part-id order (with their split, family order and the kinds
    of their defects)."""
    return list(recording(sc).parts)


def view_ids(sc: Any) -> list[int]:
    """Every view id the recording captured or dropped, sorted."""
    return list(recording(sc).views)


def rendered(sc: Any) -> tuple[str, ...]:
    """Nothing is rendered: the real images and the twins are the recording's."""
    return ()


def view_frame(sc: Any) -> str:
    """The recorded cell's view frame ("part" for a part-in-hand cell, else "cell")."""
    kind = recording(sc).manifest.get("scenario", {}).get("cell", {}).get("kind")
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
        self.recording = recording(sc)
        self.run = self.recording.run
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
            "replay": {"run": str(self.run), "digest": self.recording.manifest.get("digest")},
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
        self._record = source.recording.records.get(sid)
        self._dir = source.run / "samples" / sid
        self._points: tuple[np.ndarray, np.ndarray | None, np.ndarray] | None = None
        self.last_failure = ""

    def _require(self) -> dict[str, Any]:
        if self._record is None:
            raise RuntimeError("capture of a view the recording does not have")
        return self._record

    def part(self) -> PartInfo:
        """The recorded part: id, family, defects (as recorded) and acquisition record."""
        r = self._record or self._src.recording.part_records.get(self._plan.part_id, {})
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
        return dict(self._src.recording.planned.get(self._plan.part_id, {}))

    def move_to(self, view_id: int) -> bool:
        """True when the recording has this capture; else False with why."""
        if view_id != self._view:
            self.last_failure = f"the replay cell of view {self._view} cannot play view {view_id}"
            return False
        if self._record is not None:
            return True
        drop = self._src.recording.dropped.get((self._plan.part_id, view_id))
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


#: What a replay plays back as recorded, so its scenario's own values are not used: the
#: scenario fields, then the ``cell`` fields. Used: name, seed, detectors, decisions, expect.
IGNORED = (
    ("viewpoints", "part", "defects", "split", "errors", "appearance", "render"),
    ("robot", "camera", "hand_eye", "depth", "calibration", "pose_estimation", "part_in_hand"),
)


def ignored_fields(sc: Any) -> list[str]:
    """The fields of the replay scenario ``sc`` set to other than their defaults, which the
    replay does not use (the recording says them), spelled as in the scenario."""
    from scenarios.spec import parse_scenario

    default = parse_scenario({"name": "default"})  # the defaults as a load fills them in
    top, cell = IGNORED
    found = [f for f in top if getattr(sc, f) != getattr(default, f)]
    found += [f"cell.{f}" for f in cell if getattr(sc.cell, f) != getattr(default.cell, f)]
    return found


def check(sc: Any) -> None:
    """Refuse, before anything is written, drawn masks that fit no recorded sample (a name
    that is no sample id, or another size than its image); warn about scenario fields the
    replay does not use, a recording that did not finish and the unlabelled test samples
    that still lack a mask (the run then stays unscored)."""
    import logging

    from PIL import Image

    from scenarios.interfaces import SpecError, excerpt

    rec = recording(sc)
    run, records = rec.run, rec.records
    unused = ignored_fields(sc)
    if unused:
        logging.getLogger(__name__).warning(
            "cell.kind replay: %s set but not used; the recording's parts, views, images and "
            "poses are played back as recorded (remove them to silence this)",
            ", ".join(unused),
        )
    status = rec.manifest.get("status")
    if status not in ("complete", "unscored"):
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
