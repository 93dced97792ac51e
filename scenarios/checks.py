"""Public contract checker for Cell implementations (simulated, replayed or hardware)."""

from __future__ import annotations

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
