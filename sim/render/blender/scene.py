"""A persistent bpy scene kept in sync with ``RenderScene`` frames and rendered with Cycles.

Imports bpy: only the Blender worker process imports this module.

Per frame the scene is updated, not rebuilt: the camera, lights and objects move, materials
are swapped from a cache keyed by value, the world is set only when it changed, and a bpy
mesh is made only for a mesh key not seen before (least recently used meshes beyond
``CyclesSettings.max_meshes`` are removed and orphan data purged, so memory stays flat).
``render.use_persistent_data`` keeps Cycles' scene (BVH, shaders) between frames.

Passes: one Cycles render gives everything. Cycles traces each pixel's first sample through
the pixel centre and writes the data passes (depth, object index, material index) from that
sample only (``integrate_camera_sample`` in Cycles' ``init_from_camera.h``), so with the
ordinary 1.5 px Blackman-Harris pixel filter the rgb is anti-aliased while depth, mask and
labels are exact point samples at pixel centres, like pyrender's label pass (measured: masks
identical to pyrender's, depths within 0.03 mm). So neither a 0.01 px filter (an aliased
rgb) nor a second 1-sample data render (a second render per frame) is needed. rgb is the
Combined pass through the view transform, saved as an 8-bit PNG; the data passes come from a
float EXR (both in a RAM-backed temp dir).

Speed settings (CPU device; measured on the flange-on-table scene of
``benchmarks/bench_blender.py`` at 256 x 256, 16 samples, on 2 cores shared with other jobs,
so figures are CPU seconds per frame, medians of 3): path tracing ~3.2 s, i.e. ~0.2 s per
sample per 65k pixels; every pixel takes every sample, because Cycles' adaptive sampling
first checks convergence after about 16 samples (it is left on for larger counts); OIDN adds
0.6 s with the fast prefilter (chosen: the albedo and normal guides are nearly noise-free)
against 1.7 s with the accurate one; 2 or 1 bounces instead of 4, or no light tree, made no
difference above the noise, nor did persistent data at this scene size (it spares
re-exporting meshes, which counts for large ones); the testbed's own work per frame (sync,
EXR and PNG written and read, IPC) is ~40 ms at 64 x 64. So samples set the time.

Conventions converted here and nowhere else: OpenCV cameras and our lights look along +z
(x right, y down); Blender cameras and lights along -z (y up): flip y and z. OpenCV pixel
centres are at integer coordinates, Blender's at i + 0.5; the principal point becomes the
camera shift. Cycles' Depth pass is the z distance along the optical axis (checked: a plane
facing the camera has one depth across the image), as our depth is; misses read 1e10 -> 0.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import bpy
import cv2
import mathutils
import numpy as np
import OpenEXR
import trimesh

from sim.render import Environment, Light, Material, split_by_label
from sim.render.blender import looks
from sim.render.blender.client import (
    CyclesSettings,
    FrameRequest,
    FrameResult,
    ItemState,
    MeshData,
)

# Flip y and z: OpenCV camera / our light frame -> Blender camera / light frame (an involution).
CV_TO_BL = np.diag([1.0, -1.0, -1.0, 1.0])
SENSOR_WIDTH_MM = 36.0  # arbitrary: only lens / sensor width matters
RGB_FILTER_PX = 1.5  # Blackman-Harris width; data passes come from the centre sample anyway
MISS_DEPTH = 1e9  # Cycles writes 1e10 where a camera ray hits nothing
MAX_MATERIALS = 64  # cached bpy materials (by value); unused ones beyond this are removed
CLIP_START_M, CLIP_END_M = 0.01, 100.0
PART_PASS_INDEX = 1  # object pass index of part items (0 for everything else)


def _matrix(T: np.ndarray) -> mathutils.Matrix:
    return mathutils.Matrix(np.asarray(T, dtype=np.float64).tolist())


def _split_by_label(data: MeshData) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[int, ...]]:
    """Vertices (V, 3), faces (F, 3) and slot per face (F,), one slot per face label, prepared
    by ``sim.render.split_by_label`` exactly as the pyrender backend does; plus the slot
    labels."""
    mesh = trimesh.Trimesh(data.vertices, data.faces, process=False)
    parts = split_by_label(mesh, data.face_labels)
    verts, faces, slots = [], [], []
    offset = 0
    for slot, (_, sub) in enumerate(parts):
        verts.append(np.asarray(sub.vertices))
        faces.append(np.asarray(sub.faces) + offset)
        slots.append(np.full(len(sub.faces), slot, dtype=np.int32))
        offset += len(sub.vertices)
    slot_labels = tuple(label for label, _ in parts)
    return np.concatenate(verts), np.concatenate(faces), np.concatenate(slots), slot_labels


def _new_mesh(name: str, data: MeshData) -> tuple[bpy.types.Mesh, tuple[int, ...]]:
    """A smooth-shaded bpy mesh with one (empty) material slot per face label."""
    V, F, slots, slot_labels = _split_by_label(data)
    me = bpy.data.meshes.new(name)
    me.vertices.add(len(V))
    me.vertices.foreach_set("co", V.astype(np.float32).ravel())
    me.loops.add(3 * len(F))
    me.loops.foreach_set("vertex_index", F.astype(np.int32).ravel())
    me.polygons.add(len(F))
    me.polygons.foreach_set("loop_start", np.arange(0, 3 * len(F), 3, dtype=np.int32))
    me.polygons.foreach_set("material_index", slots)
    me.update(calc_edges=True)
    me.shade_smooth()
    for _ in slot_labels:
        me.materials.append(None)
    return me, slot_labels


@dataclass
class _MeshEntry:
    """A loaded mesh, its slot labels and the objects (instances) that show it."""

    mesh: bpy.types.Mesh
    slot_labels: tuple[int, ...]
    objects: list[bpy.types.Object] = field(default_factory=list)
    poses: list[np.ndarray | None] = field(default_factory=list)


class BlenderScene:
    """The worker's one bpy scene: configured once, then updated and rendered per frame."""

    def __init__(self, settings: CyclesSettings, workdir: Path) -> None:
        self.settings = settings
        self.workdir = Path(workdir)
        self.exr_path = str(self.workdir / "frame.exr")
        self.png_path = str(self.workdir / "frame.png")
        bpy.ops.wm.read_factory_settings(use_empty=True)
        self.sc = sc = bpy.context.scene
        self._configure(settings)
        cam_data = bpy.data.cameras.new("twincell-camera")
        cam_data.sensor_fit = "HORIZONTAL"
        cam_data.sensor_width = SENSOR_WIDTH_MM
        cam_data.clip_start, cam_data.clip_end = CLIP_START_M, CLIP_END_M
        self.camera = bpy.data.objects.new("twincell-camera", cam_data)
        sc.collection.objects.link(self.camera)
        sc.camera = self.camera
        self._meshes: OrderedDict[str, _MeshEntry] = OrderedDict()
        self._materials: OrderedDict[tuple[Material, int], bpy.types.Material] = OrderedDict()
        self._lights: list[tuple[str, bpy.types.Object]] = []
        self._world: tuple[Environment, tuple[float, ...], tuple[float, ...]] | None = None
        self._mesh_serial = 0

    def _configure(self, s: CyclesSettings) -> None:
        sc = self.sc
        r = sc.render
        r.engine = "CYCLES"
        r.use_persistent_data = True
        r.use_compositing = False
        r.use_sequencer = False
        r.dither_intensity = 0.0  # no noise added when quantising to 8 bits
        r.film_transparent = False
        r.resolution_percentage = 100
        r.filter_size = RGB_FILTER_PX
        if s.threads > 0:
            r.threads_mode = "FIXED"
            r.threads = s.threads
        else:
            r.threads_mode = "AUTO"
        cy = sc.cycles
        cy.device = "CPU"
        cy.pixel_filter_type = "BLACKMAN_HARRIS"
        cy.filter_width = RGB_FILTER_PX
        cy.use_adaptive_sampling = True
        cy.adaptive_threshold = s.adaptive_threshold
        cy.use_animated_seed = False
        cy.max_bounces = s.max_bounces
        cy.diffuse_bounces = min(2, s.max_bounces)
        cy.glossy_bounces = min(2, s.max_bounces)
        cy.transmission_bounces = s.max_bounces
        cy.transparent_max_bounces = s.max_bounces
        cy.volume_bounces = 0
        cy.caustics_reflective = False
        cy.caustics_refractive = False
        cy.denoiser = "OPENIMAGEDENOISE"
        cy.denoising_input_passes = "RGB_ALBEDO_NORMAL"
        # Albedo and normal guides are nearly noise-free at our sample counts; the accurate
        # prefilter denoises them too (two more network passes, about 1.5 s at 256 x 256).
        cy.denoising_prefilter = "FAST"
        # OIDN's "HIGH" quality costs about 0.9 s a frame at 256 x 256 on 2 cores; "FAST" about
        # 0.1 s, with no difference visible after the camera model's optical blur and noise.
        cy.denoising_quality = "FAST"
        cy.use_auto_tile = True
        vs = sc.view_settings
        sc.display_settings.display_device = "sRGB"
        vs.view_transform = s.view_transform
        vs.look = "None"
        vs.exposure = 0.0
        vs.gamma = 1.0
        vl = sc.view_layers[0]
        vl.use_pass_z = True
        vl.use_pass_object_index = True
        vl.use_pass_material_index = True
        self._channel = {
            "depth": f"{vl.name}.Depth.Z",
            "object": f"{vl.name}.Object Index.X",
            "material": f"{vl.name}.Material Index.X",
        }

    # -- scene sync ------------------------------------------------------------------------

    def _set_camera(self, K: np.ndarray, size: tuple[int, int], T_base_cam: np.ndarray) -> None:
        W, H = size
        fx, fy, cx, cy = float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2])
        r = self.sc.render
        r.resolution_x, r.resolution_y = W, H
        # Non-square pixels: Blender wants both aspects >= 1 and fy / fx = x_asp / y_asp.
        r.pixel_aspect_x, r.pixel_aspect_y = (fy / fx, 1.0) if fy >= fx else (1.0, fx / fy)
        cam = self.camera.data
        # Horizontal sensor fit: the sensor width spans the W pixels, so fx = lens * W / width.
        cam.lens = fx * SENSOR_WIDTH_MM / W
        # Shifts are in units of the image width. The principal point of an unshifted camera
        # is the image centre, W / 2 from the edge, i.e. OpenCV (W - 1) / 2; a positive shift
        # moves the view right (the principal point left) and up (in the image: v grows up
        # for Blender, down for OpenCV), and vertical units are scaled by the pixel aspect.
        cam.shift_x = (0.5 * W - (cx + 0.5)) / W
        cam.shift_y = (cy + 0.5 - 0.5 * H) * (fx / fy) / W
        self.camera.matrix_world = _matrix(np.asarray(T_base_cam) @ CV_TO_BL)

    def _material(self, m: Material, pass_index: int, name: str) -> bpy.types.Material:
        key = (m, pass_index)
        mat = self._materials.get(key)
        if mat is None:
            mat = looks.material(m, name)
            mat.pass_index = pass_index
            # Cached while unassigned: not an orphan for orphans_purge; _evict removes it.
            mat.use_fake_user = True
            self._materials[key] = mat
        else:
            self._materials.move_to_end(key)
        return mat

    def _entry(self, key: str, meshes: dict[str, MeshData]) -> _MeshEntry:
        entry = self._meshes.get(key)
        if entry is None:
            if key not in meshes:
                raise KeyError(f"mesh {key!r} was neither sent nor loaded")
            self._mesh_serial += 1
            me, slot_labels = _new_mesh(f"mesh{self._mesh_serial}", meshes[key])
            entry = self._meshes[key] = _MeshEntry(me, slot_labels)
        self._meshes.move_to_end(key)
        return entry

    def _sync_items(self, items: tuple[ItemState, ...], meshes: dict[str, MeshData]) -> None:
        used: dict[str, int] = {}
        for item in items:
            entry = self._entry(item.key, meshes)
            n = used.get(item.key, 0)
            used[item.key] = n + 1
            if n == len(entry.objects):
                ob = bpy.data.objects.new(f"{entry.mesh.name}.{n}", entry.mesh)
                self.sc.collection.objects.link(ob)
                for slot in ob.material_slots:
                    slot.link = "OBJECT"  # materials per instance, not per shared mesh
                entry.objects.append(ob)
                entry.poses.append(None)
            ob = entry.objects[n]
            if ob.hide_render:
                ob.hide_render = False
            T = np.asarray(item.T_base_obj, dtype=np.float64)
            last = entry.poses[n]
            if last is None or not np.array_equal(last, T):
                ob.matrix_world = _matrix(T)
                entry.poses[n] = T.copy()
            obj_index = PART_PASS_INDEX if item.is_part else 0
            if ob.pass_index != obj_index:
                ob.pass_index = obj_index
            for slot, label in zip(ob.material_slots, entry.slot_labels, strict=True):
                m = item.materials.get(label, item.materials[0])
                mat = self._material(m, label + 1 if item.is_part else 0, f"{item.key}#{label}")
                if slot.material != mat:
                    slot.material = mat
        for key, entry in self._meshes.items():
            for ob in entry.objects[used.get(key, 0) :]:
                if not ob.hide_render:
                    ob.hide_render = True
        self._evict(set(used))

    def _evict(self, in_use: set[str]) -> None:
        """Drop least recently used meshes and materials beyond the caps; purge orphans."""
        removed = False
        for key in list(self._meshes):
            if len(self._meshes) <= self.settings.max_meshes:
                break
            if key in in_use:
                continue
            entry = self._meshes.pop(key)
            for ob in entry.objects:
                bpy.data.objects.remove(ob)
            bpy.data.meshes.remove(entry.mesh)
            removed = True
        in_use_mats = {
            slot.material
            for entry in self._meshes.values()
            for ob in entry.objects
            if not ob.hide_render
            for slot in ob.material_slots
        }
        for mat_key in list(self._materials):
            if len(self._materials) <= MAX_MATERIALS:
                break
            mat = self._materials[mat_key]
            if mat in in_use_mats:
                continue
            del self._materials[mat_key]
            bpy.data.materials.remove(mat)
            removed = True
        if removed:
            # Node groups, images and the like that only the removed data used.
            bpy.data.orphans_purge(do_local_ids=True, do_linked_ids=True, do_recursive=True)

    def _sync_lights(self, lights: tuple[Light, ...]) -> None:
        bl_type = {"directional": "SUN", "point": "POINT", "spot": "SPOT", "area": "AREA"}
        for i, light in enumerate(lights):
            if i < len(self._lights) and self._lights[i][0] != light.kind:
                old = self._lights[i][1]
                data = old.data
                bpy.data.objects.remove(old)
                bpy.data.lights.remove(data)
                self._lights[i] = (light.kind, self._new_light(i, bl_type[light.kind]))
            elif i >= len(self._lights):
                self._lights.append((light.kind, self._new_light(i, bl_type[light.kind])))
            ob = self._lights[i][1]
            d = ob.data
            ob.matrix_world = _matrix(np.asarray(light.T_base_light) @ CV_TO_BL)
            d.color = tuple(float(c) for c in light.color)
            # A sun's strength is irradiance (W/m^2), the others' energy radiant power (W).
            d.energy = float(light.intensity)
            if light.kind == "area":
                d.shape = "SQUARE"
                d.size = float(light.size_m)
            elif light.kind == "spot":
                d.spot_size = float(np.radians(2.0 * light.spot_deg))
        for _, ob in self._lights[len(lights) :]:
            data = ob.data
            bpy.data.objects.remove(ob)
            bpy.data.lights.remove(data)
        del self._lights[len(lights) :]

    def _new_light(self, i: int, bl_type: str) -> bpy.types.Object:
        data = bpy.data.lights.new(f"twincell-light{i}", bl_type)
        if bl_type in ("POINT", "SPOT"):
            data.shadow_soft_size = 0.0  # a true point light: hard shadows
        ob = bpy.data.objects.new(f"twincell-light{i}", data)
        ob.visible_camera = False  # an area light is not a surface in the image or depth
        self.sc.collection.objects.link(ob)
        return ob

    def _sync_world(self, req: FrameRequest) -> None:
        world = (req.environment, tuple(req.background), tuple(req.ambient))
        if world != self._world:
            looks.world(req.environment, req.background, req.ambient)
            self._world = world

    # -- rendering -------------------------------------------------------------------------

    def frame(self, req: FrameRequest) -> FrameResult:
        """Bring the scene to ``req`` and render it; passes as ``RenderOutput`` wants them."""
        self._sync_items(req.items, req.meshes)
        self._sync_lights(req.lights)
        self._sync_world(req)
        self._set_camera(req.K, req.image_size, req.T_base_cam)
        cy = self.sc.cycles
        cy.seed = int(req.seed) & 0x7FFFFFFF
        samples = 1 if req.depth_only else self.settings.samples
        denoise = self.settings.denoise and not req.depth_only
        if cy.samples != samples:
            cy.samples = samples
        if cy.use_denoising != denoise:
            cy.use_denoising = denoise
        # With persistent data Cycles re-reads scene-level settings (samples, denoising,
        # seed, resolution) only when the scene is tagged as changed: without this a
        # samples change alone is ignored (measured: 1 -> 16 samples kept rendering 1).
        self.sc.update_tag()
        bpy.ops.render.render(write_still=False)
        return self._read(req)

    def _save(self, path: str, multilayer: bool) -> None:
        im = self.sc.render.image_settings
        if multilayer:
            im.media_type = "MULTI_LAYER_IMAGE"
            im.file_format = "OPEN_EXR_MULTILAYER"
            im.color_depth = "32"
            im.exr_codec = "NONE"
            # One part: a multi-part file fails on non-square pixels (conflicting
            # pixelAspectRatio headers, Blender 5.0).
            im.use_exr_interleave = True
        else:
            im.media_type = "IMAGE"
            im.file_format = "PNG"
            im.color_mode = "RGB"
            im.color_depth = "8"
            im.compression = 0
        bpy.data.images["Render Result"].save_render(path, scene=self.sc)

    def _read(self, req: FrameRequest) -> FrameResult:
        W, H = req.image_size
        self._save(self.exr_path, multilayer=True)
        ch = {
            name: c.pixels
            for part in OpenEXR.File(self.exr_path).parts
            for name, c in part.channels.items()
        }
        z = np.asarray(ch[self._channel["depth"]], dtype=np.float32)
        depth = np.where(z < MISS_DEPTH, z, 0.0).astype(np.float32)
        mask = np.rint(ch[self._channel["object"]]).astype(np.int32) == PART_PASS_INDEX
        mat_index = np.rint(ch[self._channel["material"]]).astype(np.int32)
        labels = np.where(mask, np.maximum(mat_index - 1, 0), 0).astype(np.int32)
        if req.depth_only:
            rgb = np.zeros((H, W, 3), np.uint8)
        else:
            self._save(self.png_path, multilayer=False)
            bgr = cv2.imread(self.png_path, cv2.IMREAD_COLOR)
            rgb = np.ascontiguousarray(bgr[..., ::-1])
        if depth.shape != (H, W) or rgb.shape != (H, W, 3):
            raise RuntimeError(f"render came back {depth.shape}, wanted {(H, W)}")
        return FrameResult(rgb, depth, mask, labels, tuple(self._meshes))

    def time_bare_render(self, repeats: int) -> float:
        """Mean seconds of ``bpy.ops.render.render()`` on the scene as it stands (no saving)."""
        t0 = time.perf_counter()
        for _ in range(repeats):
            bpy.ops.render.render(write_still=False)
        return (time.perf_counter() - t0) / max(repeats, 1)
