"""The benign reality gap: what a real capture looks like versus the clean CAD twin.

Each benign effect is drawn where it varies on a real cell, from its own seeded stream:
- the **part instance** owns its material and finish (``part_finish``): the material class
  (machined aluminium, cast iron, polymer...), a colour and roughness a little off the
  class's nominal values, and the seed of its procedural machining marks. It never changes
  from one view to the next;
- the **station** owns the lighting, the world, the bench top and the clutter on it
  (``make_station``): fixed for the run, except that the key light may drift slowly
  (``light_drift_deg`` over the whole run, linear in capture order);
- the **capture** owns exposure, white balance, noise and vibration blur
  (``sim.render.camera_model``).

The twin is the CAD look: a uniform grey material under one fixed key light and flat
ambient light, no world, no clutter, an ideal camera (``twin_look``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace

import numpy as np
import trimesh

from sim.geometry import look_at, make_pose, rotation_matrix
from sim.render import FINISHES, Environment, Light, Material, MeshItem

TWIN_PART = Material((0.72, 0.72, 0.74), metallic=0.0, roughness=0.6)
TWIN_TABLE = Material((0.18, 0.18, 0.2), metallic=0.0, roughness=0.9)
TWIN_BACKGROUND = (0.0, 0.0, 0.0)
TWIN_AMBIENT = (0.2, 0.2, 0.2)

#: Nominal real materials by class: base colour (linear RGB), metallic, roughness, finish.
#: Colours are the measured-ish reflectances of the metals (aluminium ~0.91, steel ~0.56).
MATERIAL_CLASSES: dict[str, Material] = {
    "machined_aluminium": Material(
        (0.91, 0.92, 0.92),
        1.0,
        0.22,
        "turned",
        params=(("anisotropy", 0.7), ("ring_pitch_mm", 0.2), ("wear", 0.3)),
    ),
    "machined_steel": Material(
        (0.56, 0.57, 0.58),
        1.0,
        0.28,
        "turned",
        params=(("anisotropy", 0.6), ("ring_pitch_mm", 0.15), ("wear", 0.3)),
    ),
    "milled_aluminium": Material(
        (0.91, 0.92, 0.92), 1.0, 0.25, "milled", params=(("anisotropy", 0.6),)
    ),
    "cast_iron": Material((0.33, 0.33, 0.34), 1.0, 0.65, "cast"),
    "cast_aluminium": Material((0.75, 0.75, 0.74), 1.0, 0.55, "cast"),
    "polymer_opaque": Material((0.05, 0.05, 0.055), 0.0, 0.4, "polymer"),
    "polymer_translucent": Material((0.85, 0.84, 0.78), 0.0, 0.3, "translucent"),
}

#: Bench tops: the finish and nominal colour of each.
TABLES: dict[str, Material] = {
    "brushed_steel": Material((0.45, 0.45, 0.46), 1.0, 0.35, "brushed_steel"),
    "wood": Material((0.38, 0.24, 0.13), 0.0, 0.6, "wood"),
    "rubber_mat": Material((0.03, 0.03, 0.035), 0.0, 0.8, "rubber_mat"),
}

#: Clutter materials (fixtures, tools, cables) the station draws from.
CLUTTER_MATERIALS = (
    Material((0.6, 0.08, 0.05), 0.0, 0.45, "painted"),
    Material((0.05, 0.2, 0.55), 0.0, 0.45, "painted"),
    Material((0.55, 0.55, 0.56), 1.0, 0.35, "brushed_steel"),
    Material((0.9, 0.55, 0.05), 0.0, 0.5, "painted"),
    Material((0.03, 0.03, 0.03), 0.0, 0.5, "cable"),
    Material((0.12, 0.12, 0.12), 0.0, 0.55, "polymer"),
)


@dataclass(frozen=True)
class AppearanceGap:
    """Magnitudes of the benign gap (``docs/scenarios.md``, ``appearance``).

    ``material``: the part's material class (``MATERIAL_CLASSES``; ``card``: each part's
    card names it); ``finish_jitter``: how far
    a part instance's colour and roughness stray from the class's nominal values (relative);
    ``environment``: the world lighting (``sim.render.ENVIRONMENTS``); ``light_jitter_deg``:
    max angle between the station's key light and the twin's; ``light_intensity``: range of
    the key light's power in W; ``light_drift_deg``: how far the key light turns over the
    whole run; ``table``: bench top (``TABLES``); ``table_jitter``: its colour variation;
    ``clutter``: how many objects stand on the bench around the part.
    """

    material: str = "machined_aluminium"
    finish_jitter: float = 0.05
    environment: str = "workshop"
    light_jitter_deg: float = 20.0
    light_intensity: tuple[float, float] = (2.5, 3.5)
    light_drift_deg: float = 0.0
    table: str = "brushed_steel"
    table_jitter: float = 0.08
    clutter: int = 6


@dataclass(frozen=True)
class Look:
    """Everything appearance-related for one render besides the camera.

    ``part`` is the material of nominal faces; with ``texture_defects`` a texture defect's
    faces get their own finish (a scratch: ``scratch_finish``), otherwise the part's.
    """

    part: Material
    table: Material
    lights: tuple[Light, ...]
    background: tuple[float, float, float]
    ambient: tuple[float, float, float]
    environment: Environment = Environment()
    clutter: tuple[MeshItem, ...] = ()
    texture_defects: bool = False


# The twin is lit by a fixed key light from above-front-left plus ambient; no noise.
TWIN_KEY_DIR = np.array([-0.3, -0.4, 0.87]) / np.linalg.norm([-0.3, -0.4, 0.87])
KEY_DISTANCE_M = 0.6
KEY_SIZE_M = 0.3


def _directional(center: np.ndarray, direction: np.ndarray, intensity: float) -> Light:
    """A directional light arriving from ``direction`` (unit, towards the light) at centre."""
    return Light("directional", look_at(center + direction, center), intensity=intensity)


def _area(center: np.ndarray, direction: np.ndarray, power: float, size: float) -> Light:
    """A square area light ``KEY_DISTANCE_M`` from ``center`` along ``direction``, aimed at it."""
    T = look_at(center + KEY_DISTANCE_M * direction, center)
    return Light("area", T, intensity=power, size_m=size, spot_deg=25.0)


def twin_look(center: np.ndarray) -> Look:
    """The clean CAD look of the twin render (deterministic)."""
    return Look(
        TWIN_PART,
        TWIN_TABLE,
        (_directional(center, TWIN_KEY_DIR, 3.0),),
        TWIN_BACKGROUND,
        TWIN_AMBIENT,
    )


def _rgb(values: np.ndarray) -> tuple[float, float, float]:
    r, g, b = (float(v) for v in np.clip(values, 0.0, 1.0))
    return (r, g, b)


def _seed(rng: np.random.Generator) -> int:
    return int(rng.integers(0, 2**31 - 1))


def part_finish(
    gap: AppearanceGap, rng: np.random.Generator, material_class: str | None = None
) -> Material:
    """The material of one part instance (or one of its components): the nominal values of
    ``material_class`` (default: the gap's), varied and seeded."""
    nominal = MATERIAL_CLASSES[material_class or gap.material]
    j = gap.finish_jitter
    color = np.asarray(nominal.base_color) * (1.0 + rng.uniform(-j, j, 3) * 0.5)
    rough = nominal.roughness * (1.0 + rng.uniform(-j, j) * 3.0)
    params = dict(nominal.params)
    if "ring_pitch_mm" in params:
        params["ring_pitch_mm"] *= float(1.0 + rng.uniform(-0.3, 0.3))
    if "wear" in params:
        params["wear"] = float(np.clip(params["wear"] + rng.uniform(-0.2, 0.2), 0.0, 1.0))
    return replace(
        nominal,
        base_color=_rgb(color),
        roughness=float(np.clip(rough, 0.02, 1.0)),
        seed=_seed(rng),
        params=tuple(sorted(params.items())),
    )


def scratch_finish(part: Material, direction_obj: np.ndarray, width_mm: float) -> Material:
    """The finish of a scratch's faces on ``part``: grooves along ``direction_obj`` (3,)."""
    d = np.asarray(direction_obj, dtype=np.float64)
    d = d / (np.linalg.norm(d) + 1e-12)
    params = {"dir_x": float(d[0]), "dir_y": float(d[1]), "dir_z": float(d[2])}
    params["width_mm"] = float(width_mm)
    return Material(
        part.base_color,
        part.metallic,
        float(min(1.0, part.roughness + 0.15)),
        "scratch",
        part.seed,
        tuple(sorted(params.items())),
    )


#: A stain is a thin film: what it lets through twice (the metal or plastic under it is
#: seen through it, darker and tinted) and what it scatters itself, for grey-brown oil
#: (tint 0) and yellow-brown dried coolant or water (tint 1). Linear RGB.
STAIN_PASS_OIL = np.array([0.3, 0.27, 0.23])
STAIN_PASS_COOLANT = np.array([0.5, 0.33, 0.12])
STAIN_SCATTER_OIL = np.array([0.02, 0.018, 0.015])
STAIN_SCATTER_COOLANT = np.array([0.12, 0.1, 0.07])
#: Red rust (iron oxide-hydroxide) and the white corrosion of aluminium (its hydroxide).
RUST = np.array([0.3, 0.1, 0.032])
WHITE_RUST = np.array([0.86, 0.86, 0.83])
#: Workshop dust and lint: pale grey, a little warm.
DUST = np.array([0.55, 0.54, 0.5])


def _luminance(color: tuple[float, float, float]) -> float:
    r, g, b = color
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def _texture_finish(surface: Material, appearance: str, params: dict[str, float]) -> Material:
    """The finish of a stain, corrosion spot, flow marks or dust on ``surface``.

    Its base colour, metallic and roughness are the defect at full strength (all a raster
    backend draws); ``params`` keep the defect's look and add the surface's own values
    (``surf_r``, ``surf_g``, ``surf_b``, ``surf_metallic``, ``surf_roughness``), from which a
    procedural backend fades the defect into its surroundings. Colour jitter is drawn from
    the defect's ``seed``, so one defect always looks the same.
    """
    seed = int(params.get("seed", surface.seed))
    rng = np.random.default_rng([seed % (2**32), len(appearance)])
    base = np.asarray(surface.base_color, dtype=np.float64)
    metal, rough = float(surface.metallic), float(surface.roughness)
    if appearance == "stain":
        # A film over the surface: the surface seen through it (darker, tinted: yellow-brown
        # on bright metal) plus what the film scatters itself (a brownish haze on black
        # plastic); a metal keeps its sheen; oil a little glossier, dried coolant duller.
        s = float(np.clip(params.get("strength", 0.65), 0.0, 1.0))
        t = float(np.clip(params.get("tint", 0.5), 0.0, 1.0))
        passed = (1 - t) * STAIN_PASS_OIL + t * STAIN_PASS_COOLANT
        scatter = (1 - t) * STAIN_SCATTER_OIL + t * STAIN_SCATTER_COOLANT
        color = base * (1 - s + s * passed * rng.uniform(0.92, 1.08, 3)) + s * scatter
        rough += (0.2 * t - 0.1) * s
    elif appearance == "corrosion":
        # Rust on steel and iron, white rust on aluminium (a bright metal); a deposit of
        # rust on anything else. Corrosion products are dielectric and rough.
        white = metal >= 0.5 and _luminance(surface.base_color) >= 0.7
        params["rust"] = 0.0 if white else 1.0
        color = (WHITE_RUST if white else RUST) * rng.uniform(0.85, 1.15)
        color = color * rng.uniform(0.95, 1.05, 3)
        metal, rough = 0.0, float(rng.uniform(0.85, 0.95))
    elif appearance == "flow_marks":
        # The same material, its frozen ripples hazier: a dark polymer turns a little
        # lighter, a light one a little darker; duller in all.
        c = float(np.clip(params.get("contrast", 0.6), 0.0, 1.0))
        lum = _luminance(surface.base_color)
        color = base + 0.08 * c if lum < 0.3 else base * (1.0 - 0.12 * c)
        rough += 0.2 * c
    elif appearance == "dust":
        color, metal, rough = DUST * rng.uniform(0.85, 1.15) * rng.uniform(0.96, 1.04, 3), 0.0, 0.95
    else:
        raise ValueError(f"no real-render look for defect appearance {appearance!r}")
    params.update(
        surf_r=float(base[0]),
        surf_g=float(base[1]),
        surf_b=float(base[2]),
        surf_metallic=float(surface.metallic),
        surf_roughness=float(surface.roughness),
        # The surface's own finish, so a procedural backend can draw it under the defect.
        surf_finish=float(FINISHES.index(surface.finish)) if surface.finish in FINISHES else 0.0,
        surf_seed=float(surface.seed),
    )
    params.update({f"surf_p_{k}": float(v) for k, v in surface.params})
    return Material(
        _rgb(color),
        float(np.clip(metal, 0.0, 1.0)),
        float(np.clip(rough, 0.05, 1.0)),
        appearance,
        seed,
        tuple(sorted(params.items())),
    )


def defect_material(
    surface: Material, appearance: str, look: tuple[tuple[str, float], ...]
) -> Material:
    """The real-render material of a texture defect's faces on ``surface`` (the material of
    the part or component it sits on): finish ``appearance`` (``sim.render.FINISHES``) with
    the defect's ``look`` parameters (``sim.defects.Defect.look``)."""
    params = dict(look)
    if appearance == "scratch":
        d = np.array([params.get("dir_x", 1.0), params.get("dir_y", 0.0), params.get("dir_z", 0.0)])
        return scratch_finish(surface, d, params.get("width_mm", 1.0))
    return _texture_finish(surface, appearance, params)


@dataclass(frozen=True)
class Station:
    """The fixed part of the real look for a whole run: lighting, world, bench, clutter.

    ``key_dir`` (3,) points from the part towards the key light at the start of the run.
    """

    key_dir: np.ndarray
    key_power: float
    fill_dir: np.ndarray
    environment: Environment
    table: Material
    clutter: tuple[MeshItem, ...]
    drift_deg: float = 0.0

    def look(self, part: Material, center: np.ndarray, progress: float) -> Look:
        """The real look of a part at ``center`` (3,) after ``progress`` (0-1) of the run."""
        yaw = np.radians(self.drift_deg * float(np.clip(progress, 0.0, 1.0)))
        Rz = rotation_matrix(np.array([0.0, 0.0, yaw]))
        key = _area(center, Rz @ self.key_dir, self.key_power, KEY_SIZE_M)
        fill = _area(center, self.fill_dir, 0.25 * self.key_power, 2 * KEY_SIZE_M)
        return Look(
            part,
            self.table,
            (key, fill),
            TWIN_BACKGROUND,
            _ambient(self.environment),
            self.environment,
            self.clutter,
            texture_defects=True,
        )


#: Flat ambient light standing in for each world in raster backends (pyrender has no
#: environment lighting: without it a metal part shows its highlights only). Path tracers
#: light the scene with the world itself and ignore it.
WORLD_AMBIENT = {"none": 0.12, "studio": 0.5, "workshop": 0.6}


def _ambient(env: Environment) -> tuple[float, float, float]:
    a = WORLD_AMBIENT[env.kind] * env.strength
    return (a, a, a)


def _tilted(d: np.ndarray, max_deg: float, rng: np.random.Generator) -> np.ndarray:
    """``d`` tilted by up to ``max_deg`` about a random horizontal axis, kept above 12 deg."""
    axis = rng.normal(size=3)
    axis[2] = 0.0
    axis /= np.linalg.norm(axis) + 1e-12
    ang = np.radians(rng.uniform(0, max_deg))
    out = d * np.cos(ang) + np.cross(axis, d) * np.sin(ang) + axis * (axis @ d) * (1 - np.cos(ang))
    out[2] = max(out[2], 0.2)
    return np.asarray(out / np.linalg.norm(out))


def make_station(
    gap: AppearanceGap,
    center: np.ndarray,
    part_radius_m: float,
    clearance_m: float,
    min_elevation_deg: float,
    rng: np.random.Generator,
) -> Station:
    """The station of a run, seeded: key and fill lights, world, bench top and clutter.

    Clutter stands on the bench in a ring around ``center`` (3,), at least ``clearance_m``
    beyond the part's radius, and is short enough never to hide the part from a camera at
    ``min_elevation_deg`` or above (see ``make_clutter``).
    """
    key_dir = _tilted(TWIN_KEY_DIR, gap.light_jitter_deg, rng)
    fill_dir = np.array([-key_dir[0], -key_dir[1], 0.0])
    fill_dir = fill_dir / (np.linalg.norm(fill_dir) + 1e-12) * 0.8 + np.array([0, 0, 0.6])
    fill_dir /= np.linalg.norm(fill_dir)
    env = Environment(
        gap.environment,
        # At strength 1 a world alone lights an upward white surface to about 0.4-0.5 (linear):
        # half that beside the key light keeps machined metal off the clipping point.
        strength=float(rng.uniform(0.4, 0.6)),
        rotation_deg=float(rng.uniform(0.0, 360.0)),
        seed=_seed(rng),
    )
    nominal = TABLES[gap.table]
    color = np.asarray(nominal.base_color) * (
        1.0 + rng.uniform(-gap.table_jitter, gap.table_jitter, 3)
    )
    table = replace(nominal, base_color=_rgb(color), seed=_seed(rng))
    clutter = make_clutter(gap.clutter, center, part_radius_m + clearance_m, min_elevation_deg, rng)
    return Station(
        key_dir,
        float(rng.uniform(*gap.light_intensity)),
        fill_dir,
        env,
        table,
        clutter,
        gap.light_drift_deg,
    )


def make_clutter(
    n: int,
    center: np.ndarray,
    inner_radius_m: float,
    min_elevation_deg: float,
    rng: np.random.Generator,
) -> tuple[MeshItem, ...]:
    """``n`` seeded objects on the bench: fixture blocks, cylinders (bolts, cans), cables.

    An object at horizontal distance d from the part's outer edge stays below the line of
    sight d * tan(elevation) of a camera at ``min_elevation_deg`` (with a 40 % margin), so
    it can shadow the bench near the part but never occlude the part.
    """
    items: list[MeshItem] = []
    tan_e = np.tan(np.radians(max(min_elevation_deg, 3.0)))
    # Renderers cache meshes by key: a key names one mesh, so it carries the station's draw.
    tag = f"{int(rng.integers(0, 2**31 - 1)):08x}"
    for i in range(n):
        d_edge = float(rng.uniform(0.03, 0.25))
        h_max = min(0.08, 0.6 * d_edge * tan_e)
        kind = int(rng.integers(0, 3))
        mat = CLUTTER_MATERIALS[int(rng.integers(0, len(CLUTTER_MATERIALS)))]
        mat = replace(mat, seed=_seed(rng))
        if kind == 0:  # a fixture block
            ext = (rng.uniform(0.02, 0.08), rng.uniform(0.02, 0.06), rng.uniform(0.3, 1.0) * h_max)
            mesh = trimesh.creation.box(ext)
            mesh.apply_translation((0, 0, ext[2] / 2))
        elif kind == 1:  # a bolt, can or spacer
            h = rng.uniform(0.3, 1.0) * h_max
            mesh = trimesh.creation.cylinder(rng.uniform(0.005, 0.025), h, sections=32)
            mesh.apply_translation((0, 0, h / 2))
        else:  # a cable lying on the bench
            mesh = _cable(rng, min(0.004, h_max / 2))
            mat = replace(CLUTTER_MATERIALS[4], seed=_seed(rng))
        # Stand it so that its whole footprint lies at least d_edge beyond inner_radius_m.
        footprint = float(np.linalg.norm(mesh.vertices[:, :2], axis=1).max())
        r = inner_radius_m + d_edge + footprint
        a = float(rng.uniform(0, 2 * np.pi))
        yaw = float(rng.uniform(0, 2 * np.pi))
        pos = np.asarray(center, dtype=np.float64) + np.array([r * np.cos(a), r * np.sin(a), 0.0])
        pos[2] = 0.0
        T = make_pose(rotation_matrix(np.array([0.0, 0.0, yaw])), pos)
        items.append(MeshItem(f"clutter-{tag}-{i}", mesh, T, {0: mat}, is_part=False))
    return tuple(items)


def _cable(rng: np.random.Generator, radius: float) -> trimesh.Trimesh:
    """A cable: a tube of ``radius`` along a gentle random curve on the bench."""
    n = 24
    t = np.linspace(0.0, 1.0, n)
    length = float(rng.uniform(0.15, 0.35))
    bend = rng.uniform(-0.05, 0.05, 2)
    x = t * length
    y = bend[0] * np.sin(np.pi * t) + bend[1] * np.sin(2 * np.pi * t)
    pts = np.column_stack([x - length / 2, y, np.full(n, radius)])
    parts = []
    for p0, p1 in zip(pts[:-1], pts[1:], strict=True):
        seg = trimesh.creation.cylinder(radius, segment=np.stack([p0, p1]), sections=12)
        parts.append(seg)
        parts.append(trimesh.creation.icosphere(1, radius).apply_translation(p1))
    cable = trimesh.util.concatenate(parts)
    assert isinstance(cable, trimesh.Trimesh)
    return cable


@functools.lru_cache(maxsize=1)
def table_mesh() -> trimesh.Trimesh:
    """A 2.4 m square, 2 cm thick bench whose top is the base plane z = 0."""
    table = trimesh.creation.box((2.4, 2.4, 0.02))
    table.apply_translation((0.45, 0.0, -0.01))
    return table
