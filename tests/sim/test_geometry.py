"""Property tests for sim.geometry: rigid transforms, look_at and the OpenCV camera model."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from numpy.typing import NDArray

from sim.geometry import (
    axis_angle,
    backproject_pixels,
    compose,
    depth_to_points,
    intrinsics_from_fov,
    invert_pose,
    look_at,
    make_pose,
    pose_error,
    pose_from_xyz_rpy,
    project_points,
    rotation_matrix,
    transform_points,
    undistort_normalized,
)

FloatArray = NDArray[np.float64]

SETTINGS = settings(deadline=None, max_examples=60)

# 640x480 camera with a 60 deg horizontal FOV: |x/z| <= tan(30 deg) ~ 0.58 inside the image.
W, H = 640, 480
K_DEFAULT = intrinsics_from_fov(W, H, np.deg2rad(60.0))

finite = st.floats(-10.0, 10.0, allow_nan=False, allow_infinity=False)
vec3 = arrays(np.float64, 3, elements=finite)


@st.composite
def rotations(draw: st.DrawFn) -> FloatArray:
    """Uniform-ish random rotation matrices from normalized quaternions."""
    q = draw(
        arrays(np.float64, 4, elements=st.floats(-1.0, 1.0)).filter(
            lambda q: np.linalg.norm(q) > 0.1
        )
    )
    q = q / np.linalg.norm(q)
    w, x, y, z = q
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
        ]
    )


@st.composite
def poses(draw: st.DrawFn) -> FloatArray:
    """Random rigid 4x4 poses with translations within 10 m."""
    return make_pose(draw(rotations()), draw(vec3))


@st.composite
def point_sets(draw: st.DrawFn) -> FloatArray:
    """(N, 3) point sets with 1..20 points within 10 m."""
    n = draw(st.integers(1, 20))
    return draw(arrays(np.float64, (n, 3), elements=finite))


@st.composite
def distortions(draw: st.DrawFn) -> FloatArray:
    """Moderate OpenCV distortion (k1, k2, p1, p2, k3), typical of industrial machine-vision lenses.

    Within these ranges the radial map r -> r (1 + k1 r^2 + k2 r^4 + k3 r^6) stays monotonic
    (derivative >= 0.2) out to r = 1, beyond K_DEFAULT's image corner (r ~ 0.72), so every
    pixel has a unique undistorted preimage. Stronger barrel (e.g. k1 = -0.25 with k2 = -0.05)
    folds over before the corner and the corner pixels then have no preimage at all.
    """
    return np.array(
        [
            draw(st.floats(-0.2, 0.2)),
            draw(st.floats(-0.03, 0.03)),
            draw(st.floats(-1e-3, 1e-3)),
            draw(st.floats(-1e-3, 1e-3)),
            draw(st.floats(-0.005, 0.005)),
        ]
    )


@st.composite
def points_in_view(draw: st.DrawFn) -> FloatArray:
    """(N, 3) camera-frame points in front of K_DEFAULT's camera and inside its image."""
    n = draw(st.integers(1, 30))
    # Normalized coords inside the 60 x 46.8 deg frustum, depths 0.1..5 m.
    x = draw(arrays(np.float64, n, elements=st.floats(-0.57, 0.57)))
    y = draw(arrays(np.float64, n, elements=st.floats(-0.43, 0.43)))
    z = draw(arrays(np.float64, n, elements=st.floats(0.1, 5.0)))
    return np.column_stack([x * z, y * z, z])


def assert_rotation(R: FloatArray) -> None:
    """Assert R is orthonormal with determinant +1."""
    np.testing.assert_allclose(R.T @ R, np.eye(3), atol=1e-12)
    assert np.linalg.det(R) == pytest.approx(1.0, abs=1e-12)


# ---------------------------------------------------------------- rigid transforms


@SETTINGS
@given(poses())
def test_inverse_pose(T: FloatArray) -> None:
    """T @ inv(T) = inv(T) @ T = I and inv(inv(T)) = T."""
    Ti = invert_pose(T)
    np.testing.assert_allclose(T @ Ti, np.eye(4), atol=1e-12)
    np.testing.assert_allclose(Ti @ T, np.eye(4), atol=1e-12)
    np.testing.assert_allclose(invert_pose(Ti), T, atol=1e-12)
    np.testing.assert_allclose(Ti, np.linalg.inv(T), atol=1e-10)


@SETTINGS
@given(poses(), poses(), poses())
def test_compose_associative_and_inverse(A: FloatArray, B: FloatArray, C: FloatArray) -> None:
    """compose is the left-to-right product, associative, and compose(T, inv T) = I."""
    abc = compose(A, B, C)
    np.testing.assert_allclose(abc, A @ B @ C, atol=1e-12)
    np.testing.assert_allclose(compose(compose(A, B), C), compose(A, compose(B, C)), atol=1e-10)
    np.testing.assert_allclose(compose(A, invert_pose(A)), np.eye(4), atol=1e-12)
    np.testing.assert_allclose(compose(), np.eye(4))
    np.testing.assert_allclose(compose(A), A)


@SETTINGS
@given(poses(), poses(), point_sets())
def test_transform_points_matches_compose(A: FloatArray, B: FloatArray, P: FloatArray) -> None:
    """Transforming by B then A equals transforming by compose(A, B); inverse undoes it."""
    out = transform_points(compose(A, B), P)
    np.testing.assert_allclose(out, transform_points(A, transform_points(B, P)), atol=1e-10)
    homog = np.column_stack([P, np.ones(len(P))]) @ compose(A, B).T
    np.testing.assert_allclose(out, homog[:, :3], atol=1e-10)
    np.testing.assert_allclose(
        transform_points(invert_pose(A), transform_points(A, P)), P, atol=1e-10
    )


def test_transform_points_empty_and_shape_checks() -> None:
    """Empty point sets pass through; wrong shapes raise ValueError."""
    assert transform_points(np.eye(4), np.zeros((0, 3))).shape == (0, 3)
    with pytest.raises(ValueError):
        transform_points(np.eye(4), np.zeros(3))
    with pytest.raises(ValueError):
        make_pose(np.eye(3), np.zeros(4))


@SETTINGS
@given(arrays(np.float64, 3, elements=st.floats(-1.0, 1.0)), st.floats(0.0, np.pi - 1e-3))
def test_axis_angle_round_trip(axis: FloatArray, angle: float) -> None:
    """rotation_matrix and axis_angle are inverse for angles below pi."""
    norm = np.linalg.norm(axis)
    rv = axis / norm * angle if norm > 1e-3 else np.zeros(3)
    R = rotation_matrix(rv)
    assert_rotation(R)
    np.testing.assert_allclose(axis_angle(R), rv, atol=1e-9)
    np.testing.assert_allclose(rotation_matrix(axis_angle(R)), R, atol=1e-12)


@SETTINGS
@given(rotations())
def test_rotation_matrix_of_axis_angle(R: FloatArray) -> None:
    """Any rotation matrix is recovered from its rotation vector (angle <= pi)."""
    rv = axis_angle(R)
    assert np.linalg.norm(rv) <= np.pi + 1e-12
    np.testing.assert_allclose(rotation_matrix(rv), R, atol=1e-9)


@SETTINGS
@given(vec3, arrays(np.float64, 3, elements=st.floats(-np.pi, np.pi)))
def test_pose_from_xyz_rpy(xyz: FloatArray, rpy: FloatArray) -> None:
    """R = Rz(yaw) Ry(pitch) Rx(roll) and the translation is xyz."""
    r, p, y = rpy
    Rx = rotation_matrix([r, 0.0, 0.0])
    Ry = rotation_matrix([0.0, p, 0.0])
    Rz = rotation_matrix([0.0, 0.0, y])
    T = pose_from_xyz_rpy(xyz, rpy)
    np.testing.assert_allclose(T[:3, :3], Rz @ Ry @ Rx, atol=1e-12)
    np.testing.assert_allclose(T[:3, 3], xyz)
    np.testing.assert_allclose(T[3], [0.0, 0.0, 0.0, 1.0])


def test_pose_from_xyz_rpy_yaw_only() -> None:
    """A pure 90 deg yaw maps +x to +y."""
    T = pose_from_xyz_rpy([1.0, 2.0, 3.0], [0.0, 0.0, np.pi / 2])
    np.testing.assert_allclose(
        transform_points(T, [[1.0, 0.0, 0.0]]), [[1.0, 3.0, 3.0]], atol=1e-12
    )


@SETTINGS
@given(poses(), arrays(np.float64, 3, elements=st.floats(-1.0, 1.0)), st.floats(0.0, np.pi), vec3)
def test_pose_error(T: FloatArray, axis: FloatArray, angle: float, t: FloatArray) -> None:
    """pose_error(T, T) = (0, 0); a known right-perturbation gives (|t|, angle)."""
    dt, dr = pose_error(T, T)
    assert dt == pytest.approx(0.0, abs=1e-9)
    assert dr == pytest.approx(0.0, abs=1e-9)
    norm = np.linalg.norm(axis)
    rv = axis / norm * angle if norm > 1e-3 else np.zeros(3)
    delta = make_pose(rotation_matrix(rv), t)
    dt, dr = pose_error(T, T @ delta)
    assert dt == pytest.approx(np.linalg.norm(t), abs=1e-9)
    assert dr == pytest.approx(np.linalg.norm(rv), abs=1e-6)


# ---------------------------------------------------------------- look_at


@SETTINGS
@given(vec3, vec3)
def test_look_at(eye: FloatArray, target: FloatArray) -> None:
    """Target projects to the principal point, world up projects straight up, R is proper."""
    d = target - eye
    if np.linalg.norm(d) < 1e-3:
        return
    T_base_cam = look_at(eye, target)
    assert_rotation(T_base_cam[:3, :3])
    np.testing.assert_allclose(T_base_cam[:3, 3], eye)
    np.testing.assert_allclose(T_base_cam[:3, 2], d / np.linalg.norm(d), atol=1e-12)
    T_cam_base = invert_pose(T_base_cam)
    uv = project_points(transform_points(T_cam_base, [target]), K_DEFAULT)[0]
    np.testing.assert_allclose(uv, K_DEFAULT[:2, 2], atol=1e-6)
    # A point slightly "above" the target along world +z must appear above the principal point.
    cos_up = abs(d[2]) / np.linalg.norm(d)
    if cos_up < 0.99:
        above = target + np.array([0.0, 0.0, 1e-2 * np.linalg.norm(d)])
        uv_up = project_points(transform_points(T_cam_base, [above]), K_DEFAULT)[0]
        assert uv_up[1] < K_DEFAULT[1, 2] - 1e-6
        # x is perpendicular to up, so up is exactly vertical in the image.
        assert uv_up[0] == pytest.approx(K_DEFAULT[0, 2], abs=1e-6)
        # Camera y ("down") has a negative component along world up.
        assert T_base_cam[2, 1] < 0.0


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_look_at_parallel_up_fallback(sign: float) -> None:
    """Looking straight down/up along world z still gives a proper, deterministic rotation."""
    T = look_at([0.0, 0.0, sign], [0.0, 0.0, 0.0])
    assert_rotation(T[:3, :3])
    np.testing.assert_allclose(T[:3, 2], [0.0, 0.0, -sign], atol=1e-12)
    np.testing.assert_array_equal(T, look_at([0.0, 0.0, sign], [0.0, 0.0, 0.0]))
    # The fallback up is world +y: it projects upward (camera y points along -y).
    assert T[1, 1] == pytest.approx(-1.0)
    # An up along y falls back to world +x instead.
    T2 = look_at([0.0, 2.0, 0.0], [0.0, 0.0, 0.0], up=[0.0, sign, 0.0])
    assert_rotation(T2[:3, :3])
    assert T2[0, 1] == pytest.approx(-1.0)


def test_look_at_rejects_degenerate() -> None:
    """eye == target (or a zero up vector) raises ValueError."""
    with pytest.raises(ValueError):
        look_at([1.0, 2.0, 3.0], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError):
        look_at([0.0, 0.0, 0.0], [1.0, 0.0, 0.0], up=[0.0, 0.0, 0.0])


# ---------------------------------------------------------------- camera model


def test_intrinsics_from_fov() -> None:
    """The outer edge of the edge pixel sits at hfov/2; the principal point is centred."""
    hfov = np.deg2rad(70.0)
    K = intrinsics_from_fov(800, 600, hfov)
    assert K[0, 0] == K[1, 1]
    np.testing.assert_allclose(K[:2, 2], [399.5, 299.5])
    xy = undistort_normalized([[800 - 0.5, 299.5], [-0.5, 299.5]], K, None)
    np.testing.assert_allclose(xy[:, 0], [np.tan(hfov / 2), -np.tan(hfov / 2)], atol=1e-12)
    with pytest.raises(ValueError):
        intrinsics_from_fov(800, 600, np.pi)


@SETTINGS
@given(points_in_view(), st.one_of(st.none(), distortions()))
def test_project_backproject_round_trip(P: FloatArray, dist: FloatArray | None) -> None:
    """backproject(project(P), z) = P, and project(backproject(uv, z)) = uv."""
    uv = project_points(P, K_DEFAULT, dist)
    assert uv.shape == (len(P), 2) and uv.dtype == np.float64
    back = backproject_pixels(uv, P[:, 2], K_DEFAULT, dist)
    # Normalized coords converge to ~1e-12; scaled by depth <= 5 m this is well under 1e-9 m.
    np.testing.assert_allclose(back, P, atol=1e-9, rtol=0)
    np.testing.assert_allclose(project_points(back, K_DEFAULT, dist), uv, atol=1e-7, rtol=0)


@SETTINGS
@given(
    arrays(np.float64, (10, 2), elements=st.floats(0.0, 1.0)),
    arrays(np.float64, 10, elements=st.floats(0.2, 4.0)),
    distortions(),
)
def test_pixels_backproject_project_round_trip(
    frac: FloatArray, z: FloatArray, dist: FloatArray
) -> None:
    """Pixels anywhere in the image survive undistort -> distort to 1e-7 px."""
    uv = frac * [W - 1, H - 1]
    P = backproject_pixels(uv, z, K_DEFAULT, dist)
    np.testing.assert_allclose(P[:, 2], z)
    np.testing.assert_allclose(project_points(P, K_DEFAULT, dist), uv, atol=1e-7, rtol=0)


@SETTINGS
@given(points_in_view(), distortions(), st.floats(300.0, 1500.0), st.floats(0.9, 1.1))
def test_project_points_matches_cv2(
    P: FloatArray, dist: FloatArray, f: float, aspect: float
) -> None:
    """project_points agrees with cv2.projectPoints (identity extrinsics) to 1e-6 px."""
    K = np.array([[f, 0.0, 319.5], [0.0, f * aspect, 239.5], [0.0, 0.0, 1.0]])
    ref, _ = cv2.projectPoints(P.reshape(-1, 1, 3), np.zeros(3), np.zeros(3), K, dist)
    np.testing.assert_allclose(project_points(P, K, dist), ref.reshape(-1, 2), atol=1e-6, rtol=0)


def test_undistort_matches_cv2() -> None:
    """undistort_normalized agrees with cv2.undistortPointsIter run to convergence."""
    rng = np.random.default_rng(0)
    dist = np.array([-0.2, 0.04, 5e-4, -3e-4, 0.005])
    uv = rng.uniform([0, 0], [W - 1, H - 1], size=(200, 2))
    criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 200, 1e-14)
    ref = cv2.undistortPointsIter(
        uv.reshape(-1, 1, 2), K_DEFAULT, dist, np.eye(3), np.eye(3), criteria
    )
    np.testing.assert_allclose(
        undistort_normalized(uv, K_DEFAULT, dist), ref.reshape(-1, 2), atol=1e-8, rtol=0
    )


def test_project_points_behind_camera_is_nan() -> None:
    """Points with z <= 0 project to nan; others are finite; N = 0 works."""
    P = np.array([[0.0, 0.0, 1.0], [0.1, 0.0, 0.0], [0.0, 0.2, -1.0]])
    uv = project_points(P, K_DEFAULT, [0.1, 0.0, 0.0, 0.0, 0.0])
    assert np.all(np.isfinite(uv[0]))
    assert np.all(np.isnan(uv[1:]))
    assert project_points(np.zeros((0, 3)), K_DEFAULT).shape == (0, 2)
    with pytest.raises(ValueError):
        project_points(P, K_DEFAULT, [0.1, 0.2, 0.3])


@pytest.mark.parametrize("dist", [None, (-0.2, 0.03, 1e-3, -5e-4, 0.0)])
def test_depth_to_points(dist: tuple[float, ...] | None) -> None:
    """Valid pixels back-project to points that re-project onto their own pixel centres."""
    h, w = 24, 32
    K = intrinsics_from_fov(w, h, np.deg2rad(60.0))
    rng = np.random.default_rng(1)
    depth = rng.uniform(0.3, 3.0, size=(h, w)).astype(np.float32)
    depth[0, 0] = 0.0
    depth[5, 7] = np.nan
    depth[10, 3] = -1.0
    depth[2, 9] = np.inf
    points, mask = depth_to_points(depth, K, dist)
    assert mask.shape == (h, w) and mask.dtype == np.bool_
    assert mask.sum() == h * w - 4 and points.shape == (h * w - 4, 3)
    assert points.dtype == np.float64
    v, u = np.nonzero(mask)
    np.testing.assert_allclose(points[:, 2], depth[mask].astype(np.float64))
    np.testing.assert_allclose(project_points(points, K, dist), np.column_stack([u, v]), atol=1e-7)
