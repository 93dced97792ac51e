"""Tests of the part families moulded_ring, spur_gear, bracket and pipe_elbow (sim.parts):
each builds a valid watertight solid standing on the table, its card matches its parameters,
impossible parameters are refused by name, and its named features lie on its surface."""

from __future__ import annotations

from dataclasses import fields

import manifold3d as m3
import numpy as np
import pytest
import trimesh

import sim.parts as P
from scenarios.interfaces import SpecError

FAMILIES = ("moulded_ring", "spur_gear", "bracket", "pipe_elbow")
SEEDS = (0, 1, 2, 3)
MM = P.MM

# One impossible value per family, with the parameter the refusal must name.
IMPOSSIBLE = {
    "moulded_ring": ("inner_diameter_mm", 48.0),  # leaves a 1 mm wall
    "spur_gear": ("hub_diameter_mm", 80.0),  # wider than the root circle
    "bracket": ("slot_length_mm", 60.0),  # longer than the plate
    "pipe_elbow": ("bolt_circle_diameter_mm", 40.0),  # bolt holes in the neck
}


def _mesh(family: str, params: object) -> tuple[P.PartModel, trimesh.Trimesh]:
    model = P.build_model(family, params)
    mesh, _ = P.manifold_to_trimesh(P.union_model(model))
    return model, mesh


def _designs(family: str) -> list[object]:
    """The nominal design and a few seeded designs drawn across the card's whole ranges."""
    out = [P.make_params(family)]
    out += [P.design_params(family, {}, 1.0, np.random.default_rng(s)) for s in SEEDS]
    return out


def _surface_distance(mesh: trimesh.Trimesh, points: np.ndarray) -> np.ndarray:
    """Distance of each point to the mesh surface (brute force: trimesh's own
    ``proximity.closest_point`` needs rtree, which the project does not depend on)."""
    tri = mesh.triangles
    out = np.empty(len(points))
    for i, p in enumerate(np.asarray(points, dtype=np.float64)):
        q = trimesh.triangles.closest_point(tri, np.broadcast_to(p, (len(tri), 3)))
        out[i] = np.sqrt(np.min(np.sum((q - p) ** 2, axis=1)))
    return out


def _inside(mesh: trimesh.Trimesh, points: np.ndarray) -> np.ndarray:
    """Point-in-solid by ray parity (Moller-Trumbore along a generic direction): (N,) bool."""
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
        hit = ok & (u >= 0) & (v >= 0) & (u + v <= 1) & (t > 0)
        out.append(bool(np.count_nonzero(hit) % 2))
    return np.array(out)


@pytest.mark.parametrize("family", FAMILIES)
def test_family_builds_a_valid_watertight_solid(family: str) -> None:
    rng = np.random.default_rng(7)
    built = [P.as_built_params(family, d, 1.0, rng) for d in _designs(family)]
    for params in _designs(family) + built:
        model, mesh = _mesh(family, params)
        assert model.body.status() == m3.Error.NoError
        assert not model.body.is_empty()
        assert mesh.is_watertight and mesh.is_winding_consistent
        assert mesh.volume > 0
        assert len(model.body.decompose()) == 1  # one piece: no rib or boss left floating
        # No degenerate faces: every face has a normal (the defect code needs them).
        assert np.all(np.linalg.norm(mesh.face_normals, axis=1) > 0.5)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("segments", [12, 13, 128])
def test_coarse_or_fine_tessellation_builds_one_valid_solid(family: str, segments: int) -> None:
    model, mesh = _mesh(family, P.make_params(family, {"segments": segments}))
    assert mesh.is_watertight
    assert len(model.body.decompose()) == 1


@pytest.mark.parametrize("family", FAMILIES)
def test_family_stands_on_the_table_centred_and_stable(family: str) -> None:
    for params in _designs(family):
        _, mesh = _mesh(family, params)
        assert abs(mesh.bounds[0, 2]) < 1e-9
        foot = mesh.vertices[mesh.vertices[:, 2] < 1e-9, :2]
        lo, hi = foot.min(axis=0), foot.max(axis=0)
        size = float(np.max(hi - lo))
        # Centred: a gear with an odd tooth count is off by half a tooth depth at most.
        assert np.all(np.abs((lo + hi) / 2) < 0.05 * size)
        # Stable: the centre of mass is over the footprint, well inside it.
        com = mesh.center_mass[:2]
        assert np.all(com > lo + 0.1 * (hi - lo)) and np.all(com < hi - 0.1 * (hi - lo))
        # Sizes of a part for the inspection cell: 30-160 mm across.
        assert 0.025 < float(np.max(mesh.extents)) < 0.16


@pytest.mark.parametrize("family", FAMILIES)
def test_card_matches_the_parameters_and_the_features(family: str) -> None:
    fam = P.get_family(family)
    card = fam.card
    assert card.family == family and card.split == "base"
    by_name = {f.name: f for f in fields(fam.params_type)}
    assert set(card.dimensions) == set(by_name)
    for name, dim in card.dimensions.items():
        is_count = by_name[name].metadata.get("kind") is int
        assert dim.integer == is_count, name
        if is_count:
            assert dim.tolerance == 0.0, name
    model = P.build_model(family, P.make_params(family))
    assert set(card.features) == set(model.features)
    # The nominal design is valid and every parameter is used at its card value.
    params = P.make_params(family)
    for name, dim in card.dimensions.items():
        assert getattr(params, name) == pytest.approx(dim.nominal)


@pytest.mark.parametrize("family", FAMILIES)
def test_impossible_parameter_is_refused_by_name(family: str) -> None:
    name, bad = IMPOSSIBLE[family]
    with pytest.raises(SpecError, match=rf"part\.params\.{name}"):
        P.make_params(family, {name: bad})
    with pytest.raises(SpecError, match=r"part\.params\.segments"):
        P.make_params(family, {"segments": 12.5})


@pytest.mark.parametrize("family", FAMILIES)
def test_features_lie_on_the_surface_with_outward_normals(family: str) -> None:
    for params in _designs(family)[:3]:
        model, mesh = _mesh(family, params)
        for name, feat in model.features.items():
            # An even spread of the sites (the brute-force distance and parity tests below
            # cost sites x faces).
            k = np.unique(np.linspace(0, len(feat.positions) - 1, 24).astype(int))
            pos, nrm = feat.positions[k] * MM, feat.normals[k]
            dist = _surface_distance(mesh, pos)
            assert dist.max() < 0.5 * MM, (name, dist.max() / MM)
            # Above the strip the part stands on, where defects are placed.
            assert feat.positions[:, 2].min() >= P.DEFECT_SITE_MARGIN_MM, name
            # Normals point out of the solid: just off the surface along the normal is
            # outside, just behind it inside.
            step = 0.3 * MM * nrm
            assert not _inside(mesh, pos + step).any(), name
            assert _inside(mesh, pos - step).all(), name
            if feat.tangents is not None:
                assert np.allclose(np.sum(feat.tangents * feat.normals, axis=1), 0, atol=1e-9)
