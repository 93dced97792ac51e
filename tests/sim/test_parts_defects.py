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
    Step,
    build_part_instance,
    make_defects,
    part_context,
)
from sim.parts import (
    COMPONENT_LABEL,
    MM,
    PartModel,
    build_model,
    build_nominal_solid,
    make_params,
    manifold_to_trimesh,
)
from sim.parts.flange import FlangeBearingSeatParams

CATEGORY = "flange_bearing_seat"
# The kinds a part without sub-components takes (structural kinds are tested on a small
# assembly below). Moulding kinds are left to their own module's tests.
KINDS = sorted(
    k
    for k, v in DEFECT_KINDS.items()
    if v.group in ("geometric", "texture") and not v.needs_components
)
GEOMETRIC = sorted(k for k, v in DEFECT_KINDS.items() if v.group == "geometric")
SEEDS = st.integers(0, 2**32 - 1)
# Booleans take ~10 ms each; a handful of examples per property keeps the module fast.
FEW = settings(max_examples=6, deadline=None)

NOMINAL_MODEL = build_model(CATEGORY, make_params(CATEGORY))
NOMINAL_SOLID = build_nominal_solid(CATEGORY)
NOMINAL_MESH, _ = manifold_to_trimesh(NOMINAL_SOLID)
CTX = part_context(NOMINAL_MODEL)

# Requested size ranges per kind (mm), kept where a part of the default size stays sane,
# and the record parameter that carries the size.
SIZE_BOUNDS = {
    "bulge": ((2.0, 16.0), "diameter_mm"),
    "sink": ((2.0, 16.0), "diameter_mm"),
    "hole": ((1.5, 8.0), "diameter_mm"),
    "crack": ((3.0, 20.0), "length_mm"),
    "chip": ((2.0, 10.0), "length_mm"),
    "bend": ((5.0, 30.0), "length_mm"),
    "scratch": ((4.0, 30.0), "length_mm"),
}
# The boolean steps of each geometric kind.
GEOMETRIC_OPS = {
    "bulge": ("add",),
    "sink": ("remove",),
    "hole": ("remove",),
    "crack": ("remove",),
    "chip": ("remove",),
    "bend": ("remove", "add"),
}
#: A face centre this far (m) inside a tool on every side counts as deep inside it.
DEEP_M = 0.02 * MM


def _instance(
    kind: str, seed: int, sizes: dict[str, tuple[float, float]] | None = None
) -> PartInstance:
    defects = make_defects(CTX, [kind], np.random.default_rng(seed), sizes)
    return build_part_instance(f"{kind}-{seed}", CATEGORY, NOMINAL_MODEL, defects)


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
    for p in np.asarray(points, dtype=np.float64).reshape(-1, 3):
        s = p - v0
        u = f * np.einsum("ij,ij->i", s, h)
        q = np.cross(s, e1)
        v = f * (q @ d)
        t = f * np.einsum("ij,ij->i", e2, q)
        out.append(int(np.count_nonzero(ok & (u >= 0) & (v >= 0) & (u + v <= 1) & (t > 0))) % 2)
    return np.asarray(out, dtype=bool)


def _bounds_m(solid: m3.Manifold) -> tuple[np.ndarray, np.ndarray]:
    lo, hi = np.split(np.asarray(solid.bounding_box(), dtype=np.float64), 2)
    return lo * MM, hi * MM


def _in_boxes(points: np.ndarray, steps: list[Step], grow_m: float = 1e-6) -> np.ndarray:
    """(N,) bool: each point lies in the bounding box of one of ``steps``' solids, grown by
    ``grow_m`` on every side."""
    out = np.zeros(len(points), dtype=bool)
    for s in steps:
        lo, hi = _bounds_m(s.solid)
        out |= np.all((points >= lo - grow_m) & (points <= hi + grow_m), axis=1)
    return out


def _deep_inside(solid: m3.Manifold, points: np.ndarray, eps: float = DEEP_M) -> np.ndarray:
    """(N,) bool: each point and its six neighbours ``eps`` away along the axes are all
    inside ``solid``, i.e. the point lies inside, more than about ``eps`` from its surface."""
    points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    out = np.zeros(len(points), dtype=bool)
    lo, hi = _bounds_m(solid)
    near = np.flatnonzero(np.all((points >= lo) & (points <= hi), axis=1))
    if len(near) == 0:
        return out
    mesh, _ = manifold_to_trimesh(solid)
    offsets = np.vstack([np.zeros(3), eps * np.eye(3), -eps * np.eye(3)])
    probes = (points[near, None, :] + offsets[None]).reshape(-1, 3)
    out[near] = _inside(mesh, probes).reshape(len(near), len(offsets)).all(axis=1)
    return out


def _tool_bytes(d: Defect) -> list[bytes]:
    return [np.asarray(s.solid.to_mesh().vert_properties).tobytes() for s in d.steps]


def _hole_axis(d: Defect) -> tuple[np.ndarray, np.ndarray, float]:
    """The drilled cylinder of a hole defect: its outer cap centre (m, object frame), the
    unit axis pointing into the part and its length (m), read off the tool solid."""
    mesh, _ = manifold_to_trimesh(d.steps[0].solid)
    n = mesh.face_normals
    # A cap is the largest area of faces sharing one normal (up to the mesh's float32
    # precision); the side is 48 narrow strips.
    shared = (n @ n.T > 0.9999) @ mesh.area_faces
    top = n[int(np.argmax(shared))]

    def centre(sign: float) -> np.ndarray:
        faces = mesh.faces[n @ top * sign > 0.9999]
        return np.asarray(mesh.vertices[np.unique(faces)].mean(axis=0))

    a, b = centre(1.0), centre(-1.0)
    # The outer cap is the one near the surface point of the record (the other may lie
    # outside the part too, where a deep hole breaks through a wall).
    site = np.asarray(d.record.params["position_mm"]) * MM
    if np.linalg.norm(b - site) < np.linalg.norm(a - site):
        a, b = b, a
    length = float(np.linalg.norm(b - a))
    return a, (b - a) / length, length


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
    """The nominal part's volume is the plate + hub - bore - seat - bolts formula within 1 %
    (64-gon circles lose ~0.2 %), and its faces all come from one original solid."""
    p = make_params(CATEGORY)
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
    clean = build_part_instance("clean-labels", CATEGORY, NOMINAL_MODEL, [])
    assert not clean.face_labels.any()


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
    """Each geometric constraint names the parameter that breaks it (nominal values otherwise)."""
    with pytest.raises(SpecError, match=rf"part\.params\.{name}\b"):
        make_params(CATEGORY, {name: value})


def test_unknown_parameter_and_family_are_spec_errors() -> None:
    """Unknown parameter names and families are named in the SpecError."""
    with pytest.raises(SpecError, match=r"part\.params\.flange_colour"):
        make_params(CATEGORY, {"flange_colour": 1.0})
    with pytest.raises(SpecError, match=r"part family.*'teapot'.*flange_bearing_seat"):
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
    """Every kind yields a closed solid whose defect-made faces carry label 1; a defect that
    only adds material adds volume, one that removes and adds nothing removes it, a painted
    one keeps it; the nominal mesh of the instance is unchanged."""
    part = _instance(kind, seed)
    assert part.mesh.is_watertight
    assert part.face_labels.shape == (len(part.mesh.faces),)
    assert part.face_labels.dtype == np.int32
    assert set(np.unique(part.face_labels).tolist()) == {0, 1}
    dv = part.mesh.volume - NOMINAL_MESH.volume
    ops = {s.op for s in part.defects[0].steps}
    if ops == {"add"}:
        assert dv > 0
    elif "remove" in ops and "add" not in ops:
        assert dv < 0
    elif ops == {"paint"}:
        assert abs(dv) < 1e-3 * MM**3  # the surface is split, not moved
        assert part.mesh.area == pytest.approx(NOMINAL_MESH.area, abs=1e-3 * MM**2)
    # One body: no shell left over from re-joining the pieces of a cut (seed 0 of a stain
    # once left 15 flat shells on the flange's side, drawn over its surface).
    assert part.mesh.body_count == 1
    # The twin's nominal is the same surface (triangle order may differ).
    assert np.array_equal(part.nominal.vertices, NOMINAL_MESH.vertices)
    assert _triangle_set(part.nominal) == _triangle_set(NOMINAL_MESH)


@pytest.mark.parametrize("kind", KINDS)
@FEW
@given(seed=SEEDS)
def test_labelled_faces_lie_on_the_tool_surface(kind: str, seed: int) -> None:
    """Provenance is exact: label-1 faces lie on the defect's tool solids (within their
    bounding boxes grown by 1 um), and no face of another label lies deep inside a tool
    (the boolean took it away, swallowed it or painted it)."""
    part = _instance(kind, seed)
    steps = list(part.defects[0].steps)
    centres = part.mesh.triangles_center
    assert _in_boxes(centres[part.face_labels == 1], steps).all()
    others = centres[part.face_labels != 1]
    for step in steps:
        assert not _deep_inside(step.solid, others).any(), step.op


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
    assert _tool_bytes(a.defects[0]) == _tool_bytes(b.defects[0])
    if s1 != s2:
        c = make_defects(CTX, [kind], np.random.default_rng(s2))[0]
        assert c.record != a.defects[0].record
        assert _tool_bytes(c) != _tool_bytes(a.defects[0])


@st.composite
def kind_and_range(draw: st.DrawFn) -> tuple[str, tuple[float, float]]:
    kind = draw(st.sampled_from(sorted(k for k in SIZE_BOUNDS if k in DEFECT_KINDS)))
    lo_b, hi_b = SIZE_BOUNDS[kind][0]
    lo = draw(st.floats(lo_b, hi_b))
    hi = draw(st.floats(lo, hi_b))
    return kind, (lo, hi)


@settings(max_examples=25, deadline=None)
@given(kind_and_range(), SEEDS)
def test_record_size_lies_in_the_requested_range(
    kr: tuple[str, tuple[float, float]], seed: int
) -> None:
    """``size_mm`` (a diameter, or a length) is drawn within ``sizes_mm[kind]``; the record's
    kind and main-extent parameter agree with it, and a geometric kind's steps are its own."""
    kind, (lo, hi) = kr
    d = make_defects(CTX, [kind], np.random.default_rng(seed), {kind: (lo, hi)})[0]
    assert d.kind == d.record.kind == kind
    assert lo <= d.record.size_mm <= hi
    main = SIZE_BOUNDS[kind][1]
    assert d.record.params[main] == pytest.approx(d.record.size_mm, abs=1e-3)
    if kind in GEOMETRIC_OPS:
        assert tuple(s.op for s in d.steps) == GEOMETRIC_OPS[kind]
    assert d.removes == any(s.op == "remove" for s in d.steps)


def test_every_geometric_kind_has_its_steps() -> None:
    """The table of geometric kinds above covers the registry's geometric group."""
    assert set(GEOMETRIC) == set(GEOMETRIC_OPS)


def test_default_sizes_follow_the_registry() -> None:
    """Without ``sizes_mm`` each kind uses its registered default range."""
    for kind in KINDS:
        lo, hi = DEFECT_KINDS[kind].default_size_mm
        for seed in range(5):
            d = make_defects(CTX, [kind], np.random.default_rng(seed))[0]
            assert lo <= d.record.size_mm <= hi, kind


@pytest.mark.parametrize("kind", KINDS)
@FEW
@given(seed=SEEDS)
def test_missing_material_is_the_as_built_surface_in_the_removed_volume(
    kind: str, seed: int
) -> None:
    """``missing`` is the as-built (defect-free) surface, a closed solid of the as-built
    volume, whose faces labelled 1 lie in the removed volume (within the bounding box of a
    ``remove`` step, grown by 1 um) and cover some area; no face labelled 0 lies deep
    inside a removed volume. A defect that removes nothing has no missing material."""
    part = _instance(kind, seed)
    d = part.defects[0]
    removed = [s for s in d.steps if s.op == "remove"]
    if not removed:
        assert part.missing is None and part.missing_labels is None
        assert not part.removes_material
        return
    assert part.missing is not None and part.missing_labels is not None
    assert part.removes_material
    # (The split pieces are put back by a union that may keep the cut as an inner wall, or
    # leave a piece beside the rest: hidden inside the part, harmless to its label pass.)
    assert part.missing.is_watertight
    assert part.missing.volume == pytest.approx(NOMINAL_MESH.volume, rel=1e-9)
    labels = part.missing_labels
    assert labels.shape == (len(part.missing.faces),)
    assert set(np.unique(labels).tolist()) == {0, 1}
    centres = part.missing.triangles_center
    assert _in_boxes(centres[labels == 1], removed).all()
    assert part.missing.area_faces[labels == 1].sum() > 0
    for step in removed:
        assert not _deep_inside(step.solid, centres[labels == 0]).any()


@FEW
@given(SEEDS)
def test_hole_is_drilled_into_the_part(seed: int) -> None:
    """A hole's cylinder starts outside the surface and grows into the material: points on
    its axis just below the surface are inside the nominal solid, those above are not."""
    d = make_defects(CTX, ["hole"], np.random.default_rng(seed))[0]
    assert [s.op for s in d.steps] == ["remove"]
    depth = d.record.params["depth_mm"]
    start, axis, length = _hole_axis(d)
    assert length == pytest.approx((depth + 1.0) * MM, abs=1e-6)  # depth is rounded
    # The tool starts 1 mm outside the surface and points into the part.
    below = (1.0 + np.linspace(0.3, 0.5 * depth, 8)) * MM
    above = (1.0 - np.linspace(0.3, 0.9, 4)) * MM
    assert _inside(NOMINAL_MESH, start + below[:, None] * axis).mean() >= 0.75
    assert not _inside(NOMINAL_MESH, start + above[:, None] * axis).any()
    # The surface point of the record is where the axis crosses the surface.
    site = np.asarray(d.record.params["position_mm"]) * MM
    np.testing.assert_allclose(start + 1.0 * MM * axis, site, atol=1e-5)


@FEW
@given(SEEDS)
def test_crack_runs_through_its_site(seed: int) -> None:
    """The middle of a crack's wandering path is the site its record gives, so the slit
    opens on the face it was placed on (seed 98 once drifted whole into the seat wall and
    left a hidden void: material removed, nothing missing from any view)."""
    for s in (seed, 98):
        d = make_defects(CTX, ["crack"], np.random.default_rng(s))[0]
        site = np.asarray(d.record.params["position_mm"]) * MM
        mesh, _ = manifold_to_trimesh(d.steps[0].solid)
        assert _inside(mesh, site[None])[0], s


def test_point_in_solid_helper_agrees_with_the_part() -> None:
    """Sanity check of the ray-parity helper on known points of the nominal part."""
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
    """Defect i's faces carry label i + 1, in the real part and in the missing material;
    no defects leaves every face nominal and nothing missing."""
    kinds = ["hole", "sink", "bulge"]
    defects = make_defects(CTX, kinds, np.random.default_rng(7))
    part = build_part_instance("multi", CATEGORY, NOMINAL_MODEL, defects)
    assert part.mesh.is_watertight
    assert set(np.unique(part.face_labels).tolist()) == {0, 1, 2, 3}
    assert [d.kind for d in part.defects] == kinds
    # Only the hole and the sink removed material; the bulge has none missing.
    assert part.missing_labels is not None
    assert set(np.unique(part.missing_labels).tolist()) == {0, 1, 2}
    clean = build_part_instance("clean", CATEGORY, NOMINAL_MODEL, [])
    assert not clean.face_labels.any()
    assert clean.mesh.volume == pytest.approx(NOMINAL_MESH.volume, rel=1e-9)
    assert clean.missing is None and not clean.removes_material


def test_unknown_defect_kind_is_a_spec_error() -> None:
    """An unregistered kind is named, with the allowed kinds."""
    with pytest.raises(SpecError, match=r"defects\.kinds.*'dent'.*bulge"):
        make_defects(CTX, ["dent"], np.random.default_rng(0))


def test_structural_kind_needs_sub_components() -> None:
    """A structural kind on a part without sub-components is a SpecError naming it."""
    with pytest.raises(SpecError, match=r"defects\.kinds: missing_component needs"):
        make_defects(CTX, ["missing_component"], np.random.default_rng(0))


def test_defects_carry_their_appearance() -> None:
    """Texture defects have their own appearance (a scratch: ``scratch``); geometric kinds
    have none."""
    for kind in KINDS:
        d: Defect = make_defects(CTX, [kind], np.random.default_rng(1))[0]
        if DEFECT_KINDS[kind].group == "geometric":
            assert d.appearance is None, kind
        else:
            assert d.appearance is not None, kind
    scratch = make_defects(CTX, ["scratch"], np.random.default_rng(2))[0]
    assert scratch.appearance == "scratch"
    # Scratches lie on upward faces: the groove's thinnest axis is (almost) world z.
    verts = np.asarray(scratch.steps[0].solid.to_mesh().vert_properties)[:, :3]
    _, vecs = np.linalg.eigh(np.cov((verts - verts.mean(axis=0)).T))
    assert abs(vecs[2, 0]) >= 0.99


# --------------------------------------------------------------------------------------------
# Structural defects on a small assembly: a plate with two bolts in exact-fit holes
# --------------------------------------------------------------------------------------------


def _bolted_plate() -> PartModel:
    """A 60 x 60 x 10 mm plate with two 8 mm holes, each holding a hex-ish bolt (shank in
    the hole, a 12 mm head on top); a round socket head is the wrong alternative."""
    plate = m3.Manifold.cube((60.0, 60.0, 10.0)).translate((-30.0, -30.0, 0.0))
    comps, alts = {}, {}
    for i, x in enumerate((-15.0, 15.0), start=1):
        shank = m3.Manifold.cylinder(10.0, 4.0, circular_segments=32).translate((x, 0.0, 0.0))
        plate = plate - m3.Manifold.cylinder(12.0, 4.0, circular_segments=32).translate(
            (x, 0.0, -1.0)
        )
        head = m3.Manifold.cylinder(4.0, 6.0, circular_segments=6).translate((x, 0.0, 10.0))
        comps[f"bolt_{i}"] = shank + head
        socket = m3.Manifold.cylinder(6.0, 5.0, circular_segments=32).translate((x, 0.0, 10.0))
        alts[f"bolt_{i}"] = shank + socket
    return PartModel(plate, comps, alts)


BOLTED = _bolted_plate()
BOLTED_CTX = part_context(BOLTED)
STRUCTURAL = sorted(k for k, v in DEFECT_KINDS.items() if v.group == "structural")


def test_components_carry_their_own_labels() -> None:
    """Body faces are 0, component c's faces COMPONENT_LABEL + c, in the real part and in
    the twin's nominal."""
    part = build_part_instance("bolted", "plate", BOLTED, [])
    want = {0, COMPONENT_LABEL + 1, COMPONENT_LABEL + 2}
    assert set(np.unique(part.face_labels).tolist()) == want
    assert part.nominal_labels is not None
    assert set(np.unique(part.nominal_labels).tolist()) == want
    assert part.components == ("bolt_1", "bolt_2")


@pytest.mark.parametrize("kind", STRUCTURAL)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_structural_defects_label_their_faces(kind: str, seed: int) -> None:
    """A structural defect yields a closed solid; its faces carry label 1 and lie on its
    tools; removing kinds have missing material labelled 1 inside the removed component,
    and a missing component's own label is gone from the real part."""
    defects = make_defects(BOLTED_CTX, [kind], np.random.default_rng(seed))
    part = build_part_instance(f"bolted-{kind}-{seed}", "plate", BOLTED, defects)
    d = part.defects[0]
    assert part.mesh.is_watertight
    assert 1 in part.face_labels
    steps = list(d.steps)
    assert _in_boxes(part.mesh.triangles_center[part.face_labels == 1], steps).all()
    assert d.surface_label in (COMPONENT_LABEL + 1, COMPONENT_LABEL + 2)
    assert d.record.params["component"] in BOLTED.components
    removed = [s for s in steps if s.op == "remove"]
    if not removed:
        assert part.missing is None
        return
    assert part.missing is not None and part.missing_labels is not None
    centres = part.missing.triangles_center
    assert _in_boxes(centres[part.missing_labels == 1], removed).all()
    assert part.missing.area_faces[part.missing_labels == 1].sum() > 0
    if kind == "missing_component":
        assert d.surface_label not in part.face_labels


@pytest.mark.parametrize("kind", ["missing_component", "misplaced_component", "wrong_component"])
def test_a_removed_component_leaves_no_face_of_its_own(kind: str) -> None:
    """Taking a component out subtracts its own solid, whose surface coincides with it: any
    sliver of the component that survives the boolean is the defect's, never the
    component's (seed 248 of a varied joint housing left 3.4 mm^2 of a bolt labelled as
    the bolt before). Built the way a run builds it (``sim.cells.factory.build_part``)."""
    from scenarios.engine import plan_parts
    from scenarios.spec import parse_scenario
    from sim.cells.factory import build_part

    fam = {"family": "joint_housing", "variation": 0.5, "test_defective": 1, "kinds": [kind]}
    sc = parse_scenario({"name": "components", "seed": 248, "part": {"families": [fam]}})
    part = build_part(sc, 248, plan_parts(sc)[0])
    d = part.defects[0]
    assert d.surface_label > COMPONENT_LABEL
    assert d.surface_label not in part.face_labels
    assert part.mesh.is_watertight
