"""Seeded defect injection: each defect is a boolean with a tool solid and labels its faces.

Every defect is a tool solid placed on the part surface in the object frame: material is
added (union: bulge) or removed (difference: sink, hole, scratch). manifold3d keeps the
provenance of every triangle, so the faces a tool contributes carry that defect's label
exactly, and the tool's own analytic shape answers "was material removed here?" for the
missing-material rule of the ground truth (docs/architecture.md, Ground truth).

Sizes are in millimetres at the interface and metres inside the meshes.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import manifold3d as m3
import numpy as np
import trimesh

from scenarios.interfaces import DefectRecord, GeometryError, SpecError
from sim.geometry import invert_pose, make_pose, transform_points
from sim.parts import DEFECT_SITE_MARGIN_MM, MM, manifold_to_trimesh

ToolShape = Literal["ellipsoid", "cylinder", "box"]
TOOL_SEGMENTS = 48


@dataclass(frozen=True)
class Tool:
    """An analytic solid in the object frame (metres).

    ``T_obj_tool`` (4, 4) places the tool frame; ``size_m`` (3,) means: ellipsoid semi-axes
    centred at the origin; cylinder (radius, radius, height) standing on z = 0 along +z;
    box full extents centred at the origin.
    """

    shape: ToolShape
    T_obj_tool: np.ndarray
    size_m: tuple[float, float, float]

    def to_manifold(self) -> m3.Manifold:
        """The tool as a manifold solid in millimetres (object frame)."""
        a, b, c = (s / MM for s in self.size_m)
        if self.shape == "ellipsoid":
            solid = m3.Manifold.sphere(1.0, TOOL_SEGMENTS).scale((a, b, c))
        elif self.shape == "cylinder":
            solid = m3.Manifold.cylinder(c, a, circular_segments=TOOL_SEGMENTS)
        else:
            solid = m3.Manifold.cube((a, b, c), center=True)
        T_mm = np.array(self.T_obj_tool, dtype=np.float64)
        T_mm[:3, 3] /= MM
        return solid.transform(T_mm[:3, :].tolist())

    def contains(self, points_obj: np.ndarray) -> np.ndarray:
        """Which of ``points_obj`` (N, 3) metres, object frame, lie strictly inside: (N,) bool."""
        p = transform_points(invert_pose(self.T_obj_tool), np.asarray(points_obj, np.float64))
        a, b, c = self.size_m
        if self.shape == "ellipsoid":
            return np.asarray((p[:, 0] / a) ** 2 + (p[:, 1] / b) ** 2 + (p[:, 2] / c) ** 2 < 1.0)
        if self.shape == "cylinder":
            return np.asarray((p[:, 0] ** 2 + p[:, 1] ** 2 < a * a) & (p[:, 2] > 0) & (p[:, 2] < c))
        return np.asarray(
            (np.abs(p[:, 0]) < a / 2) & (np.abs(p[:, 1]) < b / 2) & (np.abs(p[:, 2]) < c / 2)
        )


@dataclass(frozen=True)
class Defect:
    """One injected defect: its tool, whether it adds or removes material, its record."""

    kind: str
    op: Literal["add", "remove"]
    tool: Tool
    record: DefectRecord
    appearance: str | None = None  # texture defects: the material name the real render uses


@dataclass(frozen=True)
class SurfaceSite:
    """A point on the part surface: position (3,) metres, outward unit normal, unit tangent."""

    position: np.ndarray
    normal: np.ndarray
    tangent: np.ndarray


@dataclass(frozen=True)
class DefectKind:
    """How to make one kind of defect: its size range (mm) and its site constraint."""

    name: str
    make: Callable[[SurfaceSite, np.random.Generator, tuple[float, float]], Defect]
    default_size_mm: tuple[float, float]
    min_normal_z: float  # sites need normal . z >= this (the bottom rests on the table)


def _frame_at(site: SurfaceSite, offset_m: float = 0.0) -> np.ndarray:
    """Tool frame at a site: z along the outward normal, x along the tangent."""
    z = site.normal
    x = site.tangent
    y = np.cross(z, x)
    return make_pose(np.stack([x, y, z], axis=1), site.position + offset_m * z)


def _pos_mm(site: SurfaceSite) -> list[float]:
    return [round(float(v) / MM, 3) for v in site.position]


def _ellipsoid_defect(
    kind: str, op: Literal["add", "remove"], extent_key: str
) -> Callable[[SurfaceSite, np.random.Generator, tuple[float, float]], Defect]:
    """Maker of an ellipsoid defect centred on the surface.

    Added (bulge), the ellipsoid protrudes by its normal semi-axis: a smooth blister.
    Subtracted (sink), it leaves a dent as deep as that semi-axis.
    """

    def make(site: SurfaceSite, rng: np.random.Generator, size: tuple[float, float]) -> Defect:
        d = float(rng.uniform(*size))
        extent = float(rng.uniform(0.15, 0.3) * d)
        tool = Tool("ellipsoid", _frame_at(site), (d / 2 * MM, d / 2 * MM, extent * MM))
        params = {
            "diameter_mm": round(d, 3),
            extent_key: round(extent, 3),
            "position_mm": _pos_mm(site),
        }
        return Defect(kind, op, tool, DefectRecord(kind, d, params))

    return make


_bulge = _ellipsoid_defect("bulge", "add", "height_mm")
_sink = _ellipsoid_defect("sink", "remove", "depth_mm")


def _hole(site: SurfaceSite, rng: np.random.Generator, size: tuple[float, float]) -> Defect:
    # A drilled blind hole; the cylinder starts 1 mm outside the surface so the cut is clean.
    d = float(rng.uniform(*size))
    depth = float(rng.uniform(0.6, 1.2) * d)
    T = _frame_at(site, offset_m=1.0 * MM) @ make_pose(
        np.diag([1.0, -1.0, -1.0]), np.zeros(3)
    )  # flip z so the cylinder grows into the part
    tool = Tool("cylinder", T, (d / 2 * MM, d / 2 * MM, (depth + 1.0) * MM))
    rec = DefectRecord(
        "hole",
        d,
        {"diameter_mm": round(d, 3), "depth_mm": round(depth, 3), "position_mm": _pos_mm(site)},
    )
    return Defect("hole", "remove", tool, rec)


def _scratch(site: SurfaceSite, rng: np.random.Generator, size: tuple[float, float]) -> Defect:
    # A texture defect: a 0.05 mm deep groove too shallow to change the shading, whose faces
    # carry the "scratch" appearance in the real render.
    length = float(rng.uniform(*size))
    width = float(rng.uniform(0.8, 1.6))
    depth = 0.05
    tool = Tool("box", _frame_at(site), (length * MM, width * MM, 2 * depth * MM))
    rec = DefectRecord(
        "scratch",
        length,
        {"length_mm": round(length, 3), "width_mm": round(width, 3), "position_mm": _pos_mm(site)},
    )
    return Defect("scratch", "remove", tool, rec, appearance="scratch")


DEFECT_KINDS: dict[str, DefectKind] = {}


def register_defect_kind(kind: DefectKind) -> None:
    """Add a defect kind to the registry; a duplicate name is an error."""
    if kind.name in DEFECT_KINDS:
        raise ValueError(f"defect kind {kind.name!r} is already registered")
    DEFECT_KINDS[kind.name] = kind


register_defect_kind(DefectKind("bulge", _bulge, (6.0, 12.0), -0.2))
register_defect_kind(DefectKind("sink", _sink, (6.0, 12.0), -0.2))
register_defect_kind(DefectKind("hole", _hole, (3.0, 7.0), -0.2))
# Scratches go on flat, upward faces so the straight groove stays on the surface.
register_defect_kind(DefectKind("scratch", _scratch, (10.0, 22.0), 0.99))


@dataclass(frozen=True)
class PartInstance:
    """A part as it stands in the real scene.

    ``mesh`` is the defective (or nominal) mesh in metres, object frame; ``face_labels``
    (F,) int32 is 0 for nominal faces and i + 1 for faces made by ``defects[i]``;
    ``nominal`` is the defect-free CAD mesh the twin renders.
    """

    part_id: str
    category: str
    mesh: trimesh.Trimesh
    face_labels: np.ndarray
    nominal: trimesh.Trimesh
    defects: tuple[Defect, ...] = field(default_factory=tuple)

    @functools.cached_property
    def content_key(self) -> str:
        """A digest of the meshes and labels: renderers cache uploads under it."""
        h = hashlib.sha1()
        for arr in (
            self.mesh.vertices,
            self.mesh.faces,
            self.face_labels,
            self.nominal.vertices,
            self.nominal.faces,
        ):
            h.update(np.ascontiguousarray(arr).tobytes())
        return h.hexdigest()[:16]

    def missing_material(self, points_obj: np.ndarray) -> np.ndarray:
        """Which nominal surface points (N, 3) lie in material a defect removed: (N,) bool."""
        out = np.zeros(len(points_obj), dtype=bool)
        for d in self.defects:
            if d.op == "remove":
                out |= d.tool.contains(points_obj)
        return out


def _sample_site(
    mesh: trimesh.Trimesh, rng: np.random.Generator, min_normal_z: float, margin_m: float
) -> SurfaceSite:
    """Area-weighted random surface point on faces with normal . z >= min_normal_z.

    Sites closer than ``margin_m`` to the bottom (z = 0) are avoided: the part stands there.
    """
    normals = mesh.face_normals
    centroids = mesh.triangles_center
    ok = (normals[:, 2] >= min_normal_z) & (centroids[:, 2] > margin_m)
    if not ok.any():
        raise GeometryError("no surface satisfies the defect's site constraint")
    idx = np.flatnonzero(ok)
    w = mesh.area_faces[idx]
    face = int(idx[rng.choice(len(idx), p=w / w.sum())])
    r1, r2 = rng.random(2)
    s = np.sqrt(r1)  # uniform barycentric sampling of a triangle
    bary = np.array([1 - s, s * (1 - r2), s * r2])
    tri = mesh.triangles[face]
    pos = bary @ tri
    n = normals[face] / np.linalg.norm(normals[face])
    # A random tangent: orient the tool (and a scratch's direction) about the normal.
    helper = np.array([0.0, 0.0, 1.0]) if abs(n[2]) < 0.9 else np.array([1.0, 0.0, 0.0])
    t0 = np.cross(n, helper)
    t0 /= np.linalg.norm(t0)
    t1 = np.cross(n, t0)
    ang = rng.uniform(0, 2 * np.pi)
    tangent = np.cos(ang) * t0 + np.sin(ang) * t1
    return SurfaceSite(pos, n, tangent)


def make_defects(
    nominal_mesh: trimesh.Trimesh,
    kinds: Sequence[str],
    rng: np.random.Generator,
    sizes_mm: Mapping[str, tuple[float, float]] | None = None,
) -> list[Defect]:
    """Seeded defects of the given kinds placed on ``nominal_mesh`` (metres, object frame)."""
    out = []
    for kind in kinds:
        if kind not in DEFECT_KINDS:
            raise SpecError(
                f"defects.kinds: unknown {kind!r}; allowed: {', '.join(sorted(DEFECT_KINDS))}"
            )
        spec = DEFECT_KINDS[kind]
        size = tuple((sizes_mm or {}).get(kind, spec.default_size_mm))
        site = _sample_site(
            nominal_mesh, rng, spec.min_normal_z, margin_m=DEFECT_SITE_MARGIN_MM * MM
        )
        out.append(spec.make(site, rng, (float(size[0]), float(size[1]))))
    return out


def build_part_instance(
    part_id: str, category: str, nominal_solid: m3.Manifold, defects: Sequence[Defect]
) -> PartInstance:
    """Apply ``defects`` to the nominal solid (mm) and label every face by its provenance."""
    base = nominal_solid.as_original()
    nominal_mesh, _ = manifold_to_trimesh(base)
    solid = base
    id_to_label = {base.original_id(): 0}
    for i, d in enumerate(defects):
        tool = d.tool.to_manifold().as_original()
        id_to_label[tool.original_id()] = i + 1
        solid = solid + tool if d.op == "add" else solid - tool
    if solid.is_empty() or solid.status() != m3.Error.NoError:
        raise GeometryError(f"defect boolean failed on {part_id}: {solid.status()}")
    mesh, ids = manifold_to_trimesh(solid)
    labels = np.array([id_to_label.get(int(i), 0) for i in ids], dtype=np.int32)
    return PartInstance(part_id, category, mesh, labels, nominal_mesh, tuple(defects))
