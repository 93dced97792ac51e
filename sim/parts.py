"""Parametric CAD part families, built as watertight solids with manifold3d.

Parts are modelled in millimetres (manifold's tolerances suit that scale) and handed out as
trimesh meshes in metres, in the object frame: origin at the centre of the bottom face,
z up, so a part stands on the table at z = 0 of its frame.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import Field, dataclass, field, fields
from typing import Any

import manifold3d as m3
import numpy as np
import trimesh

from scenarios.interfaces import GeometryError, SpecError, allowed, excerpt, path_part

MM = 1e-3  # metres per millimetre

# Bounds a real part could have: a part that fits an inspection cell (at most 1 m), and
# circle tessellation fine enough to look round yet small enough to build in milliseconds
# (2,000,000 segments would hang the booleans).
MAX_SIZE_MM = 1000.0
MAX_SEGMENTS = 512
#: Defects are placed on surface this far above the table plane (the part stands there).
DEFECT_SITE_MARGIN_MM = 2.0


def size_mm(default: float) -> Any:
    """A part parameter: a length in millimetres, a number in (0, MAX_SIZE_MM]."""
    return field(default=default, metadata={"kind": float, "range": (0.0, MAX_SIZE_MM)})


def count(default: int, lo: int, hi: int) -> Any:
    """A part parameter: a whole number in [lo, hi] (true, 12.7 or "64" are refused)."""
    return field(default=default, metadata={"kind": int, "range": (lo, hi)})


def check_param_value(f: Field[Any], value: Any) -> Any:
    """``value`` for parameter field ``f`` in its declared type, or SpecError naming it.

    Types are strict: a boolean is not a number, a string is not a number, and a count must
    be an integer (12.0 included: it is a float in YAML).
    """
    kind = f.metadata.get("kind", float)
    lo, hi = f.metadata.get("range", (-np.inf, np.inf))
    where = f"part.params.{f.name}"
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int | np.integer):
            raise SpecError(f"{where}: must be an integer in [{lo}, {hi}], got {excerpt(value)}")
        if not lo <= value <= hi:
            raise SpecError(f"{where}: must be an integer in [{lo}, {hi}], got {value}")
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise SpecError(f"{where}: must be a number, got {excerpt(value)}")
    out = float(value)
    if not np.isfinite(out):
        raise SpecError(f"{where}: must be a finite number, got {out}")
    if out <= 0:
        raise SpecError(f"{where}: must be > 0, got {excerpt(value)}")
    if not lo < out <= hi:
        raise SpecError(f"{where}: must be in ({lo:g}, {hi:g}] mm, got {excerpt(value)}")
    return out


@dataclass(frozen=True)
class FlangeBearingSeatParams:
    """A four-bolt square flange bearing seat (the AVATAR training category); sizes in mm.

    A rounded-square flange plate with four bolt holes carries a cylindrical hub with a
    stepped bore: a wider bearing seat at the top over a narrower through bore.
    """

    flange_width_mm: float = size_mm(80.0)
    flange_thickness_mm: float = size_mm(10.0)
    corner_radius_mm: float = size_mm(10.0)
    hub_diameter_mm: float = size_mm(50.0)
    hub_height_mm: float = size_mm(20.0)
    seat_diameter_mm: float = size_mm(38.0)
    seat_depth_mm: float = size_mm(8.0)
    bore_diameter_mm: float = size_mm(26.0)
    bolt_hole_diameter_mm: float = size_mm(8.0)
    bolt_offset_mm: float = size_mm(29.0)
    segments: int = count(64, 12, MAX_SEGMENTS)

    def validate(self) -> None:
        """Raise SpecError naming the first parameter that makes an impossible part."""
        for f in fields(self):
            check_param_value(f, getattr(self, f.name))
        checks = [
            (
                "flange_thickness_mm",
                self.flange_thickness_mm >= DEFECT_SITE_MARGIN_MM + 1.0,
                f">= {DEFECT_SITE_MARGIN_MM + 1.0:g} (defects sit above the lowest "
                f"{DEFECT_SITE_MARGIN_MM:g} mm, where the part stands)",
            ),
            ("hub_diameter_mm", self.hub_diameter_mm < self.flange_width_mm, "< flange_width_mm"),
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
        ]
        for name, ok, rule in checks:
            if not ok:
                raise SpecError(f"part.params.{name}: must be {rule}, got {getattr(self, name)}")


def flange_bearing_seat(params: FlangeBearingSeatParams) -> m3.Manifold:
    """Build the flange bearing seat solid in millimetres (object frame, z up)."""
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
    for sx in (-1, 1):
        for sy in (-1, 1):
            body = body - bolt.translate((sx * p.bolt_offset_mm, sy * p.bolt_offset_mm, -1))
    return body


@dataclass(frozen=True)
class PartFamily:
    """A registered part family: its parameter type and its solid builder (mm)."""

    name: str
    params_type: type
    build: Callable[[Any], m3.Manifold]


PART_FAMILIES: dict[str, PartFamily] = {}


def register_part_family(family: PartFamily) -> None:
    """Add a part family to the registry; a duplicate name is an error."""
    if family.name in PART_FAMILIES:
        raise ValueError(f"part family {family.name!r} is already registered")
    PART_FAMILIES[family.name] = family


register_part_family(
    PartFamily("flange_bearing_seat", FlangeBearingSeatParams, flange_bearing_seat)
)


def make_params(category: str, overrides: dict[str, Any] | None = None) -> Any:
    """Parameters of ``category`` with ``overrides`` applied; SpecError on unknown names."""
    if category not in PART_FAMILIES:
        raise SpecError(
            f"part.category: unknown {excerpt(category)}; "
            + allowed(category, sorted(PART_FAMILIES))
        )
    ptype = PART_FAMILIES[category].params_type
    by_name = {f.name: f for f in fields(ptype)}
    values = {}
    for key, value in (overrides or {}).items():
        if key not in by_name:
            raise SpecError(
                f"part.params.{path_part(key)}: unknown parameter; {allowed(key, sorted(by_name))}"
            )
        values[key] = check_param_value(by_name[key], value)
    params = ptype(**values)
    params.validate()
    return params


def build_nominal_solid(category: str, overrides: dict[str, Any] | None = None) -> m3.Manifold:
    """The nominal (defect-free) solid of a part family, in millimetres."""
    params = make_params(category, overrides)
    solid = PART_FAMILIES[category].build(params)
    if solid.is_empty() or solid.status() != m3.Error.NoError:
        raise GeometryError(f"building {category} failed: {solid.status()}")
    return solid


def manifold_to_trimesh(solid: m3.Manifold) -> tuple[trimesh.Trimesh, np.ndarray]:
    """Convert a mm solid to a metre trimesh and its per-face original ids (F,) int64."""
    mesh_gl = solid.to_mesh()
    verts = np.asarray(mesh_gl.vert_properties, dtype=np.float64)[:, :3] * MM
    faces = np.asarray(mesh_gl.tri_verts, dtype=np.int64)
    run_index = np.asarray(mesh_gl.run_index, dtype=np.int64)
    run_ids = np.asarray(mesh_gl.run_original_id, dtype=np.int64)
    # run_index counts triangle-vertex indices (3 per face): run r covers faces
    # run_index[r] // 3 .. run_index[r + 1] // 3.
    face_ids = np.repeat(run_ids, np.diff(run_index) // 3)
    mesh = trimesh.Trimesh(vertices=verts, faces=faces, process=False)
    if len(face_ids) != len(faces):
        raise GeometryError("manifold provenance does not cover every face")
    return mesh, face_ids
