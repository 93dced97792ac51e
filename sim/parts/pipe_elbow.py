"""Pipe elbow: a cast iron 90-degree flanged pipe elbow.

A pipe of constant wall bends through 90 degrees about a horizontal axis (a quarter torus);
a short tapered weld-neck at each end carries a bolted flange. The elbow stands on one
flange face (the bottom flange, centred on the origin); the other flange faces +x. The bolt
holes straddle the centre lines, as flange standards put them. The elbow is made as a
straight flanged spool (one revolved section) and bent by a warp, so the bend meets the
necks vertex for vertex. Card: ``assets/parts/pipe_elbow.yaml``.
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
class PipeElbowParams:
    """Sizes in mm; nominal values, ranges and tolerances are on the part card."""

    pipe_outer_diameter_mm: float = size_mm()
    wall_thickness_mm: float = size_mm()
    bend_radius_mm: float = size_mm()
    neck_length_mm: float = size_mm()
    flange_diameter_mm: float = size_mm()
    flange_thickness_mm: float = size_mm()
    bolt_count: int = count(3, 16)
    bolt_hole_diameter_mm: float = size_mm()
    bolt_circle_diameter_mm: float = size_mm()
    segments: int = count(12, MAX_SEGMENTS)

    def neck_radius(self) -> float:
        """The weld neck's radius where it meets the flange (it tapers to the pipe)."""
        return self.pipe_outer_diameter_mm / 2 + self.wall_thickness_mm

    def bend_start_z(self) -> float:
        """Height where the bend starts above the bottom flange face."""
        return self.flange_thickness_mm + self.neck_length_mm

    def validate(self) -> None:
        """Raise SpecError naming the first parameter that makes an impossible part."""
        r_o = self.pipe_outer_diameter_mm / 2
        r_bc, r_h = self.bolt_circle_diameter_mm / 2, self.bolt_hole_diameter_mm / 2
        pitch = np.pi * self.bolt_circle_diameter_mm / self.bolt_count
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
                    "wall_thickness_mm",
                    self.wall_thickness_mm <= r_o - 5.0,
                    "<= pipe_outer_diameter_mm / 2 - 5 (a bore of at least 10 mm)",
                ),
                (
                    "bend_radius_mm",
                    self.bend_radius_mm >= r_o + 5.0
                    and self.bend_radius_mm + self.neck_length_mm
                    >= self.flange_diameter_mm / 2 + 5.0,
                    "large enough for the bend (>= pipe_outer_diameter_mm / 2 + 5) and to keep "
                    "the flanges 5 mm apart (bend_radius_mm + neck_length_mm >= "
                    "flange_diameter_mm / 2 + 5)",
                ),
                (
                    "bolt_circle_diameter_mm",
                    r_bc + r_h <= self.flange_diameter_mm / 2 - 3.0
                    and r_bc - r_h >= self.neck_radius() + 2.0,
                    "to put the bolt holes between the neck and the flange rim (3 mm to the "
                    "rim, 2 mm to the neck)",
                ),
                (
                    "bolt_count",
                    pitch >= self.bolt_hole_diameter_mm + 3.0,
                    "small enough to leave 3 mm between bolt holes",
                ),
            ],
        )


def _bolt_angles(n: int) -> np.ndarray:
    """Bolt-hole angles about a flange axis: straddling the centre lines."""
    return (np.arange(n) + 0.5) * 2 * np.pi / n


def _moved(f: Feature, offset: np.ndarray) -> Feature:
    """Feature ``f`` translated by ``offset`` (mm)."""
    return Feature(f.positions + offset, f.normals, f.tangents)


def _join(features: list[Feature]) -> Feature:
    """One feature of the sites of ``features`` (each with tangents)."""
    tangents = [f.tangents for f in features if f.tangents is not None]
    return Feature(
        np.concatenate([f.positions for f in features]),
        np.concatenate([f.normals for f in features]),
        np.concatenate(tangents) if len(tangents) == len(features) else None,
    )


def pipe_elbow(params: PipeElbowParams) -> PartModel:
    """Build the pipe elbow (mm, object frame, z up; the top flange faces +x)."""
    params.validate()
    p = params
    seg = int(p.segments)
    r_o = p.pipe_outer_diameter_mm / 2
    r_i = r_o - p.wall_thickness_mm
    R, tf, ln = p.bend_radius_mm, p.flange_thickness_mm, p.neck_length_mm
    z0 = p.bend_start_z()
    r_bc, r_h = p.bolt_circle_diameter_mm / 2, p.bolt_hole_diameter_mm / 2

    # The elbow is built straight, as a flanged spool along z (one revolved half section,
    # no booleans but the bolt holes), then bent: the warp carries the pipe between the
    # necks round a quarter circle of radius R, one ring of vertices at a time, and the top
    # neck and flange rigidly after it. Every joint is then exact, vertex for vertex.
    rn = p.neck_radius()
    rf = p.flange_diameter_mm / 2
    n_bend = max(6, seg // 4)
    arc = np.pi / 2 * R  # the bend's length along its centre line
    z1 = z0 + arc  # the top neck starts here in the straight spool
    zs = z0 + np.linspace(0.0, arc, n_bend + 1)
    outer = (
        [(r_i, 0.0), (rf, 0.0), (rf, tf), (rn, tf)]
        + [(r_o, z) for z in zs]
        + [(rn, z1 + ln), (rf, z1 + ln), (rf, z1 + ln + tf), (r_i, z1 + ln + tf)]
        + [(r_i, z) for z in zs[::-1]]
    )
    spool = m3.Manifold.revolve(m3.CrossSection([np.array(outer)]), seg)
    hole = m3.Manifold.cylinder(tf + 2.0, r_h, circular_segments=max(12, seg // 2))
    holes = []
    for a in _bolt_angles(p.bolt_count):
        for z in (-1.0, z1 + ln - 1.0):
            holes.append(hole.translate((r_bc * np.cos(a), r_bc * np.sin(a), z)))
    spool = spool - m3.Manifold.compose(holes)

    def bend(v: np.ndarray) -> np.ndarray:
        x, y, z = v[:, 0], v[:, 1], v[:, 2]
        phi = np.clip((z - z0) / R, 0.0, np.pi / 2)
        past = np.maximum(z - z1, 0.0)  # along the straight top end
        c, s = np.cos(phi), np.sin(phi)
        # Centre line point + the section turned with it (x away from the bend axis);
        # below the bend (phi = 0, past = 0) this is the identity.
        out_x = R - (R - x) * c + past
        out_z = np.where(z < z0, z, z0 + (R - x) * s)
        return np.stack([out_x, y, out_z], axis=1)

    body = spool.warp_batch(bend)

    # ---- features --------------------------------------------------------------------------
    def top_end(f: Feature) -> Feature:
        """A feature of the straight spool's top end, bent into place (a rigid turn there:
        (vx, vy, vz) -> (vz, vy, -vx))."""

        def turn(v: np.ndarray) -> np.ndarray:
            return np.stack([v[:, 2], v[:, 1], -v[:, 0]], 1)

        tangents = None if f.tangents is None else turn(f.tangents)
        return Feature(bend(f.positions), turn(f.normals), tangents)

    # Flange rims: the bottom flange's upper rim; both rims of the top flange.
    z_back, z_face = z1 + ln, z1 + ln + tf  # the top flange in the straight spool
    flange_rims = _join(
        [
            circle_feature(rf, tf, (1.0, 0.0, 1.0), n=64),
            top_end(circle_feature(rf, z_back, (1.0, 0.0, -1.0), n=64)),
            top_end(circle_feature(rf, z_face, (1.0, 0.0, 1.0), n=64)),
        ]
    )
    # The bend's outer side: the extrados and the surface up to 60 degrees round from it.
    phi = np.linspace(np.radians(8), np.radians(82), 10)
    beta = np.radians(np.linspace(-60, 60, 5))
    ph, be = (a.ravel() for a in np.meshgrid(phi, beta))
    u = np.stack([-np.cos(ph), np.zeros_like(ph), np.sin(ph)], 1)  # away from the bend axis
    y = np.tile([0.0, 1.0, 0.0], (len(ph), 1))
    nrm = np.cos(be)[:, None] * u + np.sin(be)[:, None] * y
    centre = np.array([R, 0.0, z0]) + R * u
    bend_outer = Feature(
        centre + r_o * nrm, nrm, np.stack([np.sin(ph), np.zeros_like(ph), np.cos(ph)], 1)
    )
    # The bolt holes: the edges on the bottom flange's top face and the top flange's face.
    ring = circle_feature(r_h, 0.0, (-1.0, 0.0, 1.0), n=16)
    holes_at = []
    for a in _bolt_angles(p.bolt_count):
        c = np.array([r_bc * np.cos(a), r_bc * np.sin(a), 0.0])
        holes_at.append(_moved(ring, c + (0.0, 0.0, tf)))
        holes_at.append(top_end(_moved(ring, c + (0.0, 0.0, z_face))))
    bolt_holes = _join(holes_at)
    features = {
        "flange_rims": flange_rims,
        "bend_outer": bend_outer,
        "bolt_holes": bolt_holes,
    }
    return PartModel(body, features=features)


register_part_family("pipe_elbow", PipeElbowParams, pipe_elbow)
