"""Tests of the PyBullet robot scene: reachability, self-collision, camera and part colliders."""

from __future__ import annotations

import numpy as np
import pytest

from sim.geometry import look_at, make_pose, pose_from_xyz_rpy
from sim.robot_scene import ROBOTS, RobotScene

T_EE_CAM = pose_from_xyz_rpy([0.05, 0.0, 0.03], [0.0, 0.0, 0.0])  # the default hand-eye
PART_AT = make_pose(np.eye(3), [0.5, 0.0, 0.0])
SMALL_BOUNDS = np.array([[-0.04, -0.04, 0.0], [0.04, 0.04, 0.03]])


def _scene(robot: str, **kwargs: object) -> RobotScene:
    return RobotScene(robot, PART_AT, SMALL_BOUNDS, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("robot", sorted(ROBOTS))
def test_rest_pose_is_collision_free(robot: str) -> None:
    with _scene(robot) as scene:
        assert scene.collides(np.asarray(ROBOTS[robot].rest_pose), T_EE_CAM) == ""


@pytest.mark.parametrize("robot", sorted(ROBOTS))
def test_robot_has_a_data_sheet_repeatability(robot: str) -> None:
    assert 0.0 < ROBOTS[robot].repeatability_mm <= 0.2


@pytest.mark.parametrize(
    ("robot", "q", "reason"),
    [
        # the wrist folded flat (joint 6 at 0): panda_link7 against panda_link5
        ("panda", [0.0, -0.3, 0.0, -2.2, 0.0, 0.0, 0.785], "robot link 4 with robot link 6"),
        # elbow fully folded, the hand swung back onto the upper arm
        (
            "panda",
            [-0.24, 0.03, 1.72, -2.85, 0.47, 0.68, 1.83],
            "robot link 1 with robot link 8",
        ),
        # wrist bent 120 deg: link 7 folds onto link 5
        ("kuka_iiwa", [0.0, 0.5, 0.0, -1.5, 0.0, 2.094, 0.0], "robot link 4 with robot link 6"),
    ],
)
def test_folded_arm_is_a_self_collision(robot: str, q: list[float], reason: str) -> None:
    with _scene(robot) as scene:
        assert scene.collides(np.asarray(q), T_EE_CAM) == reason


def test_camera_against_the_arm_is_a_collision() -> None:
    # the iiwa's wrist bent so far that the flange camera hits link 5 (index 4)
    with _scene("kuka_iiwa") as scene:
        q = np.array([0.0, 0.5, 0.0, -1.5, 0.0, 1.8, 0.0])
        assert scene.collides(q, T_EE_CAM) == "camera with robot link 4"


@pytest.mark.parametrize("robot", sorted(ROBOTS))
def test_pose_above_the_part_is_reachable(robot: str) -> None:
    with _scene(robot) as scene:
        for eye in ([0.5, 0.0, 0.25], [0.4, 0.1, 0.2], [0.6, -0.1, 0.18]):
            T_base_cam = look_at(eye, [0.5, 0.0, 0.0], up=(1.0, 0.0, 0.0))
            res = scene.reach(RobotScene.flange_target(T_base_cam, T_EE_CAM), T_EE_CAM)
            assert res.ok, res.reason


def test_hull_collider_follows_the_part_not_its_box() -> None:
    # a square pyramid 30 cm wide and 30 cm tall: its bounding box has empty upper corners
    hull = np.array([[x, y, 0.0] for x in (-0.15, 0.15) for y in (-0.15, 0.15)] + [[0.0, 0.0, 0.3]])
    bounds = np.array([hull.min(axis=0), hull.max(axis=0)])
    # the camera 25 cm up over a box corner, looking down: outside the pyramid
    corner = look_at([0.62, 0.12, 0.25], [0.62, 0.12, 0.0], up=(1.0, 0.0, 0.0))
    # the camera inside the pyramid
    inside = look_at([0.5, 0.0, 0.12], [0.5, 0.0, 0.0], up=(1.0, 0.0, 0.0))
    with RobotScene("panda", PART_AT, bounds) as box_scene:
        res = box_scene.reach(RobotScene.flange_target(corner, T_EE_CAM), T_EE_CAM)
        assert not res.ok and "part" in res.reason
    with RobotScene("panda", PART_AT, bounds, part_hull_obj=hull) as hull_scene:
        res = hull_scene.reach(RobotScene.flange_target(corner, T_EE_CAM), T_EE_CAM)
        assert res.ok, res.reason
        res = hull_scene.reach(RobotScene.flange_target(inside, T_EE_CAM), T_EE_CAM)
        assert not res.ok and "part" in res.reason
