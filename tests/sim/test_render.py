"""Tests of the pyrender backend: pixel convention, depth, label pass, mask, determinism."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import trimesh
from scipy import ndimage

from sim.geometry import (
    intrinsics_from_fov,
    invert_pose,
    look_at,
    pose_from_xyz_rpy,
    project_points,
    transform_points,
)
from sim.render.pyrender_backend import PyrenderRenderer
from sim.render import Light, Material, MeshItem, RenderScene

W, H = 128, 96  # not square, so a swapped width/height shows
K = intrinsics_from_fov(W, H, np.radians(40.0))
GREY = {0: Material((0.7, 0.7, 0.7)), 1: Material((0.9, 0.2, 0.2))}
SPHERE_R = 0.05
SPHERE = trimesh.creation.icosphere(subdivisions=4, radius=SPHERE_R)
BOX_SIZE = 0.1
T_CAM = look_at((0.45, -0.35, 0.55), (0.0, 0.0, 0.0))


@pytest.fixture
def renderer(renderer_for: Callable[[int, int], PyrenderRenderer]) -> PyrenderRenderer:
    """The session renderer for this module's W x H images."""
    return renderer_for(W, H)


def _light(T_base_cam: np.ndarray) -> tuple[Light, ...]:
    return (Light("directional", T_base_cam, intensity=3.0),)


def _sphere_at(center_base: np.ndarray, key: str = "sphere") -> MeshItem:
    T = np.eye(4)
    T[:3, 3] = center_base
    return MeshItem(key, SPHERE, T, GREY)


def _pixel_rays(uv: np.ndarray) -> np.ndarray:
    """Camera-frame ray directions (z = 1) through pixels (N, 2), OpenCV convention."""
    return np.c_[(uv[:, 0] - K[0, 2]) / K[0, 0], (uv[:, 1] - K[1, 2]) / K[1, 1], np.ones(len(uv))]


def _sphere_image_centre(c_cam: np.ndarray, r: float) -> np.ndarray:
    """Pixel centre of the ellipse a sphere (centre ``c_cam``, radius ``r``) images to.

    Rays x on the sphere's tangent cone satisfy x^T (c c^T - (|c|^2 - r^2) I) x = 0; the
    centre of that conic in normalised coordinates solves its 2x2 block system.
    """
    M = np.outer(c_cam, c_cam) - (c_cam @ c_cam - r * r) * np.eye(3)
    xy = np.linalg.solve(M[:2, :2], -M[:2, 2])
    return np.array([K[0, 0] * xy[0] + K[0, 2], K[1, 1] * xy[1] + K[1, 2]])


@pytest.mark.parametrize("offset_px", [(0.0, 0.0), (31.3, -17.6), (-40.2, 22.7), (12.5, 30.1)])
def test_sphere_mask_centroid_is_its_projection(
    renderer: PyrenderRenderer, offset_px: tuple[float, float]
) -> None:
    """A sphere placed at a known point: the mask's centroid is ``project_points`` of its
    centre within 0.25 px (OpenCV <-> OpenGL axes and the half-pixel offset), and the depth
    at the nearest pixel is the z of the front surface along that pixel's ray within 1 mm.

    Off axis a sphere images to an ellipse whose centre lies slightly outward of the
    projected centre (up to 0.2 px here); the centroid is compared with that exact centre
    within 0.1 px, leaving only rasterisation error (a 12 px radius disc)."""
    z = 0.7
    uv = np.array([[K[0, 2] + offset_px[0], K[1, 2] + offset_px[1]]])
    c_cam = _pixel_rays(uv)[0] * z
    c_base = transform_points(T_CAM, c_cam[None])[0]
    scene = RenderScene((_sphere_at(c_base),), _light(T_CAM))
    out = renderer.render(scene, K, (W, H), T_CAM)

    assert out.mask.shape == (H, W) and out.depth.shape == (H, W) and out.rgb.shape == (H, W, 3)
    v, u = np.nonzero(out.mask)
    expected = project_points(transform_points(invert_pose(T_CAM), c_base[None]), K)[0]
    np.testing.assert_allclose(expected, uv[0], atol=1e-9)  # the helper geometry itself
    ellipse = _sphere_image_centre(c_cam, SPHERE_R)
    assert np.abs(ellipse - expected).max() < 0.25
    # Measured residuals are <= 0.04 px; a half-pixel or axis-flip error is >= 0.5 px.
    assert abs(u.mean() - ellipse[0]) < 0.1
    assert abs(v.mean() - ellipse[1]) < 0.1
    # The disc has the projected radius f * r / sqrt(z^2 - r^2) (area within 5 %).
    r_px = K[0, 0] * SPHERE_R / np.sqrt(z * z - SPHERE_R**2)
    assert out.mask.sum() == pytest.approx(np.pi * r_px**2, rel=0.05)

    # Depth: exact ray-sphere intersection through the centre of the nearest pixel.
    pu, pv = np.rint(expected).astype(int)
    d = _pixel_rays(np.array([[pu, pv]], dtype=float))[0]
    a, b, c = d @ d, -2.0 * d @ c_cam, c_cam @ c_cam - SPHERE_R**2
    t_front = (-b - np.sqrt(b * b - 4 * a * c)) / (2 * a)  # z of the hit, as d has z = 1
    assert out.depth[pv, pu] == pytest.approx(t_front, abs=1e-3)
    # Nothing else was hit: depth is 0 well off the sphere.
    far = np.hypot(*(np.mgrid[0:H, 0:W][::-1] - expected[:, None, None])) > r_px + 2
    assert not out.depth[far].any()


def _box_scene(with_table: bool) -> tuple[RenderScene, np.ndarray, np.ndarray]:
    """A 10 cm cube whose upward (+z) faces carry label 1, rotated and moved off the origin,
    optionally on a non-part table slab."""
    box = trimesh.creation.box((BOX_SIZE,) * 3)
    labels = (box.face_normals[:, 2] > 0.5).astype(np.int32)
    T_obj = pose_from_xyz_rpy((0.02, -0.01, BOX_SIZE / 2), (0.0, 0.0, np.radians(25.0)))
    items = [MeshItem("box-two-labels", box, T_obj, GREY, labels)]
    if with_table:
        table = trimesh.creation.box((1.0, 1.0, 0.02))
        table.apply_translation((0.0, 0.0, -0.01))
        items.append(
            MeshItem("test-table", table, np.eye(4), {0: Material((0.3, 0.5, 0.3))}, is_part=False)
        )
    return RenderScene(tuple(items), _light(T_CAM), background=(0.0, 0.0, 0.0)), T_obj, labels


def _box_ray_cast(T_obj: np.ndarray, dx: float = 0.0, dy: float = 0.0) -> np.ndarray:
    """Ground truth per pixel centre (+ (dx, dy) px): -1 miss, else the label of the first
    face the ray enters (1 for the box top, 0 for a side), by the slab method."""
    uu, vv = np.meshgrid(np.arange(W, dtype=float) + dx, np.arange(H, dtype=float) + dy)
    uv = np.c_[uu.ravel(), vv.ravel()]
    T_obj_cam = invert_pose(T_obj) @ T_CAM
    o = T_obj_cam[:3, 3]
    d = _pixel_rays(uv) @ T_obj_cam[:3, :3].T
    half = BOX_SIZE / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        t1 = (-half - o) / d
        t2 = (half - o) / d
    t_near = np.minimum(t1, t2)
    t_far = np.maximum(t1, t2)
    enter = t_near.max(axis=1)
    hit = (enter < t_far.min(axis=1)) & (enter > 0)
    axis = t_near.argmax(axis=1)
    top = (axis == 2) & (d[:, 2] < 0)
    out = np.where(hit, top.astype(int), -1)
    return out.reshape(H, W)


def test_label_pass_gives_face_labels_where_expected(renderer: PyrenderRenderer) -> None:
    """The label pass shows label 1 exactly where a pixel-centre ray first meets the box top,
    0 on its sides; the mask is exactly the box (the table, a non-part item, is not in it)."""
    scene, T_obj, _ = _box_scene(with_table=True)
    out = renderer.render(scene, K, (W, H), T_CAM)
    truth = _box_ray_cast(T_obj)
    # Pixels whose centre lies within 0.05 px of an edge or the silhouette are ambiguous.
    jitter = [
        _box_ray_cast(T_obj, dx, dy)
        for dx, dy in [(0.05, 0.05), (-0.05, 0.05), (0.05, -0.05), (-0.05, -0.05)]
    ]
    clear = np.all([j == truth for j in jitter], axis=0)
    assert clear.mean() > 0.9
    assert (truth == 1).sum() > 200 and (truth == 0).sum() > 200  # both labels are in view
    np.testing.assert_array_equal(out.mask[clear], truth[clear] >= 0)
    np.testing.assert_array_equal(out.labels[clear & out.mask], truth[clear & out.mask])
    assert not out.labels[~out.mask].any()
    assert out.labels.dtype == np.int32 and out.mask.dtype == bool
    # The table is rendered (visible, with depth) but stays out of the mask and the labels.
    table_px = ~out.mask & (truth == -1)
    assert (out.rgb[table_px].max(axis=1) > 0).mean() > 0.9
    assert (out.depth[table_px] > 0).mean() > 0.9


def test_depth_only_pass_sees_parts_only(renderer: PyrenderRenderer) -> None:
    """``depth_only`` skips non-part items: its mask is ``depth > 0`` of the part alone (the
    table under the box is not in it), rgb is empty, depth and labels match the full pass."""
    scene, _, _ = _box_scene(with_table=True)
    full = renderer.render(scene, K, (W, H), T_CAM)
    depth = renderer.render(scene, K, (W, H), T_CAM, depth_only=True)
    assert not depth.rgb.any()
    np.testing.assert_array_equal(depth.mask, depth.depth > 0)
    # Same silhouette as the full pass up to edge pixels: the table is not in it.
    assert depth.mask.sum() == pytest.approx(full.mask.sum(), rel=0.05)
    assert (depth.mask & ~ndimage.binary_dilation(full.mask)).sum() == 0
    both = depth.mask & full.mask
    np.testing.assert_allclose(depth.depth[both], full.depth[both], atol=1e-4)
    np.testing.assert_array_equal(depth.labels[both], full.labels[both])


def test_depth_is_sampled_at_pixel_centres_like_the_mask(renderer: PyrenderRenderer) -> None:
    """Depth, the mask and the labels describe the same point per pixel: the pixel centre
    (K's convention). So depth > 0 exactly on the mask, and the depth-only mask (used for
    the missing-material ground truth) is the pixel-centre silhouette."""
    scene, T_obj, _ = _box_scene(with_table=False)
    full = renderer.render(scene, K, (W, H), T_CAM)
    depth = renderer.render(scene, K, (W, H), T_CAM, depth_only=True)
    truth = _box_ray_cast(T_obj) >= 0
    np.testing.assert_array_equal(full.mask, truth)  # holds: the SEG pass is exact
    np.testing.assert_array_equal(full.depth > 0, full.mask)
    np.testing.assert_array_equal(depth.mask, truth)


def test_rendering_is_deterministic(renderer: PyrenderRenderer) -> None:
    """The same scene rendered twice (with another scene in between, so the upload cache is
    exercised) gives identical bytes in every pass."""
    scene, _, _ = _box_scene(with_table=True)
    first = renderer.render(scene, K, (W, H), T_CAM)
    other = RenderScene((_sphere_at(np.zeros(3), key="sphere-other"),), _light(T_CAM))
    renderer.render(other, K, (W, H), T_CAM)
    second = renderer.render(scene, K, (W, H), T_CAM)
    for name in ("rgb", "depth", "mask", "labels"):
        a, b = getattr(first, name), getattr(second, name)
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes(), name


def test_renderers_of_other_sizes_and_closed_ones_do_not_break_each_other() -> None:
    """Closing one renderer or rendering at another size leaves the others working."""
    scene, _, _ = _box_scene(with_table=True)
    r1, r2 = PyrenderRenderer(), PyrenderRenderer()
    first = r1.render(scene, K, (W, H), T_CAM)
    r2.render(scene, K / 2 + np.diag([0, 0, 0.5]), (W // 2, H // 2), T_CAM)
    r2.close()
    again = r1.render(scene, K, (W, H), T_CAM)
    np.testing.assert_array_equal(first.rgb, again.rgb)
    np.testing.assert_array_equal(first.labels, again.labels)


def test_lens_distortion_moves_the_image_where_project_points_says(
    renderer: PyrenderRenderer,
) -> None:
    """With OpenCV distortion, a small sphere's mask centroid follows ``project_points`` with
    the same ``dist`` (not the pinhole projection), and depth along rays is unchanged."""
    dist = np.array([-0.4, 0.05, 0.001, -0.001, 0.0])
    small = trimesh.creation.icosphere(subdivisions=3, radius=0.01)
    z = 0.7
    uv = np.array([[K[0, 2] + 52.0, K[1, 2] + 36.0]])  # far off axis: distortion matters
    c_cam = _pixel_rays(uv)[0] * z
    T = np.eye(4)
    T[:3, 3] = transform_points(T_CAM, c_cam[None])[0]
    scene = RenderScene((MeshItem("small-sphere", small, T, GREY),), _light(T_CAM))
    pin = renderer.render(scene, K, (W, H), T_CAM)
    out = renderer.render(scene, K, (W, H), T_CAM, dist=dist)
    want = project_points(c_cam[None], K, dist)[0]
    v, u = np.nonzero(out.mask)
    got = np.array([u.mean(), v.mean()])
    assert np.linalg.norm(got - want) < 0.5
    assert np.linalg.norm(got - uv[0]) > 3.0  # it really moved
    assert out.labels[out.mask].max() == 0 and not out.labels[~out.mask].any()
    near = float(np.median(out.depth[out.mask]))
    assert near == pytest.approx(float(np.median(pin.depth[pin.mask])), abs=2e-3)
    # Zero distortion is the pinhole render, byte for byte.
    zero = renderer.render(scene, K, (W, H), T_CAM, dist=np.zeros(5))
    np.testing.assert_array_equal(zero.rgb, pin.rgb)
