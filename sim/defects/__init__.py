"""Seeded defects over one ground-truth mechanism.

A defect is a short list of **steps** on the part's solid, each with a tool solid (mm,
object frame):

- ``add``: union (a bulge, flash, a dust grain, an extra bolt);
- ``remove``: difference (a dent, a hole, a chip, a missing bolt);
- ``paint``: the part's surface inside the tool is marked, its geometry unchanged (a stain,
  a corrosion spot, flow marks). The surface is split along the tool's boundary by the
  same boolean kernel and put back together, so the marked region follows the part's
  curvature exactly and no vertex moves.

manifold3d keeps the provenance of every triangle through booleans, so every face a step
makes (a tool's surface, a painted patch) carries that defect's label (index + 1), and
nothing outside it changes: the one mechanism that labels every kind.

Ground truth (docs/architecture.md): the real render's label pass shows the visible
defect faces; where a defect removed material, the as-built (defect-free) part is split by
the removed volumes the same way (``PartInstance.missing``), and its label pass at the
true pose shows the pixels where the missing material would be seen. A new kind adds a
generator (one module per group: ``geometric``, ``texture``, ``structural``,
``moulding``), never a new ground-truth path.

Sites: a kind places itself on the visible surface (area-weighted, upward enough,
above the table), on a sharp edge, at a sub-component, or at a named feature of the part
card (``defects.at`` in a scenario). Sizes are in millimetres at the interface.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

import manifold3d as m3
import numpy as np
import trimesh

from scenarios.interfaces import DefectRecord, GeometryError, SpecError, allowed, excerpt
from sim.geometry import make_pose
from sim.parts import (
    COMPONENT_LABEL,
    DEFECT_SITE_MARGIN_MM,
    MM,
    PartModel,
    mesh_labels,
)

StepOp = Literal["add", "remove", "paint"]
Placement = Literal["surface", "edge", "component"]
Group = Literal["geometric", "texture", "structural", "moulding"]
TOOL_SEGMENTS = 48
#: Edges whose faces meet at more than this angle are sharp (a chip's site).
SHARP_EDGE_DEG = 50.0


@dataclass(frozen=True)
class Step:
    """One boolean step of a defect: ``op`` with ``solid`` (mm, object frame)."""

    op: StepOp
    solid: m3.Manifold


@dataclass(frozen=True)
class Defect:
    """One injected defect: its steps, its record and how its faces look.

    ``appearance`` names the finish a real render gives its faces (``scratch``, ``stain``,
    ``corrosion``...; None: the material of the surface it is on) with ``look`` parameters
    (sorted name-value pairs, e.g. a scratch's direction); ``surface_label`` is the label of
    the surface it sits on (0 body, COMPONENT_LABEL + c a component), whose material its
    faces take when it has no appearance of its own.
    """

    kind: str
    steps: tuple[Step, ...]
    record: DefectRecord
    appearance: str | None = None
    look: tuple[tuple[str, float], ...] = ()
    surface_label: int = 0

    @property
    def removes(self) -> bool:
        """Whether the defect removes material (its ground truth includes missing material)."""
        return any(s.op == "remove" for s in self.steps)


@dataclass(frozen=True)
class SurfaceSite:
    """A point on the part surface: position (3,) metres, outward unit normal, unit tangent,
    and the label of the surface there (0 body, COMPONENT_LABEL + c a component)."""

    position: np.ndarray
    normal: np.ndarray
    tangent: np.ndarray
    label: int = 0


@dataclass(frozen=True)
class PartContext:
    """What a defect generator may look at: the as-built part model (mm), its whole mesh
    (metres) with component labels, and the names of its components (label order)."""

    model: PartModel
    mesh: trimesh.Trimesh
    labels: np.ndarray
    components: tuple[str, ...]

    def component_label(self, name: str) -> int:
        """The face label of component ``name``."""
        return COMPONENT_LABEL + 1 + self.components.index(name)


Maker = Callable[[PartContext, SurfaceSite, np.random.Generator, tuple[float, float]], Defect]


@dataclass(frozen=True)
class DefectKind:
    """How to make one kind of defect.

    ``make(ctx, site, rng, size_range)`` builds it at ``site`` (for ``component``
    placement the site is on a random component); ``default_size_mm`` is the range of its
    main size; ``placement`` where sites come from by default; ``min_normal_z`` the
    steepest surface a ``surface`` site may have (normal . z >= it; the bottom rests on the
    table); ``needs_components``: only for parts with sub-components.
    """

    name: str
    group: Group
    make: Maker
    default_size_mm: tuple[float, float]
    placement: Placement = "surface"
    min_normal_z: float = -0.2
    needs_components: bool = False
    description: str = ""


DEFECT_KINDS: dict[str, DefectKind] = {}


def register_defect_kind(kind: DefectKind) -> None:
    """Add a defect kind to the registry; a duplicate name is an error."""
    if kind.name in DEFECT_KINDS:
        raise ValueError(f"defect kind {kind.name!r} is already registered")
    DEFECT_KINDS[kind.name] = kind


# --------------------------------------------------------------------------------------------
# Tool solids (helpers for generators): metres and poses in, millimetre solids out
# --------------------------------------------------------------------------------------------


def _transform(solid: m3.Manifold, T_obj_tool: np.ndarray) -> m3.Manifold:
    T_mm = np.array(T_obj_tool, dtype=np.float64)
    T_mm[:3, 3] /= MM
    return solid.transform(T_mm[:3, :].tolist())


def ellipsoid(T_obj_tool: np.ndarray, semi_axes_m: tuple[float, float, float]) -> m3.Manifold:
    """An ellipsoid centred at the tool frame's origin with semi-axes (m) along its x, y, z."""
    a, b, c = (s / MM for s in semi_axes_m)
    return _transform(m3.Manifold.sphere(1.0, TOOL_SEGMENTS).scale((a, b, c)), T_obj_tool)


def cylinder(T_obj_tool: np.ndarray, radius_m: float, height_m: float) -> m3.Manifold:
    """A cylinder standing on the tool frame's z = 0 along +z."""
    solid = m3.Manifold.cylinder(height_m / MM, radius_m / MM, circular_segments=TOOL_SEGMENTS)
    return _transform(solid, T_obj_tool)


def box(T_obj_tool: np.ndarray, size_m: tuple[float, float, float]) -> m3.Manifold:
    """A box of full extents ``size_m`` centred at the tool frame's origin."""
    return _transform(m3.Manifold.cube(tuple(s / MM for s in size_m), center=True), T_obj_tool)


def frame_at(site: SurfaceSite, offset_m: float = 0.0) -> np.ndarray:
    """Tool frame at a site: z along the outward normal, x along the tangent (4, 4)."""
    z = site.normal
    x = site.tangent
    y = np.cross(z, x)
    return make_pose(np.stack([x, y, z], axis=1), site.position + offset_m * z)


def pos_mm(site: SurfaceSite) -> list[float]:
    """A site's position in mm, rounded for records."""
    return [round(float(v) / MM, 3) for v in site.position]


def to_mm_transform(T_obj: np.ndarray) -> list[list[float]]:
    """A metre pose as manifold's 3x4 millimetre transform."""
    T_mm = np.array(T_obj, dtype=np.float64)
    T_mm[:3, 3] /= MM
    return T_mm[:3, :].tolist()


# --------------------------------------------------------------------------------------------
# The part instance and its ground truth
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PartInstance:
    """A part as it stands in the real scene.

    ``mesh`` is the real part (as built, with its defects) in metres, object frame;
    ``face_labels`` (F,) int32: 0 body, i + 1 faces made by ``defects[i]``, COMPONENT_LABEL
    + c faces of sub-component c (``components[c - 1]``). ``nominal`` is the design CAD
    mesh the twin renders (``nominal_labels`` its component labels). ``missing`` is the
    as-built, defect-free surface with ``missing_labels`` i + 1 on the faces that lie in
    material ``defects[i]`` removed (0 elsewhere): its label pass is the missing-material
    ground truth.
    """

    part_id: str
    category: str
    mesh: trimesh.Trimesh
    face_labels: np.ndarray
    nominal: trimesh.Trimesh
    defects: tuple[Defect, ...] = ()
    nominal_labels: np.ndarray | None = None
    missing: trimesh.Trimesh | None = None
    missing_labels: np.ndarray | None = None
    components: tuple[str, ...] = ()
    materials: dict[int, str] = field(default_factory=dict)

    @functools.cached_property
    def content_key(self) -> str:
        """A digest of the meshes and labels: renderers cache uploads under it."""
        h = hashlib.sha1()
        arrays = [self.mesh.vertices, self.mesh.faces, self.face_labels]
        arrays += [self.nominal.vertices, self.nominal.faces]
        if self.missing is not None and self.missing_labels is not None:
            arrays += [self.missing.vertices, self.missing.faces, self.missing_labels]
        for arr in arrays:
            h.update(np.ascontiguousarray(arr).tobytes())
        return h.hexdigest()[:16]

    @property
    def removes_material(self) -> bool:
        """Whether any defect removed material (the ground truth needs the ``missing`` pass)."""
        return self.missing_labels is not None and bool(np.any(self.missing_labels))


def _check(solid: m3.Manifold, what: str) -> None:
    if solid.is_empty() or solid.status() != m3.Error.NoError:
        raise GeometryError(f"{what}: {solid.status()}")


def build_part_instance(
    part_id: str,
    category: str,
    as_built: PartModel,
    defects: Sequence[Defect],
    nominal: PartModel | None = None,
    materials: Mapping[int, str] | None = None,
) -> PartInstance:
    """Apply ``defects`` to the as-built part and label every face by its provenance.

    ``nominal`` is the design the twin renders (default: the as-built part itself, i.e. no
    manufacturing error); ``materials`` maps surface labels to material classes.
    """
    base, built_ids = as_built.labelled
    id_to_label = dict(built_ids)
    solid = base
    removed: list[tuple[int, m3.Manifold]] = []
    # A step that removes a whole sub-component (its own solid) may leave slivers of the
    # component's surface where the tool coincides with it: they exist only because the
    # component was taken out, so they are that defect's (label of the first such defect).
    by_solid = {id(c): COMPONENT_LABEL + k for k, c in enumerate(as_built.components.values(), 1)}
    taken: dict[int, int] = {}
    for i, d in enumerate(defects):
        for step in d.steps:
            tool = step.solid.as_original()
            if step.op == "add":
                id_to_label[tool.original_id()] = i + 1
                solid = solid + tool
            elif step.op == "remove":
                id_to_label[tool.original_id()] = i + 1
                solid = solid - tool
                removed.append((i, step.solid))
                if id(step.solid) in by_solid:
                    taken.setdefault(by_solid[id(step.solid)], i + 1)
            else:  # paint: cut the surface along the tool and put it back, relabelled
                # (a sliver of the cut may survive the union: it lies on the tool, so it is
                # the defect's too)
                id_to_label[tool.original_id()] = i + 1
                patch = (solid ^ tool).as_original()
                if patch.is_empty():
                    raise GeometryError(f"{d.kind} on {part_id}: the paint misses the part")
                id_to_label[patch.original_id()] = i + 1
                solid = _without_flat_shells((solid - tool) + patch)
        _check(solid, f"{d.kind} on {part_id}")
    mesh, labels = mesh_labels(solid, id_to_label)
    for component_label, defect_label in taken.items():
        labels[labels == component_label] = defect_label

    nominal_mesh, nominal_labels = (nominal or as_built).labelled_mesh

    missing = missing_labels = None
    if removed:
        # The as-built surface, split along every removed volume: a face inside the volume
        # defect i removed gets label i + 1 (the first defect wins where volumes overlap).
        rest = base
        pieces = []
        split_ids = _component_ids(id_to_label)  # body and components: not missing
        for i, vol in removed:
            # A boolean may leave a sliver of the cut surface (a fraction of a mm^2) where
            # the piece goes back in: it lies on the removed volume, so it is that defect's.
            vol = vol.as_original()
            split_ids[vol.original_id()] = i + 1
            piece = (rest ^ vol).as_original()
            if not piece.is_empty():
                split_ids[piece.original_id()] = i + 1
                pieces.append(piece)
            rest = rest - vol
        whole = rest
        for piece in pieces:
            whole = whole + piece
        whole = _without_flat_shells(whole)
        _check(whole, f"missing-material split of {part_id}")
        missing, missing_labels = mesh_labels(whole, split_ids)
    return PartInstance(
        part_id,
        category,
        mesh,
        labels,
        nominal_mesh,
        tuple(defects),
        nominal_labels,
        missing,
        missing_labels,
        tuple(as_built.components),
        dict(materials or {}),
    )


#: A closed shell of less volume than this (mm^3) is no material: two coincident sheets.
FLAT_SHELL_MM3 = 1e-9


def _without_flat_shells(solid: m3.Manifold) -> m3.Manifold:
    """``solid`` without the zero-volume shells (two coincident sheets of faces) that a
    union of pieces touching along a cut can leave on the cut: they hold no material, yet
    where the cut meets the surface they would be drawn on it (and split the mesh into
    extra bodies). Provenance is kept."""
    parts = solid.decompose()
    if len(parts) <= 1:
        return solid
    keep = [p for p in parts if abs(p.volume()) > FLAT_SHELL_MM3]
    if not keep or len(keep) == len(parts):
        return solid
    return keep[0] if len(keep) == 1 else m3.Manifold.compose(keep)


def _component_ids(id_to_label: dict[int, int]) -> dict[int, int]:
    """Provenance ids of the as-built body and components, all labelled 0 (not missing)."""
    return {k: 0 for k, v in id_to_label.items() if v == 0 or v > COMPONENT_LABEL}


# --------------------------------------------------------------------------------------------
# Sites and placement
# --------------------------------------------------------------------------------------------


def _random_tangent(n: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    helper = np.array([0.0, 0.0, 1.0]) if abs(n[2]) < 0.9 else np.array([1.0, 0.0, 0.0])
    t0 = np.cross(n, helper)
    t0 /= np.linalg.norm(t0)
    t1 = np.cross(n, t0)
    ang = rng.uniform(0, 2 * np.pi)
    return np.asarray(np.cos(ang) * t0 + np.sin(ang) * t1)


def surface_site(
    ctx: PartContext,
    rng: np.random.Generator,
    min_normal_z: float,
    margin_m: float = DEFECT_SITE_MARGIN_MM * MM,
    labels: Sequence[int] | None = None,
) -> SurfaceSite:
    """Area-weighted random surface point on faces with normal . z >= ``min_normal_z``,
    more than ``margin_m`` above the table (the part stands there), optionally only on
    faces whose label is in ``labels``."""
    mesh = ctx.mesh
    normals = mesh.face_normals
    ok = (normals[:, 2] >= min_normal_z) & (mesh.vertices[mesh.faces][:, :, 2].max(1) > margin_m)
    if labels is not None:
        ok &= np.isin(ctx.labels, list(labels))
    if not ok.any():
        raise GeometryError("no surface satisfies the defect's site constraint")
    idx = np.flatnonzero(ok)
    w = mesh.area_faces[idx]
    for _ in range(1000):  # rejection: the part of a tall face below the margin is refused
        face = int(idx[rng.choice(len(idx), p=w / w.sum())])
        r1, r2 = rng.random(2)
        s = np.sqrt(r1)  # uniform barycentric sampling of a triangle
        bary = np.array([1 - s, s * (1 - r2), s * r2])
        pos = bary @ mesh.triangles[face]
        if pos[2] > margin_m:
            break
    else:
        raise GeometryError("no surface above the table margin for the defect")
    n = normals[face] / np.linalg.norm(normals[face])
    return SurfaceSite(pos, n, _random_tangent(n, rng), int(ctx.labels[face]))


def edge_site(
    ctx: PartContext, rng: np.random.Generator, margin_m: float = DEFECT_SITE_MARGIN_MM * MM
) -> SurfaceSite:
    """A random point on a sharp convex edge (faces meeting at more than SHARP_EDGE_DEG),
    length-weighted, above the table margin; the normal bisects the two faces' normals and
    the tangent runs along the edge."""
    mesh = ctx.mesh
    angles = mesh.face_adjacency_angles
    convex = mesh.face_adjacency_convex
    edges = mesh.face_adjacency_edges
    v = mesh.vertices
    ok = (angles > np.radians(SHARP_EDGE_DEG)) & convex
    ok &= np.minimum(v[edges[:, 0], 2], v[edges[:, 1], 2]) > margin_m
    # A boolean can leave a zero-area sliver (no normal) or a zero-length edge: no site.
    fa = mesh.face_adjacency
    bisector = mesh.face_normals[fa[:, 0]] + mesh.face_normals[fa[:, 1]]
    ok &= np.linalg.norm(bisector, axis=1) > 1e-6
    ok &= np.linalg.norm(v[edges[:, 1]] - v[edges[:, 0]], axis=1) > 1e-9
    if not ok.any():
        raise GeometryError("the part has no sharp edge above the table for this defect")
    idx = np.flatnonzero(ok)
    lengths = np.linalg.norm(v[edges[idx, 1]] - v[edges[idx, 0]], axis=1)
    k = int(idx[rng.choice(len(idx), p=lengths / lengths.sum())])
    a, b = v[edges[k, 0]], v[edges[k, 1]]
    pos = a + rng.random() * (b - a)
    f0, f1 = mesh.face_adjacency[k]
    n = mesh.face_normals[f0] + mesh.face_normals[f1]
    n /= np.linalg.norm(n)
    t = (b - a) / np.linalg.norm(b - a)
    return SurfaceSite(pos, n, t, int(ctx.labels[f0]))


def feature_site(ctx: PartContext, name: str, rng: np.random.Generator) -> SurfaceSite:
    """A random site of the named feature of the part model."""
    feat = ctx.model.features[name]
    k = int(rng.integers(len(feat.positions)))
    pos = feat.positions[k] * MM
    n = feat.normals[k]
    t = feat.tangents[k] if feat.tangents is not None else _random_tangent(n, rng)
    # The surface label there: the label of the closest face centre.
    face = int(np.argmin(np.linalg.norm(ctx.mesh.triangles_center - pos, axis=1)))
    return SurfaceSite(pos, n, t, int(ctx.labels[face]))


def component_site(ctx: PartContext, rng: np.random.Generator) -> SurfaceSite:
    """A random upward-facing site on a random component (for structural defects)."""
    if not ctx.components:
        raise GeometryError("the part has no sub-components")
    name = ctx.components[int(rng.integers(len(ctx.components)))]
    return surface_site(ctx, rng, -1.0, labels=[ctx.component_label(name)])


def check_applicable(kind: str, components: Sequence[str], where: str = "defects.kinds") -> None:
    """SpecError if ``kind`` is unknown or needs sub-components the part lacks."""
    if kind not in DEFECT_KINDS:
        raise SpecError(f"{where}: unknown {excerpt(kind)}; {allowed(kind, sorted(DEFECT_KINDS))}")
    if DEFECT_KINDS[kind].needs_components and not components:
        raise SpecError(f"{where}: {kind} needs a part with sub-components (bolts, a cover)")


def make_defects(
    ctx: PartContext,
    kinds: Sequence[str],
    rng: np.random.Generator,
    sizes_mm: Mapping[str, tuple[float, float]] | None = None,
    at: Mapping[str, str] | None = None,
) -> list[Defect]:
    """Seeded defects of the given kinds on the as-built part of ``ctx``.

    ``at`` maps a kind to a named feature of the part (its placement policy otherwise).
    """
    out = []
    for kind in kinds:
        check_applicable(kind, ctx.components)
        spec = DEFECT_KINDS[kind]
        size = tuple((sizes_mm or {}).get(kind, spec.default_size_mm))
        feature = (at or {}).get(kind)
        if feature is not None:
            site = feature_site(ctx, feature, rng)
        elif spec.placement == "edge":
            site = edge_site(ctx, rng)
        elif spec.placement == "component":
            site = component_site(ctx, rng)
        else:
            site = surface_site(ctx, rng, spec.min_normal_z)
        d = spec.make(ctx, site, rng, (float(size[0]), float(size[1])))
        if d.surface_label == 0 and site.label != 0 and spec.placement != "component":
            d = replace(d, surface_label=site.label)
        out.append(d)
    return out


def part_context(model: PartModel) -> PartContext:
    """The context defect generators see for an as-built part model."""
    mesh, labels = model.labelled_mesh
    return PartContext(model, mesh, labels, tuple(model.components))


def _register_builtin() -> None:
    # Each group module registers its kinds on import; the order is the listing order.
    from sim.defects import geometric, moulding, structural, texture  # noqa: F401


_register_builtin()
