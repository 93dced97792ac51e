"""Backend-neutral scene description for renderers (pyrender now, Blender next).

A renderer turns a ``RenderScene`` plus an OpenCV camera (K, image size, T_base_cam) into a
``RenderOutput``: RGB, depth in metres, the part foreground mask and a face-label pass.
Nothing here knows about OpenGL; each backend converts poses internally.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import trimesh


@dataclass(frozen=True)
class Material:
    """A PBR material: base colour RGB in [0, 1], metallic and roughness in [0, 1]."""

    base_color: tuple[float, float, float]
    metallic: float = 0.0
    roughness: float = 0.5


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
    """A light: ``kind`` "directional" (shines along +z of ``T_base_light``) or "point"."""

    kind: str
    T_base_light: np.ndarray
    color: tuple[float, float, float] = (1.0, 1.0, 1.0)
    intensity: float = 3.0


@dataclass(frozen=True)
class RenderScene:
    """Everything a renderer needs besides the camera: meshes, lights, background, ambient."""

    items: tuple[MeshItem, ...]
    lights: tuple[Light, ...]
    background: tuple[float, float, float] = (0.0, 0.0, 0.0)
    ambient: tuple[float, float, float] = (0.2, 0.2, 0.2)
    meta: dict[str, str] = field(default_factory=dict)
