"""Rigid-transform and pinhole-camera geometry (metres, radians, OpenCV camera convention).

Conventions used throughout:

* Poses are 4x4 float64 homogeneous matrices named ``T_<to>_<from>``: ``T_base_cam`` maps
  points expressed in the camera frame into the base frame (``p_base = T_base_cam @ p_cam``).
* Cameras follow OpenCV: x right, y down, z forward (optical axis). Intrinsics ``K`` are 3x3;
  optional distortion ``dist = (k1, k2, p1, p2, k3)`` (a 4-vector means ``k3 = 0``).
* Pixels are ``(u, v) = (column, row)`` with integer coordinates at pixel centres, so an image
  of width ``W`` spans ``u`` in ``[-0.5, W - 0.5]``.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.spatial.transform import Rotation

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]

__all__ = [
    "axis_angle",
    "backproject_pixels",
    "compose",
    "depth_to_points",
    "intrinsics_from_fov",
    "invert_pose",
    "look_at",
    "make_pose",
    "pose_error",
    "pose_from_xyz_rpy",
    "project_points",
    "rotation_matrix",
    "transform_points",
    "undistort_normalized",
]

# Below this norm a direction is treated as zero (eye == target) or two directions as parallel.
_EPS = 1e-12
# |sin(angle)| between forward and up below which look_at switches to a fallback up vector.
_PARALLEL_SIN = 1e-9


def _as_array(x: ArrayLike, shape: tuple[int | None, ...], name: str) -> FloatArray:
    """Convert ``x`` to float64 and check its shape (``None`` matches any length)."""
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != len(shape) or any(
        s is not None and s != a for s, a in zip(shape, arr.shape, strict=True)
    ):
        want = "(" + ", ".join("N" if s is None else str(s) for s in shape) + ")"
        raise ValueError(f"{name} must have shape {want}, got {arr.shape}")
    return arr


def _as_dist(dist: ArrayLike | None) -> FloatArray | None:
    """Return distortion as a float64 5-vector (k1, k2, p1, p2, k3), or None if absent/all zero."""
    if dist is None:
        return None
    d = np.asarray(dist, dtype=np.float64).reshape(-1)
    if d.size == 4:
        d = np.append(d, 0.0)
    if d.size != 5:
        raise ValueError(f"dist must have 4 or 5 coefficients (k1, k2, p1, p2[, k3]), got {d.size}")
    if not np.any(d):
        return None
    return d


# --------------------------------------------------------------------------------------------
# Rigid transforms
# --------------------------------------------------------------------------------------------


def make_pose(R: ArrayLike, t: ArrayLike) -> FloatArray:
    """Build a 4x4 float64 pose from a (3, 3) rotation ``R`` and a (3,) translation ``t`` (m)."""
    T = np.eye(4)
    T[:3, :3] = _as_array(R, (3, 3), "R")
    T[:3, 3] = _as_array(t, (3,), "t")
    return T


def invert_pose(T: ArrayLike) -> FloatArray:
    """Invert a rigid (4, 4) pose in closed form: ``T_b_a -> T_a_b`` = [R^T, -R^T t]."""
    T = _as_array(T, (4, 4), "T")
    R = T[:3, :3]
    t = T[:3, 3]
    # The closed form is exact for rigid transforms and avoids a general 4x4 inverse, which
    # would amplify rounding and hide non-rigid inputs behind a "valid" result.
    return make_pose(R.T, -R.T @ t)


def compose(*Ts: ArrayLike) -> FloatArray:
    """Multiply (4, 4) poses left to right: ``compose(T_a_b, T_b_c) == T_a_c``; identity if none."""
    out = np.eye(4)
    for i, T in enumerate(Ts):
        out = out @ _as_array(T, (4, 4), f"Ts[{i}]")
    return out


def transform_points(T: ArrayLike, points: ArrayLike) -> FloatArray:
    """Apply a (4, 4) pose ``T_to_from`` to (N, 3) points in frame ``from``; returns (N, 3)."""
    T = _as_array(T, (4, 4), "T")
    P = _as_array(points, (None, 3), "points")
    # Row-vector form p' = p R^T + t avoids building homogeneous (N, 4) copies.
    return P @ T[:3, :3].T + T[:3, 3]


def rotation_matrix(axis_angle: ArrayLike) -> FloatArray:
    """Convert a (3,) rotation vector (unit axis times angle in radians) into a (3, 3) matrix."""
    rv = _as_array(axis_angle, (3,), "axis_angle")
    return np.asarray(Rotation.from_rotvec(rv).as_matrix(), dtype=np.float64)


def axis_angle(R: ArrayLike) -> FloatArray:
    """Convert a (3, 3) rotation matrix into a (3,) rotation vector with angle in [0, pi] rad."""
    R = _as_array(R, (3, 3), "R")
    return np.asarray(Rotation.from_matrix(R).as_rotvec(), dtype=np.float64)


def pose_from_xyz_rpy(xyz: ArrayLike, rpy: ArrayLike) -> FloatArray:
    """Build a (4, 4) pose from a (3,) translation (m) and (3,) roll/pitch/yaw (rad).

    The angles are extrinsic rotations about the fixed x, y, z axes applied in that order, so
    ``R = Rz(yaw) @ Ry(pitch) @ Rx(roll)`` (the URDF/ROS convention).
    """
    rpy = _as_array(rpy, (3,), "rpy")
    # Lower-case "xyz" in scipy means extrinsic axes, i.e. exactly Rz @ Ry @ Rx.
    R = Rotation.from_euler("xyz", rpy).as_matrix()
    return make_pose(R, xyz)


def pose_error(T_a: ArrayLike, T_b: ArrayLike) -> tuple[float, float]:
    """Return (translation_m, rotation_rad) of the relative pose ``T_a^-1 @ T_b`` (both 4x4)."""
    D = invert_pose(T_a) @ _as_array(T_b, (4, 4), "T_b")
    R = D[:3, :3]
    # atan2(sin, cos) stays accurate near 0 and pi, unlike arccos((trace - 1) / 2) near 0.
    sin_theta = 0.5 * np.linalg.norm([R[2, 1] - R[1, 2], R[0, 2] - R[2, 0], R[1, 0] - R[0, 1]])
    cos_theta = 0.5 * (np.trace(R) - 1.0)
    return float(np.linalg.norm(D[:3, 3])), float(np.arctan2(sin_theta, cos_theta))


def look_at(eye: ArrayLike, target: ArrayLike, up: ArrayLike = (0.0, 0.0, 1.0)) -> FloatArray:
    """Return ``T_base_cam`` (4, 4) for an OpenCV camera at ``eye`` looking at ``target``.

    ``eye``, ``target`` and ``up`` are (3,) in the base frame (metres; ``up`` any length > 0).
    Camera z points from eye to target; x (right) and y (down) are chosen so that the world
    ``up`` direction projects upward in the image (toward -v). If the viewing direction is
    (anti)parallel to ``up``, the fallback up is world +y, or world +x if ``up`` is itself
    along y, so nadir/zenith views are deterministic. Raises ValueError if eye == target.
    """
    eye = _as_array(eye, (3,), "eye")
    target = _as_array(target, (3,), "target")
    up = _as_array(up, (3,), "up")
    d = target - eye
    dist = np.linalg.norm(d)
    if dist <= _EPS:
        raise ValueError("look_at: eye and target coincide; the viewing direction is undefined")
    up_norm = np.linalg.norm(up)
    if up_norm <= _EPS:
        raise ValueError("look_at: up must be a non-zero vector")
    z = d / dist
    up = up / up_norm
    x = np.cross(z, up)
    if np.linalg.norm(x) < _PARALLEL_SIN:
        # Pick a world axis orthogonal-ish to the (anti)parallel up so the result is stable.
        fallback = np.array([1.0, 0.0, 0.0]) if abs(up[1]) > 0.5 else np.array([0.0, 1.0, 0.0])
        x = np.cross(z, fallback)
    x /= np.linalg.norm(x)
    # y = z cross x completes a right-handed frame; with x = z cross up this makes y point
    # away from up, i.e. "down" in the image, as the OpenCV convention requires.
    y = np.cross(z, x)
    return make_pose(np.column_stack([x, y, z]), eye)


# --------------------------------------------------------------------------------------------
# Pinhole camera
# --------------------------------------------------------------------------------------------


def intrinsics_from_fov(width: int, height: int, hfov_rad: float) -> FloatArray:
    """Return a 3x3 float64 K for a ``width`` x ``height`` px image with horizontal FOV in rad.

    Pixels are square (fy = fx) and the principal point is the image centre
    ((W - 1) / 2, (H - 1) / 2) under the pixel-centre convention; the image spans W pixels
    edge to edge, so fx = (W / 2) / tan(hfov / 2).
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"width and height must be positive, got {width}x{height}")
    if not 0.0 < hfov_rad < np.pi:
        raise ValueError(f"hfov_rad must be in (0, pi), got {hfov_rad}")
    f = 0.5 * width / np.tan(0.5 * hfov_rad)
    return np.array(
        [[f, 0.0, 0.5 * (width - 1)], [0.0, f, 0.5 * (height - 1)], [0.0, 0.0, 1.0]],
        dtype=np.float64,
    )


def _distort(xy: FloatArray, d: FloatArray) -> FloatArray:
    """Apply OpenCV radial/tangential distortion to (N, 2) normalized coords; returns (N, 2)."""
    k1, k2, p1, p2, k3 = d
    x = xy[:, 0]
    y = xy[:, 1]
    r2 = x * x + y * y
    radial = 1.0 + r2 * (k1 + r2 * (k2 + r2 * k3))
    xd = x * radial + 2.0 * p1 * x * y + p2 * (r2 + 2.0 * x * x)
    yd = y * radial + p1 * (r2 + 2.0 * y * y) + 2.0 * p2 * x * y
    return np.column_stack([xd, yd])


def _normalized_to_pixels(xy: FloatArray, K: FloatArray) -> FloatArray:
    """Map (N, 2) normalized image coords to (N, 2) pixels with K (skew K[0, 1] honoured)."""
    u = K[0, 0] * xy[:, 0] + K[0, 1] * xy[:, 1] + K[0, 2]
    v = K[1, 1] * xy[:, 1] + K[1, 2]
    return np.column_stack([u, v])


def _pixels_to_normalized(uv: FloatArray, K: FloatArray) -> FloatArray:
    """Map (N, 2) pixels to (N, 2) (still distorted) normalized coords with K^-1."""
    y = (uv[:, 1] - K[1, 2]) / K[1, 1]
    x = (uv[:, 0] - K[0, 2] - K[0, 1] * y) / K[0, 0]
    return np.column_stack([x, y])


def project_points(
    points_cam: ArrayLike, K: ArrayLike, dist: ArrayLike | None = None
) -> FloatArray:
    """Project (N, 3) camera-frame points (m) to (N, 2) float64 pixels (u, v).

    Uses the OpenCV model: normalize by z, apply radial (k1, k2, k3) and tangential (p1, p2)
    distortion from ``dist`` (or none), then K. Points with z <= 0 (behind or on the camera
    plane) yield nan; no field-of-view clipping is done.
    """
    P = _as_array(points_cam, (None, 3), "points_cam")
    K = _as_array(K, (3, 3), "K")
    d = _as_dist(dist)
    z = P[:, 2]
    in_front = z > 0.0
    # Divide only where valid so z == 0 does not raise warnings; the rest is masked to nan.
    safe_z = np.where(in_front, z, 1.0)
    xy = P[:, :2] / safe_z[:, None]
    if d is not None:
        xy = _distort(xy, d)
    uv = _normalized_to_pixels(xy, K)
    uv[~in_front] = np.nan
    return uv


def undistort_normalized(
    uv: ArrayLike,
    K: ArrayLike,
    dist: ArrayLike | None,
    *,
    max_iterations: int = 100,
    tol: float = 1e-15,
) -> FloatArray:
    """Map (N, 2) distorted pixels (u, v) to (N, 2) undistorted normalized coords (x/z, y/z).

    Inverts the OpenCV distortion by the fixed-point iteration of ``cv2.undistortPoints``,
    x <- (x_d - tangential(x)) / radial(x), run until the largest update is below ``tol`` or
    ``max_iterations`` is reached. It converges (to ~1e-12) for moderate distortion, i.e.
    while the distortion's Jacobian stays well inside the unit ball over the image.
    """
    UV = _as_array(uv, (None, 2), "uv")
    K = _as_array(K, (3, 3), "K")
    d = _as_dist(dist)
    xy_d = _pixels_to_normalized(UV, K)
    if d is None:
        return xy_d
    k1, k2, p1, p2, k3 = d
    x0 = xy_d[:, 0]
    y0 = xy_d[:, 1]
    x = x0.copy()
    y = y0.copy()
    for _ in range(max_iterations):
        r2 = x * x + y * y
        radial = 1.0 + r2 * (k1 + r2 * (k2 + r2 * k3))
        dx = 2.0 * p1 * x * y + p2 * (r2 + 2.0 * x * x)
        dy = p1 * (r2 + 2.0 * y * y) + 2.0 * p2 * x * y
        x_new = (x0 - dx) / radial
        y_new = (y0 - dy) / radial
        step = max(np.max(np.abs(x_new - x), initial=0.0), np.max(np.abs(y_new - y), initial=0.0))
        x, y = x_new, y_new
        if step < tol:
            break
    return np.column_stack([x, y])


def backproject_pixels(
    uv: ArrayLike, depth_m: ArrayLike, K: ArrayLike, dist: ArrayLike | None = None
) -> FloatArray:
    """Lift (N, 2) pixels (u, v) with (N,) depths to (N, 3) camera-frame points (m).

    ``depth_m`` is the z coordinate in the camera frame (as in a rendered depth map), not the
    distance along the ray; distortion ``dist`` is removed first when given.
    """
    xy = undistort_normalized(uv, K, dist)
    z = np.broadcast_to(np.asarray(depth_m, dtype=np.float64), (xy.shape[0],))
    return np.column_stack([xy[:, 0] * z, xy[:, 1] * z, z])


def depth_to_points(
    depth: ArrayLike, K: ArrayLike, dist: ArrayLike | None = None
) -> tuple[FloatArray, BoolArray]:
    """Back-project an (H, W) z-depth map (m) to camera-frame points.

    Returns ``(points, mask)``: ``points`` is (M, 3) float64 in the camera frame, one per pixel
    with finite depth > 0, in row-major order; ``mask`` is the (H, W) bool array of those
    pixels, so ``image[mask]`` gives per-point colours aligned with ``points`` and
    ``np.nonzero(mask)`` gives their (v, u) = (row, column) indices.
    """
    D = _as_array(depth, (None, None), "depth")
    mask = np.isfinite(D) & (D > 0.0)
    v, u = np.nonzero(mask)
    uv = np.column_stack([u, v]).astype(np.float64)
    return backproject_pixels(uv, D[mask], K, dist), mask
