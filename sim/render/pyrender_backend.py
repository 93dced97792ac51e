"""Fast raster renderer on pyrender (headless EGL): RGB, depth, part mask and face labels.

Pose conversion happens here and nowhere else: OpenCV cameras (x right, y down, z forward)
become OpenGL cameras (x right, y up, z backward) by flipping the y and z axes.
"""

from __future__ import annotations

import functools
import os
from collections import OrderedDict

# EGL gives an off-screen GL context without a display; it must be chosen before OpenGL
# is first imported. A user who set PYOPENGL_PLATFORM (e.g. osmesa) keeps their choice.
os.environ.setdefault("PYOPENGL_PLATFORM", "egl")

import numpy as np  # noqa: E402
import pyrender  # noqa: E402
import trimesh  # noqa: E402

from scenarios.interfaces import RenderOutput  # noqa: E402
from sim.render import Light, Material, MeshItem, RenderScene  # noqa: E402
from sim.render.distortion import distort_passes  # noqa: E402

# Flip y and z: OpenCV camera frame -> OpenGL camera frame (and back; it is its own inverse).
CV_TO_GL = np.diag([1.0, -1.0, -1.0, 1.0])
PART_FLAG = 255  # green channel of the label pass marks part pixels
SMOOTH_ANGLE_RAD = np.radians(30.0)  # edges sharper than this keep hard shading


def _pyrender_material(m: Material) -> pyrender.MetallicRoughnessMaterial:
    return pyrender.MetallicRoughnessMaterial(
        baseColorFactor=[*m.base_color, 1.0],
        metallicFactor=float(m.metallic),
        roughnessFactor=float(m.roughness),
    )


def _split_by_label(item: MeshItem) -> list[tuple[int, trimesh.Trimesh]]:
    """Split an item's mesh into one submesh per face label, smooth-shaded up to 30 degrees."""
    labels = (
        np.zeros(len(item.mesh.faces), dtype=np.int32)
        if item.face_labels is None
        else np.asarray(item.face_labels)
    )
    out = []
    for label in np.unique(labels):
        sub = item.mesh.submesh([np.flatnonzero(labels == label)], append=True)
        # Split vertices along sharp edges so flat CAD faces stay flat and curved ones smooth.
        sub = trimesh.graph.smooth_shade(sub, angle=SMOOTH_ANGLE_RAD)
        out.append((int(label), sub))
    return out


@functools.lru_cache(maxsize=1)
def _shared_gl() -> pyrender.OffscreenRenderer:
    """The one off-screen GL context of this process, resized per render.

    Deleting a pyrender OffscreenRenderer terminates the EGL display for the whole process,
    which breaks every other live renderer; so there is exactly one, never deleted, and
    image sizes are changed through its viewport.
    """
    return pyrender.OffscreenRenderer(64, 64)


class PyrenderRenderer:
    """Renders ``RenderScene`` objects with pyrender; keeps one GL context per image size.

    Uploaded meshes are cached by ``MeshItem.key`` (least recently used first out).
    """

    def __init__(self, cache_size: int = 8, znear: float = 0.01, zfar: float = 10.0) -> None:
        self._cache: OrderedDict[str, list[tuple[int, trimesh.Trimesh]]] = OrderedDict()
        self._cache_size = cache_size
        self._znear = znear
        self._zfar = zfar

    def _gl(self, size: tuple[int, int]) -> pyrender.OffscreenRenderer:
        gl = _shared_gl()
        gl.viewport_width, gl.viewport_height = size
        return gl

    def _parts(self, item: MeshItem) -> list[tuple[int, trimesh.Trimesh]]:
        if item.key in self._cache:
            self._cache.move_to_end(item.key)
            return self._cache[item.key]
        parts = _split_by_label(item)
        self._cache[item.key] = parts
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return parts

    def close(self) -> None:
        """Drop this renderer's mesh cache (the process-wide GL context stays; see _shared_gl)."""
        self._cache.clear()

    def render(
        self,
        scene: RenderScene,
        K: np.ndarray,
        image_size: tuple[int, int],
        T_base_cam: np.ndarray,
        depth_only: bool = False,
        dist: np.ndarray | None = None,
    ) -> RenderOutput:
        """Render ``scene`` from an OpenCV camera; see ``scenarios.interfaces.RenderOutput``.

        ``K`` (3, 3) uses OpenCV pixel centres at integer coordinates; ``image_size`` is
        (W, H); ``T_base_cam`` (4, 4). With ``depth_only`` only part items are drawn, only
        the label pass runs (depth, mask, labels) and the rgb is black. ``dist`` (OpenCV
        k1, k2, p1, p2, k3) warps every pass through the lens model; see ``distort_passes``.
        """
        W, H = image_size
        pr_scene = pyrender.Scene(bg_color=[*scene.background, 1.0], ambient_light=scene.ambient)
        seg_map: dict[pyrender.Node, tuple[int, int, int]] = {}
        for item in scene.items:
            if depth_only and not item.is_part:
                continue
            for label, sub in self._parts(item):
                mat = item.materials.get(label, item.materials[0])
                mesh = pyrender.Mesh.from_trimesh(
                    sub, material=_pyrender_material(mat), smooth=True
                )
                node = pr_scene.add(mesh, pose=np.asarray(item.T_base_obj, dtype=np.float64))
                seg_map[node] = (label + 1, PART_FLAG, 0) if item.is_part else (0, 0, 0)
        # pyrender's projection puts pixel i's centre at window coordinate i + 0.5, OpenCV at i.
        cam = pyrender.IntrinsicsCamera(
            fx=K[0, 0],
            fy=K[1, 1],
            cx=K[0, 2] + 0.5,
            cy=K[1, 2] + 0.5,
            znear=self._znear,
            zfar=self._zfar,
        )
        pr_scene.add(cam, pose=np.asarray(T_base_cam, dtype=np.float64) @ CV_TO_GL)
        for light in scene.lights:
            _add_light(pr_scene, light)
        gl = self._gl((W, H))
        # Depth comes from the label pass: it is sampled at pixel centres like the mask,
        # whereas the colour pass is multisampled and its depth is off-centre by a fraction
        # of a pixel at silhouettes.
        seg, depth = gl.render(pr_scene, flags=pyrender.RenderFlags.SEG, seg_node_map=seg_map)
        depth = np.asarray(depth, dtype=np.float32)
        mask = seg[..., 1] == PART_FLAG
        labels = np.where(mask, seg[..., 0].astype(np.int32) - 1, 0).astype(np.int32)
        if depth_only:
            rgb = np.zeros((H, W, 3), np.uint8)
        else:
            rgb = np.ascontiguousarray(gl.render(pr_scene)[0][..., :3], dtype=np.uint8)
        out = RenderOutput(rgb, depth, mask, labels)
        if dist is not None and np.any(np.asarray(dist) != 0):
            out = distort_passes(out, K, dist, scene.background)
        return out


def _add_light(scene: pyrender.Scene, light: Light) -> None:
    color = np.asarray(light.color, dtype=np.float64)
    if light.kind == "directional":
        # pyrender lights shine along their node's -z; ours shine along +z (like a camera).
        scene.add(
            pyrender.DirectionalLight(color=color, intensity=light.intensity),
            pose=np.asarray(light.T_base_light) @ CV_TO_GL,
        )
    elif light.kind == "point":
        scene.add(
            pyrender.PointLight(color=color, intensity=light.intensity),
            pose=np.asarray(light.T_base_light),
        )
    else:
        raise ValueError(f"light.kind: unknown {light.kind!r}; allowed: directional, point")
