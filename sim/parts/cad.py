"""The user's own CAD file as a part family.

``cad_family(path, unit)`` reads a triangle mesh (STL, OBJ, PLY, GLB/GLTF; STEP too when the
optional ``cascadio`` package is installed), converts it to millimetres, stands it in the
object frame (x, y centred on its bounding box, lowest point at z = 0), repairs what trimesh
can repair (merged vertices, degenerate and duplicate faces, winding, normals, small holes)
and requires a closed solid of positive volume: defects are cut with booleans. The result is
a registered part family ``cad:<file stem>`` whose parameters are the three extents of the
part (the card's nominal values are the file's), so the manufacturing tolerance of the card
(ISO 2768-m by size) becomes a small scale per axis.

Everything a user can fix (a missing or broken file, a wrong unit, an open mesh) is a
one-line SpecError naming the file and the problem.

Axes: the part's z axis is up. glTF (.glb, .gltf) is y-up by its specification, so those
files are turned y-up to z-up on load; STL, OBJ and PLY are taken as z-up as they are (CAD
programs export them so). A STEP file carries its own length unit, which OpenCASCADE applies
(the mesh comes in metres), so ``unit`` is not used for STEP files.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import manifold3d as m3
import numpy as np
import trimesh

from scenarios.interfaces import SpecError, allowed, excerpt
from sim.parts import (
    DEFECT_SITE_MARGIN_MM,
    MATERIAL_CLASS_NAMES,
    MAX_SIZE_MM,
    MM,
    PART_FAMILIES,
    Dimension,
    PartCard,
    PartFamily,
    PartModel,
    check_rules,
    families_by_split,
    register_part_family,
    size_mm,
)

#: Metres per unit of a file's coordinates.
UNITS = {"m": 1.0, "mm": 1e-3, "cm": 1e-2, "in": 0.0254}
MESH_SUFFIXES = (".stl", ".obj", ".ply", ".glb", ".gltf")
STEP_SUFFIXES = (".step", ".stp")
SUFFIXES = MESH_SUFFIXES + STEP_SUFFIXES
#: The smallest largest extent a part may have (mm): smaller is almost surely a wrong unit.
MIN_EXTENT_MM = 5.0
#: The most triangles a CAD file may have (booleans and rendering stay fast below it).
MAX_FACES = 500_000
#: The largest file read (bytes): an ASCII STL of MAX_FACES triangles is about 130 MB.
MAX_FILE_BYTES = 512 * 1024 * 1024
#: ISO 2768-m linear tolerances (+- mm) by nominal size (up to and including the bound, mm).
ISO2768_M = ((3.0, 0.1), (6.0, 0.1), (30.0, 0.2), (120.0, 0.3), (400.0, 0.5), (1000.0, 0.8))
#: glTF is y-up: this turns its coordinates z-up (a +90 deg turn about x: y -> z, z -> -y).
_Y_UP_TO_Z_UP = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
_AXES = ("x", "y", "z")


@dataclass(frozen=True)
class CadParams:
    """The extents of a CAD part (mm); the card's nominal values are the file's extents."""

    extent_x_mm: float = size_mm()
    extent_y_mm: float = size_mm()
    extent_z_mm: float = size_mm()

    def validate(self) -> None:
        """Raise SpecError naming the first extent that makes an impossible part."""
        check_rules(
            self,
            [
                (
                    "extent_z_mm",
                    self.extent_z_mm >= DEFECT_SITE_MARGIN_MM + 1.0,
                    f">= {DEFECT_SITE_MARGIN_MM + 1.0:g} (defects sit above the lowest "
                    f"{DEFECT_SITE_MARGIN_MM:g} mm, where the part stands)",
                )
            ],
        )


class _Problem(Exception):
    """What is wrong with a CAD file, without the file's name (added by cad_family)."""


@dataclass(frozen=True)
class _Loaded:
    """A loaded CAD file: the solid (mm, object frame) and its extents (mm)."""

    solid: m3.Manifold
    extents: tuple[float, float, float]
    repairs: tuple[str, ...]


def _short_path(path: Path, limit: int = 80) -> str:
    """``path`` as the user gave it, printable, cut in the middle past ``limit`` characters
    (as scenario files are shown)."""
    text = "".join(ch if ch.isprintable() else "?" for ch in str(path))
    if len(text) <= limit:
        return text
    return text[: limit // 2 - 2] + "..." + text[-(limit // 2 - 1) :]


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of a file's bytes, hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def iso2768_m(size: float) -> float:
    """The ISO 2768-m (medium) linear tolerance (+- mm) of a nominal size (mm)."""
    for bound, tol in ISO2768_M:
        if size <= bound:
            return tol
    return ISO2768_M[-1][1]


# --------------------------------------------------------------------------------------------
# Loading and checking a file
# --------------------------------------------------------------------------------------------


def _read_step(path: Path) -> Any:
    """A STEP file read through trimesh with cascadio (OpenCASCADE), in metres."""
    try:
        import cascadio  # noqa: F401  (trimesh's STEP loader needs it)
    except ImportError:
        raise _Problem(
            "reading STEP needs the optional package cascadio: pip install cascadio "
            "(or export the part as STL or GLB)"
        ) from None
    with _quiet_fds():  # OpenCASCADE prints its parse errors straight to the terminal
        return trimesh.load(str(path), file_type="step")


@contextlib.contextmanager
def _quiet_fds() -> Iterator[None]:
    """Send what native code writes to stdout and stderr (file descriptors 1, 2) to null."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 1)
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved:
            os.close(fd)


def _triangles(loaded: Any, kind: str) -> trimesh.Trimesh:
    """The triangles of whatever trimesh loaded, as one mesh (scene transforms applied)."""
    if isinstance(loaded, trimesh.Trimesh):
        parts = [loaded]
        others: list[Any] = []
    elif isinstance(loaded, trimesh.Scene):
        parts, others = [], []
        for node in loaded.graph.nodes_geometry:
            transform, name = loaded.graph[node]
            geom = loaded.geometry[name]
            if isinstance(geom, trimesh.Trimesh):
                parts.append(
                    trimesh.Trimesh(geom.vertices, geom.faces, process=False).apply_transform(
                        transform
                    )
                )
            else:
                others.append(geom)
    else:
        parts, others = [], [loaded]
    parts = [p for p in parts if len(p.faces)]
    if not parts:
        clouds = [g for g in others if isinstance(g, trimesh.PointCloud)]
        if clouds:
            n = sum(len(c.vertices) for c in clouds)
            raise _Problem(f"not a mesh: a point cloud of {n} points, no triangles")
        if others:
            what = type(others[0]).__name__
            raise _Problem(f"not a mesh: holds {what} geometry (lines or curves), no triangles")
        raise _Problem(f"not a mesh: no triangles found (not a valid {kind} file?)")
    vertices = np.concatenate([p.vertices for p in parts])
    offsets = np.cumsum([0] + [len(p.vertices) for p in parts[:-1]])
    faces = np.concatenate([p.faces + o for p, o in zip(parts, offsets, strict=True)])
    # Geometry only: colours, normals and texture seams would keep vertices apart.
    return trimesh.Trimesh(vertices=vertices, faces=faces, process=False)


def _read(path: Path) -> trimesh.Trimesh:
    """The file's triangles in its own units (z up); _Problem if it holds none."""
    suffix = path.suffix.lower()
    kind = "STEP" if suffix in STEP_SUFFIXES else suffix[1:].upper()
    try:
        if suffix in STEP_SUFFIXES:
            loaded = _read_step(path)
        else:
            loaded = trimesh.load(str(path), file_type=suffix[1:])
    except _Problem:
        raise
    except Exception as exc:  # a malformed file can make a parser raise anything
        why = type(exc).__name__
        if suffix in STEP_SUFFIXES:  # cascadio writes no mesh, trimesh finds no file
            why = "OpenCASCADE could not convert it"
        raise _Problem(f"not a readable {kind} file ({why})") from None
    mesh = _triangles(loaded, kind)
    if suffix in (".glb", ".gltf"):
        mesh.vertices = mesh.vertices @ _Y_UP_TO_Z_UP.T
    return mesh


def _suggest_unit(extent: float, unit: str) -> str:
    """A question naming the unit that would make a part of ``extent`` (mm, read as ``unit``)
    a plausible size, or asking to check the unit."""
    native = extent * MM / UNITS[unit]  # the extent in the file's own numbers
    target = np.sqrt(MIN_EXTENT_MM * MAX_SIZE_MM)
    fits = [
        u for u in UNITS if u != unit and MIN_EXTENT_MM <= native * UNITS[u] / MM <= MAX_SIZE_MM
    ]
    if not fits:
        return "is the unit right?"
    best = min(fits, key=lambda u: abs(np.log(native * UNITS[u] / MM / target)))
    return f"is the unit {best} rather than {unit}?"


def _check_shape(vertices: np.ndarray, unit: str, step: bool) -> None:
    """Refuse a degenerate point set or a part of an implausible size for its unit."""
    if not np.isfinite(vertices).all():
        raise _Problem("not a mesh: vertices that are not finite numbers (NaN or inf)")
    centred = vertices - vertices.mean(axis=0)
    sv = np.linalg.svd(centred, compute_uv=False)
    extents = vertices.max(axis=0) - vertices.min(axis=0)
    largest = float(extents.max())
    if largest <= 0 or sv[0] <= 0:
        raise _Problem("degenerate: all vertices at one point")
    rank = int((sv > sv[0] * 1e-9).sum())
    if rank == 1:
        raise _Problem("degenerate: all vertices on one line")
    if rank == 2:
        raise _Problem("degenerate: flat (all vertices in one plane), not a solid")
    hint = "is the STEP file's length unit right?" if step else _suggest_unit(largest, unit)
    if largest > MAX_SIZE_MM:
        raise _Problem(
            f"{largest:.3g} mm across, larger than {MAX_SIZE_MM:g} mm (a part of an inspection "
            f"cell): {hint}"
        )
    if largest < MIN_EXTENT_MM:
        raise _Problem(f"{largest:.3g} mm across, smaller than {MIN_EXTENT_MM:g} mm: {hint}")
    height = float(extents[2])
    if height < DEFECT_SITE_MARGIN_MM + 1.0:
        raise _Problem(
            f"only {height:.3g} mm tall (z); defects sit above the lowest "
            f"{DEFECT_SITE_MARGIN_MM:g} mm, where the part stands, so it needs "
            f"{DEFECT_SITE_MARGIN_MM + 1.0:g} mm: is z the part's up axis?"
        )


def _boundary(mesh: trimesh.Trimesh) -> tuple[int, int, int]:
    """(open edges, boundary loops, edges of more than two faces) of a mesh."""
    edges = mesh.edges_sorted
    if len(edges) == 0:
        return 0, 0, 0
    _, counts = np.unique(edges, axis=0, return_counts=True)
    open_edges = trimesh.grouping.group_rows(edges, require_count=1)
    loops = 0
    if len(open_edges):
        loops = len(trimesh.graph.connected_components(edges[open_edges], min_len=1))
    return int(len(open_edges)), loops, int((counts > 2).sum())


def _repair(mesh: trimesh.Trimesh) -> tuple[trimesh.Trimesh, tuple[str, ...]]:
    """Merge, clean, orient and (where small holes) close the mesh; what was done."""
    done = []
    n_vert, n_face = len(mesh.vertices), len(mesh.faces)
    mesh.merge_vertices()
    if len(mesh.vertices) < n_vert:
        done.append(f"merged {n_vert - len(mesh.vertices)} duplicate vertices")
    mesh.update_faces(mesh.nondegenerate_faces())
    mesh.update_faces(mesh.unique_faces())
    mesh.remove_unreferenced_vertices()
    if len(mesh.faces) < n_face:
        done.append(f"removed {n_face - len(mesh.faces)} degenerate or duplicate faces")
    if len(mesh.faces) == 0:
        raise _Problem("degenerate: every triangle has zero area")
    if not mesh.is_watertight:
        before = len(mesh.faces)
        trimesh.repair.fill_holes(mesh)
        if len(mesh.faces) > before:
            done.append(f"filled holes with {len(mesh.faces) - before} faces")
    if not mesh.is_winding_consistent:
        trimesh.repair.fix_winding(mesh)
        done.append("fixed the winding")
    trimesh.repair.fix_normals(mesh, multibody=True)  # each body's normals outward
    return mesh, tuple(done)


def _to_solid(mesh: trimesh.Trimesh) -> m3.Manifold:
    """The closed mesh as a manifold3d solid; _Problem if it is not a valid solid."""
    n_open, n_loops, n_shared = _boundary(mesh)
    closed = "defects are cut with booleans and need a closed solid"
    if n_open:
        raise _Problem(
            f"not closed after repair: {n_open} open edges in {n_loops} boundary "
            f"loop{'s' if n_loops != 1 else ''}; {closed}: close the holes and export again"
        )
    if n_shared:
        raise _Problem(
            f"not a closed solid: {n_shared} edge{'s' if n_shared != 1 else ''} shared by "
            f"more than two faces; {closed}"
        )
    if not mesh.is_watertight or not mesh.is_winding_consistent:
        raise _Problem(f"not closed after repair: inconsistently oriented faces; {closed}")
    volume = float(mesh.volume)
    if not volume > 0:
        raise _Problem("degenerate: zero volume")
    solid = m3.Manifold(
        m3.Mesh(
            vert_properties=np.ascontiguousarray(mesh.vertices, dtype=np.float32),
            tri_verts=np.ascontiguousarray(mesh.faces, dtype=np.uint32),
        )
    )
    if solid.status() != m3.Error.NoError or solid.is_empty():
        raise _Problem(f"not a valid solid ({solid.status().name}); {closed}")
    if not solid.volume() > 0:
        raise _Problem("degenerate: zero volume")
    return solid


@functools.lru_cache(maxsize=32)
def _load(resolved: str, sha256: str, unit: str) -> _Loaded:
    """Read, convert to mm, centre, repair and check a file (cached by path, content, unit).

    ``sha256`` is only a cache key: a file changed on disk is another entry."""
    del sha256
    path = Path(resolved)
    step = path.suffix.lower() in STEP_SUFFIXES
    mesh = _read(path)
    mesh.remove_unreferenced_vertices()
    if len(mesh.faces) > MAX_FACES:
        raise _Problem(
            f"{len(mesh.faces):,} triangles, more than {MAX_FACES:,}: decimate the mesh "
            "(e.g. Blender's Decimate modifier or MeshLab) and export it again"
        )
    scale = (1.0 if step else UNITS[unit]) / MM  # STEP comes in metres
    vertices = np.asarray(mesh.vertices, dtype=np.float64) * scale
    _check_shape(vertices, unit, step)
    lo, hi = vertices.min(axis=0), vertices.max(axis=0)
    vertices = vertices - np.array([(lo[0] + hi[0]) / 2, (lo[1] + hi[1]) / 2, lo[2]])
    mesh = trimesh.Trimesh(vertices=vertices, faces=mesh.faces, process=False)
    mesh, repairs = _repair(mesh)
    solid = _to_solid(mesh)
    bb = np.asarray(solid.bounding_box(), dtype=np.float64)  # (xmin, ymin, zmin, xmax, ...)
    ext = bb[3:] - bb[:3]
    return _Loaded(solid, (float(ext[0]), float(ext[1]), float(ext[2])), repairs)


# --------------------------------------------------------------------------------------------
# The family
# --------------------------------------------------------------------------------------------

#: (sha256, unit, material, split) of each CAD family registered in this process, by name.
_REGISTERED: dict[str, tuple[str, str, str, str]] = {}


def _stem(path: Path) -> str:
    """The file's stem as a family-name part: letters, digits, ``_`` and ``-``, short."""
    text = re.sub(r"[^A-Za-z0-9_-]+", "_", path.stem).strip("_") or "part"
    return text[:40]


def _builder(loaded: _Loaded) -> Any:
    def build(params: CadParams) -> PartModel:
        """The file's solid scaled to the extents (about the footprint centre, on z = 0)."""
        params.validate()
        ex, ey, ez = loaded.extents
        factors = (params.extent_x_mm / ex, params.extent_y_mm / ey, params.extent_z_mm / ez)
        body = loaded.solid if factors == (1.0, 1.0, 1.0) else loaded.solid.scale(factors)
        return PartModel(body)

    return build


def _card(
    name: str, path: Path, unit: str, sha: str, loaded: _Loaded, material: str, split: str
) -> PartCard:
    dims = {
        f"extent_{axis}_mm": Dimension(nominal=e, tolerance=iso2768_m(e))
        for axis, e in zip(_AXES, loaded.extents, strict=True)
    }
    unit_text = "its own (STEP)" if path.suffix.lower() in STEP_SUFFIXES else unit
    return PartCard(
        family=name,
        title=path.name,
        description=f"The user's CAD file {path.name} (unit {unit_text}, sha256 {sha[:12]}).",
        split=split,
        material=material,
        dimensions=dims,
        features={},
        source=str(path),
    )


def cad_family(
    path: str | Path,
    unit: str,
    material: str = "machined_aluminium",
    split: str = "novel",
    where: str = "part",
) -> PartFamily:
    """The part family of a CAD file, registered as ``cad:<stem>`` on first use.

    The same content (SHA-256) with the same unit, material and split gives the same family
    again; other content whose file has the same stem gets ``cad:<stem>-<sha8>``. Raises
    SpecError ``<where>: <file>: <problem>`` (one line) for anything wrong with the file.
    """
    p = Path(path)
    shown = _short_path(p)

    def fail(problem: str) -> SpecError:
        return SpecError(f"{where}: {shown}: {problem}")

    if unit not in UNITS:
        raise fail(f"unknown unit {excerpt(unit)}; {allowed(unit, list(UNITS))}")
    if material not in MATERIAL_CLASS_NAMES:
        raise fail(
            f"unknown material {excerpt(material)}; {allowed(material, MATERIAL_CLASS_NAMES)}"
        )
    if split not in ("base", "novel"):
        raise fail(f"unknown split {excerpt(split)}; allowed: base, novel")
    suffix = p.suffix.lower()
    if suffix not in SUFFIXES:
        raise fail(
            f"unsupported file type {excerpt(p.suffix or '(none)')}; allowed: {', '.join(SUFFIXES)}"
        )
    try:
        if not p.is_file():
            raise fail("no such file" if not p.exists() else "not a file")
        size = p.stat().st_size
        if size == 0:
            raise fail("empty file (0 bytes)")
        if size > MAX_FILE_BYTES:
            raise fail(f"{size / 2**20:.0f} MiB, more than {MAX_FILE_BYTES // 2**20} MiB")
        sha = file_sha256(p)
        resolved = str(p.resolve())
    except OSError as exc:
        raise fail(f"cannot read the file ({type(exc).__name__})") from None
    try:
        loaded = _load(resolved, sha, unit)
    except _Problem as exc:
        raise fail(str(exc)) from None
    key = (sha, unit, material, split)
    stem = _stem(p)
    candidates = [f"cad:{stem}", f"cad:{stem}-{sha[:8]}"]
    candidates += [f"cad:{stem}-{sha[:8]}-{k}" for k in range(2, 100)]
    for name in candidates:
        if name not in PART_FAMILIES:
            card = _card(name, p, unit, sha, loaded, material, split)
            family = register_part_family(name, CadParams, _builder(loaded), card)
            _REGISTERED[name] = key
            families_by_split.cache_clear()
            return family
        if _REGISTERED.get(name) == key:
            return PART_FAMILIES[name]
    raise fail("too many different files of this name are registered")
