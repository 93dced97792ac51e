"""Moulded ring: the injection-moulded polycarbonate ring of the PaDiM multi-view paper.

A thick ring whose outer wall is drafted from a circumferential parting line at mid-height
(the two mould halves meet there) and carries a ring of small tapered ribs (a knurl), with a
groove turned into the top face, a few small radial fins on the bore and a gate vestige: the
stub left where the melt entered, on the parting line in a rib-free pad. The melt fills the
ring both ways round from the gate and meets opposite it (the flow end, where a short shot
leaves material missing). Card: ``assets/parts/moulded_ring.yaml``.
"""

from __future__ import annotations

from dataclasses import dataclass

import manifold3d as m3
import numpy as np

from sim.parts import (
    DEFECT_SITE_MARGIN_MM,
    MAX_SEGMENTS,
    Feature,
    PartModel,
    angle_deg,
    check_rules,
    count,
    register_part_family,
    size_mm,
)

#: The small 45-degree chamfer on the ring's four circular edges (mm): moulded parts have no
#: knife edges.
EDGE_CHAMFER_MM = 0.5
#: How far the ribs, fins and gate reach into the wall they stand on (mm): overlapping
#: solids instead of coplanar faces.
EMBED_MM = 0.8


@dataclass(frozen=True)
class MouldedRingParams:
    """Sizes in mm; nominal values, ranges and tolerances are on the part card."""

    outer_diameter_mm: float = size_mm()
    inner_diameter_mm: float = size_mm()
    height_mm: float = size_mm()
    draft_deg: float = angle_deg(0.0, 10.0)
    rib_count: int = count(8, 128)
    rib_height_mm: float = size_mm()
    rib_width_mm: float = size_mm()
    groove_width_mm: float = size_mm()
    groove_depth_mm: float = size_mm()
    fin_count: int = count(0, 16)
    fin_length_mm: float = size_mm()
    gate_diameter_mm: float = size_mm()
    gate_length_mm: float = size_mm()
    segments: int = count(12, MAX_SEGMENTS)

    def top_radius(self) -> float:
        """The outer wall's radius at the top face (drafted in from the parting line)."""
        return self.outer_diameter_mm / 2 - self.height_mm / 2 * np.tan(np.radians(self.draft_deg))

    def validate(self) -> None:
        """Raise SpecError naming the first parameter that makes an impossible part."""
        r_out, r_in = self.outer_diameter_mm / 2, self.inner_diameter_mm / 2
        land = (self.top_radius() - r_in - self.groove_width_mm) / 2 - EDGE_CHAMFER_MM
        check_rules(
            self,
            [
                (
                    "height_mm",
                    self.height_mm >= DEFECT_SITE_MARGIN_MM + 3.0,
                    f">= {DEFECT_SITE_MARGIN_MM + 3.0:g} (defects sit above the lowest "
                    f"{DEFECT_SITE_MARGIN_MM:g} mm, where the part stands)",
                ),
                (
                    "inner_diameter_mm",
                    self.inner_diameter_mm <= self.outer_diameter_mm - 8.0,
                    "<= outer_diameter_mm - 8 (a wall of at least 4 mm)",
                ),
                (
                    "draft_deg",
                    self.height_mm / 2 * np.tan(np.radians(self.draft_deg)) < EMBED_MM / 2,
                    "small enough that the wall leans in < 0.4 mm over half the height",
                ),
                (
                    "groove_width_mm",
                    land >= 1.0,
                    "small enough to leave >= 1 mm lands each side of the top-face groove",
                ),
                (
                    "groove_depth_mm",
                    self.groove_depth_mm <= self.height_mm / 2 - 1.0,
                    "<= height_mm / 2 - 1",
                ),
                (
                    "rib_height_mm",
                    self.rib_height_mm <= (r_out - r_in) / 2,
                    "<= half the wall, (outer_diameter_mm - inner_diameter_mm) / 4",
                ),
                (
                    "rib_count",
                    self.rib_count * self.rib_width_mm <= 0.6 * np.pi * self.outer_diameter_mm,
                    "small enough that the ribs stay apart (rib_count * rib_width_mm <= 0.6 "
                    "* pi * outer_diameter_mm)",
                ),
                (
                    "fin_length_mm",
                    self.fin_length_mm <= r_in - 5.0,
                    "<= inner_diameter_mm / 2 - 5 (the bore stays open)",
                ),
                (
                    "fin_count",
                    self.fin_count * self.rib_width_mm <= 0.5 * np.pi * self.inner_diameter_mm,
                    "small enough that the fins stay apart",
                ),
                (
                    "gate_diameter_mm",
                    self.gate_diameter_mm <= self.height_mm - 2 * EDGE_CHAMFER_MM - 2.0,
                    "<= height_mm - 3 (the gate sits on the wall)",
                ),
            ],
        )


def _rib_section(angles: np.ndarray, r0: float, r1: float, w0: float, w1: float) -> m3.CrossSection:
    """Tapered radial ribs (trapezoids from radius r0, width w0 to r1, width w1) at
    ``angles`` (radians), as one cross-section."""
    quad = np.array([[r0, -w0 / 2], [r1, -w1 / 2], [r1, w1 / 2], [r0, w0 / 2]])
    if r1 < r0:  # inward fins: keep the contours counter-clockwise
        quad = quad[::-1]
    contours = []
    for a in angles:
        c, s = np.cos(a), np.sin(a)
        rot = np.array([[c, -s], [s, c]])
        contours.append(quad @ rot.T)
    return m3.CrossSection(contours)


def _wrap(a: np.ndarray) -> np.ndarray:
    return (a + np.pi) % (2 * np.pi) - np.pi


def moulded_ring(params: MouldedRingParams) -> PartModel:
    """Build the moulded ring (mm, object frame, z up; the gate on the +x side)."""
    params.validate()
    p = params
    seg = int(p.segments)
    r_out, r_in, h = p.outer_diameter_mm / 2, p.inner_diameter_mm / 2, p.height_mm
    ch = EDGE_CHAMFER_MM
    zp = h / 2  # the parting line
    tan_d = np.tan(np.radians(p.draft_deg))

    def wall(z: float) -> float:  # the drafted outer wall's radius at height z
        return r_out - abs(z - zp) * tan_d

    # The ring's half cross-section (radius, z), counter-clockwise, revolved about z.
    profile = [
        (r_in + ch, 0.0),
        (wall(0.0) - ch, 0.0),
        (wall(ch), ch),
        (r_out, zp),
        (wall(h - ch), h - ch),
        (wall(h) - ch, h),
        (r_in + ch, h),
        (r_in, h - ch),
        (r_in, ch),
    ]
    body = m3.Manifold.revolve(m3.CrossSection([np.array(profile)]), seg)

    # The knurl: tapered ribs between the chamfers, none in a pad around the gate.
    # They reach into the wall past its facets (mid-facet, the polygon lies inside r_out).
    embed = EMBED_MM + r_out * (1 - np.cos(np.pi / seg))
    pitch = 2 * np.pi / p.rib_count
    rib_angles = (np.arange(p.rib_count) + 0.5) * pitch
    pad = (p.gate_diameter_mm / 2 + p.rib_width_mm / 2 + 0.6) / r_out
    rib_angles = rib_angles[np.abs(_wrap(rib_angles)) > pad]
    r_tip = r_out + p.rib_height_mm
    w_tip = 0.6 * p.rib_width_mm
    z0, z1 = ch + 0.2, h - ch - 0.2
    ribs = m3.Manifold.extrude(
        _rib_section(rib_angles, r_out - embed, r_tip, p.rib_width_mm, w_tip), z1 - z0
    ).translate((0, 0, z0))
    parts = [body, ribs]

    # Radial fins on the bore, from just above the bottom chamfer (like the ribs: no face
    # shared with the ring's) to 1 mm below the top chamfer.
    fin_top = h - ch - 1.0
    if p.fin_count > 0:
        fin_angles = np.arange(p.fin_count) * 2 * np.pi / p.fin_count + pitch / 4
        fins = m3.Manifold.extrude(
            _rib_section(
                fin_angles, r_in + EMBED_MM, r_in - p.fin_length_mm, p.rib_width_mm, w_tip
            ),
            fin_top - z0,
        ).translate((0, 0, z0))
        parts.append(fins)

    # The gate vestige: a short stub on the parting line at angle 0.
    gr = p.gate_diameter_mm / 2
    gate_seg = max(8, seg // 4)
    # Turned half a segment about its axis so that no vertex of the stub lies on the
    # parting line's crease (a degenerate sliver otherwise).
    gate = (
        m3.Manifold.cylinder(p.gate_length_mm + embed, gr, circular_segments=gate_seg)
        .rotate((0.0, 0.0, 180.0 / gate_seg))
        .rotate((0.0, 90.0, 0.0))
        .translate((r_out - embed, 0.0, zp))
    )
    parts.append(gate)
    body = m3.Manifold.batch_boolean(parts, m3.OpType.Add)

    # The top-face groove, midway across the top land.
    r_top = wall(h)
    rg = (r_in + r_top) / 2
    gw = p.groove_width_mm / 2
    groove_2d = m3.CrossSection(
        [np.array([(rg - gw, h - p.groove_depth_mm), (rg + gw, h - p.groove_depth_mm),
                   (rg + gw, h + 1.0), (rg - gw, h + 1.0)])]
    )  # fmt: skip
    body = body - m3.Manifold.revolve(groove_2d, seg)

    # ---- features --------------------------------------------------------------------------
    gate_tip = r_out + p.gate_length_mm
    ga = np.linspace(0, 2 * np.pi, 6, endpoint=False)
    gate_pos = np.concatenate(
        [
            [[gate_tip, 0.0, zp]],
            np.stack([np.full(6, gate_tip), 0.5 * gr * np.cos(ga), zp + 0.5 * gr * np.sin(ga)], 1),
        ]
    )
    gate_feat = Feature(gate_pos, np.tile([1.0, 0.0, 0.0], (len(gate_pos), 1)))

    # The parting line: between the ribs on the wall, and across the rib tips.
    gaps = np.arange(p.rib_count) * pitch
    gaps = gaps[np.abs(_wrap(gaps)) > (gr + 0.3) / r_out]
    pl_a = np.concatenate([gaps, rib_angles])
    pl_r = np.concatenate([np.full(len(gaps), r_out), np.full(len(rib_angles), r_tip)])
    c, s = np.cos(pl_a), np.sin(pl_a)
    pl_tangents = np.stack([-s, c, np.zeros_like(c)], 1)
    parting = Feature(
        np.stack([pl_r * c, pl_r * s, np.full(len(pl_a), zp)], 1),
        np.stack([c, s, np.zeros_like(c)], 1),
        pl_tangents,
    )

    # The top face: two lands either side of the groove.
    land_r = np.array([(r_in + ch + rg - gw) / 2, (rg + gw + r_top - ch) / 2])

    def top_sites(angles: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Positions, normals and tangents of top-face sites on both lands at ``angles``."""
        aa, rr = (x.ravel() for x in np.meshgrid(angles, land_r))
        ca, sa = np.cos(aa), np.sin(aa)
        return (
            np.stack([rr * ca, rr * sa, np.full(len(aa), h)], 1),
            np.tile([0.0, 0.0, 1.0], (len(aa), 1)),
            np.stack([-sa, ca, np.zeros_like(ca)], 1),
        )

    top = Feature(*top_sites(np.linspace(0, 2 * np.pi, 48, endpoint=False)))
    # The flow end: opposite the gate, where the two melt fronts meet last (the top face
    # and the wall there).
    end_pos, end_nrm, end_tan = top_sites(np.pi + np.linspace(-0.3, 0.3, 9))
    near = np.abs(_wrap(pl_a - np.pi)) <= 0.3
    flow_end = Feature(
        np.concatenate([end_pos, parting.positions[near]]),
        np.concatenate([end_nrm, parting.normals[near]]),
        np.concatenate([end_tan, pl_tangents[near]]),
    )

    # The rib tips: up each rib's tip face, tangents along the rib.
    zs = np.linspace(max(z0 + 0.3, DEFECT_SITE_MARGIN_MM + 0.2), z1 - 0.3, 3)
    aa, zz = np.meshgrid(rib_angles, zs)
    aa, zz = aa.ravel(), zz.ravel()
    ca, sa = np.cos(aa), np.sin(aa)
    rib_tips = Feature(
        np.stack([r_tip * ca, r_tip * sa, zz], 1),
        np.stack([ca, sa, np.zeros_like(ca)], 1),
        np.tile([0.0, 0.0, 1.0], (len(aa), 1)),
    )
    features = {
        "gate": gate_feat,
        "parting_line": parting,
        "flow_end": flow_end,
        "top_face": top,
        "rib_tips": rib_tips,
    }
    return PartModel(body, features=features)


register_part_family("moulded_ring", MouldedRingParams, moulded_ring)
