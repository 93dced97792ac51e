"""The hardware cell (``cell.kind: hardware``): a robot driver, a camera driver and the
same twin renderer the simulated cell uses, behind ``Cell``.

One capture, in the simulated cell's own bookkeeping (``sim.cells.eye_in_hand``):
- planned ``T_base_cam = T_base_obj_twin @ T_obj_cam``: a viewpoint around the part where
  the cell believes it is (``cell.hardware.part_pose``; the sim robot's simulated
  estimate);
- the flange target ``T_base_cam @ inv(T_ee_cam)`` with the calibrated hand-eye transform
  (``cell.hand_eye``; the sim robot's simulated calibration) is checked against the
  workspace box *before* any motion (flange and camera both inside; a refused viewpoint is
  dropped with its reason) and sent at the speed limit;
- the camera captures; the robot reports its flange pose ``T_base_ee``; the twin is
  rendered at ``T_base_ee @ T_ee_cam`` with the camera's own lens.

The drivers are configured and activated when the source opens, and deactivated and
cleaned up when it closes, on every way out. A hardware cell holds its drivers, so a run
uses one process (``parallel`` is False). Without a simulated camera there is no ground
truth: the samples are recorded without labels (``Cell.ground_truth`` is None).
"""

from __future__ import annotations

import dataclasses
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np

from scenarios.drivers.base import (
    CameraDriver,
    ConsoleOperator,
    HardwareStopped,
    Operator,
    RobotDriver,
    Workspace,
)
from scenarios.drivers.sim import SimCamera, SimRobot, sim_scenario
from scenarios.interfaces import (
    GroundTruth,
    Observation,
    PartInfo,
    PartPlan,
)


def view_ids(sc: Any) -> list[int]:
    """The planned view ids: the eye-in-hand viewpoint set (``viewpoints``)."""
    from sim.cells import factory

    return factory.view_ids(sim_scenario(sc))


def view_frame(sc: Any) -> str:
    """View directions are fixed in the cell (robot base) frame, as on the eye-in-hand cell."""
    return "cell"


def rendered(sc: Any) -> tuple[str, ...]:
    """The images rendered: the twin, and the real image too behind sim drivers."""
    return ("real", "twin") if sc.cell.hardware.camera.driver == "sim" else ("twin",)


def parallel(sc: Any) -> bool:
    """A hardware cell runs in one process: its drivers hold one connection each."""
    return False


def check(sc: Any) -> None:
    """Refuse, before anything is written (exit 2): a driver whose SDK is not installed
    (``DriverMissing``, naming the extra to install), a ``home`` outside the workspace, a
    missing GenICam producer file, and a 3D detector with a camera that gives no depth."""
    from scenarios.drivers import base
    from scenarios.interfaces import SpecError, excerpt

    hw = sc.cell.hardware
    for side, spec in (("robot", hw.robot), ("camera", hw.camera)):
        why = base.missing_sdk(spec.driver)
        if why is not None:
            raise base.DriverMissing(f"cell.hardware.{side}.driver: {why}")
    check_home(sc)
    if hw.camera.driver == "genicam" and not Path(hw.camera.cti).expanduser().is_file():
        raise SpecError(f"cell.hardware.camera.cti: no file {excerpt(hw.camera.cti, 80)}")
    if hw.camera.driver in ("opencv", "genicam"):
        import detectors

        for i, d in enumerate(sc.detectors):
            if detectors.level(d.name) == "part":
                raise SpecError(
                    f"detectors.{i}: {d.name} needs point clouds; the {hw.camera.driver} "
                    "camera gives no depth (use a realsense camera, or remove the detector)"
                )


def check_home(sc: Any) -> None:
    """Refuse (``SpecError``, exit 2) a ``cell.hardware.robot.home`` that puts the flange or
    the camera (off it by ``cell.hand_eye``) outside the workspace box."""
    if sc.cell.hardware.robot.home is None:
        return
    from scenarios.interfaces import SpecError
    from sim.cells.factory import cell_setup

    T = _pose(sc.cell.hardware.robot.home)
    cam = (T @ cell_setup(sim_scenario(sc), sc.seed).T_ee_cam)[:3, 3]
    reason = workspace(sc).refusal({"flange": T[:3, 3], "camera": cam}, "at home")
    if reason:
        raise SpecError(f"cell.hardware.robot.home: {reason}")


def _pose(p: Any) -> np.ndarray:
    from sim.geometry import pose_from_xyz_rpy

    return pose_from_xyz_rpy(p.xyz_m, np.radians(p.rpy_deg))


def make_camera(sc: Any) -> CameraDriver:
    """The camera driver ``cell.hardware.camera`` names (not the sim one)."""
    spec, cam = sc.cell.hardware.camera, sc.cell.camera
    if spec.driver == "realsense":
        from scenarios.drivers.realsense import RealSenseDriver

        return RealSenseDriver(
            width=cam.width,
            height=cam.height,
            fps=spec.fps,
            serial=spec.serial,
            depth=sc.cell.depth.points,
            timeout_s=spec.timeout_s,
        )
    K = np.asarray(spec.K, dtype=np.float64) if spec.K is not None else None
    dist = np.asarray(spec.dist, dtype=np.float64) if spec.dist is not None else None
    if spec.driver == "opencv":
        from scenarios.drivers.camera import OpenCVCamera

        return OpenCVCamera(
            spec.source, width=cam.width, height=cam.height, K=K, dist=dist,
            timeout_s=spec.timeout_s,
        )  # fmt: skip
    if spec.driver == "genicam":
        from scenarios.drivers.camera import GenICamCamera

        return GenICamCamera(spec.cti, serial=spec.serial, K=K, dist=dist, timeout_s=spec.timeout_s)
    raise ValueError(f"no hardware camera driver {spec.driver!r}")


def make_robot(sc: Any, camera: CameraDriver, operator: Operator) -> tuple[RobotDriver, Any]:
    """The robot driver ``cell.hardware.robot`` names (not the sim one), and the camera the
    cell captures through (the board driver watches the frames it delivers)."""
    spec = sc.cell.hardware.robot
    if spec.driver == "ur":
        from scenarios.drivers.ur import URDriver

        return URDriver(spec.host, timeout_s=spec.timeout_s, accel_m_s2=spec.accel_m_s2), camera
    if spec.driver == "turntable":
        from scenarios.drivers.fixed import TurntableDriver

        return TurntableDriver(_pose(spec.camera_pose), operator), camera
    if spec.driver == "board":
        from scenarios.drivers.fixed import BoardPoseDriver

        b = spec.board
        robot = BoardPoseDriver(
            camera,
            cols=b.cols,
            rows=b.rows,
            square_mm=b.square_mm,
            T_board_obj=_pose(spec.board_pose),
            operator=operator,
        )
        return robot, robot.camera
    raise ValueError(f"no hardware robot driver {spec.driver!r}")


def workspace(sc: Any) -> Workspace:
    """The scenario's safety limits (``cell.hardware.safety``)."""
    s = sc.cell.hardware.safety
    lo = (float(s.workspace_min_m[0]), float(s.workspace_min_m[1]), float(s.workspace_min_m[2]))
    hi = (float(s.workspace_max_m[0]), float(s.workspace_max_m[1]), float(s.workspace_max_m[2]))
    return Workspace(lo, hi, float(s.max_speed_m_s))


def open_cells(
    sc: Any, seed: int, render_threads: int = 0, prior: dict[str, Any] | None = None
) -> HardwareCells:
    """The ``CellSource`` of a hardware scenario (``scenarios.engine.CELL_KINDS``): the
    drivers are configured and activated now."""
    source = HardwareCells(sc, seed, render_threads, prior)
    try:
        source.activate()
    except BaseException:
        source.close()
        raise
    return source


class HardwareCells:
    """The cells of one hardware scenario: the drivers (one connection each), the twin
    renderer, and the part in the cell. ``robot``, ``camera`` and ``operator`` may be given
    (tests, the dry run); by default they are the ones the scenario names."""

    def __init__(
        self,
        sc: Any,
        seed: int,
        render_threads: int = 0,
        prior: dict[str, Any] | None = None,
        robot: RobotDriver | None = None,
        camera: CameraDriver | None = None,
        operator: Operator | None = None,
    ) -> None:
        from sim.cells.factory import RendererPool, SimCells

        self.sc, self.seed = sc, seed
        self.workspace = workspace(sc)
        self.operator = operator or ConsoleOperator()
        self._renderers = RendererPool(render_threads)
        self._sim_sc = sim_scenario(sc)
        self._world: SimCells | None = None
        if sc.cell.hardware.robot.driver == "sim":
            self._world = SimCells(self._sim_sc, seed, self._renderers, prior=prior)
        self._setup: Any = None
        self._part: tuple[int, Any] | None = None
        self._active: list[Any] = []
        #: Why the way home was refused, when the dry run rehearsed it (a real run stops).
        self.home_refusals: list[str] = []
        if robot is not None and camera is not None:
            self.robot, self.camera = robot, camera
        elif self._world is not None:
            self.robot, self.camera = SimRobot(), SimCamera(self._world.setup())
        else:
            cam = make_camera(sc)
            self.robot, self.camera = make_robot(sc, cam, self.operator)

    def activate(self) -> None:
        """Configure and activate the camera, then the robot (lifecycle order); an arm that
        starts outside the workspace is refused before it is asked to move."""
        for d in (self.camera, self.robot):
            self._active.append(d)
            d.configure()
            d.activate()
        if self.moves_itself:
            reason = self.refusal(np.asarray(self.robot.read_pose(), dtype=np.float64))
            if reason:
                raise HardwareStopped(
                    f"the arm starts {reason}; jog it into the workspace box, then rerun"
                )

    @property
    def moves_itself(self) -> bool:
        """Whether the robot is a real arm that moves on its own (not the simulated one, the
        dry run's or a person turning a table): its start pose is checked."""
        return self.checks_paths and not isinstance(self.robot, PlannedRobot)

    @property
    def checks_paths(self) -> bool:
        """Whether each move is checked along the way, not only at its goal: a UR arm's
        linear moves, and the dry run's rehearsal of them."""
        return bool(self.sc.cell.hardware.robot.driver == "ur")

    def home(self) -> np.ndarray | None:
        """The flange pose the arm waits at while a part is swapped (``robot.home``), or
        None (no home given, or no arm)."""
        home = self.sc.cell.hardware.robot.home  # the spec allows it for ur only
        return None if home is None else _pose(home)

    def refusal(self, target: np.ndarray) -> str:
        """'' when flange pose ``target`` puts the flange and the camera inside the
        workspace, else why not."""
        cam = (target @ self.setup().T_ee_cam_believed)[:3, 3]
        return self.workspace.refusal({"flange": target[:3, 3], "camera": cam})

    def path_refusal(self, target: np.ndarray, steps: int = 20) -> str:
        """'' when the camera stays in the workspace all along a linear move from where the
        arm is to ``target`` (the flange goes straight, its orientation is interpolated, so
        the camera, off the flange, moves on a curve), else the first refusal on the way."""
        from scipy.spatial.transform import Rotation, Slerp

        if isinstance(self.robot, PlannedRobot) and self.robot.pose is None:
            return ""  # a rehearsal's first move: where the arm will start is not known
        start = np.asarray(self.robot.read_pose(), dtype=np.float64)
        slerp = Slerp([0.0, 1.0], Rotation.from_matrix([start[:3, :3], target[:3, :3]]))
        offset = self.setup().T_ee_cam_believed[:3, 3]
        for t in np.linspace(0.0, 1.0, steps + 1)[1:-1]:
            p = (1 - t) * start[:3, 3] + t * target[:3, 3]
            cam = p + slerp([t]).as_matrix()[0] @ offset
            reason = self.workspace.refusal({"camera": cam}, f"on the way, {t:.0%} of the move")
            if reason:
                return reason
        return ""

    def _clear_the_fixture(self) -> str:
        """Before the operator reaches into the cell: send a real arm home (its path checked
        like a view's). Returns what the operator is told about the arm."""
        if self.sc.cell.hardware.robot.driver != "ur":
            return ""
        home = self.home()
        if home is None:
            return (
                "; the arm holds still at its last view (no cell.hardware.robot.home): keep "
                "clear of it"
            )
        reason = self.path_refusal(home)
        if reason and isinstance(self.robot, PlannedRobot):  # the dry run: note it, go on
            self.home_refusals.append(reason)
        elif reason:
            raise HardwareStopped(
                f"the way to cell.hardware.robot.home: {reason}; jog the arm home, then rerun"
            )
        if not self.robot.move_to(home, self.workspace.max_speed_m_s):
            raise HardwareStopped(
                f"the arm did not go home ({self.robot.last_failure}); jog it there, then rerun"
            )
        return "; the arm is at home"

    def floor_m(self, placement: Any) -> float:
        """Height (base frame, m) of what the part stands on, for cropping the real points:
        the simulated bench (0), or the lowest point of the part where it is believed."""
        if self._world is not None:
            return 0.0
        from sim.geometry import transform_points

        z = transform_points(placement.T_base_obj_twin, np.asarray(placement.part.nominal.vertices))
        return float(z[:, 2].min())

    def setup(self) -> Any:
        """The cell set-up the twin is rendered with: the simulated one (sim drivers), or the
        scenario's with the camera's own lens and the calibrated hand-eye transform."""
        if self._setup is None:
            if self._world is not None:
                self._setup = self._world.setup()
            else:
                from sim.cells.eye_in_hand import CameraModel
                from sim.cells.factory import cell_setup

                base = cell_setup(self._sim_sc, self.seed)
                lens = self.camera.intrinsics()
                # cell.hand_eye is the calibration; without an arm (turntable, board) the
                # "flange" the driver reports is the camera itself.
                fixed = self.sc.cell.hardware.robot.driver in ("turntable", "board")
                T_ee_cam = np.eye(4) if fixed else base.T_ee_cam
                self._setup = dataclasses.replace(
                    base,
                    camera=CameraModel(lens.width, lens.height, np.asarray(lens.K), lens.dist),
                    T_ee_cam=T_ee_cam,
                    T_ee_cam_believed=T_ee_cam,
                    station=None,
                    sensor=None,
                    info={},
                )
        return self._setup

    def placement(self, plan: PartPlan) -> Any:
        """The part in the cell: the simulated placement (sim drivers), or the family's
        design at ``cell.hardware.part_pose``, after the operator has put it there."""
        if self._world is not None:
            return self._world.part(plan)[0]
        if self._part is None or self._part[0] != plan.index:
            from sim.cells.eye_in_hand import PartPlacement
            from sim.cells.factory import build_part

            part = build_part(self._sim_sc, self.seed, dataclasses.replace(plan, kinds=()))
            fixture = self.sc.cell.hardware.part_pose
            T = _pose(fixture) if fixture is not None else np.eye(4)
            where = {
                "turntable": "on the turntable's centre",
                "board": "on its checkerboard, ready to hold",
            }.get(self.sc.cell.hardware.robot.driver, "in the fixture")
            arm = self._clear_the_fixture()
            self.operator.ask(
                f"put {plan.part_id} ({plan.split} part, {part.category}) {where}{arm}"
            )
            info: dict[str, object] = {
                "part_pose": "cell.hardware.part_pose" if fixture else "support frame"
            }
            self._part = (plan.index, PartPlacement(part, T, T, info=info))
        return self._part[1]

    def twin_renderer(self) -> Any:
        """The renderer of the twin (``render.twin``)."""
        return self._renderers.get(self.sc.render.twin, self.sc)

    def cell(self, plan: PartPlan, view_id: int, progress: float) -> HardwareCell:
        """The hardware cell holding part ``plan``, about to capture view ``view_id``."""
        world_cell = None
        if self._world is not None:
            world_cell = self._world.cell(plan, view_id, progress)
            for d in (self.robot, self.camera):
                if hasattr(d, "bind"):
                    d.bind(world_cell)
        return HardwareCell(self, plan, world_cell)

    def part_files(self, plan: PartPlan) -> dict[str, bytes]:
        """The simulated part as built (sim drivers); nothing for a real part (unknown)."""
        return self._world.part_files(plan) if self._world is not None else {}

    def run_info(self) -> dict[str, Any]:
        """The drivers, the safety limits, the lens and the hand-eye transform used."""
        hw = self.sc.cell.hardware
        lens = self.setup().camera
        info = dict(self.setup().info)
        info["hardware"] = {
            "robot": hw.robot.model_dump(mode="json", exclude_none=True),
            "camera": hw.camera.model_dump(mode="json", exclude_none=True),
            "safety": hw.safety.model_dump(mode="json"),
            "T_ee_cam": np.asarray(self.setup().T_ee_cam_believed).tolist(),
            "K": np.asarray(lens.K).tolist(),
            "dist": None if lens.dist is None else [float(x) for x in lens.dist],
        }
        return info

    def close(self) -> None:
        """Deactivate and clean up the drivers (robot first), close renderers and scenes."""
        with ExitStack() as stack:
            stack.callback(self._renderers.close)
            if self._world is not None:
                stack.callback(self._world.close)
            for d in self._active:  # registered last, so they run first, robot first
                stack.callback(d.cleanup)
                stack.callback(d.deactivate)
            self._active = []


class HardwareCell:
    """One capture of a hardware cell, behind ``Cell`` (module docstring)."""

    def __init__(self, source: HardwareCells, plan: PartPlan, world_cell: Any = None) -> None:
        from sim.cells.eye_in_hand import EyeInHandCell

        self._src = source
        self._plan = plan
        self._world_cell = world_cell
        self.placement = source.placement(plan)
        self.setup = source.setup()
        # The twin is the simulated cell's own twin rendering (``EyeInHandCell.twin_at``),
        # on this cell's set-up and part: no arm, no real renderer, nothing drawn.
        self._twin_model = EyeInHandCell(
            self.setup,
            self.placement,
            None,  # type: ignore[arg-type]
            source.twin_renderer(),
            np.random.default_rng(0),
        )
        self._T_base_ee: np.ndarray | None = None
        self._views: dict[int, np.ndarray] | None = None
        self.last_failure = ""

    def part(self) -> PartInfo:
        """The part: the simulated one (its defects known), or the plan's (defects unknown)."""
        if self._world_cell is not None:
            info: PartInfo = self._world_cell.part()
            return info
        return PartInfo(
            self._plan.part_id, self.placement.part.category, (), dict(self.placement.info)
        )

    def plan_viewpoints(self) -> dict[int, np.ndarray]:
        """The eye-in-hand viewpoints ``T_obj_cam`` around the believed part centre."""
        return dict(self._planned())

    def _planned(self) -> dict[int, np.ndarray]:
        """The viewpoints, planned once per cell (the part and the set-up do not change)."""
        if self._views is None:
            from sim.cells.eye_in_hand import viewpoints_around

            pl = self.placement
            self._views = viewpoints_around(
                self.setup.viewpoints, pl.T_base_obj_twin, pl.center_obj
            )
        return self._views

    def flange_target(self, view_id: int) -> tuple[np.ndarray, np.ndarray]:
        """(camera pose, flange target) in the base frame of planned view ``view_id``."""
        from sim.geometry import invert_pose

        T_base_cam = self.placement.T_base_obj_twin @ self._planned()[view_id]
        return T_base_cam, T_base_cam @ invert_pose(self.setup.T_ee_cam_believed)

    def move_to(self, view_id: int) -> bool:
        """Check the view against the workspace, then move; False (``last_failure``) when
        the box or the controller refuses it: then nothing moved."""
        if view_id not in self._planned():
            self.last_failure = f"no planned view {view_id}"
            return False
        _, target = self.flange_target(view_id)
        reason = self._src.refusal(target)
        if not reason and self._src.checks_paths:
            reason = self._src.path_refusal(target)
        if reason:
            self.last_failure = reason
            return False
        ok = self._src.robot.move_to(target, self._src.workspace.max_speed_m_s)
        self.last_failure = "" if ok else self._src.robot.last_failure
        return bool(ok)

    def capture(self) -> Observation:
        """A frame from the camera, placed by the pose the robot reports: the camera pose
        is ``T_base_ee @ T_ee_cam`` (a simulated camera states the true one instead)."""
        frame = self._src.camera.capture()
        self._T_base_ee = np.asarray(self._src.robot.read_pose(), dtype=np.float64)
        T_believed = self._T_base_ee @ self.setup.T_ee_cam_believed
        T_cam = np.asarray(frame.truth.get("T_base_cam", T_believed), dtype=np.float64)
        cam = self.setup.camera
        meta = {"T_base_obj": frame.truth["T_base_obj"]} if "T_base_obj" in frame.truth else {}
        points = pixels = None
        if self.setup.depth_sensor is not None and frame.depth is not None:
            from sim.cells.eye_in_hand import part_points

            pl = self.placement
            points, pixels = part_points(
                frame.depth,
                cam,
                T_cam,
                pl.T_base_obj_twin,
                pl.part.nominal.bounds,
                self._src.floor_m(pl),
            )
        return Observation(
            frame.rgb,
            cam.K.copy(),
            T_cam,
            depth=frame.depth,
            dist=cam.dist,
            timestamp=frame.timestamp,
            meta=meta,
            points=points,
            point_pixels=pixels,
        )

    def render_twin(self) -> Observation:
        """The twin at the reported flange pose with the calibrated hand-eye transform (the
        pose read at the last capture; read now when nothing was captured: the dry run)."""
        if self._T_base_ee is None:
            self._T_base_ee = np.asarray(self._src.robot.read_pose(), dtype=np.float64)
        T_cam = self._T_base_ee @ self.setup.T_ee_cam_believed
        return self._twin_model.twin_at(self.placement.T_base_obj_twin, T_cam, self._T_base_ee)

    def planned_twin(self, view_id: int) -> Observation:
        """The twin at the planned pose of view ``view_id``, whether or not it may be
        reached (the dry run shows refused views too)."""
        T_base_cam, target = self.flange_target(view_id)
        return self._twin_model.twin_at(self.placement.T_base_obj_twin, T_base_cam, target)

    def ground_truth(self) -> GroundTruth | None:
        """The simulated camera's exact ground truth; None on real hardware."""
        truth = getattr(self._src.camera, "ground_truth", None)
        return truth() if truth is not None else None


class _Offline:
    """The lifecycle of a driver with nothing behind it (the dry run's robot and lens)."""

    def configure(self) -> None:
        """Nothing to connect to."""

    def activate(self) -> None:
        """Nothing to enable or start."""

    def deactivate(self) -> None:
        """Nothing to stop."""

    def cleanup(self) -> None:
        """Nothing to disconnect."""


class PlannedRobot(_Offline):
    """A robot that does not move: it reports every commanded pose as reached (the dry
    run: plan, check against the workspace and render the twins, with no motion)."""

    def __init__(self) -> None:
        self.pose: np.ndarray | None = None  # the last commanded pose; None before any
        self.last_failure = ""

    def move_to(self, T_base_ee: np.ndarray, speed_m_s: float) -> bool:
        """Record the target; no motion."""
        self.pose = np.asarray(T_base_ee, dtype=np.float64)
        return True

    def read_pose(self) -> np.ndarray:
        """The last commanded pose."""
        if self.pose is None:
            raise RuntimeError("read_pose before move_to")
        return self.pose


def dry_run(sc: Any, out: Path, progress: bool = True) -> dict[str, Any]:
    """Plan a hardware scenario without moving anything: for the first part of each family,
    every viewpoint is checked against the workspace (and, for a turntable, its reach) and
    its twin rendered at the planned pose. A UR arm's linear moves are rehearsed in order,
    home (if given) then each view, and checked along the way as the run checks them (from
    the first planned pose: where the arm will start is not known). Writes
    ``out/plan.json`` (each view: camera and flange pose, refused and why; the home pose
    and any refusal on the way to it), ``out/twins/<part>_v<view>.png`` and
    ``out/dry-run.png`` (a contact sheet, refused views marked); returns the plan. Nothing
    connects to the robot or the camera: the lens is ``cell.camera``'s (or the calibration
    ``K``/``dist`` given for the camera)."""
    from tqdm import tqdm

    from scenarios.engine import plan_parts
    from scenarios.rundir import png_bytes, write_bytes, write_json

    check_home(sc)
    out.mkdir(parents=True, exist_ok=True)
    robot: Any = PlannedRobot()
    if sc.cell.hardware.robot.driver == "turntable":  # all software: it knows its reach
        from scenarios.drivers.fixed import TurntableDriver

        robot = TurntableDriver(_pose(sc.cell.hardware.robot.camera_pose), _NoOperator())
    source = HardwareCells(sc, sc.seed, robot=robot, camera=_SpecLens(sc), operator=_NoOperator())
    firsts: dict[int, PartPlan] = {}
    for p in plan_parts(sc):
        firsts.setdefault(p.family, p)
    views = view_ids(sc)
    rows: list[dict[str, Any]] = []
    try:
        source.activate()
        work = [(p, v) for p in firsts.values() for v in views]
        for part, v in tqdm(work, desc="dry run", unit="view", disable=not progress):
            cell = source.cell(part, v, 0.0)
            T_cam, target = cell.flange_target(v)
            row: dict[str, Any] = {
                "part_id": part.part_id,
                "view_id": v,
                "T_base_cam": T_cam.tolist(),
                "T_base_ee": target.tolist(),
            }
            ok = cell.move_to(v)
            twin = cell.render_twin() if ok else cell.planned_twin(v)
            name = f"twins/{part.part_id}_v{v:03d}.png"
            write_bytes(out / name, png_bytes(twin.rgb))
            row.update(status="ok" if ok else "refused", twin=name)
            if not ok:
                row["reason"] = cell.last_failure
            rows.append(row)
    finally:
        source.close()
    plan: dict[str, Any] = {
        "scenario": sc.name,
        "safety": sc.cell.hardware.safety.model_dump(mode="json"),
        "views": rows,
        "refused": sum(r["status"] == "refused" for r in rows),
    }
    home = source.home()
    if home is not None:
        plan["home"] = {"T_base_ee": home.tolist(), "refused_on_the_way": source.home_refusals}
    write_json(out / "plan.json", plan)
    _contact_sheet(out, rows)
    return plan


class _NoOperator:
    """The dry run needs nobody: no part is put in the cell."""

    def ask(self, message: str) -> None:
        """Nothing to do."""


class _SpecLens(_Offline):
    """A camera that only states the lens the scenario gives (the dry run captures
    nothing)."""

    def __init__(self, sc: Any) -> None:
        from sim.cells.factory import cell_setup

        cam = cell_setup(sim_scenario(sc), sc.seed).camera
        spec = sc.cell.hardware.camera
        self._K = np.asarray(spec.K if spec.K is not None else cam.K, dtype=np.float64)
        dist = spec.dist if spec.K is not None else cam.dist
        self._dist = None if dist is None else np.asarray(dist, dtype=np.float64)
        self._size = (cam.width, cam.height)

    def intrinsics(self) -> Any:
        """The scenario's lens."""
        from scenarios.drivers.base import Intrinsics

        return Intrinsics(self._size[0], self._size[1], self._K, self._dist)

    def capture(self) -> Any:
        """The dry run never captures."""
        raise RuntimeError("a dry run does not capture")


def _contact_sheet(out: Path, rows: list[dict[str, Any]]) -> None:
    """``out/dry-run.png``: the twins of the planned views, refused ones marked red."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from scenarios.report import save_figure
    from scenarios.rundir import load_png

    n = len(rows)
    cols = min(8, max(1, n))
    nrows = max(1, -(-n // cols))
    fig, axes = plt.subplots(nrows, cols, figsize=(1.8 * cols, 1.9 * nrows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, r in zip(axes.flat, rows, strict=False):
        refused = r["status"] != "ok"
        twin = load_png(out / r["twin"])
        ax.imshow(twin)
        title = f"{r['part_id']} v{r['view_id']}" + (" refused" if refused else "")
        ax.set_title(title, fontsize=7, color="red" if refused else "black")
        if refused:  # a red frame: this view would not be captured
            h, w = twin.shape[:2]
            ax.add_patch(plt.Rectangle((0, 0), w - 1, h - 1, fill=False, ec="red", lw=3))
    fig.suptitle(
        "Dry run: twins at the planned poses (no motion); red: refused (plan.json says why)",
        fontsize=9,
    )
    save_figure(fig, out / "dry-run.png")
