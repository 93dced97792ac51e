"""Property tests for sim.viewpoints: the elevation-filtered geodesic-icosphere viewpoint set."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.geometry import intrinsics_from_fov, invert_pose, project_points, transform_points
from sim.viewpoints import (
    Viewpoint,
    icosphere_directions,
    plan_viewpoints,
    viewpoint_solid_angles,
)

SETTINGS = settings(deadline=None, max_examples=40)
K = intrinsics_from_fov(640, 480, np.deg2rad(60.0))

centers = st.tuples(*[st.floats(-2.0, 2.0)] * 3).map(np.array)
radii = st.floats(0.05, 3.0)
subdivision_levels = st.integers(0, 3)


@st.composite
def elevation_bounds(draw: st.DrawFn) -> tuple[float, float]:
    """Random inclusive elevation bounds 0 <= lo <= hi <= 90 (deg)."""
    a = draw(st.floats(0.0, 90.0))
    b = draw(st.floats(0.0, 90.0))
    return min(a, b), max(a, b)


def test_icosphere_vertex_counts() -> None:
    """The icosphere has 10 * 4**s + 2 unit vertices."""
    for s in range(4):
        d = icosphere_directions(s)
        assert d.shape == (10 * 4**s + 2, 3) and d.dtype == np.float64
        np.testing.assert_allclose(np.linalg.norm(d, axis=1), 1.0, atol=1e-15)


@SETTINGS
@given(centers, radii, subdivision_levels, elevation_bounds())
def test_elevations_within_bounds(
    center: np.ndarray, radius: float, s: int, bounds: tuple[float, float]
) -> None:
    """Exactly the vertices inside the (inclusive) elevation band are kept, sorted by id."""
    lo, hi = bounds
    vps = plan_viewpoints(center, radius, s, lo, hi)
    ids = [vp.view_id for vp in vps]
    assert ids == sorted(set(ids))
    tol = 1e-9  # the planner's documented rounding slack on inclusive bounds (rad)
    for vp in vps:
        assert np.deg2rad(lo) - tol <= vp.elevation_rad <= np.deg2rad(hi) + tol
        assert vp.elevation_rad == pytest.approx(np.arcsin(vp.direction[2]), abs=1e-12)
        assert vp.azimuth_rad == pytest.approx(np.arctan2(vp.direction[1], vp.direction[0]))
    # Nothing inside the band was dropped.
    elev = np.rad2deg(np.arcsin(np.clip(icosphere_directions(s)[:, 2], -1.0, 1.0)))
    expected = np.flatnonzero((elev >= lo) & (elev <= hi))
    assert set(expected.tolist()) <= set(ids)


@SETTINGS
@given(centers, radii, subdivision_levels)
def test_cameras_look_at_center(center: np.ndarray, radius: float, s: int) -> None:
    """Directions are unit, cameras sit at centre + r d and the centre hits the principal point."""
    vps = plan_viewpoints(center, radius, s, 0.0, 90.0)
    assert vps, "the upper hemisphere always contains vertices"
    for vp in vps:
        assert np.linalg.norm(vp.direction) == pytest.approx(1.0, abs=1e-12)
        T = vp.T_base_cam
        R = T[:3, :3]
        np.testing.assert_allclose(R.T @ R, np.eye(3), atol=1e-12)
        assert np.linalg.det(R) == pytest.approx(1.0, abs=1e-12)
        np.testing.assert_allclose(T[:3, 3], center + radius * vp.direction, atol=1e-12)
        np.testing.assert_allclose(T[:3, 2], -vp.direction, atol=1e-12)
        p_cam = transform_points(invert_pose(T), center[None])
        assert p_cam[0, 2] == pytest.approx(radius)
        np.testing.assert_allclose(project_points(p_cam, K)[0], K[:2, 2], atol=1e-6)


@SETTINGS
@given(subdivision_levels, elevation_bounds())
def test_view_ids_stable_under_filtering(s: int, bounds: tuple[float, float]) -> None:
    """A filtered set is a subset of the unfiltered set with identical ids and directions."""
    center = np.array([0.1, -0.2, 0.3])
    full = {vp.view_id: vp for vp in plan_viewpoints(center, 0.5, s, 0.0, 90.0)}
    all_dirs = icosphere_directions(s)
    for vp in plan_viewpoints(center, 0.5, s, *bounds):
        assert vp.view_id in full
        np.testing.assert_array_equal(vp.direction, full[vp.view_id].direction)
        np.testing.assert_array_equal(vp.T_base_cam, full[vp.view_id].T_base_cam)
        np.testing.assert_array_equal(vp.direction, all_dirs[vp.view_id])


def test_near_equal_solid_angles() -> None:
    """Voronoi cells of the icosphere vertices tile the sphere with near-equal solid angles.

    Measured max/min area ratios: s=0 -> 1.000 (the 12 icosahedron vertices are equivalent),
    s=1 -> 1.130, s=2 -> 1.187, s=3 -> 1.310 (s=4 -> 1.348, s=5 -> 1.359). The ratio grows
    with s but saturates near 1.36: the smallest cells are always the 12 pentagonal cells at the
    original icosahedron vertices, and the largest sit near the face centres, where projecting
    the flat subdivided face onto the sphere stretches triangles most; that distortion is a
    fixed property of the icosahedron's face (edge half-angle ~31.7 deg), not of s. A bound
    of 1.35 therefore holds for s <= 3 with margin; a latitude/longitude grid, by contrast,
    has cells shrinking to zero area at the poles (unbounded ratio).
    """
    ratios = {}
    for s in range(4):
        areas = viewpoint_solid_angles(s)
        assert areas.shape == (10 * 4**s + 2,)
        assert np.all(areas > 0)
        assert areas.sum() == pytest.approx(4 * np.pi, rel=1e-10)
        ratios[s] = float(areas.max() / areas.min())
    print(
        "icosphere Voronoi max/min solid-angle ratios:", {s: round(r, 4) for s, r in ratios.items()}
    )
    assert ratios[0] == pytest.approx(1.0, abs=1e-9)
    for s in (1, 2, 3):
        assert ratios[s] < 1.35


def test_viewpoint_counts() -> None:
    """The default 20..80 deg band keeps 12 of 42 (s=1) and 50 of 162 (s=2) vertices."""
    assert len(plan_viewpoints([0.0, 0.0, 0.0], 0.4, 1)) == 12
    assert len(plan_viewpoints([0.0, 0.0, 0.0], 0.4, 2)) == 50
    # The zenith vertex (elevation exactly 90 deg) is kept when the band is inclusive of 90.
    top = plan_viewpoints([0.0, 0.0, 0.0], 0.4, 1, 90.0, 90.0)
    assert len(top) == 1 and top[0].elevation_rad == pytest.approx(np.pi / 2)


def test_viewpoint_is_frozen_and_read_only() -> None:
    """Viewpoint fields cannot be reassigned and its arrays cannot be written."""
    vp = plan_viewpoints([0.0, 0.0, 0.0], 0.4, 1)[0]
    assert isinstance(vp, Viewpoint)
    with pytest.raises(dataclasses.FrozenInstanceError):
        vp.view_id = 3  # type: ignore[misc]
    with pytest.raises(ValueError):
        vp.direction[0] = 0.0
    with pytest.raises(ValueError):
        vp.T_base_cam[0, 0] = 0.0
    # Mutating a returned direction array must not corrupt the cached icosphere.
    d = icosphere_directions(1)
    d[:] = 0.0
    assert np.all(np.linalg.norm(icosphere_directions(1), axis=1) > 0.99)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"radius_m": 0.0}, "radius_m"),
        ({"radius_m": -1.0}, "radius_m"),
        ({"subdivisions": -1}, "subdivisions"),
        ({"subdivisions": 6}, "subdivisions"),
        ({"subdivisions": 1.5}, "subdivisions"),
        ({"elevation_min_deg": -1.0}, "elevation_min_deg"),
        ({"elevation_max_deg": 91.0}, "elevation_max_deg"),
        ({"elevation_min_deg": 60.0, "elevation_max_deg": 30.0}, "elevation_min_deg"),
        ({"center": [0.0, 0.0]}, "center"),
    ],
)
def test_plan_viewpoints_validation(kwargs: dict[str, object], name: str) -> None:
    """Invalid arguments raise ValueError naming the argument."""
    args: dict[str, object] = {"center": [0.0, 0.0, 0.0], "radius_m": 0.5, "subdivisions": 1}
    args.update(kwargs)
    with pytest.raises(ValueError, match=name):
        plan_viewpoints(**args)  # type: ignore[arg-type]
