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
import json
import logging
import multiprocessing
import multiprocessing.util
import os
import platform
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, TextIO, overload

import numpy as np
from tqdm import tqdm

import detectors
from scenarios.interfaces import (
    STOP,
    CaptureFailed,
    Cell,
    CellSource,
    PartPlan,
    RunDirError,
    Sample,
    SpecError,
    excerpt,
)
from scenarios.metrics import (
    METRIC_NAMES,
    PART_METRIC_NAMES,
    PixelMetrics,
    auroc,
    average_precision,
    f1_max,
)
from scenarios.rundir import (
    PART_CLOUD,
    PART_RECORD,
    atomic_lines,
    held_lock,
    is_failed,
    load_mask,
    load_part,
    load_sample_by_id,
    part_records,
    read_manifest,
    read_npy_verified,
    read_sample_record,
    remove_temporaries,
    sample_records,
    sha256_file,
    summary,
    write_bytes,
    write_json,
    write_npy,
    write_sample_dir,
    write_text,
)
from scenarios.spec import Scenario

log = logging.getLogger(__name__)


def check_stop() -> None:
    """Raise KeyboardInterrupt if the run was asked to stop."""
    if STOP.is_set():
        raise KeyboardInterrupt


def stopping(exc: BaseException) -> bool:
    """Whether ``exc`` ends the run because it was asked to stop: a KeyboardInterrupt, or any
    exception while ``STOP`` is set (a signal that lands inside a C call can surface as
    another exception: ctypes wraps it in an ArgumentError)."""
    return isinstance(exc, KeyboardInterrupt) or STOP.is_set()


#: Views of one part per simulation task: small enough for a live progress bar and a fast
#: Ctrl-C, large enough that a worker reuses its cached part scene.
TASK_SAMPLES = 12


def plan_parts(sc: Scenario) -> list[PartPlan]:
    """The scenario's parts: the cell module's own plan where it has one (a replayed run's
    parts are the recorded ones), else ``scenario_parts``."""
    module = cell_module(sc)
    if hasattr(module, "plan_parts"):
        return list(module.plan_parts(sc))
    return scenario_parts(sc)


def scenario_parts(sc: Scenario) -> list[PartPlan]:
    """Parts in a fixed order: training normals, test normals, then defective test parts;
    within each, the families in scenario order.

    A family's defective parts take ``per_part`` kinds each, cycling through its kinds
    (``kinds`` of the family, else ``defects.kinds``) so every listed kind appears as soon
    as there are enough defective parts.
    """
    plans: list[PartPlan] = []
    fams = sc.part.families

    def add(split: str, kinds: tuple[str, ...], family: int) -> None:
        plans.append(PartPlan(len(plans), f"part{len(plans):03d}", split, kinds, family))

    for f, fam in enumerate(fams):
        for _ in range(fam.train_normal):
            add("train", (), f)
    for f, fam in enumerate(fams):
        for _ in range(fam.test_normal):
            add("test", (), f)
    per = sc.defects.per_part
    for f, fam in enumerate(fams):
        kinds = fam.kinds if fam.kinds is not None else sc.defects.kinds
        for j in range(fam.test_defective):
            add("test", tuple(kinds[(j * per + k) % len(kinds)] for k in range(per)), f)
    return plans


#: The module that builds the cells of each ``cell.kind``: it provides ``view_ids(sc)``,
#: ``open_cells(sc, seed, render_threads, prior) -> CellSource`` (``prior``: an earlier
#: ``run_info()`` of the same run, or None) and, optionally, ``view_frame(sc)`` ("cell" or
#: "part": the frame a view id's direction is fixed in; "part" without it),
#: ``plan_parts(sc)`` (the parts, where the scenario's families do not say them),
#: ``parallel(sc)`` (False: one process only, e.g. drivers holding one connection),
#: ``check(sc)`` (raise ``SpecError`` before anything is written, e.g. a missing SDK) and
#: ``rendered(sc)`` (which of "real", "twin" it renders; both without it). A new kind of
#: cell adds a line here; the engine itself only speaks ``Cell``.
CELL_KINDS: dict[str, str] = {}


def register_cell_kind(kind: str, module: str) -> None:
    """Name ``module`` (a dotted path, imported when a scenario needs it) as the builder of
    the cells of ``cell.kind`` ``kind``."""
    CELL_KINDS[kind] = module


register_cell_kind("eye_in_hand", "sim.cells.factory")
register_cell_kind("part_in_hand", "sim.cells.factory")
register_cell_kind("hardware", "scenarios.drivers.hardware")
register_cell_kind("replay", "scenarios.drivers.replay")


def cell_module(sc: Scenario) -> Any:
    """The module that builds the cells of ``sc.cell.kind`` (``CELL_KINDS``)."""
    import importlib

    return importlib.import_module(CELL_KINDS[sc.cell.kind])


def planned_view_ids(sc: Scenario) -> list[int]:
    """View ids of the scenario's cell (fixed by the scenario, before any capture)."""
    return [int(v) for v in cell_module(sc).view_ids(sc)]


def sample_table(sc: Scenario) -> list[tuple[PartPlan, int]]:
    """Sample index -> (part, view id): parts outer, views inner."""
    views = planned_view_ids(sc)
    return [(p, v) for p in plan_parts(sc) for v in views]


def sample_id(part: PartPlan, view_id: int) -> str:
    """The sample id: ``<part_id>_v<view_id>``."""
    return f"{part.part_id}_v{view_id:03d}"


#: This process's cell source (cached renderers, calibration, last part) and its key.
_SOURCE: tuple[tuple[str, int], CellSource] | None = None
#: Threads each render worker may use (0: all cores); a pool shares the cores out.
_RENDER_THREADS = 0


def cells_for(sc: Scenario, seed: int, out: Path | None = None) -> CellSource:
    """This process's ``CellSource`` for (scenario, seed); another scenario closes it.

    With the run directory ``out``, a set-up already measured for this run (``cell.json``,
    written before the first part) is handed to the source, so pool workers and a resumed
    run use the very calibration the manifest reports instead of measuring it again.
    """
    global _SOURCE
    key = (sc.digest(), seed)
    if _SOURCE is None or _SOURCE[0] != key:
        close_worker()
        prior = None
        if out is not None and (out / "cell.json").is_file():
            prior = json.loads((out / "cell.json").read_text())
        source = cell_module(sc).open_cells(sc, seed, _RENDER_THREADS, prior)
        _SOURCE = (key, source)
    return _SOURCE[1]


def close_worker() -> None:
    """Close this process's cell source (render worker processes, scenes)."""
    global _SOURCE
    if _SOURCE is not None:
        source = _SOURCE[1]
        _SOURCE = None
        source.close()


@dataclass(frozen=True)
class SimulatedSample:
    """A simulated sample: its record and arrays, or ``dropped`` (an unreachable viewpoint)
    or ``failed`` (the capture could not be rendered) with the reason."""

    record: dict[str, Any]
    arrays: dict[str, np.ndarray] | None
    dropped: str = ""
    failed: str = ""


def _pose(T: np.ndarray) -> list[list[float]]:
    return np.asarray(T, dtype=np.float64).tolist()


def _pose_or_none(T: np.ndarray | None) -> list[list[float]] | None:
    return None if T is None else _pose(T)


def run_sample(sc: Scenario, seed: int, index: int, out: Path | None = None) -> SimulatedSample:
    """Capture sample ``index`` of the scenario: a pure function of its three arguments.

    The cell comes from the scenario's cell source and is driven only through ``Cell``. A
    viewpoint the robot cannot reach is ``dropped``; a capture that fails (a crashed or hung
    render worker) is ``failed``, with the reason, and the run goes on.
    """
    table = sample_table(sc)
    part_plan, view_id = table[index]
    base = {"id": sample_id(part_plan, view_id), "part_id": part_plan.part_id, "view_id": view_id}
    try:
        # Building the cell may run the part's acquisition (placement, pose estimate):
        # when that fails, the part's samples fail with the reason, not the run.
        source = cells_for(sc, seed, out)
        cell: Cell = source.cell(part_plan, view_id, index / max(1, len(table) - 1))
        info = cell.part()
        T_plan = cell.plan_viewpoints()[view_id]
        if not cell.move_to(view_id):
            where = {"T_obj_cam_planned": _pose(T_plan)}
            return SimulatedSample({**base, **where}, None, dropped=cell.last_failure)
        real = cell.capture()
        twin = cell.render_twin()
        truth = cell.ground_truth()
    except CaptureFailed as exc:
        return SimulatedSample({**base, "split": part_plan.split}, None, failed=str(exc))
    if truth is not None and len(truth.defect_px) != len(info.defects):
        raise RuntimeError(
            f"{base['id']}: ground truth counts {len(truth.defect_px)} defects, the part "
            f"{len(info.defects)}"
        )
    # Without ground truth (hardware) the label is unknown (None) and no mask is written;
    # the defects are what the cell knows of the part (nothing, on hardware).
    defects = []
    for i, d in enumerate(info.defects):
        rec = d.to_json()
        if truth is not None:
            rec["visible_px"] = int(truth.defect_px[i])
        defects.append(rec)
    label = None if truth is None else int(truth.gt_mask.any())
    w, h = real.image_size
    record = {
        **base,
        "category": info.category,
        "split": part_plan.split,
        "label": label,
        "defects": defects,
        "part_defective": bool(info.defects),
        "note": (
            "defective part; no defect visible from this view" if info.defects and not label else ""
        ),
        "K": _pose(real.K),
        "dist": None if real.dist is None else [float(x) for x in real.dist],
        "image_size": [w, h],
        "T_base_cam": _pose(real.T_base_cam),
        "T_base_cam_twin": _pose(twin.T_base_cam),
        "T_obj_cam_planned": _pose(T_plan),
        # The part's pose where the cell knows it (a simulator; None on hardware).
        "T_base_obj": _pose_or_none(real.meta.get("T_base_obj")),
        "T_base_obj_twin": _pose_or_none(twin.meta.get("T_base_obj")),
        "acquisition": info.meta,
    }
    fg = twin.mask if twin.mask is not None else np.zeros((h, w), dtype=bool)
    arrays: dict[str, np.ndarray] = {
        "real_rgb": real.rgb,
        "twin_rgb": twin.rgb,
        "twin_mask": fg,
        "real_depth": np.asarray(
            real.depth if real.depth is not None else np.zeros((h, w)), dtype=np.float32
        ),
    }
    if truth is not None:
        arrays["real_mask"] = truth.real_mask
        arrays["gt_mask"] = truth.gt_mask
    if real.points is not None and twin.points is not None:
        arrays["real_points"] = real.points
        arrays["twin_points"] = twin.points
        if truth is not None:
            if truth.point_labels is None or len(truth.point_labels) != len(real.points):
                raise RuntimeError(f"{base['id']}: the cell's points have no matching labels")
            arrays["point_labels"] = np.asarray(truth.point_labels, dtype=bool)
    return SimulatedSample(record, arrays)


def _export_part(out: Path, sc: Scenario, seed: int, plan: PartPlan) -> None:
    """Write the cell's files of part ``plan`` (``meshes/<part_id>.ply`` and its
    ``.sha256``) unless both are there and agree."""
    path = out / "meshes" / f"{plan.part_id}.ply"
    check = path.with_name(path.name + ".sha256")
    try:
        if sha256_file(path) == check.read_text().strip():
            return
    except OSError:
        pass  # missing or unreadable: (re)write it
    try:
        files = cells_for(sc, seed, out).part_files(plan)
    except CaptureFailed:
        return  # the part's samples record why it could not be acquired
    if "mesh.ply" not in files:
        return
    digest = write_bytes(path, files["mesh.ply"])
    # Written second: a mesh without its checksum (killed in between) is simply redone.
    write_text(check, digest + "\n")


def simulate_task(
    sc: Scenario, seed: int, indices: Sequence[int], out: Path
) -> list[dict[str, Any]]:
    """Simulate and write the given samples (skipping complete ones); returns their outcomes.

    Each outcome is the sample record, ``{"id", "part_id", "view_id", "dropped": reason}``
    for an unreachable viewpoint, or ``{"id", "part_id", "view_id", "split", "status":
    "failed", "reason"}`` for a capture that could not be rendered. A sample directory
    whose files do not match the checksums in its record is redone.
    """
    table = sample_table(sc)
    results: list[dict[str, Any]] = []
    exported: set[str] = set()
    for i in indices:
        check_stop()
        part_plan, view_id = table[i]
        sid = sample_id(part_plan, view_id)
        if part_plan.part_id not in exported:
            _export_part(out, sc, seed, part_plan)
            exported.add(part_plan.part_id)
        done = read_sample_record(out / "samples" / sid)
        if done is not None:
            results.append(done)
            continue
        s = run_sample(sc, seed, i, out)
        if s.dropped:
            results.append({**s.record, "dropped": s.dropped})
            continue
        if s.failed:
            results.append({**s.record, "status": "failed", "reason": s.failed})
            continue
        assert s.arrays is not None
        a = s.arrays
        record = write_sample_dir(
            out / "samples" / sid,
            s.record,
            a["real_rgb"],
            a["twin_rgb"],
            a.get("real_mask"),
            a["twin_mask"],
            a.get("gt_mask"),
            a["real_depth"],
            points={k: a[k] for k in ("real_points", "twin_points", "point_labels") if k in a},
        )
        results.append(record)
    return results


def _task(args: tuple[Scenario, int, Sequence[int], Path]) -> list[dict[str, Any]]:
    return simulate_task(*args)


def _pool_worker_init(render_threads: int) -> None:
    # Ctrl-C reaches every process of the terminal's process group. Workers ignore it: the
    # parent alone decides, terminates the pool and reports one line, no worker tracebacks.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    global _RENDER_THREADS
    _RENDER_THREADS = render_threads
    # A worker that exits normally closes its render workers (Blender processes) and their
    # frame directories; one that is terminated takes them along by the parent-death signal.
    multiprocessing.util.Finalize(None, close_worker, exitpriority=10)


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
        "bpy",
        "OpenEXR",
    ):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def check_out_dir(out: Path, sc: Scenario) -> None:
    """Refuse an ``--out`` that cannot hold this run, before any work; RunDirError says why.

    Accepted: a path that does not exist yet under a directory, an empty directory, or the
    directory of an earlier run of the same scenario and seed (which is then resumed).
    """
    try:
        _check_out_dir(out, sc)
    except OSError as exc:  # a name too long, a directory we may not list...
        raise RunDirError(
            f"--out {excerpt(str(out), 80)}: cannot use it ({exc.strerror or type(exc).__name__})"
        ) from None


def _check_out_dir(out: Path, sc: Scenario) -> None:
    if out.exists() and not out.is_dir():
        raise RunDirError(f"--out {out}: exists and is not a directory")
    ancestor = out
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise RunDirError(f"--out {out}: {ancestor} is a file, not a directory")
    manifest = read_manifest(out) if out.is_dir() else None
    if manifest is None:
        if out.is_dir() and any(p for p in out.iterdir() if not p.name.startswith(".")):
            raise RunDirError(
                f"--out {out}: exists, is not empty and holds no twincell run; "
                "choose another directory"
            )
        return
    if manifest.get("digest") != sc.digest():
        scenario = manifest.get("scenario")
        name = scenario.get("name") if isinstance(scenario, dict) else None
        raise RunDirError(
            f"--out {out}: holds a run of another scenario or seed "
            f"({name!r}, seed {manifest.get('seed')}); choose another directory or delete it"
        )


LOCK_NAME = ".twincell-lock"


@contextmanager
def open_out_dir(out: Path, sc: Scenario) -> Iterator[int]:
    """Check ``out`` (``check_out_dir``), create it, prove it writable and hold its lock for
    the block; yields the number of temporary files an interrupted earlier run left there
    (they are removed).

    The lock (``flock`` on ``out/.twincell-lock``) keeps a second run out of a directory in
    use: it would otherwise delete the first run's temporary files under it. On failure
    nothing is left behind: directories created here are removed again. A missing parent
    that another process creates meanwhile (the sibling cells of a parallel study, under
    one new ``cells/``) is theirs as much as ours: it is used, and not removed.
    """
    check_out_dir(out, sc)
    created: list[Path] = []
    missing = out
    while not missing.exists():
        created.append(missing)
        missing = missing.parent
    try:
        for d in reversed(created):
            try:
                d.mkdir()
            except FileExistsError:
                if d == out:
                    raise
                created.remove(d)
        lock = os.open(out / LOCK_NAME, os.O_WRONLY | os.O_CREAT, 0o666)
    except OSError as exc:
        for d in created:
            try:
                d.rmdir()
            except OSError:
                break
        raise RunDirError(
            f"--out {out}: cannot write there ({exc.strerror or type(exc).__name__}); "
            "choose another directory"
        ) from None
    busy = (
        f"--out {out}: another twincell run is writing there; wait for it to end or choose "
        "another directory"
    )
    with held_lock(lock, busy):
        yield remove_temporaries(out)


def simulate(
    sc: Scenario, out: Path, workers: int = 1, progress: bool = True
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """Simulate every sample into ``out`` and write ``samples.jsonl``; returns (sample
    summaries, dropped viewpoints, failed samples).

    Records go to ``samples.jsonl`` as tasks finish, in sample order; only their
    ``rundir.summary`` stays in memory, so memory does not grow with the run's size by more
    than a few hundred bytes a pair. Samples go out in tasks of at most ``TASK_SAMPLES``
    views of one part (a worker keeps its last part's scene cached). With ``workers`` > 1
    they run in a pool of spawned processes; on Ctrl-C (or any error) the pool is terminated
    at once, so no sample is written after the interrupt, and what the workers left
    half-written is removed.
    """
    table = sample_table(sc)
    tasks: list[list[int]] = []
    for i, (p, _) in enumerate(table):
        if not tasks or len(tasks[-1]) >= TASK_SAMPLES or table[tasks[-1][0]][0] != p:
            tasks.append([])
        tasks[-1].append(i)
    module = cell_module(sc)
    if workers > 1 and hasattr(module, "parallel") and not module.parallel(sc):
        log.info("a %s cell runs in one process: --workers %d ignored", sc.cell.kind, workers)
        workers = 1
    summaries: list[dict[str, Any]] = []
    dropped: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []
    # What the cell's set-up measured (the hand-eye calibration), once, before any part
    # (a resumed run keeps its cell.json); pool workers take it from there.
    try:
        write_json(out / "cell.json", cells_for(sc, sc.seed, out).run_info())
    except BaseException:
        close_worker()
        raise
    if workers > 1:
        close_worker()

    def keep(outcomes: list[dict[str, Any]], index: TextIO) -> None:
        for r in outcomes:
            if "dropped" in r:
                keys = ("part_id", "view_id", "T_obj_cam_planned")
                dropped.append({**{k: r[k] for k in keys}, "reason": r["dropped"]})
            elif is_failed(r):
                # In samples.jsonl too, so the run's index says what happened to every pair;
                # readers skip it (rundir.is_failed). A rerun tries the sample again.
                index.write(json.dumps(r) + "\n")
                failed.append({k: r[k] for k in ("id", "part_id", "view_id", "split", "reason")})
            else:
                index.write(json.dumps(r) + "\n")
                summaries.append(summary(r))

    with (
        atomic_lines(out / "samples.jsonl") as index,
        tqdm(total=len(table), desc="simulate", unit="pair", disable=not progress) as bar,
    ):
        if workers <= 1 or len(tasks) <= 1:
            try:
                for idx in tasks:
                    keep(simulate_task(sc, sc.seed, idx, out), index)
                    bar.update(len(idx))
            finally:
                close_worker()  # no render worker process outlives the simulation
        else:
            # spawn, not fork: a forked child would inherit the parent's GL/EGL state.
            ctx = multiprocessing.get_context("spawn")
            # Children start with SIGINT ignored (inherited through exec; Python keeps an
            # ignored SIGINT ignored), so a Ctrl-C while they import prints no traceback.
            previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
            try:
                n = min(workers, len(tasks))
                # Each process's path tracer gets its share of the cores, not all of them.
                threads = max(1, (os.cpu_count() or 1) // n)
                pool = ctx.Pool(n, initializer=_pool_worker_init, initargs=(threads,))
            finally:
                signal.signal(signal.SIGINT, previous)
            try:
                args = [(sc, sc.seed, idx, out) for idx in tasks]
                for k, res in enumerate(pool.imap(_task, args)):  # in order: same bytes
                    check_stop()
                    keep(res, index)
                    bar.update(len(tasks[k]))
            except BaseException:
                pool.terminate()
                pool.join()
                remove_temporaries(out)
                raise
            pool.close()
            pool.join()
    if failed:
        log.warning(failed_summary(failed))
    fuse_part_clouds(out, summaries)
    return summaries, dropped, failed


#: Voxel size (m) of the fused per-part clouds.
FUSE_VOXEL_M = 0.0005
#: Fewest fused points for a part to get a record (and go to the part-level detectors).
MIN_PART_POINTS = 100


def fuse_part_clouds(out: Path, summaries: Sequence[dict[str, Any]]) -> None:
    """Write ``parts/<part_id>/real_fused.ply``: the real points of all the part's views,
    each moved into the part's frame as the cell believes it at that view
    (``T_base_obj_twin``), fused on a voxel grid, with their labels
    (``sim.points.fuse_points``), and the part's
    record (``record.json``: id, family, split, label, defects, views, points) that a
    part-level detector is fed and scored by. A part is anomalous (label 1) when a point of
    its fused cloud is on a defect, as a view is when a pixel is. Parts whose samples have
    no points (no depth sensor) get neither."""
    from sim.points import fuse_points, ply_bytes, read_ply

    by_part: dict[str, list[str]] = {}
    for r in summaries:
        by_part.setdefault(r["part_id"], []).append(r["id"])
    for part_id, ids in by_part.items():
        clouds, labels, views = [], [], []
        all_known = True  # every view has ground truth (else the part's label is unknown)
        for sid in sorted(ids):
            d = out / "samples" / sid
            if not (d / "real_points.ply").exists():
                continue
            view = json.loads((d / "record.json").read_bytes())
            # The sensor measured these points in its own frame; the cell places them with
            # the camera pose it believes (robot report + calibrated hand-eye), then into the
            # part's frame as it believes it at this view (the same for every view of an
            # eye-in-hand cell; a part-in-hand cell moves the part between views).
            T_cam = np.asarray(view["T_base_cam"], dtype=np.float64)  # true: recorded
            T_cam_b = np.asarray(view["T_base_cam_twin"], dtype=np.float64)
            T_obj_b = np.asarray(view["T_base_obj_twin"], dtype=np.float64)
            T = np.linalg.inv(T_obj_b) @ T_cam_b @ np.linalg.inv(T_cam)
            P = read_ply(d / "real_points.ply")[0]
            clouds.append(P @ T[:3, :3].T + T[:3, 3])
            known = (d / "point_labels.npy").exists()  # absent without ground truth
            labels.append(np.load(d / "point_labels.npy") if known else np.zeros(len(P), bool))
            all_known = all_known and known and view["label"] is not None
            views.append(view)
        if not clouds:
            continue
        pts, lab = fuse_points(clouds, labels, FUSE_VOXEL_M)
        if len(pts) < MIN_PART_POINTS:  # nothing a part-level detector could use
            log.warning("part %s: %d fused points; left out of the 3D detectors", part_id, len(pts))
            (out / "parts" / part_id / PART_RECORD).unlink(missing_ok=True)
            continue
        write_bytes(
            out / "parts" / part_id / PART_CLOUD, ply_bytes(pts, lab if all_known else None)
        )
        first = views[0]
        defects = [
            {k: v for k, v in d.items() if k != "visible_px"} for d in first.get("defects", [])
        ]
        record = {
            "id": part_id,
            "category": first["category"],
            "split": first["split"],
            "label": int(lab.any()) if all_known else None,
            "defects": defects,
            "views": [v["id"] for v in views],
            "n_points": int(len(pts)),
            "n_defect_points": int(lab.sum()) if all_known else None,
        }
        write_json(out / "parts" / part_id / PART_RECORD, record)


def failed_summary(failed: Sequence[dict[str, Any]]) -> str:
    """One short line: how many samples failed to render, and the first reason."""
    return (
        f"{len(failed)} sample(s) failed to render and were skipped "
        f"(first: {failed[0]['id']}: {excerpt(failed[0]['reason'], 120)}); "
        "see samples.jsonl and the report; a rerun with the same --out retries them"
    )


def dropped_summary(dropped: Sequence[dict[str, Any]], planned: int) -> str:
    """One short line: how many viewpoints were dropped, counted by reason."""
    reasons = Counter(str(d["reason"]).split(" (")[0] for d in dropped)
    by = ", ".join(f"{k}: {v}" for k, v in sorted(reasons.items()))
    return (
        f"{len(dropped)} of {planned} viewpoints dropped ({by}); "
        "each is listed in manifest.json and the report"
    )


class RunSamples(Sequence[Sample]):
    """The samples of a run directory, each loaded from disk when it is accessed.

    Detectors fit on this instead of a list, so a run of any size holds one sample in
    memory at a time (a detector may of course keep what it learns).
    """

    def __init__(self, out: Path, records: Sequence[dict[str, Any]]) -> None:
        self._out = out
        self._records = list(records)

    def __len__(self) -> int:
        return len(self._records)

    @overload
    def __getitem__(self, i: int) -> Sample: ...

    @overload
    def __getitem__(self, i: slice) -> RunSamples: ...

    def __getitem__(self, i: int | slice) -> Sample | RunSamples:
        if isinstance(i, slice):
            return RunSamples(self._out, self._records[i])
        return load_sample_by_id(self._out, self._records[i]["id"])

    def __iter__(self) -> Iterator[Sample]:
        for r in self._records:
            yield load_sample_by_id(self._out, r["id"])


def _gt_mask(out: Path, record: dict[str, Any]) -> np.ndarray:
    return load_mask(out / "samples" / record["id"] / "gt_mask.png")


def _earlier_scores(pred_dir: Path, ids: Sequence[str]) -> dict[str, tuple[float, str]] | None:
    """{id: (score, sha256)} from an earlier run's complete scores.csv, else None."""
    try:
        with open(pred_dir / "scores.csv", newline="") as f:
            rows = {r["id"]: (float(r["score"]), r["sha256"]) for r in csv.DictReader(f)}
    except (OSError, ValueError, KeyError, TypeError, csv.Error):
        return None
    return rows if set(rows) == set(ids) else None


def _same_weights(spec: Any, pred_dir: Path) -> bool:
    """Whether a learned detector's weights are those its earlier predictions were made
    with (``weights: auto`` may find another file than last time, an extractor file may
    have been retrained); True for a detector without learned weights."""
    described = detectors.describe_weights(spec.name, spec.params)
    if described is None:
        if "backbone" not in spec.params or "weights" not in spec.params:
            return True
        from detectors.backbones.weights import describe_weights

        p = spec.params
        described = describe_weights(p["backbone"], p["weights"], p.get("seed", 0))
    try:
        earlier = json.loads((pred_dir / "weights.json").read_text())
    except (OSError, ValueError):
        return False
    # A detector may add detail at fit (which fold's file scored which family): compare
    # what the parameters determine.
    return bool({k: earlier.get(k) for k in described} == described)


def _add_verified(
    pixels: PixelMetrics,
    out: Path,
    pred_dir: Path,
    test: Sequence[dict[str, Any]],
    earlier: dict[str, tuple[float, str]],
) -> bool:
    """Feed the earlier maps to ``pixels``, each read once and checked against its SHA-256;
    False at the first missing or damaged map (then the detector predicts again)."""
    for r in test:
        amap = read_npy_verified(pred_dir / f"{r['id']}.npy", earlier[r["id"]][1])
        if amap is None:
            return False
        if r["label"] is not None:  # a sample without ground truth adds no pixels
            pixels.add(_gt_mask(out, r), amap)
    return True


def _run_detector(
    spec: Any,
    out: Path,
    train: Sequence[dict[str, Any]],
    test: Sequence[dict[str, Any]],
    progress: bool,
) -> tuple[dict[str, float], dict[str, float]]:
    """Fit, predict (streaming to disk) and score one detector; (metrics, seconds by step).

    Complete, checksum-verified predictions of an earlier run are reused. Pixel metrics are
    exact over all pixels of all test images, in bounded memory (``PixelMetrics``).
    """
    pred_dir = out / "predictions" / spec.key
    ids = [r["id"] for r in test]
    seconds: dict[str, float] = {}
    pixels = PixelMetrics(spill_dir=out)  # leftovers of a kill are removed on resume
    t0 = time.perf_counter()
    earlier = _earlier_scores(pred_dir, ids) if _same_weights(spec, pred_dir) else None
    if earlier is not None and _add_verified(pixels, out, pred_dir, test, earlier):
        scores = [earlier[i][0] for i in ids]
        seconds["reuse"] = time.perf_counter() - t0
    else:
        pixels = PixelMetrics(spill_dir=out)  # drop what a half-verified reuse added
        # Earlier predictions are not reused: unmark them complete before anything else is
        # written, so an interrupt here never leaves old maps beside new weights.json.
        (pred_dir / "scores.csv").unlink(missing_ok=True)
        t0 = time.perf_counter()
        det = detectors.create(spec.name, **spec.params)
        if hasattr(det, "set_feature_cache"):
            # Backbone features computed once per image, kept in the run directory, so a
            # rerun (or a second entry with the same backbone) skips the backbone.
            det.set_feature_cache(out / "features")
        det.fit(RunSamples(out, train))
        seconds["fit"] = time.perf_counter() - t0
        # Which weights the detector used (a learned one's backbone; none for the others).
        write_json(pred_dir / "weights.json", getattr(det, "weights_info", None) or {})
        t0 = time.perf_counter()
        scores, sums = [], []
        for r in tqdm(test, desc=spec.key, unit="pair", disable=not progress):
            check_stop()
            sample = load_sample_by_id(out, r["id"])
            pred = det.predict(sample)
            amap = np.asarray(pred.anomaly_map, dtype=np.float32)
            sums.append(write_npy(pred_dir / f"{r['id']}.npy", amap))
            scores.append(float(pred.score))
            if sample.gt_mask is not None:  # none on hardware: the pixel metrics are n/a
                pixels.add(sample.gt_mask, amap)
        _write_scores(pred_dir, ids, scores, sums)
        seconds["predict"] = time.perf_counter() - t0
    t0 = time.perf_counter()

    def reread() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for r in test:
            yield _gt_mask(out, r), np.load(pred_dir / f"{r['id']}.npy")

    if not labelled(test):
        # Recorded without ground truth: every metric needs labels (metrics.json's
        # ``scores`` holds what needs none).
        metrics = dict.fromkeys(METRIC_NAMES, float("nan"))
    else:
        labels = np.array([int(r["label"]) for r in test], dtype=np.int64)
        s = np.asarray(scores, dtype=np.float64)
        metrics = {
            "i_auroc": auroc(labels, s),
            "i_ap": average_precision(labels, s),
            "i_f1max": f1_max(labels, s),
            **pixels.result(reread),
        }
    seconds["metrics"] = time.perf_counter() - t0
    return {k: float(metrics[k]) for k in METRIC_NAMES}, seconds


def _run_part_detector(
    spec: Any,
    out: Path,
    train: Sequence[dict[str, Any]],
    test: Sequence[dict[str, Any]],
    progress: bool,
) -> tuple[dict[str, float], dict[str, dict[str, float]], dict[str, float]]:
    """Fit, predict and score one part-level (3D) detector on the parts' fused clouds:
    (metrics, metrics per family, seconds by step). Each test part's point scores go to
    ``predictions/<key>/<part_id>.npy``; complete, verified earlier ones are reused."""
    pred_dir = out / "predictions" / spec.key
    ids = [r["id"] for r in test]
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    # Point scores are only as good as the clouds they were made from: a rerun that
    # retried failed captures re-fuses the parts, so their checksums are part of the check.
    inputs = {r["id"]: sha256_file(out / "parts" / r["id"] / PART_CLOUD) for r in [*train, *test]}
    try:
        same_inputs = json.loads((pred_dir / "inputs.json").read_text()) == inputs
    except (OSError, ValueError):
        same_inputs = False
    earlier = (
        _earlier_scores(pred_dir, ids) if same_inputs and _same_weights(spec, pred_dir) else None
    )
    points: dict[str, np.ndarray] = {}
    labels: dict[str, Any] = {}  # each test part's point labels, read once
    if earlier is not None:
        for i in ids:
            arr = read_npy_verified(pred_dir / f"{i}.npy", earlier[i][1])
            if arr is None:
                earlier = None
                break
            points[i] = arr
    if earlier is not None:
        scores = [earlier[i][0] for i in ids]
        seconds["reuse"] = time.perf_counter() - t0
    else:
        (pred_dir / "scores.csv").unlink(missing_ok=True)
        t0 = time.perf_counter()
        det = detectors.create(spec.name, **spec.params)
        det.fit([load_part(out, r) for r in train])
        seconds["fit"] = time.perf_counter() - t0
        write_json(pred_dir / "weights.json", getattr(det, "weights_info", None) or {})
        write_json(pred_dir / "inputs.json", inputs)
        t0 = time.perf_counter()
        scores, sums = [], []
        for r in tqdm(test, desc=spec.key, unit="part", disable=not progress):
            check_stop()
            part = load_part(out, r)
            labels[r["id"]] = part.gt_point_labels
            pred = det.predict(part)
            ps = np.asarray(pred.point_scores, dtype=np.float32)
            if ps.shape != (r["n_points"],):
                raise RuntimeError(
                    f"{spec.key}: {ps.shape[0] if ps.ndim else 0} point scores for part "
                    f"{r['id']} of {r['n_points']} points"
                )
            sums.append(write_npy(pred_dir / f"{r['id']}.npy", ps))
            points[r["id"]] = ps
            scores.append(float(pred.score))
        _write_scores(pred_dir, ids, scores, sums)
        seconds["predict"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    for r in test:
        if r["id"] not in labels:  # reused predictions: the parts were not loaded
            labels[r["id"]] = load_part(out, r).gt_point_labels
    by_id = dict(zip(ids, scores, strict=True))

    def scored(rows: Sequence[dict[str, Any]]) -> dict[str, float]:
        y = np.array([int(r["label"]) for r in rows], dtype=np.int64)
        s = np.array([by_id[r["id"]] for r in rows], dtype=np.float64)
        py = np.concatenate([np.asarray(labels[r["id"]], dtype=bool) for r in rows])
        ps = np.concatenate([points[r["id"]] for r in rows])
        return {
            "o_auroc": auroc(y, s),
            "o_ap": average_precision(y, s),
            "p_auroc": auroc(py, ps),
            "p_ap": average_precision(py, ps),
        }

    nan = dict.fromkeys(PART_METRIC_NAMES, float("nan"))
    known = labelled(test)
    metrics = scored(test) if test and known else nan
    families: dict[str, dict[str, float]] = {}
    for fam in sorted({r["category"] for r in test}) if known else ():
        rows = [r for r in test if r["category"] == fam]
        families[fam] = {
            **scored(rows),
            "n_parts": len(rows),
            "n_anomalous": sum(int(r["label"]) for r in rows),
        }
    seconds["metrics"] = time.perf_counter() - t0
    return metrics, families, seconds


def _write_scores(pred_dir: Path, ids: Sequence[str], scores: Sequence[float], sums: Any) -> None:
    """Write ``scores.csv`` (id, score, SHA-256 of the prediction file): written last, it
    marks a detector's predictions complete."""
    buf = io.StringIO()
    wr = csv.writer(buf, lineterminator="\n")
    wr.writerow(["id", "score", "sha256"])
    for i, score, sha in zip(ids, scores, sums, strict=True):
        wr.writerow([i, repr(score), sha])
    write_text(pred_dir / "scores.csv", buf.getvalue())


#: The per-view decision rules of the part decision (the PaDiM paper, section 2.4).
DECISION_RULES = ("max", "percentile", "cluster")


def _view_distance_m(record: dict[str, Any]) -> float | None:
    """Camera-to-part distance (m) of a sample, from the poses the system believes (the
    true ones where no belief is recorded); None where the part pose is unknown."""
    for cam, obj in (("T_base_cam_twin", "T_base_obj_twin"), ("T_base_cam", "T_base_obj")):
        if record.get(cam) is not None and record.get(obj) is not None:
            d = float(
                np.linalg.norm(np.asarray(record[cam])[:3, 3] - np.asarray(record[obj])[:3, 3])
            )
            return d if d > 0.0 else None  # a cell that puts camera and part together
    return None


def part_decisions(
    sc: Scenario, out: Path, test: Sequence[dict[str, Any]], name: str
) -> dict[str, dict[str, Any]]:
    """Whole-part decisions of detector ``name`` over the test parts, per rule.

    Each test view's anomaly map (``predictions/<name>/<id>.npy``) gets a score by each of
    ``DECISION_RULES``: its maximum, its ``decisions.percentile``, and the cluster score
    (the highest threshold at which a cluster of the pixel area of a
    ``decisions.min_defect_mm`` defect at that view's distance, grown by
    ``decisions.kernel_px``, remains). A part scores its k-th largest view score (it fires
    when at least ``decisions.k`` views do; k is capped at its number of views); a part is
    anomalous when any of its test views shows a defect. Returns per rule the part curve
    (TPR, TNR per threshold) and the paper's ``dt`` (TNR at the highest threshold that
    keeps TPR 1) and ``t_max``.
    """
    from detectors import decisions as dec

    cfg = sc.decisions
    views: dict[str, dict[str, list[float]]] = {}
    labels: dict[str, int] = {}
    for r in test:
        amap = np.load(out / "predictions" / name / f"{r['id']}.npy")
        scores = {
            "max": dec.max_score(amap),
            "percentile": dec.percentile_score(amap, cfg.percentile),
        }
        dist = _view_distance_m(r)
        if dist is not None:
            mm = dec.mm_per_px(np.asarray(r["K"]), dist)
            s = dec.min_cluster_px(cfg.min_defect_mm, mm, cfg.kernel_px)
            scores["cluster"] = dec.cluster_score(amap, s)
        part = views.setdefault(r["part_id"], {k: [] for k in DECISION_RULES})
        for rule, v in scores.items():
            part[rule].append(v)
        labels[r["part_id"]] = max(labels.get(r["part_id"], 0), int(r["label"]))
    result: dict[str, dict[str, Any]] = {}
    parts = sorted(views)
    y = [labels[p] for p in parts]
    for rule in DECISION_RULES:
        if not parts or any(not views[p][rule] for p in parts):
            continue
        ps = [dec.part_score(views[p][rule], min(cfg.k, len(views[p][rule]))) for p in parts]
        curve = dec.part_curve(ps, y)
        result[rule] = {
            "dt": _finite_or_none(curve.dt),
            "t_max": _finite_or_none(curve.t_max),
            "n_parts": len(parts),
            "n_anomalous": int(sum(y)),
            "thresholds": [_finite_or_none(t) for t in curve.thresholds],
            "tpr": [_finite_or_none(t) for t in curve.tpr],
            "tnr": [_finite_or_none(t) for t in curve.tnr],
        }
    return result


#: The metrics computed for each viewpoint on its own (``view_metrics``).
VIEW_METRIC_NAMES = ("i_auroc", "p_auroc", "aupro")


def view_direction_deg(record: dict[str, Any], frame: str) -> tuple[float, float]:
    """(elevation, azimuth) in degrees of the planned direction from the part to the camera
    of a sample, in the ``frame`` its view id is fixed in: ``part`` (the part's own axes) or
    ``cell`` (the robot base's axes, at the part: the part's true orientation, or the one
    the cell believes where the truth is not recorded, turns the part-frame direction into
    it). Elevation above the horizontal plane, azimuth ``atan2(y, x)`` in (-180, 180]."""
    p = np.asarray(record["T_obj_cam_planned"], dtype=np.float64)[:3, 3]
    if frame == "cell":
        T_base_obj = record.get("T_base_obj") or record.get("T_base_obj_twin")
        if T_base_obj is not None:
            p = np.asarray(T_base_obj, dtype=np.float64)[:3, :3] @ p
    r = float(np.linalg.norm(p))
    if r == 0.0:
        return 90.0, 0.0
    return (
        float(np.degrees(np.arcsin(np.clip(p[2] / r, -1.0, 1.0)))),
        float(np.degrees(np.arctan2(p[1], p[0]))),
    )


def mean_direction_deg(directions: Sequence[tuple[float, float]]) -> tuple[float, float]:
    """The mean of (elevation, azimuth) directions in degrees, as (elevation, azimuth): the
    mean of their unit vectors, not of the angles (azimuths wrap at 180 deg)."""
    el, az = np.radians(np.asarray(directions, dtype=np.float64).reshape(-1, 2)).T
    u = np.stack([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)]).mean(axis=1)
    return (
        float(np.degrees(np.arctan2(u[2], np.hypot(u[0], u[1])))),
        float(np.degrees(np.arctan2(u[1], u[0]))),
    )


def view_metrics(
    sc: Scenario, out: Path, test: Sequence[dict[str, Any]], name: str
) -> list[dict[str, Any]]:
    """Detector ``name``'s metrics at each viewpoint on its own: which directions it fails
    from (AVATAR's motivation: a detector that needs one canonical view is of little use to
    a robot that sees the part from many).

    One row per view id with test pairs: the planned direction from the part to the camera
    (``elevation_deg``, ``azimuth_deg``: the mean over the view's pairs, which agree, in
    the ``frame`` the cell fixes its view ids in, ``view_direction_deg``), the number of
    normal and anomalous test pairs there, and ``VIEW_METRIC_NAMES`` over that view's pairs
    only (the same definitions as the run's metrics; None where the view lacks a class).
    """
    module = cell_module(sc)
    frame = module.view_frame(sc) if hasattr(module, "view_frame") else "part"
    by_view: dict[int, list[dict[str, Any]]] = {}
    for r in test:
        by_view.setdefault(int(r["view_id"]), []).append(r)
    pred_dir = out / "predictions" / name
    scores = {}
    with open(pred_dir / "scores.csv", newline="") as f:
        for row in csv.DictReader(f):
            scores[row["id"]] = float(row["score"])
    rows = []
    for view_id in sorted(by_view):
        recs = by_view[view_id]
        elevation, azimuth = mean_direction_deg([view_direction_deg(r, frame) for r in recs])
        labels = np.array([int(r["label"]) for r in recs], dtype=np.int64)
        pixels = PixelMetrics(spill_dir=out)

        def pairs(
            recs: Sequence[dict[str, Any]] = recs,
        ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
            for r in recs:
                yield _gt_mask(out, r), np.load(pred_dir / f"{r['id']}.npy")

        for gt, amap in pairs():
            pixels.add(gt, amap)
        px = pixels.result(pairs)
        values = {
            "i_auroc": auroc(labels, np.array([scores[r["id"]] for r in recs])),
            "p_auroc": px["p_auroc"],
            "aupro": px["aupro"],
        }
        rows.append(
            {
                "view_id": view_id,
                "frame": frame,
                "elevation_deg": round(elevation, 3),
                "azimuth_deg": round(azimuth, 3),
                "n_normal": int((labels == 0).sum()),
                "n_anomalous": int(labels.sum()),
                **{k: _finite_or_none(v) for k, v in values.items()},
            }
        )
    return rows


def _finite_or_none(x: float) -> float | None:
    """``x`` for JSON: None where it is not finite (JSON has no inf or NaN)."""
    return float(x) if np.isfinite(x) else None


def detector_weights(out: Path, names: Sequence[str]) -> dict[str, dict[str, Any]]:
    """{detector: the weights it used} from ``predictions/<name>/weights.json`` ({} for a
    detector without learned weights, or one that did not run)."""
    found: dict[str, dict[str, Any]] = {}
    for name in names:
        try:
            found[name] = json.loads((out / "predictions" / name / "weights.json").read_text())
        except (OSError, ValueError):
            found[name] = {}
    return found


@dataclass
class Detections:
    """What ``detect`` found: metrics per detector key (view-level: ``METRIC_NAMES``;
    part-level: ``PART_METRIC_NAMES``), part-level metrics per family, each detector's
    level, and seconds per detector and step."""

    metrics: dict[str, dict[str, float]]
    families: dict[str, dict[str, dict[str, float]]]
    levels: dict[str, str]
    seconds: dict[str, dict[str, float]]


def detect(
    sc: Scenario, out: Path, records: list[dict[str, Any]], progress: bool = True
) -> Detections:
    """Fit each detector on the training data, predict the test data, score it.

    A view-level detector works on the pairs (samples stream from the run directory one at
    a time, so memory does not grow with the number of pairs); a part-level (3D) one on the
    parts' fused clouds (``parts/<id>/``).
    """
    train = [r for r in records if r["split"] == "train"]
    test = [r for r in records if r["split"] == "test"]
    parts = part_records(out)
    found = Detections({}, {}, {}, {})
    for spec in sc.detectors:
        level = found.levels[spec.key] = detectors.level(spec.name)
        if level == "part":
            m, fam, sec = _run_part_detector(
                spec,
                out,
                [p for p in parts if p["split"] == "train"],
                [p for p in parts if p["split"] == "test"],
                progress,
            )
            found.families[spec.key] = fam
        else:
            m, sec = _run_detector(spec, out, train, test, progress)
        found.metrics[spec.key], found.seconds[spec.key] = m, sec
    return found


#: Why a run recorded without ground truth is not scored (``unscored_reason``).
NO_TRUTH = (
    "recorded without ground truth (hardware): the metrics that need labels are n/a; "
    "metrics.json's `scores` holds the score statistics, and masks drawn later can be "
    "added by replaying the run with cell.replay.masks"
)


def labelled(records: Sequence[dict[str, Any]]) -> bool:
    """Whether every record (sample or part) has a label: not so for what a cell recorded
    without ground truth (hardware), whose label is None."""
    return all(r["label"] is not None for r in records)


def unscored_reason(records: Sequence[dict[str, Any]]) -> str:
    """Why the test split cannot be scored ('' when it can): no test pair, no ground truth
    (a hardware recording), or one class only."""
    test = [r for r in records if r["split"] == "test"]
    if not labelled(test):
        return NO_TRUTH
    labels = Counter(int(r["label"]) for r in test)
    if not labels:
        return "no test pair was captured"
    if not labels[1]:
        return f"the test split has no anomalous pair ({labels[0]} normal)"
    if not labels[0]:
        return f"the test split has no normal pair ({labels[1]} anomalous)"
    return ""


class PhaseTimer:
    """Wall-clock seconds of consecutive run phases; their sum is the run's wall time."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.seconds: dict[str, float] = {}

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time the enclosed block as ``name`` (added to what ``name`` already has)."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t0

    def total(self) -> float:
        """Seconds since the timer started."""
        return time.perf_counter() - self.start


def check_backends(sc: Scenario) -> None:
    """Refuse, before anything is written, a scenario whose render backend or 3D detector
    is not installed (SpecError naming the field and what to install)."""
    import importlib.util

    module = cell_module(sc)
    # The images this cell kind renders (a replay renders none; real drivers only the twin).
    sides = module.rendered(sc) if hasattr(module, "rendered") else ("real", "twin")
    for side in sides:
        if getattr(sc.render, side) == "blender" and importlib.util.find_spec("bpy") is None:
            raise SpecError(
                f"render.{side}: blender needs bpy (Blender as a Python module), which is not "
                "installed; run `bash scripts/setup.sh` or choose pyrender"
            )
    if hasattr(module, "check"):  # e.g. a hardware cell's driver SDKs
        module.check(sc)
    for i, d in enumerate(sc.detectors):
        if detectors.level(d.name) == "part" and importlib.util.find_spec("open3d") is None:
            raise SpecError(
                f"detectors.{i}: {d.name} needs open3d, which is not installed; run "
                "`bash scripts/setup.sh` (or `pip install 'open3d>=0.18'`)"
            )


def run_scenario(
    sc: Scenario,
    out: Path,
    workers: int = 1,
    progress: bool = True,
    report: Callable[[Path], None] | None = None,
) -> dict[str, Any]:
    """Run a whole scenario into ``out`` (resuming a run of the same scenario and seed).

    The manifest's ``status`` says how the run ended: ``complete``; ``unscored`` (it ran but
    the test split cannot be scored, ``unscored_reason`` says why); ``interrupted``
    (Ctrl-C: rerun to resume); ``failed`` (an error, in ``error``). Never ``complete`` unless
    every step, the report included, succeeded.
    """
    timer = PhaseTimer()
    check_backends(sc)
    with ExitStack() as stack:
        with timer.phase("prepare"):
            leftovers = stack.enter_context(open_out_dir(out, sc))
            if leftovers:
                log.info("removed %d temporary file(s) of an interrupted run", leftovers)
            manifest: dict[str, Any] = {
                "twincell_run": 1,
                "status": "running",
                "scenario": sc.model_dump(mode="json"),
                "seed": sc.seed,
                "digest": sc.digest(),
                "versions": _versions(),
            }
            write_json(out / "manifest.json", manifest)
        try:
            _run_phases(sc, out, workers, progress, report, timer, manifest)
        except BaseException as exc:
            if stopping(exc):
                manifest["status"] = "interrupted"
                _finish(out, manifest, timer)
                if isinstance(exc, KeyboardInterrupt):
                    raise
                raise KeyboardInterrupt from exc
            manifest["status"] = "failed"
            manifest["error"] = f"{type(exc).__name__}: {exc}"[:500]
            _finish(out, manifest, timer)
            raise
    return manifest


def _finish(out: Path, manifest: dict[str, Any], timer: PhaseTimer) -> None:
    timings = manifest.setdefault("timings_s", {})
    timings.update({k: round(v, 3) for k, v in timer.seconds.items()})
    timings["total"] = round(timer.total(), 3)
    write_json(out / "manifest.json", manifest)


def _run_phases(
    sc: Scenario,
    out: Path,
    workers: int,
    progress: bool,
    report: Callable[[Path], None] | None,
    timer: PhaseTimer,
    manifest: dict[str, Any],
) -> None:
    with timer.phase("simulate"):
        records, dropped, failed = simulate(sc, out, workers=workers, progress=progress)
        if dropped:
            log.warning(dropped_summary(dropped, len(records) + len(dropped)))
        reason = unscored_reason(records)
        if not any(r["split"] == "train" for r in records):
            log.warning("no training pair was captured: detectors are fitted on nothing")
    with timer.phase("detect"):
        levels = {d.key: detectors.level(d.name) for d in sc.detectors}
        if any(r["split"] == "test" for r in records):
            found = detect(sc, out, records, progress=progress)
        else:  # nothing to predict: every metric is undefined
            names = {"view": METRIC_NAMES, "part": PART_METRIC_NAMES}
            found = Detections(
                {k: dict.fromkeys(names[lv], float("nan")) for k, lv in levels.items()},
                {},
                levels,
                {},
            )
        metrics, det_seconds = found.metrics, found.seconds
        # Full records (K, poses) of the test pairs, streamed from samples.jsonl.
        test = [r for r in sample_records(out / "samples.jsonl") if r["split"] == "test"]
        views = [d.key for d in sc.detectors if levels[d.key] == "view"]
        scorable = bool(test) and labelled(test)
        parts = {k: part_decisions(sc, out, test, k) for k in views} if scorable else {}
        by_view = {k: view_metrics(sc, out, test, k) for k in views} if scorable else {}
        write_json(
            out / "metrics.json",
            {
                "detectors": _json_finite(metrics),
                "scores": {d.key: score_stats(out / "predictions" / d.key) for d in sc.detectors},
                "levels": levels,
                "parts": parts,
                "views": by_view,
                "families": {k: _json_finite(v) for k, v in found.families.items()},
            },
        )
    counts = Counter((r["split"], r["label"]) for r in records)
    kinds = Counter(
        d["kind"]
        for r in records
        if r["split"] == "test" and r["label"]
        for d in r["defects"]
        if d.get("visible_px", 0) > 0
    )
    cell_info = out / "cell.json"
    manifest.update(
        {
            "cell": json.loads(cell_info.read_text()) if cell_info.exists() else {},
            "detector_weights": detector_weights(out, [d.key for d in sc.detectors]),
            "counts": {
                "train": sum(v for (split, _), v in counts.items() if split == "train"),
                "test_normal": counts[("test", 0)],
                "test_anomalous": counts[("test", 1)],
                "test_unlabelled": counts[("test", None)],
                "visible_defect_kinds": dict(sorted(kinds.items())),
            },
            "dropped_viewpoints": {"count": len(dropped), "items": dropped},
            "failed_samples": {"count": len(failed), "items": failed},
            "unscored_reason": reason,
            "timings_s": {"detectors": {k: _rounded(v) for k, v in det_seconds.items()}},
        }
    )
    if report is not None:
        with timer.phase("report"):
            write_json(out / "manifest.json", manifest)  # the report reads it
            report(out)
    manifest["status"] = "unscored" if reason else "complete"
    _finish(out, manifest, timer)


def score_stats(pred_dir: Path) -> dict[str, float | int]:
    """What needs no ground truth: how many test items a detector scored and the spread of
    its scores (mean, median, 95th percentile, max), from ``scores.csv``."""
    try:
        with (pred_dir / "scores.csv").open(newline="") as f:
            s = np.array([float(row["score"]) for row in csv.DictReader(f)], dtype=np.float64)
    except OSError:
        return {"n": 0}
    if not len(s):
        return {"n": 0}
    return {
        "n": int(len(s)),
        "mean": float(s.mean()),
        "median": float(np.median(s)),
        "p95": float(np.percentile(s, 95)),
        "max": float(s.max()),
    }


def _json_finite(d: dict[str, Any]) -> dict[str, Any]:
    """``d`` (nested dicts of numbers) with NaN and infinities as None: an undefined metric
    (a split without one class) is NaN in Python and null in JSON."""
    return {
        k: _json_finite(v)
        if isinstance(v, dict)
        else (None if isinstance(v, float) and not np.isfinite(v) else v)
        for k, v in d.items()
    }


def _rounded(d: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 3) for k, v in d.items()}
