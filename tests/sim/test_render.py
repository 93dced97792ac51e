"""Tests of the pyrender backend: pixel convention, depth, label pass, mask, determinism,
lights and shadows, and the persistent scene (mesh cache, hidden items, eviction)."""

from __future__ import annotations

import dataclasses
import gc
from collections.abc import Callable

import manifold3d as m3
import numpy as np
import pytest
import trimesh
from scipy import ndimage

from scenarios.interfaces import RenderOutput
from sim.geometry import (
    depth_to_points,
    intrinsics_from_fov,
    invert_pose,
    look_at,
    pose_from_xyz_rpy,
    project_points,
    transform_points,
)
from sim.parts import manifold_to_trimesh
from sim.render import Light, Material, MeshItem, RenderScene
from sim.render.pyrender_backend import PyrenderRenderer

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


# Lights and shadows -------------------------------------------------------------------------

PIT_MM = (16.0, 6.0)  # side and depth of the square pit in the slab's top
SLAB_TOP_M = 0.010
T_TOP = look_at((0.0, -0.02, 0.19), (0.0, 0.0, SLAB_TOP_M))
MATTE = {0: Material((0.7, 0.7, 0.7), roughness=1.0), 1: Material((0.7, 0.7, 0.7), roughness=1.0)}


def _pit_slab() -> MeshItem:
    """A 60 x 60 x 10 mm slab whose top (z = 10 mm) has a 16 mm square pit 6 mm deep at the
    origin; the pit's floor carries label 1."""
    side, depth = PIT_MM
    slab = m3.Manifold.cube((60.0, 60.0, 10.0)).translate((-30.0, -30.0, 0.0))
    pit = m3.Manifold.cube((side, side, depth + 1.0)).translate((-side / 2, -side / 2, 10 - depth))
    mesh, _ = manifold_to_trimesh(slab - pit)
    floor = (mesh.face_normals[:, 2] > 0.9) & (mesh.triangles_center[:, 2] < SLAB_TOP_M - 1e-3)
    return MeshItem("pit-slab", mesh, np.eye(4), MATTE, floor.astype(np.int32))


def _light_at(kind: str, elevation_deg: float, dist_m: float, target: np.ndarray, power: float):
    """A light ``dist_m`` from ``target`` at ``elevation_deg`` above the horizon, on -x."""
    e = np.radians(elevation_deg)
    eye = np.asarray(target) + dist_m * np.array([-np.cos(e), 0.0, np.sin(e)])
    return Light(kind, look_at(eye, target), intensity=power, spot_deg=25.0, size_m=0.3)


def _base_points(out: RenderOutput, T_base_cam: np.ndarray, Kx: np.ndarray) -> np.ndarray:
    """(H, W, 3) base-frame point seen at each pixel (nan where nothing was hit)."""
    pts, hit = depth_to_points(out.depth, Kx)
    grid = np.full((*out.depth.shape, 3), np.nan)
    grid[hit] = transform_points(T_base_cam, pts)
    return grid


def test_a_pit_lit_from_45_degrees_has_its_floor_in_shadow(renderer: PyrenderRenderer) -> None:
    """A spot light 45 degrees above the horizon shadows the strip of a 6 mm deep pit's floor
    next to the wall facing it (6 mm wide), and leaves the far strip as bright as the slab
    top; a point light in the same place (no shadows) lights both strips alike."""
    target = np.array([0.0, 0.0, SLAB_TOP_M])
    lit = {}
    for kind in ("spot", "point"):
        scene = RenderScene((_pit_slab(),), (_light_at(kind, 45.0, 0.6, target, 12.0),))
        out = renderer.render(scene, K, (W, H), T_TOP)
        grey = out.rgb.astype(float).mean(axis=2)
        p = _base_points(out, T_TOP, K) * 1e3  # mm
        floor = out.mask & (out.labels == 1)
        # The shadow of the wall at x = -8 mm reaches x = -2 mm; keep 1 mm off its edge.
        near = floor & (p[..., 0] > -7.5) & (p[..., 0] < -3.0) & (np.abs(p[..., 1]) < 6.0)
        far = floor & (p[..., 0] > 2.0) & (p[..., 0] < 7.5) & (np.abs(p[..., 1]) < 6.0)
        top = out.mask & (np.abs(p[..., 2] - 10.0) < 0.1) & (np.abs(p[..., 0]) < 16.0)
        top &= (np.abs(p[..., 0]) > 10.0) | (np.abs(p[..., 1]) > 10.0)
        assert near.sum() > 20 and far.sum() > 20 and top.sum() > 200
        lit[kind] = (grey[near].mean(), grey[far].mean(), grey[top].mean())
    near, far, top = lit["spot"]
    assert near < 0.55 * far  # in shadow: ambient light only
    assert far == pytest.approx(top, rel=0.05)  # the far strip is lit like the top
    near, far, top = lit["point"]
    assert near == pytest.approx(far, rel=0.05)  # without shadows the floor shows bright


@pytest.mark.parametrize("elevation_deg", [10.0, 25.0, 45.0, 70.0, 88.0])
def test_shadowed_lights_show_no_acne_on_unoccluded_surfaces(
    renderer: PyrenderRenderer, elevation_deg: float
) -> None:
    """Where nothing stands between a spot light and a surface, the spot (with a shadow map)
    draws exactly what a point light (no shadows) of the same power draws, whatever the
    angle of incidence: flat bench at 2-80 degrees from grazing, a sphere at all angles."""
    target = np.zeros(3)
    table = trimesh.creation.box((1.0, 1.0, 0.02))
    table.apply_translation((0.0, 0.0, -0.01))
    T_sphere = np.eye(4)
    T_sphere[:3, 3] = (0.03, 0.02, SPHERE_R)
    items = (
        MeshItem("acne-table", table, np.eye(4), MATTE, is_part=False),
        MeshItem("acne-sphere", SPHERE, T_sphere, GREY),
    )
    outs = {}
    for kind in ("spot", "point"):
        light = _light_at(kind, elevation_deg, 0.6, target, 12.0)
        outs[kind] = renderer.render(RenderScene(items, (light,)), K, (W, H), T_CAM)
    spot, point = (outs[k].rgb.astype(int) for k in ("spot", "point"))
    # Compare where the spot's cone is at full strength, leaving out the bench where the
    # sphere shadows it (the ray to the light passes within 1.1 radii of the sphere's
    # centre) and the sphere's silhouette, whose multisampled colour mixes in the bench.
    p = _base_points(outs["spot"], T_CAM, K)
    light_pos = _light_at("spot", elevation_deg, 0.6, target, 12.0).T_base_light[:3, 3]
    axis = (target - light_pos) / np.linalg.norm(target - light_pos)
    ray = p - light_pos
    cos_axis = (ray @ axis) / np.linalg.norm(ray, axis=-1)
    to_light = -ray / np.linalg.norm(ray, axis=-1, keepdims=True)
    rel = T_sphere[:3, 3] - p
    along = np.clip(np.sum(rel * to_light, axis=-1, keepdims=True), 0.0, None)
    shadowed = np.linalg.norm(rel - along * to_light, axis=-1) < 1.1 * SPHERE_R
    on_sphere = outs["spot"].mask
    silhouette = ndimage.binary_dilation(on_sphere, iterations=2) & ~ndimage.binary_erosion(
        on_sphere
    )
    region = (cos_axis > np.cos(np.radians(22.0))) & ~silhouette & (on_sphere | ~shadowed)
    assert region.sum() > 500
    diff = np.abs(spot - point).max(axis=-1)[region]
    assert diff.max() <= 1, (diff.max(), (diff > 1).sum())


@pytest.mark.parametrize(
    ("kind", "watts_per_sr_per_w"),
    [("spot", 1 / (4 * np.pi)), ("area", 1 / np.pi), ("point", 1 / (4 * np.pi))],
)
def test_light_power_converts_to_irradiance_like_blender(
    renderer: PyrenderRenderer, kind: str, watts_per_sr_per_w: float
) -> None:
    """P watts of a spot or point light light the point below, d metres away, like a
    directional light of P / (4 pi d^2) W/m^2; an area light (Lambertian) like P / (pi d^2)."""
    d = 0.6
    power = 2.0 * d**2 / watts_per_sr_per_w  # 2 W/m^2 at the point below
    table = trimesh.creation.box((1.0, 1.0, 0.02))
    table.apply_translation((0.0, 0.0, -0.01))
    item = MeshItem("power-table", table, np.eye(4), MATTE, is_part=False)
    T_light = look_at((0.0, 0.0, d), (0.0, 0.0, 0.0), up=(0.0, 1.0, 0.0))
    T_cam = look_at((0.05, -0.05, 0.3), (0.0, 0.0, 0.0))
    ours = Light(kind, T_light, intensity=power, spot_deg=25.0, size_m=0.3)
    sun = Light("directional", T_light, intensity=power * watts_per_sr_per_w / d**2)
    a = renderer.render(RenderScene((item,), (ours,)), K, (W, H), T_cam).rgb
    b = renderer.render(RenderScene((item,), (sun,)), K, (W, H), T_cam).rgb
    u, v = np.rint(project_points(transform_points(invert_pose(T_cam), np.zeros((1, 3))), K)[0])
    patch = (slice(int(v) - 1, int(v) + 2), slice(int(u) - 1, int(u) + 2))
    assert 60 < b[patch].mean() < 250  # neither black nor saturated
    assert np.abs(a[patch].astype(int) - b[patch].astype(int)).max() <= 2


# The persistent scene: what a frame shows depends on its scene only --------------------------


def _same_bytes(a: RenderOutput, b: RenderOutput) -> bool:
    return all(
        getattr(a, n).dtype == getattr(b, n).dtype
        and getattr(a, n).tobytes() == getattr(b, n).tobytes()
        for n in ("rgb", "depth", "mask", "labels")
    )


def _spot_scene() -> RenderScene:
    """The box scene under three shadowing lights (their sum's order is fixed: _Scene)."""
    scene, _, _ = _box_scene(with_table=True)
    lights = (
        _light_at("spot", 40.0, 0.6, np.zeros(3), 12.0),
        _light_at("area", 60.0, 0.5, np.zeros(3), 3.0),
        _light_at("spot", 75.0, 0.7, np.array([0.02, 0.0, 0.0]), 5.0),
    )
    return RenderScene(scene.items, lights)


def test_a_frame_does_not_depend_on_what_the_renderer_drew_before() -> None:
    """A renderer that drew other meshes, materials, lights (spot, directional, none) and a
    depth-only pass renders a scene byte for byte like a fresh renderer: items left out of
    a scene are not drawn, shadow maps kept from earlier frames are redrawn."""
    box_scene, _, _ = _box_scene(with_table=True)
    targets = [box_scene, _spot_scene()]
    fresh = [PyrenderRenderer().render(s, K, (W, H), T_CAM) for s in targets]
    used = PyrenderRenderer()
    red = {0: Material((0.9, 0.1, 0.1)), 1: Material((0.1, 0.9, 0.1))}
    history = [
        RenderScene((*_spot_scene().items, _sphere_at(np.array([0.1, 0.1, 0.05]))), ()),
        RenderScene(tuple(dataclasses.replace(i, materials=red) for i in box_scene.items), ()),
        _spot_scene(),
        RenderScene((_sphere_at(np.zeros(3), key="history-sphere"),), _light(T_CAM)),
    ]
    for scene in history:
        used.render(scene, K, (W, H), look_at((0.3, 0.3, 0.4), (0.0, 0.0, 0.0)))
    used.render(box_scene, K, (W, H), T_CAM, depth_only=True)
    for scene, want in zip(targets, fresh, strict=True):
        assert _same_bytes(used.render(scene, K, (W, H), T_CAM), want)


def test_one_key_twice_in_a_scene_draws_two_meshes_with_their_own_materials(
    renderer: PyrenderRenderer,
) -> None:
    """Two items sharing a mesh key (the same bolt twice) are both drawn, each posed and
    coloured as its item says."""
    left, right = np.array([-0.06, 0.0, 0.05]), np.array([0.06, 0.0, 0.05])
    a = dataclasses.replace(_sphere_at(left, "twin-bolt"), materials={0: Material((1, 0, 0))})
    b = dataclasses.replace(_sphere_at(right, "twin-bolt"), materials={0: Material((0, 0, 1))})
    out = renderer.render(RenderScene((a, b), _light(T_CAM)), K, (W, H), T_CAM)
    cam = invert_pose(T_CAM)
    for center, channel in ((left, 0), (right, 2)):
        u, v = np.rint(project_points(transform_points(cam, center[None]), K)[0]).astype(int)
        assert out.mask[v, u]
        assert out.rgb[v, u, channel] > 2 * out.rgb[v, u, 2 - channel]


def test_least_recently_used_meshes_are_evicted_and_their_buffers_freed() -> None:
    """With room for two keys, a third evicts the least recently used one: its nodes leave
    the scene and its vertex buffers the GL context; drawn again, it is uploaded anew and
    renders as before."""
    r = PyrenderRenderer(cache_size=2)
    scenes = {k: RenderScene((_sphere_at(np.zeros(3), key=k),), _light(T_CAM)) for k in "abc"}
    first = r.render(scenes["a"], K, (W, H), T_CAM)
    primitives = [n.mesh.primitives[0] for _, n in r._uploaded[("a", 0)].nodes]
    r.render(scenes["b"], K, (W, H), T_CAM)
    r.render(scenes["c"], K, (W, H), T_CAM)  # evicts "a"; its buffers go on this frame
    r.render(scenes["c"], K, (W, H), T_CAM)
    assert list(r._uploaded) == [("b", 0), ("c", 0)]
    assert not any(p._in_context() for p in primitives)
    assert _same_bytes(r.render(scenes["a"], K, (W, H), T_CAM), first)
    r.close()


def test_part_labels_beyond_one_byte_are_refused(renderer: PyrenderRenderer) -> None:
    """The label pass stores label + 1 in a byte: a part label of 255 is an error."""
    box = trimesh.creation.box((BOX_SIZE,) * 3)
    labels = np.full(len(box.faces), 255, dtype=np.int32)
    item = MeshItem("label-255", box, np.eye(4), {255: Material((0.5, 0.5, 0.5))}, labels)
    with pytest.raises(ValueError, match="label-255"):
        renderer.render(RenderScene((item,), _light(T_CAM)), K, (W, H), T_CAM)


def test_closed_or_collected_renderers_free_their_gl_objects() -> None:
    """``close()`` frees a renderer's GL objects and leaves it usable; a renderer dropped
    without ``close()`` has its GL objects freed on the process's next render."""
    scene, _, _ = _box_scene(with_table=True)
    r = PyrenderRenderer()
    before = r.render(scene, K, (W, H), T_CAM)
    r.close()
    assert _same_bytes(r.render(scene, K, (W, H), T_CAM), before)
    gl = r._gl
    assert gl is not None
    del r
    gc.collect()
    assert not gl._deleted  # not yet: a collection cannot make the context current
    PyrenderRenderer().render(scene, K, (W, H), T_CAM)
    assert gl._deleted
