"""Print seconds per render pair (as the cell renders it) next to two bare pyrender frames.

Usage: PYOPENGL_PLATFORM=egl .venv/bin/python benchmarks/bench_render.py
       [--sizes 256 504] [--pairs 40] [--lights area|directional]

A pair is what ``sim.cells.eye_in_hand.EyeInHandCell`` renders per capture: the real render
(colour + label pass) of the part as it stands, the twin render (colour + label pass) of the
nominal CAD part, and, when the part has a removed-material defect, the missing-material pass (the
depth and label pass of ``PartInstance.missing``, the as-built part split by the removed
volumes, alone, as ``EyeInHandCell._defect_masks`` renders it). The
"normal" flange part has no defect, the "defective" one a blind hole and a sink. Each pair
is seen from the next planned viewpoint (the twin camera a little off, as a hand-eye error
would put it); meshes and materials stay (one part, one station, many views).

The scenes are built here from ``sim.render`` types, mirroring ``sim.cells.eye_in_hand._part_items``
and ``sim.appearance`` (real: a metal part and a steel bench with six clutter objects under
a key and a fill area light; twin: the grey CAD part on a dark bench under one directional
light), so the figures stay comparable while those modules change. ``--lights
directional`` replaces each area light by a directional light of the same irradiance at
the part (what a backend without spot/area lights can draw).

The baseline is ``pyrender.OffscreenRenderer.render(scene)`` of the real scene plus the
twin scene, each built once as a plain pyrender user would (one node per mesh, the same
shadow flags as the backend's colour passes) and seen from the pair's cameras: bare
pyrender, no label pass, no per-frame scene work. With area lights that baseline casts
pyrender's own shadows (2048 px maps over the whole cone, 36 texel reads per fragment and
light), which the backend replaces by a cheaper lookup: there the ratio can fall below 1.
Pairs and baseline frames alternate (the machine may be shared); the figures are the
medians of each and of their per-pair ratio.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

import numpy as np
import pyrender
import trimesh

from sim.appearance import (
    MATERIAL_CLASSES,
    TABLES,
    TWIN_PART,
    TWIN_TABLE,
    make_clutter,
    table_mesh,
)
from sim.defects import PartInstance, build_part_instance, make_defects, part_context
from sim.geometry import (
    intrinsics_from_fov,
    look_at,
    pose_from_xyz_rpy,
    transform_points,
)
from sim.parts import build_model, make_params
from sim.render import Light, MeshItem, RenderScene
from sim.render import pyrender_backend as backend
from sim.viewpoints import plan_viewpoints

CATEGORY = "flange_bearing_seat"
HFOV_DEG = 32.0  # the scenarios' default camera
RADIUS_M = 0.25  # the scenarios' default viewpoint radius
KEY_DIR = np.array([-0.3, -0.4, 0.87]) / np.linalg.norm([-0.3, -0.4, 0.87])
FILL_DIR = np.array([0.48, 0.64, 0.6]) / np.linalg.norm([0.48, 0.64, 0.6])
KEY_W, KEY_DIST_M, KEY_SIZE_M = 5.0, 0.6, 0.3
REAL_PART = dataclasses.replace(MATERIAL_CLASSES["machined_aluminium"], seed=3)
REAL_TABLE = dataclasses.replace(TABLES["brushed_steel"], seed=4)
# The twin camera is a little off the real one, as the believed hand-eye puts it.
E_TWIN = pose_from_xyz_rpy((0.002, -0.001, 0.001), np.radians((0.3, -0.2, 0.4)))


def _parts() -> dict[str, PartInstance]:
    model = build_model(CATEGORY, make_params(CATEGORY))
    defects = make_defects(part_context(model), ("hole", "sink"), np.random.default_rng(7))
    return {
        "normal": build_part_instance("bench-normal", CATEGORY, model, []),
        "defective": build_part_instance("bench-defective", CATEGORY, model, defects),
    }


def _clutter(center: np.ndarray, part: PartInstance) -> tuple[MeshItem, ...]:
    """Six objects on the bench around the part, placed as the station places them."""
    radius = float(np.linalg.norm(part.nominal.bounds[:, :2], axis=1).max())
    return make_clutter(6, center, radius + 0.03, 20.0, np.random.default_rng(11))


def _area(center: np.ndarray, direction: np.ndarray, power_w: float, size_m: float) -> Light:
    T = look_at(center + KEY_DIST_M * direction, center)
    return Light("area", T, intensity=power_w, size_m=size_m, spot_deg=25.0)


def _as_directional(light: Light, center: np.ndarray) -> Light:
    """A directional light with ``light``'s on-axis irradiance at ``center`` (W/m^2)."""
    d = float(np.linalg.norm(light.T_base_light[:3, 3] - center))
    return Light("directional", light.T_base_light, light.color, light.intensity / np.pi / d**2)


def _scenes(
    part: PartInstance, T_obj: np.ndarray, lights: str
) -> tuple[RenderScene, RenderScene, RenderScene]:
    """(real, twin, missing-material) scenes of ``part`` at ``T_obj`` (the last one is
    rendered depth-only, and only for a part whose defects removed material)."""
    center = transform_points(T_obj, part.nominal.bounds.mean(axis=0)[None])[0]
    table = table_mesh()
    key = _area(center, KEY_DIR, KEY_W, KEY_SIZE_M)
    fill = _area(center, FILL_DIR, 0.25 * KEY_W, 2 * KEY_SIZE_M)
    real_lights = (key, fill)
    if lights == "directional":
        real_lights = (_as_directional(key, center), _as_directional(fill, center))
    mats = {0: REAL_PART} | {i + 1: REAL_PART for i in range(len(part.defects))}
    real_part = MeshItem(f"{part.part_id}/real", part.mesh, T_obj, mats, part.face_labels)
    real = RenderScene(
        (
            MeshItem("bench-table", table, np.eye(4), {0: REAL_TABLE}, is_part=False),
            *_clutter(center, part),
            real_part,
        ),
        real_lights,
        ambient=(0.12, 0.12, 0.12),
    )
    twin_light = Light("directional", look_at(center + KEY_DIR, center), intensity=3.0)
    twin = RenderScene(
        (
            MeshItem("bench-table", table, np.eye(4), {0: TWIN_TABLE}, is_part=False),
            MeshItem(f"{part.part_id}/nominal", part.nominal, T_obj, {0: TWIN_PART}),
        ),
        (twin_light,),
    )
    missing = twin
    if part.missing is not None and part.missing_labels is not None:
        item = MeshItem(
            f"{part.part_id}/missing", part.missing, T_obj, {0: TWIN_PART}, part.missing_labels
        )
        missing = RenderScene((item,), ())
    return real, twin, missing


def _bare_scene(scene: RenderScene, K: np.ndarray) -> tuple[pyrender.Scene, pyrender.Node]:
    """``scene`` as a plain pyrender user would build it once (one node per item), and its
    camera node (moved per frame)."""
    out = pyrender.Scene(bg_color=[*scene.background, 1.0], ambient_light=scene.ambient)
    for item in scene.items:
        m = item.materials[0]
        mat = pyrender.MetallicRoughnessMaterial(
            baseColorFactor=[*m.base_color, 1.0],
            metallicFactor=m.metallic,
            roughnessFactor=m.roughness,
        )
        mesh = trimesh.graph.smooth_shade(item.mesh, angle=np.radians(30.0))
        out.add(pyrender.Mesh.from_trimesh(mesh, material=mat, smooth=True), pose=item.T_base_obj)
    cam = out.add(
        pyrender.IntrinsicsCamera(K[0, 0], K[1, 1], K[0, 2] + 0.5, K[1, 2] + 0.5, 0.01, 10.0)
    )
    for light in scene.lights:
        pr_light, T_base_light_gl = backend.pyrender_light(light)
        out.add(pr_light, pose=T_base_light_gl)
    return out, cam


def _render_pair(
    renderer: backend.PyrenderRenderer,
    scenes: tuple[RenderScene, RenderScene, RenderScene],
    removing: bool,
    K: np.ndarray,
    size: tuple[int, int],
    T_cam: np.ndarray,
) -> None:
    """One capture's renders, as the cell makes them."""
    real, twin, missing = scenes
    renderer.render(real, K, size, T_cam)
    renderer.render(twin, K, size, T_cam @ E_TWIN)
    if removing:
        renderer.render(missing, K, size, T_cam, depth_only=True)


def _render_bare(
    bare: list[tuple[pyrender.Scene, pyrender.Node, int]], size: tuple[int, int], T_cam: np.ndarray
) -> None:
    """The real and the twin scene's colour frames from the pair's cameras, bare pyrender."""
    gl = backend._shared_gl()
    gl.viewport_width, gl.viewport_height = size
    for (scene, cam, flags), T in zip(bare, (T_cam, T_cam @ E_TWIN), strict=True):
        scene.set_pose(cam, T @ backend.CV_TO_GL)
        gl.render(scene, flags=flags)


def main() -> None:
    """Run the benchmark and print its figures."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 504], help="square sizes, px")
    ap.add_argument("--pairs", type=int, default=40, help="timed pairs per size and part")
    ap.add_argument("--lights", choices=("area", "directional"), default="area")
    args = ap.parse_args()

    T_obj = pose_from_xyz_rpy((0.5, 0.02, 0.0), (0.0, 0.0, np.radians(30.0)))
    print(f"real lights: {args.lights}; medians over {args.pairs} pairs")
    print(f"{'size':>5} {'part':>10} {'pair s':>9} {'2 bare s':>9} {'ratio':>6}")
    for s in args.sizes:
        size = (s, s)
        K = intrinsics_from_fov(s, s, np.radians(HFOV_DEG))
        for name, part in _parts().items():
            center = transform_points(T_obj, part.nominal.bounds.mean(axis=0)[None])[0]
            views = [v.T_base_cam for v in plan_viewpoints(center, RADIUS_M, 1, 20.0, 80.0)]
            scenes = _scenes(part, T_obj, args.lights)
            removing = part.removes_material
            bare = [(*_bare_scene(sc, K), backend.shadow_flags(sc)) for sc in scenes[:2]]
            renderer = backend.PyrenderRenderer()
            # Warm-up: uploads, shader compiles, framebuffer allocation.
            for i in range(3):
                _render_pair(renderer, scenes, removing, K, size, views[i % len(views)])
                _render_bare(bare, size, views[i % len(views)])
            # Pairs and bare frames alternate, so both see the same load on a shared machine.
            pair_t, bare_t = [], []
            for i in range(args.pairs):
                T_cam = views[(3 + i) % len(views)]
                t0 = time.perf_counter()
                _render_pair(renderer, scenes, removing, K, size, T_cam)
                t1 = time.perf_counter()
                _render_bare(bare, size, T_cam)
                pair_t.append(t1 - t0)
                bare_t.append(time.perf_counter() - t1)
            renderer.close()
            p, b = statistics.median(pair_t), statistics.median(bare_t)
            ratio = statistics.median(np.divide(pair_t, bare_t))
            print(f"{s:>5} {name:>10} {p:>9.4f} {b:>9.4f} {ratio:>6.2f}")


if __name__ == "__main__":
    main()
