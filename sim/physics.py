"""Physics placement: drop a part onto the table with PyBullet and return its resting pose.

A part put down by a person or a feeder does not stand at an exact CAD-planned pose: it
lands on one of its stable faces, a little off the drop point. ``drop_part`` simulates that
with a rigid-body drop onto a static table whose top is the plane z = 0 of the base frame.

The part's collision shape is the convex hull of its mesh. A rigid body resting on a plane
touches it only at points of its convex hull (every point of the body lies above the
supporting plane, so the plane supports the hull exactly where it supports the body), so
the hull gives the *exact* set of resting poses; only the transient tumbling on the way
down (a concave part hooking an edge) is approximated. Mass and inertia are those of the
real mesh (trimesh, uniform density), not of the hull.

Every call builds its own DIRECT client and takes its randomness (the tilt) from the
caller's generator only, so the same inputs give the same bytes.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import trimesh
from scipy.spatial.transform import Rotation

from scenarios.interfaces import GeometryError
from sim.geometry import invert_pose, make_pose
from sim.robot_scene import pb

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DropSpec:
    """How a part is dropped and when it counts as at rest (SI units).

    - ``height_m``: drop height of the part's lowest hull point above the table.
    - ``tilt_deg``: initial tilt off the upright orientation, an angle uniform in
      [0, tilt_deg] about a horizontal axis of uniform direction.
    - ``density_kg_m3``: uniform density for the mass (default steel, 7850); the resting
      pose hardly depends on it, the settling time a little.
    - ``friction``: Coulomb friction coefficient of the part-table contact (0.5, dry metal
      on a painted or wooden table); ``spinning_friction_m`` / ``rolling_friction_m``:
      torsional and rolling friction lengths (5 mm, 2 mm: a table mat's), so a part
      rocking on two rims (a pipe elbow on its side) comes to rest instead of creeping for
      seconds. Rolling friction can hold a pose whose centre of mass lies up to
      ``rolling_friction_m`` past its support edge: keep it small.
    - ``collision_margin_m``: Bullet's collision margin for the part and the table; 0, so
      contact happens at the true hull (Bullet's default 1 mm margin would leave the part
      floating 1 mm above the table, and the stability check would see it sink).
    - ``restitution``: coefficient of restitution (0.1: a short bounce, as metal on a
      table mat).
    - ``timestep_s``: simulation step (1/480 s; finer than PyBullet's 1/240 s default for
      thin flanges hitting the table at a few cm/s).
    - ``max_time_s``: simulated time limit; a part not at rest by then is returned at
      its last pose with ``settled=False``.
    - ``rest_lin_mps`` / ``rest_ang_radps`` / ``rest_hold_s``: at rest once the linear
      speed of the centre of mass stays below 1 mm/s and the angular speed below 0.01 rad/s
      for 0.2 s.
    """

    height_m: float = 0.03
    tilt_deg: float = 15.0
    density_kg_m3: float = 7850.0
    friction: float = 0.5
    spinning_friction_m: float = 5e-3
    rolling_friction_m: float = 2e-3
    restitution: float = 0.1
    timestep_s: float = 1.0 / 480.0
    max_time_s: float = 5.0
    rest_lin_mps: float = 1e-3
    rest_ang_radps: float = 0.01
    rest_hold_s: float = 0.2
    collision_margin_m: float = 0.0


@dataclass(frozen=True)
class Drop:
    """A resting pose found by a drop.

    - ``T_base_obj``: (4, 4) float64, the resting pose of the object (mesh) frame in the
      base frame, its lowest hull vertex exactly at z = 0.
    - ``settle_s``: simulated seconds from release until the part came to rest (the start
      of the at-rest window); ``max_time_s`` when it did not settle.
    - ``penetration_m``: how deep the solver left the lowest hull vertex below the table
      (negative: a gap above it), removed by shifting the pose along z.
    - ``settled``: whether the rest criterion was met before ``max_time_s``.
    """

    T_base_obj: np.ndarray
    settle_s: float
    penetration_m: float
    settled: bool = True


@dataclass(frozen=True)
class _Body:
    """Mass properties of a mesh: hull vertices in the principal (body) frame and inertia.

    The PyBullet body frame is the mesh's centre of mass with its principal axes
    (``T_obj_body``), so the inertial frame is the identity and PyBullet's reported base
    pose is ``T_base_body``; the object pose is ``T_base_body @ inv(T_obj_body)``.
    """

    T_obj_body: np.ndarray
    hull_body: np.ndarray
    hull_obj: np.ndarray
    mass_kg: float
    inertia_diag: np.ndarray


def _mass_properties(mesh: trimesh.Trimesh, density_kg_m3: float) -> _Body:
    if not mesh.is_watertight or mesh.volume <= 0:
        raise GeometryError("drop_part needs a watertight mesh with positive volume")
    # trimesh's moment_inertia is about the centre of mass, in the mesh axes, for its own
    # density (1 by default): scale to ours.
    inertia = np.asarray(mesh.moment_inertia, dtype=np.float64) * (density_kg_m3 / mesh.density)
    moments, axes = np.linalg.eigh(inertia)
    if np.linalg.det(axes) < 0:  # a proper rotation: flip one axis
        axes[:, 2] = -axes[:, 2]
    T_obj_body = make_pose(axes, np.asarray(mesh.center_mass, dtype=np.float64))
    hull_obj = np.asarray(mesh.convex_hull.vertices, dtype=np.float64)
    hull_body = (hull_obj - T_obj_body[:3, 3]) @ axes  # R^T (p - c), row-wise
    return _Body(
        T_obj_body,
        hull_body,
        hull_obj,
        float(mesh.volume * density_kg_m3),
        np.maximum(moments, 1e-12),
    )


@contextmanager
def _world(body: _Body, spec: DropSpec) -> Iterator[tuple[int, int]]:
    """A fresh DIRECT client with the table and the part body; yields (client, body id)."""
    cid = pb.connect(pb.DIRECT)
    try:
        pb.setGravity(0.0, 0.0, -9.81, physicsClientId=cid)
        pb.setPhysicsEngineParameter(
            fixedTimeStep=spec.timestep_s,
            numSolverIterations=50,
            deterministicOverlappingPairs=1,
            physicsClientId=cid,
        )
        # A 2 m x 2 m x 10 cm static slab whose top is the plane z = 0 (a box, not an
        # infinite plane: box-vs-hull contacts are the well-tested path in Bullet).
        table_shape = pb.createCollisionShape(
            pb.GEOM_BOX, halfExtents=[1.0, 1.0, 0.05], physicsClientId=cid
        )
        table = pb.createMultiBody(0, table_shape, basePosition=[0, 0, -0.05], physicsClientId=cid)
        shape = pb.createCollisionShape(
            pb.GEOM_MESH, vertices=body.hull_body.tolist(), physicsClientId=cid
        )
        part = pb.createMultiBody(body.mass_kg, shape, physicsClientId=cid)
        for b in (table, part):
            pb.changeDynamics(
                b,
                -1,
                lateralFriction=spec.friction,
                spinningFriction=spec.spinning_friction_m,
                rollingFriction=spec.rolling_friction_m,
                restitution=spec.restitution,
                collisionMargin=spec.collision_margin_m,
                physicsClientId=cid,
            )
        pb.changeDynamics(
            part,
            -1,
            localInertiaDiagonal=body.inertia_diag.tolist(),
            linearDamping=0.0,
            angularDamping=0.0,
            physicsClientId=cid,
        )
        yield cid, part
    finally:
        pb.disconnect(cid)


def _set_pose(cid: int, part: int, body: _Body, T_base_obj: np.ndarray) -> None:
    T_base_body = T_base_obj @ body.T_obj_body
    quat = Rotation.from_matrix(T_base_body[:3, :3]).as_quat()  # x, y, z, w like PyBullet
    pb.resetBasePositionAndOrientation(
        part, T_base_body[:3, 3].tolist(), quat.tolist(), physicsClientId=cid
    )
    pb.resetBaseVelocity(part, [0.0, 0.0, 0.0], [0.0, 0.0, 0.0], physicsClientId=cid)


def _get_pose(cid: int, part: int, body: _Body) -> np.ndarray:
    pos, quat = pb.getBasePositionAndOrientation(part, physicsClientId=cid)
    R = Rotation.from_quat(np.asarray(quat, dtype=np.float64)).as_matrix()
    T_base_body = make_pose(R, np.asarray(pos, dtype=np.float64))
    return T_base_body @ invert_pose(body.T_obj_body)


def _lowest_z(body: _Body, T_base_obj: np.ndarray) -> float:
    return float((body.hull_obj @ T_base_obj[:3, :3].T + T_base_obj[:3, 3])[:, 2].min())


def _run(
    cid: int, part: int, spec: DropSpec, duration_s: float, stop_at_rest: bool
) -> tuple[float, bool]:
    """Step up to ``duration_s``; return (time the at-rest window began, settled)."""
    n_steps = int(np.ceil(duration_s / spec.timestep_s))
    hold = int(np.ceil(spec.rest_hold_s / spec.timestep_s))
    still = 0
    for i in range(1, n_steps + 1):
        pb.stepSimulation(physicsClientId=cid)
        lin, ang = pb.getBaseVelocity(part, physicsClientId=cid)
        if np.linalg.norm(lin) < spec.rest_lin_mps and np.linalg.norm(ang) < spec.rest_ang_radps:
            still += 1
            if stop_at_rest and still >= hold:
                return (i - still) * spec.timestep_s, True
        else:
            still = 0
    return n_steps * spec.timestep_s, False


def _initial_pose(
    body: _Body, xy: tuple[float, float], yaw: float, rng: np.random.Generator, spec: DropSpec
) -> np.ndarray:
    # Tilt: an angle uniform in [0, tilt_deg] about a horizontal axis of uniform direction,
    # applied in the object frame before the yaw (so yaw stays the heading on the table).
    phi = rng.uniform(0.0, 2.0 * np.pi)
    tilt = np.radians(rng.uniform(0.0, spec.tilt_deg))
    axis = np.array([np.cos(phi), np.sin(phi), 0.0])
    R = (
        Rotation.from_rotvec([0.0, 0.0, yaw]).as_matrix()
        @ Rotation.from_rotvec(tilt * axis).as_matrix()
    )
    T = make_pose(R, np.array([xy[0], xy[1], 0.0]))
    T[2, 3] = spec.height_m - _lowest_z(body, T)
    return T


def drop_part(
    mesh: trimesh.Trimesh,
    xy: tuple[float, float],
    yaw: float,
    rng: np.random.Generator,
    spec: DropSpec = DropSpec(),
) -> Drop:
    """Drop ``mesh`` onto the table and return its resting pose ``T_base_obj``.

    ``mesh``: watertight, metres, object frame. The part is released at rest with its
    object-frame origin above ``xy`` (base frame, m), orientation ``Rz(yaw) @ tilt`` (the
    tilt drawn from ``rng``, see ``DropSpec``) and its lowest hull point ``height_m`` above
    the table, then simulated until at rest or ``max_time_s``. The solver's residual contact
    penetration is then removed exactly: the pose is shifted along z so the lowest hull
    vertex lies on z = 0 (``Drop.penetration_m`` reports the shift).
    """
    body = _mass_properties(mesh, spec.density_kg_m3)
    T0 = _initial_pose(body, xy, yaw, rng, spec)
    with _world(body, spec) as (cid, part):
        _set_pose(cid, part, body, T0)
        settle_s, settled = _run(cid, part, spec, spec.max_time_s, stop_at_rest=True)
        T = _get_pose(cid, part, body)
    if not settled:
        log.warning(
            "part not at rest after %.1f s of simulated time; using its last pose", settle_s
        )
    penetration = -_lowest_z(body, T)
    T[2, 3] += penetration
    return Drop(T, settle_s, penetration, settled)


def simulate_pose(
    mesh: trimesh.Trimesh,
    T_base_obj: np.ndarray,
    duration_s: float,
    spec: DropSpec = DropSpec(),
) -> np.ndarray:
    """Release ``mesh`` at rest at ``T_base_obj`` and simulate ``duration_s``; the final pose.

    Checks a resting pose for stability: a stable pose barely moves. No penetration
    correction is applied to the result.
    """
    body = _mass_properties(mesh, spec.density_kg_m3)
    with _world(body, spec) as (cid, part):
        _set_pose(cid, part, body, np.asarray(T_base_obj, dtype=np.float64))
        _run(cid, part, spec, duration_s, stop_at_rest=False)
        return _get_pose(cid, part, body)
