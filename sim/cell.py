"""The simulated inspection cell: robot + flange camera + part, behind the Cell protocol.

Pose bookkeeping for one capture (all 4x4, base frame):
- planned  ``T_base_cam_plan``: a viewpoint around the *believed* part centre;
- IK drives the flange to ``T_base_cam_plan @ inv(T_ee_cam_believed)``; FK of the joints
  gives ``T_base_ee`` - the pose the controller reports;
- real   ``T_base_cam      = T_base_ee @ E_robot @ T_ee_cam`` (true hand-eye, fresh
  robot repeatability error ``E_robot`` per capture), seeing the part at its true pose;
- twin   ``T_base_cam_twin = T_base_ee @ T_ee_cam_believed``, seeing the nominal CAD part at
  the believed pose ``T_base_obj_twin = T_base_obj @ E_object``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from scenarios.interfaces import Observation, RenderOutput
from sim.appearance import TWIN_PART, Look, Station, defect_material, table_mesh, twin_look
from sim.defects import PartInstance
from sim.geometry import invert_pose, transform_points
from sim.parts import COMPONENT_LABEL
from sim.pose_errors import PoseErrorModel
from sim.render import Material, MeshItem, Renderer, RenderScene
from sim.render.camera_model import SensorModel, apply_camera, draw_capture
from sim.robot_scene import RobotScene
from sim.viewpoints import plan_viewpoints


@dataclass(frozen=True)
class CameraModel:
    """An OpenCV camera: image size (W, H), K (3, 3), distortion (k1, k2, p1, p2, k3) or None."""

    width: int
    height: int
    K: np.ndarray
    dist: np.ndarray | None = None

    @property
    def image_size(self) -> tuple[int, int]:
        """(W, H) in pixels."""
        return (self.width, self.height)


@dataclass(frozen=True)
class ViewpointPlan:
    """The AVATAR viewpoint set: icosphere level, radius (m), elevation bounds (degrees)."""

    radius_m: float = 0.25
    subdivisions: int = 1
    elevation_min_deg: float = 20.0
    elevation_max_deg: float = 80.0


@dataclass(frozen=True)
class CellSetup:
    """What stays fixed in a run: robot, camera, hand-eye (true and believed), plans, and
    the real station (lights, world, bench, clutter) and sensor. Without a ``station`` the
    real capture has the twin's look and an ideal camera (no reality gap)."""

    robot: str
    camera: CameraModel
    T_ee_cam: np.ndarray
    T_ee_cam_believed: np.ndarray
    viewpoints: ViewpointPlan
    robot_error: PoseErrorModel
    station: Station | None = None
    sensor: SensorModel | None = field(default_factory=SensorModel)


@dataclass(frozen=True)
class PartPlacement:
    """A part on the table: the instance, its true pose, the pose the system believes, and
    the material of each of its surfaces (``finishes`` by face label: 0 the body,
    COMPONENT_LABEL + c a component; seeded per instance)."""

    part: PartInstance
    T_base_obj: np.ndarray
    T_base_obj_twin: np.ndarray
    finishes: dict[int, Material] = field(default_factory=lambda: {0: TWIN_PART})

    @property
    def finish(self) -> Material:
        """The body's material."""
        return self.finishes[0]

    @property
    def center_obj(self) -> np.ndarray:
        """Centre of the part's bounding box (3,), metres, object frame."""
        return np.asarray(self.part.nominal.bounds.mean(axis=0), dtype=np.float64)


@dataclass(frozen=True)
class Capture:
    """One pose-matched pair with its exact ground truth.

    Masks are (H, W) bool; ``defect_px`` (D,) counts the ground-truth pixels of each of the
    part's defects (a pixel may belong to more than one where defects overlap).
    """

    real: Observation
    twin: Observation
    twin_mask: np.ndarray
    real_mask: np.ndarray
    gt_mask: np.ndarray
    defect_px: np.ndarray


def _part_items(
    key: str, placement: PartPlacement, look: Look, defective: bool, T_base_obj: np.ndarray
) -> list[MeshItem]:
    """The bench, the clutter and the part (defective or nominal) with ``look``'s materials.

    In the real look each surface has its own material (body, components); a defect's faces
    take the material of the surface it sits on, or, for a texture defect, its own finish
    (``sim.appearance.defect_material``). The twin look is one CAD grey everywhere.
    """
    part = placement.part
    items = [MeshItem("table", table_mesh(), np.eye(4), {0: look.table}, is_part=False)]
    items.extend(look.clutter)
    real = look.texture_defects

    def surface(label: int) -> Material:
        if not real:
            return look.part
        return placement.finishes.get(label, look.part)

    if defective:
        labels: np.ndarray | None = part.face_labels
        assert labels is not None
        materials = {int(lb): surface(int(lb)) for lb in np.unique(labels) if lb >= COMPONENT_LABEL}
        materials[0] = look.part
        for i, d in enumerate(part.defects):
            base = surface(d.surface_label)
            if d.appearance is not None and real:
                materials[i + 1] = defect_material(base, d.appearance, d.look)
            else:
                materials[i + 1] = base
        items.append(MeshItem(key, part.mesh, T_base_obj, materials, labels))
    else:
        labels = part.nominal_labels
        materials = {0: look.part}
        if labels is not None:
            materials.update({int(lb): surface(int(lb)) for lb in np.unique(labels) if lb > 0})
        items.append(MeshItem(key, part.nominal, T_base_obj, materials, labels))
    return items


class SimCell:
    """A simulated cell for one part placement; ``rng`` drives every capture-time draw.

    Heavy objects (PyBullet scene, renderers) are passed in so a worker can reuse them; the
    cell itself is cheap, so the engine makes one per sample and stays a pure function of
    (scenario, seed, sample index). ``renderer`` draws the real capture and its ground
    truth, ``twin_renderer`` (default: the same) the twin; ``progress`` (0-1) is how far the
    run has got, for the station's slow drift.
    """

    def __init__(
        self,
        setup: CellSetup,
        placement: PartPlacement,
        robot: RobotScene,
        renderer: Renderer,
        rng: np.random.Generator,
        twin_renderer: Renderer | None = None,
        progress: float = 0.0,
    ) -> None:
        self.setup = setup
        self.placement = placement
        self._robot = robot
        self._renderer = renderer
        self._twin_renderer = twin_renderer or renderer
        self._rng = rng
        self._progress = progress
        self._T_base_ee: np.ndarray | None = None
        self._last: Capture | None = None
        self.last_failure = ""

    def plan_viewpoints(self) -> dict[int, np.ndarray]:
        """Viewpoints around the believed part centre, keyed by icosphere vertex id."""
        vp = self.setup.viewpoints
        center = transform_points(self.placement.T_base_obj_twin, self.placement.center_obj[None])[
            0
        ]
        plan = plan_viewpoints(
            center, vp.radius_m, vp.subdivisions, vp.elevation_min_deg, vp.elevation_max_deg
        )
        return {v.view_id: v.T_base_cam for v in plan}

    def move_to(self, T_base_cam: np.ndarray) -> bool:
        """Drive the camera to a planned pose by IK; False (see ``last_failure``) if infeasible."""
        target = RobotScene.flange_target(T_base_cam, self.setup.T_ee_cam_believed)
        res = self._robot.reach(target, self.setup.T_ee_cam)
        self.last_failure = res.reason
        self._T_base_ee = res.T_base_ee if res.ok else None
        return res.ok

    def place_camera(self, T_base_cam: np.ndarray) -> None:
        """Put the camera at ``T_base_cam`` as if the robot had reached it exactly (no IK,
        no reachability check): for previews such as the gallery."""
        self._T_base_ee = T_base_cam @ invert_pose(self.setup.T_ee_cam_believed)

    def _require_pose(self) -> np.ndarray:
        if self._T_base_ee is None:
            raise RuntimeError("capture before a successful move_to")
        return self._T_base_ee

    def capture_pair(self) -> Capture:
        """Capture the real image, render the twin and the exact ground truth, in that order.

        Raises ``sim.render.RenderFailed`` when a renderer cannot produce a frame.
        """
        T_base_ee = self._require_pose()
        setup, pl = self.setup, self.placement
        cam = setup.camera
        center = transform_points(pl.T_base_obj, pl.center_obj[None])[0]
        E_robot = setup.robot_error.sample(self._rng)
        T_base_cam = T_base_ee @ E_robot @ setup.T_ee_cam
        if setup.station is not None:
            look = setup.station.look(pl.finish, center, self._progress)
        else:
            look = twin_look(center)
        capture = draw_capture(setup.sensor, self._rng) if setup.sensor else None
        seed = int(self._rng.integers(0, 2**31 - 1))
        real_out = self._render(self._renderer, look, True, pl.T_base_obj, T_base_cam, seed=seed)
        rgb = real_out.rgb
        if capture is not None:  # drawn exactly when there is a sensor
            assert setup.sensor is not None
            rgb = apply_camera(rgb, setup.sensor, capture, self._rng)
        real = Observation(rgb, cam.K.copy(), T_base_cam, depth=real_out.depth, dist=cam.dist)

        T_base_cam_twin = T_base_ee @ setup.T_ee_cam_believed
        twin_out = self._render(
            self._twin_renderer, twin_look(center), False, pl.T_base_obj_twin, T_base_cam_twin
        )
        twin = Observation(
            twin_out.rgb, cam.K.copy(), T_base_cam_twin, depth=twin_out.depth, dist=cam.dist
        )
        per_defect = self._defect_masks(real_out.mask, real_out.labels, T_base_cam)
        gt = np.any(per_defect, axis=0) if len(per_defect) else np.zeros_like(real_out.mask)
        px = per_defect.sum(axis=(1, 2))
        return Capture(real, twin, twin_out.mask, real_out.mask, gt, px)

    def _render(
        self,
        renderer: Renderer,
        look: Look,
        defective: bool,
        T_base_obj: np.ndarray,
        T_base_cam: np.ndarray,
        depth_only: bool = False,
        seed: int = 0,
    ) -> RenderOutput:
        """Render the part (defective or nominal) on the bench with ``look``."""
        pl, cam = self.placement, self.setup.camera
        key = f"{pl.part.part_id}/{pl.part.content_key}/" + ("real" if defective else "nominal")
        items = _part_items(key, pl, look, defective, T_base_obj)
        scene = RenderScene(
            tuple(items), look.lights, look.background, look.ambient, look.environment, seed
        )
        return renderer.render(
            scene, cam.K, cam.image_size, T_base_cam, depth_only=depth_only, dist=cam.dist
        )

    def _defect_masks(
        self, mask: np.ndarray, labels: np.ndarray, T_base_cam: np.ndarray
    ) -> np.ndarray:
        """(D, H, W) bool: pixels of each defect in the real image (docs/architecture.md).

        A pixel belongs to defect i when the real render shows a face that defect i made,
        or, where defects removed material, when the as-built part seen from the same pose
        shows a face inside the volume defect i removed: the label pass of
        ``PartInstance.missing`` at the true poses. One label pass per kind of evidence,
        for every defect kind.
        """
        pl, cam = self.placement, self.setup.camera
        part = pl.part
        out = np.zeros((len(part.defects), *mask.shape), dtype=bool)
        for i in range(len(part.defects)):
            out[i] = mask & (labels == i + 1)
        if part.removes_material:
            assert part.missing is not None and part.missing_labels is not None
            key = f"{part.part_id}/{part.content_key}/missing"
            item = MeshItem(key, part.missing, pl.T_base_obj, {0: TWIN_PART}, part.missing_labels)
            look = twin_look(np.zeros(3))
            scene = RenderScene((item,), look.lights, look.background, look.ambient)
            nom = self._renderer.render(
                scene, cam.K, cam.image_size, T_base_cam, depth_only=True, dist=cam.dist
            )
            for i in range(len(part.defects)):
                out[i] |= nom.mask & (nom.labels == i + 1)
        return out

    # The Cell protocol, for callers that drive the cell step by step.
    def capture(self) -> Observation:
        """Capture the real observation at the pose actually reached."""
        self._last = self.capture_pair()
        return self._last.real

    def render_twin(self) -> Observation:
        """The twin observation matching the last ``capture``."""
        if self._last is None:
            raise RuntimeError("render_twin before capture")
        return self._last.twin
