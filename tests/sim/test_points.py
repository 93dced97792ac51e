"""Tests for sim.points: depth noise model, back-projection, cropping, fusion, PLY I/O."""

from __future__ import annotations

import io
from pathlib import Path

import cv2
import numpy as np
import pytest
import trimesh

from sim.geometry import invert_pose, make_pose, rotation_matrix, transform_points
from sim.points import (
    DEFECT_COLOR,
    NORMAL_COLOR,
    DepthSensorModel,
    crop_points,
    depth_to_base_points,
    fuse_points,
    label_colors,
    labels_from_mask,
    ply_bytes,
    read_ply,
    simulate_depth,
)
from sim.render.camera_model import srgb_to_linear


def _K(fx: float, fy: float, cx: float, cy: float) -> np.ndarray:
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])


def _rays(H: int, W: int, K: np.ndarray) -> np.ndarray:
    """(H, W, 3) rays (x/z, y/z, 1) through the pixel centres."""
    v, u = np.mgrid[0:H, 0:W].astype(np.float64)
    return np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], axis=-1)


def _plane_depth(H: int, W: int, K: np.ndarray, normal: np.ndarray, point: np.ndarray):
    """Ideal z-depth (float32) of the plane through ``point`` with ``normal`` (camera frame)."""
    r = _rays(H, W, K)
    z = float(normal @ point) / (r @ normal)
    return z.astype(np.float32)


def _tilted_normal(tilt_deg: float) -> np.ndarray:
    """Unit normal facing the camera, tilted by ``tilt_deg`` about the camera y axis."""
    a = np.deg2rad(tilt_deg)
    return np.array([np.sin(a), 0.0, -np.cos(a)])


# A sensor with only one effect at a time switched on.
# Rates are measured with independent dropouts (a blobby field has few independent samples).
_QUIET = DepthSensorModel(subpixel=0.0, flying_pixels=False, dropout_corr_px=0.0)


# --------------------------------------------------------------------------------------------
# depth_to_base_points
# --------------------------------------------------------------------------------------------


def test_depth_to_points_plane_in_base_frame() -> None:
    H, W = 48, 64
    K = _K(80.0, 85.0, 37.3, 20.6)  # off-centre principal point, fx != fy
    depth = np.full((H, W), 0.4, np.float32)
    depth[:, 0] = 0.0
    depth[10, 20] = 0.0
    T_base_cam = make_pose(rotation_matrix([0.3, -1.1, 0.7]), [0.25, -0.1, 0.6])

    points, idx = depth_to_base_points(depth, K, T_base_cam)

    assert points.dtype == np.float64 and idx.dtype == np.int64
    np.testing.assert_array_equal(idx, np.flatnonzero(depth.reshape(-1) > 0))
    v, u = np.divmod(idx, W)
    z = 0.4
    expected_cam = np.column_stack(
        [(u - 37.3) / 80.0 * z, (v - 20.6) / 85.0 * z, np.full(u.size, z)]
    )
    expected = expected_cam @ T_base_cam[:3, :3].T + T_base_cam[:3, 3]
    np.testing.assert_allclose(points, expected, atol=1e-6)
    # Depth is z along the optical axis, not ray length: all points lie on the plane z_cam = 0.4.
    back = transform_points(invert_pose(T_base_cam), points)
    np.testing.assert_allclose(back[:, 2], 0.4, atol=1e-6)


def test_depth_to_points_distortion_reprojects_to_pixel_centres() -> None:
    H, W = 120, 160
    K = _K(150.0, 150.0, 81.0, 58.5)
    dist = np.array([-0.25, 0.08, 0.001, -0.002, 0.01])
    depth = np.linspace(0.3, 0.9, H * W, dtype=np.float32).reshape(H, W)
    T_base_cam = make_pose(rotation_matrix([0.2, 0.4, -0.3]), [0.1, 0.2, 0.5])

    points, idx = depth_to_base_points(depth, K, T_base_cam, dist)

    P_cam = transform_points(invert_pose(T_base_cam), points)
    np.testing.assert_allclose(P_cam[:, 2], depth.reshape(-1)[idx], rtol=1e-6)
    uv, _ = cv2.projectPoints(P_cam, np.zeros(3), np.zeros(3), K, dist)
    v, u = np.divmod(idx, W)
    err = np.linalg.norm(uv.reshape(-1, 2) - np.column_stack([u, v]), axis=1)
    assert err.max() < 0.01
    # Ignoring the distortion would be visibly wrong at the corners.
    uv0, _ = cv2.projectPoints(P_cam, np.zeros(3), np.zeros(3), K, np.zeros(5))
    points_nodist, _ = depth_to_base_points(depth, K, T_base_cam)
    assert np.abs(points_nodist - points).max() > 1e-3
    assert np.linalg.norm(uv0.reshape(-1, 2) - np.column_stack([u, v]), axis=1).max() > 1.0


def test_labels_from_mask_follow_pixel_indices() -> None:
    depth = np.zeros((4, 5), np.float32)
    depth[1:, 2:] = 0.5
    mask = np.zeros((4, 5), bool)
    mask[2, 3] = True
    _, idx = depth_to_base_points(depth, _K(10, 10, 2, 2), np.eye(4))
    labels = labels_from_mask(mask, idx)
    assert labels.sum() == 1 and idx[labels][0] == 2 * 5 + 3


# --------------------------------------------------------------------------------------------
# simulate_depth
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("z", [0.5, 1.0])
def test_axial_noise_matches_intel_formula(z: float) -> None:
    H, W = 200, 200
    fx = 600.0
    K = _K(fx, fx, 100.0, 100.0)
    depth = np.full((H, W), z, np.float32)
    model = DepthSensorModel(flying_pixels=False)
    noisy = simulate_depth(depth, K, None, None, model, np.random.default_rng(1))
    assert np.all(noisy > 0)  # a fronto-parallel, bright, in-range plane loses nothing
    measured = float(np.std(noisy.astype(np.float64) - z))
    expected = z**2 * 0.08 / (fx * 0.050)  # Intel: z^2 * subpixel / (f_px * baseline)
    assert abs(measured / expected - 1.0) < 0.10
    assert abs(float(np.mean(noisy - z))) < 0.1 * expected


@pytest.mark.parametrize(("corr_px", "lo", "hi"), [(1.0, 0.6, 0.95), (0.0, -0.05, 0.05)])
def test_axial_noise_spatial_correlation(corr_px: float, lo: float, hi: float) -> None:
    K = _K(600.0, 600.0, 100.0, 100.0)
    depth = np.full((200, 200), 0.5, np.float32)
    model = DepthSensorModel(flying_pixels=False, noise_corr_px=corr_px)
    e = simulate_depth(depth, K, None, None, model, np.random.default_rng(2)) - 0.5
    rho = np.corrcoef(e[:, :-1].ravel(), e[:, 1:].ravel())[0, 1]
    assert lo < rho < hi


def test_grazing_dropouts_follow_the_angle_ramp() -> None:
    H, W = 160, 240
    K = _K(300.0, 300.0, 120.0, 80.0)
    rng = np.random.default_rng(3)
    steep = _plane_depth(H, W, K, _tilted_normal(72.0), np.array([0.0, 0.0, 0.5]))
    out = simulate_depth(steep, K, None, None, _QUIET, rng)
    # Analytic angle between the plane normal and each pixel's view ray.
    r = _rays(H, W, K)
    cos = np.abs(r @ _tilted_normal(72.0)) / np.linalg.norm(r, axis=-1)
    angle = np.degrees(np.arccos(cos))
    assert angle.min() < 60.0 and angle.max() > 85.0
    dropped = out == 0
    assert not dropped[angle < 64.0].any()
    assert dropped[angle > 86.0].all()
    for a0 in (67.0, 71.0, 75.0, 79.0, 83.0):
        sel = (angle >= a0 - 1.0) & (angle < a0 + 1.0)
        expected = (a0 - 65.0) / 20.0
        assert sel.sum() > 500
        assert abs(dropped[sel].mean() - expected) < 0.06, a0

    fronto = np.full((H, W), 0.5, np.float32)
    assert np.all(simulate_depth(fronto, K, None, None, _QUIET, rng) > 0)


def test_dark_pixels_drop_out_in_linear_light() -> None:
    H, W = 100, 100
    K = _K(100.0, 100.0, 50.0, 50.0)
    depth = np.full((H, W), 0.5, np.float32)
    rng = np.random.default_rng(4)

    def drop_rate(level: int) -> float:
        rgb = np.full((H, W, 3), level, np.uint8)
        return float(np.mean(simulate_depth(depth, K, rgb, None, _QUIET, rng) == 0))

    assert drop_rate(0) == 1.0
    assert drop_rate(128) == 0.0
    # sRGB 40 is 0.157 encoded but 0.021 in linear light: below dark_level 0.06.
    expected = 1.0 - float(srgb_to_linear(np.array(40 / 255))) / 0.06
    assert abs(drop_rate(40) - expected) < 0.03


def test_specular_map_increases_dropouts() -> None:
    H, W = 100, 200
    K = _K(100.0, 100.0, 100.0, 50.0)
    depth = np.full((H, W), 0.5, np.float32)
    spec = np.zeros((H, W))
    spec[:, :100] = 1.0
    rng = np.random.default_rng(5)
    out = simulate_depth(depth, K, None, spec, _QUIET, rng)
    assert abs(np.mean(out[:, :100] == 0) - 0.6) < 0.03
    assert np.all(out[:, 100:] > 0)
    assert np.all(simulate_depth(depth, K, None, None, _QUIET, rng) > 0)


def test_dropouts_come_in_blobs_at_the_same_rate() -> None:
    """Correlated dropouts keep each pixel's probability but drop neighbours together."""
    H, W = 200, 200
    K = _K(4000.0, 4000.0, 100.0, 100.0)  # narrow: every ray within 2 deg of the normal
    depth = np.full((H, W), 0.5, np.float32)
    spec = np.full((H, W), 0.5)  # fronto-parallel: in the highlight, p ~ 0.6 * 0.5
    rates, together = [], []
    for corr in (0.0, 2.0):
        model = DepthSensorModel(subpixel=0.0, flying_pixels=False, dropout_corr_px=corr)
        drop = simulate_depth(depth, K, None, spec, model, np.random.default_rng(3)) == 0
        rates.append(drop.mean())
        together.append((drop[:, 1:] & drop[:, :-1]).mean() / drop.mean())
    assert abs(rates[0] - 0.3) < 0.02 and abs(rates[1] - 0.3) < 0.06
    # P(right neighbour drops | this drops): the rate when independent, far more in blobs.
    assert abs(together[0] - 0.3) < 0.03 and together[1] > 0.6


def test_specular_dropouts_concentrate_in_the_highlight() -> None:
    """A shiny (not mirror) surface loses returns where it faces the camera, few elsewhere."""
    H, W = 100, 100
    f = 4000.0  # narrow: rays within 1 deg of the axis
    K = _K(f, f, 50.0, 50.0)
    spec = np.full((H, W), 0.6)
    facing = np.full((H, W), 0.5, np.float32)
    u = np.arange(W)[None, :] - 50.0
    tilted = (0.5 / (1.0 - np.tan(np.radians(50.0)) * u / f)).astype(np.float32)  # 50 deg
    tilted = np.broadcast_to(tilted, (H, W)).copy()
    rng = np.random.default_rng(4)
    face = np.mean(simulate_depth(facing, K, None, spec, _QUIET, rng) == 0)
    slant = np.mean(simulate_depth(tilted, K, None, spec, _QUIET, rng)[:, 10:-10] == 0)
    assert abs(face - 0.36) < 0.03
    assert slant < 0.15


def test_out_of_range_depths_drop_out() -> None:
    K = _K(100.0, 100.0, 5.0, 5.0)
    depth = np.full((10, 10), 0.5, np.float32)
    depth[:, :3] = 0.08
    depth[:, -3:] = 3.5
    out = simulate_depth(depth, K, None, None, _QUIET, np.random.default_rng(6))
    assert np.all(out[:, :3] == 0) and np.all(out[:, -3:] == 0)
    assert np.all(out[:, 3:-3] == 0.5)


def test_flying_pixels_only_in_a_band_at_a_step_edge() -> None:
    H, W = 40, 60
    K = _K(100.0, 100.0, 30.0, 20.0)
    depth = np.full((H, W), 0.8, np.float32)
    depth[:, :30] = 0.4  # foreground on the left, background from column 30
    model = DepthSensorModel(subpixel=0.0)
    out = simulate_depth(depth, K, None, None, model, np.random.default_rng(7))

    band = out[:, 30]
    assert np.all((band >= 0.4) & (band <= 0.8))
    inside = (band > 0.4 + 1e-3) & (band < 0.8 - 1e-3)
    assert inside.mean() > 0.8  # random mix weights spread over the gap
    assert np.std(band) > 0.05
    rest = np.ones((H, W), bool)
    rest[:, 30] = False
    np.testing.assert_array_equal(out[rest], depth[rest])

    off = simulate_depth(depth, K, None, None, _QUIET, np.random.default_rng(7))
    np.testing.assert_array_equal(off, depth)


def test_no_flying_pixels_on_a_steep_continuous_surface() -> None:
    H, W = 80, 120
    K = _K(400.0, 400.0, 60.0, 40.0)
    depth = _plane_depth(H, W, K, _tilted_normal(75.0), np.array([0.0, 0.0, 0.6]))
    r = _rays(H, W, K)
    angle = np.degrees(np.arccos(np.abs(r @ _tilted_normal(75.0)) / np.linalg.norm(r, axis=-1)))
    assert np.all(depth > 0) and 80.0 < angle.max() < 84.0
    model = DepthSensorModel(subpixel=0.0, grazing_deg=500.0)  # flying pixels only
    out = simulate_depth(depth, K, None, None, model, np.random.default_rng(8))
    np.testing.assert_array_equal(out, depth)


def test_same_seed_same_bytes() -> None:
    H, W = 64, 80
    K = _K(90.0, 90.0, 40.0, 32.0)
    depth = _plane_depth(H, W, K, _tilted_normal(70.0), np.array([0.0, 0.0, 0.5]))
    depth[20:40, 30:50] -= 0.1
    rgb = np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8)
    spec = np.random.default_rng(1).random((H, W))
    model = DepthSensorModel()

    def run(seed: int) -> bytes:
        return simulate_depth(depth, K, rgb, spec, model, np.random.default_rng(seed)).tobytes()

    assert run(42) == run(42)
    assert run(42) != run(43)


def test_disabled_model_returns_input_unchanged() -> None:
    depth = np.random.default_rng(0).uniform(0.05, 5.0, (30, 40)).astype(np.float32)
    depth[5:10, 5:10] = 0.0
    rng = np.random.default_rng(9)
    out = simulate_depth(
        depth, _K(50, 50, 20, 15), None, None, DepthSensorModel(enabled=False), rng
    )
    assert out.dtype == np.float32 and out is not depth
    np.testing.assert_array_equal(out, depth)
    assert rng.random() == np.random.default_rng(9).random()  # nothing drawn


def test_model_rejects_bad_parameters() -> None:
    with pytest.raises(ValueError, match="baseline_m"):
        DepthSensorModel(baseline_m=0.0)
    with pytest.raises(ValueError, match="min_depth_m"):
        DepthSensorModel(min_depth_m=2.0, max_depth_m=1.0)


# --------------------------------------------------------------------------------------------
# crop_points, fuse_points
# --------------------------------------------------------------------------------------------


def test_crop_points_keeps_the_posed_box_and_drops_the_table() -> None:
    # Object rotated 90 deg about z: its y axis (half-extent 0.02) lies along base -x.
    T_base_obj = make_pose(rotation_matrix([0.0, 0.0, np.pi / 2]), [0.5, 0.2, 0.0])
    bounds = np.array([[-0.01, -0.02, 0.0], [0.01, 0.02, 0.03]])
    pts = np.array(
        [
            [0.5, 0.2, 0.015],  # centre
            [0.515, 0.2, 0.015],  # base x offset = object y: inside
            [0.5, 0.215, 0.015],  # base y offset = object -x: beyond 0.01 + margin
            [0.5, 0.2085, 0.015],  # object x = 0.0085: inside
            [0.5, 0.2115, 0.015],  # object x = 0.0115: only within the margin
            [0.5, 0.2, 0.0005],  # table height
            [0.5, 0.2, 0.0325],  # above the box but within the margin
        ]
    )
    keep = crop_points(pts, T_base_obj, bounds, margin_m=0.003)
    np.testing.assert_array_equal(keep, [True, True, False, True, True, False, True])
    keep0 = crop_points(pts, T_base_obj, bounds, margin_m=0.0, min_height_m=None)
    np.testing.assert_array_equal(keep0, [True, True, False, True, False, True, False])


def test_fuse_points_centroids_and_any_label() -> None:
    a = np.array([[0.0102, 0.0, 0.0], [0.0205, 0.0, 0.0]])
    b = np.array([[0.0106, 0.0, 0.0], [0.0305, 0.0, 0.0]])
    la = np.array([False, False])
    lb = np.array([True, False])
    pts, lab = fuse_points([a, b], [la, lb], voxel_m=0.001)
    np.testing.assert_allclose(pts[:, 0], [0.0104, 0.0205, 0.0305])
    np.testing.assert_array_equal(lab, [True, False, False])
    # Order of the views does not matter.
    pts2, lab2 = fuse_points([b, a], [lb, la], voxel_m=0.001)
    np.testing.assert_allclose(pts2, pts)
    np.testing.assert_array_equal(lab2, lab)


def test_fuse_points_reduces_dense_cloud_and_handles_empty_input() -> None:
    rng = np.random.default_rng(10)
    p = rng.uniform(0.0, 0.01, (5000, 3))
    fused, lab = fuse_points([p], [np.zeros(5000, bool)], voxel_m=0.002)
    assert fused.shape == (125, 3) and not lab.any()
    for clouds, labels in (([], []), ([np.zeros((0, 3))], [np.zeros(0, bool)])):
        e_pts, e_lab = fuse_points(clouds, labels)
        assert e_pts.shape == (0, 3) and e_lab.shape == (0,) and e_lab.dtype == bool
    with pytest.raises(ValueError):
        fuse_points([p], [np.zeros(3, bool)])


# --------------------------------------------------------------------------------------------
# PLY I/O, colours
# --------------------------------------------------------------------------------------------


def test_ply_round_trip_and_trimesh(tmp_path: Path) -> None:
    rng = np.random.default_rng(11)
    pts = rng.normal(0.0, 0.1, (257, 3))
    labels = rng.random(257) < 0.3
    colors = label_colors(labels)
    data = ply_bytes(pts, labels, colors)
    header = data[: data.index(b"end_header\n")].decode("ascii").splitlines()
    assert header[:2] == ["ply", "format binary_little_endian 1.0"]

    p, lab = read_ply(data)
    np.testing.assert_array_equal(p, pts.astype(np.float32).astype(np.float64))
    assert lab is not None
    np.testing.assert_array_equal(lab, labels)

    path = tmp_path / "cloud.ply"
    path.write_bytes(ply_bytes(pts))
    p2, lab2 = read_ply(path)
    np.testing.assert_array_equal(p2, p)
    assert lab2 is None

    cloud = trimesh.load(io.BytesIO(data), file_type="ply")
    assert isinstance(cloud, trimesh.PointCloud)
    np.testing.assert_array_equal(np.asarray(cloud.vertices), p)
    np.testing.assert_array_equal(np.asarray(cloud.colors)[:, :3], colors)


def test_read_ply_rejects_other_files() -> None:
    ascii_ply = (
        b"ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\nproperty float y\n"
        b"property float z\nend_header\n0 0 0\n"
    )
    with pytest.raises(ValueError, match="format"):
        read_ply(ascii_ply)
    mesh_ply = trimesh.creation.box().export(file_type="ply")
    with pytest.raises(ValueError):
        read_ply(mesh_ply)
    with pytest.raises(ValueError, match="PLY"):
        read_ply(b"hello world")
    with pytest.raises(ValueError, match="payload"):
        read_ply(ply_bytes(np.zeros((4, 3)))[:-2])
    double = ply_bytes(np.zeros((2, 3))).replace(b"float x", b"double x")
    with pytest.raises(ValueError, match="properties"):
        read_ply(double)


def test_label_colors() -> None:
    c = label_colors(np.array([False, True, False]))
    assert c.dtype == np.uint8 and c.shape == (3, 3)
    np.testing.assert_array_equal(c[1], DEFECT_COLOR)
    np.testing.assert_array_equal(c[[0, 2]], [NORMAL_COLOR, NORMAL_COLOR])
    assert c[1, 0] > 200 and c[1, 1] < 60
