"""Structural and logical defects of assemblies (the AVATAR J6 test set has these): a missing,
extra, misplaced (or rotated) or wrong sub-component.

They need a part with sub-components (``PartModel.components``: bolts, a cover). For
missing, extra and wrong components the size range filters which components qualify by
their largest extent in mm (default: any); for a misplaced component it is the
displacement.
"""

from __future__ import annotations

import manifold3d as m3
import numpy as np

from scenarios.interfaces import DefectRecord, GeometryError
from sim.defects import (
    Defect,
    DefectKind,
    PartContext,
    Step,
    SurfaceSite,
    pos_mm,
    register_defect_kind,
    surface_site,
)
from sim.geometry import make_pose, rotation_matrix
from sim.parts import MM

#: Default component-size filter (mm): any component of a part that fits the cell.
ANY_SIZE = (0.5, 1000.0)


def _extent(solid: m3.Manifold) -> float:
    lo, hi = np.split(np.asarray(solid.bounding_box(), dtype=np.float64), 2)
    return float(np.max(hi - lo))


def _pick(
    ctx: PartContext,
    rng: np.random.Generator,
    size: tuple[float, float],
    need_alternative: bool = False,
) -> str:
    """A random component whose largest extent (mm) lies in ``size``."""
    names = [
        n
        for n, s in ctx.model.components.items()
        if size[0] <= _extent(s) <= size[1]
        and (not need_alternative or n in ctx.model.alternatives)
    ]
    if not names:
        what = "with a wrong alternative " if need_alternative else ""
        raise GeometryError(f"no component {what}of {size[0]:g}-{size[1]:g} mm on this part")
    return names[int(rng.integers(len(names)))]


def _record(kind: str, name: str, solid: m3.Manifold, **extra: object) -> DefectRecord:
    lo, hi = np.split(np.asarray(solid.bounding_box(), dtype=np.float64), 2)
    centre = [round(float(v), 3) for v in (lo + hi) / 2]
    params = {"component": name, "position_mm": centre, **extra}
    return DefectRecord(kind, round(_extent(solid), 3), params)


def _missing(
    ctx: PartContext, site: SurfaceSite, rng: np.random.Generator, size: tuple[float, float]
) -> Defect:
    """A component left out at assembly: its volume is gone (the hole it sat in shows)."""
    name = _pick(ctx, rng, size)
    solid = ctx.model.components[name]
    rec = _record("missing_component", name, solid)
    return Defect(
        "missing_component", (Step("remove", solid),), rec, None, (), ctx.component_label(name)
    )


def _wrong(
    ctx: PartContext, site: SurfaceSite, rng: np.random.Generator, size: tuple[float, float]
) -> Defect:
    """The wrong part fitted in a component's place (a socket-head bolt for a hex bolt)."""
    name = _pick(ctx, rng, size, need_alternative=True)
    solid = ctx.model.components[name]
    alt = ctx.model.alternatives[name]
    rec = _record("wrong_component", name, solid)
    steps = (Step("remove", solid), Step("add", alt))
    return Defect("wrong_component", steps, rec, None, (), ctx.component_label(name))


def _about_own_axis(solid: m3.Manifold, angle_deg: float, lift_mm: float) -> m3.Manifold:
    lo, hi = np.split(np.asarray(solid.bounding_box(), dtype=np.float64), 2)
    c = (lo + hi) / 2
    R = rotation_matrix(np.array([0.0, 0.0, np.radians(angle_deg)]))
    T = make_pose(R, c - R @ c + np.array([0.0, 0.0, lift_mm]))
    return solid.transform(T[:3, :].tolist())


def _misplaced(
    ctx: PartContext, site: SurfaceSite, rng: np.random.Generator, size: tuple[float, float]
) -> Defect:
    """A component fitted wrongly: turned 8-40 degrees about its own vertical axis and not
    seated (lifted by the size, mm, as when a bolt is not tightened or a cover sits on a
    burr)."""
    name = _pick(ctx, rng, ANY_SIZE)
    solid = ctx.model.components[name]
    angle = float(rng.uniform(8.0, 40.0) * rng.choice([-1.0, 1.0]))
    lift = float(rng.uniform(*size))
    moved = _about_own_axis(solid, angle, lift)
    rec = _record("misplaced_component", name, solid, angle_deg=round(angle, 3))
    rec = DefectRecord(rec.kind, lift, {**rec.params, "lift_mm": round(lift, 3)})
    steps = (Step("remove", solid), Step("add", moved))
    return Defect("misplaced_component", steps, rec, None, (), ctx.component_label(name))


def _extra(
    ctx: PartContext, site: SurfaceSite, rng: np.random.Generator, size: tuple[float, float]
) -> Defect:
    """A spare component left on the part (a loose bolt lying on an upward face of the
    body), turned to a random heading and sunk 0.2 mm into the surface so it touches."""
    name = _pick(ctx, rng, size)
    solid = ctx.model.components[name]
    lo, hi = np.split(np.asarray(solid.bounding_box(), dtype=np.float64), 2)
    c = (lo + hi) / 2
    # Lay it on its side (about x), turn it to a random heading, put it on a body site.
    R = rotation_matrix(np.array([0.0, 0.0, rng.uniform(0, 2 * np.pi)])) @ rotation_matrix(
        np.array([np.pi / 2, 0.0, 0.0])
    )
    onto: SurfaceSite = surface_site(ctx, rng, 0.9, labels=[0])
    lying = solid.transform(make_pose(R, -R @ c)[:3, :].tolist())
    blo, _ = np.split(np.asarray(lying.bounding_box(), dtype=np.float64), 2)
    target = onto.position / MM + np.array([0.0, 0.0, -blo[2] - 0.2])
    extra = lying.translate(tuple(float(v) for v in target))
    rec = _record("extra_component", name, solid)
    rec = DefectRecord(rec.kind, rec.size_mm, {**rec.params, "position_mm": pos_mm(onto)})
    return Defect(
        "extra_component", (Step("add", extra),), rec, None, (), ctx.component_label(name)
    )


for _name, _make, _size, _desc in (
    ("missing_component", _missing, ANY_SIZE, "a sub-component left out (size filters by extent)"),
    ("extra_component", _extra, ANY_SIZE, "a spare sub-component left lying on the part"),
    (
        "misplaced_component",
        _misplaced,
        (0.5, 3.0),
        "a sub-component turned 8-40 deg and not seated (lift, mm)",
    ),
    ("wrong_component", _wrong, ANY_SIZE, "the wrong part fitted in a sub-component's place"),
):
    register_defect_kind(
        DefectKind(
            _name,
            "structural",
            _make,
            _size,
            placement="component",
            needs_components=True,
            description=_desc,
        )
    )
