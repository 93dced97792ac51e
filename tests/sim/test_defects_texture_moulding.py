"""Tests of the texture (stain, corrosion, flow marks) and moulding (short shot, flash,
residual string, dust particle) defect kinds and of their real-render materials."""

from __future__ import annotations

import functools

import manifold3d as m3
import numpy as np
import pytest
import trimesh
from scipy.spatial import cKDTree

from sim.appearance import MATERIAL_CLASSES, defect_material
from sim.defects import (
    DEFECT_KINDS,
    SHARP_EDGE_DEG,
    Defect,
    PartContext,
    PartInstance,
    build_part_instance,
    make_defects,
    part_context,
)
from sim.parts import MM, Feature, PartModel, build_model, make_params
from sim.render import FINISHES

CATEGORY = "flange_bearing_seat"
TEXTURE = ("stain", "corrosion", "flow_marks")
MOULDING = ("short_shot", "flash", "residual_string", "dust_particle")
KINDS = TEXTURE + MOULDING
PAINTED = TEXTURE  # kinds with a paint step: no vertex outside the patch may move
SEEDS = (0, 1, 2)
APPEARANCES = ("stain", "corrosion", "flow_marks", "dust")


@functools.cache
def _flange() -> tuple[PartModel, PartContext]:
    model = build_model(CATEGORY, make_params(CATEGORY))
    return model, part_context(model)


@functools.cache
def _built(kind: str, seed: int) -> tuple[list[Defect], PartInstance]:
    model, ctx = _flange()
    defects = make_defects(ctx, [kind], np.random.default_rng(seed))
    return defects, build_part_instance(f"{kind}-{seed}", CATEGORY, model, defects)


def _labelled_vertices(inst: PartInstance) -> np.ndarray:
    on = np.zeros(len(inst.mesh.vertices), dtype=bool)
    on[inst.mesh.faces[inst.face_labels == 1].ravel()] = True
    return on


def _block(features: dict[str, Feature]) -> PartModel:
    """A 40 x 30 x 10 mm block standing on the table, with hand-made features."""
    body = m3.Manifold.cube((40.0, 30.0, 10.0), center=True).translate((0.0, 0.0, 5.0))
    return PartModel(body, features=features)


# Sites on the block: the middle of its top +x edge (the flow end) and the middle of its
# +x face (a parting line at mid-height).
def _feature(pos: list[float], normal: list[float], tangent: list[float]) -> Feature:
    return Feature(np.array([pos]), np.array([normal]), np.array([tangent]))


FLOW_END = _feature([20.0, 0.0, 10.0], [1.0, 0.0, 1.0], [0.0, 1.0, 0.0])
PARTING = _feature([20.0, 0.0, 5.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0])


# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------


def test_kinds_are_registered_in_their_groups() -> None:
    for kind in TEXTURE:
        assert DEFECT_KINDS[kind].group == "texture"
    for kind in MOULDING:
        assert DEFECT_KINDS[kind].group == "moulding"
    for kind in KINDS:
        spec = DEFECT_KINDS[kind]
        assert spec.description
        lo, hi = spec.default_size_mm
        assert 0 < lo < hi
    assert DEFECT_KINDS["short_shot"].placement == "edge"
    assert DEFECT_KINDS["flash"].placement == "edge"
    assert DEFECT_KINDS["dust_particle"].min_normal_z >= 0.5


# --------------------------------------------------------------------------------------------
# Geometry and ground truth
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("kind", KINDS)
def test_part_stays_one_watertight_solid_with_labelled_defect_faces(kind: str, seed: int) -> None:
    defects, inst = _built(kind, seed)
    _, ctx = _flange()
    assert inst.mesh.is_watertight
    assert np.any(inst.face_labels == 1)
    assert set(np.unique(inst.face_labels).tolist()) <= {0, 1}
    # No extra shells: no cut faces left inside the part, no floating piece or grain.
    assert inst.mesh.body_count == ctx.mesh.body_count == 1
    rec = defects[0].record
    assert rec.kind == kind
    assert len(rec.params["position_mm"]) == 3


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("kind", PAINTED)
def test_paint_moves_no_vertex_outside_the_patch(kind: str, seed: int) -> None:
    _, inst = _built(kind, seed)
    _, ctx = _flange()
    free = inst.mesh.vertices[~_labelled_vertices(inst)]
    dist, _ = cKDTree(ctx.mesh.vertices).query(free)
    assert dist.max() <= 1e-9


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("kind", ("stain", "flow_marks"))
def test_paint_only_changes_no_geometry(kind: str, seed: int) -> None:
    _, inst = _built(kind, seed)
    _, ctx = _flange()
    assert inst.mesh.area == pytest.approx(ctx.mesh.area, abs=1e-10)
    assert inst.mesh.volume == pytest.approx(ctx.mesh.volume, abs=1e-12)
    assert not inst.removes_material


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("kind", MOULDING)
def test_the_surface_outside_the_defect_stays_on_the_as_built_part(kind: str, seed: int) -> None:
    # Booleans may add vertices to faces they border (re-triangulating them), never move
    # the surface: every vertex not on the defect lies on the as-built surface.
    _, inst = _built(kind, seed)
    _, ctx = _flange()
    free = inst.mesh.vertices[~_labelled_vertices(inst)]
    dist, _ = cKDTree(ctx.mesh.vertices).query(free)
    new = free[dist > 1e-9]
    for p in new:
        tri = ctx.mesh.triangles
        closest = trimesh.triangles.closest_point(tri, np.repeat(p[None], len(tri), axis=0))
        assert np.linalg.norm(closest - p, axis=1).min() <= 1e-9


@pytest.mark.parametrize("kind", KINDS)
def test_same_seed_gives_the_same_mesh_bytes(kind: str) -> None:
    model = build_model(CATEGORY, make_params(CATEGORY))
    out = []
    for _ in range(2):
        ctx = part_context(model)
        d = make_defects(ctx, [kind], np.random.default_rng(11))
        inst = build_part_instance("p", CATEGORY, model, d)
        out.append(
            (
                inst.mesh.vertices.tobytes(),
                inst.mesh.faces.tobytes(),
                inst.face_labels.tobytes(),
                d[0].record,
            )
        )
    assert out[0] == out[1]
    other = make_defects(part_context(model), [kind], np.random.default_rng(12))
    assert other[0].record != out[0][3]


SIZES = {
    "stain": (5.0, 6.0),
    "corrosion": (2.0, 2.5),
    "flow_marks": (10.0, 12.0),
    "short_shot": (6.0, 7.0),
    "flash": (3.0, 3.5),
    "residual_string": (4.0, 4.5),
    "dust_particle": (0.3, 0.4),
}


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("kind", KINDS)
def test_size_is_in_the_requested_range(kind: str, seed: int) -> None:
    _, ctx = _flange()
    lo, hi = SIZES[kind]
    (d,) = make_defects(ctx, [kind], np.random.default_rng(seed), {kind: (lo, hi)})
    assert lo <= d.record.size_mm <= hi
    if kind == "dust_particle":
        assert all(lo <= g <= hi for g in d.record.params["grain_sizes_mm"])
        assert 1 <= d.record.params["grains"] <= 5
    if kind in ("stain", "corrosion"):
        assert d.record.params["diameter_mm"] == pytest.approx(d.record.size_mm, abs=1e-3)
    if kind == "corrosion":  # a 2 mm spot still has its pits, smaller
        assert d.record.params["pits"] >= 3
        assert max(d.record.params["pit_radii_mm"]) <= 0.12 * d.record.size_mm


def test_paint_patches_have_the_drawn_extent() -> None:
    # The patch on a flat face spans exactly the drawn diameter (its outline's extent).
    model = _block({"top": _feature([0.0, 0.0, 10.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0])})
    ctx = part_context(model)
    for seed in SEEDS:
        d = make_defects(
            ctx, ["stain"], np.random.default_rng(seed), {"stain": (6.0, 8.0)}, {"stain": "top"}
        )
        inst = build_part_instance("p", "block", model, d)
        pts = inst.mesh.vertices[_labelled_vertices(inst)] / MM
        assert np.allclose(pts[:, 2], 10.0)
        span = np.sqrt(((pts[:, None] - pts[None]) ** 2).sum(-1).max())
        assert span == pytest.approx(d[0].record.size_mm, rel=1e-6)


@pytest.mark.parametrize("seed", SEEDS)
def test_corrosion_pits_lie_inside_its_patch(seed: int) -> None:
    defects, inst = _built("corrosion", seed)
    rec = defects[0].record
    assert 3 <= rec.params["pits"] <= 10
    assert all(0.1 <= r <= 0.4 for r in rec.params["pit_radii_mm"])
    assert inst.removes_material and inst.missing_labels is not None
    # Pit faces are inside the part's original volume and all labelled.
    steps = defects[0].steps
    assert [s.op for s in steps] == ["paint", "remove"]


@pytest.mark.parametrize("seed", SEEDS)
def test_flash_and_short_shot_change_volume_the_right_way(seed: int) -> None:
    _, ctx = _flange()
    _, flash = _built("flash", seed)
    _, short = _built("short_shot", seed)
    assert flash.mesh.volume > ctx.mesh.volume
    assert short.mesh.volume < ctx.mesh.volume
    assert short.removes_material and not flash.removes_material


@pytest.mark.parametrize("seed", SEEDS)
def test_flash_is_a_thin_fin(seed: int) -> None:
    defects, _ = _built("flash", seed)
    p = defects[0].record.params
    assert 0.1 <= p["thickness_mm"] <= 0.3
    assert 0.1 <= p["protrusion_mm"] <= 2.0


@pytest.mark.parametrize("seed", SEEDS)
def test_residual_string_lies_on_the_part_not_through_it(seed: int) -> None:
    model, ctx = _flange()
    defects, inst = _built("residual_string", seed)
    p = defects[0].record.params
    assert 0.1 <= p["diameter_mm"] <= 0.3
    tube = defects[0].steps[0].solid
    r = p["diameter_mm"] / 2
    buried = (model.body ^ tube).volume()
    # Only its stuck end (well under a millimetre of it) is inside the part.
    assert 0.0 < buried < np.pi * r * r * 0.8
    assert tube.volume() == pytest.approx(np.pi * r * r * p["length_mm"], rel=0.1)


# --------------------------------------------------------------------------------------------
# Placement at the part's features
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
def test_short_shot_goes_to_the_flow_end_and_flash_to_the_parting_line(seed: int) -> None:
    model = _block({"flow_end": FLOW_END, "parting_line": PARTING})
    ctx = part_context(model)
    (short,) = make_defects(ctx, ["short_shot"], np.random.default_rng(seed))
    (flash,) = make_defects(ctx, ["flash"], np.random.default_rng(seed))
    assert short.record.params["position_mm"] == [20.0, 0.0, 10.0]
    assert flash.record.params["position_mm"] == [20.0, 0.0, 5.0]
    for d in (short, flash):
        inst = build_part_instance("p", "block", model, [d])
        assert inst.mesh.is_watertight and inst.mesh.body_count == 1
        near = inst.mesh.triangles_center[inst.face_labels == 1] / MM
        assert np.abs(near[:, 0] - 20.0).min() < 3.0


def test_an_explicit_feature_wins_over_the_preferred_one() -> None:
    model = _block({"flow_end": FLOW_END, "parting_line": PARTING})
    ctx = part_context(model)
    at = {"flash": "flow_end", "short_shot": "parting_line"}
    flash, short = make_defects(ctx, ["flash", "short_shot"], np.random.default_rng(0), at=at)
    assert flash.record.params["position_mm"] == [20.0, 0.0, 10.0]
    assert short.record.params["position_mm"] == [20.0, 0.0, 5.0]


@pytest.mark.parametrize("seed", SEEDS)
def test_without_the_feature_they_go_to_a_sharp_edge(seed: int) -> None:
    model = _block({})
    ctx = part_context(model)
    mesh = ctx.mesh
    sharp = (mesh.face_adjacency_angles > np.radians(SHARP_EDGE_DEG)) & mesh.face_adjacency_convex
    a, b = (mesh.vertices[mesh.face_adjacency_edges[sharp][:, i]] for i in (0, 1))
    for kind in ("short_shot", "flash"):
        (d,) = make_defects(ctx, [kind], np.random.default_rng(seed))
        p = np.array(d.record.params["position_mm"]) * MM
        t = np.clip(np.einsum("ij,ij->i", p - a, b - a) / np.einsum("ij,ij->i", b - a, b - a), 0, 1)
        dist = np.linalg.norm(a + t[:, None] * (b - a) - p, axis=1).min()
        assert dist < 1e-5  # the record rounds to a micrometre


def test_flash_follows_a_curved_edge() -> None:
    # On the hub rim (radius 25 mm) a 15 mm fin stays on the rim: its root never leaves it.
    model, ctx = _flange()
    (d,) = make_defects(
        ctx, ["flash"], np.random.default_rng(3), {"flash": (15.0, 15.0)}, {"flash": "hub_edge"}
    )
    inst = build_part_instance("p", CATEGORY, model, [d])
    assert inst.mesh.body_count == 1
    fin = inst.mesh.vertices[_labelled_vertices(inst)] / MM
    r = np.hypot(fin[:, 0], fin[:, 1])
    assert r.min() > 24.0 and r.max() < 27.5


# --------------------------------------------------------------------------------------------
# Real-render materials
# --------------------------------------------------------------------------------------------


def _look(kind: str, seed: int = 0) -> tuple[str, tuple[tuple[str, float], ...]]:
    kind_of = {
        "stain": "stain",
        "corrosion": "corrosion",
        "flow_marks": "flow_marks",
        "dust": "dust_particle",
    }
    defects, _ = _built(kind_of[kind], seed)
    d = defects[0]
    assert d.appearance == kind
    return d.appearance, d.look


def _lum(c: tuple[float, float, float]) -> float:
    return 0.2126 * c[0] + 0.7152 * c[1] + 0.0722 * c[2]


def test_appearances_are_finishes() -> None:
    for a in APPEARANCES:
        assert a in FINISHES
    _, inst = _built("residual_string", 0)
    assert _built("residual_string", 0)[0][0].appearance is None
    assert _built("flash", 0)[0][0].appearance is None
    assert _built("short_shot", 0)[0][0].appearance is None
    assert inst.defects[0].appearance is None


@pytest.mark.parametrize(
    "surface", ("machined_aluminium", "machined_steel", "cast_iron", "polymer_opaque")
)
def test_defect_material_gives_a_distinct_material_per_appearance(surface: str) -> None:
    base = MATERIAL_CLASSES[surface]
    mats = {}
    for a in APPEARANCES:
        appearance, look = _look(a)
        mat = defect_material(base, appearance, look)
        assert mat.finish == a
        assert mat == defect_material(base, appearance, look)  # deterministic
        assert mat.param("surf_roughness", -1.0) == pytest.approx(base.roughness)
        assert all(0.0 <= c <= 1.0 for c in mat.base_color)
        mats[a] = mat
    keys = {(m.base_color, m.metallic, m.roughness) for m in mats.values()}
    assert len(keys) == len(APPEARANCES)
    assert all(
        m.base_color != base.base_color or m.roughness != base.roughness for m in mats.values()
    )


def test_corrosion_is_rust_on_steel_and_iron_and_white_on_aluminium() -> None:
    appearance, look = _look("corrosion")
    for surface in ("machined_steel", "cast_iron"):
        rust = defect_material(MATERIAL_CLASSES[surface], appearance, look)
        r, g, b = rust.base_color
        assert r > 1.5 * g > 1.5 * b and rust.metallic == 0.0 and rust.roughness > 0.8
        assert rust.param("rust", 0.0) == 1.0
    for surface in ("machined_aluminium", "cast_aluminium"):
        white = defect_material(MATERIAL_CLASSES[surface], appearance, look)
        assert min(white.base_color) > 0.6 and max(white.base_color) - min(white.base_color) < 0.1
        assert white.metallic == 0.0 and white.param("rust", 1.0) == 0.0


def test_a_stain_darkens_and_yellows_bright_metal_and_shows_on_black_plastic() -> None:
    appearance, look = _look("stain")
    alu = MATERIAL_CLASSES["machined_aluminium"]
    stain = defect_material(alu, appearance, look)
    assert _lum(stain.base_color) < _lum(alu.base_color) - 0.05
    r, g, b = stain.base_color
    assert r > g > b  # yellow-brown
    # On black plastic a coolant stain is a lighter haze; any stain changes the gloss.
    black = MATERIAL_CLASSES["polymer_opaque"]
    on_black = defect_material(
        black, appearance, tuple(sorted({**dict(look), "tint": 1.0}.items()))
    )
    assert _lum(on_black.base_color) > _lum(black.base_color) + 0.02
    oil = defect_material(black, appearance, tuple(sorted({**dict(look), "tint": 0.0}.items())))
    assert abs(oil.roughness - black.roughness) > 0.03


def test_flow_marks_keep_the_material_and_dust_is_pale_matte_grey() -> None:
    appearance, look = _look("flow_marks")
    poly = MATERIAL_CLASSES["polymer_opaque"]
    fm = defect_material(poly, appearance, look)
    assert fm.metallic == poly.metallic
    assert np.abs(np.subtract(fm.base_color, poly.base_color)).max() < 0.1
    assert fm.roughness > poly.roughness
    assert {"spacing_mm", "gate_x", "dir_x", "contrast"} <= set(dict(fm.params))
    appearance, look = _look("dust")
    dust = defect_material(MATERIAL_CLASSES["machined_aluminium"], appearance, look)
    assert dust.metallic == 0.0 and dust.roughness > 0.9
    assert 0.4 < _lum(dust.base_color) < 0.8


def test_unknown_appearance_is_refused() -> None:
    with pytest.raises(ValueError, match="no real-render look"):
        defect_material(MATERIAL_CLASSES["machined_aluminium"], "glitter", ())
