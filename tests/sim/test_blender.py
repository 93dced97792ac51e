"""Tests of the Blender backend: ground truth against pyrender, the persistent scene, the
worker process (crash, hang, parent death, Ctrl-C) and what works without Blender.

Renders are tiny (<= 128 x 96 px, a few samples, one Cycles thread). Tests that start a
Blender worker are marked slow; the rest check the parent side alone.
"""

from __future__ import annotations

import _thread
import os
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import trimesh

from sim.defects import build_part_instance
from sim.geometry import intrinsics_from_fov, look_at, pose_from_xyz_rpy
from sim.parts import build_model, make_params
from sim.render import Light, Material, MeshItem, RenderFailed, RenderScene, make_renderer
from sim.render.blender import BlenderRenderer, BlenderUnavailable, client
from sim.render.distortion import distort_passes
from sim.render.pyrender_backend import PyrenderRenderer

W, H = 128, 96  # not square, so a swapped width/height shows
# An off-centre principal point and fy != fx (non-square pixels) exercise the camera shift
# and pixel aspect conversions.
K = intrinsics_from_fov(W, H, np.radians(40.0)) + np.array(
    [[0.0, 0.0, 6.3], [0.0, 7.0, -4.1], [0.0, 0.0, 0.0]]
)
T_CAM = look_at((0.23, -0.18, 0.26), (0.0, 0.0, 0.015))
T_PART = pose_from_xyz_rpy((0.005, -0.004, 0.0), (0.0, 0.0, np.radians(20.0)))
GREY = Material((0.72, 0.72, 0.74), roughness=0.6)
TOP = Material((0.8, 0.3, 0.2), roughness=0.5)
TABLE = Material((0.18, 0.18, 0.2), roughness=0.9)


def _flange() -> tuple[trimesh.Trimesh, np.ndarray]:
    """The project's flange bearing seat (nominal) with its upward faces labelled 1."""
    family = "flange_bearing_seat"
    model = build_model(family, make_params(family))
    part = build_part_instance("test-blender-flange", family, model, [])
    mesh = part.nominal
    return mesh, (mesh.face_normals[:, 2] > 0.5).astype(np.int32)


FLANGE, FLANGE_LABELS = _flange()


def _table() -> MeshItem:
    table = trimesh.creation.box((1.0, 1.0, 0.02))
    table.apply_translation((0.0, 0.0, -0.01))
    return MeshItem("test-blender-table", table, np.eye(4), {0: TABLE}, is_part=False)


def _scene(lights: tuple[Light, ...] | None = None, seed: int = 0, **part: object) -> RenderScene:
    """The flange (labels 0 / 1) on a table, lit by a directional light from the camera."""
    flange = MeshItem(
        str(part.get("key", "test-blender-flange")),
        FLANGE,
        np.asarray(part.get("T", T_PART)),
        {0: GREY, 1: TOP},
        FLANGE_LABELS,
    )
    if lights is None:
        lights = (Light("directional", T_CAM, intensity=3.0),)
    return RenderScene((flange, _table()), lights, seed=seed)


@pytest.fixture(scope="module")
def blender() -> Iterator[BlenderRenderer]:
    """One worker for the module: 4 samples, no denoising, one thread."""
    r = BlenderRenderer(samples=4, denoise=False, threads=1)
    yield r
    r.close()


# -- without Blender -----------------------------------------------------------------------


def test_package_does_not_import_bpy() -> None:
    """Importing the backend (and making a renderer) loads no bpy and starts no process."""
    code = (
        "import sys; from sim.render import make_renderer; "
        "r = make_renderer('blender', samples=2); "
        "assert 'bpy' not in sys.modules, 'bpy imported'; assert r.worker_pid is None"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_missing_bpy_says_what_to_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without bpy the first render raises BlenderUnavailable naming scripts/setup.sh."""
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "bpy" else real(name, *a)
    )
    r = BlenderRenderer()
    with pytest.raises(BlenderUnavailable, match=r"bash scripts/setup\.sh"):
        r.render(_scene(), K, (W, H), T_CAM)
    assert r.worker_pid is None


def test_worker_without_bpy_says_what_to_run(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The worker side of the same check: its first message is a "fatal" naming setup.sh."""
    from multiprocessing.connection import Connection

    from sim.render.blender import worker

    monkeypatch.setitem(sys.modules, "bpy", None)  # import bpy -> ImportError
    a, b = socket.socketpair()
    parent, child = Connection(a.detach()), Connection(b.detach())
    try:
        worker.serve(child, tmp_path)
        kind, message = parent.recv()
    finally:
        parent.close()
        child.close()
    assert kind == "fatal" and "bash scripts/setup.sh" in message


def test_bad_requests_are_refused_before_the_worker() -> None:
    """An unknown light kind, a skewed K or a bad option is a ValueError naming the field."""
    r = BlenderRenderer()
    bad_light = _scene(lights=(Light("laser", T_CAM),))
    with pytest.raises(ValueError, match="light.kind"):
        r.render(bad_light, K, (W, H), T_CAM)
    skewed = K.copy()
    skewed[0, 1] = 1.0
    with pytest.raises(ValueError, match="skew"):
        r.render(_scene(), skewed, (W, H), T_CAM)
    with pytest.raises(ValueError, match="view_transform"):
        BlenderRenderer(view_transform="Filmic Log Plus")
    assert r.worker_pid is None


# -- ground truth and the persistent scene ------------------------------------------------


@pytest.mark.slow
def test_ground_truth_agrees_with_pyrender(blender: BlenderRenderer) -> None:
    """Same flange, pose and K (off-centre principal point, fy != fx): the part masks agree
    with IoU >= 0.99, depths within 1 mm where both see the part (and the table), labels on
    >= 99 % of shared part pixels; both label values are in view."""
    scene = _scene()
    ours = blender.render(scene, K, (W, H), T_CAM)
    ref = PyrenderRenderer().render(scene, K, (W, H), T_CAM)
    assert ours.rgb.shape == (H, W, 3) and ours.rgb.dtype == np.uint8
    assert ours.depth.dtype == np.float32 and ours.mask.dtype == bool
    assert ours.labels.dtype == np.int32
    iou = (ours.mask & ref.mask).sum() / (ours.mask | ref.mask).sum()
    assert iou >= 0.99
    both = ours.mask & ref.mask
    assert both.sum() > 500
    assert np.abs(ours.depth[both] - ref.depth[both]).max() < 1e-3
    hit = (ours.depth > 0) & (ref.depth > 0)
    assert hit.mean() > 0.9  # the table fills the rest of the view
    assert np.abs(ours.depth[hit] - ref.depth[hit]).max() < 1e-3
    assert (ours.labels[both] == ref.labels[both]).mean() >= 0.99
    assert set(np.unique(ours.labels[ours.mask])) == {0, 1}
    assert not ours.labels[~ours.mask].any()
    # The part is lit and drawn: brighter than black, and different from the table.
    assert ours.rgb[ours.mask].mean() > 40
    assert abs(ours.rgb[ours.mask].mean() - ours.rgb[~ours.mask].mean()) > 5


@pytest.mark.slow
def test_depth_only_draws_parts_only(blender: BlenderRenderer) -> None:
    """``depth_only``: black rgb, no table (mask == depth > 0), same silhouette and depth as
    the full frame."""
    scene = _scene()
    full = blender.render(scene, K, (W, H), T_CAM)
    depth = blender.render(scene, K, (W, H), T_CAM, depth_only=True)
    assert not depth.rgb.any()
    np.testing.assert_array_equal(depth.mask, depth.depth > 0)
    np.testing.assert_array_equal(depth.mask, full.mask)
    np.testing.assert_allclose(depth.depth[full.mask], full.depth[full.mask], atol=1e-5)
    np.testing.assert_array_equal(depth.labels, full.labels)


@pytest.mark.slow
def test_a_frame_is_a_function_of_the_scene() -> None:
    """The same scene, rendered again after another one, gives identical bytes in every pass
    (denoiser included); another seed gives other noise and the same ground truth."""
    size, K_small = (64, 48), intrinsics_from_fov(64, 48, np.radians(40.0))
    with BlenderRenderer(samples=4, denoise=True, threads=1) as r:
        first = r.render(_scene(seed=3), K_small, size, T_CAM)
        moved = pose_from_xyz_rpy((0.02, 0.0, 0.0), (0.0, 0.0, 1.0))
        r.render(_scene(seed=5, T=moved), K_small, size, look_at((0.2, 0.2, 0.3), (0, 0, 0)))
        again = r.render(_scene(seed=3), K_small, size, T_CAM)
        other = r.render(_scene(seed=4), K_small, size, T_CAM)
    for name in ("rgb", "depth", "mask", "labels"):
        a, b = getattr(first, name), getattr(again, name)
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes(), name
    assert other.rgb.tobytes() != first.rgb.tobytes()
    np.testing.assert_array_equal(other.mask, first.mask)


@pytest.mark.slow
def test_depth_only_settings_do_not_stick(blender: BlenderRenderer) -> None:
    """A full frame right after a depth-only one (1 sample, no table) is the same as after a
    full frame: no setting of the cheap pass sticks (with persistent data Cycles re-reads
    scene settings only on an update, so the worker tags the scene every frame)."""
    size, K_small = (64, 48), intrinsics_from_fov(64, 48, np.radians(40.0))
    parts_only = RenderScene(_scene().items[:1], _scene().lights, seed=3)
    with_table = _scene()
    blender.render(with_table, K_small, size, T_CAM)
    blender.render(parts_only, K_small, size, T_CAM, depth_only=True)  # hides the table
    after_depth_only = blender.render(parts_only, K_small, size, T_CAM)  # samples only
    blender.render(with_table, K_small, size, T_CAM)
    after_full = blender.render(parts_only, K_small, size, T_CAM)  # hides the table
    assert after_depth_only.rgb.tobytes() == after_full.rgb.tobytes()


@pytest.mark.slow
def test_every_light_kind_lights_the_part(blender: BlenderRenderer) -> None:
    """Directional, point, spot and area lights (shining along +z of their pose) each light
    the part; a light turned away leaves it dark."""
    size, K_small = (64, 48), intrinsics_from_fov(64, 48, np.radians(40.0))
    T_light = look_at((0.1, -0.1, 0.3), (0.0, 0.0, 0.0))
    T_away = look_at((0.1, -0.1, 0.3), (0.2, -0.2, 0.6))
    kinds = {
        "directional": Light("directional", T_light, intensity=3.0),
        "point": Light("point", T_light, intensity=20.0),
        "spot": Light("spot", T_light, intensity=20.0, spot_deg=25.0),
        "area": Light("area", T_light, intensity=20.0, size_m=0.1),
    }
    dark = RenderScene(_scene().items, (), ambient=(0.0, 0.0, 0.0))
    base = blender.render(dark, K_small, size, T_CAM)
    level = float(base.rgb[base.mask].mean())
    for kind, light in kinds.items():
        lit = RenderScene(_scene().items, (light,), ambient=(0.0, 0.0, 0.0))
        out = blender.render(lit, K_small, size, T_CAM)
        assert out.rgb[out.mask].mean() > level + 30, kind
        if kind in ("spot", "area"):  # these shine one way only
            away_light = Light(kind, T_away, intensity=20.0)
            away = RenderScene(_scene().items, (away_light,), ambient=(0.0, 0.0, 0.0))
            out = blender.render(away, K_small, size, T_CAM)
            assert out.rgb[out.mask].mean() < level + 10, kind


@pytest.mark.slow
def test_evicted_meshes_are_resent(blender: BlenderRenderer) -> None:
    """Beyond ``max_meshes`` (8) the least recently used mesh is evicted; rendering it again
    (the worker no longer has it, so the client resends it) gives the same passes."""
    size, K_small = (64, 48), intrinsics_from_fov(64, 48, np.radians(40.0))
    one = blender.render(_scene(key="evict-0"), K_small, size, T_CAM, depth_only=True)
    for i in range(1, 10):
        blender.render(_scene(key=f"evict-{i}"), K_small, size, T_CAM, depth_only=True)
    again = blender.render(_scene(key="evict-0"), K_small, size, T_CAM, depth_only=True)
    np.testing.assert_array_equal(one.depth, again.depth)
    np.testing.assert_array_equal(one.labels, again.labels)


@pytest.mark.slow
def test_worker_is_recycled_after_recycle_frames(blender: BlenderRenderer) -> None:
    """Every ``recycle_frames`` frames a fresh worker takes over, transparently."""
    size, K_small = (64, 48), intrinsics_from_fov(64, 48, np.radians(40.0))
    first = blender.render(_scene(), K_small, size, T_CAM, depth_only=True)
    pid = blender.worker_pid
    old, blender.recycle_frames = blender.recycle_frames, 1
    try:
        again = blender.render(_scene(), K_small, size, T_CAM, depth_only=True)
    finally:
        blender.recycle_frames = old
    assert blender.worker_pid not in (None, pid)
    np.testing.assert_array_equal(first.depth, again.depth)


@pytest.mark.slow
def test_lens_distortion_is_the_shared_model(blender: BlenderRenderer) -> None:
    """With ``dist`` every pass is the pinhole render warped by ``distort_passes``."""
    dist = np.array([0.8, 0.0, 0.01, -0.01, 0.0])  # strong, so the small part moves
    scene = _scene()
    pin = blender.render(scene, K, (W, H), T_CAM, depth_only=True)
    out = blender.render(scene, K, (W, H), T_CAM, depth_only=True, dist=dist)
    want = distort_passes(pin, K, dist, scene.background)
    np.testing.assert_array_equal(out.mask, want.mask)
    np.testing.assert_array_equal(out.depth, want.depth)
    assert (out.mask != pin.mask).any()


# -- the worker process --------------------------------------------------------------------


@pytest.mark.slow
def test_killed_worker_fails_the_frame_and_the_next_one_works(blender: BlenderRenderer) -> None:
    """SIGKILL during a render -> RenderFailed saying so; the next render starts a new worker
    (meshes resent) and gives the same bytes as the old one did."""
    size, K_small = (64, 48), intrinsics_from_fov(64, 48, np.radians(40.0))
    ok = blender.render(_scene(), K_small, size, T_CAM)
    pid = blender.worker_pid
    assert pid is not None
    timer = threading.Timer(0.3, os.kill, (pid, signal.SIGKILL))
    timer.start()
    try:
        with pytest.raises(RenderFailed, match=r"died \(signal 9.*while rendering; restarted"):
            # Large enough to be still rendering 0.3 s in.
            big = intrinsics_from_fov(1024, 768, np.radians(40.0))
            blender.render(_scene(), big, (1024, 768), T_CAM)
    finally:
        timer.cancel()
    again = blender.render(_scene(), K_small, size, T_CAM)
    assert blender.worker_pid not in (None, pid)
    np.testing.assert_array_equal(again.mask, ok.mask)
    assert again.rgb.tobytes() == ok.rgb.tobytes()


@pytest.mark.slow
def test_hung_worker_is_killed_and_replaced(blender: BlenderRenderer) -> None:
    """No reply within ``timeout_s`` -> RenderFailed ("hung"), the worker is killed, and the
    next call works with a new one."""
    blender.ping()
    pid = blender.worker_pid
    assert pid is not None
    old_timeout = blender.timeout_s
    blender.timeout_s = 0.5
    try:
        t0 = time.monotonic()
        with pytest.raises(RenderFailed, match=r"hung \(no reply in 0.5 s\).*killed and restarted"):
            blender.ping(sleep_s=30.0)
        assert time.monotonic() - t0 < 10.0
    finally:
        blender.timeout_s = old_timeout
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    out = blender.render(_scene(), K, (W, H), T_CAM, depth_only=True)
    assert out.mask.any() and blender.worker_pid not in (None, pid)


@pytest.mark.slow
def test_ctrl_c_in_the_parent_discards_the_worker(blender: BlenderRenderer) -> None:
    """KeyboardInterrupt between a request and its reply drops that worker (its late reply
    would answer the next request); the next render gets a fresh one and the right frame."""
    size, K_small = (64, 48), intrinsics_from_fov(64, 48, np.radians(40.0))
    want = blender.render(_scene(), K_small, size, T_CAM, depth_only=True)
    pid = blender.worker_pid
    timer = threading.Timer(0.1, _thread.interrupt_main)
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            big = intrinsics_from_fov(512, 384, np.radians(40.0))
            blender.render(_scene(), big, (512, 384), T_CAM)
            time.sleep(5.0)  # (if the render beat the timer, the interrupt lands here)
    finally:
        timer.cancel()
    got = blender.render(_scene(), K_small, size, T_CAM, depth_only=True)
    assert blender.worker_pid not in (None, pid)
    np.testing.assert_array_equal(got.depth, want.depth)


@pytest.mark.slow
def test_worker_ignores_ctrl_c(blender: BlenderRenderer) -> None:
    """SIGINT to the worker does nothing (the parent decides when to stop)."""
    blender.ping()
    pid = blender.worker_pid
    assert pid is not None
    os.kill(pid, signal.SIGINT)
    time.sleep(0.2)
    blender.ping()
    assert blender.worker_pid == pid


@pytest.mark.slow
def test_worker_exits_when_its_parent_dies() -> None:
    """A parent killed with SIGKILL takes its worker with it (no orphaned Blender), and the
    next worker's start removes the frame files the dead pair left behind."""
    code = textwrap.dedent(
        """
        import os, signal
        from sim.render.blender import BlenderRenderer
        r = BlenderRenderer()
        r.ping()
        print(os.getpid(), r.worker_pid, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    parent, pid = (int(v) for v in proc.stdout.split())
    for _ in range(100):
        try:  # gone, or a zombie nobody reaped (it has exited all the same)
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                break
        except (OSError, IndexError):
            break
        time.sleep(0.1)
    else:
        os.kill(pid, signal.SIGKILL)
        pytest.fail("the worker outlived its parent")
    root = Path(client._fast_tmp() or tempfile.gettempdir())
    assert list(root.glob(f"{client.DIR_PREFIX}{parent}-*"))
    client._sweep_stale_dirs()
    assert not list(root.glob(f"{client.DIR_PREFIX}{parent}-*"))


def test_make_renderer_gives_a_blender_renderer() -> None:
    """The backend registry hands out this class, unstarted."""
    r = make_renderer("blender", samples=2, timeout_s=5.0)
    assert isinstance(r, BlenderRenderer) and r.worker_pid is None
