"""Blender backend: worker memory over a long render loop, and seconds per frame vs bare bpy.

    .venv/bin/python benchmarks/bench_blender.py                 # 1000-frame memory loop + speed
    .venv/bin/python benchmarks/bench_blender.py --frames 200 --speed-frames 3

Memory: a 64 x 64, 1-sample loop with a moving camera that switches between two parts (and
gives the part a new material every frame, as the real look does), printing the worker's RSS
(/proc/<pid>/status VmRSS) every 100 frames and its growth from frame 100 (goal < 10 %).

Speed: the "real" frame of the bundled ``r2t-flange`` scenario (a defective flange with a
hole and a scratch in its seeded machined-aluminium finish, the station's key and fill area
lights, workshop world, brushed-steel bench and clutter), from its planned viewpoints, at
256 x 256 and 504 x 504 with the scenario's render settings (settings printed), each next
to ``bpy.ops.render.render()`` timed inside the worker on the same scene (no IPC, no image
files, no readback): the testbed's overhead over bare Blender (goals: < 1 s per 256 x 256
frame, within 1.2x of bare). Wall seconds depend on what else runs on the machine, so the
worker's CPU seconds per frame are printed too.
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import replace

import numpy as np
import trimesh

from sim.appearance import table_mesh, twin_look
from sim.defects import build_part_instance
from sim.geometry import intrinsics_from_fov, look_at, pose_from_xyz_rpy
from sim.parts import build_model, make_params
from sim.render import Light, Material, MeshItem, RenderScene
from sim.render.blender import BlenderRenderer

PART_AT = np.array([0.5, 0.0, 0.0])  # where the part sits on the table (base frame, m)


def _rss_mib(pid: int) -> float:
    """Resident set size of process ``pid`` in MiB (from /proc/<pid>/status)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    raise RuntimeError(f"no VmRSS for pid {pid}")


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (all threads) so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _parts() -> dict[str, trimesh.Trimesh]:
    """Two flange bearing seats with different hubs (two mesh keys)."""
    out = {}
    for key, hub_mm in (("bench-flange-hub20", 20.0), ("bench-flange-hub14", 14.0)):
        model = build_model(
            "flange_bearing_seat", make_params("flange_bearing_seat", {"hub_height_mm": hub_mm})
        )
        out[key] = build_part_instance(key, "flange_bearing_seat", model, []).nominal
    return out


def _scene(
    key: str, mesh: trimesh.Trimesh, part: Material, table_mesh: trimesh.Trimesh
) -> RenderScene:
    """The part on the table, lit by a 0.3 m square area light above front left."""
    look = twin_look(PART_AT)
    T_part = pose_from_xyz_rpy(PART_AT, (0.0, 0.0, 0.3))
    light = Light(
        "area", look_at(PART_AT + np.array([-0.2, -0.25, 0.45]), PART_AT), intensity=8.0, size_m=0.3
    )
    items = (
        MeshItem(key, mesh, T_part, {0: part}),
        MeshItem("bench-table", table_mesh, np.eye(4), {0: look.table}, is_part=False),
    )
    return RenderScene(items, (light,), look.background)


def _camera(i: int, radius_m: float = 0.25) -> np.ndarray:
    """T_base_cam of frame ``i``: circling the part at 50 degrees elevation."""
    az = 0.37 * i
    el = np.radians(50.0)
    eye = PART_AT + radius_m * np.array(
        [np.cos(az) * np.cos(el), np.sin(az) * np.cos(el), np.sin(el)]
    )
    return look_at(eye, PART_AT + np.array([0.0, 0.0, 0.015]))


def memory_loop(frames: int, threads: int) -> None:
    """Print the worker's RSS every 100 frames of a small loop and its growth."""
    parts, table = _parts(), table_mesh()
    keys = list(parts)
    size = (64, 64)
    K = intrinsics_from_fov(*size, np.radians(45.0))
    base = twin_look(PART_AT).part
    rng = np.random.default_rng(0)
    with BlenderRenderer(samples=1, denoise=False, threads=threads) as r:
        first: float | None = None
        t0 = time.perf_counter()
        for i in range(1, frames + 1):
            key = keys[i % 2]
            color = np.clip(np.asarray(base.base_color) + rng.uniform(-0.05, 0.05, 3), 0, 1)
            part = replace(base, base_color=(float(color[0]), float(color[1]), float(color[2])))
            r.render(_scene(key, parts[key], part, table), K, size, _camera(i))
            if i % 100 == 0:
                pid = r.worker_pid
                assert pid is not None
                rss = _rss_mib(pid)
                first = rss if first is None else first
                growth = 100.0 * (rss - first) / first
                rate = i / (time.perf_counter() - t0)
                print(
                    f"frame {i:5d}  worker RSS {rss:7.1f} MiB  growth since frame 100 "
                    f"{growth:+5.1f} %  ({rate:.1f} frames/s)",
                    flush=True,
                )


def _real_scene(seed: int = 0) -> tuple[RenderScene, list[np.ndarray]]:
    """The r2t-flange "real" scene of a defective part, and the part's viewpoints."""
    from scenarios.interfaces import PartPlan
    from scenarios.spec import load_scenario
    from sim.cells.eye_in_hand import _part_items
    from sim.cells.factory import build_placement, cell_setup
    from sim.geometry import transform_points
    from sim.viewpoints import plan_viewpoints

    sc = load_scenario("r2t-flange")
    setup = cell_setup(sc, seed)
    pl = build_placement(sc, seed, PartPlan(4, "bench-part", "test", ("hole", "scratch")))
    center = transform_points(pl.T_base_obj, pl.center_obj[None])[0]
    look = setup.station.look(pl.finish, center, 0.0)
    items = _part_items("bench-part/real", pl, look, True, pl.T_base_obj)
    scene = RenderScene(
        tuple(items), look.lights, look.background, look.ambient, look.environment, seed=1
    )
    vp = setup.viewpoints
    views = plan_viewpoints(
        center, vp.radius_m, vp.subdivisions, vp.elevation_min_deg, vp.elevation_max_deg
    )
    return scene, [v.T_base_cam for v in views]


def speed(sizes: list[int], frames: int, threads: int, samples: int | None, denoise: bool) -> None:
    """Seconds per frame (wall and worker CPU) next to bare bpy renders of the same scene."""
    from scenarios.spec import load_scenario

    scene, cams = _real_scene()
    rs = load_scenario("r2t-flange").render
    n_samples = samples or rs.samples
    with BlenderRenderer(samples=n_samples, denoise=denoise, threads=threads) as r:
        s = r.settings
        print(
            f"settings: {s.samples} samples (adaptive, threshold {s.adaptive_threshold}), "
            f"denoise {'OIDN, fast prefilter, fast quality' if s.denoise else 'off'}, max "
            f"bounces {s.max_bounces}, view {s.view_transform}, threads "
            f"{s.threads or f'auto ({os.cpu_count()} cores)'}, persistent data on",
            flush=True,
        )
        for n in sizes:
            K = intrinsics_from_fov(n, n, np.radians(32.0))
            for i in range(2):  # warm-up: worker start, mesh upload, kernel and shader setup
                r.render(scene, K, (n, n), cams[i % len(cams)])
            pid = r.worker_pid
            assert pid is not None
            c0, t0 = _cpu_s(pid), time.perf_counter()
            for i in range(frames):
                r.render(scene, K, (n, n), cams[(2 + i) % len(cams)])
            wall = (time.perf_counter() - t0) / frames
            cpu = (_cpu_s(pid) - c0) / frames
            c0 = _cpu_s(pid)
            bare = r.bare_render_seconds(frames)
            bare_cpu = (_cpu_s(pid) - c0) / frames
            print(
                f"{n}x{n}: {wall:.3f} s/frame (worker CPU {cpu:.2f} s) | bare bpy render "
                f"{bare:.3f} s (CPU {bare_cpu:.2f} s) | ratio {wall / bare:.2f}x wall, "
                f"{cpu / bare_cpu:.2f}x CPU",
                flush=True,
            )


def main() -> None:
    """Parse the options and run the memory loop and the speed comparison."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=1000, help="memory loop frames (0: skip)")
    ap.add_argument("--speed-frames", type=int, default=5, help="timed frames per size")
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 504])
    ap.add_argument("--threads", type=int, default=0, help="Cycles threads (0: all cores)")
    ap.add_argument("--samples", type=int, default=None, help="default: the scenario's")
    ap.add_argument("--no-denoise", action="store_true")
    args = ap.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores", flush=True)
    if args.speed_frames:
        speed(args.sizes, args.speed_frames, args.threads, args.samples, not args.no_denoise)
    if args.frames:
        memory_loop(args.frames, args.threads)
    print(f"load average after: {os.getloadavg()[0]:.2f}", flush=True)


if __name__ == "__main__":
    main()
