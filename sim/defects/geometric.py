"""Geometric defects: bulge, sink (dent), hole, crack, broken edge (chip), bend (warp)."""

from __future__ import annotations

from collections.abc import Callable

import manifold3d as m3
import numpy as np

from scenarios.interfaces import DefectRecord, GeometryError
from sim.defects import (
    Defect,
    DefectKind,
    PartContext,
    Step,
    SurfaceSite,
    box,
    cylinder,
    ellipsoid,
    frame_at,
    pos_mm,
    register_defect_kind,
)
from sim.geometry import make_pose, rotation_matrix
from sim.parts import MM, union_model


def _ellipsoid_defect(kind: str, op: str, extent_key: str) -> Callable[..., Defect]:
    """Maker of an ellipsoid defect centred on the surface.

    Added (bulge), the ellipsoid protrudes by its normal semi-axis: a smooth blister.
    Subtracted (sink), it leaves a dent as deep as that semi-axis.
    """

    def make(
        ctx: PartContext, site: SurfaceSite, rng: np.random.Generator, size: tuple[float, float]
    ) -> Defect:
        d = float(rng.uniform(*size))
        extent = float(rng.uniform(0.15, 0.3) * d)
        tool = ellipsoid(frame_at(site), (d / 2 * MM, d / 2 * MM, extent * MM))
        params = {"diameter_mm": round(d, 3), extent_key: round(extent, 3)}
        params["position_mm"] = pos_mm(site)  # type: ignore[assignment]
        return Defect(kind, (Step(op, tool),), DefectRecord(kind, d, params))  # type: ignore[arg-type]

    return make


def _hole(
    ctx: PartContext, site: SurfaceSite, rng: np.random.Generator, size: tuple[float, float]
) -> Defect:
    # A drilled blind hole; the cylinder starts 1 mm outside the surface so the cut is clean.
    d = float(rng.uniform(*size))
    depth = float(rng.uniform(0.6, 1.2) * d)
    # Flip z so the cylinder grows into the part.
    T = frame_at(site, offset_m=1.0 * MM) @ make_pose(np.diag([1.0, -1.0, -1.0]), np.zeros(3))
    tool = cylinder(T, d / 2 * MM, (depth + 1.0) * MM)
    rec = DefectRecord(
        "hole",
        d,
        {"diameter_mm": round(d, 3), "depth_mm": round(depth, 3), "position_mm": pos_mm(site)},
    )
    return Defect("hole", (Step("remove", tool),), rec)


def _crack(
    ctx: PartContext, site: SurfaceSite, rng: np.random.Generator, size: tuple[float, float]
) -> Defect:
    """A fatigue crack: a narrow, deep, jagged slit of 4-7 straight segments whose direction
    wanders up to +-25 degrees about the site's tangent; width 0.15-0.4 mm (a crack opens
    by tenths of a millimetre), depth 0.8-2.5 mm."""
    length = float(rng.uniform(*size))
    width = float(rng.uniform(0.15, 0.4))
    depth = float(rng.uniform(0.8, 2.5))
    n_seg = int(rng.integers(4, 8))
    seg = length / n_seg
    z = site.normal
    t = site.tangent
    pos = np.zeros(3)
    segments = []
    heading = 0.0
    for _ in range(n_seg):
        heading = float(np.clip(heading + rng.uniform(-0.45, 0.45), -0.45, 0.45))
        d = rotation_matrix(z * heading) @ t
        segments.append((pos + 0.5 * seg * MM * d, d))
        pos = pos + seg * MM * d
    # The path's middle (half its length) lies at the site, as the record says: a wandering
    # path started half a length back along the tangent could drift off the face it was
    # placed on and sink whole into a wall beside it (a hidden void, no visible crack).
    k = n_seg // 2
    middle = segments[k][0] - (0.5 * seg * MM * segments[k][1] if n_seg % 2 == 0 else 0.0)
    tool = m3.Manifold()
    for mid, d in segments:
        T = make_pose(np.stack([d, np.cross(z, d), z], axis=1), site.position + mid - middle)
        # Overlap the segments by one width so the slit has no gaps at the joints.
        tool = tool + box(T, ((seg + width) * MM, width * MM, 2 * depth * MM))
    rec = DefectRecord(
        "crack",
        length,
        {
            "length_mm": round(length, 3),
            "width_mm": round(width, 3),
            "depth_mm": round(depth, 3),
            "position_mm": pos_mm(site),
        },
    )
    return Defect("crack", (Step("remove", tool),), rec)


def _chip(
    ctx: PartContext, site: SurfaceSite, rng: np.random.Generator, size: tuple[float, float]
) -> Defect:
    """A broken edge: an irregular piece knocked off a sharp edge. Two overlapping
    ellipsoids centred on the edge, elongated along it, take the material away."""
    d = float(rng.uniform(*size))
    depth = float(rng.uniform(0.25, 0.45) * d)
    T = frame_at(site)
    tool = ellipsoid(T, (d / 2 * MM, depth * MM, depth * MM))
    shift = rng.uniform(-0.25, 0.25) * d * MM
    T2 = frame_at(site) @ make_pose(rotation_matrix(rng.uniform(-0.4, 0.4, 3)), [shift, 0, 0])
    tool = tool + ellipsoid(T2, (0.35 * d * MM, 0.7 * depth * MM, 0.8 * depth * MM))
    rec = DefectRecord(
        "chip",
        d,
        {"length_mm": round(d, 3), "depth_mm": round(depth, 3), "position_mm": pos_mm(site)},
    )
    return Defect("chip", (Step("remove", tool),), rec)


def _bend(
    ctx: PartContext, site: SurfaceSite, rng: np.random.Generator, size: tuple[float, float]
) -> Defect:
    """Bending (warp): the outer ``size`` mm of the part along a random horizontal direction
    is bent up about a hinge line on the table plane by 2-6 degrees, as when a flange or a
    bracket leg is knocked. The bent region is removed and put back rotated: its faces and
    the nominal surface it left are the defect (a large, whole-region anomaly)."""
    verts = ctx.mesh.vertices / MM  # mm
    a = rng.uniform(0, 2 * np.pi)
    d = np.array([np.cos(a), np.sin(a), 0.0])
    reach = float((verts @ d).max())
    extent = float(reach - (verts @ d).min())
    length = float(min(rng.uniform(*size), 0.45 * extent))
    if length <= 0:
        raise GeometryError("the part is too small to bend")
    angle = float(rng.uniform(2.0, 6.0))
    cut = reach - length
    # The region beyond the cut plane: a box reaching well past the part on every side.
    big = 4 * (np.abs(verts).max() + 10)
    R_d = make_pose(np.stack([d, np.cross([0, 0, 1.0], d), [0, 0, 1.0]], axis=1), np.zeros(3))
    region = m3.Manifold.cube((big, big, big), center=True).translate((cut + big / 2, 0, 0))
    region = region.transform(R_d[:3, :].tolist())
    piece = union_model(ctx.model) ^ region
    if piece.is_empty():
        raise GeometryError("nothing to bend")
    # Hinge: the line on the table plane at the cut, along d x z; turning about it by
    # +angle lifts the far end.
    axis = np.cross(d, [0.0, 0.0, 1.0])
    R = rotation_matrix(axis * np.radians(angle))
    hinge = d * cut
    T = make_pose(R, hinge - R @ hinge)  # mm
    moved = piece.transform(T[:3, :].tolist())
    lift = length * np.sin(np.radians(angle))
    rec = DefectRecord(
        "bend",
        length,
        {
            "length_mm": round(length, 3),
            "angle_deg": round(angle, 3),
            "lift_mm": round(float(lift), 3),
            "direction": [round(float(v), 4) for v in d[:2]],
        },
    )
    return Defect("bend", (Step("remove", region), Step("add", moved)), rec)


register_defect_kind(
    DefectKind(
        "bulge",
        "geometric",
        _ellipsoid_defect("bulge", "add", "height_mm"),
        (6.0, 12.0),
        description="a smooth blister of extra material (diameter; height 15-30 % of it)",
    )
)
register_defect_kind(
    DefectKind(
        "sink",
        "geometric",
        _ellipsoid_defect("sink", "remove", "depth_mm"),
        (6.0, 12.0),
        description="a dent (diameter; depth 15-30 % of it)",
    )
)
register_defect_kind(
    DefectKind(
        "hole",
        "geometric",
        _hole,
        (3.0, 7.0),
        description="a drilled blind hole (diameter; depth 0.6-1.2 x diameter)",
    )
)
register_defect_kind(
    DefectKind(
        "crack",
        "geometric",
        _crack,
        (6.0, 16.0),
        min_normal_z=0.5,
        description="a jagged slit 0.15-0.4 mm wide, 0.8-2.5 mm deep (length)",
    )
)
register_defect_kind(
    DefectKind(
        "chip",
        "geometric",
        _chip,
        (3.0, 8.0),
        placement="edge",
        description="a broken edge: material knocked off a sharp edge (length along it)",
    )
)
register_defect_kind(
    DefectKind(
        "bend",
        "geometric",
        _bend,
        (10.0, 25.0),
        description="the outer part of the part bent up by 2-6 deg about a hinge (length)",
    )
)
