"""Public contract checker for Cell implementations (simulated, replayed or hardware)."""

from __future__ import annotations

from typing import Any

import numpy as np

from scenarios.interfaces import Cell, GroundTruth, Observation, PartInfo


def _check_pose(T: object, what: str) -> None:
    a = np.asarray(T)
    assert a.shape == (4, 4) and a.dtype == np.float64, f"{what}: want (4, 4) float64 pose"
    assert np.allclose(a[3], [0, 0, 0, 1]), f"{what}: last row must be [0, 0, 0, 1]"
    R = a[:3, :3]
    assert np.allclose(R @ R.T, np.eye(3), atol=1e-6), f"{what}: rotation not orthonormal"
    assert np.linalg.det(R) > 0, f"{what}: rotation is a reflection"


def _check_observation(obs: object, what: str) -> None:
    assert isinstance(obs, Observation), f"{what}: want an Observation, got {type(obs).__name__}"
    rgb = obs.rgb
    assert rgb.ndim == 3 and rgb.shape[2] == 3 and rgb.dtype == np.uint8, (
        f"{what}.rgb: want (H, W, 3) uint8, got {rgb.shape} {rgb.dtype}"
    )
    assert obs.K.shape == (3, 3), f"{what}.K: want (3, 3)"
    _check_pose(obs.T_base_cam, f"{what}.T_base_cam")
    if obs.depth is not None:
        assert obs.depth.shape == rgb.shape[:2] and obs.depth.dtype == np.float32, (
            f"{what}.depth: want (H, W) float32 metres"
        )


def check_cell(cell: Cell, max_views: int = 2) -> None:
    """Drive ``cell`` through part → plan → move → capture → render_twin → ground_truth;
    AssertionError on a breach.

    Checks that the part is described, that viewpoints are keyed by int view id with valid
    poses, that ``move_to`` answers a bool (with a reason when False), and that for up to
    ``max_views`` reachable views the real and twin observations are valid and pose-matched
    in size and intrinsics, the twin carries its mask, and the ground truth (where the cell
    has one) matches the image size and the part's defects.
    """
    info = cell.part()
    assert isinstance(info, PartInfo), f"part: want a PartInfo, got {type(info).__name__}"
    plan = cell.plan_viewpoints()
    assert isinstance(plan, dict) and plan, "plan_viewpoints: want a non-empty {view_id: pose}"
    for vid, T in plan.items():
        assert isinstance(vid, int), f"plan_viewpoints: view id {vid!r} is not an int"
        _check_pose(T, f"viewpoint {vid}")
    done = 0
    for vid in plan:
        ok = cell.move_to(vid)
        assert isinstance(ok, bool), f"move_to: want a bool, got {type(ok).__name__}"
        if not ok:
            assert isinstance(cell.last_failure, str) and cell.last_failure, (
                f"move_to({vid}) failed without a last_failure reason"
            )
            continue
        real = cell.capture()
        twin = cell.render_twin()
        _check_observation(real, f"view {vid} real")
        _check_observation(twin, f"view {vid} twin")
        assert real.rgb.shape == twin.rgb.shape, f"view {vid}: real and twin sizes differ"
        assert np.allclose(real.K, twin.K), f"view {vid}: real and twin intrinsics differ"
        assert twin.mask is not None and twin.mask.shape == twin.rgb.shape[:2], (
            f"view {vid} twin.mask: want (H, W) bool"
        )
        truth = cell.ground_truth()
        if truth is not None:
            assert isinstance(truth, GroundTruth), f"view {vid}: ground_truth type"
            assert truth.gt_mask.shape == real.rgb.shape[:2], f"view {vid}: gt_mask size"
            assert len(truth.defect_px) == len(info.defects), (
                f"view {vid}: defect_px has {len(truth.defect_px)} entries for "
                f"{len(info.defects)} defects"
            )
            if real.points is not None:
                assert truth.point_labels is not None, f"view {vid}: points without labels"
                assert len(truth.point_labels) == len(real.points), f"view {vid}: labels"
        done += 1
        if done >= max_views:
            break
    assert done > 0, "no planned viewpoint was reachable"


def check_camera_driver(camera: object, captures: int = 2) -> None:
    """Drive a ``CameraDriver`` through its lifecycle (configure → activate → capture →
    deactivate → cleanup, the last two twice); AssertionError on a breach.

    Checks the lens (``Intrinsics``: size, K with positive focal lengths, five distortion
    coefficients or None) and that each frame is (H, W, 3) uint8 of the lens's size, with
    depth (H, W) float32 metres or None and a non-decreasing timestamp.
    """
    from scenarios.drivers.base import Frame, Intrinsics

    cam: Any = camera
    cam.configure()
    cam.activate()
    lens = cam.intrinsics()
    assert isinstance(lens, Intrinsics), f"intrinsics: want Intrinsics, got {type(lens).__name__}"
    K = np.asarray(lens.K)
    assert K.shape == (3, 3) and K[0, 0] > 0 and K[1, 1] > 0, "intrinsics.K: want fx, fy > 0"
    assert np.allclose(K[2], [0, 0, 1]), "intrinsics.K: last row must be [0, 0, 1]"
    assert lens.dist is None or np.asarray(lens.dist).shape == (5,), "intrinsics.dist: want 5"
    last = -np.inf
    for i in range(captures):
        f = cam.capture()
        assert isinstance(f, Frame), f"capture {i}: want a Frame, got {type(f).__name__}"
        assert f.rgb.shape == (lens.height, lens.width, 3) and f.rgb.dtype == np.uint8, (
            f"capture {i}.rgb: want ({lens.height}, {lens.width}, 3) uint8, got "
            f"{f.rgb.shape} {f.rgb.dtype}"
        )
        if f.depth is not None:
            assert f.depth.shape == f.rgb.shape[:2] and f.depth.dtype == np.float32, (
                f"capture {i}.depth: want (H, W) float32 metres"
            )
            assert np.all(np.isfinite(f.depth)) and f.depth.min() >= 0, (
                f"capture {i}.depth: want finite metres >= 0 (0 = no value)"
            )
        assert f.timestamp >= last, f"capture {i}: timestamp went back"
        last = f.timestamp
    for _ in range(2):
        cam.deactivate()
        cam.cleanup()


def check_robot_driver(robot: object, targets: list[np.ndarray], speed_m_s: float = 0.1) -> None:
    """Drive a ``RobotDriver`` through its lifecycle, moving to each of ``targets`` (4x4
    flange poses it can reach); AssertionError on a breach.

    Checks that ``read_pose`` is a valid pose, that ``move_to`` answers a bool (with a
    reason when False) and that after a successful move the reported pose is the target
    (within 1 mm and 0.5 deg), and that deactivate and cleanup may be called twice.
    """
    from sim.geometry import pose_error

    rob: Any = robot
    rob.configure()
    rob.activate()
    moved = 0
    for i, T in enumerate(targets):
        ok = rob.move_to(np.asarray(T, dtype=np.float64), speed_m_s)
        assert isinstance(ok, bool), f"move_to {i}: want a bool, got {type(ok).__name__}"
        if not ok:
            assert isinstance(rob.last_failure, str) and rob.last_failure, (
                f"move_to {i} failed without a last_failure reason"
            )
            continue
        now = rob.read_pose()
        _check_pose(now, f"read_pose after move {i}")
        d_m, d_rad = pose_error(now, T)
        assert d_m <= 1e-3 and np.degrees(d_rad) <= 0.5, (
            f"move {i}: reported pose {d_m * 1000:.2f} mm / {np.degrees(d_rad):.2f} deg off"
        )
        moved += 1
    assert moved > 0, "no target was reached"
    for _ in range(2):
        rob.deactivate()
        rob.cleanup()
