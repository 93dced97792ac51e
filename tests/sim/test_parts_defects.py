"""Tests of the parametric part (sim.parts) and the seeded boolean defects (sim.defects)."""

from __future__ import annotations

import dataclasses
import math

import manifold3d as m3
import numpy as np
import pytest
import trimesh
from hypothesis import given, settings
from hypothesis import strategies as st

from scenarios.interfaces import SpecError
from sim.defects import (
    DEFECT_KINDS,
    Defect,
    PartInstance,
    Tool,
    build_part_instance,
    make_defects,
)
from sim.geometry import transform_points
from sim.parts import (
    MM,
    FlangeBearingSeatParams,
    build_nominal_solid,
    make_params,
    manifold_to_trimesh,
)

CATEGORY = "flange_bearing_seat"
KINDS = sorted(DEFECT_KINDS)
REMOVING = ("sink", "hole", "scratch")
SEEDS = st.integers(0, 2**32 - 1)
# Booleans take ~10 ms each; a handful of examples per property keeps the module fast.
FEW = settings(max_examples=6, deadline=None)

NOMINAL_SOLID = build_nominal_solid(CATEGORY)
NOMINAL_MESH, _ = manifold_to_trimesh(NOMINAL_SOLID)

# Requested size ranges per kind (mm), kept where a part of the default size stays sane.
SIZE_BOUNDS = {
    "bulge": (2.0, 16.0),
    "sink": (2.0, 16.0),
    "hole": (1.5, 8.0),
    "scratch": (4.0, 30.0),
}


def _instance(
    kind: str, seed: int, sizes: dict[str, tuple[float, float]] | None = None
) -> PartInstance:
    defects = make_defects(NOMINAL_MESH, [kind], np.random.default_rng(seed), sizes)
    return build_part_instance(f"{kind}-{seed}", CATEGORY, NOMINAL_SOLID, defects)


def _triangle_set(mesh: trimesh.Trimesh) -> set[tuple[int, ...]]:
    return {tuple(f) for f in np.sort(mesh.faces, axis=1).tolist()}


def _inside(mesh: trimesh.Trimesh, points: np.ndarray) -> np.ndarray:
    """Point-in-solid by ray parity (Moller-Trumbore along a generic direction): (N,) bool.

    trimesh's own ``contains`` needs rtree, which the project does not depend on.
    """
    d = np.array([0.5362, 0.3127, 0.7843])
    d /= np.linalg.norm(d)
    tri = mesh.triangles
    v0, e1, e2 = tri[:, 0], tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]
    h = np.cross(d, e2)
    a = np.einsum("ij,ij->i", e1, h)
    ok = np.abs(a) > 1e-18
    f = np.where(ok, 1.0 / np.where(ok, a, 1.0), 0.0)
    out = []
    for p in np.asarray(points, dtype=np.float64):
        s = p - v0
        u = f * np.einsum("ij,ij->i", s, h)
        q = np.cross(s, e1)
        v = f * (q @ d)
        t = f * np.einsum("ij,ij->i", e2, q)
        out.append(int(np.count_nonzero(ok & (u >= 0) & (v >= 0) & (u + v <= 1) & (t > 0))) % 2)
    return np.asarray(out, dtype=bool)


def _tool_points(tool: Tool, scale: float, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` points (object frame) in the tool's core: the tool shrunk by ``scale`` about its
    centre (ellipsoid, box) or its axis (cylinder; heights in the middle half)."""
    a, b, c = tool.size_m
    if tool.shape == "ellipsoid":
        x = rng.normal(size=(n, 3))
        x *= (rng.random(n) ** (1 / 3) / np.linalg.norm(x, axis=1))[:, None]
        local = x * scale * np.array([a, b, c])
    elif tool.shape == "cylinder":
        r = scale * a * np.sqrt(rng.random(n))
        ang = rng.uniform(0, 2 * np.pi, n)
        local = np.c_[r * np.cos(ang), r * np.sin(ang), c * rng.uniform(0.25, 0.75, n)]
    else:
        local = rng.uniform(-0.5, 0.5, (n, 3)) * scale * np.array([a, b, c])
    return transform_points(tool.T_obj_tool, local)


# --------------------------------------------------------------------------------------------
# Nominal part
# --------------------------------------------------------------------------------------------


@st.composite
def valid_params(draw: st.DrawFn) -> dict[str, float]:
    """Parameter overrides that satisfy every documented constraint of the flange seat."""
    w = draw(st.floats(50.0, 150.0))
    hub = w * draw(st.floats(0.3, 0.6))
    bolt = draw(st.floats(2.0, 8.0))
    lo = (hub / 2 + bolt / 2) / math.sqrt(2.0)
    hi = w / 2 - bolt / 2
    seat = (hub - 2) * draw(st.floats(0.4, 0.9))
    t = draw(st.floats(3.0, 20.0))
    hub_h = draw(st.floats(3.0, 30.0))
    return {
        "flange_width_mm": w,
        "flange_thickness_mm": t,
        "corner_radius_mm": w / 2 * draw(st.floats(0.05, 0.9)),
        "hub_diameter_mm": hub,
        "hub_height_mm": hub_h,
        "seat_diameter_mm": seat,
        "seat_depth_mm": (t + hub_h) * draw(st.floats(0.1, 0.9)),
        "bore_diameter_mm": seat * draw(st.floats(0.3, 0.9)),
        "bolt_hole_diameter_mm": bolt,
        "bolt_offset_mm": lo + (hi - lo) * draw(st.floats(0.1, 0.9)),
        "segments": draw(st.integers(12, 64)),
    }


@FEW
@given(valid_params())
def test_nominal_part_is_a_watertight_solid_of_the_requested_size(params: dict[str, float]) -> None:
    """Any valid parameter set builds a closed solid whose bounding box is width x width x
    (flange + hub height) in metres, standing on z = 0 and centred on the z axis."""
    mesh, ids = manifold_to_trimesh(build_nominal_solid(CATEGORY, params))
    assert mesh.is_watertight
    assert mesh.volume > 0
    assert len(ids) == len(mesh.faces)
    w = params["flange_width_mm"] * MM
    h = (params["flange_thickness_mm"] + params["hub_height_mm"]) * MM
    np.testing.assert_allclose(mesh.bounds, [[-w / 2, -w / 2, 0.0], [w / 2, w / 2, h]], atol=1e-6)
    assert mesh.volume < w * w * h


def test_default_part_volume_matches_the_analytic_solid() -> None:
    """The default part's volume is the plate + hub - bore - seat - bolts formula within 1 %
    (64-gon circles lose ~0.2 %), and its faces all come from one original solid."""
    p = FlangeBearingSeatParams()
    t, r, w = p.flange_thickness_mm, p.corner_radius_mm, p.flange_width_mm
    total = t + p.hub_height_mm
    area = math.pi / 4
    vol_mm3 = (
        (w * w - (4 - math.pi) * r * r) * t
        + area * p.hub_diameter_mm**2 * p.hub_height_mm
        - area * p.bore_diameter_mm**2 * (total - p.seat_depth_mm)
        - area * p.seat_diameter_mm**2 * p.seat_depth_mm
        - 4 * area * p.bolt_hole_diameter_mm**2 * t
    )
    assert NOMINAL_MESH.is_watertight
    assert NOMINAL_MESH.volume == pytest.approx(vol_mm3 * MM**3, rel=0.01)
    assert NOMINAL_SOLID.status() == m3.Error.NoError


PARAM_NAMES = [f.name for f in dataclasses.fields(FlangeBearingSeatParams)]


@FEW
@given(st.sampled_from(PARAM_NAMES), st.floats(-100.0, 0.0))
def test_non_positive_parameter_is_a_spec_error_naming_it(name: str, value: float) -> None:
    """A parameter <= 0 is rejected at build time with SpecError naming ``part.params.<name>``."""
    with pytest.raises(SpecError, match=rf"part\.params\.{name}\b"):
        build_nominal_solid(CATEGORY, {name: value})


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("hub_diameter_mm", 80.0),  # not narrower than the flange
        ("seat_diameter_mm", 49.0),  # leaves no hub wall
        ("bore_diameter_mm", 38.0),  # not narrower than the seat
        ("seat_depth_mm", 30.0),  # through the whole part
        ("corner_radius_mm", 40.0),  # corners meet
        ("bolt_offset_mm", 37.0),  # bolt holes break out of the flange edge
        ("bolt_offset_mm", 15.0),  # bolt holes cut into the hub
        ("segments", 8),
    ],
)
def test_impossible_geometry_is_a_spec_error_naming_the_parameter(name: str, value: float) -> None:
    """Each geometric constraint names the parameter that breaks it (defaults otherwise)."""
    with pytest.raises(SpecError, match=rf"part\.params\.{name}\b"):
        make_params(CATEGORY, {name: value})


def test_unknown_parameter_and_category_are_spec_errors() -> None:
    """Unknown parameter names and categories are named in the SpecError."""
    with pytest.raises(SpecError, match=r"part\.params\.flange_colour"):
        make_params(CATEGORY, {"flange_colour": 1.0})
    with pytest.raises(SpecError, match=r"part\.category.*'teapot'"):
        build_nominal_solid("teapot")


@pytest.mark.parametrize("value", [math.inf, math.nan])
def test_non_finite_parameter_is_a_spec_error_naming_it(value: float) -> None:
    """Non-finite sizes are impossible parts: SpecError naming the parameter (validation only;
    nothing is built here, since building some of them crashes the interpreter)."""
    for name in ("flange_width_mm", "hub_height_mm", "flange_thickness_mm"):
        with pytest.raises(SpecError, match=rf"part\.params\.{name}\b"):
            make_params(CATEGORY, {name: value})


# --------------------------------------------------------------------------------------------
# Defects
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@FEW
@given(seed=SEEDS)
def test_defective_part_is_watertight_labelled_and_changes_volume(kind: str, seed: int) -> None:
    """Every kind yields a closed solid whose tool-made faces carry label 1; bulges add
    volume, the other kinds remove it; the nominal mesh of the instance is unchanged."""
    part = _instance(kind, seed)
    assert part.mesh.is_watertight
    assert part.face_labels.shape == (len(part.mesh.faces),)
    assert part.face_labels.dtype == np.int32
    assert set(np.unique(part.face_labels).tolist()) == {0, 1}
    dv = part.mesh.volume - NOMINAL_MESH.volume
    if kind == "bulge":
        assert dv > 0
    else:
        assert dv < 0
    # The twin's nominal is the same surface (triangle order may differ).
    assert np.array_equal(part.nominal.vertices, NOMINAL_MESH.vertices)
    assert _triangle_set(part.nominal) == _triangle_set(NOMINAL_MESH)


@pytest.mark.parametrize("kind", KINDS)
@FEW
@given(seed=SEEDS)
def test_labelled_faces_lie_on_the_tool_surface(kind: str, seed: int) -> None:
    """Provenance is exact: label-1 faces lie on the tool's surface (inside the tool grown by
    5 %), label-0 faces never lie deep inside the tool (shrunk to 90 %)."""
    part = _instance(kind, seed)
    tool = part.defects[0].tool
    centres = part.mesh.triangles_center
    a, b, c = tool.size_m
    if tool.shape == "cylinder":
        # The cylinder stands on z = 0 of its frame: grow it about its own centre.
        grow = np.eye(4)
        grow[2, 3] = -0.025 * c
        grown = Tool(tool.shape, tool.T_obj_tool @ grow, (1.05 * a, 1.05 * b, 1.05 * c))
        shrink = np.eye(4)
        shrink[2, 3] = 0.05 * c
        shrunk = Tool(tool.shape, tool.T_obj_tool @ shrink, (0.9 * a, 0.9 * b, 0.9 * c))
    else:
        grown = Tool(tool.shape, tool.T_obj_tool, (1.05 * a, 1.05 * b, 1.05 * c))
        shrunk = Tool(tool.shape, tool.T_obj_tool, (0.9 * a, 0.9 * b, 0.9 * c))
    if tool.shape == "box":
        # The scratch box is 0.1 mm thick: widen only its thickness generously.
        grown = Tool("box", tool.T_obj_tool, (1.05 * a, 1.05 * b, 3 * c))
    assert grown.contains(centres[part.face_labels == 1]).all()
    assert not shrunk.contains(centres[part.face_labels == 0]).any()


@pytest.mark.parametrize("kind", KINDS)
@FEW
@given(s1=SEEDS, s2=SEEDS)
def test_same_seed_reproduces_the_part_and_other_seeds_differ(kind: str, s1: int, s2: int) -> None:
    """A seed fixes the mesh bytes, labels and record; another seed moves the defect."""
    a, b = _instance(kind, s1), _instance(kind, s1)
    assert a.mesh.vertices.tobytes() == b.mesh.vertices.tobytes()
    assert a.mesh.faces.tobytes() == b.mesh.faces.tobytes()
    assert a.face_labels.tobytes() == b.face_labels.tobytes()
    assert a.defects[0].record == b.defects[0].record
    assert np.array_equal(a.defects[0].tool.T_obj_tool, b.defects[0].tool.T_obj_tool)
    if s1 != s2:
        c = make_defects(NOMINAL_MESH, [kind], np.random.default_rng(s2))[0]
        assert c.record != a.defects[0].record
        assert not np.array_equal(c.tool.T_obj_tool, a.defects[0].tool.T_obj_tool)


@st.composite
def kind_and_range(draw: st.DrawFn) -> tuple[str, tuple[float, float]]:
    kind = draw(st.sampled_from(KINDS))
    lo_b, hi_b = SIZE_BOUNDS[kind]
    lo = draw(st.floats(lo_b, hi_b))
    hi = draw(st.floats(lo, hi_b))
    return kind, (lo, hi)


@settings(max_examples=25, deadline=None)
@given(kind_and_range(), SEEDS)
def test_record_size_lies_in_the_requested_range(
    kr: tuple[str, tuple[float, float]], seed: int
) -> None:
    """``size_mm`` (diameter, or a scratch's length) is drawn within ``sizes_mm[kind]``; the
    record's kind and main-extent parameter agree with it."""
    kind, (lo, hi) = kr
    d = make_defects(NOMINAL_MESH, [kind], np.random.default_rng(seed), {kind: (lo, hi)})[0]
    assert d.kind == d.record.kind == kind
    assert lo <= d.record.size_mm <= hi
    main = "length_mm" if kind == "scratch" else "diameter_mm"
    assert d.record.params[main] == pytest.approx(d.record.size_mm, abs=1e-3)
    assert d.op == ("add" if kind == "bulge" else "remove")


def test_default_sizes_follow_the_registry() -> None:
    """Without ``sizes_mm`` each kind uses its registered default range."""
    for kind in KINDS:
        lo, hi = DEFECT_KINDS[kind].default_size_mm
        for seed in range(5):
            d = make_defects(NOMINAL_MESH, [kind], np.random.default_rng(seed))[0]
            assert lo <= d.record.size_mm <= hi


@pytest.mark.parametrize("kind", KINDS)
@FEW
@given(seed=SEEDS)
def test_missing_material_is_the_removal_tools_interior(kind: str, seed: int) -> None:
    """``missing_material`` is True in the core of a removing tool, False for an adding one,
    and False far from the part."""
    part = _instance(kind, seed)
    tool = part.defects[0].tool
    core = _tool_points(tool, 0.5, 20, np.random.default_rng(seed))
    far = core + np.array([0.5, -0.3, 0.4])
    inside = part.missing_material(core)
    if kind in REMOVING:
        assert inside.all()
    else:
        assert not inside.any()
    assert not part.missing_material(far).any()
    assert part.missing_material(np.zeros((0, 3))).shape == (0,)


@FEW
@given(SEEDS)
def test_hole_is_drilled_into_the_part(seed: int) -> None:
    """A hole's cylinder starts outside the surface and grows into the material: points on
    its axis just below the surface are inside the nominal solid, those above are not."""
    d = make_defects(NOMINAL_MESH, ["hole"], np.random.default_rng(seed))[0]
    assert d.tool.shape == "cylinder"
    depth = d.record.params["depth_mm"]
    assert d.tool.size_m[2] == pytest.approx((depth + 1.0) * MM, abs=1e-6)  # depth is rounded
    # The tool frame starts 1 mm outside the surface and points into the part along +z.
    below = (1.0 + np.linspace(0.3, 0.5 * depth, 8)) * MM
    above = (1.0 - np.linspace(0.3, 0.9, 4)) * MM
    axis_below = transform_points(d.tool.T_obj_tool, np.c_[np.zeros(8), np.zeros(8), below])
    axis_above = transform_points(d.tool.T_obj_tool, np.c_[np.zeros(4), np.zeros(4), above])
    assert _inside(NOMINAL_MESH, axis_below).mean() >= 0.75
    assert not _inside(NOMINAL_MESH, axis_above).any()
    # The surface point of the record is where the axis crosses the surface.
    site = np.asarray(d.record.params["position_mm"]) * MM
    on_axis = transform_points(d.tool.T_obj_tool, np.array([[0.0, 0.0, 1.0 * MM]]))[0]
    np.testing.assert_allclose(on_axis, site, atol=1e-6)


def test_point_in_solid_helper_agrees_with_the_part() -> None:
    """Sanity check of the ray-parity helper on known points of the default part."""
    pts = np.array(
        [
            [0.0, 0.0, 0.015],
            [0.035, 0.0, 0.005],
            [0.0, 0.022, 0.02],
            [0.0, 0.0, 0.05],
            [0.029, 0.029, 0.005],
        ]
    )
    # bore axis, flange plate, hub wall, above the part, inside a bolt hole
    assert _inside(NOMINAL_MESH, pts).tolist() == [False, True, True, False, False]


def test_several_defects_get_their_own_labels() -> None:
    """Defect i's faces carry label i + 1; no defects leaves every face nominal."""
    kinds = ["hole", "sink", "bulge"]
    defects = make_defects(NOMINAL_MESH, kinds, np.random.default_rng(7))
    part = build_part_instance("multi", CATEGORY, NOMINAL_SOLID, defects)
    assert part.mesh.is_watertight
    assert set(np.unique(part.face_labels).tolist()) == {0, 1, 2, 3}
    assert [d.kind for d in part.defects] == kinds
    clean = build_part_instance("clean", CATEGORY, NOMINAL_SOLID, [])
    assert not clean.face_labels.any()
    assert clean.mesh.volume == pytest.approx(NOMINAL_MESH.volume, rel=1e-9)
    assert not clean.missing_material(NOMINAL_MESH.vertices).any()


def test_unknown_defect_kind_is_a_spec_error() -> None:
    """An unregistered kind is named, with the allowed kinds."""
    with pytest.raises(SpecError, match=r"defects\.kinds.*'crack'.*bulge"):
        make_defects(NOMINAL_MESH, ["crack"], np.random.default_rng(0))


def test_defects_are_dataclasses_with_their_tools() -> None:
    """Scratches are texture defects with their own appearance; geometry kinds have none."""
    for kind in KINDS:
        d: Defect = make_defects(NOMINAL_MESH, [kind], np.random.default_rng(1))[0]
        assert (d.appearance == "scratch") == (kind == "scratch")
    scratch = make_defects(NOMINAL_MESH, ["scratch"], np.random.default_rng(2))[0]
    # Scratches lie on upward faces: the tool's normal axis is (almost) world +z.
    assert scratch.tool.T_obj_tool[2, 2] >= 0.99
