"""The eye-in-hand cell (AVATAR): robot + flange camera + part on the table, behind ``Cell``.

Pose bookkeeping for one capture (all 4x4, base frame):
- planned  ``T_base_cam_plan = T_base_obj_twin @ T_obj_cam``: a viewpoint around the
  *believed* part centre;
- IK drives the flange to ``T_base_cam_plan @ inv(T_ee_cam_believed)``; FK of the joints
  gives ``T_base_ee`` - the pose the controller reports;
- real   ``T_base_cam      = T_base_ee @ E_robot @ T_ee_cam`` (true hand-eye, fresh
  robot repeatability error ``E_robot`` per capture), seeing the part at its true pose;
- twin   ``T_base_cam_twin = T_base_ee @ T_ee_cam_believed``, seeing the nominal CAD part at
  the believed pose ``T_base_obj_twin`` (the object pose estimate, see
  ``sim.cells.acquisition``, or ``T_base_obj @ E_object`` with ``errors.mode: model``).

The twin's bench stands under the believed part: a believed pose a few millimetres into
the table lowers the twin's bench to the part's lowest point, so the table never hides
part of the twin (the twin shows the part as the system believes it).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from scenarios.interfaces import GroundTruth, Observation, PartInfo, RenderOutput
from sim.appearance import TWIN_PART, Look, Station, defect_material, table_mesh, twin_look
from sim.defects import PartInstance
from sim.geometry import invert_pose, transform_points
from sim.parts import COMPONENT_LABEL
from sim.points import (
    DepthSensorModel,
    crop_points,
    depth_to_base_points,
    labels_from_mask,
    simulate_depth,
)
from sim.pose_errors import PoseErrorModel
from sim.render import Material, MeshItem, Renderer, RenderScene
from sim.render.camera_model import SensorModel, apply_camera, draw_capture
from sim.robot_scene import RobotScene
from sim.viewpoints import plan_viewpoints

#: Points are kept within the believed part's box grown by this margin (metres): what a
#: real pipeline crops around the object pose estimate before 3D inspection.
POINT_MARGIN_M = 0.005
#: Points this high above the bench plane (m) and higher are the part's (plane removal).
BENCH_CUT_M = 0.001


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
    real capture has the twin's look and an ideal camera (no reality gap). With a
    ``depth_sensor`` every capture carries points (the real ones through its noise model,
    the twin's ideal). ``info`` is what the set-up measured (hand-eye calibration), JSON."""

    robot: str
    camera: CameraModel
    T_ee_cam: np.ndarray
    T_ee_cam_believed: np.ndarray
    viewpoints: ViewpointPlan
    robot_error: PoseErrorModel
    station: Station | None = None
    sensor: SensorModel | None = field(default_factory=SensorModel)
    depth_sensor: DepthSensorModel | None = None
    info: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class PartPlacement:
    """A part on the table: the instance, its true pose, the pose the system believes, and
    the material of each of its surfaces (``finishes`` by face label: 0 the body,
    COMPONENT_LABEL + c a component; seeded per instance). ``info`` is what acquisition
    recorded about it (placement, pose estimate and its error), JSON."""

    part: PartInstance
    T_base_obj: np.ndarray
    T_base_obj_twin: np.ndarray
    finishes: dict[int, Material] = field(default_factory=lambda: {0: TWIN_PART})
    info: dict[str, object] = field(default_factory=dict)

    @property
    def finish(self) -> Material:
        """The body's material."""
        return self.finishes[0]

    @property
    def center_obj(self) -> np.ndarray:
        """Centre of the part's bounding box (3,), metres, object frame."""
        return np.asarray(self.part.nominal.bounds.mean(axis=0), dtype=np.float64)


@dataclass(frozen=True)
class CapturePoses:
    """The poses of one capture (base frame): real camera and part, twin camera and part,
    and the flange where it really is and where the robot reports it."""

    T_base_cam: np.ndarray
    T_base_obj: np.ndarray
    T_base_cam_twin: np.ndarray
    T_base_obj_twin: np.ndarray
    T_base_ee: np.ndarray
    T_base_ee_twin: np.ndarray


@dataclass(frozen=True)
class Capture:
    """One pose-matched pair with its exact ground truth.

    Masks are (H, W) bool; ``defect_px`` (D,) counts the ground-truth pixels of each of the
    part's defects (a pixel may belong to more than one where defects overlap);
    ``point_labels`` (N,) bool labels the real observation's points (None without points).
    """

    real: Observation
    twin: Observation
    twin_mask: np.ndarray
    real_mask: np.ndarray
    gt_mask: np.ndarray
    defect_px: np.ndarray
    point_labels: np.ndarray | None = None


def bench_z(placement: PartPlacement, T_base_obj: np.ndarray) -> float:
    """Height (m) of the bench top under the part posed at ``T_base_obj``: 0, or the part's
    lowest point where that pose puts it into the table (the twin's believed pose)."""
    z = transform_points(T_base_obj, np.asarray(placement.part.nominal.vertices))[:, 2]
    return min(0.0, float(z.min()))


def _part_items(
    key: str, placement: PartPlacement, look: Look, defective: bool, T_base_obj: np.ndarray
) -> list[MeshItem]:
    """The bench, the clutter and the part (defective or nominal) with ``look``'s materials.

    In the real look each surface has its own material (body, components); a defect's faces
    take the material of the surface it sits on, or, for a texture defect, its own finish
    (``sim.appearance.defect_material``). The twin look is one CAD grey everywhere.
    """
    part = placement.part
    T_table = np.eye(4)
    T_table[2, 3] = bench_z(placement, T_base_obj)
    items = [MeshItem("table", table_mesh(), T_table, {0: look.table}, is_part=False)]
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


def viewpoints_around(
    vp: ViewpointPlan, T_base_obj_twin: np.ndarray, center_obj: np.ndarray
) -> dict[int, np.ndarray]:
    """The planned viewpoints ``T_obj_cam`` (icosphere vertex ids) around the part centre
    ``center_obj`` (3,) of a part believed at ``T_base_obj_twin``."""
    T_obj_base = invert_pose(T_base_obj_twin)
    center = transform_points(T_base_obj_twin, np.asarray(center_obj)[None])[0]
    plan = plan_viewpoints(
        center, vp.radius_m, vp.subdivisions, vp.elevation_min_deg, vp.elevation_max_deg
    )
    return {v.view_id: T_obj_base @ v.T_base_cam for v in plan}


def part_points(
    depth: np.ndarray,
    camera: CameraModel,
    T_base_cam: np.ndarray,
    T_base_obj_twin: np.ndarray,
    bounds_obj: np.ndarray,
    floor_m: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Points (N, 3) in the base frame and their flat pixel indices (N,) of the part's
    region of a depth image: back-projected from ``T_base_cam``, cropped to the believed
    part's box ``bounds_obj`` (2, 3) plus a margin and lifted off the bench plane at height
    ``floor_m``, as a real pipeline crops them."""
    pts, pix = depth_to_base_points(depth, camera.K, T_base_cam, camera.dist)
    keep = crop_points(
        pts, T_base_obj_twin, bounds_obj, POINT_MARGIN_M, min_height_m=floor_m + BENCH_CUT_M
    )
    return pts[keep], pix[keep]


class EyeInHandCell:
    """The eye-in-hand cell for one part placement; ``rng`` drives every capture-time draw.

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

    def part(self) -> PartInfo:
        """The part on the table: id, family, defects and what acquisition recorded."""
        p = self.placement.part
        return PartInfo(
            p.part_id, p.category, tuple(d.record for d in p.defects), dict(self.placement.info)
        )

    def plan_viewpoints(self) -> dict[int, np.ndarray]:
        """Viewpoints ``T_obj_cam`` around the believed part centre (icosphere vertex ids)."""
        return viewpoints_around(
            self.setup.viewpoints, self.placement.T_base_obj_twin, self.placement.center_obj
        )

    def move_to(self, view_id: int) -> bool:
        """Drive the camera to planned view ``view_id`` by IK; False (see ``last_failure``)
        if it is not a planned view, unreachable or colliding."""
        plan = self.plan_viewpoints()
        if view_id not in plan:
            self.last_failure = f"no planned view {view_id}"
            self._T_base_ee = None
            return False
        return self.move_camera(self.placement.T_base_obj_twin @ plan[view_id])

    def move_camera(self, T_base_cam: np.ndarray) -> bool:
        """Drive the camera to ``T_base_cam`` (base frame) by IK; False if infeasible."""
        return self.move_flange(RobotScene.flange_target(T_base_cam, self.setup.T_ee_cam_believed))

    def move_flange(self, target: np.ndarray) -> bool:
        """Drive the flange to ``target`` (``T_base_ee``) by IK; False if infeasible (see
        ``last_failure``). Afterwards ``reported_flange`` is the pose the controller reports."""
        res = self._robot.reach(target, self.setup.T_ee_cam)
        self.last_failure = res.reason
        self._T_base_ee = res.T_base_ee if res.ok else None
        return res.ok

    def place_camera(self, T_base_cam: np.ndarray) -> None:
        """Put the camera at ``T_base_cam`` as if the robot had reached it exactly (no IK,
        no reachability check): for previews such as the gallery."""
        self._T_base_ee = T_base_cam @ invert_pose(self.setup.T_ee_cam_believed)

    @property
    def reported_flange(self) -> np.ndarray:
        """The flange pose ``T_base_ee`` the controller reports after the last move."""
        return self._require_pose()

    def _require_pose(self) -> np.ndarray:
        if self._T_base_ee is None:
            raise RuntimeError("capture before a successful move_to")
        return self._T_base_ee

    def _capture_poses(self) -> CapturePoses:
        """The poses of one capture: the camera reached with a fresh repeatability error
        and the true mount; the twin's from the reported flange pose and the believed
        mount; the part where it lies and where the system believes it lies."""
        T_base_ee = self._require_pose()
        E_robot = self.setup.robot_error.sample(self._rng)
        return CapturePoses(
            T_base_cam=T_base_ee @ E_robot @ self.setup.T_ee_cam,
            T_base_obj=self.placement.T_base_obj,
            T_base_cam_twin=T_base_ee @ self.setup.T_ee_cam_believed,
            T_base_obj_twin=self.placement.T_base_obj_twin,
            T_base_ee=T_base_ee @ E_robot,
            T_base_ee_twin=T_base_ee,
        )

    def _real_look(self, center: np.ndarray) -> Look:
        """The real station's look around ``center`` (or the twin's, without a station)."""
        if self.setup.station is not None:
            return self.setup.station.look(self.placement.finish, center, self._progress)
        return twin_look(center)

    def _twin_look(self, center: np.ndarray) -> Look:
        """The twin's clean CAD look."""
        return twin_look(center)

    def _occluders(self, T_base_ee: np.ndarray, twin: bool) -> tuple[MeshItem, ...]:
        """Non-part meshes posed with the flange (real or ``twin``) that may hide the part
        (none here)."""
        return ()

    def capture_pair(self) -> Capture:
        """Capture the real image, render the twin and the exact ground truth, in that order.

        Raises ``sim.render.RenderFailed`` when a renderer cannot produce a frame.
        """
        real, truth, poses = self.capture_real()
        twin = self.twin_at(poses.T_base_obj_twin, poses.T_base_cam_twin, poses.T_base_ee_twin)
        return Capture(
            real,
            twin,
            twin.mask if twin.mask is not None else np.zeros_like(truth.real_mask),
            truth.real_mask,
            truth.gt_mask,
            np.asarray(truth.defect_px, dtype=np.int64),
            truth.point_labels,
        )

    def capture_real(self) -> tuple[Observation, GroundTruth, CapturePoses]:
        """The real capture at the pose reached (a fresh repeatability error), its exact
        ground truth and the capture's poses; every random draw of a capture is made here."""
        setup, pl = self.setup, self.placement
        cam = setup.camera
        poses = self._capture_poses()
        T_base_cam, T_base_obj = poses.T_base_cam, poses.T_base_obj
        center = transform_points(T_base_obj, pl.center_obj[None])[0]
        look = self._real_look(center)
        capture = draw_capture(setup.sensor, self._rng) if setup.sensor else None
        seed = int(self._rng.integers(0, 2**31 - 1))
        occluders = self._occluders(poses.T_base_ee, twin=False)
        real_out = self._render(
            self._renderer, look, True, T_base_obj, T_base_cam, seed=seed, extra=occluders
        )
        rgb = real_out.rgb
        if capture is not None:  # drawn exactly when there is a sensor
            assert setup.sensor is not None
            rgb = apply_camera(rgb, setup.sensor, capture, self._rng)
        per_defect = self._defect_masks(
            real_out.mask, real_out.labels, T_base_cam, T_base_obj, occluders
        )
        gt = np.any(per_defect, axis=0) if len(per_defect) else np.zeros_like(real_out.mask)
        px = per_defect.sum(axis=(1, 2))

        real_pts = None
        point_labels = noisy = None
        if setup.depth_sensor is not None:
            specular = self._specularity(real_out, look)
            noisy = simulate_depth(
                real_out.depth, cam.K, rgb, specular, setup.depth_sensor, self._rng
            )
            real_pts = self._points(noisy, T_base_cam, poses.T_base_obj_twin, poses.T_base_ee_twin)
            point_labels = labels_from_mask(gt, real_pts[1])
        real = Observation(
            rgb,
            cam.K.copy(),
            T_base_cam,
            depth=real_out.depth if noisy is None else noisy,
            dist=cam.dist,
            meta={"T_base_obj": T_base_obj},
            points=None if real_pts is None else real_pts[0],
            point_pixels=None if real_pts is None else real_pts[1],
        )
        truth = GroundTruth(real_out.mask, gt, tuple(int(x) for x in px), point_labels)
        return real, truth, poses

    def twin_at(
        self, T_base_obj_twin: np.ndarray, T_base_cam_twin: np.ndarray, T_base_ee_twin: np.ndarray
    ) -> Observation:
        """The twin: the nominal part at the believed pose ``T_base_obj_twin`` seen from the
        believed camera pose ``T_base_cam_twin`` (the reported flange ``T_base_ee_twin`` and
        the calibrated mount), with its mask, depth and (with a depth sensor) ideal points.
        Deterministic: it draws nothing."""
        setup, pl = self.setup, self.placement
        cam = setup.camera
        center = transform_points(T_base_obj_twin, pl.center_obj[None])[0]
        twin_out = self._render(
            self._twin_renderer,
            self._twin_look(center),
            False,
            T_base_obj_twin,
            T_base_cam_twin,
            extra=self._occluders(T_base_ee_twin, twin=True),
        )
        twin_pts = None
        if setup.depth_sensor is not None:
            # The twin's bench stands under the believed part (``bench_z``): crop there.
            twin_floor = bench_z(pl, T_base_obj_twin)
            twin_pts = self._points(
                twin_out.depth, T_base_cam_twin, T_base_obj_twin, T_base_ee_twin, twin_floor
            )
        return Observation(
            twin_out.rgb,
            cam.K.copy(),
            T_base_cam_twin,
            depth=twin_out.depth,
            dist=cam.dist,
            meta={"T_base_obj": T_base_obj_twin},
            mask=twin_out.mask,
            points=None if twin_pts is None else twin_pts[0],
            point_pixels=None if twin_pts is None else twin_pts[1],
        )

    def _points(
        self,
        depth: np.ndarray,
        T_base_cam: np.ndarray,
        T_base_obj_twin: np.ndarray,
        T_base_ee_twin: np.ndarray,
        floor_m: float = 0.0,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Points of the part's region (``part_points``); ``T_base_ee_twin`` is the reported
        flange pose (a subclass filters the hand's own points with it)."""
        return part_points(
            depth,
            self.setup.camera,
            T_base_cam,
            T_base_obj_twin,
            self.placement.part.nominal.bounds,
            floor_m,
        )

    def _specularity(self, out: RenderOutput, look: Look) -> np.ndarray:
        """(H, W) float in [0, 1]: how mirror-like each pixel's surface is (metallic and
        smooth), from the label pass and the real look's materials (for sensor dropouts)."""
        pl = self.placement

        def spec(m: Material) -> float:
            # Mirror-like = metallic and smooth; a brushed or turned metal (roughness 0.2-0.3)
            # keeps about half of it, a cast one (0.6) a sixth.
            return float(m.metallic * (1.0 - m.roughness) ** 2)

        table = spec(look.table)
        out_map = np.full(out.mask.shape, table, dtype=np.float32)
        body = spec(pl.finishes.get(0, look.part))
        out_map[out.mask] = body
        for label, finish in pl.finishes.items():
            if label > 0:
                out_map[out.mask & (out.labels == label)] = spec(finish)
        return out_map

    def _render(
        self,
        renderer: Renderer,
        look: Look,
        defective: bool,
        T_base_obj: np.ndarray,
        T_base_cam: np.ndarray,
        depth_only: bool = False,
        seed: int = 0,
        extra: tuple[MeshItem, ...] = (),
    ) -> RenderOutput:
        """Render the part (defective or nominal) on the bench with ``look``, and ``extra``
        meshes (a gripper) that may hide it."""
        pl, cam = self.placement, self.setup.camera
        key = f"{pl.part.part_id}/{pl.part.content_key}/" + ("real" if defective else "nominal")
        items = [*_part_items(key, pl, look, defective, T_base_obj), *extra]
        scene = RenderScene(
            tuple(items), look.lights, look.background, look.ambient, look.environment, seed
        )
        return renderer.render(
            scene, cam.K, cam.image_size, T_base_cam, depth_only=depth_only, dist=cam.dist
        )

    def _defect_masks(
        self,
        mask: np.ndarray,
        labels: np.ndarray,
        T_base_cam: np.ndarray,
        T_base_obj: np.ndarray,
        occluders: tuple[MeshItem, ...] = (),
    ) -> np.ndarray:
        """(D, H, W) bool: pixels of each defect in the real image (docs/architecture.md).

        A pixel belongs to defect i when the real render shows a face that defect i made,
        or, where defects removed material, when the as-built part seen from the same pose
        shows a face inside the volume defect i removed: the label pass of
        ``PartInstance.missing`` at the true poses. One label pass per kind of evidence,
        for every defect kind. ``occluders`` (a gripper) hide the missing material too: they
        are drawn in that pass, which then needs the full label pass, not the depth-only one.
        """
        pl, cam = self.placement, self.setup.camera
        part = pl.part
        out = np.zeros((len(part.defects), *mask.shape), dtype=bool)
        for i in range(len(part.defects)):
            out[i] = mask & (labels == i + 1)
        if part.removes_material:
            assert part.missing is not None and part.missing_labels is not None
            key = f"{part.part_id}/{part.content_key}/missing"
            item = MeshItem(key, part.missing, T_base_obj, {0: TWIN_PART}, part.missing_labels)
            look = twin_look(np.zeros(3))
            scene = RenderScene((item, *occluders), look.lights, look.background, look.ambient)
            nom = self._renderer.render(
                scene,
                cam.K,
                cam.image_size,
                T_base_cam,
                depth_only=not occluders,
                dist=cam.dist,
            )
            for i in range(len(part.defects)):
                out[i] |= nom.mask & (nom.labels == i + 1)
        return out

    # The rest of the Cell protocol.
    def capture(self) -> Observation:
        """Capture the real observation at the pose actually reached (the twin and the
        ground truth of the same capture follow from ``render_twin``/``ground_truth``)."""
        self._last = self.capture_pair()
        return self._last.real

    def render_twin(self) -> Observation:
        """The twin observation matching the last ``capture``."""
        if self._last is None:
            raise RuntimeError("render_twin before capture")
        return self._last.twin

    def ground_truth(self) -> GroundTruth:
        """The exact ground truth of the last ``capture``."""
        if self._last is None:
            raise RuntimeError("ground_truth before capture")
        c = self._last
        return GroundTruth(
            c.real_mask, c.gt_mask, tuple(int(x) for x in c.defect_px), c.point_labels
        )
