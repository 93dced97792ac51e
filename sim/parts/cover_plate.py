"""Screwed cover plate: a ``novel`` test category with screws as sub-components.

A milled aluminium inspection cover on a housing pad: a rectangular plate with rounded
corners and a chamfered top edge, with a central rounded-rectangle window (an opening
through the plate that shows the pad below), stands on a wider base block (the housing's
machined pad, one solid with the plate: the body). Pan-head screws with a cross recess
(ISO 7045, M4 nominal), in two rows along the long sides, pass through the plate into blind
holes in the base. Card: ``assets/parts/cover_plate.yaml``.

Sub-components (``PartModel.components``): ``screw_1`` .. ``screw_N``; every screw hole is
cut with the screw's own shaft cylinder, so removing a screw leaves its hole. Alternatives:
a socket-head cap screw (ISO 4762) in each screw's place.
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
    circle_feature,
    count,
    register_part_family,
    size_mm,
)

#: Broken edge (ISO 13715) of the socket-head screws, mm: deburring, not a design size.
EDGE_BREAK_MM = 0.4
#: The pan head's side is straight up to this fraction of its height, then rounds off.
PAN_SIDE = 0.5
_COS30 = float(np.cos(np.radians(30.0)))


@dataclass(frozen=True)
class CoverPlateParams:
    """Sizes in mm; nominal values, ranges and tolerances are on the part card."""

    plate_length_mm: float = size_mm()
    plate_width_mm: float = size_mm()
    plate_thickness_mm: float = size_mm()
    corner_radius_mm: float = size_mm()
    edge_chamfer_mm: float = size_mm()
    window_length_mm: float = size_mm()
    window_width_mm: float = size_mm()
    window_corner_radius_mm: float = size_mm()
    base_margin_mm: float = size_mm()
    base_height_mm: float = size_mm()
    screw_count: int = count(4, 16)
    screw_diameter_mm: float = size_mm()
    screw_head_diameter_mm: float = size_mm()
    screw_head_height_mm: float = size_mm()
    screw_length_mm: float = size_mm()
    screw_inset_mm: float = size_mm()
    segments: int = count(24, MAX_SEGMENTS)

    def screw_centres(self) -> list[tuple[float, float]]:
        """Screw axes (x, y), mm: half the screws in a row along each long side."""
        n = self.screw_count // 2
        sx = self.plate_length_mm / 2 - self.screw_inset_mm
        sy = self.plate_width_mm / 2 - self.screw_inset_mm
        xs = np.linspace(-sx, sx, n)
        return [(float(x), float(y)) for y in (-sy, sy) for x in xs]

    def validate(self) -> None:
        """Raise SpecError naming the first parameter that makes an impossible part."""
        r_head = self.screw_head_diameter_mm / 2
        rc = self.corner_radius_mm
        inset = self.screw_inset_mm
        if inset < rc:  # a corner screw's head inside the plate's rounded corner
            head_in = np.hypot(rc - inset, rc - inset) + r_head <= rc - 0.5
        else:
            head_in = inset >= r_head + 0.5
        sy = self.plate_width_mm / 2 - inset
        n_row = self.screw_count // 2
        pitch = (self.plate_length_mm - 2 * inset) / max(n_row - 1, 1)
        check_rules(
            self,
            [
                (
                    "base_height_mm",
                    self.base_height_mm >= DEFECT_SITE_MARGIN_MM + 1.0,
                    f">= {DEFECT_SITE_MARGIN_MM + 1.0:g} (defects sit above the lowest "
                    f"{DEFECT_SITE_MARGIN_MM:g} mm, where the part stands)",
                ),
                (
                    "plate_length_mm",
                    self.plate_length_mm >= self.plate_width_mm,
                    ">= plate_width_mm (the long side runs along x)",
                ),
                (
                    "corner_radius_mm",
                    self.edge_chamfer_mm + 1 < rc < self.plate_width_mm / 2,
                    "in (edge_chamfer_mm + 1, plate_width_mm / 2)",
                ),
                (
                    "edge_chamfer_mm",
                    2 * self.edge_chamfer_mm < self.plate_thickness_mm,
                    "< plate_thickness_mm / 2",
                ),
                (
                    "plate_thickness_mm",
                    self.plate_thickness_mm + self.screw_diameter_mm <= self.screw_length_mm,
                    "<= screw_length_mm - screw_diameter_mm (a diameter of thread in the base)",
                ),
                (
                    "window_length_mm",
                    self.window_length_mm
                    <= self.plate_length_mm - 2 * inset - self.screw_head_diameter_mm,
                    "<= plate_length_mm - 2 * screw_inset_mm - screw_head_diameter_mm",
                ),
                (
                    "window_width_mm",
                    self.window_width_mm / 2 < sy - r_head - 1,
                    "< plate_width_mm - 2 * screw_inset_mm - screw_head_diameter_mm - 2 (the "
                    "window clear of the screw heads)",
                ),
                (
                    "window_corner_radius_mm",
                    self.window_corner_radius_mm < self.window_width_mm / 2 - 0.5,
                    "< window_width_mm / 2 - 0.5",
                ),
                (
                    "plate_width_mm",
                    self.window_width_mm + 4 < self.plate_width_mm,
                    "> window_width_mm + 4",
                ),
                (
                    "base_margin_mm",
                    self.base_margin_mm > self.edge_chamfer_mm + 1,
                    "> edge_chamfer_mm + 1 (a step around the plate)",
                ),
                (
                    "screw_count",
                    self.screw_count % 2 == 0 and pitch > self.screw_head_diameter_mm + 1,
                    "even (two rows), with heads spaced screw_head_diameter_mm + 1 apart",
                ),
                (
                    "screw_diameter_mm",
                    self.screw_head_diameter_mm >= 1.6 * self.screw_diameter_mm,
                    "<= screw_head_diameter_mm / 1.6",
                ),
                (
                    "screw_head_height_mm",
                    self.screw_head_height_mm >= 0.6 * self.screw_diameter_mm,
                    ">= 0.6 * screw_diameter_mm",
                ),
                (
                    "screw_length_mm",
                    self.screw_length_mm - self.plate_thickness_mm < self.base_height_mm - 2,
                    "< plate_thickness_mm + base_height_mm - 2 (blind holes in the base)",
                ),
                (
                    "screw_inset_mm",
                    head_in,
                    "to keep the screw heads on the plate, rounded corners included",
                ),
                (
                    "screw_head_diameter_mm",
                    r_head < inset,
                    "< 2 * screw_inset_mm",
                ),
            ],
        )


def _rounded_rect(length: float, width: float, radius: float, seg: int) -> m3.CrossSection:
    return m3.CrossSection.square((length - 2 * radius, width - 2 * radius), center=True).offset(
        radius, m3.JoinType.Round, circular_segments=seg
    )


def _chamfered_slab(outline: m3.CrossSection, z0: float, z1: float, chamfer: float) -> m3.Manifold:
    """A convex slab from z0 to z1 with the outline, its top edge chamfered by ``chamfer``."""
    pts = []
    for poly, z in (
        (outline, z0),
        (outline, z1 - chamfer),
        (outline.offset(-chamfer, m3.JoinType.Round), z1),
    ):
        for loop in poly.to_polygons():
            pts += [(float(x), float(y), z) for x, y in loop]
    return m3.Manifold.hull_points(pts)


def _profile_revolve(points: list[tuple[float, float]], segments: int) -> m3.Manifold:
    return m3.Manifold.revolve(m3.CrossSection([points]), circular_segments=segments)


def _pan_head(diameter: float, height: float, seg: int) -> m3.Manifold:
    """An ISO 7045 pan head standing on z = 0: a low dome with a cross recess."""
    r = diameter / 2
    rr = (1 - PAN_SIDE) * height  # radius of the rounded top edge
    a = np.radians(np.linspace(0.0, 90.0, 7))
    pts = [(0.0, 0.0), (r, 0.0)]
    pts += [(r - rr + rr * float(np.cos(t)), PAN_SIDE * height + rr * float(np.sin(t))) for t in a]
    pts.append((0.0, height))
    head = _profile_revolve(pts, seg)
    depth = 0.5 * height
    arm = m3.Manifold.cube((0.55 * diameter, 0.12 * diameter, depth + 1), center=True)
    cross = arm + arm.rotate((0.0, 0.0, 90.0))
    return head - cross.translate((0.0, 0.0, height - depth / 2 + 0.5))


def _socket_cap_head(diameter: float, height: float, shaft: float, seg: int) -> m3.Manifold:
    """An ISO 4762 socket head standing on z = 0: a cylinder, broken top edge, hex socket."""
    r = diameter / 2
    e = EDGE_BREAK_MM
    head = _profile_revolve(
        [(0.0, 0.0), (r, 0.0), (r, height - e), (r - e, height), (0.0, height)], seg
    )
    s = 0.75 * shaft  # socket across flats (M4: 3 mm)
    socket = m3.Manifold.cylinder(0.5 * shaft + 1, s / (2 * _COS30), circular_segments=6)
    return head - socket.translate((0, 0, height - 0.5 * shaft))


def _rounded_rect_loop(
    length: float, width: float, radius: float, z: float, n: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """n points evenly spaced along a rounded rectangle at height z: positions, outward
    (horizontal) unit normals and counter-clockwise unit tangents."""
    a, b = length / 2 - radius, width / 2 - radius  # corner arc centres (+-a, +-b)
    quarter = np.pi * radius / 2
    pieces = [2 * b, quarter, 2 * a, quarter, 2 * b, quarter, 2 * a, quarter]
    edges = np.concatenate([[0.0], np.cumsum(pieces)])
    s = np.linspace(0.0, edges[-1], n, endpoint=False)
    pos, nrm = np.zeros((n, 3)), np.zeros((n, 3))
    corners = [(a, b), (-a, b), (-a, -b), (a, -b)]
    for i, si in enumerate(s):
        k = int(np.searchsorted(edges, si, side="right") - 1)
        u = si - edges[k]
        side = k // 2
        ang = side * np.pi / 2  # outward normal angle of straight side `side`
        if k % 2 == 0:  # straight side, from the end of the previous corner's arc
            n2 = np.array([np.cos(ang), np.sin(ang)])
            p2 = np.array(corners[side - 1]) + radius * n2 + u * np.array([-n2[1], n2[0]])
        else:  # corner arc about corners[side]
            n2 = np.array([np.cos(ang + u / radius), np.sin(ang + u / radius)])
            p2 = np.array(corners[side]) + radius * n2
        pos[i] = (p2[0], p2[1], z)
        nrm[i] = (n2[0], n2[1], 0.0)
    tan = np.stack([-nrm[:, 1], nrm[:, 0], np.zeros(n)], axis=1)
    return pos, nrm, tan


def cover_plate(params: CoverPlateParams) -> PartModel:
    """Build the cover plate on its base block and its screws (mm, object frame, z up)."""
    params.validate()
    p = params
    seg = int(p.segments)
    seg_small = max(12, seg // 4)  # screw shafts
    hb, t, ch = p.base_height_mm, p.plate_thickness_mm, p.edge_chamfer_mm
    z_top = hb + t
    m = p.base_margin_mm

    base_2d = _rounded_rect(
        p.plate_length_mm + 2 * m, p.plate_width_mm + 2 * m, p.corner_radius_mm + m, seg
    )
    base = _chamfered_slab(base_2d, 0.0, hb, ch)
    plate_2d = _rounded_rect(p.plate_length_mm, p.plate_width_mm, p.corner_radius_mm, seg)
    plate = _chamfered_slab(plate_2d, hb - 1.0, z_top, ch)  # 1 mm into the base
    window_2d = _rounded_rect(p.window_length_mm, p.window_width_mm, p.window_corner_radius_mm, seg)
    # The window cutter overshoots the plate top by 1 mm and sinks 1 mm into the base.
    window = m3.Manifold.extrude(window_2d, t + 2).translate((0.0, 0.0, hb - 1.0))
    centres = p.screw_centres()
    shaft = m3.Manifold.cylinder(
        p.screw_length_mm + 1, p.screw_diameter_mm / 2, circular_segments=seg_small
    )
    shafts = [shaft.translate((x, y, z_top - p.screw_length_mm)) for x, y in centres]
    body = m3.Manifold.batch_boolean([base + plate, window, *shafts], m3.OpType.Subtract)

    pan = _pan_head(p.screw_head_diameter_mm, p.screw_head_height_mm, seg // 2)
    cap = _socket_cap_head(  # ISO 4762: head diameter ~1.5-1.75 d, height d
        min(1.75 * p.screw_diameter_mm, p.screw_head_diameter_mm),
        p.screw_diameter_mm,
        p.screw_diameter_mm,
        seg // 2,
    )
    components: dict[str, m3.Manifold] = {}
    alternatives: dict[str, m3.Manifold] = {}
    for k, ((x, y), s) in enumerate(zip(centres, shafts, strict=True), start=1):
        components[f"screw_{k}"] = s + pan.translate((x, y, z_top))
        alternatives[f"screw_{k}"] = s + cap.translate((x, y, z_top))

    # Features (mm): chamfered edges that chip, the window's edge, the screw heads' domes.
    pos, nrm, tan = _rounded_rect_loop(
        p.plate_length_mm - ch,
        p.plate_width_mm - ch,
        p.corner_radius_mm - ch / 2,
        z_top - ch / 2,
        160,
    )
    plate_edge = Feature(pos, nrm + (0.0, 0.0, 1.0), tan)
    pos, nrm, tan = _rounded_rect_loop(
        p.plate_length_mm + 2 * m - ch,
        p.plate_width_mm + 2 * m - ch,
        p.corner_radius_mm + m - ch / 2,
        hb - ch / 2,
        160,
    )
    base_edge = Feature(pos, nrm + (0.0, 0.0, 1.0), tan)
    pos, nrm, tan = _rounded_rect_loop(
        p.window_length_mm, p.window_width_mm, p.window_corner_radius_mm, z_top, 96
    )
    window_edge = Feature(pos, -nrm + (0.0, 0.0, 1.0), tan)
    rr = (1 - PAN_SIDE) * p.screw_head_height_mm
    r_dome = p.screw_head_diameter_mm / 2 - rr + rr * np.cos(np.pi / 4)
    z_dome = z_top + PAN_SIDE * p.screw_head_height_mm + rr * np.sin(np.pi / 4)
    heads = [circle_feature(r_dome, z_dome, (1.0, 0.0, 1.0), n=12) for _ in centres]
    screw_heads = Feature(
        np.concatenate(
            [f.positions + (x, y, 0.0) for f, (x, y) in zip(heads, centres, strict=True)]
        ),
        np.concatenate([f.normals for f in heads]),
        np.concatenate([f.tangents for f in heads if f.tangents is not None]),
    )
    features = {
        "plate_edge": plate_edge,
        "window_edge": window_edge,
        "base_edge": base_edge,
        "screw_heads": screw_heads,
    }
    return PartModel(body, components, alternatives, features)


register_part_family("cover_plate", CoverPlateParams, cover_plate)
