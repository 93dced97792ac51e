"""Flange bearing seat: AVATAR's training category (``base``).

A rounded-square flange plate with four bolt holes carries a cylindrical hub with a stepped
bore: a wider bearing seat at the top over a narrower through bore. Card:
``assets/parts/flange_bearing_seat.yaml``.
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


@dataclass(frozen=True)
class FlangeBearingSeatParams:
    """Sizes in mm; nominal values, ranges and tolerances are on the part card."""

    flange_width_mm: float = size_mm()
    flange_thickness_mm: float = size_mm()
    corner_radius_mm: float = size_mm()
    hub_diameter_mm: float = size_mm()
    hub_height_mm: float = size_mm()
    seat_diameter_mm: float = size_mm()
    seat_depth_mm: float = size_mm()
    bore_diameter_mm: float = size_mm()
    bolt_hole_diameter_mm: float = size_mm()
    bolt_offset_mm: float = size_mm()
    segments: int = count(12, MAX_SEGMENTS)

    def validate(self) -> None:
        """Raise SpecError naming the first parameter that makes an impossible part."""
        check_rules(
            self,
            [
                (
                    "flange_thickness_mm",
                    self.flange_thickness_mm >= DEFECT_SITE_MARGIN_MM + 1.0,
                    f">= {DEFECT_SITE_MARGIN_MM + 1.0:g} (defects sit above the lowest "
                    f"{DEFECT_SITE_MARGIN_MM:g} mm, where the part stands)",
                ),
                (
                    "hub_diameter_mm",
                    self.hub_diameter_mm < self.flange_width_mm,
                    "< flange_width_mm",
                ),
                (
                    "seat_diameter_mm",
                    self.seat_diameter_mm < self.hub_diameter_mm - 2,
                    "< hub_diameter_mm - 2",
                ),
                (
                    "bore_diameter_mm",
                    self.bore_diameter_mm < self.seat_diameter_mm,
                    "< seat_diameter_mm",
                ),
                (
                    "seat_depth_mm",
                    self.seat_depth_mm < self.hub_height_mm + self.flange_thickness_mm,
                    "< hub_height_mm + flange_thickness_mm",
                ),
                (
                    "corner_radius_mm",
                    2 * self.corner_radius_mm < self.flange_width_mm,
                    "< flange_width_mm / 2",
                ),
                (
                    "bolt_offset_mm",
                    self.bolt_offset_mm + self.bolt_hole_diameter_mm / 2 < self.flange_width_mm / 2
                    and np.hypot(self.bolt_offset_mm, self.bolt_offset_mm)
                    - self.bolt_hole_diameter_mm / 2
                    > self.hub_diameter_mm / 2,
                    "to put the bolt holes between the hub and the flange edge",
                ),
            ],
        )


def flange_bearing_seat(params: FlangeBearingSeatParams) -> PartModel:
    """Build the flange bearing seat (mm, object frame, z up)."""
    params.validate()
    p = params
    seg = int(p.segments)
    inner = p.flange_width_mm - 2 * p.corner_radius_mm
    plate_2d = m3.CrossSection.square((inner, inner), center=True).offset(
        p.corner_radius_mm, m3.JoinType.Round, circular_segments=seg
    )
    plate = m3.Manifold.extrude(plate_2d, p.flange_thickness_mm)
    total_h = p.flange_thickness_mm + p.hub_height_mm
    hub = m3.Manifold.cylinder(total_h, p.hub_diameter_mm / 2, circular_segments=seg)
    body = plate + hub
    # Cutters overshoot the faces they cut by 1 mm so no coplanar faces reach the boolean.
    bore = m3.Manifold.cylinder(total_h + 2, p.bore_diameter_mm / 2, circular_segments=seg)
    seat = m3.Manifold.cylinder(p.seat_depth_mm + 1, p.seat_diameter_mm / 2, circular_segments=seg)
    body = body - bore.translate((0, 0, -1)) - seat.translate((0, 0, total_h - p.seat_depth_mm))
    bolt = m3.Manifold.cylinder(
        p.flange_thickness_mm + 2, p.bolt_hole_diameter_mm / 2, circular_segments=seg // 2
    )
    holes = []
    for sx in (-1, 1):
        for sy in (-1, 1):
            body = body - bolt.translate((sx * p.bolt_offset_mm, sy * p.bolt_offset_mm, -1))
            holes.append((sx * p.bolt_offset_mm, sy * p.bolt_offset_mm))
    r_bolt = p.bolt_hole_diameter_mm / 2
    bolt_edges = [
        circle_feature(r_bolt, p.flange_thickness_mm, (1.0, 0.0, 1.0), n=24) for _ in holes
    ]
    bolt_edge = Feature(
        np.concatenate(
            [f.positions + (x, y, 0) for f, (x, y) in zip(bolt_edges, holes, strict=True)]
        ),
        np.concatenate([f.normals for f in bolt_edges]),
        np.concatenate([f.tangents for f in bolt_edges if f.tangents is not None]),
    )
    features = {
        # The rim of the hub top, the edge of the bearing seat and the bolt-hole edges:
        # where a dropped or knocked part chips.
        "hub_edge": circle_feature(p.hub_diameter_mm / 2, total_h, (1.0, 0.0, 1.0)),
        "seat_edge": circle_feature(p.seat_diameter_mm / 2, total_h, (-1.0, 0.0, 1.0)),
        "bolt_hole_edge": bolt_edge,
        # The bearing seat's cylindrical wall, mid-depth: where a bearing scores it.
        "seat_wall": circle_feature(
            p.seat_diameter_mm / 2, total_h - p.seat_depth_mm / 2, (-1.0, 0.0, 0.0)
        ),
    }
    return PartModel(body, features=features)


register_part_family("flange_bearing_seat", FlangeBearingSeatParams, flange_bearing_seat)
