"""Texture defects: scratch, stain (discolouration), corrosion spot, flow marks.

A texture defect changes how a surface looks, not (or barely) its shape: its faces carry a
finish of their own in the real render (``Defect.appearance``), drawn by every backend
(``sim.appearance.defect_material``).

Stains, corrosion spots and flow marks are **painted**: an irregular blob outline (the
union of 2-4 overlapping lobes, each an ellipse with a wavy radius) is extruded along the
site normal from 1 mm below to 2 mm above the surface, and the part's surface inside that
prism is relabelled. The prism's sides cut the surface along the outline wherever the
surface lies within that band, so the patch follows a curved surface (a 14 mm patch on
the hub's 25 mm radius sags 1 mm) and no vertex moves. A corrosion spot also removes a few
tiny pits inside its patch.

The ``look`` of each carries a ``seed`` and the patch's centre (object frame, metres) and
radius, so a procedural finish can fade and mottle it about its centre.
"""

from __future__ import annotations

import manifold3d as m3
import numpy as np

from scenarios.interfaces import DefectRecord
from sim.defects import (
    Defect,
    DefectKind,
    PartContext,
    Step,
    SurfaceSite,
    box,
    frame_at,
    pos_mm,
    register_defect_kind,
    to_mm_transform,
)
from sim.geometry import make_pose, rotation_matrix
from sim.parts import MM, union_model

#: How far a paint tool reaches below and above the surface at its site (mm): the band a
#: curved surface may sag or rise within and still be painted. Not round numbers: a tool
#: face coplanar with a part face (1 mm below a face, on a 1 mm deep groove's floor)
#: would leave the split ambiguous.
PAINT_BELOW_MM = 1.013
PAINT_ABOVE_MM = 2.017
#: Segments about a sub-millimetre ellipsoid (a corrosion pit, a dust grain).
GRAIN_SEGMENTS = 8
#: Vertices of one lobe of a blob outline.
LOBE_VERTS = 48


def _scratch(
    ctx: PartContext, site: SurfaceSite, rng: np.random.Generator, size: tuple[float, float]
) -> Defect:
    # A 0.05 mm deep groove too shallow to change the shading, whose faces carry the
    # "scratch" appearance (grooves along it) in the real render.
    length = float(rng.uniform(*size))
    width = float(rng.uniform(0.8, 1.6))
    depth = 0.05
    tool = box(frame_at(site), (length * MM, width * MM, 2 * depth * MM))
    rec = DefectRecord(
        "scratch",
        length,
        {"length_mm": round(length, 3), "width_mm": round(width, 3), "position_mm": pos_mm(site)},
    )
    t = site.tangent
    look: tuple[tuple[str, float], ...] = (
        ("dir_x", float(t[0])),
        ("dir_y", float(t[1])),
        ("dir_z", float(t[2])),
    )
    look += (("width_mm", width),)
    return Defect("scratch", (Step("remove", tool),), rec, "scratch", tuple(sorted(look)))


# --------------------------------------------------------------------------------------------
# Painted patches
# --------------------------------------------------------------------------------------------


def _lobe(rng: np.random.Generator, center: np.ndarray, radius: float, elong: float) -> np.ndarray:
    """One lobe (LOBE_VERTS, 2), counter-clockwise: an ellipse of mean radius ``radius``
    (aspect ``elong`` along x before a random turn) whose radius wavers by a few Fourier
    terms, so no two outlines are alike and none is a clean ellipse."""
    th = np.linspace(0.0, 2 * np.pi, LOBE_VERTS, endpoint=False)
    wobble = np.ones_like(th)
    for k in range(2, 6):
        wobble += rng.uniform(0.0, 0.14 / k * 2) * np.cos(k * th + rng.uniform(0, 2 * np.pi))
    a = radius * np.sqrt(elong) * rng.uniform(0.85, 1.15)
    b = radius / np.sqrt(elong) * rng.uniform(0.7, 1.0)
    pts = np.stack([a * np.cos(th), b * np.sin(th)], axis=1) * wobble[:, None]
    ang = rng.uniform(-0.35, 0.35) if elong > 1.2 else rng.uniform(0, 2 * np.pi)
    c, s = np.cos(ang), np.sin(ang)
    return pts @ np.array([[c, s], [-s, c]]) + center


def _blob(
    rng: np.random.Generator, extent_mm: float, elong: float = 1.0, lobes: tuple[int, int] = (2, 4)
) -> tuple[m3.CrossSection, int]:
    """An irregular blob outline (mm, in the site's tangent plane: x along the tangent)
    whose largest extent (the greatest distance between two outline points) is exactly
    ``extent_mm``; ``elong`` stretches it along x. Returns it and its number of lobes."""
    n = int(rng.integers(lobes[0], lobes[1] + 1))
    polys = [_lobe(rng, np.zeros(2), 0.5, elong)]
    for _ in range(n - 1):
        ang = rng.uniform(0, 2 * np.pi)
        dist = rng.uniform(0.2, 0.42)
        c = dist * np.array([np.sqrt(elong) * np.cos(ang), np.sin(ang) / np.sqrt(elong)])
        polys.append(_lobe(rng, c, rng.uniform(0.2, 0.38), elong))
    cs = m3.CrossSection(polys)
    pts = np.concatenate([np.asarray(p) for p in cs.to_polygons()])
    span = float(np.sqrt(((pts[:, None, :] - pts[None, :, :]) ** 2).sum(-1).max()))
    k = extent_mm / span
    return cs.scale((k, k)), n


def _paint_tool(site: SurfaceSite, outline: m3.CrossSection) -> m3.Manifold:
    """The paint tool: ``outline`` (mm, site frame) extruded from PAINT_BELOW_MM below to
    PAINT_ABOVE_MM above the surface along the site normal (mm solid, object frame)."""
    prism = m3.Manifold.extrude(outline, PAINT_BELOW_MM + PAINT_ABOVE_MM)
    prism = prism.translate((0.0, 0.0, -PAINT_BELOW_MM))
    return prism.transform(to_mm_transform(frame_at(site)))


def _patch_look(site: SurfaceSite, radius_mm: float, rng: np.random.Generator) -> dict[str, float]:
    """The look entries every painted patch carries: its seed, centre (m) and radius."""
    p = site.position
    return {
        "seed": float(rng.integers(0, 2**31 - 1)),
        "cx": float(p[0]),
        "cy": float(p[1]),
        "cz": float(p[2]),
        "radius_mm": float(radius_mm),
    }


def _inside(outline: m3.CrossSection, pts: np.ndarray) -> np.ndarray:
    """Whether each 2-D point (N, 2) lies inside ``outline`` (even-odd over its contours)."""
    inside = np.zeros(len(pts), dtype=bool)
    x, y = pts[:, 0:1], pts[:, 1:2]
    for poly in outline.to_polygons():
        a = np.asarray(poly)
        b = np.roll(a, -1, axis=0)
        cross = (a[None, :, 1] > y) != (b[None, :, 1] > y)
        t = (y - a[None, :, 1]) / np.where(cross, b[None, :, 1] - a[None, :, 1], 1.0)
        xs = a[None, :, 0] + t * (b[None, :, 0] - a[None, :, 0])
        inside ^= (np.count_nonzero(cross & (x < xs), axis=1) % 2).astype(bool)
    return inside


def surface_point(
    solid_mm: m3.Manifold, point_m: np.ndarray, normal: np.ndarray, reach_mm: float = 3.0
) -> tuple[np.ndarray, np.ndarray]:
    """The part surface nearest ``point_m`` along ``normal`` (within ``reach_mm`` either
    way): (position m, outward unit normal); ``point_m`` and ``normal`` if none is hit."""
    p = np.asarray(point_m) / MM
    n = np.asarray(normal, dtype=np.float64)
    hits = solid_mm.ray_cast(tuple(p + reach_mm * n), tuple(p - reach_mm * n))
    # Faces the ray enters through (facing back along it), the nearest to the point first;
    # ``distance`` is the fraction of the 2 * reach_mm segment.
    entries = [h for h in hits if np.dot(h.normal, n) > 0]
    if not entries:
        return np.asarray(point_m, dtype=np.float64), n
    h = min(entries, key=lambda h: abs(h.distance * 2 * reach_mm - reach_mm))
    hn = np.asarray(h.normal, dtype=np.float64)
    return np.asarray(h.position, dtype=np.float64) * MM, hn / np.linalg.norm(hn)


def grain(T_obj_tool: np.ndarray, semi_axes_m: tuple[float, float, float]) -> m3.Manifold:
    """A coarse ellipsoid (GRAIN_SEGMENTS about) for sub-millimetre tools: a pit or a grain
    needs no 48-segment sphere, and ten of those cost a tenth of a second in booleans."""
    a, b, c = (s / MM for s in semi_axes_m)
    solid = m3.Manifold.sphere(1.0, GRAIN_SEGMENTS).scale((a, b, c))
    return solid.transform(to_mm_transform(T_obj_tool))


def _stain(
    ctx: PartContext, site: SurfaceSite, rng: np.random.Generator, size: tuple[float, float]
) -> Defect:
    """A discolouration: a dried coolant, oil or water stain. An irregular painted patch;
    how dark and how yellow-brown it is (``strength``, ``tint``) is drawn per stain."""
    d = float(rng.uniform(*size))
    outline, lobes = _blob(rng, d)
    look = _patch_look(site, d / 2, rng)
    strength = float(rng.uniform(0.45, 0.9))
    tint = float(rng.uniform(0.0, 1.0))  # 0 grey-brown (oil), 1 yellow-brown (coolant, water)
    look.update(strength=strength, tint=tint)
    rec = DefectRecord(
        "stain",
        d,
        {
            "diameter_mm": round(d, 3),
            "area_mm2": round(float(outline.area()), 3),
            "lobes": lobes,
            "strength": round(strength, 3),
            "tint": round(tint, 3),
            "position_mm": pos_mm(site),
        },
    )
    step = Step("paint", _paint_tool(site, outline))
    return Defect("stain", (step,), rec, "stain", tuple(sorted(look.items())))


def _corrosion(
    ctx: PartContext, site: SurfaceSite, rng: np.random.Generator, size: tuple[float, float]
) -> Defect:
    """A corrosion spot: an irregular painted patch (rust on steel and iron, white rust on
    aluminium; the real render decides from the surface's material) with 3-10 tiny pits
    (ellipsoids of 0.1-0.4 mm in-plane semi-axes, at most 12 % of the spot's diameter,
    half to three quarters of that deep) eaten into it."""
    d = float(rng.uniform(*size))
    outline, lobes = _blob(rng, d)
    look = _patch_look(site, d / 2, rng)
    steps = [Step("paint", _paint_tool(site, outline))]
    solid = union_model(ctx.model)
    T = frame_at(site)
    n_pits = int(rng.integers(3, 11))
    r_max = min(0.4, 0.12 * d)  # a small spot has smaller pits
    radii: list[float] = []
    pits: list[m3.Manifold] = []
    for _ in range(50 * n_pits):
        if len(radii) == n_pits:
            break
        r = float(rng.uniform(min(0.1, r_max), r_max))
        uv = rng.uniform(-0.5, 0.5, 2) * d
        # The whole pit (and a margin) inside the outline: it is part of the patch.
        ring = uv + 1.3 * r * np.array([[0, 0], [1, 0], [-1, 0], [0, 1], [0, -1]])
        if not _inside(outline, ring).all():
            continue
        p0 = T[:3, :3] @ np.array([uv[0], uv[1], 0.0]) * MM + site.position
        p, n = surface_point(solid, p0, site.normal)
        # On the painted surface: a surface found, within the paint band, facing out.
        off = (p - p0) @ site.normal / MM
        if p is p0 or not -PAINT_BELOW_MM + 0.5 < off < PAINT_ABOVE_MM or n @ site.normal < 0.5:
            continue
        depth = float(rng.uniform(0.5, 0.75) * r)
        tangent = site.tangent - (site.tangent @ n) * n
        pit_site = SurfaceSite(p, n, tangent / np.linalg.norm(tangent))
        spin = make_pose(
            rotation_matrix(np.array([0.0, 0.0, rng.uniform(0, 2 * np.pi)])), np.zeros(3)
        )
        b = float(rng.uniform(0.6, 1.0) * r)
        pits.append(grain(frame_at(pit_site) @ spin, (r * MM, b * MM, depth * MM)))
        radii.append(round(r, 3))
    if pits:  # all pits in one step: one boolean instead of ten
        steps.append(Step("remove", m3.Manifold.batch_boolean(pits, m3.OpType.Add)))
    rec = DefectRecord(
        "corrosion",
        d,
        {
            "diameter_mm": round(d, 3),
            "area_mm2": round(float(outline.area()), 3),
            "lobes": lobes,
            "pits": len(radii),
            "pit_radii_mm": radii,
            "position_mm": pos_mm(site),
        },
    )
    return Defect("corrosion", tuple(steps), rec, "corrosion", tuple(sorted(look.items())))


def _flow_marks(
    ctx: PartContext, site: SurfaceSite, rng: np.random.Generator, size: tuple[float, float]
) -> Defect:
    """Flow marks (flow lines, tiger stripes): wavy bands of differing gloss on a moulded
    surface, ripples of the melt front frozen in place. A patch elongated along the flow
    (the site tangent; width 35-60 % of its length) whose bands are arcs about a virtual
    gate 0.5-1 lengths behind it, ``spacing_mm`` apart."""
    length = float(rng.uniform(*size))
    elong = float(rng.uniform(2.0, 3.5))
    outline, lobes = _blob(rng, length, elong=elong, lobes=(1, 3))
    look = _patch_look(site, length / 2, rng)
    t = site.tangent
    gate = site.position - t * length * MM * rng.uniform(0.5, 1.0)
    spacing = float(rng.uniform(0.6, 1.8))
    contrast = float(rng.uniform(0.4, 0.9))
    look.update(
        dir_x=float(t[0]),
        dir_y=float(t[1]),
        dir_z=float(t[2]),
        gate_x=float(gate[0]),
        gate_y=float(gate[1]),
        gate_z=float(gate[2]),
        spacing_mm=spacing,
        contrast=contrast,
    )
    lo, hi = np.asarray(outline.bounds()).reshape(2, 2)[:, 1]
    rec = DefectRecord(
        "flow_marks",
        length,
        {
            "length_mm": round(length, 3),
            "width_mm": round(float(hi - lo), 3),
            "spacing_mm": round(spacing, 3),
            "contrast": round(contrast, 3),
            "direction": [round(float(v), 4) for v in t],
            "position_mm": pos_mm(site),
        },
    )
    step = Step("paint", _paint_tool(site, outline))
    return Defect("flow_marks", (step,), rec, "flow_marks", tuple(sorted(look.items())))


# Scratches go on flat, upward faces so the straight groove stays on the surface.
register_defect_kind(
    DefectKind(
        "scratch",
        "texture",
        _scratch,
        (10.0, 22.0),
        min_normal_z=0.99,
        description="a 0.05 mm deep groove 0.8-1.6 mm wide that catches the light (length)",
    )
)
register_defect_kind(
    DefectKind(
        "stain",
        "texture",
        _stain,
        (4.0, 14.0),
        description="a discolouration: an irregular darker, yellow-brown patch (diameter)",
    )
)
register_defect_kind(
    DefectKind(
        "corrosion",
        "texture",
        _corrosion,
        (3.0, 10.0),
        description="a corrosion spot: rust or white rust with 3-10 tiny pits (diameter)",
    )
)
# Flow marks sit on faces that look up enough for their 8-25 mm patch to stay in the
# paint band; they belong on moulded polymer but any part may carry them.
register_defect_kind(
    DefectKind(
        "flow_marks",
        "texture",
        _flow_marks,
        (8.0, 25.0),
        min_normal_z=0.7,
        description="wavy bands of differing gloss where the melt front froze (length)",
    )
)
