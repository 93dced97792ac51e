"""Fast raster renderer on pyrender (headless EGL): RGB, depth, part mask, face labels, shadows.

Pose conversion happens here and nowhere else: OpenCV cameras (x right, y down, z forward)
become OpenGL cameras (x right, y up, z backward) by flipping the y and z axes; our lights
shine along their +z like a camera, pyrender's along -z, so lights get the same flip.

Speed. Each renderer keeps one pyrender scene for its lifetime. A mesh is uploaded once per
``MeshItem.key`` (one node per face label) and stays on the GPU until it falls out of a
least-recently-used cache (its nodes are then removed, which frees the GL buffers); a frame
only moves nodes, swaps materials, and hides the nodes it does not show. The label pass
(depth, mask, labels) draws into a single-sample framebuffer and reads one byte per pixel
plus depth; the colour pass reads back RGB only. What is drawn is unchanged: the label pass
is sampled at pixel centres, the colour pass is 4x multisampled.

Lights (``sim.render.Light``; Blender's conventions, so both backends light a scene alike):
- "directional": ``intensity`` is irradiance E in W/m^2 and is pyrender's intensity as is
  (pyrender's shading gives radiance E * albedo / pi on a white diffuse surface).
- "point" and "spot": ``intensity`` is the radiant power P in W of an isotropic emitter, so
  the radiant intensity is P / (4 pi) W/sr (pyrender's "candela") and the irradiance at d
  metres is P / (4 pi d^2): 10 W at 0.6 m gives 2.2 W/m^2, 20 W at 0.5 m 6.4 W/m^2. A spot
  is that emitter masked to a cone of half-angle ``spot_deg`` whose edge fades over the
  outer ``SPOT_BLEND`` of (1 - cos), like Blender's default spot blend.
- "area": a one-sided Lambertian square of power P emits P / pi W/sr along its normal (4x a
  point light of the same power): 5 W at 0.6 m gives 4.4 W/m^2. pyrender has no area
  lights, so it is drawn as a spot light of that on-axis intensity whose cone covers
  ``spot_deg``; its shadows are hard-edged (``size_m`` is ignored here; Blender draws the
  soft penumbra) and the cosine fall-off within the cone (>= 0.9 at 25 degrees) is dropped.

Shadows are drawn for spot and area lights, each with its own square shadow map
(``auto_shadow_map_px``) fitted to what the camera sees (``_shadow_frustum``). Point lights cast
none (pyrender has no point-light shadows). Directional lights cast none: pyrender fits a
directional light's orthographic shadow map to the whole scene, and over the 2.4 m table a
2048 px map has 3.3 mm texels - as coarse as the defects - while its depth bias (below) is
3-34 mm: rendered with pyrender's own shadows, the flange's 20 mm hub casts no visible
shadow on the plate at all and the bore's wall shows acne stripes.

Shadow acne and peter-panning. pyrender's shader compares light-space depth with a bias of
``max(0.001 (1 - n.l), 0.0001) / w`` window-depth units and a 3x3 PCF of bilinear taps
(36 texel reads per fragment and light). For a spot light 0.6 m away with pyrender's near
plane (1 % of the scene's diagonal, 3.4 cm) that bias is 2-17 mm, which hides the shadow in
a 2 mm deep hole. Moving the near plane out shrinks it, but walls lit at 20-30 degrees
(where the bias sits at its floor) show acne well before it is small, because the PCF
reaches two texels either side; and on a CPU rasteriser the 36 reads cost more than the
rest of the shading. So the shadow lookup is replaced (``_SHADOW_CALC_GLSL``, patched into
pyrender's mesh.frag): the lookup point is moved ``SHADOW_OFFSET_TEXELS`` shadow texels
along the triangle's normal ("normal offset"), and one bilinear 2x2 PCF (4 reads) decides.
For a receiver at incidence angle a the offset puts the lookup 2 t / cos(a) in front of the
surface (t the texel size there) while the taps reach at most sqrt(2) t tan(a) across it,
so no surface shows acne at any angle, and an occluder casts its shadow once it stands ~2
texels in front of the receiver: the floor of any hole deeper than that is in shadow. A
texel is 0.3 mm at 0.6 m for a 2048 px map over a whole 25 degree cone, and about half that
where the map is fitted to a view from above (the scenarios' views at 55 degrees).

pyrender internals: ``_GLRenderer`` subclasses pyrender 0.1.45's ``Renderer`` (the last
release) for the label framebuffer, the RGB-only readback, shadow maps of a chosen size
that survive frames without their light, per-pass light matrices, the patched shadow
lookup and a deterministic draw order; ``tests/sim/test_render.py`` covers them.
"""

from __future__ import annotations

import functools
import os
import re
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

# EGL gives an off-screen GL context without a display; it must be chosen before OpenGL
# is first imported. A user who set PYOPENGL_PLATFORM (e.g. osmesa) keeps their choice.
os.environ.setdefault("PYOPENGL_PLATFORM", "egl")

import numpy as np  # noqa: E402
import pyrender  # noqa: E402
import trimesh  # noqa: E402
from OpenGL import GL  # noqa: E402
from pyrender.renderer import Renderer as _PyrenderGL  # noqa: E402
from pyrender.shader_program import ShaderProgram, ShaderProgramCache  # noqa: E402

from scenarios.interfaces import RenderOutput  # noqa: E402
from sim.render import Light, Material, MeshItem, RenderScene, split_by_label  # noqa: E402
from sim.render.distortion import distort_passes  # noqa: E402

# Flip y and z: OpenCV camera frame -> OpenGL camera frame (and back; it is its own inverse).
CV_TO_GL = np.diag([1.0, -1.0, -1.0, 1.0])
MAX_LABEL = 254  # the label pass stores label + 1 in one byte; 0 is "not a part"
SPOT_BLEND = 0.15  # a spot's edge fades over this fraction of (1 - cos(cone)), as Blender's
SHADOW_FOV_MARGIN_RAD = np.radians(1.0)  # shadow frustum beyond what it must cover
SHADOW_FIT_SAMPLES = 64  # depth samples per image side used to fit a shadow frustum
SHADOW_OFFSET_TEXELS = 2.0  # normal offset of the shadow lookup, in shadow-map texels
MIN_SHADOW_NEAR_M = 0.002
DEFAULT_CACHE_SIZE = 32  # mesh keys kept uploaded; a frame's own keys are never evicted


def _pyrender_material(m: Material) -> pyrender.MetallicRoughnessMaterial:
    return pyrender.MetallicRoughnessMaterial(
        baseColorFactor=[*m.base_color, 1.0],
        metallicFactor=float(m.metallic),
        roughnessFactor=float(m.roughness),
    )


def _split_by_label(item: MeshItem) -> list[tuple[int, trimesh.Trimesh]]:
    """An item's mesh as one smooth-shaded submesh per face label (``split_by_label``)."""
    parts = split_by_label(item.mesh, item.face_labels)
    for label, _ in parts:
        if item.is_part and not 0 <= label <= MAX_LABEL:
            raise ValueError(f"face_labels of {item.key!r}: {label} is outside 0..{MAX_LABEL}")
    return parts


def light_intensity(light: Light) -> float:
    """pyrender's intensity for ``light``: irradiance (W/m^2) for a directional light,
    radiant intensity (W/sr) on the axis of the others; see the module docstring."""
    if light.kind == "directional":
        return float(light.intensity)
    if light.kind in ("point", "spot"):
        return float(light.intensity) / (4.0 * np.pi)
    if light.kind == "area":
        return float(light.intensity) / np.pi
    raise ValueError(f"light.kind: unknown {light.kind!r}; allowed: directional, point, spot, area")


def _cone_rad(light: Light) -> tuple[float, float]:
    """(inner, outer) cone half-angles in radians of a spot or area light."""
    outer = float(np.clip(np.radians(light.spot_deg), 1e-3, np.pi / 2))
    cos_outer = np.cos(outer)
    inner = float(np.arccos(cos_outer + SPOT_BLEND * (1.0 - cos_outer)))
    return min(inner, outer), outer


def pyrender_light(light: Light) -> tuple[pyrender.Light, np.ndarray]:
    """A plain pyrender light for ``light`` and its node pose (4, 4), OpenGL convention.

    Spot and area lights become ``pyrender.SpotLight`` with pyrender's own shadow camera
    (what a plain pyrender user gets); the renderer uses a shadow camera fitted per frame.
    """
    color = np.asarray(light.color, dtype=np.float64)
    pose = np.asarray(light.T_base_light, dtype=np.float64) @ CV_TO_GL
    intensity = light_intensity(light)
    if light.kind == "directional":
        return pyrender.DirectionalLight(color=color, intensity=intensity), pose
    if light.kind == "point":
        return pyrender.PointLight(color=color, intensity=intensity), pose
    inner, outer = _cone_rad(light)
    spot = pyrender.SpotLight(
        color=color, intensity=intensity, innerConeAngle=inner, outerConeAngle=outer
    )
    return spot, pose


def shadow_flags(scene: RenderScene) -> int:
    """pyrender render flags for the shadows ``scene``'s lights cast (spot and area only)."""
    if any(light.kind in ("spot", "area") for light in scene.lights):
        return int(pyrender.RenderFlags.SHADOWS_SPOT)
    return int(pyrender.RenderFlags.NONE)


# pyrender's shadow lookup (mesh.frag, shadow_calc) is replaced by this one; see the module
# docstring. The geometric normal comes from screen-space derivatives (exact per triangle),
# turned towards the camera: back faces are culled, so a lit fragment faces the camera.
_SHADOW_CALC_GLSL = """\
float twincell_shadow_tap(sampler2D shadow_map, ivec2 ij, ivec2 hi, float depth)
{
    return depth > texelFetch(shadow_map, clamp(ij, ivec2(0), hi), 0).r ? 1.0 : 0.0;
}

float shadow_calc(mat4 light_matrix, sampler2D shadow_map, float nl)
{
    // twincell (sim/render/pyrender_backend.py): normal-offset lookup, 2x2 bilinear PCF.
    ivec2 size = textureSize(shadow_map, 0);
    vec3 ng = normalize(cross(dFdx(frag_position), dFdy(frag_position)));
    if (dot(ng, cam_pos - frag_position) < 0.0) {
        ng = -ng;
    }
    // One texel in metres here: 2 w tan(half-fov) / N, with w the depth along the light's
    // axis and 1 / tan(half-fov) the length of row 1 of P V (also right for orthographic).
    float w = (light_matrix * vec4(frag_position, 1.0)).w;
    float p11 = length(vec3(light_matrix[0][1], light_matrix[1][1], light_matrix[2][1]));
    float texel_m = 2.0 * w / (p11 * float(size.y));
    vec4 proj = light_matrix * vec4(frag_position + ng * (OFFSET_TEXELS * texel_m), 1.0);
    if (proj.w <= 0.0) {
        return 0.0;
    }
    vec3 lc = proj.xyz / proj.w * 0.5 + 0.5;
    if (lc.z > 1.0 || any(lessThan(lc.xy, vec2(0.0))) || any(greaterThan(lc.xy, vec2(1.0)))) {
        return 0.0;
    }
    vec2 st = lc.xy * vec2(size) - 0.5;
    vec2 f = fract(st);
    ivec2 i0 = ivec2(floor(st));
    ivec2 hi = size - 1;
    float s00 = twincell_shadow_tap(shadow_map, i0, hi, lc.z);
    float s10 = twincell_shadow_tap(shadow_map, i0 + ivec2(1, 0), hi, lc.z);
    float s01 = twincell_shadow_tap(shadow_map, i0 + ivec2(0, 1), hi, lc.z);
    float s11 = twincell_shadow_tap(shadow_map, i0 + ivec2(1, 1), hi, lc.z);
    return mix(mix(s00, s10, f.x), mix(s01, s11, f.x), f.y);
}
""".replace("OFFSET_TEXELS", f"{SHADOW_OFFSET_TEXELS:.3f}")

_SHADOW_CALC_RE = re.compile(
    r"float shadow_calc\(mat4 light_matrix, sampler2D shadow_map, float nl\)\n\{.*?\n\}\n", re.S
)


def _patch_mesh_frag(text: str) -> str:
    """pyrender's mesh.frag with twincell's shadow lookup; raises if it cannot be patched."""
    patched, n = _SHADOW_CALC_RE.subn(lambda _: _SHADOW_CALC_GLSL, text)
    if n != 1:
        raise RuntimeError(
            "pyrender's mesh.frag has no shadow_calc to replace; the pyrender backend's "
            f"shadows need pyrender 0.1.45 (installed: {pyrender.__version__})"
        )
    return patched


class _ShaderProgram(ShaderProgram):
    """pyrender's shader program, with ``_patch_mesh_frag`` applied to mesh.frag."""

    def _load(self, shader_filename: str) -> str:
        text = str(super()._load(shader_filename))
        if os.path.basename(shader_filename) == "mesh.frag":
            text = _patch_mesh_frag(text)
        return text


class _ShaderCache(ShaderProgramCache):
    """pyrender's shader cache making ``_ShaderProgram``s (its own logic otherwise)."""

    def get_program(
        self,
        vertex_shader: str,
        fragment_shader: str,
        geometry_shader: str | None = None,
        defines: dict[str, Any] | None = None,
    ) -> ShaderProgram:
        defines = defines or {}
        names = [vertex_shader, fragment_shader, geometry_shader]
        files = [os.path.join(self.shader_dir, n) if n else None for n in names]
        key = (
            tuple(os.path.basename(n) for n in names if n),
            tuple(sorted(defines.items())),
        )
        if key not in self._program_cache:
            self._program_cache[key] = _ShaderProgram(
                vertex_shader=files[0],
                fragment_shader=files[1],
                geometry_shader=files[2],
                defines=defines,
            )
        return self._program_cache[key]


@functools.lru_cache(maxsize=1)
def _shared_gl() -> pyrender.OffscreenRenderer:
    """The one off-screen GL context of this process.

    Deleting a pyrender OffscreenRenderer terminates the EGL display for the whole process,
    which breaks every other live renderer; so there is exactly one, never deleted. Each
    ``PyrenderRenderer`` draws into it with its own ``_GLRenderer`` (GL objects, shaders).
    """
    return pyrender.OffscreenRenderer(64, 64)


class _ShadowSpotLight(pyrender.SpotLight):
    """A spot light whose shadow map has ``shadow_px`` pixels a side and whose shadow camera
    (about the light's axis) has the half field of view ``shadow_half_fov_rad`` and spans
    ``shadow_near_m`` .. ``shadow_far_m``; all set per frame (``_shadow_frustum``)."""

    def __init__(self, shadow_px: int) -> None:
        super().__init__(intensity=1.0)
        self.shadow_px = shadow_px
        self.shadow_half_fov_rad = np.pi / 4
        self.shadow_near_m = 0.05
        self.shadow_far_m = 10.0

    def _generate_shadow_texture(self, size: int | None = None) -> None:
        super()._generate_shadow_texture(self.shadow_px)

    def _get_shadow_camera(self, scene_scale: float) -> pyrender.PerspectiveCamera:
        return pyrender.PerspectiveCamera(
            yfov=2.0 * self.shadow_half_fov_rad,
            znear=self.shadow_near_m,
            zfar=self.shadow_far_m,
            aspectRatio=1.0,
        )


def _inverse_pose(T: np.ndarray) -> np.ndarray:
    """Inverse of a 4x4 pose: closed form when rigid, else numpy's general inverse.

    pyrender inverts the camera and light poses once per drawn primitive and light; LAPACK's
    4x4 inverse can wait milliseconds for OpenBLAS threads on a busy machine.
    """
    R, t = T[:3, :3], T[:3, 3]
    if not np.allclose(T[3], (0.0, 0.0, 0.0, 1.0)) or not np.allclose(R.T @ R, np.eye(3)):
        return np.asarray(np.linalg.inv(T))
    out = np.eye(4)
    out[:3, :3] = R.T
    out[:3, 3] = -(R.T @ t)
    return out


class _GLRenderer(_PyrenderGL):
    """pyrender's renderer with a single-sample label framebuffer, RGB-only colour readback,
    shadow maps of the light's own size that outlive a frame without their light, camera
    and light matrices computed once per pass, and a draw order that does not depend on
    hashing.

    ``render(scene, flags | OFFSCREEN | SEG, seg_map)`` returns (ids (H, W) uint8, depth
    (H, W) float32 metres, 0 = miss); without SEG it returns (rgb (H, W, 3) uint8, None).
    """

    def __init__(self) -> None:
        super().__init__(64, 64)
        self._program_cache = _ShaderCache()
        self.node_order: dict[pyrender.Node, int] = {}
        self._label_fb: Any = None
        self._label_rbs: Any = None
        self._label_dims = (0, 0)
        self._light_matrices: dict[pyrender.Node, tuple[np.ndarray, np.ndarray]] = {}
        self._every_shadow_texture: set[pyrender.Texture] = set()
        self._deleted = False

    def render(self, scene: pyrender.Scene, flags: int, seg_node_map: Any = None) -> Any:
        self._light_matrices = {}
        return super().render(scene, flags, seg_node_map)

    def _get_camera_matrices(self, scene: pyrender.Scene) -> tuple[np.ndarray, np.ndarray]:
        node = scene.main_camera_node
        P = node.camera.get_projection_matrix(
            width=self.viewport_width, height=self.viewport_height
        )
        return _inverse_pose(scene.get_pose(node)), P

    def _get_light_cam_matrices(
        self, scene: pyrender.Scene, light_node: pyrender.Node, flags: int
    ) -> tuple[np.ndarray, np.ndarray]:
        # pyrender's, computed once per pass instead of once per primitive.
        if light_node not in self._light_matrices:
            light = light_node.light
            pose = scene.get_pose(light_node).copy()
            camera = light._get_shadow_camera(scene.scale)
            if isinstance(light, pyrender.DirectionalLight):
                pose[:3, 3] = scene.centroid + pose[:3, 2] * scene.scale
            V = _inverse_pose(pose)
            self._light_matrices[light_node] = (V, camera.get_projection_matrix())
        return self._light_matrices[light_node]

    def _update_context(self, scene: pyrender.Scene, flags: int) -> None:
        # pyrender frees the shadow map of a light that left the scene and makes a new one
        # when it returns: a real frame lit by spot lights after a twin frame lit by a
        # directional one would reallocate every map. Here a map stays allocated while its
        # light is out of the scene, and is freed in delete().
        present = {light.shadow_texture for light in scene.lights}
        self._shadow_textures = {t for t in present if t is not None and t._in_context()}
        super()._update_context(scene, flags)
        self._every_shadow_texture = {
            t for t in self._every_shadow_texture | self._shadow_textures if t._in_context()
        }

    # Draw order: front to back (lets the rasteriser skip hidden fragments), ties by the
    # order nodes were added, so the same scene always draws in the same order.
    def _sorted_mesh_nodes(self, scene: pyrender.Scene) -> list[pyrender.Node]:
        cam = scene.get_pose(scene.main_camera_node)[:3, 3]
        nodes = [n for n in scene.mesh_nodes if n.mesh.is_visible]
        dist = {n: float(np.linalg.norm(scene.get_pose(n)[:3, 3] - cam)) for n in nodes}
        nodes.sort(key=lambda n: (n.mesh.is_transparent, dist[n], self.node_order.get(n, 0)))
        return nodes

    def _configure_forward_pass_viewport(self, flags: int) -> None:
        if not flags & pyrender.RenderFlags.SEG:
            super()._configure_forward_pass_viewport(flags)
            return
        self._configure_label_framebuffer()
        GL.glBindFramebuffer(GL.GL_DRAW_FRAMEBUFFER, self._label_fb)
        GL.glViewport(0, 0, self.viewport_width, self.viewport_height)
        GL.glEnable(GL.GL_DEPTH_TEST)
        GL.glDepthMask(GL.GL_TRUE)
        GL.glDepthFunc(GL.GL_LESS)
        GL.glDepthRange(0.0, 1.0)

    def _configure_label_framebuffer(self) -> None:
        dims = (self.viewport_width, self.viewport_height)
        if self._label_fb is not None and self._label_dims != dims:
            self._delete_label_framebuffer()
        if self._label_fb is not None:
            return
        color_rb, depth_rb = GL.glGenRenderbuffers(2)
        GL.glBindRenderbuffer(GL.GL_RENDERBUFFER, color_rb)
        GL.glRenderbufferStorage(GL.GL_RENDERBUFFER, GL.GL_R8, *dims)
        GL.glBindRenderbuffer(GL.GL_RENDERBUFFER, depth_rb)
        GL.glRenderbufferStorage(GL.GL_RENDERBUFFER, GL.GL_DEPTH_COMPONENT24, *dims)
        self._label_fb = GL.glGenFramebuffers(1)
        GL.glBindFramebuffer(GL.GL_DRAW_FRAMEBUFFER, self._label_fb)
        GL.glFramebufferRenderbuffer(
            GL.GL_DRAW_FRAMEBUFFER, GL.GL_COLOR_ATTACHMENT0, GL.GL_RENDERBUFFER, color_rb
        )
        GL.glFramebufferRenderbuffer(
            GL.GL_DRAW_FRAMEBUFFER, GL.GL_DEPTH_ATTACHMENT, GL.GL_RENDERBUFFER, depth_rb
        )
        self._label_rbs = (color_rb, depth_rb)
        self._label_dims = dims

    def _delete_label_framebuffer(self) -> None:
        if self._label_fb is not None:
            GL.glDeleteFramebuffers(1, [self._label_fb])
            GL.glDeleteRenderbuffers(2, list(self._label_rbs))
        self._label_fb = self._label_rbs = None
        self._label_dims = (0, 0)

    def _read_main_framebuffer(self, scene: pyrender.Scene, flags: int) -> tuple[Any, Any]:
        w, h = self.viewport_width, self.viewport_height
        GL.glPixelStorei(GL.GL_PACK_ALIGNMENT, 1)
        if flags & pyrender.RenderFlags.SEG:
            GL.glBindFramebuffer(GL.GL_READ_FRAMEBUFFER, self._label_fb)
            ids = np.empty((h, w), np.uint8)
            GL.glReadPixels(0, 0, w, h, GL.GL_RED, GL.GL_UNSIGNED_BYTE, ids)
            z = np.empty((h, w), np.float32)
            GL.glReadPixels(0, 0, w, h, GL.GL_DEPTH_COMPONENT, GL.GL_FLOAT, z)
            cam = scene.main_camera_node.camera
            return np.ascontiguousarray(ids[::-1]), _linear_depth(z[::-1], cam.znear, cam.zfar)
        # Resolve the multisampled colour (depth is not needed: it comes from the label pass).
        GL.glBindFramebuffer(GL.GL_READ_FRAMEBUFFER, self._main_fb_ms)
        GL.glBindFramebuffer(GL.GL_DRAW_FRAMEBUFFER, self._main_fb)
        GL.glBlitFramebuffer(0, 0, w, h, 0, 0, w, h, GL.GL_COLOR_BUFFER_BIT, GL.GL_LINEAR)
        GL.glBindFramebuffer(GL.GL_READ_FRAMEBUFFER, self._main_fb)
        rgb = np.empty((h, w, 3), np.uint8)
        GL.glReadPixels(0, 0, w, h, GL.GL_RGB, GL.GL_UNSIGNED_BYTE, rgb)
        return np.ascontiguousarray(rgb[::-1]), None

    def _configure_shadow_mapping_viewport(self, light: pyrender.Light, flags: int) -> None:
        # As pyrender's, but the viewport is the light's own shadow map, not a fixed 2048^2.
        self._configure_shadow_framebuffer()
        GL.glBindFramebuffer(GL.GL_FRAMEBUFFER, self._shadow_fb)
        light.shadow_texture._bind()
        light.shadow_texture._bind_as_depth_attachment()
        GL.glActiveTexture(GL.GL_TEXTURE0)
        light.shadow_texture._bind()
        GL.glDrawBuffer(GL.GL_NONE)
        GL.glReadBuffer(GL.GL_NONE)
        GL.glClear(GL.GL_DEPTH_BUFFER_BIT)
        size = light.shadow_texture.width
        GL.glViewport(0, 0, size, size)
        GL.glEnable(GL.GL_DEPTH_TEST)
        GL.glDepthMask(GL.GL_TRUE)
        GL.glDepthFunc(GL.GL_LESS)
        GL.glDepthRange(0.0, 1.0)
        GL.glDisable(GL.GL_CULL_FACE)
        GL.glDisable(GL.GL_BLEND)

    def delete(self) -> None:
        """Free every GL object this renderer made (the context must be current); idempotent."""
        if self._deleted:
            return
        self._deleted = True
        super().delete()
        for texture in self._every_shadow_texture:
            texture.delete()
        self._shadow_fb = None  # pyrender deletes it but keeps the stale id
        self._delete_label_framebuffer()

    def __del__(self) -> None:
        # GL objects can only be freed with the context current, which a garbage collection
        # cannot promise; PyrenderRenderer frees them in close() or on its next render.
        pass


def _linear_depth(z_window: np.ndarray, znear: float, zfar: float) -> np.ndarray:
    """Metric depth (H, W) float32 from window depth in [0, 1]; 0 where nothing was hit."""
    # The same arithmetic as pyrender's, in float32.
    miss = z_window == 1.0
    ndc = 2.0 * z_window - 1.0
    depth = (2.0 * znear * zfar) / (zfar + znear - ndc * (zfar - znear))
    depth[miss] = 0.0
    return np.ascontiguousarray(depth, dtype=np.float32)


class _Scene(pyrender.Scene):
    """pyrender's scene listing its lights in a fixed order (by node name): the shader sums
    the lights' contributions in that order, so a frame's bytes do not depend on hashing."""

    @property
    def light_nodes(self) -> list[pyrender.Node]:
        return sorted(super().light_nodes, key=lambda n: n.name)


#: GL renderers of PyrenderRenderers collected without close(); freed at the next render.
_GRAVEYARD: list[_GLRenderer] = []


@dataclass
class _Uploaded:
    """One item's meshes in the scene: a node per face label, and its local box corners."""

    nodes: list[tuple[int, pyrender.Node]]
    corners_obj: np.ndarray  # (8, 3) metres, object frame


class PyrenderRenderer:
    """Renders ``RenderScene`` objects with pyrender in the process's one GL context.

    Uploaded meshes are cached by ``MeshItem.key`` (``cache_size`` keys, least recently used
    first out). ``shadow_map_px`` is the side of each spot/area light's shadow map (None:
    ``auto_shadow_map_px`` of the image size); a texel spans at most 2 d tan(cone + 1 degree)
    / ``shadow_map_px`` at d metres from the light (0.3 mm for a 25 degree cone at 0.6 m and
    2048 px), less where the view is close. ``znear``/``zfar`` bound the camera's depth range
    (m). Call ``close()`` to free
    the GL objects; a renderer garbage-collected without it frees them on the process's
    next render.
    """

    def __init__(
        self,
        cache_size: int = DEFAULT_CACHE_SIZE,
        znear: float = 0.01,
        zfar: float = 10.0,
        shadow_map_px: int | None = None,
    ) -> None:
        self._cache_size = cache_size
        self._znear = znear
        self._zfar = zfar
        self._shadow_px = shadow_map_px
        self._gl: _GLRenderer | None = None
        self._finalizer: weakref.finalize | None = None
        self._reset_scene()

    def _reset_scene(self) -> None:
        self._scene = _Scene()
        self._uploaded: OrderedDict[tuple[str, int], _Uploaded] = OrderedDict()
        self._materials: OrderedDict[Material, pyrender.Material] = OrderedDict()
        self._camera = pyrender.IntrinsicsCamera(1.0, 1.0, 0.0, 0.0, self._znear, self._zfar)
        self._camera_node = self._scene.add(self._camera)
        self._light_nodes: dict[tuple[str, int], pyrender.Node] = {}
        self._n_added = 0

    def _gl_renderer(self) -> _GLRenderer:
        if self._gl is None:
            self._gl = _GLRenderer()
            self._finalizer = weakref.finalize(self, _GRAVEYARD.append, self._gl)
        return self._gl

    def close(self) -> None:
        """Free this renderer's GL objects and mesh cache; it may render again afterwards.

        The process-wide GL context stays (see ``_shared_gl``).
        """
        if self._gl is not None:
            platform = _shared_gl()._platform
            platform.make_current()
            try:
                self._gl.delete()
            finally:
                platform.make_uncurrent()
            if self._finalizer is not None:
                self._finalizer.detach()
            self._gl = None
        self._reset_scene()

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
        platform = _shared_gl()._platform
        platform.make_current()
        try:
            while _GRAVEYARD:
                _GRAVEYARD.pop().delete()
            gl = self._gl_renderer()
            gl.viewport_width, gl.viewport_height = W, H
            seg_map, part_corners = self._sync_items(scene, depth_only)
            self._sync_camera(K, T_base_cam)
            pr = self._scene
            pr.bg_color = [*scene.background, 1.0]
            pr.ambient_light = scene.ambient
            # Depth comes from the label pass: it is sampled at pixel centres like the mask,
            # whereas the colour pass is multisampled and its depth is off-centre by a
            # fraction of a pixel at silhouettes.
            flags = pyrender.RenderFlags.OFFSCREEN
            ids, depth = gl.render(pr, flags | pyrender.RenderFlags.SEG, seg_map)
            if depth_only:
                # Lights stay as they are: the label pass ignores them, and a light removed
                # from the scene would lose its shadow map.
                rgb = np.zeros((H, W, 3), np.uint8)
            else:
                shadow_px = self._shadow_px or auto_shadow_map_px(image_size)
                seen = _seen_points(depth, K, T_base_cam)
                self._sync_lights(scene.lights, np.concatenate([part_corners, seen]), shadow_px)
                rgb, _ = gl.render(pr, flags | shadow_flags(scene))
        finally:
            platform.make_uncurrent()
        mask = ids > 0
        labels = np.where(mask, ids.astype(np.int32) - 1, 0).astype(np.int32)
        out = RenderOutput(rgb, depth, mask, labels)
        if dist is not None and np.any(np.asarray(dist) != 0):
            out = distort_passes(out, K, dist, scene.background)
        return out

    def _material(self, m: Material) -> pyrender.Material:
        try:
            mat = self._materials.get(m)
        except TypeError:  # an unhashable field (e.g. a list colour): not cached
            return _pyrender_material(m)
        if mat is None:
            mat = self._materials[m] = _pyrender_material(m)
            if len(self._materials) > 4 * self._cache_size:
                self._materials.popitem(last=False)
        else:
            self._materials.move_to_end(m)
        return mat

    def _upload(self, item: MeshItem) -> _Uploaded:
        nodes = []
        for label, sub in _split_by_label(item):
            mesh = pyrender.Mesh.from_trimesh(sub, smooth=True)
            node = self._scene.add(mesh)
            self._gl_renderer().node_order[node] = self._n_added
            self._n_added += 1
            nodes.append((label, node))
        corners = trimesh.bounds.corners(item.mesh.bounds)
        return _Uploaded(nodes, np.asarray(corners, dtype=np.float64))

    def _sync_items(
        self, scene: RenderScene, depth_only: bool
    ) -> tuple[dict[pyrender.Node, tuple[int, int, int]], np.ndarray]:
        """Show, pose and dress the nodes of this frame's items; hide the rest; evict.

        Returns the label pass's node colours and the corners (N, 3) of the part items'
        boxes in the base frame. An item whose key appears k times in one scene uses the
        cache entries (key, 0) .. (key, k - 1): each occurrence has its own nodes.
        """
        seen: dict[str, int] = {}
        used: set[tuple[str, int]] = set()
        seg_map: dict[pyrender.Node, tuple[int, int, int]] = {}
        corners = []
        for item in scene.items:
            if depth_only and not item.is_part:
                continue
            occurrence = seen.get(item.key, 0)
            seen[item.key] = occurrence + 1
            ck = (item.key, occurrence)
            entry = self._uploaded.get(ck)
            if entry is None:
                entry = self._uploaded[ck] = self._upload(item)
            else:
                self._uploaded.move_to_end(ck)
            used.add(ck)
            T = np.array(item.T_base_obj, dtype=np.float64)  # a copy: the node keeps it
            for label, node in entry.nodes:
                node.mesh.primitives[0].material = self._material(
                    item.materials.get(label, item.materials[0])
                )
                node.mesh.is_visible = True
                self._scene.set_pose(node, T)
                # Non-part items are drawn black: they hide parts but are no label.
                seg_map[node] = (label + 1, 0, 0) if item.is_part else (0, 0, 0)
            if item.is_part:
                corners.append(entry.corners_obj @ T[:3, :3].T + T[:3, 3])
        for ck, entry in self._uploaded.items():
            if ck not in used:
                for _, node in entry.nodes:
                    node.mesh.is_visible = False
        # Evict the least recently used keys beyond the cache size (never this frame's):
        # removing their nodes makes pyrender free their GL buffers on the next pass.
        while len(self._uploaded) > self._cache_size:
            ck = next(iter(self._uploaded))
            if ck in used:
                break
            for _, node in self._uploaded.pop(ck).nodes:
                self._scene.remove_node(node)
                self._gl_renderer().node_order.pop(node, None)
        part_corners = np.concatenate(corners) if corners else np.zeros((0, 3))
        return seg_map, part_corners

    def _sync_camera(self, K: np.ndarray, T_base_cam: np.ndarray) -> None:
        cam = self._camera
        # pyrender's projection puts pixel i's centre at window coordinate i + 0.5, OpenCV
        # at i.
        cam.fx, cam.fy = float(K[0, 0]), float(K[1, 1])
        cam.cx, cam.cy = float(K[0, 2]) + 0.5, float(K[1, 2]) + 0.5
        cam.znear, cam.zfar = self._znear, self._zfar
        self._scene.set_pose(self._camera_node, np.asarray(T_base_cam, np.float64) @ CV_TO_GL)

    def _sync_lights(
        self, lights: tuple[Light, ...], fit_points: np.ndarray, shadow_px: int
    ) -> None:
        """Pose and set this frame's lights on pooled nodes (a spot keeps its shadow map).

        ``fit_points`` (N, 3), base frame: what a spot light's shadow map must cover (the
        surfaces the camera sees and the part boxes); see ``_shadow_frustum``.
        """
        used = set()
        count: dict[str, int] = {}
        for light in lights:
            intensity = light_intensity(light)  # also rejects unknown kinds
            group = "spot" if light.kind == "area" else light.kind
            slot = (group, count.get(group, 0))
            count[group] = slot[1] + 1
            used.add(slot)
            node = self._light_nodes.get(slot)
            if node is None:
                name = f"light:{group}:{slot[1]:03d}"  # fixes the lights' order; see _Scene
                node = pyrender.Node(name, light=_new_light(group, shadow_px))
                self._light_nodes[slot] = node
            if node not in self._scene.nodes:
                self._scene.add_node(node)
            pr_light = node.light
            pr_light.color = np.asarray(light.color, dtype=np.float64)
            pr_light.intensity = intensity
            T_gl = np.asarray(light.T_base_light, dtype=np.float64) @ CV_TO_GL
            if isinstance(pr_light, _ShadowSpotLight):
                if pr_light.shadow_px != shadow_px:
                    pr_light.shadow_px = shadow_px
                    pr_light.shadow_texture = None  # frees the old map; a new one is made
                inner, outer = _cone_rad(light)
                pr_light.outerConeAngle = outer
                pr_light.innerConeAngle = inner
                fov, near, far = _shadow_frustum(light.T_base_light, outer, fit_points, self._zfar)
                pr_light.shadow_half_fov_rad = fov
                pr_light.shadow_near_m, pr_light.shadow_far_m = near, far
            self._scene.set_pose(node, T_gl)
        for slot, node in self._light_nodes.items():
            if slot not in used and node in self._scene.nodes:
                self._scene.remove_node(node)


def _seen_points(depth: np.ndarray, K: np.ndarray, T_base_cam: np.ndarray) -> np.ndarray:
    """Base-frame points (N, 3) of surfaces the camera sees, from a grid of depth samples
    (about ``SHADOW_FIT_SAMPLES`` a side, the image's last row and column included)."""
    H, W = depth.shape
    step = max(1, max(H, W) // SHADOW_FIT_SAMPLES)
    rows = np.unique(np.r_[np.arange(0, H, step), H - 1])
    cols = np.unique(np.r_[np.arange(0, W, step), W - 1])
    z = depth[np.ix_(rows, cols)].astype(np.float64)
    v, u = np.meshgrid(rows.astype(np.float64), cols.astype(np.float64), indexing="ij")
    hit = z > 0
    z, u, v = z[hit], u[hit], v[hit]
    y = (v - K[1, 2]) / K[1, 1]
    x = (u - K[0, 2] - K[0, 1] * y) / K[0, 0]
    pts = np.column_stack([x * z, y * z, z])
    T = np.asarray(T_base_cam, dtype=np.float64)
    return np.asarray(pts @ T[:3, :3].T + T[:3, 3])


def _shadow_frustum(
    T_base_light: np.ndarray, cone_rad: float, points: np.ndarray, zfar: float
) -> tuple[float, float, float]:
    """Half field of view (rad), near and far planes (m) of a spot light's shadow camera.

    The frustum (square, about the light's axis) covers the ``points`` in front of the light
    - the surfaces the camera sees - and no more than the cone: every occluder of a seen
    surface lies on the ray from the light to it, so it is inside too, and the map's texels
    are spent where they are seen (for the scenarios' views from 55 degrees above the part, a
    15 degree half-angle instead of the 25 degree cone: texels half the size). Points
    sampled on a grid can miss the extremes by a sample, hence the margin. The near plane
    sits halfway to the nearest point (depth precision; anything nearer casts no shadow).
    """
    T = np.asarray(T_base_light, dtype=np.float64)
    local = (np.asarray(points, dtype=np.float64) - T[:3, 3]) @ T[:3, :3]  # light frame
    ahead = local[local[:, 2] > 1e-6]
    fov = cone_rad
    near = 0.05
    if len(ahead):
        tan_max = float(np.abs(ahead[:, :2] / ahead[:, 2:]).max())
        fov = min(float(np.arctan(1.05 * tan_max)), cone_rad)
        near = 0.5 * float(ahead[:, 2].min())
    fov = min(fov + SHADOW_FOV_MARGIN_RAD, np.radians(85.0))
    return fov, max(near, MIN_SHADOW_NEAR_M), zfar


def auto_shadow_map_px(image_size: tuple[int, int]) -> int:
    """Shadow map side for an image of ``image_size`` (W, H): the power of two at or above
    3 x its larger side, within 512 .. 4096 (256 px -> 1024, 504 px -> 2048).

    With the scenarios' geometry (light 0.6 m from the part, 25 degree cone, camera 0.25 m
    away with a 32 degree field of view) a shadow texel spans at most 0.75-1.4 image pixels
    (a map over the whole cone, for an oblique view) and about half that for a view from
    above, where the map is fitted to a smaller patch (``_shadow_frustum``).
    """
    need = 3 * max(image_size)
    return int(np.clip(2 ** int(np.ceil(np.log2(need))), 512, 4096))


def _new_light(group: str, shadow_px: int) -> pyrender.Light:
    if group == "directional":
        return pyrender.DirectionalLight()
    if group == "point":
        return pyrender.PointLight()
    return _ShadowSpotLight(shadow_px)
