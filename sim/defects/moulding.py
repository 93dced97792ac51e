"""Moulding defects: short shot, flash, residual string, dust particle.

Defects of injection-moulded parts (and the dust any part collects), after the PaDiM
multi-view paper's polycarbonate ring: residual plastic strings "barely visible to the
naked eye" and "very small dust or dirt particles".

- ``short_shot``: the cavity did not fill; material is missing at the flow end. Placed at
  the part's ``flow_end`` feature when it has one, else on a sharp edge.
- ``flash``: a thin fin of material squeezed out between the mould halves, along the
  ``parting_line`` feature when the part has one, else along a sharp edge.
- ``residual_string``: a hair-thin string of plastic (angel hair) left on the surface,
  attached at one end, curving over it.
- ``dust_particle``: a few sub-millimetre grains sitting on an upward surface.

Short shots and flash follow the edge or feature line they lie on (a 15 mm fin on the
flange's 25 mm hub rim would otherwise float 1 mm off it at its ends): the line is traced
from the site in small steps, snapped to the sharp edge or projected onto the surface, and
the tool is a straight extrusion bent along it (``Manifold.warp_batch``): one solid,
no unions of pieces.
"""

from __future__ import annotations

from collections.abc import Callable

import manifold3d as m3
import numpy as np
from scipy.ndimage import maximum_filter1d

from scenarios.interfaces import DefectRecord, GeometryError
from sim.defects import (
    SHARP_EDGE_DEG,
    Defect,
    DefectKind,
    PartContext,
    Step,
    SurfaceSite,
    edge_site,
    feature_site,
    frame_at,
    pos_mm,
    register_defect_kind,
    to_mm_transform,
)
from sim.defects.texture import surface_point
from sim.geometry import make_pose, rotation_matrix
from sim.parts import MM, union_model

#: A site this close to a sharp edge (m) lies on it: its path follows the edge.
ON_EDGE_M = 0.05 * MM
#: Step of a traced path (mm): a fin's outline is as fine as this.
PATH_STEP_MM = 0.25
#: Sites a short shot tries before giving up (each cut must leave the part in one piece).
SHORT_SHOT_TRIES = 12
#: Cross-section segments of a residual string.
STRING_SEGMENTS = 8


def _smooth_noise(
    rng: np.random.Generator, s: np.ndarray, scale: float, terms: int = 3
) -> np.ndarray:
    """A smooth random function of ``s`` in about [-1, 1]: a few sines of wavelength
    ``scale`` and shorter, random phases."""
    out = np.zeros_like(s, dtype=np.float64)
    for k in range(1, terms + 1):
        out += rng.uniform(0.5, 1.0) / k * np.sin(2 * np.pi * k * s / scale + rng.uniform(0, 6.3))
    return out / sum(1.0 / k for k in range(1, terms + 1))


def _at_feature(ctx: PartContext, site: SurfaceSite) -> bool:
    """Whether ``site`` is one of the part's named feature sites (placed with ``at``)."""
    pos = site.position / MM
    return any(
        bool(np.any(np.all(np.abs(f.positions - pos) < 1e-9, axis=1)))
        for f in ctx.model.features.values()
    )


def _preferred(
    ctx: PartContext, site: SurfaceSite, feature: str, rng: np.random.Generator
) -> SurfaceSite:
    """The site of a kind that belongs at ``feature``: a site of that feature when the part
    has it, unless the site was already placed at a feature (``defects.at``)."""
    if feature in ctx.model.features and not _at_feature(ctx, site):
        return feature_site(ctx, feature, rng)
    return site


# --------------------------------------------------------------------------------------------
# Tracing a line on the part from a site
# --------------------------------------------------------------------------------------------


def _sharp_edges(ctx: PartContext) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The part's sharp convex edges: endpoints a, b (E, 3) metres and the bisector of
    their faces' normals (E, 3)."""
    mesh = ctx.mesh
    ok = (mesh.face_adjacency_angles > np.radians(SHARP_EDGE_DEG)) & mesh.face_adjacency_convex
    fn = mesh.face_normals[mesh.face_adjacency]
    bis = fn[:, 0] + fn[:, 1]
    norm = np.linalg.norm(bis, axis=1)
    ok &= norm > 1e-6  # a knife edge (faces back to back) has no bisector
    edges = mesh.face_adjacency_edges[ok]
    bis = bis[ok] / norm[ok, None]
    return mesh.vertices[edges[:, 0]], mesh.vertices[edges[:, 1]], bis


def _closest_on_segments(
    a: np.ndarray, b: np.ndarray, q: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The closest point (E, 3) on each segment a-b to q (3,) and its distance (E,)."""
    ab = b - a
    t = np.clip(
        np.einsum("ij,ij->i", q - a, ab) / np.maximum(np.einsum("ij,ij->i", ab, ab), 1e-30), 0, 1
    )
    c = a + t[:, None] * ab
    return c, np.linalg.norm(c - q, axis=1)


def _frame(t: np.ndarray, up: np.ndarray) -> np.ndarray:
    """An orthonormal frame (3, 3) with columns t, the part of ``up`` across t, and their
    cross product."""
    u = up - (up @ t) * t
    u /= np.linalg.norm(u)
    return np.stack([t, u, np.cross(t, u)], axis=1)


def _trace(
    ctx: PartContext, site: SurfaceSite, s: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Points (K, 3) m, tangents and normals (K, 3) of the line through ``site`` along its
    tangent at arc lengths ``s`` (K,) m, increasing through 0.

    On a sharp edge the line follows the edge; elsewhere it is projected onto the surface
    step by step (a jump of more than a third of a millimetre, onto a rib or off an edge,
    is ignored: the line carries straight on there). The normal turns with the line: the
    site's normal keeps its angle to the edge's faces or to the surface.
    """
    a, b, bis = _sharp_edges(ctx)
    # Only edges within reach of the line matter.
    _, dist0 = _closest_on_segments(a, b, site.position)
    near = dist0 < float(np.abs(s).max()) + 1.0 * MM
    a, b, bis, dist0 = a[near], b[near], bis[near], dist0[near]
    on_edge = bool(len(dist0) and dist0.min() < ON_EDGE_M)
    solid = union_model(ctx.model)
    k0 = int(np.argmin(np.abs(s)))
    K = len(s)
    P = np.zeros((K, 3))
    T = np.zeros((K, 3))
    N = np.zeros((K, 3))

    def up_at(
        p: np.ndarray, t: np.ndarray, n: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """Snap p to the edge or surface; (point, tangent, reference normal) or None."""
        if on_edge:
            c, d = _closest_on_segments(a, b, p)
            dirs = b - a
            dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
            ok = (d < 0.4 * MM) & (np.abs(dirs @ t) > 0.5)
            if not ok.any():
                return None
            j = int(np.flatnonzero(ok)[np.argmin(d[ok])])
            tj = dirs[j] * np.sign(dirs[j] @ t)
            return c[j], tj, bis[j]
        q, nq = surface_point(solid, p, n, reach_mm=1.0)
        if q is p or np.linalg.norm(q - p) > 0.35 * MM:
            return None
        tq = t - (t @ nq) * nq
        return q, tq / np.linalg.norm(tq), nq

    t0 = site.tangent / np.linalg.norm(site.tangent)
    first = up_at(site.position, t0, site.normal)
    if first is None:
        ref0 = site.normal
    else:
        _, t0, ref0 = first
    F0 = _frame(t0, ref0)
    P[k0], T[k0], N[k0] = site.position, t0, site.normal
    for idx in (range(k0 + 1, K), range(k0 - 1, -1, -1)):  # forwards, then backwards
        p, t, ref = site.position, t0, ref0
        prev = k0
        for k in idx:
            h = s[k] - s[prev]
            nxt = up_at(p + h * t, t, N[prev])
            if nxt is not None:
                p, t, ref = nxt
            else:
                p = p + h * t
            F = _frame(t, ref)
            P[k], T[k] = p, t
            N[k] = F @ F0.T @ site.normal
            prev = k
    return P, T, N


def _bend(
    template: m3.Manifold,
    s: np.ndarray,
    P: np.ndarray,
    T: np.ndarray,
    N: np.ndarray,
    section: Callable[[np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]],
) -> m3.Manifold:
    """``template`` (an extrusion along z over [0, 1], cross-section coordinates x, y)
    bent along the traced line: the cross-section at z = w sits at arc length
    s(w) (linear over [s0, s-1]) in the frame (tangent, normal x tangent, normal), where
    ``section(x, y, s)`` gives its offsets across the line and along the normal (mm)."""
    s0, s1 = float(s[0]), float(s[-1])
    Pm = P / MM

    def warp(v: np.ndarray) -> np.ndarray:
        sv = s0 + np.clip(v[:, 2], 0.0, 1.0) * (s1 - s0)
        c = np.stack([np.interp(sv, s, Pm[:, i]) for i in range(3)], axis=1)
        t = np.stack([np.interp(sv, s, T[:, i]) for i in range(3)], axis=1)
        n = np.stack([np.interp(sv, s, N[:, i]) for i in range(3)], axis=1)
        n /= np.linalg.norm(n, axis=1, keepdims=True)
        t -= np.einsum("ij,ij->i", t, n)[:, None] * n
        t /= np.linalg.norm(t, axis=1, keepdims=True)
        y_dir = np.cross(n, t)
        across, up = section(v[:, 0], v[:, 1], sv)
        return np.asarray(c + across[:, None] * y_dir + up[:, None] * n)

    return template.warp_batch(warp)


# --------------------------------------------------------------------------------------------
# Kinds
# --------------------------------------------------------------------------------------------


def _short_shot(
    ctx: PartContext, site: SurfaceSite, rng: np.random.Generator, size: tuple[float, float]
) -> Defect:
    """Incomplete filling: the melt froze before it reached the end of the cavity, so the
    rim there is missing over ``length`` mm, ``depth`` deep (0.8-2.5 mm, at most 35 % of
    the length) at the middle, the frozen flow front rounding off to nothing at the ends
    (a superellipse profile with a slight waviness). The cut runs along the edge or the
    feature line, perpendicular to the site normal, ``width`` across (wide enough to take
    the whole rim). A cut that would leave a piece of the part floating (through a thin
    tooth or fin) is drawn again elsewhere, shallower."""
    length = float(rng.uniform(*size))
    depth = float(min(rng.uniform(0.8, 2.5), 0.35 * length))
    solid = union_model(ctx.model)
    pieces = len(solid.decompose())
    explicit = _at_feature(ctx, site)  # placed with ``defects.at``: it stays there
    for attempt in range(SHORT_SHOT_TRIES):
        if attempt:
            depth *= 0.8
            if not explicit:  # another flow-end site, or another edge
                site = edge_site(ctx, rng)
        site = _preferred(ctx, site, "flow_end", rng)
        tool, half_w = _short_shot_tool(ctx, site, rng, length, depth)
        if len((solid - tool).decompose()) == pieces:
            break
    else:
        raise GeometryError("short_shot: every cut left a piece of the part floating")
    rec = DefectRecord(
        "short_shot",
        length,
        {
            "length_mm": round(length, 3),
            "depth_mm": round(depth, 3),
            "width_mm": round(2 * half_w, 3),
            "position_mm": pos_mm(site),
        },
    )
    return Defect("short_shot", (Step("remove", tool),), rec, surface_label=site.label)


def _short_shot_tool(
    ctx: PartContext, site: SurfaceSite, rng: np.random.Generator, length: float, depth: float
) -> tuple[m3.Manifold, float]:
    """The volume a short shot leaves unfilled at ``site`` (mm solid) and its half width."""
    half_w = depth + float(rng.uniform(2.5, 4.0))
    above = 2.0
    power = float(rng.uniform(2.5, 4.0))
    # The tool reaches 0.6 mm past each end, where it lifts off the edge.
    half = 0.5 * length + 0.6
    K = int(np.ceil(2 * half / PATH_STEP_MM)) + 1
    s = np.linspace(-half, half, K) * MM
    P, T, N = _trace(ctx, site, s)
    wav = _smooth_noise(rng, s / MM, length)

    def section(x: np.ndarray, y: np.ndarray, sv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # Depth: the profile, wavy, lifting to 0.3 mm clear of the line past the ends.
        u = np.clip(np.abs(sv / MM) / (0.5 * length), 0.0, 1.0)
        prof = (1 - u**power) ** (1 / power)
        d = (depth * (1 + 0.12 * np.interp(sv, s, wav)) + 0.3) * prof - 0.3
        return x * half_w, -d + y * (d + above)

    # Cross-section: x across the line in [-1, 1], y from the floor (0) to the top (1).
    rect = np.array([[-1.0, 0.0], [1.0, 0.0], [1.0, 1.0], [-1.0, 1.0]])
    template = m3.Manifold.extrude(m3.CrossSection([rect]), 1.0, n_divisions=K - 2)
    return _bend(template, s, P, T, N, section), half_w


def _flash(
    ctx: PartContext, site: SurfaceSite, rng: np.random.Generator, size: tuple[float, float]
) -> Defect:
    """Flash: a thin fin of material where the melt squeezed between the mould halves,
    along the parting line (or a sharp edge), sticking out along the site normal.
    ``length`` mm long, 0.1-0.3 mm thick at its root and half that at its ragged free
    edge, protruding 0.5-2 mm at most (less where the gap was tighter, tapering to
    0.1 mm at the ends); its root 0.4 mm inside the part."""
    site = _preferred(ctx, site, "parting_line", rng)
    length = float(rng.uniform(*size))
    thick = float(rng.uniform(0.1, 0.3))
    reach = float(rng.uniform(0.5, 2.0))
    embed = 0.4
    half = 0.5 * length
    K = int(np.ceil(length / PATH_STEP_MM)) + 1
    s = np.linspace(-half, half, K) * MM
    P, T, N = _trace(ctx, site, s)
    sm = s / MM
    # Protrusion: a slow swell, a ragged edge, tapering at the ends.
    swell = 0.7 + 0.3 * _smooth_noise(rng, sm, 0.7 * length)
    ragged = 1.0 + 0.15 * _smooth_noise(rng, sm, rng.uniform(0.8, 1.6), terms=4)
    taper = np.clip((half - np.abs(sm)) / min(1.5, 0.3 * length), 0.0, 1.0) ** 0.7
    height = np.maximum(reach * swell * ragged * taper / (1.15 * 1.0), 0.1)
    height = np.minimum(height, reach)
    width = thick * (1.0 + 0.2 * _smooth_noise(rng, sm, 0.5 * length))

    def section(x: np.ndarray, y: np.ndarray, sv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        h = np.interp(sv, s, height)
        w = np.interp(sv, s, width)
        return x * 0.5 * w, -embed + y * (embed + h)

    # Cross-section: x across the fin in [-1, 1] at its root (y = 0), half that at its edge.
    trap = np.array([[-1.0, 0.0], [1.0, 0.0], [0.5, 1.0], [-0.5, 1.0]])
    template = m3.Manifold.extrude(m3.CrossSection([trap]), 1.0, n_divisions=K - 2)
    tool = _bend(template, s, P, T, N, section)
    rec = DefectRecord(
        "flash",
        length,
        {
            "length_mm": round(length, 3),
            "thickness_mm": round(thick, 3),
            "protrusion_mm": round(float(height.max()), 3),
            "position_mm": pos_mm(site),
        },
    )
    return Defect("flash", (Step("add", tool),), rec, surface_label=site.label)


def _string_path(
    ctx: PartContext,
    site: SurfaceSite,
    rng: np.random.Generator,
    length: float,
    radius: float,
    solid: m3.Manifold,
) -> tuple[np.ndarray, float, float]:
    """One try at a residual string's centre line (K, 3) m: a random smooth curve in the
    site's tangent plane carried on the surface (``radius`` + a 0.02-0.15 mm gap above
    it), one arch lifting it up to 1 mm, its first end sunk into the surface. Returns it,
    its arch height (mm) and the largest step of the surface under it from one point to
    the next (mm; inf where it leaves the part): a step of 0.3 mm or more would take the
    string through a wall or off an edge."""
    K = max(24, int(np.ceil(length / 0.2)) + 1)
    sm = np.linspace(0.0, length, K)
    # Heading: a random start, curling one way (0.1-0.5 /mm) with a smooth random wobble
    # on top (radius of curvature >= 0.5 mm).
    curl = rng.choice([-1.0, 1.0]) * rng.uniform(0.1, 0.5)
    curv = curl + _smooth_noise(rng, sm, rng.uniform(0.5, 1.0) * length) * rng.uniform(0.5, 1.5)
    heading = rng.uniform(0, 2 * np.pi) + np.concatenate([[0.0], np.cumsum(curv[1:] * np.diff(sm))])
    xy = np.concatenate(
        [
            [[0.0, 0.0]],
            np.cumsum(
                np.stack([np.cos(heading[1:]), np.sin(heading[1:])], 1) * np.diff(sm)[:, None], 0
            ),
        ]
    )
    # Height above the surface: a small gap, one arch, the start sunk by half a radius.
    gap = rng.uniform(0.02, 0.15)
    arch_h = float(rng.uniform(0.1, 1.0))
    a0, a1 = sorted(rng.uniform(0.0, length, 2))
    a1 = max(a1, a0 + 0.2 * length)
    arch = np.where((sm > a0) & (sm < a1), np.sin(np.pi * (sm - a0) / (a1 - a0)) ** 2, 0.0)
    rise = np.clip(sm / max(4 * radius, 0.3), 0.0, 1.0)
    lift = -0.5 * radius + rise * (1.5 * radius + gap + arch_h * arch)
    F = frame_at(site)
    plane = site.position + (xy[:, :1] * F[:3, 0] + xy[:, 1:] * F[:3, 1]) * MM
    base = np.zeros(K)
    hit = np.ones(K, dtype=bool)
    for k in range(K):
        q, _ = surface_point(solid, plane[k], site.normal, reach_mm=4.0)
        hit[k] = q is not plane[k]
        base[k] = (q - site.position) @ site.normal / MM if hit[k] else -np.inf
    # The string bridges dips narrower than 2.4 mm (a groove) instead of following them,
    # except where it is stuck on (its first 0.3 mm, sunk into the surface there).
    raw = base.copy()
    base = maximum_filter1d(base, size=int(np.ceil(2.4 / (sm[1] - sm[0]))) | 1, mode="nearest")
    base[sm < 0.3] = raw[sm < 0.3]
    base[~np.isfinite(base)] = 0.0
    jump = float(np.abs(np.diff(base)).max())
    pts = plane + ((base + lift) * MM)[:, None] * site.normal
    return pts, arch_h, jump if hit.all() else np.inf


def _tube(pts: np.ndarray, radius: float) -> m3.Manifold:
    """A tube of ``radius`` mm along the polyline ``pts`` (K, 3) m (frames carried along it
    by parallel transport), flat at its ends."""
    K = len(pts)
    s = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(pts, axis=0), axis=1))])
    T = np.gradient(pts, s, axis=0)
    T /= np.linalg.norm(T, axis=1, keepdims=True)
    helper = np.array([0.0, 0.0, 1.0]) if abs(T[0, 2]) < 0.9 else np.array([1.0, 0.0, 0.0])
    N = np.zeros_like(T)
    N[0] = np.cross(T[0], helper)
    N[0] /= np.linalg.norm(N[0])
    for k in range(1, K):
        n = N[k - 1] - (N[k - 1] @ T[k]) * T[k]
        N[k] = n / np.linalg.norm(n)
    B = np.cross(T, N)
    circle = m3.CrossSection.circle(1.0, STRING_SEGMENTS)
    template = m3.Manifold.extrude(circle, 1.0, n_divisions=K - 2)
    Pm = pts / MM

    def warp(v: np.ndarray) -> np.ndarray:
        sv = np.clip(v[:, 2], 0.0, 1.0) * s[-1]
        c = np.stack([np.interp(sv, s, Pm[:, i]) for i in range(3)], axis=1)
        n = np.stack([np.interp(sv, s, N[:, i]) for i in range(3)], axis=1)
        b = np.stack([np.interp(sv, s, B[:, i]) for i in range(3)], axis=1)
        return np.asarray(c + radius * (v[:, :1] * n + v[:, 1:2] * b))

    return template.warp_batch(warp)


def _residual_string(
    ctx: PartContext, site: SurfaceSite, rng: np.random.Generator, size: tuple[float, float]
) -> Defect:
    """A residual plastic string (angel hair): 0.1-0.3 mm thick, ``length`` mm long, stuck
    to the surface at one end and lying curled over it, lifting off in one arch of up to
    1 mm. Its faces take the surface's material."""
    length = float(rng.uniform(*size))
    diameter = float(rng.uniform(0.1, 0.3))
    solid = union_model(ctx.model)
    best: tuple[np.ndarray, float, float] | None = None
    for _ in range(40):  # the flattest of up to 40 tries, the first with no step
        path = _string_path(ctx, site, rng, length, diameter / 2, solid)
        if best is None or path[2] < best[2]:
            best = path
        if best[2] < 0.3:
            break
    assert best is not None
    pts, arch_h, _ = best
    tool = _tube(pts, diameter / 2)
    rec = DefectRecord(
        "residual_string",
        length,
        {
            "length_mm": round(length, 3),
            "diameter_mm": round(diameter, 3),
            "arch_mm": round(arch_h, 3),
            "position_mm": pos_mm(site),
        },
    )
    return Defect("residual_string", (Step("add", tool),), rec, surface_label=site.label)


def _dust_particle(
    ctx: PartContext, site: SurfaceSite, rng: np.random.Generator, size: tuple[float, float]
) -> Defect:
    """Dust: 1-5 irregular grains (convex hulls of jittered points on a flattened
    ellipsoid), each ``size`` across (the record's size is the largest), lying within a
    few millimetres of the site on upward surface, sunk by a quarter of their height."""
    solid = union_model(ctx.model)
    n = int(rng.integers(1, 6))
    spread = float(rng.uniform(0.5, 3.0))
    grains: list[m3.Manifold] = []
    sizes: list[float] = []
    F = frame_at(site)
    for i in range(30 * n):
        if len(grains) == n:
            break
        g = float(rng.uniform(*size))
        if i == 0:
            p, nrm = site.position, site.normal
        else:
            r, a = spread * np.sqrt(rng.random()), rng.uniform(0, 2 * np.pi)
            p0 = site.position + (r * np.cos(a) * F[:3, 0] + r * np.sin(a) * F[:3, 1]) * MM
            p, nrm = surface_point(solid, p0, site.normal)
            if p is p0 or nrm[2] < 0.4 or abs((p - p0) @ site.normal) > 1.0 * MM:
                continue
        semi = np.array([0.5, 0.5 * rng.uniform(0.5, 0.9), 0.5 * rng.uniform(0.35, 0.7)]) * g
        dirs = rng.normal(size=(14, 3))
        dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
        pts = dirs * semi * rng.uniform(0.7, 1.0, (14, 1))
        pts = np.concatenate([pts, [[semi[0], 0, 0], [-semi[0], 0, 0]]])
        gsite = SurfaceSite(p, nrm, _across(nrm, rng))
        spin = make_pose(rotation_matrix(rng.uniform(-0.3, 0.3, 3)), np.zeros(3))
        T = frame_at(gsite, offset_m=0.5 * semi[2] * MM) @ spin
        grains.append(m3.Manifold.hull_points(pts).transform(to_mm_transform(T)))
        sizes.append(round(g, 3))
    if not grains:
        raise GeometryError("dust_particle: no room for a grain")
    tool = m3.Manifold.batch_boolean(grains, m3.OpType.Add)
    look = (("seed", float(rng.integers(0, 2**31 - 1))),)
    rec = DefectRecord(
        "dust_particle",
        max(sizes),
        {
            "grains": len(sizes),
            "grain_sizes_mm": sizes,
            "spread_mm": round(spread, 3),
            "position_mm": pos_mm(site),
        },
    )
    return Defect("dust_particle", (Step("add", tool),), rec, "dust", look, site.label)


def _across(n: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random unit tangent to the surface of normal ``n``."""
    helper = np.array([0.0, 0.0, 1.0]) if abs(n[2]) < 0.9 else np.array([1.0, 0.0, 0.0])
    t0 = np.cross(n, helper)
    t0 /= np.linalg.norm(t0)
    ang = rng.uniform(0, 2 * np.pi)
    return np.asarray(np.cos(ang) * t0 + np.sin(ang) * np.cross(n, t0))


register_defect_kind(
    DefectKind(
        "short_shot",
        "moulding",
        _short_shot,
        (4.0, 12.0),
        placement="edge",
        description="incomplete filling: the rim missing at the flow end (length along it)",
    )
)
register_defect_kind(
    DefectKind(
        "flash",
        "moulding",
        _flash,
        (4.0, 15.0),
        placement="edge",
        description="a 0.1-0.3 mm fin sticking out 0.5-2 mm along the parting line (length)",
    )
)
register_defect_kind(
    DefectKind(
        "residual_string",
        "moulding",
        _residual_string,
        (3.0, 12.0),
        min_normal_z=0.5,
        description="a 0.1-0.3 mm thick plastic string curled on the surface (length)",
    )
)
register_defect_kind(
    DefectKind(
        "dust_particle",
        "moulding",
        _dust_particle,
        (0.2, 1.0),
        min_normal_z=0.5,
        description="1-5 dust grains on an upward surface (size of the largest grain)",
    )
)
