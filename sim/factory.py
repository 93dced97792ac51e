"""Build the simulated cell a scenario names: setup, part placements, station, renderers.

The engine asks this module for "the cell of sample i" and then speaks ``Cell``. Every draw
comes from a generator keyed by (seed, stream, ids...), so a sample is a pure function of
(scenario, seed, sample index), in any process and any order. ``SimWorker`` caches what is
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
) = range(1, 10)

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
    from sim.cell import CameraModel, CellSetup, ViewpointPlan
    from sim.geometry import intrinsics_from_fov, pose_from_xyz_rpy
    from sim.pose_errors import PoseErrorModel
    from sim.render.camera_model import SensorModel

    cam = sc.cell.camera
    K = intrinsics_from_fov(cam.width, cam.height, np.radians(cam.hfov_deg))
    he = sc.cell.hand_eye
    T_ee_cam = pose_from_xyz_rpy(he.xyz_m, np.radians(he.rpy_deg))
    err = sc.errors
    he_err = PoseErrorModel("hand_eye", err.hand_eye.translation_mm, err.hand_eye.rotation_deg)
    T_ee_cam_believed = T_ee_cam @ he_err.sample(rng_for(seed, STREAM_HAND_EYE))
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
        robot_error=PoseErrorModel("robot", err.robot.translation_mm, err.robot.rotation_deg),
        station=station,
        sensor=SensorModel(**cam.sensor.model_dump()),
    )


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


def build_placement(sc: Any, seed: int, plan: PartPlan) -> Any:
    """The part instance (with defects and its own finishes), its true pose and the
    believed (estimated) pose."""
    from sim.appearance import AppearanceGap, part_finish
    from sim.cell import PartPlacement
    from sim.geometry import pose_from_xyz_rpy
    from sim.pose_errors import PoseErrorModel

    part = build_part(sc, seed, plan)
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
    # One finish per surface (body first, then components in order), from one stream.
    gap = AppearanceGap(**sc.appearance.model_dump())
    frng = rng_for(seed, STREAM_FINISH, plan.index)
    finishes = {label: part_finish(gap, frng, cls) for label, cls in sorted(part.materials.items())}
    return PartPlacement(part, T_base_obj, T_base_obj @ E, finishes)


class SimWorker:
    """Per-process cache: the renderers a scenario names, the run's cell setup, and the
    last part's placement and PyBullet scene (tasks go part by part)."""

    def __init__(self, render_threads: int = 0) -> None:
        self._render_threads = render_threads  # for path tracers; 0: all cores
        self._renderers: dict[tuple[str, Any], Any] = {}
        self._setups: dict[tuple[str, int], Any] = {}
        self._parts: dict[tuple[str, int, int], Any] = {}

    def renderer(self, backend: str, sc: Any) -> Any:
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

    def setup(self, sc: Any, seed: int) -> Any:
        """The run's cell setup (cached per scenario and seed)."""
        key = (sc.digest(), seed)
        if key not in self._setups:
            self._setups.clear()
            self._setups[key] = cell_setup(sc, seed)
        return self._setups[key]

    def part(self, sc: Any, seed: int, plan: PartPlan) -> Any:
        """(placement, PyBullet scene) of part ``plan`` (the last part is kept)."""
        key = (sc.digest(), seed, plan.index)
        if key not in self._parts:
            from sim.robot_scene import RobotScene

            for old in list(self._parts):
                self._parts.pop(old)[1].close()
            placement = build_placement(sc, seed, plan)
            scene = RobotScene(sc.cell.robot, placement.T_base_obj, placement.part.nominal.bounds)
            self._parts[key] = (placement, scene)
        return self._parts[key]

    def cell(self, sc: Any, seed: int, plan: PartPlan, view_id: int, progress: float) -> Any:
        """The cell that captures view ``view_id`` of part ``plan``; ``progress`` (0-1) is
        the sample's place in the run (for the station's drift)."""
        from sim.cell import SimCell

        placement, scene = self.part(sc, seed, plan)
        return SimCell(
            self.setup(sc, seed),
            placement,
            scene,
            self.renderer(sc.render.real, sc),
            rng_for(seed, STREAM_CAPTURE, plan.index, view_id),
            twin_renderer=self.renderer(sc.render.twin, sc),
            progress=progress,
        )

    def close(self) -> None:
        """Close the renderers (worker processes) and the PyBullet scenes; each is closed
        even if closing another one fails (the first error is raised after)."""
        with ExitStack() as stack:
            for r in self._renderers.values():
                stack.callback(r.close)
            for _, scene in self._parts.values():
                stack.callback(scene.close)
            self._renderers.clear()
            self._parts.clear()
