"""Build the simulated cell a scenario names: setup, part placements, station, renderers.

The engine asks this module (``open_cells``) for the ``CellSource`` of a scenario, then for
"the cell of sample i", and then speaks ``Cell``. ``cell.kind`` picks the cell:
eye-in-hand (``sim.cells.eye_in_hand``) or part-in-hand (``sim.cells.part_in_hand``).
``errors.mode`` picks where the twin's pose errors come from: the acquisition a real cell
runs (``sim.cells.acquisition``: hand-eye calibration, object pose estimation, the robot's
data-sheet repeatability) or the named Gaussian models (``sim.pose_errors``). Every draw
comes from a generator keyed by (seed, stream, ids...), so a sample is a pure function of
(scenario, seed, sample index), in any process and any order. ``SimCells`` caches what is
expensive to rebuild (renderers and their worker processes, the PyBullet scene and the
part booleans) but never state that changes a result.

The scenario is read by attribute only (``scenarios.spec.Scenario``); sim does not import
the engine or the spec.
"""

from __future__ import annotations

from contextlib import ExitStack
from typing import Any

import numpy as np

from scenarios.interfaces import PartPlan

# Independent random streams: each draw is keyed by (seed, stream, ids...).
(
    STREAM_PLACEMENT,
    STREAM_DEFECTS,
    STREAM_OBJECT_ERROR,
    STREAM_HAND_EYE,
    STREAM_CAPTURE,
    STREAM_STATION,
    STREAM_FINISH,
    STREAM_DESIGN,
    STREAM_TOLERANCE,
    STREAM_OVERVIEW,
    STREAM_CALIBRATION,
    STREAM_GRASP,
) = range(1, 13)

#: ISO 9283 states repeatability as RP = mean + 3 std of the distance from the mean
#: position. For an isotropic 3D Gaussian with per-axis sigma, mean = 1.596 sigma and
#: std = 0.673 sigma, so RP = 3.615 sigma; the RMS displacement sqrt(3) sigma is 0.479 RP.
ISO9283_RMS_PER_RP = float(np.sqrt(3.0) / 3.615)
#: Data sheets give no orientation repeatability; the same displacement over this lever
#: (the flange's distance from the wrist centre, about 0.1 m on both arms) gives one.
WRIST_LEVER_M = 0.1

#: Where the part-in-hand cell parks the bench part collider (far from any arm pose).
PARKED_COLLIDER_M = (10.0, 10.0, -10.0)

#: The clutter keeps this much bench free around the part's outer radius (plus the
#: placement jitter), so it never stands where the part is.
CLUTTER_CLEARANCE_M = 0.03


def rng_for(seed: int, stream: int, *ids: int) -> np.random.Generator:
    """A generator keyed by the seed, a stream number and ids (part index, view id...)."""
    return np.random.default_rng([int(seed), int(stream), *map(int, ids)])


def cell_setup(sc: Any, seed: int) -> Any:
    """The run-wide cell setup: camera, hand-eye (the believed one carries the seeded
    calibration error), viewpoints, robot error, the real station and the sensor."""
    from sim.appearance import AppearanceGap, make_station
    from sim.cells.eye_in_hand import CameraModel, CellSetup, ViewpointPlan
    from sim.geometry import intrinsics_from_fov, pose_from_xyz_rpy
    from sim.pose_errors import PoseErrorModel
    from sim.render.camera_model import SensorModel

    cam = sc.cell.camera
    K = intrinsics_from_fov(cam.width, cam.height, np.radians(cam.hfov_deg))
    he = sc.cell.hand_eye
    T_ee_cam = pose_from_xyz_rpy(he.xyz_m, np.radians(he.rpy_deg))
    err = sc.errors
    if err.mode == "model":
        he = err.hand_eye
        he_err = PoseErrorModel("hand_eye", he.translation_mm, he.rotation_deg)
        T_ee_cam_believed = T_ee_cam @ he_err.sample(rng_for(seed, STREAM_HAND_EYE))
    else:  # acquisition: the calibration replaces it (SimCells.setup)
        T_ee_cam_believed = T_ee_cam
    vp = sc.viewpoints
    # The station stands around the nominal part position; the clutter keeps clear of the
    # largest family's radius (its design range included) plus the placement jitter.
    radius = max(family_radius(sc, i) for i in range(len(sc.part.families)))
    pl = sc.part.placement
    center = np.array([pl.position_m[0], pl.position_m[1], 0.0])
    gap = AppearanceGap(**sc.appearance.model_dump())  # the spec's fields, one to one
    station = make_station(
        gap,
        center,
        radius + pl.position_jitter_mm * 1e-3,
        CLUTTER_CLEARANCE_M,
        vp.elevation_min_deg,
        rng_for(seed, STREAM_STATION),
    )
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
        robot_error=robot_error(sc),
        station=station,
        sensor=SensorModel(**cam.sensor.model_dump()),
        depth_sensor=depth_sensor(sc) if sc.cell.depth.points else None,
    )


def depth_sensor(sc: Any) -> Any:
    """The RGB-D camera's depth sensor model (D435-like, ``cell.depth``)."""
    from sim.points import DepthSensorModel

    return DepthSensorModel(subpixel=sc.cell.depth.subpixel)


def robot_error(sc: Any) -> Any:
    """The per-capture robot error: the Gaussian ``errors.robot`` in model mode, else the
    arm's data-sheet repeatability (ISO 9283 RP) as an RMS displacement, and the same
    displacement over the wrist lever as an RMS rotation."""
    from sim.pose_errors import PoseErrorModel
    from sim.robot_scene import ROBOTS

    if sc.errors.mode == "model":
        r = sc.errors.robot
        return PoseErrorModel("robot", r.translation_mm, r.rotation_deg)
    rms_mm = ROBOTS[sc.cell.robot].repeatability_mm * ISO9283_RMS_PER_RP
    return PoseErrorModel("robot", rms_mm, float(np.degrees(rms_mm * 1e-3 / WRIST_LEVER_M)))


def family_name(sc: Any, index: int) -> str:
    """The registered family name of ``sc.part.families[index]`` (a CAD file is loaded and
    registered in this process if it is not yet)."""
    fs = sc.part.families[index]
    if fs.cad is None:
        return str(fs.family)
    from sim.parts.cad import cad_family

    return cad_family(fs.cad.path, fs.cad.unit, fs.cad.material, fs.cad.split).name


def family_radius(sc: Any, index: int) -> float:
    """The largest footprint radius (m) a part of family ``index`` may have: its nominal
    design's, grown by the card's range as far as the family's variation reaches."""
    from dataclasses import fields

    from sim.parts import MM, build_model, get_family, make_params, manifold_to_trimesh, union_model

    fs = sc.part.families[index]
    name = family_name(sc, index)
    params = make_params(name, fs.params)
    mesh, _ = manifold_to_trimesh(union_model(build_model(name, params)))
    radius = float(np.linalg.norm(mesh.bounds[:, :2], axis=1).max())
    card = get_family(name).card
    grow = 0.0
    for f in fields(params):
        dim = card.dimensions[f.name]
        if dim.range is not None and f.name not in fs.params and f.metadata.get("kind") is float:
            grow = max(grow, fs.variation * (dim.range[1] - getattr(params, f.name)) * MM)
    return radius + grow


def part_materials(sc: Any, name: str, components: tuple[str, ...]) -> dict[int, str]:
    """Material class per surface label: the body's (the card's, unless the scenario's
    appearance names one for every part) and each component's (its card's)."""
    from sim.parts import COMPONENT_LABEL, get_family

    card = get_family(name).card
    body = card.material if sc.appearance.material == "card" else sc.appearance.material
    out = {0: body}
    for c, comp in enumerate(components, start=1):
        out[COMPONENT_LABEL + c] = card.component_material(comp)
    return out


def build_part(sc: Any, seed: int, plan: PartPlan) -> Any:
    """The part instance of ``plan``: its seeded design (the twin's CAD), the as-built part
    (the design with seeded manufacturing error) and its seeded defects."""
    from sim.defects import build_part_instance, make_defects, part_context
    from sim.parts import as_built_params, build_model, design_params

    fs = sc.part.families[plan.family]
    name = family_name(sc, plan.family)
    design = design_params(name, fs.params, fs.variation, rng_for(seed, STREAM_DESIGN, plan.index))
    built_params = as_built_params(
        name, design, fs.tolerance, rng_for(seed, STREAM_TOLERANCE, plan.index)
    )
    nominal = build_model(name, design)
    built = nominal if built_params == design else build_model(name, built_params)
    defects = []
    if plan.kinds:
        defects = make_defects(
            part_context(built),
            plan.kinds,
            rng_for(seed, STREAM_DEFECTS, plan.index),
            sc.defects.sizes_mm,
            sc.defects.at,
        )
    materials = part_materials(sc, name, tuple(built.components))
    return build_part_instance(plan.part_id, name, built, defects, nominal, materials)


def drawn_pose(sc: Any, seed: int, plan: PartPlan) -> tuple[np.ndarray, float]:
    """Where part ``plan`` is put down: base (x, y) uniform in a disc of radius
    ``position_jitter_mm`` around ``position_m``, and yaw uniform in +-``yaw_jitter_deg``."""
    pl = sc.part.placement
    rng = rng_for(seed, STREAM_PLACEMENT, plan.index)
    r = pl.position_jitter_mm * 1e-3 * np.sqrt(rng.random())
    a = rng.uniform(0, 2 * np.pi)
    yaw = float(np.radians(rng.uniform(-pl.yaw_jitter_deg, pl.yaw_jitter_deg)))
    xy = np.array([pl.position_m[0] + r * np.cos(a), pl.position_m[1] + r * np.sin(a)])
    return xy, yaw


def true_pose(sc: Any, seed: int, plan: PartPlan, part: Any) -> tuple[np.ndarray, dict[str, Any]]:
    """The part's true resting pose ``T_base_obj`` and what placing it recorded: dropped
    onto the table in PyBullet (``placement.method: drop``) or set upright exactly."""
    from sim.geometry import pose_from_xyz_rpy

    pl = sc.part.placement
    xy, yaw = drawn_pose(sc, seed, plan)
    if sc.cell.kind == "part_in_hand":
        # The part is in the hand, not on the bench: the cell poses it per presentation.
        return pose_from_xyz_rpy((xy[0], xy[1], 0.0), (0.0, 0.0, yaw)), {"method": "in_hand"}
    if pl.method == "fixed":
        return pose_from_xyz_rpy((xy[0], xy[1], 0.0), (0.0, 0.0, yaw)), {"method": "fixed"}
    from sim.physics import DropSpec, drop_part

    spec = DropSpec(height_m=pl.drop_height_mm * 1e-3, tilt_deg=pl.drop_tilt_deg)
    rng = rng_for(seed, STREAM_PLACEMENT, plan.index, 1)
    drop = drop_part(part.mesh, (float(xy[0]), float(xy[1])), yaw, rng, spec)
    return drop.T_base_obj, {
        "method": "drop",
        "settle_s": round(float(drop.settle_s), 4),
        "penetration_mm": round(float(drop.penetration_m) * 1e3, 4),
    }


def part_finishes(sc: Any, seed: int, plan: PartPlan, part: Any) -> dict[int, Any]:
    """One finish per surface (body first, then components in order), from one stream."""
    from sim.appearance import AppearanceGap, part_finish

    gap = AppearanceGap(**sc.appearance.model_dump())
    frng = rng_for(seed, STREAM_FINISH, plan.index)
    return {label: part_finish(gap, frng, cls) for label, cls in sorted(part.materials.items())}


def build_placement(sc: Any, seed: int, plan: PartPlan) -> Any:
    """The part instance (with defects and its own finishes), its true pose and, in
    ``errors.mode: model``, the believed pose ``T_base_obj @ E_object``. In acquisition
    mode the believed pose is the true one until ``SimCells`` estimates it."""
    from sim.cells.eye_in_hand import PartPlacement
    from sim.pose_errors import PoseErrorModel

    part = build_part(sc, seed, plan)
    T_base_obj, placed = true_pose(sc, seed, plan, part)
    T_believed = T_base_obj
    if sc.errors.mode == "model":
        oe = sc.errors.object_pose
        E = PoseErrorModel("object_pose", oe.translation_mm, oe.rotation_deg).sample(
            rng_for(seed, STREAM_OBJECT_ERROR, plan.index)
        )
        T_believed = T_base_obj @ E
    finishes = part_finishes(sc, seed, plan, part)
    return PartPlacement(part, T_base_obj, T_believed, finishes, {"placement": placed})


class RendererPool:
    """Renderers by backend and options, shared by the cells of one process (and by the
    scenarios of a gallery); ``close`` ends their worker processes."""

    def __init__(self, render_threads: int = 0) -> None:
        self._render_threads = render_threads  # for path tracers; 0: all cores
        self._renderers: dict[tuple[str, Any], Any] = {}

    def get(self, backend: str, sc: Any) -> Any:
        """The renderer of ``backend`` with the scenario's render options (cached)."""
        from sim.render import make_renderer

        r = sc.render
        options: dict[str, Any] = {}
        if backend == "blender":
            options = {
                "samples": r.samples,
                "denoise": r.denoise,
                "timeout_s": r.timeout_s,
                "threads": self._render_threads,
            }
        key = (backend, tuple(sorted(options.items())))
        if key not in self._renderers:
            self._renderers[key] = make_renderer(backend, **options)
        return self._renderers[key]

    def close(self) -> None:
        """Close every renderer (each, even if closing another fails)."""
        with ExitStack() as stack:
            for r in self._renderers.values():
                stack.callback(r.close)
            self._renderers.clear()


def view_ids(sc: Any) -> list[int]:
    """The view ids of the scenario's cell: icosphere vertex ids of the viewpoint set
    (eye-in-hand; they depend only on the icosphere and the elevations) or the
    presentation indices 0..orientations-1 (part-in-hand)."""
    if sc.cell.kind == "part_in_hand":
        return list(range(sc.cell.part_in_hand.orientations))
    from sim.viewpoints import plan_viewpoints

    vp = sc.viewpoints
    return [
        v.view_id
        for v in plan_viewpoints(
            np.zeros(3), vp.radius_m, vp.subdivisions, vp.elevation_min_deg, vp.elevation_max_deg
        )
    ]


def view_frame(sc: Any) -> str:
    """The frame a view id's direction is fixed in: ``cell`` (eye-in-hand: the viewpoints
    are planned around the part in the robot base's axes, whatever the part's yaw) or
    ``part`` (part-in-hand: each presentation turns the part to the fixed camera)."""
    return "part" if sc.cell.kind == "part_in_hand" else "cell"


def open_cells(
    sc: Any, seed: int, render_threads: int = 0, prior: dict[str, Any] | None = None
) -> SimCells:
    """The ``CellSource`` of a simulated scenario (``scenarios.engine.CELL_KINDS``);
    ``prior`` is what ``run_info()`` returned earlier in the same run (or None)."""
    return SimCells(sc, seed, RendererPool(render_threads), own_renderers=True, prior=prior)


class SimCells:
    """The simulated cells of one scenario and seed (a ``CellSource``): caches the run's
    set-up (with its hand-eye calibration), the renderers and the last part's placement,
    pose estimate and PyBullet scene (tasks go part by part); never state that changes a
    result."""

    def __init__(
        self,
        sc: Any,
        seed: int,
        renderers: RendererPool,
        own_renderers: bool = False,
        prior: dict[str, Any] | None = None,
    ) -> None:
        self.sc = sc
        self._prior = prior or {}
        self.seed = seed
        self.renderers = renderers
        self._own_renderers = own_renderers
        self._setup: Any = None
        self._parts: dict[int, tuple[Any, Any]] = {}
        self._failed: dict[int, Exception] = {}

    def renderer(self, backend: str) -> Any:
        """The renderer of ``backend`` with the scenario's render options."""
        return self.renderers.get(backend, self.sc)

    def setup(self) -> Any:
        """The run's cell setup; in acquisition mode the believed hand-eye transform is the
        one a checkerboard calibration finds (computed once per process, deterministic)."""
        if self._setup is None:
            sc = self.sc
            setup = cell_setup(sc, self.seed)
            if sc.cell.kind == "part_in_hand":
                from sim.cells import part_in_hand
                from sim.pose_errors import PoseErrorModel

                he = sc.errors.hand_eye
                setup = part_in_hand.cell_setup(
                    setup,
                    sc.cell.part_in_hand.camera_distance_m,
                    PoseErrorModel("hand_eye", he.translation_mm, he.rotation_deg),
                    rng_for(self.seed, STREAM_HAND_EYE),
                )
            elif sc.errors.mode == "acquisition" and "hand_eye" in self._prior:
                # Measured earlier in this run (cell.json): the same calibration, not redone.
                import dataclasses

                T = np.asarray(self._prior["hand_eye"]["T_ee_cam"], dtype=np.float64)
                setup = dataclasses.replace(setup, T_ee_cam_believed=T, info=dict(self._prior))
            elif sc.errors.mode == "acquisition":
                from sim.cells.acquisition import calibrate_hand_eye

                setup = calibrate_hand_eye(
                    self.sc,
                    setup,
                    self.renderer(self.sc.render.real),
                    rng_for(self.seed, STREAM_CALIBRATION),
                )
            self._setup = setup
        return self._setup

    def part(self, plan: PartPlan) -> Any:
        """(placement, PyBullet scene) of part ``plan`` (the last part is kept); in
        acquisition mode the placement's believed pose is the object pose estimate. A part
        whose acquisition failed raises the same ``CaptureFailed`` for each of its samples
        (remembered, not redone)."""
        failed = self._failed.get(plan.index)
        if failed is not None:
            raise failed
        if plan.index not in self._parts:
            from sim.robot_scene import RobotScene

            for old in list(self._parts):
                self._parts.pop(old)[1].close()
            sc = self.sc
            placement = build_placement(sc, self.seed, plan)
            hull = np.asarray(placement.part.mesh.convex_hull.vertices)
            T_collider = placement.T_base_obj
            if sc.cell.kind == "part_in_hand":
                # The part travels in the hand (checked as the held body between the
                # fingers): no part stands on the bench for the arm to hit.
                T_collider = np.eye(4)
                T_collider[:3, 3] = PARKED_COLLIDER_M
            scene = RobotScene(
                sc.cell.robot,
                T_collider,
                placement.part.nominal.bounds,
                part_hull_obj=hull,
            )
            if sc.errors.mode == "acquisition" and sc.cell.kind == "eye_in_hand":
                from scenarios.interfaces import CaptureFailed
                from sim.cells.acquisition import estimate_object_pose

                try:
                    placement = estimate_object_pose(
                        sc,
                        self.setup(),
                        placement,
                        scene,
                        self.renderer(sc.render.real),
                        self.renderer("pyrender"),
                        rng_for(self.seed, STREAM_OVERVIEW, plan.index),
                    )
                except CaptureFailed as exc:
                    scene.close()
                    self._failed = {plan.index: exc}
                    raise
            self._parts[plan.index] = (placement, scene)
        return self._parts[plan.index]

    def cell(self, plan: PartPlan, view_id: int, progress: float) -> Any:
        """The cell that captures view ``view_id`` of part ``plan``; ``progress`` (0-1) is
        the sample's place in the run (for the station's drift)."""
        placement, scene = self.part(plan)
        rng = rng_for(self.seed, STREAM_CAPTURE, plan.index, view_id)
        real = self.renderer(self.sc.render.real)
        twin = self.renderer(self.sc.render.twin)
        if self.sc.cell.kind == "part_in_hand":
            from sim.cells.part_in_hand import PartInHandCell
            from sim.pose_errors import PoseErrorModel

            pih, oe = self.sc.cell.part_in_hand, self.sc.errors.object_pose
            return PartInHandCell(
                self.setup(),
                placement,
                scene,
                real,
                rng,
                twin_renderer=twin,
                progress=progress,
                grasp_rng=rng_for(self.seed, STREAM_GRASP, plan.index),
                orientations=pih.orientations,
                grasps=pih.grasps,
                grasp_error=PoseErrorModel("grasp", oe.translation_mm, oe.rotation_deg),
            )
        from sim.cells.eye_in_hand import EyeInHandCell

        return EyeInHandCell(
            self.setup(), placement, scene, real, rng, twin_renderer=twin, progress=progress
        )

    def part_files(self, plan: PartPlan) -> dict[str, bytes]:
        """``mesh.ply``: the real part as built (defects included), object frame."""
        placement, _ = self.part(plan)
        data = placement.part.mesh.export(file_type="ply")
        return {"mesh.ply": data if isinstance(data, bytes) else str(data).encode()}

    def run_info(self) -> dict[str, Any]:
        """What the set-up measured: the hand-eye calibration (acquisition mode)."""
        return dict(self.setup().info)

    def close(self) -> None:
        """Close the PyBullet scenes and, if this source owns them, the renderers."""
        with ExitStack() as stack:
            if self._own_renderers:
                stack.callback(self.renderers.close)
            for _, scene in self._parts.values():
                stack.callback(scene.close)
            self._parts.clear()
