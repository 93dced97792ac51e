"""Tests of the physics placement: parts dropped on the table come to a stable rest on it."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import trimesh

from sim.geometry import pose_error, transform_points
from sim.parts import build_model, make_params, manifold_to_trimesh, union_model
from sim.physics import Drop, DropSpec, drop_part, simulate_pose

XY = (0.5, 0.0)


@functools.cache
def _part(family: str) -> trimesh.Trimesh:
    """The nominal part of ``family`` as a metre mesh in its object frame."""
    mesh, _ = manifold_to_trimesh(union_model(build_model(family, make_params(family, {}))))
    return mesh


def _check_rest(mesh: trimesh.Trimesh, drop: Drop, spec: DropSpec) -> None:
    """On the table, at rest, stable, near the drop point."""
    z = transform_points(drop.T_base_obj, np.asarray(mesh.vertices))[:, 2]
    assert -0.05e-3 <= z.min() <= 0.05e-3
    assert drop.settled and drop.settle_s < spec.max_time_s
    assert abs(drop.penetration_m) < 0.5e-3  # the solver's residual, not a margin gap
    assert np.linalg.norm(drop.T_base_obj[:2, 3] - XY) < 0.15
    T_after = simulate_pose(mesh, drop.T_base_obj, 1.0, spec)
    dt, dr = pose_error(T_after, drop.T_base_obj)
    assert dt < 0.5e-3 and np.degrees(dr) < 0.5


@pytest.mark.parametrize("seed", [0, 1])
def test_flange_dropped_with_tilt_rests_on_the_table(seed: int) -> None:
    mesh, spec = _part("flange_bearing_seat"), DropSpec(tilt_deg=20.0)
    drop = drop_part(mesh, XY, 0.7, np.random.default_rng(seed), spec)
    _check_rest(mesh, drop, spec)
    assert np.linalg.norm(drop.T_base_obj[:2, 3] - XY) < 0.03
    # a tilt of 20 deg cannot turn a flat flange over: it lands on its underside, upright
    assert drop.T_base_obj[2, 2] > np.cos(np.radians(1.0))


def test_drop_is_deterministic_by_seed() -> None:
    mesh = _part("flange_bearing_seat")
    a, b, c = (drop_part(mesh, XY, 0.3, np.random.default_rng(s)) for s in (5, 5, 6))
    assert a.T_base_obj.tobytes() == b.T_base_obj.tobytes()
    assert a.settle_s == b.settle_s and a.penetration_m == b.penetration_m
    assert a.T_base_obj.tobytes() != c.T_base_obj.tobytes()


def test_tilted_box_lands_flat_on_a_face() -> None:
    mesh = trimesh.creation.box([0.06, 0.04, 0.02])
    spec = DropSpec(height_m=0.05, tilt_deg=90.0)
    for seed in range(3):
        drop = drop_part(mesh, XY, -0.4, np.random.default_rng(seed), spec)
        _check_rest(mesh, drop, spec)
        # some face normal (a box axis) is vertical
        assert np.abs(drop.T_base_obj[2, :3]).max() > np.cos(np.radians(1.0))


def test_pipe_elbow_dropped_on_its_side_comes_to_rest() -> None:
    mesh, spec = _part("pipe_elbow"), DropSpec(height_m=0.05, tilt_deg=90.0)
    tilted = 0
    for seed in range(3):
        drop = drop_part(mesh, XY, 0.0, np.random.default_rng(seed), spec)
        _check_rest(mesh, drop, spec)
        tilted += drop.T_base_obj[2, 2] < np.cos(np.radians(10.0))
    assert tilted >= 1, "a 90 deg tilt should put the elbow on its side at least once"


def test_upright_drop_without_tilt_keeps_yaw() -> None:
    mesh = _part("flange_bearing_seat")
    drop = drop_part(mesh, XY, 0.5, np.random.default_rng(0), DropSpec(tilt_deg=0.0))
    x_axis = drop.T_base_obj[:3, 0]
    assert abs(np.arctan2(x_axis[1], x_axis[0]) - 0.5) < np.radians(2.0)
