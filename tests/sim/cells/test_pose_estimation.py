"""Object pose from one overview image: depth segmentation, template match, refinement."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import trimesh
from scipy import ndimage

from sim.appearance import table_mesh, twin_look
from sim.cells.pose_estimation import PoseEstimator, _turned, pose_errors, segment_from_depth
from sim.geometry import intrinsics_from_fov, invert_pose, look_at, make_pose, rotation_matrix
from sim.parts import build_nominal_solid, manifold_to_trimesh
from sim.render import MeshItem, RenderScene
from sim.render.pyrender_backend import PyrenderRenderer

W = H = 256
K = intrinsics_from_fov(W, H, np.radians(40.0))
DISTANCE_M = 0.3
MIN_HEIGHT_M = 0.002
LOOK = twin_look(np.zeros(3))


def _mesh(family: str) -> trimesh.Trimesh:
    mesh, _ = manifold_to_trimesh(build_nominal_solid(family))
    return mesh


def _key(family: str) -> str:
    return f"test_pose_estimation:{family}"


def _shot(
    renderer: PyrenderRenderer, family: str, mesh: trimesh.Trimesh, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A part flat on the table at a random yaw, seen 0.3 m away from 30-60 degrees up.

    Returns (depth (H, W) m with the table, part mask (H, W), T_base_cam, T_cam_obj true).
    """
    rng = np.random.default_rng(seed)
    yaw = rng.uniform(-np.pi, np.pi)
    xy = rng.uniform(-0.03, 0.03, 2)
    T_base_obj = make_pose(rotation_matrix([0.0, 0.0, yaw]), [xy[0], xy[1], 0.0])
    elev, az = np.radians(rng.uniform(30.0, 60.0)), rng.uniform(-np.pi, np.pi)
    target = T_base_obj[:3, 3] + [0.0, 0.0, 0.015]
    ray = np.array([np.cos(elev) * np.cos(az), np.cos(elev) * np.sin(az), np.sin(elev)])
    T_base_cam = look_at(target + DISTANCE_M * ray, target)
    table = MeshItem("table", table_mesh(), np.eye(4), {0: LOOK.table}, is_part=False)
    part = MeshItem(_key(family), mesh, T_base_obj, {0: LOOK.part})
    # A full render (not depth_only) so the depth map holds the table as a sensor sees it.
    out = renderer.render(RenderScene((table, part), LOOK.lights), K, (W, H), T_base_cam)
    return out.depth, out.mask, T_base_cam, invert_pose(T_base_cam) @ T_base_obj


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


@pytest.fixture(scope="module")
def renderer(renderer_for: Callable[[int, int], PyrenderRenderer]) -> PyrenderRenderer:
    return renderer_for(W, H)


@pytest.fixture(scope="module")
def flange() -> trimesh.Trimesh:
    return _mesh("flange_bearing_seat")


@pytest.fixture(scope="module")
def flange_estimator(flange: trimesh.Trimesh, renderer: PyrenderRenderer) -> PoseEstimator:
    return PoseEstimator(flange, _key("flange_bearing_seat"), K, (W, H), renderer)


def test_segment_removes_table(flange: trimesh.Trimesh, renderer: PyrenderRenderer) -> None:
    depth, part, T_base_cam, _ = _shot(renderer, "flange_bearing_seat", flange, seed=0)
    assert (depth[~part] > 0).mean() > 0.99  # the table is in the depth map
    mask = segment_from_depth(depth, K, T_base_cam, min_height_m=MIN_HEIGHT_M)
    assert not (mask & ~part).any()  # no table pixel
    # Only the part's lowest 2 mm (and the opening's corners) are lost.
    assert _iou(mask, part) > 0.95


def test_segment_robust_to_missing_depth(
    flange: trimesh.Trimesh, renderer: PyrenderRenderer
) -> None:
    depth, part, T_base_cam, _ = _shot(renderer, "flange_bearing_seat", flange, seed=1)
    clean = segment_from_depth(depth, K, T_base_cam)
    holed = depth.copy()
    holed[np.random.default_rng(0).random(depth.shape) < 0.1] = 0.0  # 10 % without a return
    mask = segment_from_depth(holed, K, T_base_cam)
    assert _iou(mask, clean) > 0.98
    # A pixel without a return takes its nearest measured neighbour's class: at the outline
    # that may add a pixel, never more.
    near = ndimage.binary_dilation(part, iterations=1)
    assert not (mask & ~near).any()


def _cluttered_shot(
    renderer: PyrenderRenderer, flange: trimesh.Trimesh
) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[float, float]]:
    """The flange of ``_shot`` seed 0 seen from 0.5 m, a box larger than it beside it.

    Returns (depth (H, W) m, the flange's mask (H, W), T_base_cam, the flange's origin
    projected (u, v) px)."""
    _, _, T_base_cam, T_cam_obj = _shot(renderer, "flange_bearing_seat", flange, seed=0)
    T_base_obj = T_base_cam @ T_cam_obj
    T_base_cam = T_base_cam.copy()
    T_base_cam[:3, 3] -= 0.2 * T_base_cam[:3, 2]  # back along the optical axis: more in view
    # A 100 x 100 x 30 mm box 130 mm from the flange along the camera's image x axis.
    side = T_base_cam[:3, 0] * np.array([1.0, 1.0, 0.0])
    side /= np.linalg.norm(side)
    box = trimesh.creation.box((0.1, 0.1, 0.03))
    T_base_box = make_pose(np.eye(3), T_base_obj[:3, 3] + 0.13 * side + [0.0, 0.0, 0.015])
    table = MeshItem("table", table_mesh(), np.eye(4), {0: LOOK.table}, is_part=False)
    part = MeshItem(_key("flange_bearing_seat"), flange, T_base_obj, {0: LOOK.part})
    clutter = MeshItem("test_pose_estimation:box", box, T_base_box, {0: LOOK.part}, is_part=False)
    scene = RenderScene((table, part, clutter), LOOK.lights)
    out = renderer.render(scene, K, (W, H), T_base_cam)
    p = K @ (invert_pose(T_base_cam) @ T_base_obj)[:3, 3]
    return out.depth, out.mask, T_base_cam, (float(p[0] / p[2]), float(p[1] / p[2]))


def test_segment_keeps_the_component_at_the_expected_point(
    flange: trimesh.Trimesh, renderer: PyrenderRenderer
) -> None:
    depth, part, T_base_cam, uv = _cluttered_shot(renderer, flange)
    largest = segment_from_depth(depth, K, T_base_cam, min_height_m=MIN_HEIGHT_M)
    assert largest.sum() > 1.5 * part.sum()  # without a hint: the box, the larger component
    assert not (largest & part).any()
    picked = segment_from_depth(depth, K, T_base_cam, min_height_m=MIN_HEIGHT_M, expected_px=uv)
    assert picked[int(round(uv[1])), int(round(uv[0]))]  # the flange's origin is on the part
    assert not (picked & ~part).any()
    assert _iou(picked, part) > 0.95


def test_segment_keeps_the_component_nearest_the_expected_point(
    flange: trimesh.Trimesh, renderer: PyrenderRenderer
) -> None:
    # A point in neither component (the flange's bore or the table beside it) picks the
    # component with the nearest pixel: the flange, not the larger box.
    depth, part, T_base_cam, uv = _cluttered_shot(renderer, flange)
    box = segment_from_depth(depth, K, T_base_cam, min_height_m=MIN_HEIGHT_M)  # the largest
    v, u = np.nonzero(part)
    far_side = float(u.min() - 6) if np.mean(np.nonzero(box)[1]) > u.mean() else float(u.max() + 6)
    point = (far_side, float(np.median(v)))  # 6 px off the flange, away from the box
    assert not part[int(point[1]), int(point[0])] and not box[int(point[1]), int(point[0])]
    picked = segment_from_depth(depth, K, T_base_cam, min_height_m=MIN_HEIGHT_M, expected_px=point)
    assert _iou(picked, part) > 0.95
    # A point outside the image, far out on the flange's side: still the flange.
    outside = -300.0 if far_side < u.mean() else W + 300.0
    picked = segment_from_depth(
        depth, K, T_base_cam, min_height_m=MIN_HEIGHT_M, expected_px=(outside, float(np.median(v)))
    )
    assert _iou(picked, part) > 0.95


def test_segment_empty_scene(renderer: PyrenderRenderer) -> None:
    T_base_cam = look_at([0.2, 0.0, 0.2], [0.0, 0.0, 0.0])
    depth = np.zeros((H, W), np.float32)
    assert not segment_from_depth(depth, K, T_base_cam).any()


def test_pose_errors_add_s_ignores_symmetry() -> None:
    # Points on a circle about z: a quarter turn about z moves no point off the set.
    a = np.linspace(0.0, 2.0 * np.pi, 64, endpoint=False)
    pts = 0.04 * np.column_stack([np.cos(a), np.sin(a), np.zeros_like(a)])
    T_true = make_pose(np.eye(3), [0.0, 0.0, 0.3])
    T_est = T_true @ make_pose(rotation_matrix([0.0, 0.0, np.pi / 2]), np.zeros(3))
    err = pose_errors(T_est, T_true, pts)
    assert err["rotation_deg"] == pytest.approx(90.0)
    assert err["translation_mm"] == pytest.approx(0.0, abs=1e-9)
    assert err["add_s_mm"] == pytest.approx(0.0, abs=1e-9)
    shifted = pose_errors(T_true @ make_pose(np.eye(3), [0.0, 0.0, 0.001]), T_true, pts)
    assert shifted["translation_mm"] == pytest.approx(1.0)
    assert shifted["add_s_mm"] == pytest.approx(1.0)
    assert shifted["add_mm"] == pytest.approx(1.0)


def test_pose_errors_add_counts_symmetric_turns() -> None:
    # ADD pairs each point with itself: a quarter turn of the circle moves every point by
    # the chord r sqrt(2), symmetric or not.
    a = np.linspace(0.0, 2.0 * np.pi, 64, endpoint=False)
    pts = 0.04 * np.column_stack([np.cos(a), np.sin(a), np.zeros_like(a)])
    T_true = make_pose(np.eye(3), [0.0, 0.0, 0.3])
    T_est = T_true @ make_pose(rotation_matrix([0.0, 0.0, np.pi / 2]), np.zeros(3))
    err = pose_errors(T_est, T_true, pts)
    assert err["add_mm"] == pytest.approx(40.0 * np.sqrt(2.0))
    assert err["add_s_mm"] == pytest.approx(0.0, abs=1e-9)
    assert pose_errors(T_true, T_true, pts)["add_mm"] == pytest.approx(0.0, abs=1e-12)


def test_table_turn_keeps_the_part_on_the_table() -> None:
    # A half turn about the table normal through the anchor: every point keeps its height
    # above the table, the anchor stays put, and the part is turned by 180 degrees.
    rng = np.random.default_rng(0)
    T_base_cam = look_at([0.3, -0.1, 0.25], [0.0, 0.0, 0.0])
    T_base_obj = make_pose(rotation_matrix([0.0, 0.0, 0.7]), [0.02, -0.01, 0.0])
    T_cam_obj = invert_pose(T_base_cam) @ T_base_obj
    anchor = np.array([0.01, 0.005, 0.02])
    T = _turned(T_cam_obj, anchor, T_base_cam[2, :3], np.pi)
    pts = rng.uniform(-0.04, 0.04, (50, 3))
    before = (T_base_cam @ T_cam_obj)[:3, :3] @ pts.T + (T_base_cam @ T_cam_obj)[:3, 3:]
    after = (T_base_cam @ T)[:3, :3] @ pts.T + (T_base_cam @ T)[:3, 3:]
    np.testing.assert_allclose(after[2], before[2], atol=1e-12)
    np.testing.assert_allclose(
        T[:3, :3] @ anchor + T[:3, 3], T_cam_obj[:3, :3] @ anchor + T_cam_obj[:3, 3], atol=1e-12
    )
    err = pose_errors(T, T_cam_obj, pts)
    assert err["rotation_deg"] == pytest.approx(180.0)


def test_template_of_a_template_pose_matches(flange_estimator: PoseEstimator) -> None:
    # Rolls are image warps: a mask rendered by the camera rolled (not warped) must find a
    # template as good as the grid allows.
    est = flange_estimator
    i = 5 * 24 + 7  # direction 5, roll 7
    R = est._rot[i]
    T_cam_obj = make_pose(R, np.array([0.0, 0.0, 0.3]) - R @ est.anchor_obj)
    mask = est._render(T_cam_obj, K, (W, H)).mask
    ious = est.template_ious(mask)
    assert ious[i] > 0.9
    assert ious[i] >= ious.max() - 0.02


@pytest.mark.slow
def test_flange_pose_easy_case(
    flange: trimesh.Trimesh, renderer: PyrenderRenderer, flange_estimator: PoseEstimator
) -> None:
    # Measured: ADD-S 1.09 mm, translation 0.42 mm, IoU 0.9957 (yaw found up to the
    # flange's four-fold symmetry). Seeds 0-7: 7 of 8 give ADD-S 0.12-1.09 mm, IoU >= 0.9957;
    # seed 5 ends in a wrong local minimum (IoU 0.917, ADD-S 7.4 mm).
    depth, _, T_base_cam, T_true = _shot(renderer, "flange_bearing_seat", flange, seed=0)
    mask = segment_from_depth(depth, K, T_base_cam, min_height_m=MIN_HEIGHT_M)
    est = flange_estimator.estimate(mask, depth, T_base_cam, MIN_HEIGHT_M)
    err = pose_errors(est.T_cam_obj, T_true, np.asarray(flange.vertices))
    assert err["add_s_mm"] < 1.5
    assert est.iou > 0.97
    assert est.iou >= est.coarse_iou - 0.05
    assert est.evaluations > 0


@pytest.mark.slow
def test_flange_pose_without_depth(
    flange: trimesh.Trimesh, renderer: PyrenderRenderer, flange_estimator: PoseEstimator
) -> None:
    # The range from the box size alone; measured ADD-S 0.77 mm, IoU 0.998.
    depth, _, T_base_cam, T_true = _shot(renderer, "flange_bearing_seat", flange, seed=2)
    mask = segment_from_depth(depth, K, T_base_cam, min_height_m=MIN_HEIGHT_M)
    est = flange_estimator.estimate(mask, None, T_base_cam, MIN_HEIGHT_M)
    err = pose_errors(est.T_cam_obj, T_true, np.asarray(flange.vertices))
    assert err["add_s_mm"] < 1.5
    assert est.iou > 0.97


@pytest.mark.slow
def test_joint_housing_pose(renderer: PyrenderRenderer) -> None:
    # A part without rotational symmetry, seen where its side gland shows in the silhouette
    # (where the gland hides behind the body the silhouette cannot tell a half turn apart).
    # Measured: rotation 0.09 deg, translation 0.01 mm, IoU 0.9998.
    mesh = _mesh("joint_housing")
    estimator = PoseEstimator(mesh, _key("joint_housing"), K, (W, H), renderer)
    depth, _, T_base_cam, T_true = _shot(renderer, "joint_housing", mesh, seed=0)
    mask = segment_from_depth(depth, K, T_base_cam, min_height_m=MIN_HEIGHT_M)
    est = estimator.estimate(mask, depth, T_base_cam, MIN_HEIGHT_M)
    err = pose_errors(est.T_cam_obj, T_true, np.asarray(mesh.vertices))
    assert err["rotation_deg"] < 3.0
    assert err["translation_mm"] < 3.0
    assert est.iou > 0.97


@pytest.mark.slow
def test_estimate_is_deterministic(
    flange: trimesh.Trimesh, renderer: PyrenderRenderer, flange_estimator: PoseEstimator
) -> None:
    depth, _, T_base_cam, _ = _shot(renderer, "flange_bearing_seat", flange, seed=3)
    mask = segment_from_depth(depth, K, T_base_cam)
    a = flange_estimator.estimate(mask, depth, T_base_cam, MIN_HEIGHT_M)
    b = flange_estimator.estimate(mask, depth, T_base_cam, MIN_HEIGHT_M)
    np.testing.assert_array_equal(a.T_cam_obj, b.T_cam_obj)
    assert (a.iou, a.coarse_iou, a.evaluations) == (b.iou, b.coarse_iou, b.evaluations)


def test_estimate_rejects_bad_masks(flange_estimator: PoseEstimator) -> None:
    with pytest.raises(ValueError, match="empty"):
        flange_estimator.estimate(np.zeros((H, W), bool))
    with pytest.raises(ValueError, match="shape"):
        flange_estimator.estimate(np.ones((10, 10), bool))


def test_add_s_of_a_symmetric_turn_is_near_zero_with_a_dense_surface(
    flange: trimesh.Trimesh,
) -> None:
    """A quarter turn of the square flange is a symmetry: ADD-S against a dense sampling
    of the surface sees (almost) no error, against the sparse points themselves it cannot."""
    pts = np.asarray(flange.sample(2000, seed=0))
    dense = np.asarray(flange.sample(100_000, seed=1))
    T = make_pose(rotation_matrix([0.0, 0.0, np.pi / 2]), [0.0, 0.0, 0.3])
    T_true = make_pose(np.eye(3), [0.0, 0.0, 0.3])
    sparse = pose_errors(T, T_true, pts)["add_s_mm"]
    err = pose_errors(T, T_true, pts, dense)
    assert err["add_s_mm"] < 0.3 < sparse  # measured: 0.23 against 1.57
    assert err["add_mm"] > 30.0
