"""The scenario engine: simulate pose-matched pairs, fit and run detectors, score, report.

Every sample is a pure function of (scenario, seed, sample index): its part, placement,
defects, errors and look come from generators seeded by those numbers alone, and inverse
kinematics always starts from the same postures. So samples can run in any order, in any
process, and a rerun reproduces the same bytes. Workers cache the expensive objects (GL
context, PyBullet scene, part booleans) but never state that changes a result.
"""

from __future__ import annotations

import csv
import io
import logging
import multiprocessing
import platform
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

import detectors
from scenarios.interfaces import Prediction, RunDirError, Sample
from scenarios.metrics import compute_metrics
from scenarios.rundir import (
    load_sample,
    read_json_if,
    read_sample_record,
    write_bytes,
    write_json,
    write_jsonl,
    write_npy,
    write_sample_dir,
    write_text,
)
from scenarios.spec import Scenario

log = logging.getLogger(__name__)

# Independent random streams: each draw is keyed by (seed, stream, ids...).
STREAM_PLACEMENT, STREAM_DEFECTS, STREAM_OBJECT_ERROR, STREAM_HAND_EYE, STREAM_CAPTURE = range(1, 6)


def rng_for(seed: int, stream: int, *ids: int) -> np.random.Generator:
    """A generator keyed by the seed, a stream number and ids (part index, view id...)."""
    return np.random.default_rng([int(seed), int(stream), *map(int, ids)])


@dataclass(frozen=True)
class PartPlan:
    """One physical part of the scenario: its id, split and the defect kinds it carries."""

    index: int
    part_id: str
    split: str
    kinds: tuple[str, ...]


def plan_parts(sc: Scenario) -> list[PartPlan]:
    """Parts in a fixed order: training normals, test normals, then defective test parts.

    Defective parts take ``per_part`` kinds each, cycling through ``defects.kinds`` so every
    listed kind appears as soon as there are enough defective parts.
    """
    plans: list[PartPlan] = []
    sp = sc.split
    for _ in range(sp.train_normal):
        plans.append(PartPlan(len(plans), f"part{len(plans):03d}", "train", ()))
    for _ in range(sp.test_normal):
        plans.append(PartPlan(len(plans), f"part{len(plans):03d}", "test", ()))
    kinds = sc.defects.kinds
    for j in range(sp.test_defective):
        ks = tuple(
            kinds[(j * sc.defects.per_part + k) % len(kinds)] for k in range(sc.defects.per_part)
        )
        plans.append(PartPlan(len(plans), f"part{len(plans):03d}", "test", ks))
    return plans


def planned_view_ids(sc: Scenario) -> list[int]:
    """View ids of the viewpoint set (they depend only on the icosphere and elevations)."""
    from sim.viewpoints import plan_viewpoints

    vp = sc.viewpoints
    return [
        v.view_id
        for v in plan_viewpoints(
            np.zeros(3), vp.radius_m, vp.subdivisions, vp.elevation_min_deg, vp.elevation_max_deg
        )
    ]


def sample_table(sc: Scenario) -> list[tuple[PartPlan, int]]:
    """Sample index -> (part, view id): parts outer, views inner."""
    views = planned_view_ids(sc)
    return [(p, v) for p in plan_parts(sc) for v in views]


def sample_id(part: PartPlan, view_id: int) -> str:
    """The sample id: ``<part_id>_v<view_id>``."""
    return f"{part.part_id}_v{view_id:03d}"


class _Worker:
    """Per-process cache of the GL renderer and of the last parts' scenes."""

    def __init__(self) -> None:
        from sim.pyrender_backend import PyrenderRenderer

        self.renderer = PyrenderRenderer()
        self._parts: dict[tuple[str, int, int], Any] = {}

    def part(self, sc: Scenario, seed: int, plan: PartPlan) -> Any:
        key = (sc.digest(), seed, plan.index)
        if key not in self._parts:
            from sim.robot_scene import RobotScene

            for old in list(self._parts):  # keep one part: tasks go part by part
                self._parts.pop(old)[1].close()
            placement = build_placement(sc, seed, plan)
            scene = RobotScene(sc.cell.robot, placement.T_base_obj, placement.part.nominal.bounds)
            self._parts[key] = (placement, scene)
        return self._parts[key]


_WORKER: _Worker | None = None


def _worker() -> _Worker:
    global _WORKER
    if _WORKER is None:
        _WORKER = _Worker()
    return _WORKER


def cell_setup(sc: Scenario, seed: int) -> Any:
    """The run-wide cell setup; the believed hand-eye carries the seeded calibration error."""
    from sim.appearance import AppearanceGap
    from sim.cell import CameraModel, CellSetup, ViewpointPlan
    from sim.geometry import intrinsics_from_fov, pose_from_xyz_rpy
    from sim.pose_errors import PoseErrorModel

    cam = sc.cell.camera
    K = intrinsics_from_fov(cam.width, cam.height, np.radians(cam.hfov_deg))
    he = sc.cell.hand_eye
    T_ee_cam = pose_from_xyz_rpy(he.xyz_m, np.radians(he.rpy_deg))
    err = sc.errors
    he_err = PoseErrorModel("hand_eye", err.hand_eye.translation_mm, err.hand_eye.rotation_deg)
    T_ee_cam_believed = T_ee_cam @ he_err.sample(rng_for(seed, STREAM_HAND_EYE))
    vp = sc.viewpoints
    return CellSetup(
        robot=sc.cell.robot,
        camera=CameraModel(
            cam.width, cam.height, K, np.asarray(cam.distortion) if any(cam.distortion) else None
        ),
        T_ee_cam=T_ee_cam,
        T_ee_cam_believed=T_ee_cam_believed,
        viewpoints=ViewpointPlan(
            vp.radius_m, vp.subdivisions, vp.elevation_min_deg, vp.elevation_max_deg
        ),
        robot_error=PoseErrorModel("robot", err.robot.translation_mm, err.robot.rotation_deg),
        appearance=AppearanceGap(**sc.appearance.model_dump()),
    )


def build_placement(sc: Scenario, seed: int, plan: PartPlan) -> Any:
    """The part instance (with defects), its true pose and the believed (estimated) pose."""
    from sim.cell import PartPlacement
    from sim.defects import build_part_instance, make_defects
    from sim.geometry import pose_from_xyz_rpy
    from sim.parts import build_nominal_solid, manifold_to_trimesh
    from sim.pose_errors import PoseErrorModel

    solid = build_nominal_solid(sc.part.category, sc.part.params)
    defects = []
    if plan.kinds:
        nominal, _ = manifold_to_trimesh(solid)
        defects = make_defects(
            nominal, plan.kinds, rng_for(seed, STREAM_DEFECTS, plan.index), sc.defects.sizes_mm
        )
    part = build_part_instance(plan.part_id, sc.part.category, solid, defects)
    pl = sc.part.placement
    rng = rng_for(seed, STREAM_PLACEMENT, plan.index)
    # Uniform in a disc of radius position_jitter_mm, yaw uniform in +-yaw_jitter_deg.
    r = pl.position_jitter_mm * 1e-3 * np.sqrt(rng.random())
    a = rng.uniform(0, 2 * np.pi)
    yaw = np.radians(rng.uniform(-pl.yaw_jitter_deg, pl.yaw_jitter_deg))
    xyz = (pl.position_m[0] + r * np.cos(a), pl.position_m[1] + r * np.sin(a), 0.0)
    T_base_obj = pose_from_xyz_rpy(xyz, (0.0, 0.0, yaw))
    oe = sc.errors.object_pose
    E = PoseErrorModel("object_pose", oe.translation_mm, oe.rotation_deg).sample(
        rng_for(seed, STREAM_OBJECT_ERROR, plan.index)
    )
    return PartPlacement(part, T_base_obj, T_base_obj @ E)


@dataclass(frozen=True)
class SimulatedSample:
    """A simulated sample: its record and arrays, or ``dropped`` with the reason."""

    record: dict[str, Any]
    arrays: dict[str, np.ndarray] | None
    dropped: str = ""


def _pose(T: np.ndarray) -> list[list[float]]:
    return np.asarray(T, dtype=np.float64).tolist()


def run_sample(sc: Scenario, seed: int, index: int) -> SimulatedSample:
    """Simulate sample ``index`` of the scenario: a pure function of its three arguments."""
    from sim.cell import SimCell

    part_plan, view_id = sample_table(sc)[index]
    w = _worker()
    placement, scene = w.part(sc, seed, part_plan)
    setup = cell_setup(sc, seed)
    cell = SimCell(
        setup, placement, scene, w.renderer, rng_for(seed, STREAM_CAPTURE, part_plan.index, view_id)
    )
    T_plan = cell.plan_viewpoints()[view_id]
    base = {"id": sample_id(part_plan, view_id), "part_id": part_plan.part_id, "view_id": view_id}
    if not cell.move_to(T_plan):
        where = {"T_base_cam_planned": _pose(T_plan), "T_base_obj": _pose(placement.T_base_obj)}
        return SimulatedSample({**base, **where}, None, dropped=cell.last_failure)
    cap = cell.capture_pair()
    part = placement.part
    defects = []
    for i, d in enumerate(part.defects):
        rec = d.record.to_json()
        rec["visible_px"] = int(cap.defect_px[i])
        defects.append(rec)
    label = int(cap.gt_mask.any())
    record = {
        **base,
        "category": part.category,
        "split": part_plan.split,
        "label": label,
        "defects": defects,
        "part_defective": bool(part.defects),
        "note": (
            "defective part; no defect visible from this view" if part.defects and not label else ""
        ),
        "K": _pose(setup.camera.K),
        "dist": None if setup.camera.dist is None else [float(x) for x in setup.camera.dist],
        "image_size": [setup.camera.width, setup.camera.height],
        "T_base_cam": _pose(cap.real.T_base_cam),
        "T_base_cam_twin": _pose(cap.twin.T_base_cam),
        "T_base_cam_planned": _pose(T_plan),
        "T_base_obj": _pose(placement.T_base_obj),
        "T_base_obj_twin": _pose(placement.T_base_obj_twin),
    }
    arrays = {
        "real_rgb": cap.real.rgb,
        "twin_rgb": cap.twin.rgb,
        "real_mask": cap.real_mask,
        "twin_mask": cap.twin_mask,
        "gt_mask": cap.gt_mask,
        "real_depth": np.asarray(cap.real.depth, dtype=np.float32),
    }
    return SimulatedSample(record, arrays)


def _export_mesh(out: Path, sc: Scenario, seed: int, plan: PartPlan) -> None:
    path = out / "meshes" / f"{plan.part_id}.ply"
    if path.is_file():
        return
    placement, _ = _worker().part(sc, seed, plan)
    data = placement.part.mesh.export(file_type="ply")
    write_bytes(path, data if isinstance(data, bytes) else str(data).encode())


def simulate_task(
    sc: Scenario, seed: int, indices: Sequence[int], out: Path
) -> list[dict[str, Any]]:
    """Simulate and write the given samples (skipping complete ones); returns their outcomes.

    Each outcome is the sample record, or ``{"id", "part_id", "view_id", "dropped": reason}``.
    """
    table = sample_table(sc)
    results: list[dict[str, Any]] = []
    exported: set[str] = set()
    for i in indices:
        part_plan, view_id = table[i]
        sid = sample_id(part_plan, view_id)
        if part_plan.part_id not in exported:
            _export_mesh(out, sc, seed, part_plan)
            exported.add(part_plan.part_id)
        done = read_sample_record(out / "samples" / sid)
        if done is not None:
            results.append(done)
            continue
        s = run_sample(sc, seed, i)
        if s.dropped:
            results.append({**s.record, "dropped": s.dropped})
            continue
        assert s.arrays is not None
        a = s.arrays
        write_sample_dir(
            out / "samples" / sid,
            s.record,
            a["real_rgb"],
            a["twin_rgb"],
            a["real_mask"],
            a["twin_mask"],
            a["gt_mask"],
            a["real_depth"],
        )
        results.append(s.record)
    return results


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in (
        "twincell",
        "numpy",
        "scipy",
        "scikit-learn",
        "scikit-image",
        "trimesh",
        "manifold3d",
        "pybullet",
        "pyrender",
        "PyOpenGL",
        "pydantic",
        "opencv-python-headless",
    ):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def _check_out_dir(out: Path, sc: Scenario) -> None:
    if out.exists() and not out.is_dir():
        raise RunDirError(f"--out {out}: exists and is not a directory")
    manifest = read_json_if(out / "manifest.json")
    if manifest is None:
        if out.exists() and any(p for p in out.iterdir() if not p.name.startswith(".")):
            raise RunDirError(
                f"--out {out}: exists, is not empty and holds no twincell run; "
                "choose another directory"
            )
        return
    if manifest.get("digest") != sc.digest():
        raise RunDirError(
            f"--out {out}: holds a run of another scenario or seed "
            f"({manifest.get('scenario', {}).get('name')!r}, seed {manifest.get('seed')}); "
            "choose another directory or delete it"
        )


def simulate(
    sc: Scenario, out: Path, workers: int = 1, progress: bool = True
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Simulate every sample into ``out``; returns (sample records, dropped viewpoints)."""
    table = sample_table(sc)
    by_part: dict[int, list[int]] = {}
    for i, (p, _) in enumerate(table):
        by_part.setdefault(p.index, []).append(i)
    tasks = list(by_part.values())
    outcomes: dict[int, list[dict[str, Any]]] = {}
    bar = tqdm(total=len(table), desc="simulate", unit="pair", disable=not progress)
    if workers <= 1:
        for k, idx in enumerate(tasks):
            outcomes[k] = simulate_task(sc, sc.seed, idx, out)
            bar.update(len(idx))
    else:
        # spawn, not fork: a forked child would inherit the parent's GL/EGL state.
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            futs = {
                pool.submit(simulate_task, sc, sc.seed, idx, out): k for k, idx in enumerate(tasks)
            }
            for fut in as_completed(futs):
                outcomes[futs[fut]] = fut.result()
                bar.update(len(tasks[futs[fut]]))
    bar.close()
    ordered = [r for k in range(len(tasks)) for r in outcomes[k]]
    records = [r for r in ordered if "dropped" not in r]
    dropped = [
        {
            "part_id": r["part_id"],
            "view_id": r["view_id"],
            "reason": r["dropped"],
            "T_base_cam_planned": r["T_base_cam_planned"],
            "T_base_obj": r["T_base_obj"],
        }
        for r in ordered
        if "dropped" in r
    ]
    return records, dropped


def _predictions_complete(pred_dir: Path, ids: Sequence[str]) -> bool:
    scores = pred_dir / "scores.csv"
    if not scores.is_file():
        return False
    with open(scores) as f:
        done = {row["id"] for row in csv.DictReader(f)}
    return done == set(ids) and all((pred_dir / f"{i}.npy").is_file() for i in ids)


def detect(
    sc: Scenario, out: Path, records: list[dict[str, Any]], progress: bool = True
) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
    """Fit each detector on the training pairs, predict the test pairs, score them.

    Returns (metrics per detector, seconds per detector). Complete predictions of an
    earlier run in ``out`` are reused.
    """
    train = [load_sample(out, r) for r in records if r["split"] == "train"]
    test = [load_sample(out, r) for r in records if r["split"] == "test"]
    ids = [s.id for s in test]
    metrics: dict[str, dict[str, float]] = {}
    seconds: dict[str, float] = {}
    for spec in sc.detectors:
        pred_dir = out / "predictions" / spec.name
        t0 = time.perf_counter()
        if _predictions_complete(pred_dir, ids):
            preds = _load_predictions(pred_dir, ids)
        else:
            det = detectors.create(spec.name, **spec.params)
            det.fit(train)
            preds = []
            for s in tqdm(test, desc=spec.name, unit="pair", disable=not progress):
                p = det.predict(s)
                write_npy(pred_dir / f"{s.id}.npy", np.asarray(p.anomaly_map, np.float32))
                preds.append(p)
            buf = io.StringIO()
            wr = csv.writer(buf, lineterminator="\n")
            wr.writerow(["id", "score"])
            for s, p in zip(test, preds, strict=True):
                wr.writerow([s.id, repr(float(p.score))])
            write_text(pred_dir / "scores.csv", buf.getvalue())
        seconds[spec.name] = time.perf_counter() - t0
        metrics[spec.name] = _score(test, preds)
    return metrics, seconds


def _load_predictions(pred_dir: Path, ids: Sequence[str]) -> list[Prediction]:
    with open(pred_dir / "scores.csv") as f:
        scores = {row["id"]: float(row["score"]) for row in csv.DictReader(f)}
    return [Prediction(scores[i], np.load(pred_dir / f"{i}.npy")) for i in ids]


def _score(test: Sequence[Sample], preds: Sequence[Prediction]) -> dict[str, float]:
    labels = np.array([s.label for s in test], dtype=np.int64)
    scores = np.array([p.score for p in preds], dtype=np.float64)
    gts = [np.asarray(s.gt_mask, dtype=bool) for s in test]
    maps = [np.asarray(p.anomaly_map, dtype=np.float64) for p in preds]
    return {k: float(v) for k, v in compute_metrics(labels, scores, gts, maps).items()}


def run_scenario(
    sc: Scenario,
    out: Path,
    workers: int = 1,
    progress: bool = True,
    report: Callable[[Path], None] | None = None,
) -> dict[str, Any]:
    """Run a whole scenario into ``out`` (resuming a run of the same scenario and seed)."""
    _check_out_dir(out, sc)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    manifest: dict[str, Any] = {
        "twincell_run": 1,
        "status": "running",
        "scenario": sc.model_dump(mode="json"),
        "seed": sc.seed,
        "digest": sc.digest(),
        "versions": _versions(),
    }
    write_json(out / "manifest.json", manifest)
    t0 = time.perf_counter()
    records, dropped = simulate(sc, out, workers=workers, progress=progress)
    t_sim = time.perf_counter() - t0
    write_jsonl(out / "samples.jsonl", records)
    if dropped:
        log.warning(
            "%d viewpoint(s) dropped: %s",
            len(dropped),
            ", ".join(f"{d['part_id']}/v{d['view_id']} ({d['reason']})" for d in dropped),
        )
    metrics, det_seconds = detect(sc, out, records, progress=progress)
    # Undefined metrics (a split without one class) are NaN in Python and null in JSON.
    finite = {
        d: {k: (v if np.isfinite(v) else None) for k, v in m.items()} for d, m in metrics.items()
    }
    write_json(out / "metrics.json", {"detectors": finite})
    counts = Counter((r["split"], r["label"]) for r in records)
    kinds = Counter(
        d["kind"]
        for r in records
        if r["split"] == "test" and r["label"]
        for d in r["defects"]
        if d["visible_px"] > 0
    )
    manifest.update(
        {
            "status": "complete",
            "counts": {
                "train": counts[("train", 0)] + counts[("train", 1)],
                "test_normal": counts[("test", 0)],
                "test_anomalous": counts[("test", 1)],
                "visible_defect_kinds": dict(sorted(kinds.items())),
            },
            "dropped_viewpoints": {"count": len(dropped), "items": dropped},
            "timings_s": {
                "simulate": round(t_sim, 3),
                "detect": {k: round(v, 3) for k, v in det_seconds.items()},
            },
        }
    )
    if report is not None:
        t0 = time.perf_counter()
        write_json(out / "manifest.json", manifest)
        report(out)
        manifest["timings_s"]["report"] = round(time.perf_counter() - t0, 3)
    manifest["timings_s"]["total"] = round(time.perf_counter() - t_start, 3)
    write_json(out / "manifest.json", manifest)
    return manifest
