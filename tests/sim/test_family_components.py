"""Part families with sub-components: the joint housing (J6) and the screwed cover plate.

Both are built from their part cards; their bolts, screws and cover are separate solids
that fit their holes exactly, each has a wrong alternative, and their named features lie
on the part's surface.
"""

from __future__ import annotations

import dataclasses
import functools
from collections import Counter

import manifold3d as m3
import numpy as np
import pytest
import trimesh

from scenarios.interfaces import SpecError
from sim.parts import (
    DEFECT_SITE_MARGIN_MM,
    MM,
    PartModel,
    build_model,
    component_group,
    design_params,
    get_family,
    make_params,
    manifold_to_trimesh,
    union_model,
)

FAMILIES = ("joint_housing", "cover_plate")
SEEDS = range(50)
FEW_SEEDS = (0, 1, 2, 3)
REL = 1e-6


@functools.cache
def _nominal(family: str) -> PartModel:
    return build_model(family, make_params(family))


def _design(family: str, seed: int) -> PartModel:
    return build_model(family, design_params(family, {}, 1.0, np.random.default_rng(seed)))


def _ok(solid: m3.Manifold) -> bool:
    return not solid.is_empty() and solid.status() == m3.Error.NoError


def _surface_distance(mesh: trimesh.Trimesh, points: np.ndarray) -> np.ndarray:
    """Distance from each point to the mesh surface (metres), by exact point-triangle
    distances over the triangles whose padded bounds hold the point (trimesh's
    ``proximity.closest_point`` needs rtree, which the project does not depend on)."""
    tri = mesh.triangles
    pad = 1e-3  # 1 mm: features are meant to be within 0.5 mm
    lo, hi = tri.min(axis=1) - pad, tri.max(axis=1) + pad
    out = np.full(len(points), np.inf)
    for i, p in enumerate(points):
        near = np.all((p >= lo) & (p <= hi), axis=1)
        if not near.any():
            continue
        q = trimesh.triangles.closest_point(tri[near], np.repeat(p[None], near.sum(), axis=0))
        out[i] = np.linalg.norm(q - p, axis=1).min()
    return out


# --------------------------------------------------------------------------------------------
# Cards
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_card_matches_the_parameters_and_the_model(family: str) -> None:
    """Every parameter has a card dimension with a nominal value inside a range (counts
    integer with no tolerance, lengths toleranced); the card's components, counts and
    features are the nominal model's; both families are novel test categories."""
    fam = get_family(family)
    card = fam.card
    assert card.split == "novel"
    assert {f.name for f in dataclasses.fields(fam.params_type)} == set(card.dimensions)
    for f in dataclasses.fields(fam.params_type):
        dim = card.dimensions[f.name]
        if f.metadata["kind"] is int:
            assert dim.integer and dim.tolerance == 0.0, f.name
        else:
            assert dim.range is not None and 0 < dim.tolerance <= 0.5, f.name
        if dim.range is not None:
            assert dim.range[0] <= dim.nominal <= dim.range[1], f.name
    model = _nominal(family)
    groups = Counter(component_group(name) for name in model.components)
    assert groups == {c.name: c.count for c in card.components}
    assert set(model.features) == set(card.features)


def test_joint_housing_card_names_bolts_and_a_cover() -> None:
    """The J6 housing is cast aluminium with steel bolts ``bolt_1..N`` and one ``cover``."""
    card = get_family("joint_housing").card
    model = _nominal("joint_housing")
    n = make_params("joint_housing").bolt_count
    assert card.material == "cast_aluminium"
    assert list(model.components) == [f"bolt_{k}" for k in range(1, n + 1)] + ["cover"]
    assert card.component_material("bolt_1") == "machined_steel"


def test_cover_plate_card_names_its_screws() -> None:
    """The cover plate has steel screws ``screw_1..N`` and no other component."""
    card = get_family("cover_plate").card
    n = make_params("cover_plate").screw_count
    assert list(_nominal("cover_plate").components) == [f"screw_{k}" for k in range(1, n + 1)]
    assert card.component_material("screw_1") == "machined_steel"


# --------------------------------------------------------------------------------------------
# Solids
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_nominal_part_is_a_watertight_solid_standing_on_the_table(family: str) -> None:
    """The nominal part is closed, 30-150 mm across, centred on z, standing on z = 0, and
    its volume is the sum of the body's and the components' (they only touch)."""
    model = _nominal(family)
    whole = union_model(model)
    mesh, ids = manifold_to_trimesh(whole)
    assert mesh.is_watertight and len(ids) == len(mesh.faces)
    size = (mesh.bounds[1] - mesh.bounds[0]) / MM
    assert 30.0 <= size.max() <= 150.0
    assert mesh.bounds[0, 2] == pytest.approx(0.0, abs=1e-9)
    parts = model.body.volume() + sum(c.volume() for c in model.components.values())
    assert whole.volume() == pytest.approx(parts, rel=REL)
    assert mesh.volume == pytest.approx(whole.volume() * MM**3, rel=1e-6)


@pytest.mark.parametrize("family", FAMILIES)
def test_seeded_designs_across_the_card_ranges_build_watertight(family: str) -> None:
    """Designs drawn over the whole card range are valid and build closed parts whose
    components touch the body without overlapping it."""
    shapes = set()
    for seed in SEEDS:
        params = design_params(family, {}, 1.0, np.random.default_rng(seed))
        model = build_model(family, params)
        whole = union_model(model)
        mesh, _ = manifold_to_trimesh(whole)
        assert mesh.is_watertight, seed
        assert 30.0 <= ((mesh.bounds[1] - mesh.bounds[0]) / MM).max() <= 150.0
        parts = model.body.volume() + sum(c.volume() for c in model.components.values())
        assert whole.volume() == pytest.approx(parts, rel=REL), seed
        shapes.add(round(whole.volume(), 3))
    assert len(shapes) == len(SEEDS)  # distinct designs


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("seed", [None, *FEW_SEEDS])
def test_removing_a_component_leaves_its_hole(family: str, seed: int | None) -> None:
    """Each component is one connected solid; taking it out of the whole part leaves a valid
    solid exactly its volume lighter, and the body alone is left where it sat (its hole or
    pocket, not a filled patch)."""
    model = _nominal(family) if seed is None else _design(family, seed)
    whole = union_model(model)
    for name, comp in model.components.items():
        assert _ok(comp) and len(comp.decompose()) == 1, name
        rest = whole - comp
        assert _ok(rest), name
        assert whole.volume() - rest.volume() == pytest.approx(comp.volume(), rel=REL), name
        assert (model.body ^ comp).volume() < REL * comp.volume(), name
        # What the component filled is empty in the rest: the hole is open.
        assert (rest ^ comp).volume() < REL * comp.volume(), name
        mesh, _ = manifold_to_trimesh(rest)
        assert mesh.is_watertight, name


@pytest.mark.parametrize("family", FAMILIES)
def test_every_component_has_a_different_alternative_in_its_place(family: str) -> None:
    """Each component has a wrong alternative: a valid solid of another shape that shares
    the component's place (its shaft or spigot) and fits the body without overlapping it."""
    model = _nominal(family)
    assert set(model.alternatives) == set(model.components)
    for name, comp in model.components.items():
        alt = model.alternatives[name]
        assert _ok(alt), name
        differ = (alt - comp).volume() + (comp - alt).volume()
        assert differ > 0.05 * comp.volume() or differ > 5.0, name  # mm^3
        assert (alt ^ comp).volume() > 0.3 * min(alt.volume(), comp.volume()), name
        assert (model.body ^ alt).volume() < REL * alt.volume(), name
        swapped = (union_model(model) - comp) + alt
        assert _ok(swapped), name


def test_joint_housing_cover_is_not_axisymmetric() -> None:
    """The cover turned about the part axis (by one bolt pitch, so the bolt holes line up
    again) is a different solid: a cover fitted the wrong way round is visible."""
    model = _nominal("joint_housing")
    cover = model.components["cover"]
    n = make_params("joint_housing").bolt_count
    turned = cover.rotate((0.0, 0.0, 360.0 / n))
    assert (cover - turned).volume() > 100.0  # mm^3: the cable gland moved


# --------------------------------------------------------------------------------------------
# Features and rules
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("seed", [None, 0, 1])
def test_features_lie_on_the_surface_with_unit_normals(family: str, seed: int | None) -> None:
    """Every feature site is within 0.5 mm of the whole part's surface, above the lowest
    DEFECT_SITE_MARGIN_MM, with unit normals and unit tangents across the normal."""
    model = _nominal(family) if seed is None else _design(family, seed)
    mesh, _ = manifold_to_trimesh(union_model(model))
    assert model.features
    for name, feat in model.features.items():
        dist = _surface_distance(mesh, feat.positions * MM) / MM
        assert dist.max() < 0.5, (name, float(dist.max()))
        assert feat.positions[:, 2].min() > DEFECT_SITE_MARGIN_MM, name
        np.testing.assert_allclose(np.linalg.norm(feat.normals, axis=1), 1.0, atol=1e-9)
        assert feat.tangents is not None
        assert np.abs(np.sum(feat.tangents * feat.normals, axis=1)).max() < 1e-9, name


@pytest.mark.parametrize(
    ("family", "overrides", "name"),
    [
        ("joint_housing", {"bolt_count": 13}, "bolt_count"),
        ("joint_housing", {"cover_diameter_mm": 56.0}, "cover_diameter_mm"),  # heads overhang
        ("joint_housing", {"bolt_circle_diameter_mm": 44.0}, "bolt_circle_diameter_mm"),
        ("joint_housing", {"boss_bore_depth_mm": 13.0}, "boss_bore_depth_mm"),  # into the drum
        (
            "joint_housing",  # the gland on the heads beside it
            {"bolt_count": 6, "gland_diameter_mm": 18.0, "gland_offset_mm": 18.0},
            "gland_offset_mm",
        ),
        ("joint_housing", {"bolt_length_mm": 7.0}, "bolt_length_mm"),  # no thread in the body
        ("joint_housing", {"mount_hole_offset_mm": 30.0}, "mount_hole_offset_mm"),  # in fillet
        ("cover_plate", {"screw_count": 5}, "screw_count"),  # not two rows
        ("cover_plate", {"window_width_mm": 40.0}, "window_width_mm"),  # under the heads
        ("cover_plate", {"screw_length_mm": 30.0}, "screw_length_mm"),  # through the base
        ("cover_plate", {"corner_radius_mm": 31.0}, "corner_radius_mm"),  # corners meet
        ("cover_plate", {"corner_radius_mm": 20.0}, "screw_inset_mm"),  # heads off the corner
    ],
)
def test_impossible_designs_are_spec_errors_naming_the_parameter(
    family: str, overrides: dict[str, float], name: str
) -> None:
    """Each rule between parameters names the parameter that breaks it."""
    with pytest.raises(SpecError, match=rf"part\.params\.{name}\b"):
        make_params(family, overrides)
