"""Backend-neutral scene description and the one renderer interface (pyrender, Blender).

A renderer turns a ``RenderScene`` plus an OpenCV camera (K, image size, T_base_cam) into a
``RenderOutput``: RGB, depth in metres, the part foreground mask and a face-label pass.
Nothing here knows about OpenGL or bpy; each backend converts poses internally, and each
interprets a material's ``finish`` as richly as it can (Blender builds procedural
machining marks from it; pyrender uses the base colour, metallic and roughness only).

Backends: ``pyrender`` (``sim.render.pyrender_backend``, fast raster, the default) and
``blender`` (``sim.render.blender``, Cycles in a persistent worker process). Pick one with
``make_renderer``; both implement ``Renderer``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import trimesh

from scenarios.interfaces import CaptureFailed, RenderOutput

#: Surface finishes a material may name. Backends that cannot draw a finish fall back to
#: its base colour, metallic and roughness ("plain"), which is what the CAD twin uses.
FINISHES = (
    "plain",  # uniform PBR: the CAD look
    "turned",  # machined on a lathe: concentric turning rings about the object z axis
    "milled",  # face-milled: overlapping arcs of a fly cutter
    "cast",  # sand/die cast: grainy, matte, small pits
    "polymer",  # opaque moulded plastic: soft sheen, slight subsurface scattering
    "translucent",  # translucent polymer
    "scratch",  # a scratch (texture defect): grooves along the defect, catching the light
    "brushed_steel",  # a brushed steel bench plate
    "wood",  # a wooden bench top
    "rubber_mat",  # a black rubber mat
    "painted",  # painted metal or plastic (fixtures, clutter)
    "cable",  # a PVC cable sheath
    # Texture defects' own finishes (appended: a finish's index salts its Blender noise).
    "stain",  # a stain: a darker, yellow-brown film with soft, noisy edges and a tide line
    "corrosion",  # a corrosion spot: rust or white rust, crusty and rough
    "flow_marks",  # flow marks: wavy bands of differing gloss on a moulded surface
    "dust",  # dust grains and lint: pale grey, matte, fibrous
)

BACKENDS = ("pyrender", "blender")


@dataclass(frozen=True)
class Material:
    """A PBR material: base colour RGB in [0, 1] (linear), metallic and roughness in [0, 1].

    ``finish`` (one of ``FINISHES``) names the surface's physical character; ``seed``
    varies it procedurally per instance (two parts cut on the same lathe still differ);
    ``params`` holds finish-specific knobs as sorted (name, value) pairs, e.g.
    ``("anisotropy", 0.7)``, ``("ring_pitch_mm", 0.25)``, ``("wear", 0.3)``.
    """

    base_color: tuple[float, float, float]
    metallic: float = 0.0
    roughness: float = 0.5
    finish: str = "plain"
    seed: int = 0
    params: tuple[tuple[str, float], ...] = ()

    def param(self, name: str, default: float) -> float:
        """The value of finish parameter ``name`` or ``default``."""
        return dict(self.params).get(name, default)


@dataclass(frozen=True)
class MeshItem:
    """A mesh placed in the base frame.

    ``mesh`` is in metres in its own (object) frame, posed by ``T_base_obj`` (4, 4).
    ``face_labels`` (F,) int32 selects ``materials[label]`` per face; on a part
    (``is_part``) labels also come out in the label pass. ``key`` identifies the mesh
    content so backends may cache uploads; equal keys must mean equal meshes.
    """

    key: str
    mesh: trimesh.Trimesh
    T_base_obj: np.ndarray
    materials: dict[int, Material]
    face_labels: np.ndarray | None = None
    is_part: bool = True


@dataclass(frozen=True)
class Light:
    """A light posed by ``T_base_light``; it shines along +z of that pose (like a camera).

    ``kind``: "directional" (``intensity`` is irradiance, W/m^2), "point" (``intensity``
    in W), "spot" (W, cone half-angle ``spot_deg``) or "area" (W, a square of side
    ``size_m``; soft shadows). Every backend draws shadows for spot and area lights;
    pyrender draws an area light as a spot light whose cone covers ``spot_deg``.
    """

    kind: str
    T_base_light: np.ndarray
    color: tuple[float, float, float] = (1.0, 1.0, 1.0)
    intensity: float = 3.0
    size_m: float = 0.0
    spot_deg: float = 20.0


#: Environment (world) lighting kinds: none (ambient only), a photographic studio with
#: soft boxes, a workshop hall with windows and ceiling strips. All procedural.
ENVIRONMENTS = ("none", "studio", "workshop")


@dataclass(frozen=True)
class Environment:
    """Procedural world lighting: ``kind`` in ``ENVIRONMENTS``, ``strength`` (1 = nominal),
    rotation about the base z axis in degrees, and a seed for its procedural detail."""

    kind: str = "none"
    strength: float = 1.0
    rotation_deg: float = 0.0
    seed: int = 0


@dataclass(frozen=True)
class RenderScene:
    """Everything a renderer needs besides the camera: meshes, lights, world, ambient.

    ``background`` is the colour where nothing is hit (and pyrender's world); ``ambient``
    the flat ambient term of raster backends; ``environment`` the world of path tracers.
    ``seed`` seeds a stochastic renderer's sampling, so a frame is a function of the scene.
    """

    items: tuple[MeshItem, ...]
    lights: tuple[Light, ...]
    background: tuple[float, float, float] = (0.0, 0.0, 0.0)
    ambient: tuple[float, float, float] = (0.2, 0.2, 0.2)
    environment: Environment = Environment()
    seed: int = 0
    meta: dict[str, str] = field(default_factory=dict)


class RenderFailed(CaptureFailed):
    """A frame could not be rendered (a crashed or hung worker); the renderer is usable
    again afterwards. The message is one line that says why."""


#: Edges sharper than this keep hard shading; smoother ones are shaded smooth.
SMOOTH_ANGLE_RAD = float(np.radians(30.0))


def split_by_label(
    mesh: trimesh.Trimesh, face_labels: np.ndarray | None
) -> list[tuple[int, trimesh.Trimesh]]:
    """One submesh per face label (ascending), with vertices split along edges sharper than
    ``SMOOTH_ANGLE_RAD`` and between labels, so flat CAD faces stay flat and curved ones
    smooth. Every backend prepares meshes with this, so their silhouettes and labels agree."""
    labels = (
        np.zeros(len(mesh.faces), dtype=np.int32)
        if face_labels is None
        else np.asarray(face_labels, dtype=np.int32)
    )
    out = []
    for label in np.unique(labels):
        sub = mesh.submesh([np.flatnonzero(labels == label)], append=True)
        sub = trimesh.graph.smooth_shade(sub, angle=SMOOTH_ANGLE_RAD)
        out.append((int(label), sub))
    return out


class Renderer(Protocol):
    """The one renderer interface every backend implements."""

    def render(
        self,
        scene: RenderScene,
        K: np.ndarray,
        image_size: tuple[int, int],
        T_base_cam: np.ndarray,
        depth_only: bool = False,
        dist: np.ndarray | None = None,
    ) -> RenderOutput:
        """Render ``scene`` seen from an OpenCV camera ``K`` (3, 3) of ``image_size`` (W, H)
        at ``T_base_cam``. With ``depth_only`` only part items are drawn, only depth, mask
        and labels are valid and rgb is black. ``dist`` (k1, k2, p1, p2, k3) warps every
        pass through the lens model (``sim.render.distortion``). A backend whose frames can
        fail on their own (a worker process) raises ``RenderFailed``; pyrender renders in
        process and does not (a GL error there is a bug and ends the run)."""
        ...

    def close(self) -> None:
        """Release what the renderer holds (GL objects, worker processes)."""
        ...


def make_renderer(backend: str, **options: Any) -> Renderer:
    """A renderer of the named backend (``BACKENDS``); ``options`` go to its constructor."""
    if backend == "pyrender":
        from sim.render.pyrender_backend import PyrenderRenderer

        return PyrenderRenderer(**options)
    if backend == "blender":
        from sim.render.blender import BlenderRenderer

        return BlenderRenderer(**options)
    raise ValueError(f"render backend: unknown {backend!r}; allowed: {', '.join(BACKENDS)}")
