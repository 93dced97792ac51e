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
  the paper). Each grasp's views are planned on the part of the sphere its hand leaves
  free: an equal-area Fibonacci lattice on the spherical cap of angular radius
  ``180 - HAND_SIDE_DEG`` around the direction opposite the grasp side, so no planned view
  looks through the hand. View ``k`` presents the part so that the camera sees it from
  direction ``d_k`` (object frame). The lattice turns with the grasp about the part's z
  axis, so the two grasps see the part from different object-frame directions: what
  stays the same is the perspective relative to the hand, as in the paper, where the
  same 8 robot perspectives are used with a second grasp point.
- Reaching a view: the robot drives the flange to
  ``T_base_cam @ inv(T_obj_cam_k @ R_roll) @ inv(T_ee_obj)`` by IK. The image roll
  ``R_roll`` (about the camera's optical axis) is free for inspection: the first of
  ``ROLLS_DEG`` the arm reaches without colliding with the table or itself is used
  (``PartInHandCell.roll_deg``, and ``roll_deg`` in the observations' meta); the captured
  poses come from the flange pose actually reached. A view no roll reaches is dropped
  with the first roll's reason. On the bundled ``padim-16-views`` scenario every view
  of every part is reached (each with 5 to 8 of the 8 rolls).

Errors: the real part sits in the hand at ``T_ee_obj @ E_grasp`` (``errors.object_pose``:
where a real gripper leaves the part differs from the nominal grasp), the real flange at
the reported pose times a fresh repeatability error per capture, and the camera's
believed extrinsics differ from the true ones by ``errors.hand_eye`` (a fixed camera's
calibration). Both are recorded: each grasp's error in ``part().meta["grasp_error"]``,
the camera's in ``setup.info["fixed_camera"]`` (``camera_error``). The twin shows the
nominal part in the nominal grasp at the reported flange pose, seen from the believed
camera, with the gripper. The gripper hides part of the part in both images and is no
defect: the ground truth's label passes draw it as an occluder.
"""

from __future__ import annotations

import dataclasses
from functools import lru_cache

import numpy as np
import trimesh

from scenarios.interfaces import PartInfo
from sim.appearance import Look, twin_look
from sim.cells.eye_in_hand import (
    Capture,
    CapturePoses,
    CellSetup,
    EyeInHandCell,
    PartPlacement,
)
from sim.geometry import invert_pose, look_at, make_pose, pose_error, transform_points
from sim.pose_errors import PoseErrorModel
from sim.render import Light, Material, MeshItem, Renderer
from sim.robot_scene import RobotScene

#: Where the part is presented (base frame, m): in front of the robot, 40 cm above the bench.
PRESENT_AT = np.array([0.45, 0.0, 0.40])
#: The fixed camera looks along +y at the presentation point.
CAMERA_AXIS = np.array([0.0, 1.0, 0.0])
#: The backdrop: a matte black panel this far behind the presentation point (m). It is no
#: collider, so it stands beyond the arm: views that hold the part from behind put the
#: wrist ~0.3 m and, in some postures, the elbow ~0.45 m behind the presentation point.
BACKDROP_BEHIND_M = 0.5
#: The tool centre point between the fingertips, on the flange's z axis (Franka Hand: 10.34 cm).
TCP_Z_M = 0.1034
#: How far in from the rim the fingers grip (m), and the finger pad size (m).
GRIP_DEPTH_M = 0.008
FINGER_PAD_M = (0.018, 0.02)  # along the approach (z) and across (x)
#: A view direction within this angle of the grasp side (the direction from the part
#: centre to the fingers) would look through the hand: no view is planned there.
HAND_SIDE_DEG = 45.0
#: Image rolls (deg, about the camera's optical axis) tried in turn when the planned
#: presentation is out of reach: the first the arm reaches without collision is used.
ROLLS_DEG = (0.0, 90.0, -90.0, 180.0, 45.0, -45.0, 135.0, -135.0)
#: Points within this distance of the believed hand are the hand's own (self-filter).
SELF_FILTER_MARGIN_M = 0.002
#: Fingertips close this far beyond the nominal thickness (m) so they visibly touch.
FINGER_SQUEEZE_M = 0.0005

BACKDROP = Material((0.02, 0.02, 0.022), metallic=0.0, roughness=0.9, finish="rubber_mat")
PALM = Material((0.85, 0.86, 0.88), metallic=0.0, roughness=0.5, finish="painted")
FINGER = Material((0.7, 0.7, 0.72), metallic=1.0, roughness=0.25, finish="machined")
TWIN_GRIPPER = Material((0.6, 0.6, 0.62), metallic=0.0, roughness=0.6)


def cap_directions(n: int, axis: np.ndarray, half_angle_deg: float) -> np.ndarray:
    """(n, 3) unit vectors spread evenly over the spherical cap of angular radius
    ``half_angle_deg`` around ``axis`` (3,): an equal-area Fibonacci lattice, deterministic.

    The cosine of the angle from ``axis`` is uniform over the cap (equal area per point,
    each at the centre of its band); the azimuth turns by the golden angle, measured from
    the part's z axis (its x axis if ``axis`` is along z). Rotating ``axis`` about the
    part's z axis rotates the lattice with it.
    """
    axis = np.asarray(axis, dtype=np.float64)
    axis = axis / np.linalg.norm(axis)
    ref = np.array([0.0, 0.0, 1.0]) if abs(axis[2]) < 0.9 else np.array([1.0, 0.0, 0.0])
    e1 = ref - (ref @ axis) * axis
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(axis, e1)
    i = np.arange(n, dtype=np.float64) + 0.5
    z = 1.0 - (1.0 - np.cos(np.radians(half_angle_deg))) * i / n
    r = np.sqrt(np.clip(1.0 - z * z, 0.0, None))
    phi = np.pi * (3.0 - np.sqrt(5.0)) * i
    return (
        r[:, None] * np.cos(phi)[:, None] * e1
        + r[:, None] * np.sin(phi)[:, None] * e2
        + z[:, None] * axis
    )


def grasp_side(grasp: int, grasps: int) -> np.ndarray:
    """(3,) unit vector, object frame: from the part's axis towards grasp ``grasp``'s
    fingers (grasps spread evenly around the rim, the first along +x)."""
    ang = 2 * np.pi * grasp / grasps
    return np.array([np.cos(ang), np.sin(ang), 0.0])


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


def _round(x: float, nd: int = 4) -> float:
    return float(round(float(x), nd))


def error_figures(E: np.ndarray) -> dict[str, float]:
    """The size of a pose error ``E`` (4, 4): {"translation_mm", "rotation_deg"}, rounded
    (JSON)."""
    dt, dr = pose_error(np.eye(4), E)
    return {"translation_mm": _round(dt * 1e3), "rotation_deg": _round(np.degrees(dr))}


def cell_setup(
    setup: CellSetup, distance_m: float, hand_eye: PoseErrorModel, rng: np.random.Generator
) -> CellSetup:
    """The part-in-hand set-up: the fixed camera's true pose stands in ``T_ee_cam`` (it is
    mounted on the world, not on the flange) and its believed pose carries the calibration
    error ``hand_eye``; both are base-frame poses here. The error drawn is recorded in
    ``setup.info["fixed_camera"]`` (``camera_error``), so ``run_info`` reports it."""
    T = fixed_camera_pose(distance_m)
    E = hand_eye.sample(rng)
    info = {**setup.info, "fixed_camera": error_figures(E)}
    return dataclasses.replace(setup, T_ee_cam=T, T_ee_cam_believed=T @ E, info=info)


def camera_error(setup: CellSetup) -> dict[str, float]:
    """The fixed camera's extrinsic (calibration) error of a part-in-hand ``setup``: how far
    its believed pose is from its true one, {"translation_mm", "rotation_deg"} (JSON)."""
    return error_figures(invert_pose(setup.T_ee_cam) @ setup.T_ee_cam_believed)


def _roll(roll_deg: float) -> np.ndarray:
    """(4, 4) rotation by ``roll_deg`` about the camera's optical (z) axis."""
    a = np.radians(roll_deg)
    c, s = np.cos(a), np.sin(a)
    return make_pose(np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]), np.zeros(3))


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
        self._grasp_errors: list[dict[str, float]] = []
        for g in range(grasps):
            T_obj_ee, opening = grasp_pose(nominal, 2 * np.pi * g / grasps)
            T_ee_obj = invert_pose(T_obj_ee)
            E_grasp = err.sample(grng)
            self._grasps.append((T_ee_obj, T_ee_obj @ E_grasp, opening))
            self._grasp_errors.append(error_figures(E_grasp))
        self._view: int | None = None
        #: The image roll (deg about the optical axis) ``move_to`` presented the view with
        #: (``ROLLS_DEG``); None until a ``move_to`` succeeds.
        self.roll_deg: float | None = None

    def part(self) -> PartInfo:
        """The part (``EyeInHandCell.part``) with the grasp layout and each grasp's drawn
        error (``grasp_error``: [{"translation_mm", "rotation_deg"}] per grasp)."""
        info = super().part()
        meta = {
            **info.meta,
            "grasps": self.grasps,
            "orientations": self.orientations,
            "grasp_error": [dict(e) for e in self._grasp_errors],
        }
        return dataclasses.replace(info, meta=meta)

    def plan_viewpoints(self) -> dict[int, np.ndarray]:
        """Planned camera poses ``T_obj_cam`` at the fixed camera's distance from the part
        centre: each grasp's share of view directions on the cap of the sphere its hand
        leaves free (``cap_directions`` around the side opposite the grasp, of angular
        radius 180 - ``HAND_SIDE_DEG``), with the part's z axis up in the image where it
        can be. Grasp g's views are grasp 0's turned with the grasp about the part's z axis
        (the same perspectives relative to the hand). Deterministic and free of IK:
        ``move_to`` may roll a view about the optical axis (``ROLLS_DEG``) to reach it,
        which keeps the view direction."""
        counts = views_per_grasp(self.orientations, self.grasps)
        c = self.placement.center_obj
        dist = float(np.linalg.norm(self.setup.T_ee_cam[:3, 3] - PRESENT_AT))
        out: dict[int, np.ndarray] = {}
        vid = 0
        for g, n in enumerate(counts):
            away = -grasp_side(g, self.grasps)
            for d in cap_directions(n, away, 180.0 - HAND_SIDE_DEG):
                # "up" in the image: the part's z axis where possible, else the side away
                # from the hand (both turn with the grasp, as the lattice does).
                up = (0.0, 0.0, 1.0) if abs(d[2]) < 0.95 else away
                out[vid] = look_at(c + dist * d, c, up)
                vid += 1
        return out

    def _flange_target(self, view_id: int, roll_deg: float = 0.0) -> np.ndarray:
        """Flange pose that presents the part (nominal grasp) as view ``view_id`` plans,
        rolled by ``roll_deg`` about the camera's optical axis."""
        g, _ = view_grasp(view_id, self.orientations, self.grasps)
        T_obj_cam = self.plan_viewpoints()[view_id] @ _roll(roll_deg)
        # The part's centre goes to the presentation point: offset the planned camera pose.
        T_base_obj = self.setup.T_ee_cam_believed @ invert_pose(T_obj_cam)
        T_ee_obj = self._grasps[g][0]
        return T_base_obj @ invert_pose(T_ee_obj)

    def move_to(self, view_id: int) -> bool:
        """Present the part as planned view ``view_id``; False if the arm cannot.

        The image roll is free for inspection: the rolls of ``ROLLS_DEG`` are tried in
        turn and the first the arm reaches without collision is used (``roll_deg``); if
        none is, ``last_failure`` is the first roll's reason.
        """
        self._T_base_ee = None
        self._view = None
        self.roll_deg = None
        if not 0 <= view_id < self.orientations:
            self.last_failure = f"no planned view {view_id}"
            return False
        g, _ = view_grasp(view_id, self.orientations, self.grasps)
        T_obj_cam = self.plan_viewpoints()[view_id]
        d = T_obj_cam[:3, 3] - self.placement.center_obj
        d /= np.linalg.norm(d)
        # A guard: the planner keeps every view off the hand's side, so this never fires.
        if float(d @ grasp_side(g, self.grasps)) > np.cos(np.radians(HAND_SIDE_DEG)):
            self.last_failure = (
                f"occluded (view within {HAND_SIDE_DEG:.0f} deg of the grasp side: "
                "the hand hides the part)"
            )
            return False
        # The held part is checked as a body between the fingers (the "camera body" of
        # RobotScene, posed at the tool centre point).
        T_ee_tcp = make_pose(np.eye(3), np.array([0.0, 0.0, TCP_Z_M]))
        first = ""
        for roll in ROLLS_DEG:
            res = self._robot.reach(self._flange_target(view_id, roll), T_ee_tcp)
            if res.ok:
                self.last_failure = ""
                self._T_base_ee = res.T_base_ee
                self._view = view_id
                self.roll_deg = float(roll)
                return True
            first = first or res.reason
        self.last_failure = first
        return False

    def capture_pair(self) -> Capture:
        """``EyeInHandCell.capture_pair`` with the image roll used (``roll_deg``) in both
        observations' meta."""
        cap = super().capture_pair()
        real = dataclasses.replace(cap.real, meta={**cap.real.meta, "roll_deg": self.roll_deg})
        twin = dataclasses.replace(cap.twin, meta={**cap.twin.meta, "roll_deg": self.roll_deg})
        return dataclasses.replace(cap, real=real, twin=twin)

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
        self,
        depth: np.ndarray,
        T_base_cam: np.ndarray,
        T_base_obj_twin: np.ndarray,
        T_base_ee_twin: np.ndarray,
        floor_m: float = 0.0,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The part's region (``EyeInHandCell._points``) without the hand's own points:
        the believed hand (reported flange pose) grown by ``SELF_FILTER_MARGIN_M``."""
        pts, pix = super()._points(depth, T_base_cam, T_base_obj_twin, T_base_ee_twin, floor_m)
        assert self._view is not None
        g, _ = view_grasp(self._view, self.orientations, self.grasps)
        mine = in_gripper(pts, T_base_ee_twin, self._grasps[g][2], SELF_FILTER_MARGIN_M)
        return pts[~mine], pix[~mine]

    def _real_look(self, center: np.ndarray) -> Look:
        look = super()._real_look(center)
        ring = ring_light(self.setup.T_ee_cam, 2.0)
        return dataclasses.replace(look, lights=(*look.lights, ring), clutter=())

    def _twin_look(self, center: np.ndarray) -> Look:
        look = twin_look(center)
        ring = ring_light(self.setup.T_ee_cam_believed, 2.0)
        return dataclasses.replace(look, lights=(*look.lights, ring))
