"""PyBullet kinematic scene: table, robot arm with a flange camera, and the part's collider.

PyBullet runs headless (DIRECT) and only for kinematics and collision: inverse kinematics
to reach a camera pose, forward kinematics for the pose actually reached, and collision
checks that drop infeasible viewpoints. Images come from the renderers, not from PyBullet.

Collisions checked, in this order (the first hit is the failure reason):

1. arm links vs the table (links 0-1 stand on it by design) and the part;
2. the camera body vs the table and the part;
3. the arm against itself: every pair of links with a collision shape, except parent-child
   pairs and pairs already in contact at the rest pose (computed once at construction: the
   URDF's convex link hulls overlap at fixed joints and at the gripper, and those contacts
   are part of the arm, not a fault). For the Panda that skips the chain pairs plus
   panda_link7 / panda_hand (joined through the shape-less panda_link8) and the two
   fingers; for the iiwa only the chain pairs;
4. the camera body vs the arm, except the links it is mounted on: the flange link, every
   link joined to it by fixed joints, its descendants (the Panda's fingers) and whatever
   else the camera body already touches at the rest pose for that ``T_ee_cam`` (computed
   once per ``T_ee_cam``). With the default hand-eye that is panda_link7 / panda_hand /
   fingers for the Panda, and lbr_iiwa_link_7 plus lbr_iiwa_link_6 for the iiwa (the
   camera box reaches 5 mm behind the flange).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import pybullet_data

from scenarios.interfaces import SpecError
from sim.geometry import invert_pose, make_pose, pose_error


@contextmanager
def _silenced_stderr() -> Iterator[None]:
    """Point file descriptor 2 at /dev/null for the block (C code writes there directly)."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


# pybullet's C extension prints a "pybullet build time" banner to stderr on import, which
# lands in the middle of a progress bar; nothing else it could say at import matters.
with _silenced_stderr():
    import pybullet as pb

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RobotModel:
    """A robot from pybullet_data: URDF path, flange link, rest pose (rad), repeatability.

    ``repeatability_mm`` is the data sheet's pose repeatability (ISO 9283 RP, the +- value),
    which the per-capture robot error model uses.
    """

    name: str
    urdf: str
    ee_link: str
    rest_pose: tuple[float, ...]
    repeatability_mm: float
    base_xyz: tuple[float, float, float] = (0.0, 0.0, 0.0)


ROBOTS: dict[str, RobotModel] = {
    "panda": RobotModel(
        "panda",
        "franka_panda/panda.urdf",
        "panda_hand",
        (0.0, -0.3, 0.0, -2.2, 0.0, 2.0, 0.785),
        # Franka Emika Panda data sheet: pose repeatability +-0.1 mm (ISO 9283).
        repeatability_mm=0.1,
    ),
    "kuka_iiwa": RobotModel(
        "kuka_iiwa",
        "kuka_iiwa/model.urdf",
        "lbr_iiwa_link_7",
        (0.0, 0.5, 0.0, -1.5, 0.0, 1.0, 0.0),
        # KUKA LBR iiwa 7 R800 data sheet: pose repeatability (ISO 9283) +-0.1 mm.
        repeatability_mm=0.1,
    ),
}


@dataclass(frozen=True)
class ReachResult:
    """Outcome of driving the flange to a target: the joints, the FK pose, why it failed."""

    ok: bool
    q: np.ndarray
    T_base_ee: np.ndarray
    reason: str = ""


def _pose_from_pb(pos: tuple[float, ...], quat: tuple[float, ...]) -> np.ndarray:
    R = np.array(pb.getMatrixFromQuaternion(quat), dtype=np.float64).reshape(3, 3)
    return make_pose(R, np.asarray(pos, dtype=np.float64))


def _quat_from_R(R: np.ndarray) -> list[float]:
    from scipy.spatial.transform import Rotation

    return [float(v) for v in Rotation.from_matrix(R).as_quat()]  # x, y, z, w like PyBullet


class RobotScene:
    """A PyBullet world holding the table (top at z = 0), a fixed-base robot and the part.

    The part's collider, posed at ``T_base_obj``, is its convex hull when
    ``part_hull_obj`` ((n, 3) float64 vertices, metres, object frame) is given, else its
    object-frame bounding box ``part_bounds_m`` ((2, 3): min and max corners): enough to
    keep the arm and the camera off the part. ``T_ee_cam`` is only used to check the camera
    body (``camera_body_m``, a box behind the optical centre) for collisions.
    """

    def __init__(
        self,
        robot: str,
        T_base_obj: np.ndarray,
        part_bounds_m: np.ndarray,
        camera_body_m: tuple[float, float, float] = (0.09, 0.03, 0.03),
        pos_tol_m: float = 2e-3,
        rot_tol_rad: float = np.radians(1.0),
        *,
        part_hull_obj: np.ndarray | None = None,
    ) -> None:
        if robot not in ROBOTS:
            raise SpecError(f"cell.robot: unknown {robot!r}; allowed: {', '.join(sorted(ROBOTS))}")
        self.model = ROBOTS[robot]
        self._cid = pb.connect(pb.DIRECT)
        pb.setAdditionalSearchPath(pybullet_data.getDataPath(), physicsClientId=self._cid)
        self._robot = pb.loadURDF(
            self.model.urdf,
            basePosition=self.model.base_xyz,
            useFixedBase=True,
            physicsClientId=self._cid,
        )
        self._joints = [
            j
            for j in range(pb.getNumJoints(self._robot, physicsClientId=self._cid))
            if pb.getJointInfo(self._robot, j, physicsClientId=self._cid)[2] == pb.JOINT_REVOLUTE
        ][: len(self.model.rest_pose)]
        names = [
            pb.getJointInfo(self._robot, j, physicsClientId=self._cid)[12].decode()
            for j in range(pb.getNumJoints(self._robot, physicsClientId=self._cid))
        ]
        self._names = names
        self._ee = names.index(self.model.ee_link)
        info = [pb.getJointInfo(self._robot, j, physicsClientId=self._cid) for j in self._joints]
        self._lower = [float(i[8]) for i in info]
        self._upper = [float(i[9]) for i in info]
        # A 1.6 m x 1.6 m x 4 cm table slab whose top is the plane z = 0.
        table = pb.createCollisionShape(
            pb.GEOM_BOX, halfExtents=[0.8, 0.8, 0.02], physicsClientId=self._cid
        )
        self._table = pb.createMultiBody(
            0, table, basePosition=[0.4, 0.0, -0.021], physicsClientId=self._cid
        )
        if part_hull_obj is not None:
            # A GEOM_MESH from bare vertices is a convex hull shape in Bullet.
            hull = np.asarray(part_hull_obj, dtype=np.float64).reshape(-1, 3)
            shape = pb.createCollisionShape(
                pb.GEOM_MESH, vertices=hull.tolist(), physicsClientId=self._cid
            )
            T_shape = np.asarray(T_base_obj, dtype=np.float64)
        else:
            lo, hi = np.asarray(part_bounds_m[0]), np.asarray(part_bounds_m[1])
            shape = pb.createCollisionShape(
                pb.GEOM_BOX, halfExtents=((hi - lo) / 2).tolist(), physicsClientId=self._cid
            )
            T_shape = np.asarray(T_base_obj) @ make_pose(np.eye(3), (hi + lo) / 2)
        self._part = pb.createMultiBody(
            0,
            shape,
            basePosition=T_shape[:3, 3].tolist(),
            baseOrientation=_quat_from_R(T_shape[:3, :3]),
            physicsClientId=self._cid,
        )
        cam = pb.createCollisionShape(
            pb.GEOM_BOX, halfExtents=[s / 2 for s in camera_body_m], physicsClientId=self._cid
        )
        self._camera = pb.createMultiBody(0, cam, physicsClientId=self._cid)
        self._pos_tol = pos_tol_m
        self._rot_tol = rot_tol_rad
        n_links = len(names)
        self._parents = [
            int(pb.getJointInfo(self._robot, j, physicsClientId=self._cid)[16])
            for j in range(n_links)
        ]
        self._shaped = [
            link
            for link in range(-1, n_links)
            if pb.getCollisionShapeData(self._robot, link, physicsClientId=self._cid)
        ]
        self._self_pairs = self._self_collision_pairs()
        self._mount = self._mounted_links()
        self._camera_skip: dict[bytes, frozenset[int]] = {}

    def close(self) -> None:
        """Disconnect the PyBullet client."""
        if self._cid >= 0:
            pb.disconnect(self._cid)
            self._cid = -1

    def __enter__(self) -> RobotScene:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _link_name(self, link: int) -> str:
        return "robot base" if link < 0 else f"robot link {link}"

    def _touching_links(self, body: int) -> set[int]:
        """Arm links (base -1) whose shapes touch ``body`` in the current state."""
        return {
            link
            for link in self._shaped
            if pb.getClosestPoints(
                body, self._robot, 0.0, linkIndexB=link, physicsClientId=self._cid
            )
        }

    def _self_collision_pairs(self) -> list[tuple[int, int]]:
        """Link pairs checked for self-collision: all shaped pairs that are not parent-child
        and do not already touch at the rest pose (fixed contacts of the URDF)."""
        self._set_q(np.asarray(self.model.rest_pose, dtype=np.float64))
        pb.performCollisionDetection(physicsClientId=self._cid)
        pairs = []
        for i, a in enumerate(self._shaped):
            for b in self._shaped[i + 1 :]:
                if self._parents[b] == a or (a >= 0 and self._parents[a] == b):
                    continue
                if pb.getClosestPoints(
                    self._robot,
                    self._robot,
                    0.0,
                    linkIndexA=a,
                    linkIndexB=b,
                    physicsClientId=self._cid,
                ):
                    log.debug(
                        "%s: links %d and %d touch at rest; not checked", self.model.name, a, b
                    )
                    continue
                pairs.append((a, b))
        return pairs

    def _mounted_links(self) -> frozenset[int]:
        """The flange link, the links joined to it by fixed joints, and its descendants:
        the rigid tool the camera is mounted on (never a camera collision)."""
        fixed = {
            j
            for j in range(len(self._names))
            if pb.getJointInfo(self._robot, j, physicsClientId=self._cid)[2] == pb.JOINT_FIXED
        }
        mount = {self._ee}
        link = self._ee
        while link in fixed and self._parents[link] >= 0:  # up through fixed joints
            link = self._parents[link]
            mount.add(link)
        changed = True
        while changed:  # down: every descendant, whatever its joint
            changed = False
            for child, parent in enumerate(self._parents):
                if parent in mount and child not in mount:
                    mount.add(child)
                    changed = True
        return frozenset(mount)

    def _camera_skipped(self, T_ee_cam: np.ndarray) -> frozenset[int]:
        """Links not checked against the camera body for this hand-eye: the mount and what
        the body touches at the rest pose (computed once per ``T_ee_cam``)."""
        key = np.asarray(T_ee_cam, dtype=np.float64).tobytes()
        if key not in self._camera_skip:
            T_base_ee = self.forward_kinematics(np.asarray(self.model.rest_pose))
            self._place_camera(T_base_ee @ T_ee_cam)
            pb.performCollisionDetection(physicsClientId=self._cid)
            touching = self._touching_links(self._camera)
            log.debug("%s: camera touches links %s at rest", self.model.name, sorted(touching))
            self._camera_skip[key] = self._mount | touching
        return self._camera_skip[key]

    def _set_q(self, q: np.ndarray) -> None:
        for j, v in zip(self._joints, q, strict=True):
            pb.resetJointState(self._robot, j, float(v), physicsClientId=self._cid)

    def forward_kinematics(self, q: np.ndarray) -> np.ndarray:
        """Flange pose ``T_base_ee`` (4, 4) for arm joint angles ``q`` (radians)."""
        self._set_q(q)
        st = pb.getLinkState(
            self._robot, self._ee, computeForwardKinematics=True, physicsClientId=self._cid
        )
        return _pose_from_pb(st[4], st[5])

    def reach(self, T_base_ee: np.ndarray, T_ee_cam: np.ndarray) -> ReachResult:
        """Solve IK for a flange target, then check accuracy, joint limits and collisions.

        IK is seeded from a fixed list of postures (the rest pose, then the rest pose turned
        towards the target and with the wrist rolled), so the answer depends only on the
        target: samples can be computed in any order or process. The first posture that
        passes every check wins; otherwise the first failure's reason is reported.
        """
        rest = np.asarray(self.model.rest_pose, dtype=np.float64)
        toward = rest.copy()
        toward[0] = np.arctan2(T_base_ee[1, 3], T_base_ee[0, 3])
        seeds = [rest, toward]
        for roll in (np.pi / 2, -np.pi / 2):
            s = toward.copy()
            s[-1] = np.clip(s[-1] + roll, self._lower[-1], self._upper[-1])
            seeds.append(s)
        first: ReachResult | None = None
        for seed in seeds:
            res = self._reach_from(seed, T_base_ee, T_ee_cam)
            if res.ok:
                return res
            first = first or res
        assert first is not None
        return first

    def _reach_from(
        self, seed: np.ndarray, T_base_ee: np.ndarray, T_ee_cam: np.ndarray
    ) -> ReachResult:
        self._set_q(seed)
        target_pos = T_base_ee[:3, 3].tolist()
        target_quat = _quat_from_R(T_base_ee[:3, :3])
        ranges = [u - lo for lo, u in zip(self._lower, self._upper, strict=True)]
        q = seed
        # PyBullet's damped least squares converges better when re-seeded from its own
        # answer; a few rounds reach sub-millimetre accuracy where a pose is reachable.
        for _ in range(4):
            sol = pb.calculateInverseKinematics(
                self._robot,
                self._ee,
                target_pos,
                target_quat,
                lowerLimits=self._lower,
                upperLimits=self._upper,
                jointRanges=ranges,
                restPoses=seed.tolist(),
                maxNumIterations=200,
                residualThreshold=1e-6,
                physicsClientId=self._cid,
            )
            q = self._wrap_into_limits(np.asarray(sol[: len(self._joints)], dtype=np.float64))
            self._set_q(q)
        T_reached = self.forward_kinematics(q)
        dt, dr = pose_error(T_reached, T_base_ee)
        if dt > self._pos_tol or dr > self._rot_tol:
            return ReachResult(
                False,
                q,
                T_reached,
                f"unreachable (IK error {dt * 1e3:.1f} mm, {np.degrees(dr):.1f} deg)",
            )
        eps = 1e-6
        if np.any(q < np.asarray(self._lower) - eps) or np.any(q > np.asarray(self._upper) + eps):
            return ReachResult(False, q, T_reached, "unreachable (joint limits)")
        hit = self.collides(q, T_ee_cam)
        if hit:
            return ReachResult(False, q, T_reached, f"collision ({hit})")
        return ReachResult(True, q, T_reached)

    def _wrap_into_limits(self, q: np.ndarray) -> np.ndarray:
        """Shift joint angles by whole turns into their limits where that helps.

        PyBullet's IK treats revolute joints as unbounded; q and q +- 2 pi are the same arm.
        """
        q = q.copy()
        for i, (lo, hi) in enumerate(zip(self._lower, self._upper, strict=True)):
            for shift in (-2 * np.pi, 2 * np.pi):
                if not lo <= q[i] <= hi and lo <= q[i] + shift <= hi:
                    q[i] += shift
        return q

    def collides(self, q: np.ndarray, T_ee_cam: np.ndarray) -> str:
        """What the arm at joints ``q`` (rad) with its camera at ``T_ee_cam`` (4, 4) touches.

        Returns one short reason such as ``"robot link 3 with robot link 6"`` or
        ``"camera with table"``, or ``""`` when the configuration is collision-free. Leaves
        the arm at ``q``.
        """
        skip = self._camera_skipped(T_ee_cam)
        T_base_ee = self.forward_kinematics(np.asarray(q, dtype=np.float64))
        return self._collision(T_base_ee @ np.asarray(T_ee_cam), skip)

    def _place_camera(self, T_base_cam: np.ndarray) -> None:
        # The camera body sits behind the optical centre, along -z of the camera.
        T_body = T_base_cam @ make_pose(np.eye(3), np.array([0.0, 0.0, -0.02]))
        pb.resetBasePositionAndOrientation(
            self._camera,
            T_body[:3, 3].tolist(),
            _quat_from_R(T_body[:3, :3]),
            physicsClientId=self._cid,
        )

    def _collision(self, T_base_cam: np.ndarray, camera_skip: frozenset[int]) -> str:
        """Name what the arm or the camera body touches in the current state, or ''."""
        self._place_camera(T_base_cam)
        pb.performCollisionDetection(physicsClientId=self._cid)
        n_links = pb.getNumJoints(self._robot, physicsClientId=self._cid)
        for other, name in ((self._table, "table"), (self._part, "part")):
            # Links 0-1 stand on the table by design; everything else must keep clear.
            first = 2 if other == self._table else 0
            for link in range(first, n_links):
                if pb.getClosestPoints(
                    self._robot, other, 0.0, linkIndexA=link, physicsClientId=self._cid
                ):
                    return f"robot link {link} with {name}"
            if pb.getClosestPoints(self._camera, other, 0.0, physicsClientId=self._cid):
                return f"camera with {name}"
        for a, b in self._self_pairs:
            if pb.getClosestPoints(
                self._robot,
                self._robot,
                0.0,
                linkIndexA=a,
                linkIndexB=b,
                physicsClientId=self._cid,
            ):
                return f"{self._link_name(a)} with {self._link_name(b)}"
        for link in self._shaped:
            if link not in camera_skip and pb.getClosestPoints(
                self._camera, self._robot, 0.0, linkIndexB=link, physicsClientId=self._cid
            ):
                return f"camera with {self._link_name(link)}"
        return ""

    @staticmethod
    def flange_target(T_base_cam: np.ndarray, T_ee_cam: np.ndarray) -> np.ndarray:
        """Flange pose that puts the camera at ``T_base_cam``: ``T_base_cam @ T_cam_ee``."""
        return np.asarray(T_base_cam) @ invert_pose(T_ee_cam)
