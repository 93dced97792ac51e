"""Parts: parametric CAD families, the user's own CAD files, and their part cards.

A **family** (one module each in this package) turns a frozen parameter dataclass into a
``PartModel``: a watertight body solid plus named sub-components (bolts, a cover...), each a
manifold3d solid in millimetres, in the object frame (origin at the centre of the bottom
face, z up, so a part stands on the table at z = 0 of its frame), and named **features**
(candidate defect sites: an edge, a face, the parting line). Manifold's tolerances suit
millimetres; meshes leave this package in metres.

Each family has a **part card**, ``assets/parts/<family>.yaml`` (data only): its material
class, split (``base`` training category or ``novel`` test category), sub-components and,
for every dimension, the nominal value, the range distinct designs are drawn from, and the
manufacturing tolerance. The card is the one source of nominal values: the parameter
dataclasses hold types and geometric rules only.

Three parameter sets describe one physical part:

- the **design** (``design_params``): the card's nominal values with the scenario's
  overrides; with ``variation`` v > 0 each free dimension is drawn uniformly from the
  nominal-centred fraction v of the card's range (v = 1: the whole range). The twin renders
  the design: it is the CAD model the system knows.
- the **as-built** part (``as_built_params``): the design with every toleranced dimension
  off by a seeded, benign manufacturing error, a normal with sigma = tolerance / 3
  truncated at +-tolerance (a capable process, Cpk = 1). The real part is the as-built part
  plus its defects; tolerance is never labelled a defect.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import Field, dataclass, field, fields, replace
from importlib import resources
from typing import Any, Literal

import manifold3d as m3
import numpy as np
import trimesh
import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator
from pydantic import Field as PField

from scenarios.interfaces import GeometryError, SpecError, allowed, excerpt, path_part
from sim.appearance import MATERIAL_CLASSES

MM = 1e-3  # metres per millimetre

# Bounds a real part could have: a part that fits an inspection cell (at most 1 m), and
# circle tessellation fine enough to look round yet small enough to build in milliseconds
# (2,000,000 segments would hang the booleans).
MAX_SIZE_MM = 1000.0
MAX_SEGMENTS = 512
#: Defects are placed on surface this far above the table plane (the part stands there).
DEFECT_SITE_MARGIN_MM = 2.0
#: Face labels of sub-components: component c (1-based, card order of the instances) has
#: label COMPONENT_LABEL + c; labels 1..COMPONENT_LABEL - 1 are defects; 0 is the body.
COMPONENT_LABEL = 100
#: Draws of a varied design before giving up (a family's range may hold impossible corners).
MAX_DESIGN_DRAWS = 64

#: The material classes a card may name: those the appearance model draws.
MATERIAL_CLASS_NAMES = tuple(MATERIAL_CLASSES)


def size_mm() -> Any:
    """A part parameter: a length in millimetres, a number in (0, MAX_SIZE_MM]."""
    return field(metadata={"kind": float, "range": (0.0, MAX_SIZE_MM)})


def angle_deg(lo: float = -180.0, hi: float = 180.0) -> Any:
    """A part parameter: an angle in degrees in [lo, hi]."""
    return field(metadata={"kind": float, "range": (lo, hi), "signed": True})


def count(lo: int, hi: int) -> Any:
    """A part parameter: a whole number in [lo, hi] (true, 12.7 or "64" are refused)."""
    return field(metadata={"kind": int, "range": (lo, hi)})


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
    if f.metadata.get("signed"):
        if not lo <= out <= hi:
            raise SpecError(f"{where}: must be in [{lo:g}, {hi:g}] deg, got {excerpt(value)}")
        return out
    if out <= 0:
        raise SpecError(f"{where}: must be > 0, got {excerpt(value)}")
    if not lo < out <= hi:
        raise SpecError(f"{where}: must be in ({lo:g}, {hi:g}] mm, got {excerpt(value)}")
    return out


def check_rules(params: Any, rules: list[tuple[str, bool, str]]) -> None:
    """Check every field's type and range, then the family's rules (name, ok, rule text);
    raise SpecError naming the first parameter that makes an impossible part."""
    for f in fields(params):
        check_param_value(f, getattr(params, f.name))
    for name, ok, rule in rules:
        if not ok:
            raise SpecError(f"part.params.{name}: must be {rule}, got {getattr(params, name)}")


@dataclass(frozen=True)
class Feature:
    """Named candidate defect sites on a part: (N, 3) positions (mm, object frame), (N, 3)
    outward unit normals and, optionally, (N, 3) unit tangents (a crack along an edge runs
    along its tangent; without them a defect picks a random direction about the normal)."""

    positions: np.ndarray
    normals: np.ndarray
    tangents: np.ndarray | None = None

    def __post_init__(self) -> None:
        p = np.asarray(self.positions, dtype=np.float64).reshape(-1, 3)
        n = np.asarray(self.normals, dtype=np.float64).reshape(-1, 3)
        n = n / np.linalg.norm(n, axis=1, keepdims=True)
        object.__setattr__(self, "positions", p)
        object.__setattr__(self, "normals", n)
        if self.tangents is not None:
            t = np.asarray(self.tangents, dtype=np.float64).reshape(-1, 3)
            t = t - np.sum(t * n, axis=1, keepdims=True) * n  # tangent to the surface
            object.__setattr__(self, "tangents", t / np.linalg.norm(t, axis=1, keepdims=True))
        if len(p) == 0 or len(p) != len(n):
            raise ValueError("a feature needs one normal per position and at least one site")


def circle_feature(
    radius: float, z: float, normal: tuple[float, float, float], n: int = 96, tilt: float = 0.0
) -> Feature:
    """Sites on a circle of ``radius`` at height ``z`` about the z axis (mm); ``normal`` is
    given at angle 0 (x axis) in (radial, 0, z) terms and turns with the circle; tangents
    run along the circle. ``tilt`` offsets the start angle (radians)."""
    a = tilt + np.linspace(0, 2 * np.pi, n, endpoint=False)
    c, s = np.cos(a), np.sin(a)
    pos = np.stack([radius * c, radius * s, np.full(n, z)], axis=1)
    nr, _, nz = normal
    nrm = np.stack([nr * c, nr * s, np.full(n, nz)], axis=1)
    tan = np.stack([-s, c, np.zeros(n)], axis=1)
    return Feature(pos, nrm, tan)


@dataclass(frozen=True)
class PartModel:
    """What a family builds (millimetres, object frame).

    ``body`` is the main solid; ``components`` the sub-components in place, by instance
    name (``bolt_1``, ``cover``); ``alternatives`` a wrong part that could be fitted in each
    component's place (a socket-head bolt for a hex bolt), for the "wrong component"
    defect; ``features`` named defect sites (``Feature``). The part is the union of body
    and components; where a component sits in a hole the hole fits it exactly.
    """

    body: m3.Manifold
    components: dict[str, m3.Manifold] = field(default_factory=dict)
    alternatives: dict[str, m3.Manifold] = field(default_factory=dict)
    features: dict[str, Feature] = field(default_factory=dict)

    @functools.cached_property
    def labelled(self) -> tuple[m3.Manifold, dict[int, int]]:
        """The whole part (body and components as one solid, mm) and the face label of each
        provenance id in it: 0 the body, COMPONENT_LABEL + c the c-th component. Built once
        per model (defect generators and the instance builder share it)."""
        body = self.body.as_original()
        id_to_label = {body.original_id(): 0}
        whole = body
        for c, comp in enumerate(self.components.values(), start=1):
            comp = comp.as_original()
            id_to_label[comp.original_id()] = COMPONENT_LABEL + c
            whole = whole + comp
        return whole, id_to_label

    @functools.cached_property
    def labelled_mesh(self) -> tuple[trimesh.Trimesh, np.ndarray]:
        """The whole part as a metre mesh and its (F,) int32 face labels (``labelled``)."""
        return mesh_labels(*self.labelled)


def mesh_labels(
    solid: m3.Manifold, id_to_label: dict[int, int]
) -> tuple[trimesh.Trimesh, np.ndarray]:
    """A mm solid as a metre mesh with each face's label looked up by its provenance id;
    GeometryError if a face has an id ``id_to_label`` does not know."""
    mesh, ids = manifold_to_trimesh(solid)
    unknown = set(np.unique(ids).tolist()) - set(id_to_label)
    if unknown:
        raise GeometryError(f"faces of unknown provenance {sorted(unknown)}")
    labels = np.array([id_to_label[int(i)] for i in ids], dtype=np.int32)
    return mesh, labels


def component_group(name: str) -> str:
    """The card's component name of an instance: ``bolt_3`` -> ``bolt``, ``cover`` -> itself."""
    head, _, tail = name.rpartition("_")
    return head if head and tail.isdigit() else name


# --------------------------------------------------------------------------------------------
# Part cards (assets/parts/<family>.yaml)
# --------------------------------------------------------------------------------------------


class _CardModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Dimension(_CardModel):
    """One dimension of a card: nominal value, the range designs are drawn from, and the
    manufacturing tolerance (+-, mm; 0 for counts and angles that do not vary in making)."""

    nominal: float
    range: tuple[float, float] | None = None
    tolerance: float = PField(0.0, ge=0.0, le=5.0)
    integer: bool = False

    @model_validator(mode="after")
    def _inside(self) -> Dimension:
        if self.range is not None and not self.range[0] <= self.nominal <= self.range[1]:
            raise ValueError(f"nominal {self.nominal} outside range {list(self.range)}")
        return self


class ComponentCard(_CardModel):
    """A kind of sub-component: its name, how many instances, its material class."""

    name: str
    count: int = PField(1, ge=1, le=64)
    material: Literal[MATERIAL_CLASS_NAMES]  # type: ignore[valid-type]
    description: str = ""


class PartCard(_CardModel):
    """A part family's card (see the module docstring)."""

    family: str
    title: str
    description: str = ""
    split: Literal["base", "novel"]
    material: Literal[MATERIAL_CLASS_NAMES]  # type: ignore[valid-type]
    dimensions: dict[str, Dimension]
    components: tuple[ComponentCard, ...] = ()
    features: dict[str, str] = PField(default_factory=dict)
    source: str = ""  # where the design comes from (a paper's object, a standard)

    def component_material(self, instance: str) -> str:
        """The material class of a component instance (``bolt_2`` -> the bolts' class)."""
        group = component_group(instance)
        for c in self.components:
            if c.name == group:
                return c.material
        return self.material


def load_card(family: str) -> PartCard:
    """The part card of ``family`` from ``assets/parts``; ValueError if missing or invalid."""
    res = resources.files("assets.parts").joinpath(f"{family}.yaml")
    try:
        data = yaml.safe_load(res.read_text())
        card = PartCard.model_validate(data)
    except (OSError, yaml.YAMLError, ValidationError) as exc:
        raise ValueError(f"part card of {family!r} is missing or invalid: {exc}") from None
    if card.family != family:
        raise ValueError(f"part card {family}.yaml names family {card.family!r}")
    return card


# --------------------------------------------------------------------------------------------
# The family registry
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PartFamily:
    """A registered part family: its parameter type, its builder (mm) and its card."""

    name: str
    params_type: type
    build: Callable[[Any], PartModel]
    card: PartCard

    def nominal(self) -> dict[str, Any]:
        """The card's nominal value of every parameter, in the parameter's type."""
        out: dict[str, Any] = {}
        for f in fields(self.params_type):
            dim = self.card.dimensions[f.name]
            out[f.name] = int(dim.nominal) if f.metadata.get("kind") is int else dim.nominal
        return out


PART_FAMILIES: dict[str, PartFamily] = {}


def register_part_family(
    name: str, params_type: type, build: Callable[[Any], PartModel], card: PartCard | None = None
) -> PartFamily:
    """Add a family (its card from ``assets/parts`` unless given); a duplicate name, or a
    card whose dimensions do not match the parameters one to one, is an error."""
    if name in PART_FAMILIES:
        raise ValueError(f"part family {name!r} is already registered")
    card = card or load_card(name)
    names = {f.name for f in fields(params_type)}
    if names != set(card.dimensions):
        raise ValueError(
            f"part card of {name!r}: dimensions {sorted(set(card.dimensions) ^ names)} do not "
            "match the family's parameters"
        )
    for f in fields(params_type):
        if card.dimensions[f.name].integer != (f.metadata.get("kind") is int):
            raise ValueError(f"part card of {name!r}: {f.name} integer must match its parameter")
    family = PartFamily(name, params_type, build, card)
    PART_FAMILIES[name] = family
    return family


def get_family(name: str) -> PartFamily:
    """The registered family ``name``; SpecError listing the families otherwise."""
    if name not in PART_FAMILIES:
        raise SpecError(
            f"part family: unknown {excerpt(name)}; " + allowed(name, sorted(PART_FAMILIES))
        )
    return PART_FAMILIES[name]


def make_params(family: str, overrides: dict[str, Any] | None = None) -> Any:
    """The design parameters of ``family``: card nominals with ``overrides`` applied and
    checked; SpecError naming the parameter on unknown names, bad types or impossible parts."""
    fam = get_family(family)
    by_name = {f.name: f for f in fields(fam.params_type)}
    values = fam.nominal()
    for key, value in (overrides or {}).items():
        if key not in by_name:
            raise SpecError(
                f"part.params.{path_part(key)}: unknown parameter; {allowed(key, sorted(by_name))}"
            )
        values[key] = check_param_value(by_name[key], value)
    params = fam.params_type(**values)
    params.validate()
    return params


def design_params(
    family: str,
    overrides: dict[str, Any] | None,
    variation: float,
    rng: np.random.Generator,
) -> Any:
    """A seeded design of ``family``: each dimension not overridden is drawn uniformly from
    the fraction ``variation`` (0-1) of its card range around the nominal value; draws that
    break a rule of the family are redrawn (GeometryError after MAX_DESIGN_DRAWS)."""
    base = make_params(family, overrides)
    if variation <= 0:
        return base
    fam = PART_FAMILIES[family]
    fixed = set(overrides or {})
    for _ in range(MAX_DESIGN_DRAWS):
        values: dict[str, Any] = {}
        for f in fields(base):
            dim = fam.card.dimensions[f.name]
            nom = getattr(base, f.name)
            if f.name in fixed or dim.range is None:
                continue
            lo = nom + variation * (dim.range[0] - nom)
            hi = nom + variation * (dim.range[1] - nom)
            if f.metadata.get("kind") is int:
                values[f.name] = int(rng.integers(int(np.ceil(lo)), int(np.floor(hi)) + 1))
            else:
                values[f.name] = float(rng.uniform(lo, hi))
        candidate = replace(base, **values)
        try:
            candidate.validate()
        except SpecError:
            continue
        return candidate
    raise GeometryError(
        f"{family}: no valid design in {MAX_DESIGN_DRAWS} draws at variation {variation:g}; "
        "lower part variation or fix the card's ranges"
    )


def as_built_params(family: str, design: Any, scale: float, rng: np.random.Generator) -> Any:
    """The design with seeded manufacturing error: each toleranced dimension moves by a
    normal draw with sigma = tolerance / 3, truncated at +-tolerance, times ``scale``.
    A draw that would break a rule of the family (a wall at its limit) is redrawn; if none
    is valid the design itself is built."""
    if scale <= 0:
        return design
    fam = get_family(family)
    for _ in range(MAX_DESIGN_DRAWS):
        values = {}
        for f in fields(design):
            tol = fam.card.dimensions[f.name].tolerance
            if tol > 0 and f.metadata.get("kind") is not int:
                err = float(np.clip(rng.normal(0.0, tol / 3.0), -tol, tol)) * scale
                values[f.name] = getattr(design, f.name) + err
        candidate = replace(design, **values)
        try:
            candidate.validate()
        except SpecError:
            continue
        return candidate
    return design


def build_model(family: str, params: Any) -> PartModel:
    """Build the part model of ``family`` and check every solid (GeometryError otherwise)."""
    fam = get_family(family)
    model = fam.build(params)
    for name, solid in [("body", model.body), *model.components.items()]:
        if solid.is_empty() or solid.status() != m3.Error.NoError:
            raise GeometryError(f"building {family} failed at {name}: {solid.status()}")
    return model


def union_model(model: PartModel) -> m3.Manifold:
    """The whole part: body and components as one solid (mm)."""
    return model.labelled[0]


def build_nominal_solid(family: str, overrides: dict[str, Any] | None = None) -> m3.Manifold:
    """The nominal (defect-free) whole part of a family at its card's nominal design, mm."""
    return union_model(build_model(family, make_params(family, overrides)))


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


@functools.cache
def families_by_split() -> dict[str, tuple[str, ...]]:
    """Family names by card split (``base``, ``novel``)."""
    out: dict[str, list[str]] = {"base": [], "novel": []}
    for name, fam in sorted(PART_FAMILIES.items()):
        out[fam.card.split].append(name)
    return {k: tuple(v) for k, v in out.items()}


def _register_builtin() -> None:
    # Each family module registers itself on import; the order is the listing order.
    from sim.parts import (  # noqa: F401
        bracket,
        cover_plate,
        flange,
        joint_housing,
        moulded_ring,
        pipe_elbow,
        spur_gear,
    )


_register_builtin()
