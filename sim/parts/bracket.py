"""Bracket: a milled aluminium L-shaped mounting bracket with a gusset rib.

A base plate (along x) with two slotted holes for adjustable mounting and an upright leg at
its -x end with one through hole above a triangular gusset rib that stiffens the corner. The
inside corner between plate and leg is filleted (the bend radius); the leg's top corners and
the base plate's free corners are rounded. The part stands on the base plate's bottom face.
Card: ``assets/parts/bracket.yaml``.
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
    check_rules,
    count,
    register_part_family,
    size_mm,
)

#: How far the gusset reaches into the plate and the leg it joins (mm): overlapping solids
#: instead of coplanar faces.
EMBED_MM = 0.5


@dataclass(frozen=True)
class BracketParams:
    """Sizes in mm; nominal values, ranges and tolerances are on the part card."""

    base_length_mm: float = size_mm()
    width_mm: float = size_mm()
    leg_height_mm: float = size_mm()
    thickness_mm: float = size_mm()
    bend_radius_mm: float = size_mm()
    corner_radius_mm: float = size_mm()
    slot_width_mm: float = size_mm()
    slot_length_mm: float = size_mm()
    slot_offset_mm: float = size_mm()
    leg_hole_diameter_mm: float = size_mm()
    gusset_size_mm: float = size_mm()
    gusset_thickness_mm: float = size_mm()
    segments: int = count(12, MAX_SEGMENTS)

    # Derived positions (mm, object frame).
    def leg_inner_x(self) -> float:
        """x of the leg's inner face."""
        return -self.base_length_mm / 2 + self.thickness_mm

    def slot_center_x(self) -> float:
        """x of the slots' centres: the middle of the plate beyond the bend."""
        return (self.leg_inner_x() + self.bend_radius_mm + self.base_length_mm / 2) / 2

    def leg_hole_z(self) -> float:
        """Height of the leg hole's axis: midway between the gusset top and the leg top."""
        return (self.thickness_mm + self.gusset_size_mm + self.leg_height_mm) / 2

    def validate(self) -> None:
        """Raise SpecError naming the first parameter that makes an impossible part."""
        w2 = self.width_mm / 2
        free = self.base_length_mm - self.thickness_mm - self.bend_radius_mm
        slot_end_x = self.slot_center_x() + self.slot_length_mm / 2
        slot_side_y = self.slot_offset_mm + self.slot_width_mm / 2
        rc = self.corner_radius_mm
        check_rules(
            self,
            [
                (
                    "thickness_mm",
                    self.thickness_mm >= DEFECT_SITE_MARGIN_MM + 1.0,
                    f">= {DEFECT_SITE_MARGIN_MM + 1.0:g} (defects sit above the lowest "
                    f"{DEFECT_SITE_MARGIN_MM:g} mm, where the part stands)",
                ),
                (
                    "bend_radius_mm",
                    self.bend_radius_mm <= self.gusset_size_mm / 2 - 1.0,
                    "<= gusset_size_mm / 2 - 1",
                ),
                (
                    "gusset_size_mm",
                    self.gusset_size_mm <= free - 2.0,
                    "<= the plate beyond the leg, base_length_mm - thickness_mm - "
                    "bend_radius_mm - 2",
                ),
                (
                    "leg_hole_diameter_mm",
                    self.leg_height_mm - self.thickness_mm - self.gusset_size_mm
                    >= self.leg_hole_diameter_mm + 4.0,
                    "small enough to fit between the gusset and the leg top with 2 mm to spare "
                    "(<= leg_height_mm - thickness_mm - gusset_size_mm - 4)",
                ),
                (
                    "slot_width_mm",
                    self.slot_width_mm < self.slot_length_mm,
                    "< slot_length_mm",
                ),
                (
                    "slot_length_mm",
                    self.slot_length_mm <= free - 6.0,
                    "<= base_length_mm - thickness_mm - bend_radius_mm - 6 (3 mm each end)",
                ),
                (
                    "slot_offset_mm",
                    self.slot_offset_mm - self.slot_width_mm / 2
                    >= self.gusset_thickness_mm / 2 + 1.0
                    and slot_side_y <= w2 - 1.5,
                    "to put the slots between the gusset and the plate's sides (1 mm and "
                    "1.5 mm to spare)",
                ),
                (
                    "corner_radius_mm",
                    rc <= w2 - self.leg_hole_diameter_mm / 2 - 2.0
                    and self.leg_hole_z() + self.leg_hole_diameter_mm / 2 + 1.0
                    <= self.leg_height_mm
                    and (slot_end_x <= self.base_length_mm / 2 - rc or slot_side_y <= w2 - rc),
                    "small enough to clear the leg hole and the slots",
                ),
            ],
        )


def _corner_cutter(r: float, seg: int) -> m3.CrossSection:
    """The waste of a rounded corner of radius r, for a corner at the origin pointing +x +y
    (the part in x < 0, y < 0): the region outside a quarter arc about (-r, -r), out to 1.

    The arc's two end points (where it is tangent to the faces) are left out: the cutter
    leaves each face from 1 mm outside along a straight line to the first interior arc
    point, so it crosses the faces instead of touching them (a tangent touch would leave
    degenerate slivers in the boolean).
    """
    k = max(3, seg // 4)
    phi = np.linspace(0.0, np.pi / 2, k + 1)[1:-1]
    arc = np.stack([-r + r * np.cos(phi), -r + r * np.sin(phi)], 1)
    poly = np.concatenate([[(1.0, -r)], arc, [(-r, 1.0), (1.0, 1.0)]])
    x, y = poly[:, 0], poly[:, 1]
    if np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)) < 0:  # make it counter-clockwise
        poly = poly[::-1]
    return m3.CrossSection([poly])


def bracket(params: BracketParams) -> PartModel:
    """Build the bracket (mm, object frame, z up; the leg at the -x end)."""
    params.validate()
    p = params
    seg = int(p.segments)
    L, W, H, t, rb = (
        p.base_length_mm,
        p.width_mm,
        p.leg_height_mm,
        p.thickness_mm,
        p.bend_radius_mm,
    )
    xi = p.leg_inner_x()
    # The L profile in (x, z) with the filleted inside corner, extruded along y.
    arc = np.linspace(1.5 * np.pi, np.pi, max(4, seg // 4) + 1)
    fillet = np.stack([xi + rb + rb * np.cos(arc), t + rb + rb * np.sin(arc)], 1)
    profile = np.concatenate(
        [[(-L / 2, 0.0), (L / 2, 0.0), (L / 2, t)], fillet, [(xi, H), (-L / 2, H)]]
    )
    # extrude runs along +z; rotating +90 deg about x takes (u, v, w) to (u, -w, v).
    body = (
        m3.Manifold.extrude(m3.CrossSection([profile]), W)
        .rotate((90.0, 0.0, 0.0))
        .translate((0.0, W / 2, 0.0))
    )
    g, gt = p.gusset_size_mm, p.gusset_thickness_mm
    tri = np.array([(xi - EMBED_MM, t - EMBED_MM), (xi + g, t - EMBED_MM), (xi - EMBED_MM, t + g)])
    gusset = (
        m3.Manifold.extrude(m3.CrossSection([tri]), gt)
        .rotate((90.0, 0.0, 0.0))
        .translate((0.0, gt / 2, 0.0))
    )
    body = body + gusset

    # Everything cut away, in one subtraction: slots, the leg hole and the corner rounds.
    cutters = []
    sw, sl = p.slot_width_mm, p.slot_length_mm
    xc = p.slot_center_x()
    stadium = m3.CrossSection.batch_hull(
        [
            m3.CrossSection.circle(sw / 2, seg // 2).translate((sx * (sl - sw) / 2, 0.0))
            for sx in (-1, 1)
        ]
    )
    slot = m3.Manifold.extrude(stadium, t + 2.0).translate((0.0, 0.0, -1.0))
    for sy in (-1, 1):
        cutters.append(slot.translate((xc, sy * p.slot_offset_mm, 0.0)))
    zh = p.leg_hole_z()
    hole = m3.Manifold.cylinder(t + 2.0, p.leg_hole_diameter_mm / 2, circular_segments=seg)
    cutters.append(hole.rotate((0.0, 90.0, 0.0)).translate((-L / 2 - 1.0, 0.0, zh)))
    rc = p.corner_radius_mm
    corner = _corner_cutter(rc, seg)
    # Leg top corners: (y, z) corners at (+-W/2, H), extruded along x through the leg.
    leg_corner = m3.Manifold.extrude(corner, t + 2.0).transform(
        np.array([[0.0, 0.0, 1.0, 0.0], [1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]])
    )  # (u, v, w) -> (w, u, v): u along y, v along z, w along x
    for sy in (-1, 1):
        cutters.append(leg_corner.scale((1.0, sy, 1.0)).translate((-L / 2 - 1.0, sy * W / 2, H)))
    # Plate end corners: (x, y) corners at (L/2, +-W/2), through the plate.
    plate_corner = m3.Manifold.extrude(corner, t + 2.0).translate((L / 2, W / 2, -1.0))
    cutters.append(plate_corner)
    cutters.append(plate_corner.mirror((0.0, 1.0, 0.0)))
    body = body - m3.Manifold.compose(cutters)

    # ---- features --------------------------------------------------------------------------
    n = 24
    ys = np.linspace(-(W / 2 - rc) + 0.5, W / 2 - rc - 0.5, n)
    leg_top = Feature(
        np.concatenate(
            [np.stack([np.full(n, -L / 2), ys, np.full(n, H)], 1),
             np.stack([np.full(n, xi), ys, np.full(n, H)], 1)]
        ),
        np.concatenate([np.tile([-1.0, 0.0, 1.0], (n, 1)), np.tile([1.0, 0.0, 1.0], (n, 1))]),
        np.tile([0.0, 1.0, 0.0], (2 * n, 1)),
    )  # fmt: skip
    # The bend: the middle of the inside fillet, across the width, clear of the gusset.
    yb = np.linspace(-W / 2 + 0.5, W / 2 - 0.5, 2 * n)
    yb = yb[np.abs(yb) > gt / 2 + 1.0]
    c45 = np.sqrt(0.5)
    bend = Feature(
        np.stack(
            [np.full(len(yb), xi + rb - rb * c45), yb, np.full(len(yb), t + rb - rb * c45)], 1
        ),
        np.tile([1.0, 0.0, 1.0], (len(yb), 1)),
        np.tile([0.0, 1.0, 0.0], (len(yb), 1)),
    )
    # The slot edges: round the top edge of each slot; normals into the slot and up.
    half = (sl - sw) / 2
    r = sw / 2
    straight = np.linspace(-half, half, 6)
    th = np.linspace(-np.pi / 2, np.pi / 2, 7)
    loc_p, loc_n, loc_t = [], [], []
    for sx in (-1.0, 1.0):  # the straight sides at y = +-r, then the round ends at x = +-half
        loc_p.append(np.stack([straight, np.full(6, sx * r)], 1))
        loc_n.append(np.tile([0.0, -sx], (6, 1)))
        loc_t.append(np.tile([1.0, 0.0], (6, 1)))
        cx, sy_ = sx * np.cos(th), np.sin(th)
        loc_p.append(np.stack([sx * half + r * cx, r * sy_], 1))
        loc_n.append(-np.stack([cx, sy_], 1))
        loc_t.append(np.stack([-sy_, cx], 1))
    lp, ln, lt = np.concatenate(loc_p), np.concatenate(loc_n), np.concatenate(loc_t)
    sp, sn, st = [], [], []
    for side in (-1.0, 1.0):
        sp.append(
            np.column_stack(
                [lp[:, 0] + xc, lp[:, 1] + side * p.slot_offset_mm, np.full(len(lp), t)]
            )
        )
        sn.append(np.column_stack([ln, np.ones(len(ln))]))
        st.append(np.column_stack([lt, np.zeros(len(lt))]))
    slot_edges = Feature(np.concatenate(sp), np.concatenate(sn), np.concatenate(st))
    # The gusset's sloped edges: both long edges of its hypotenuse face.
    c = xi + g + t - EMBED_MM  # the hypotenuse: x + z = c
    gx = np.linspace(xi + 0.15 * g, xi + 0.85 * g, 12)
    gz = c - gx
    s2 = np.sqrt(0.5)
    gp, gn = [], []
    for side in (-1.0, 1.0):
        gp.append(np.stack([gx, np.full(len(gx), side * gt / 2), gz], 1))
        gn.append(np.tile([s2, side, s2], (len(gx), 1)))
    gusset_edge = Feature(
        np.concatenate(gp), np.concatenate(gn), np.tile([s2, 0.0, -s2], (2 * len(gx), 1))
    )
    features = {
        "leg_top_edge": leg_top,
        "bend": bend,
        "slot_edges": slot_edges,
        "gusset_edge": gusset_edge,
    }
    return PartModel(body, features=features)


register_part_family("bracket", BracketParams, bracket)
