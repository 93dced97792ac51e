"""Robot wrist joint housing: a ``novel`` test category with sub-components (the J6 object).

A cast aluminium housing like a robot's last wrist joint (AVATAR's "J6"): a cylindrical
drum with a concave fillet onto a rounded-square mounting flange (four through holes), a
rounded top edge and a side boss with a blind bore (the cable / connector outlet). A
shallow register pocket in the drum top takes the spigot of a round cover, which N hex-head
bolts (ISO 4017) on a bolt circle clamp to the drum. The cover carries an off-centre cable
gland (hex body, domed cap, cable hole) on the boss side, so a cover fitted the wrong way
round is visible. Card: ``assets/parts/joint_housing.yaml``.

Sub-components (``PartModel.components``): ``bolt_1`` .. ``bolt_N`` and ``cover``. Every
hole a component sits in is cut with the component's own cylinder (same radius, segments
and placement), so body, cover and bolts meet in touching faces only and removing one
leaves its hole. Alternatives: a socket-head cap screw (ISO 4762) in each bolt's place and
a blank cover without the cable gland in the cover's place.
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

#: Broken edges (ISO 13715) of the cover rim, bolt heads and boss face, mm: a deburred edge
#: rather than a dimension of the design.
EDGE_BREAK_MM = 0.6
#: Facets of a fillet (a quarter circle) in the drum's profile.
FILLET_STEPS = 6
_COS30 = float(np.cos(np.radians(30.0)))
#: The cable gland's cap diameter as a fraction of its hex body's across-flats.
GLAND_CAP = 0.42


@dataclass(frozen=True)
class JointHousingParams:
    """Sizes in mm; nominal values, ranges and tolerances are on the part card."""

    flange_width_mm: float = size_mm()
    flange_thickness_mm: float = size_mm()
    flange_corner_radius_mm: float = size_mm()
    mount_hole_diameter_mm: float = size_mm()
    mount_hole_offset_mm: float = size_mm()
    drum_diameter_mm: float = size_mm()
    body_height_mm: float = size_mm()
    fillet_radius_mm: float = size_mm()
    boss_diameter_mm: float = size_mm()
    boss_length_mm: float = size_mm()
    boss_bore_diameter_mm: float = size_mm()
    boss_bore_depth_mm: float = size_mm()
    pocket_diameter_mm: float = size_mm()
    pocket_depth_mm: float = size_mm()
    cover_diameter_mm: float = size_mm()
    cover_thickness_mm: float = size_mm()
    gland_diameter_mm: float = size_mm()
    gland_height_mm: float = size_mm()
    gland_offset_mm: float = size_mm()
    bolt_count: int = count(3, 12)
    bolt_diameter_mm: float = size_mm()
    bolt_head_width_mm: float = size_mm()
    bolt_head_height_mm: float = size_mm()
    bolt_circle_diameter_mm: float = size_mm()
    bolt_length_mm: float = size_mm()
    segments: int = count(24, MAX_SEGMENTS)

    @property
    def head_radius_mm(self) -> float:
        """Corner radius of a bolt's hex head (across corners / 2)."""
        return self.bolt_head_width_mm / (2 * _COS30)

    @property
    def gland_radius_mm(self) -> float:
        """Corner radius of the cable gland's hex body (its across-flats is the diameter)."""
        return self.gland_diameter_mm / (2 * _COS30)

    def bolt_angles(self) -> np.ndarray:
        """Bolt angles about z (rad): bolts straddle the +x axis, where the gland sits."""
        n = self.bolt_count
        return np.pi / n + 2 * np.pi * np.arange(n) / n

    def validate(self) -> None:
        """Raise SpecError naming the first parameter that makes an impossible part."""
        r_drum = self.drum_diameter_mm / 2
        f = self.fillet_radius_mm
        r_b = self.bolt_circle_diameter_mm / 2
        r_head = self.head_radius_mm
        half_w = self.flange_width_mm / 2
        corner_c = half_w - self.flange_corner_radius_mm  # corner arc centre (x = y)
        o = self.mount_hole_offset_mm
        r_hole = self.mount_hole_diameter_mm / 2
        if o > corner_c:
            hole_in = np.hypot(o - corner_c, o - corner_c) + r_hole < (
                self.flange_corner_radius_mm - 1
            )
        else:
            hole_in = o + r_hole < half_w - 1
        a = np.pi / self.bolt_count  # the bolts next to the gland, either side of +x
        gland_gap = np.hypot(r_b * np.cos(a) - self.gland_offset_mm, r_b * np.sin(a))
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
                    "drum_diameter_mm",
                    self.drum_diameter_mm + 2 * f < self.flange_width_mm - 2,
                    "< flange_width_mm - 2 * fillet_radius_mm - 2 (the fillet foot on the flange)",
                ),
                (
                    "flange_corner_radius_mm",
                    4 * self.flange_corner_radius_mm < self.flange_width_mm,
                    "< flange_width_mm / 4",
                ),
                (
                    "mount_hole_diameter_mm",
                    self.mount_hole_diameter_mm < self.flange_corner_radius_mm,
                    "< flange_corner_radius_mm",
                ),
                (
                    "mount_hole_offset_mm",
                    hole_in and np.hypot(o, o) - r_hole > r_drum + f + 1,
                    "to put the mounting holes between the drum's fillet and the flange's "
                    "rounded corners",
                ),
                (
                    "fillet_radius_mm",
                    2 * f <= self.drum_diameter_mm - self.cover_diameter_mm,
                    "<= (drum_diameter_mm - cover_diameter_mm) / 2 (the cover sits on the "
                    "drum's flat top)",
                ),
                (
                    "boss_diameter_mm",
                    self.boss_diameter_mm
                    < self.body_height_mm - self.flange_thickness_mm - 2 * f - 1,
                    "< body_height_mm - flange_thickness_mm - 2 * fillet_radius_mm - 1 (the "
                    "boss between the drum's fillet and its rounded top)",
                ),
                (
                    "boss_bore_diameter_mm",
                    self.boss_bore_diameter_mm < self.boss_diameter_mm - 6,
                    "< boss_diameter_mm - 6 (3 mm walls)",
                ),
                (
                    "boss_bore_depth_mm",
                    self.boss_bore_depth_mm < self.boss_length_mm - 1,
                    "< boss_length_mm - 1 (the bore ends in the boss, clear of the drum)",
                ),
                (
                    "boss_length_mm",
                    r_drum + self.boss_length_mm > half_w,
                    "> (flange_width_mm - drum_diameter_mm) / 2 (the boss reaches past the flange)",
                ),
                (
                    "body_height_mm",
                    self.body_height_mm + self.cover_thickness_mm - self.bolt_length_mm
                    > self.flange_thickness_mm + f + 2,
                    "> flange_thickness_mm + fillet_radius_mm + 2 + bolt_length_mm - "
                    "cover_thickness_mm (the bolt holes end above the fillet)",
                ),
                (
                    "pocket_diameter_mm",
                    self.pocket_diameter_mm < self.cover_diameter_mm - 8,
                    "< cover_diameter_mm - 8 (the spigot under the cover's flange)",
                ),
                (
                    "pocket_depth_mm",
                    self.pocket_depth_mm <= self.body_height_mm / 4,
                    "<= body_height_mm / 4",
                ),
                (
                    "cover_diameter_mm",
                    self.cover_diameter_mm / 2 >= r_b + r_head,
                    ">= bolt_circle_diameter_mm + bolt head across corners (the heads sit "
                    "on the cover)",
                ),
                (
                    "cover_thickness_mm",
                    self.cover_thickness_mm >= self.bolt_diameter_mm,
                    ">= bolt_diameter_mm",
                ),
                (
                    "gland_diameter_mm",
                    self.gland_offset_mm + self.gland_radius_mm < self.cover_diameter_mm / 2 - 1,
                    "< cover_diameter_mm - 2 * gland_offset_mm - 2 (across corners, the gland "
                    "on the cover)",
                ),
                (
                    "gland_height_mm",
                    self.gland_height_mm >= self.gland_diameter_mm / 3,
                    ">= gland_diameter_mm / 3",
                ),
                (
                    "gland_offset_mm",
                    gland_gap > self.gland_radius_mm + r_head + 0.5,
                    "to keep the gland clear of the bolt heads beside it",
                ),
                (
                    "bolt_count",
                    2 * r_b * np.sin(np.pi / self.bolt_count) > 2 * r_head + 1,
                    "small enough for the bolt heads to stand apart on the bolt circle",
                ),
                (
                    "bolt_diameter_mm",
                    r_b + self.bolt_diameter_mm / 2 < r_drum - f - 0.5,
                    "< drum_diameter_mm - 2 * fillet_radius_mm - bolt_circle_diameter_mm - 1 "
                    "(the holes in the drum's flat top)",
                ),
                (
                    "bolt_head_width_mm",
                    self.bolt_head_width_mm >= 1.5 * self.bolt_diameter_mm,
                    ">= 1.5 * bolt_diameter_mm",
                ),
                (
                    "bolt_head_height_mm",
                    self.bolt_head_height_mm >= 0.6 * self.bolt_diameter_mm,
                    ">= 0.6 * bolt_diameter_mm",
                ),
                (
                    "bolt_circle_diameter_mm",
                    r_b - self.bolt_diameter_mm / 2 > self.pocket_diameter_mm / 2 + 1,
                    "> pocket_diameter_mm + bolt_diameter_mm + 2 (a wall between the register "
                    "pocket and the bolt holes)",
                ),
                (
                    "bolt_length_mm",
                    self.bolt_length_mm >= self.cover_thickness_mm + self.bolt_diameter_mm,
                    ">= cover_thickness_mm + bolt_diameter_mm (a diameter of thread in the body)",
                ),
            ],
        )


def _profile_revolve(points: list[tuple[float, float]], segments: int) -> m3.Manifold:
    """A solid of revolution about z from an (r, z) outline (counter-clockwise)."""
    return m3.Manifold.revolve(m3.CrossSection([points]), circular_segments=segments)


def _quarter(cx: float, cy: float, r: float, a0: float, a1: float) -> list[tuple[float, float]]:
    """Points of an arc of radius r about (cx, cy) from angle a0 to a1 (deg), ends included."""
    a = np.radians(np.linspace(a0, a1, FILLET_STEPS + 1))
    return [(cx + r * float(np.cos(t)), cy + r * float(np.sin(t))) for t in a]


def _hex_bolt_head(width: float, height: float) -> m3.Manifold:
    """An ISO 4017 hex head standing on z = 0: a hexagon prism with a 30 deg top chamfer."""
    r_corner = width / (2 * _COS30)
    prism = m3.Manifold.cylinder(height, r_corner, circular_segments=6)
    # A 30 deg cone through the top face's circle of radius 0.49 * width, overshooting the
    # prism by 1 mm above, below and outside.
    tan30 = float(np.tan(np.radians(30.0)))
    r_top = 0.49 * width
    chamfer = _profile_revolve(
        [
            (0.0, -1.0),
            (r_corner + 1.0, -1.0),
            (r_corner + 1.0, height - (r_corner + 1.0 - r_top) * tan30),
            (r_top - 1.0 / tan30, height + 1.0),
            (0.0, height + 1.0),
        ],
        24,
    )
    return prism ^ chamfer


def _socket_cap_head(diameter: float, height: float, shaft: float, seg: int) -> m3.Manifold:
    """An ISO 4762 socket head standing on z = 0: a cylinder, broken top edge, hex socket."""
    r = diameter / 2
    e = min(EDGE_BREAK_MM, 0.1 * height)
    head = _profile_revolve(
        [(0.0, 0.0), (r, 0.0), (r, height - e), (r - e, height), (0.0, height)], seg
    )
    s = 0.75 * shaft  # socket across flats (M4: 3 mm)
    socket = m3.Manifold.cylinder(0.5 * shaft + 1, s / (2 * _COS30), circular_segments=6)
    return head - socket.translate((0, 0, height - 0.5 * shaft))


def _cable_gland(diameter: float, height: float, seg: int) -> m3.Manifold:
    """A cable gland standing on z = 0 (overlapping 1 mm below): hex body, domed cap, hole."""
    r_hex = diameter / (2 * _COS30)
    body = m3.Manifold.cylinder(0.4 * height + 1, r_hex, circular_segments=6).translate((0, 0, -1))
    rc = GLAND_CAP * diameter
    dome = min(0.25 * diameter, 0.5 * height)
    cap_pts = [(0.0, 0.3 * height), (rc, 0.3 * height), (rc, height - dome)]
    cap_pts += _quarter(rc - dome, height - dome, dome, 0.0, 90.0)[1:]
    cap_pts.append((0.0, height))
    cap = _profile_revolve(cap_pts, seg)
    hole = m3.Manifold.cylinder(0.3 * height + 1, 0.22 * diameter, circular_segments=seg // 2)
    return body + cap - hole.translate((0, 0, 0.7 * height))


def _ring(
    radius: float, centre: tuple[float, float, float], normal: tuple[float, float, float], n: int
) -> Feature:
    """Sites on a circle about a z-parallel axis through ``centre`` (see circle_feature)."""
    f = circle_feature(radius, 0.0, normal, n=n)
    return Feature(f.positions + np.asarray(centre), f.normals, f.tangents)


def _merge(parts: list[Feature]) -> Feature:
    tangents = [f.tangents for f in parts if f.tangents is not None]
    return Feature(
        np.concatenate([f.positions for f in parts]),
        np.concatenate([f.normals for f in parts]),
        np.concatenate(tangents) if len(tangents) == len(parts) else None,
    )


def _x_axis(f: Feature, z: float) -> Feature:
    """A feature built about the z axis turned onto the +x axis at height z."""
    R = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]])  # z -> x
    t = None if f.tangents is None else f.tangents @ R.T
    return Feature(f.positions @ R.T + (0.0, 0.0, z), f.normals @ R.T, t)


def joint_housing(params: JointHousingParams) -> PartModel:
    """Build the joint housing, its cover and bolts (mm, object frame, z up)."""
    params.validate()
    p = params
    seg = int(p.segments)
    seg_small = max(12, seg // 4)  # bolt shafts and mounting holes
    r_drum = p.drum_diameter_mm / 2
    f = p.fillet_radius_mm
    tf = p.flange_thickness_mm
    h = p.body_height_mm
    e = EDGE_BREAK_MM

    # Body: flange plate, drum of revolution (fillet foot, rounded top), side boss.
    inner = p.flange_width_mm - 2 * p.flange_corner_radius_mm
    plate_2d = m3.CrossSection.square((inner, inner), center=True).offset(
        p.flange_corner_radius_mm, m3.JoinType.Round, circular_segments=seg
    )
    plate = m3.Manifold.extrude(plate_2d, tf)
    profile = [(0.0, tf - 1.0), (r_drum + f, tf - 1.0)]
    profile += _quarter(r_drum + f, tf + f, f, 270.0, 180.0)  # concave fillet foot
    profile += _quarter(r_drum - f, h - f, f, 0.0, 90.0)  # rounded top edge
    profile.append((0.0, h))
    drum = _profile_revolve(profile, seg)
    z_boss = (tf + h) / 2
    r_boss = p.boss_diameter_mm / 2
    boss_len = r_drum + p.boss_length_mm
    boss = _profile_revolve(
        [
            (0.0, 0.0),
            (r_boss, 0.0),
            (r_boss, boss_len - e),
            (r_boss - e, boss_len),
            (0.0, boss_len),
        ],
        seg,
    )
    boss = boss.rotate((0.0, 90.0, 0.0)).translate((0.0, 0.0, z_boss))
    body = m3.Manifold.batch_boolean([plate, drum, boss], m3.OpType.Add)

    # Cutters overshoot the faces they cut by 1 mm; the pocket and the bolt holes are the
    # cover spigot's and the bolt shafts' own cylinders.
    z_top = h + p.cover_thickness_mm  # cover top, where the bolt heads sit
    pocket = m3.Manifold.cylinder(
        p.pocket_depth_mm + 1, p.pocket_diameter_mm / 2, circular_segments=seg
    ).translate((0.0, 0.0, h - p.pocket_depth_mm))
    r_b = p.bolt_circle_diameter_mm / 2
    centres = [(r_b * float(np.cos(a)), r_b * float(np.sin(a))) for a in p.bolt_angles()]
    shaft = m3.Manifold.cylinder(
        p.bolt_length_mm + 1, p.bolt_diameter_mm / 2, circular_segments=seg_small
    )
    shafts = [shaft.translate((x, y, z_top - p.bolt_length_mm)) for x, y in centres]
    mount = m3.Manifold.cylinder(tf + 2, p.mount_hole_diameter_mm / 2, circular_segments=seg_small)
    o = p.mount_hole_offset_mm
    mounts = [mount.translate((sx * o, sy * o, -1.0)) for sx in (-1, 1) for sy in (-1, 1)]
    bore = m3.Manifold.cylinder(
        p.boss_bore_depth_mm + 1, p.boss_bore_diameter_mm / 2, circular_segments=seg
    )
    bore = bore.rotate((0.0, 90.0, 0.0)).translate((boss_len - p.boss_bore_depth_mm, 0.0, z_boss))
    body = m3.Manifold.batch_boolean([body, pocket, bore, *mounts, *shafts], m3.OpType.Subtract)

    # Cover: the spigot fills the pocket; a flange with a broken top edge sits on the drum.
    r_cov = p.cover_diameter_mm / 2
    plate_c = _profile_revolve(
        [(0.0, h), (r_cov, h), (r_cov, z_top - e), (r_cov - e, z_top), (0.0, z_top)], seg
    )
    blank = m3.Manifold.batch_boolean([pocket + plate_c, *shafts], m3.OpType.Subtract)
    gland = _cable_gland(p.gland_diameter_mm, p.gland_height_mm, seg // 2)
    cover = blank + gland.translate((p.gland_offset_mm, 0.0, z_top))

    # Bolts: shaft plus hex head (turned with the bolt circle); wrong bolt: a socket head.
    hex_head = _hex_bolt_head(p.bolt_head_width_mm, p.bolt_head_height_mm)
    cap_head = _socket_cap_head(
        p.bolt_head_width_mm, p.bolt_diameter_mm, p.bolt_diameter_mm, seg // 2
    )
    components: dict[str, m3.Manifold] = {}
    alternatives: dict[str, m3.Manifold] = {}
    for k, ((x, y), a, s) in enumerate(zip(centres, p.bolt_angles(), shafts, strict=True), start=1):
        head = hex_head.rotate((0.0, 0.0, float(np.degrees(a)))).translate((x, y, z_top))
        components[f"bolt_{k}"] = s + head
        alternatives[f"bolt_{k}"] = s + cap_head.translate((x, y, z_top))
    components["cover"] = cover
    alternatives["cover"] = blank

    # Features (mm): edges where a knock chips the casting or the cover, faces a tool scores.
    r_top = r_drum - f + f * np.cos(np.pi / 4)  # mid-fillet of the rounded top edge
    z_round = h - f + f * np.sin(np.pi / 4)
    r_foot = r_drum + f - f * np.cos(np.pi / 4)  # mid-fillet of the foot
    z_foot = tf + f - f * np.sin(np.pi / 4)
    r_face = (p.boss_bore_diameter_mm / 2 + r_boss - e) / 2
    face = circle_feature(r_face, boss_len, (0.0, 0.0, 1.0), n=48)
    rim = circle_feature(r_boss - e / 2, boss_len - e / 2, (1.0, 0.0, 1.0), n=48)
    heads = [
        _ring(0.3 * p.bolt_head_width_mm, (x, y, z_top + p.bolt_head_height_mm), (0, 0, 1), 12)
        for x, y in centres
    ]
    r_cap = GLAND_CAP * p.gland_diameter_mm
    dome = min(0.25 * p.gland_diameter_mm, 0.5 * p.gland_height_mm)
    z_cap = z_top + (0.4 * p.gland_height_mm + p.gland_height_mm - dome) / 2  # mid cap side
    features = {
        "cover_edge": circle_feature(r_cov - e / 2, z_top - e / 2, (1.0, 0.0, 1.0)),
        "drum_top_edge": circle_feature(r_top, z_round, (1.0, 0.0, 1.0)),
        "drum_fillet": circle_feature(r_foot, z_foot, (1.0, 0.0, 1.0)),
        "boss_face": _x_axis(face, z_boss),
        "boss_edge": _x_axis(rim, z_boss),
        "bolt_heads": _merge(heads),
        "gland_cap": _ring(r_cap, (p.gland_offset_mm, 0.0, z_cap), (1, 0, 0), 32),
    }
    return PartModel(body, components, alternatives, features)


register_part_family("joint_housing", JointHousingParams, joint_housing)
