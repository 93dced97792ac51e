"""Spur gear: a machined steel involute spur gear with a hub, a bore and a keyway.

The gear blank is a disc of ``tooth_count`` involute teeth (the flank is a polygon through
points of the true involute of the base circle, the root corners rounded), lying on its flat
bottom face; a cylindrical hub stands on its top face and a bore with a DIN 6885 style
keyway runs through both. Card: ``assets/parts/spur_gear.yaml``.
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
    circle_feature,
    count,
    register_part_family,
    size_mm,
)

#: Points along each involute flank of the tooth outline.
FLANK_POINTS = 6
#: Points along each tooth's tip land.
TIP_POINTS = 4
#: Addendum and dedendum in modules (ISO 53 basic rack: 1.0 m and 1.25 m).
ADDENDUM = 1.0
DEDENDUM = 1.25


def _inv(phi: np.ndarray | float) -> np.ndarray | float:
    """The involute function, tan(phi) - phi."""
    return np.tan(phi) - phi


@dataclass(frozen=True)
class SpurGearParams:
    """Sizes in mm; nominal values, ranges and tolerances are on the part card."""

    module_mm: float = size_mm()
    tooth_count: int = count(8, 200)
    pressure_angle_deg: float = angle_deg(14.5, 30.0)
    face_width_mm: float = size_mm()
    hub_diameter_mm: float = size_mm()
    hub_height_mm: float = size_mm()
    bore_diameter_mm: float = size_mm()
    keyway_width_mm: float = size_mm()
    keyway_depth_mm: float = size_mm()
    segments: int = count(12, MAX_SEGMENTS)

    # The gear's circles (mm).
    def pitch_radius(self) -> float:
        return self.module_mm * self.tooth_count / 2

    def base_radius(self) -> float:
        return self.pitch_radius() * float(np.cos(np.radians(self.pressure_angle_deg)))

    def tip_radius(self) -> float:
        return self.pitch_radius() + ADDENDUM * self.module_mm

    def root_radius(self) -> float:
        return self.pitch_radius() - DEDENDUM * self.module_mm

    def half_angle(self, r: np.ndarray | float) -> np.ndarray | float:
        """Half the angular thickness of a tooth at radius r (>= base radius), radians."""
        alpha = np.radians(self.pressure_angle_deg)
        phi = np.arccos(np.minimum(self.base_radius() / np.asarray(r), 1.0))
        return np.pi / (2 * self.tooth_count) + _inv(alpha) - _inv(phi)

    def validate(self) -> None:
        """Raise SpecError naming the first parameter that makes an impossible part."""
        tip_land = 2 * float(self.half_angle(self.tip_radius())) * self.tip_radius()
        key_outer = np.hypot(
            self.keyway_width_mm / 2, self.bore_diameter_mm / 2 + self.keyway_depth_mm
        )
        check_rules(
            self,
            [
                (
                    "face_width_mm",
                    self.face_width_mm >= DEFECT_SITE_MARGIN_MM + 3.0,
                    f">= {DEFECT_SITE_MARGIN_MM + 3.0:g} (defects sit above the lowest "
                    f"{DEFECT_SITE_MARGIN_MM:g} mm, where the part stands)",
                ),
                (
                    "tooth_count",
                    tip_land >= 0.2 * self.module_mm,
                    "large enough for teeth that are not pointed (a tip land >= 0.2 module)",
                ),
                (
                    "hub_diameter_mm",
                    self.hub_diameter_mm <= 2 * self.root_radius() - 4.0,
                    "<= the root diameter - 4, module_mm * (tooth_count - 2.5) - 4",
                ),
                (
                    "bore_diameter_mm",
                    self.bore_diameter_mm <= self.hub_diameter_mm - 8.0,
                    "<= hub_diameter_mm - 8 (a hub wall of at least 4 mm)",
                ),
                (
                    "keyway_width_mm",
                    self.keyway_width_mm <= 0.6 * self.bore_diameter_mm,
                    "<= 0.6 * bore_diameter_mm",
                ),
                (
                    "keyway_depth_mm",
                    key_outer <= self.hub_diameter_mm / 2 - 2.0,
                    "small enough to leave >= 2 mm of hub wall behind the keyway",
                ),
            ],
        )


def _tooth_outline(p: SpurGearParams) -> tuple[np.ndarray, np.ndarray]:
    """The gear outline (counter-clockwise polygon, (N, 2)) and the flank radii sampled."""
    z = int(p.tooth_count)
    rb, ra, rf = p.base_radius(), p.tip_radius(), p.root_radius()
    r0 = max(rb, rf)
    rs = np.linspace(r0, ra, FLANK_POINTS)
    psi = np.asarray(p.half_angle(rs))
    psi_tip = float(psi[-1])
    psi_root = float(psi[0])
    pitch = 2 * np.pi / z
    n_root = max(2, int(np.ceil((pitch - 2 * psi_root) / (2 * np.pi / p.segments))))
    tip = np.linspace(-psi_tip, psi_tip, TIP_POINTS)[1:-1]
    pts: list[np.ndarray] = []
    for k in range(z):
        th = k * pitch
        # Leading flank root to tip (a radial line below the base circle), the tip land,
        # the trailing flank tip to root, then the root arc to the next tooth.
        a = [th - psi_root] if rf < rb else []
        r = [rf] if rf < rb else []
        a += list(th - psi) + list(th + tip) + list(th + psi[::-1])
        r += list(rs) + [ra] * len(tip) + list(rs[::-1])
        if rf < rb:
            a.append(th + psi_root)
            r.append(rf)
        root = np.linspace(th + psi_root, th + pitch - psi_root, n_root + 1)[1:-1]
        a += list(root)
        r += [rf] * len(root)
        aa, rr = np.asarray(a), np.asarray(r)
        pts.append(np.stack([rr * np.cos(aa), rr * np.sin(aa)], 1))
    return np.concatenate(pts), rs


def spur_gear(params: SpurGearParams) -> PartModel:
    """Build the spur gear (mm, object frame, z up; the keyway towards +y)."""
    params.validate()
    p = params
    seg = int(p.segments)
    outline, _ = _tooth_outline(p)
    # Round the root corners: grow with mitred corners, then shrink with round ones; the
    # tooth tips and flanks come back as they were, the concave root corners rounded.
    fillet = 0.25 * p.module_mm
    gear_2d = (
        m3.CrossSection([outline])
        .offset(fillet, m3.JoinType.Miter)
        .offset(-fillet, m3.JoinType.Round, circular_segments=24)
    )
    fw, top = p.face_width_mm, p.face_width_mm + p.hub_height_mm
    rbore, kw = p.bore_diameter_mm / 2, p.keyway_width_mm
    key_y = rbore + p.keyway_depth_mm
    bore_2d = m3.CrossSection.circle(rbore, seg) + m3.CrossSection.square((kw, key_y)).translate(
        (-kw / 2, 0.0)
    )
    # Two prisms with the same bore outline stacked face to face: their bore walls line up
    # exactly and the union merges the shared face (one boolean instead of three).
    gear = m3.Manifold.extrude(gear_2d - bore_2d, fw)
    hub_2d = m3.CrossSection.circle(p.hub_diameter_mm / 2, seg) - bore_2d
    body = gear + m3.Manifold.extrude(hub_2d, p.hub_height_mm).translate((0, 0, fw))

    # ---- features --------------------------------------------------------------------------
    z = int(p.tooth_count)
    pitch = 2 * np.pi / z
    th = np.arange(z) * pitch
    ra, rp = p.tip_radius(), p.pitch_radius()
    psi_tip = float(p.half_angle(ra))
    # Tooth tips: the top edges of the tip lands.
    ta = (th[:, None] + np.linspace(-0.6, 0.6, 3)[None, :] * psi_tip).ravel()
    ct, st = np.cos(ta), np.sin(ta)
    tips = Feature(
        np.stack([ra * ct, ra * st, np.full(len(ta), fw)], 1),
        np.stack([ct, st, np.ones_like(ct)], 1),
        np.stack([-st, ct, np.zeros_like(ct)], 1),
    )
    # Tooth flanks: both flanks of every tooth on the pitch circle, across the face width.
    psi_p = float(p.half_angle(rp))
    dr = 1e-3
    dpsi = (float(p.half_angle(rp + dr)) - float(p.half_angle(rp - dr))) / (2 * dr)
    pos, nrm = [], []
    for side in (-1.0, 1.0):
        a = th + side * psi_p
        e_r = np.stack([np.cos(a), np.sin(a)], 1)
        e_t = np.stack([-np.sin(a), np.cos(a)], 1)
        tangent = e_r + (side * dpsi * rp) * e_t  # d/dr of the flank curve
        n2 = np.stack([-tangent[:, 1], tangent[:, 0]], 1)
        n2 = n2 * np.sign(np.sum(n2 * e_t, axis=1) * side)[:, None]  # away from the tooth
        for zz in np.linspace(max(DEFECT_SITE_MARGIN_MM + 0.5, 0.2 * fw), 0.8 * fw, 3):
            pos.append(np.column_stack([rp * e_r, np.full(z, zz)]))
            nrm.append(np.column_stack([n2, np.zeros(z)]))
    flank_pos, flank_nrm = np.concatenate(pos), np.concatenate(nrm)
    flanks = Feature(flank_pos, flank_nrm, np.tile([0.0, 0.0, 1.0], (len(flank_pos), 1)))
    # The bore's top edge, less the keyway.
    ring = circle_feature(rbore, top, (-1.0, 0.0, 1.0), n=64)
    keep = ~((np.abs(ring.positions[:, 0]) < kw / 2 + 0.3) & (ring.positions[:, 1] > 0))
    bore_edge = Feature(ring.positions[keep], ring.normals[keep], ring.tangents[keep])  # type: ignore[index]
    # The keyway: its two side walls and its back face, up the hub.
    y_wall = np.sqrt(rbore**2 - (kw / 2) ** 2)
    zs = np.linspace(DEFECT_SITE_MARGIN_MM + 0.5, top - 1.0, 4)
    ys = np.linspace(y_wall + 0.25 * (key_y - y_wall), key_y - 0.25 * (key_y - y_wall), 2)
    yy, zz = (a.ravel() for a in np.meshgrid(ys, zs))
    xs = np.linspace(-0.3 * kw, 0.3 * kw, 2)
    xb, zb = (a.ravel() for a in np.meshgrid(xs, zs))
    n_side, n_back = len(yy), len(xb)
    key_pos = np.concatenate(
        [
            np.stack([np.full(n_side, kw / 2), yy, zz], 1),
            np.stack([np.full(n_side, -kw / 2), yy, zz], 1),
            np.stack([xb, np.full(n_back, key_y), zb], 1),
        ]
    )
    key_nrm = np.concatenate(
        [
            np.tile([-1.0, 0.0, 0.0], (n_side, 1)),
            np.tile([1.0, 0.0, 0.0], (n_side, 1)),
            np.tile([0.0, -1.0, 0.0], (n_back, 1)),
        ]
    )
    keyway = Feature(key_pos, key_nrm, np.tile([0.0, 0.0, 1.0], (len(key_pos), 1)))
    features = {
        "tooth_tips": tips,
        "tooth_flanks": flanks,
        "bore_edge": bore_edge,
        "keyway": keyway,
    }
    return PartModel(body, features=features)


register_part_family("spur_gear", SpurGearParams, spur_gear)
