"""The part-in-hand cell (the PaDiM paper, section 2.1): the robot grasps the part and
presents it to a fixed camera in several orientations.

Geometry (base frame, z up; the robot stands at the origin):

- A fixed camera on a stand looks horizontally (+y) at the presentation point
  ``PRESENT_AT`` from ``camera_distance_m`` away, with a ring light around its lens
  (a spot light at the camera) and a matte black backdrop behind the part, as in the
  paper's set-up.
- The gripper is a parallel-jaw hand (Franka Hand-like: palm and two fingers, metal
  finger pads) on the flange. It holds the part at a grasp point on its rim: the fingers
  close across the part's local thickness there (found by casting rays through the CAD
  part), approaching from outside towards the part's axis. ``grasps`` grasp points are
  spread evenly around the rim (the paper: two, so that the second set of images shows
  what the fingers hid in the first).
- Views: ``orientations`` presentations shared out between the grasps (16 = 8 x 2 as in
  the paper). Each grasp uses the same set of view directions, spread on the sphere
  around the part by a Fibonacci lattice; view ``k`` presents the part so that the camera
  sees it from direction ``d_k`` (object frame). The robot reaches the flange pose
  ``T_base_cam @ inv(T_obj_cam_k) @ inv(T_ee_obj)`` by IK; presentations it cannot reach,
  or in which the arm collides with the table or itself, are dropped and listed.

Errors: the real part sits in the hand at ``T_ee_obj @ E_grasp`` (``errors.object_pose``:
where a real gripper leaves the part differs from the nominal grasp), the real flange at
the reported pose times a fresh repeatability error per capture, and the camera's
believed extrinsics differ from the true ones by ``errors.hand_eye`` (a fixed camera's
calibration). The twin shows the nominal part in the nominal grasp at the reported flange
pose, seen from the believed camera, with the gripper. The gripper hides part of the part
in both images and is no defect: the ground truth's label passes draw it as an occluder.
"""

from __future__ import annotations

import dataclasses
from functools import lru_cache

import numpy as np
import trimesh

from scenarios.interfaces import PartInfo
from sim.appearance import Look, twin_look
from sim.cells.eye_in_hand import CapturePoses, CellSetup, EyeInHandCell, PartPlacement
from sim.geometry import invert_pose, look_at, make_pose, transform_points
from sim.pose_errors import PoseErrorModel
from sim.render import Light, Material, MeshItem, Renderer
from sim.robot_scene import RobotScene

#: Where the part is presented (base frame, m): in front of the robot, 40 cm above the bench.
PRESENT_AT = np.array([0.45, 0.0, 0.40])
#: The fixed camera looks along +y at the presentation point.
CAMERA_AXIS = np.array([0.0, 1.0, 0.0])
#: The backdrop: a matte black panel this far behind the presentation point (m).
BACKDROP_BEHIND_M = 0.25
#: The tool centre point between the fingertips, on the flange's z axis (Franka Hand: 10.34 cm).
TCP_Z_M = 0.1034
#: How far in from the rim the fingers grip (m), and the finger pad size (m).
GRIP_DEPTH_M = 0.008
FINGER_PAD_M = (0.018, 0.02)  # along the approach (z) and across (x)
#: A presentation whose view direction is within this angle of the grasp side (the
#: direction from the part centre to the fingers) would look through the hand: dropped.
HAND_SIDE_DEG = 45.0
#: Points within this distance of the believed hand are the hand's own (self-filter).
SELF_FILTER_MARGIN_M = 0.002
#: Fingertips close this far beyond the nominal thickness (m) so they visibly touch.
FINGER_SQUEEZE_M = 0.0005

BACKDROP = Material((0.02, 0.02, 0.022), metallic=0.0, roughness=0.9, finish="rubber_mat")
PALM = Material((0.85, 0.86, 0.88), metallic=0.0, roughness=0.5, finish="painted")
FINGER = Material((0.7, 0.7, 0.72), metallic=1.0, roughness=0.25, finish="machined")
TWIN_GRIPPER = Material((0.6, 0.6, 0.62), metallic=0.0, roughness=0.6)


def fibonacci_directions(n: int) -> np.ndarray:
    """(n, 3) unit vectors spread evenly on the sphere (a Fibonacci lattice), deterministic."""
    i = np.arange(n, dtype=np.float64) + 0.5
    z = 1.0 - 2.0 * i / n
    r = np.sqrt(np.clip(1.0 - z * z, 0.0, None))
    phi = np.pi * (3.0 - np.sqrt(5.0)) * i
    return np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=1)


def views_per_grasp(orientations: int, grasps: int) -> list[int]:
    """How many of the ``orientations`` each grasp takes (as even as possible)."""
    base, extra = divmod(orientations, grasps)
    return [base + (g < extra) for g in range(grasps)]


def view_grasp(view_id: int, orientations: int, grasps: int) -> tuple[int, int]:
    """(grasp index, index of the view within that grasp) of ``view_id``."""
    counts = views_per_grasp(orientations, grasps)
    for g, c in enumerate(counts):
        if view_id < c:
            return g, view_id
        view_id -= c
    raise ValueError(f"view {view_id} beyond {orientations} orientations")


def fixed_camera_pose(distance_m: float) -> np.ndarray:
    """``T_base_cam`` of the fixed camera, looking along ``CAMERA_AXIS`` at ``PRESENT_AT``."""
    return look_at(PRESENT_AT - distance_m * CAMERA_AXIS, PRESENT_AT)


def grasp_pose(mesh: trimesh.Trimesh, angle: float) -> tuple[np.ndarray, float]:
    """``T_obj_ee`` of a rim grasp at ``angle`` (rad, about the part's z axis) and the
    finger opening (m).

    The fingers close along the part's z axis across its local thickness at
    ``GRIP_DEPTH_M`` in from the rim (found by casting a vertical ray through the mesh);
    the hand approaches radially, from outside towards the axis.
    """
    lo, hi = np.asarray(mesh.bounds)
    centre = np.array([(lo[0] + hi[0]) / 2, (lo[1] + hi[1]) / 2, 0.0])
    u = np.array([np.cos(angle), np.sin(angle), 0.0])
    # Vertical rays every 0.25 mm along u, from beyond the rim inwards: the outermost run
    # of hits is the rim's material; the fingers grip up to GRIP_DEPTH_M into it (less on
    # a thin wall: the middle of the wall).
    step = 2.5e-4
    radii = np.arange(float(np.linalg.norm(hi[:2] - lo[:2])), 0.0, -step)
    origins = centre + radii[:, None] * u
    origins[:, 2] = hi[2] + 0.01
    hits, ray_idx, _ = mesh.ray.intersects_location(
        origins, np.tile([0.0, 0.0, -1.0], (len(origins), 1))
    )
    hit = np.zeros(len(radii), dtype=bool)
    hit[ray_idx] = True
    if not hit.any():
        raise ValueError("grasp ray misses the part")
    first = int(np.argmax(hit))
    last = first
    while (
        last + 1 < len(radii) and hit[last + 1] and radii[first] - radii[last + 1] <= GRIP_DEPTH_M
    ):
        last += 1
    r = float((radii[first] + radii[last]) / 2)
    xy = centre + r * u
    z_top, z_bot = _thickness(mesh, xy[:2], lo[2] - 0.01, hi[2] + 0.01)
    tcp = np.array([xy[0], xy[1], (z_top + z_bot) / 2])
    # Flange frame: z = approach (towards the axis, -u), y = closing axis (object z).
    z_ee = -u
    y_ee = np.array([0.0, 0.0, 1.0])
    x_ee = np.cross(y_ee, z_ee)
    R = np.stack([x_ee, y_ee, z_ee], axis=1)
    T_obj_tcp = make_pose(R, tcp)
    T_tcp_ee = make_pose(np.eye(3), np.array([0.0, 0.0, -TCP_Z_M]))
    return T_obj_tcp @ T_tcp_ee, float(z_top - z_bot)


def _thickness(mesh: trimesh.Trimesh, xy: np.ndarray, z0: float, z1: float) -> tuple[float, float]:
    """(top, bottom) z of the material under ``xy`` (the outermost hits of a vertical ray)."""
    origin = np.array([[xy[0], xy[1], z1]])
    hits, _, _ = mesh.ray.intersects_location(origin, np.array([[0.0, 0.0, -1.0]]))
    if len(hits) == 0:
        raise ValueError("grasp point misses the part")
    z = np.asarray(hits)[:, 2]
    return float(z.max()), float(z.min())


def gripper_boxes(opening_m: float) -> list[tuple[np.ndarray, np.ndarray, int]]:
    """The hand's boxes in the flange frame with the fingertips ``opening_m`` apart:
    (centre (3,), size (3,), label) for the palm (label 0) and the two fingers (label 1)."""
    boxes = [(np.array([0.0, 0.0, 0.029]), np.array([0.06, 0.2, 0.058]), 0)]
    length = TCP_Z_M + FINGER_PAD_M[0] / 2 - 0.058
    gap = max(opening_m - FINGER_SQUEEZE_M, 0.0)
    for side in (-1.0, 1.0):
        centre = np.array([0.0, side * (gap / 2 + 0.006), 0.058 + length / 2])
        boxes.append((centre, np.array([FINGER_PAD_M[1], 0.012, length]), 1))
    return boxes


@lru_cache(maxsize=8)
def gripper_mesh(opening_m: float) -> tuple[trimesh.Trimesh, np.ndarray]:
    """The hand (``gripper_boxes``) as one mesh in the flange frame, per-face labels."""
    parts, labels = [], []
    for centre, size, label in gripper_boxes(opening_m):
        box = trimesh.creation.box(size)
        box.apply_translation(centre)
        parts.append(box)
        labels.append(np.full(len(box.faces), label, dtype=np.int32))
    mesh = trimesh.util.concatenate(parts)
    assert isinstance(mesh, trimesh.Trimesh)
    return mesh, np.concatenate(labels)


def in_gripper(
    points: np.ndarray, T_base_ee: np.ndarray, opening_m: float, margin_m: float
) -> np.ndarray:
    """(N,) bool: which base-frame points lie in the hand posed at ``T_base_ee`` (its boxes
    grown by ``margin_m``): a robot self-filter, as a real pipeline runs with the hand's CAD
    at the reported flange pose."""
    local = transform_points(invert_pose(T_base_ee), np.asarray(points, dtype=np.float64))
    inside = np.zeros(len(local), dtype=bool)
    for centre, size, _ in gripper_boxes(opening_m):
        inside |= np.all(np.abs(local - centre) <= size / 2 + margin_m, axis=1)
    return inside


def backdrop_item() -> MeshItem:
    """The matte black panel behind the presentation point (not part of the part)."""
    panel = trimesh.creation.box((0.8, 0.01, 0.6))
    T = make_pose(np.eye(3), PRESENT_AT + BACKDROP_BEHIND_M * CAMERA_AXIS)
    return MeshItem("pih-backdrop", panel, T, {0: BACKDROP}, is_part=False)


def ring_light(T_base_cam: np.ndarray, intensity: float) -> Light:
    """A ring light around the lens: a spot light at the camera, along its axis."""
    return Light("spot", np.asarray(T_base_cam), intensity=intensity, spot_deg=35.0)


def cell_setup(
    setup: CellSetup, distance_m: float, hand_eye: PoseErrorModel, rng: np.random.Generator
) -> CellSetup:
    """The part-in-hand set-up: the fixed camera's true pose stands in ``T_ee_cam`` (it is
    mounted on the world, not on the flange) and its believed pose carries the calibration
    error ``hand_eye``; both are base-frame poses here."""
    T = fixed_camera_pose(distance_m)
    return dataclasses.replace(setup, T_ee_cam=T, T_ee_cam_believed=T @ hand_eye.sample(rng))


class PartInHandCell(EyeInHandCell):
    """The part-in-hand cell for one part: grasps, presentations and the fixed camera.

    ``setup.T_ee_cam`` and ``setup.T_ee_cam_believed`` hold the fixed camera's true and
    believed base-frame poses (``cell_setup``). ``grasp_rng`` draws the real grasp's
    error once per part (``errors.object_pose``, via ``grasp_error``).
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
        grasp_rng: np.random.Generator | None = None,
        orientations: int = 16,
        grasps: int = 2,
        grasp_error: PoseErrorModel | None = None,
    ) -> None:
        super().__init__(setup, placement, robot, renderer, rng, twin_renderer, progress)
        self.orientations = orientations
        self.grasps = grasps
        grng = grasp_rng or np.random.default_rng(0)
        err = grasp_error or PoseErrorModel("object_pose")
        nominal = placement.part.nominal
        self._grasps = []
        for g in range(grasps):
            T_obj_ee, opening = grasp_pose(nominal, 2 * np.pi * g / grasps)
            T_ee_obj = invert_pose(T_obj_ee)
            self._grasps.append((T_ee_obj, T_ee_obj @ err.sample(grng), opening))
        self._view: int | None = None

    def part(self) -> PartInfo:
        info = super().part()
        return dataclasses.replace(
            info, meta={**info.meta, "grasps": self.grasps, "orientations": self.orientations}
        )

    def plan_viewpoints(self) -> dict[int, np.ndarray]:
        """Planned camera poses ``T_obj_cam``: each grasp's share of view directions on a
        Fibonacci sphere around the part centre, at the fixed camera's distance."""
        counts = views_per_grasp(self.orientations, self.grasps)
        c = self.placement.center_obj
        dist = float(np.linalg.norm(self.setup.T_ee_cam[:3, 3] - PRESENT_AT))
        out: dict[int, np.ndarray] = {}
        vid = 0
        for n in counts:
            for d in fibonacci_directions(n):
                # "up" in the image: the part's z axis where possible, else its x axis.
                up = (0.0, 0.0, 1.0) if abs(d[2]) < 0.95 else (1.0, 0.0, 0.0)
                out[vid] = look_at(c + dist * d, c, up)
                vid += 1
        return out

    def _flange_target(self, view_id: int) -> np.ndarray:
        """Flange pose that presents the part (nominal grasp) as view ``view_id`` plans."""
        g, _ = view_grasp(view_id, self.orientations, self.grasps)
        T_obj_cam = self.plan_viewpoints()[view_id]
        # The part's centre goes to the presentation point: offset the planned camera pose.
        T_base_obj = self.setup.T_ee_cam_believed @ invert_pose(T_obj_cam)
        T_ee_obj = self._grasps[g][0]
        return T_base_obj @ invert_pose(T_ee_obj)

    def move_to(self, view_id: int) -> bool:
        """Present the part as planned view ``view_id``; False if the arm cannot."""
        if not 0 <= view_id < self.orientations:
            self.last_failure = f"no planned view {view_id}"
            self._T_base_ee = None
            return False
        g, _ = view_grasp(view_id, self.orientations, self.grasps)
        T_obj_cam = self.plan_viewpoints()[view_id]
        d = T_obj_cam[:3, 3] - self.placement.center_obj
        d /= np.linalg.norm(d)
        ang = 2 * np.pi * g / self.grasps
        hand = np.array([np.cos(ang), np.sin(ang), 0.0])
        if float(d @ hand) > np.cos(np.radians(HAND_SIDE_DEG)):
            self.last_failure = (
                f"occluded (view within {HAND_SIDE_DEG:.0f} deg of the grasp side: "
                "the hand hides the part)"
            )
            self._T_base_ee = None
            return False
        target = self._flange_target(view_id)
        # The held part is checked as a body between the fingers (the "camera body" of
        # RobotScene, posed at the tool centre point).
        T_ee_tcp = make_pose(np.eye(3), np.array([0.0, 0.0, TCP_Z_M]))
        res = self._robot.reach(target, T_ee_tcp)
        self.last_failure = res.reason
        self._T_base_ee = res.T_base_ee if res.ok else None
        self._view = view_id if res.ok else None
        return res.ok

    def _capture_poses(self) -> CapturePoses:
        T_base_ee = self._require_pose()
        assert self._view is not None
        g, _ = view_grasp(self._view, self.orientations, self.grasps)
        T_ee_obj, T_ee_obj_real, _ = self._grasps[g]
        E_robot = self.setup.robot_error.sample(self._rng)
        T_base_ee_real = T_base_ee @ E_robot
        return CapturePoses(
            T_base_cam=self.setup.T_ee_cam,
            T_base_obj=T_base_ee_real @ T_ee_obj_real,
            T_base_cam_twin=self.setup.T_ee_cam_believed,
            T_base_obj_twin=T_base_ee @ T_ee_obj,
            T_base_ee=T_base_ee_real,
            T_base_ee_twin=T_base_ee,
        )

    def _occluders(self, T_base_ee: np.ndarray, twin: bool) -> tuple[MeshItem, ...]:
        """The gripper (at the flange pose) and the backdrop."""
        assert self._view is not None
        g, _ = view_grasp(self._view, self.orientations, self.grasps)
        opening = self._grasps[g][2]
        mesh, labels = gripper_mesh(round(opening, 5))
        mats = {0: TWIN_GRIPPER, 1: TWIN_GRIPPER} if twin else {0: PALM, 1: FINGER}
        key = f"pih-gripper/{opening:.5f}"
        return (MeshItem(key, mesh, T_base_ee, mats, labels, is_part=False), backdrop_item())

    def _points(
        self, depth: np.ndarray, T_base_cam: np.ndarray, poses: CapturePoses
    ) -> tuple[np.ndarray, np.ndarray]:
        """The part's region (``EyeInHandCell._points``) without the hand's own points:
        the believed hand (reported flange pose) grown by ``SELF_FILTER_MARGIN_M``."""
        pts, pix = super()._points(depth, T_base_cam, poses)
        assert self._view is not None
        g, _ = view_grasp(self._view, self.orientations, self.grasps)
        mine = in_gripper(pts, poses.T_base_ee_twin, self._grasps[g][2], SELF_FILTER_MARGIN_M)
        return pts[~mine], pix[~mine]

    def _real_look(self, center: np.ndarray) -> Look:
        look = super()._real_look(center)
        ring = ring_light(self.setup.T_ee_cam, 2.0)
        return dataclasses.replace(look, lights=(*look.lights, ring), clutter=())

    def _twin_look(self, center: np.ndarray) -> Look:
        look = twin_look(center)
        ring = ring_light(self.setup.T_ee_cam_believed, 2.0)
        return dataclasses.replace(look, lights=(*look.lights, ring))
