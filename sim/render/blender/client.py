"""The parent side of the Blender backend: ``BlenderRenderer`` talks to a persistent worker.

The worker (``python -m sim.render.blender.worker``) is a separate interpreter that imports
bpy; this module never does. It is started lazily with ``subprocess.Popen`` (not
``multiprocessing``: the engine's pool workers are daemonic and may not have children of
their own) and spoken to over a dedicated socket pair, passed to the child with
``pass_fds`` and wrapped in ``multiprocessing.connection.Connection`` (pickled messages,
length-framed). Blender's own chatter on stdout goes to /dev/null, its stderr to a log file
that is quoted in the log when the worker dies.

A frame carries the scene's poses, materials, lights and world; mesh arrays travel only for
keys the current worker has not seen (it reports the keys it holds after each frame; a
restarted worker holds none, so they are resent). A worker that dies or gives no frame within
``timeout_s`` is killed and replaced, and that frame raises ``RenderFailed``.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np

from scenarios.interfaces import RenderOutput, TwincellError
from sim.render import Environment, Light, Material, RenderFailed, RenderScene
from sim.render.distortion import distort_passes

log = logging.getLogger(__name__)

LIGHT_KINDS = ("directional", "point", "spot", "area")
VIEW_TRANSFORMS = ("AgX", "Standard", "Filmic", "Khronos PBR Neutral")
SETUP_HINT = "run `bash scripts/setup.sh` to install it"
DIR_PREFIX = "twincell-blender-"  # + owner pid + "-" + random: per-worker frame files
SHM_MIN_FREE_BYTES = 1 << 30  # use /dev/shm for frame files only with this much room


class BlenderUnavailable(TwincellError):
    """bpy (Blender as a Python module) is not installed in this interpreter."""


@dataclass(frozen=True)
class CyclesSettings:
    """How the worker renders with Cycles (CPU).

    ``samples`` per pixel (above about 16, adaptive sampling stops pixels that converged
    below ``adaptive_threshold``); ``denoise`` with OpenImageDenoise (albedo + normal guides);
    ``view_transform`` maps scene-linear light to display sRGB (Blender's names);
    ``threads`` 0 = one per core; ``max_bounces`` caps every path (diffuse and glossy at
    ``min(2, max_bounces)``); ``max_meshes`` meshes stay loaded (least recently used out).
    """

    samples: int = 16
    denoise: bool = True
    view_transform: str = "AgX"
    threads: int = 0
    max_bounces: int = 4
    adaptive_threshold: float = 0.05
    max_meshes: int = 32


@dataclass(frozen=True)
class MeshData:
    """One mesh as sent to the worker: vertices (V, 3) float64 metres (object frame), faces
    (F, 3) int64, face_labels (F,) int32 (material slot per face)."""

    vertices: np.ndarray
    faces: np.ndarray
    face_labels: np.ndarray


@dataclass(frozen=True)
class ItemState:
    """A placed mesh as sent to the worker: its key, pose ``T_base_obj`` (4, 4), materials
    by face label and whether it is a part (in the mask and label passes)."""

    key: str
    T_base_obj: np.ndarray
    materials: dict[int, Material]
    is_part: bool


@dataclass(frozen=True)
class FrameRequest:
    """Everything the worker needs for one frame; ``meshes`` holds only keys it lacks."""

    items: tuple[ItemState, ...]
    meshes: dict[str, MeshData]
    lights: tuple[Light, ...]
    environment: Environment
    background: tuple[float, float, float]
    ambient: tuple[float, float, float]
    seed: int
    K: np.ndarray
    image_size: tuple[int, int]
    T_base_cam: np.ndarray
    depth_only: bool


@dataclass(frozen=True)
class FrameResult:
    """The worker's passes (pinhole, undistorted) and the mesh keys it now holds."""

    rgb: np.ndarray
    depth: np.ndarray
    mask: np.ndarray
    labels: np.ndarray
    keys: tuple[str, ...]


def _check_request(scene: RenderScene, K: np.ndarray, image_size: tuple[int, int]) -> None:
    """Reject what Cycles cannot draw before it reaches the worker (errors name the field)."""
    for light in scene.lights:
        if light.kind not in LIGHT_KINDS:
            raise ValueError(
                f"light.kind: unknown {light.kind!r}; allowed: {', '.join(LIGHT_KINDS)}"
            )
    if abs(float(K[0, 1])) > 1e-9 * abs(float(K[0, 0])):
        raise ValueError(f"K: skew K[0, 1] = {K[0, 1]} is not supported by the Blender camera")
    W, H = image_size
    if W <= 0 or H <= 0:
        raise ValueError(f"image_size: must be positive, got {W}x{H}")


def _worker_env() -> dict[str, str]:
    """The child's environment: the project importable even without an installed package."""
    env = dict(os.environ)
    root = str(Path(__file__).absolute().parents[3])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    return env


class _Worker:
    """One running worker process and the parent's end of its socket pair."""

    def __init__(self, settings: CyclesSettings, start_timeout_s: float) -> None:
        _sweep_stale_dirs()
        self.tmpdir = Path(tempfile.mkdtemp(prefix=f"{DIR_PREFIX}{os.getpid()}-", dir=_fast_tmp()))
        self.stderr_path = self.tmpdir / "stderr.log"
        parent_sock, child_sock = socket.socketpair()
        cmd = [
            sys.executable,
            "-m",
            "sim.render.blender.worker",
            "--fd",
            str(child_sock.fileno()),
            "--dir",
            str(self.tmpdir),
        ]
        # PR_SET_PDEATHSIG fires when the *thread* that started the child ends, so ask for it
        # only from the main thread; otherwise the worker watches its parent pid instead.
        if threading.current_thread() is threading.main_thread():
            cmd.append("--pdeathsig")
        try:
            with open(self.stderr_path, "wb") as err:
                self.proc = subprocess.Popen(
                    cmd,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=err,
                    pass_fds=(child_sock.fileno(),),
                    env=_worker_env(),
                    close_fds=True,
                )
        except BaseException:
            parent_sock.close()
            shutil.rmtree(self.tmpdir, ignore_errors=True)
            raise
        finally:
            child_sock.close()
        self.conn = Connection(parent_sock.detach())
        self.settings = settings
        self.start_timeout_s = start_timeout_s
        self.ready = False
        self.keys: set[str] = set()
        self.frames = 0
        self.owner_pid = os.getpid()  # a forked copy of this object must not use the pipe

    @property
    def pid(self) -> int:
        return int(self.proc.pid)

    def stderr_tail(self, n: int = 8) -> str:
        try:
            lines = self.stderr_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:])

    def kill(self) -> None:
        """Kill the process (if alive), reap it, close the pipe, remove its files."""
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover - a zombie we cannot reap
            log.warning("blender worker %d did not exit after SIGKILL", self.pid)
        self.conn.close()
        shutil.rmtree(self.tmpdir, ignore_errors=True)

    def stop(self) -> None:
        """Ask the worker to exit, then make sure it did."""
        if self.proc.poll() is None:
            try:
                self.conn.send(("close", None))
                self.proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                pass
        self.kill()

    def exit_reason(self) -> str:
        """'signal 9' or 'exit code 1' once the process has ended (waits up to 5 s)."""
        try:
            rc = self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            return "closed its pipe"
        if rc < 0:
            try:
                return f"signal {-rc}, {signal.Signals(-rc).name}"
            except ValueError:
                return f"signal {-rc}"
        return f"exit code {rc}"


def _fast_tmp() -> str | None:
    """A RAM-backed temp dir for the per-frame image files when there is one with room
    (containers often give /dev/shm only 64 MiB; a 2k frame's EXR is ~200 MB)."""
    shm = "/dev/shm"
    try:
        st = os.statvfs(shm)
    except OSError:
        return None
    roomy = st.f_bavail * st.f_frsize >= SHM_MIN_FREE_BYTES
    return shm if roomy and os.access(shm, os.W_OK) else None


def _sweep_stale_dirs() -> None:
    """Remove frame dirs left by parents that were killed (their pid is in the name)."""
    roots = {Path("/dev/shm"), Path(tempfile.gettempdir())}
    for d in (d for root in roots for d in root.glob(f"{DIR_PREFIX}*-*")):
        try:
            owner = int(d.name[len(DIR_PREFIX) :].split("-", 1)[0])
            os.kill(owner, 0)
        except ValueError:
            continue
        except ProcessLookupError:
            shutil.rmtree(d, ignore_errors=True)
        except PermissionError:  # another user's live process
            continue


class _Died(Exception):
    pass


class _Hung(Exception):
    pass


class BlenderRenderer:
    """Cycles (CPU) behind the ``Renderer`` interface, in a persistent worker process.

    ``samples``, ``denoise``, ``view_transform`` (Blender's name, e.g. "AgX", "Standard") and
    ``threads`` (0 = all cores) set the Cycles render (see ``CyclesSettings``); a frame that
    takes longer than ``timeout_s`` counts as a hung worker. Depth-only frames draw part items
    with one sample and no denoising. The worker starts on the first render and is replaced
    by a fresh one every ``recycle_frames`` frames: Blender keeps ~5 KB for every material
    made and removed (a new real look per capture), which would add up over long studies.
    """

    def __init__(
        self,
        samples: int = 16,
        denoise: bool = True,
        view_transform: str = "AgX",
        threads: int = 0,
        timeout_s: float = 120.0,
        start_timeout_s: float = 60.0,
        max_meshes: int = 32,
        recycle_frames: int = 5000,
    ) -> None:
        if samples < 1:
            raise ValueError(f"samples: must be >= 1, got {samples}")
        if view_transform not in VIEW_TRANSFORMS:
            raise ValueError(
                f"view_transform: unknown {view_transform!r}; allowed: {', '.join(VIEW_TRANSFORMS)}"
            )
        if threads < 0 or timeout_s <= 0 or max_meshes < 1 or recycle_frames < 1:
            raise ValueError(
                "threads must be >= 0, timeout_s > 0, max_meshes >= 1 and recycle_frames >= 1"
            )
        self.settings = CyclesSettings(
            samples=samples,
            denoise=denoise,
            view_transform=view_transform,
            threads=threads,
            max_meshes=max_meshes,
        )
        self.timeout_s = float(timeout_s)
        self.start_timeout_s = float(start_timeout_s)
        self.recycle_frames = int(recycle_frames)
        self._worker: _Worker | None = None

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def worker_pid(self) -> int | None:
        """The running worker's process id (None before the first render or after close)."""
        w = self._own_worker()
        return w.pid if w is not None and w.proc.poll() is None else None

    def _own_worker(self) -> _Worker | None:
        """This process's worker; one inherited through fork belongs to the parent: forget
        it (closing only our copy of the pipe) and let this process start its own."""
        w = self._worker
        if w is not None and w.owner_pid != os.getpid():
            w.conn.close()
            self._worker = w = None
        return w

    def close(self) -> None:
        """Stop the worker process (a later render starts a new one)."""
        w = self._own_worker()
        if w is not None:
            w.stop()
            self._worker = None

    def __enter__(self) -> BlenderRenderer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - best effort at interpreter shutdown
            pass

    def _start(self) -> _Worker:
        if importlib.util.find_spec("bpy") is None:
            raise BlenderUnavailable(
                f"the Blender backend needs bpy, which {sys.executable} cannot import; {SETUP_HINT}"
            )
        return _Worker(self.settings, self.start_timeout_s)

    def _ready_worker(self) -> _Worker:
        """The running worker, started (and its handshake awaited) if needed."""
        w = self._own_worker()
        if w is None or w.proc.poll() is not None:
            if w is not None:
                w.kill()
            self._worker = None
            try:
                self._worker = w = self._start()
            except OSError as e:  # no memory, no processes, no temp space: this frame fails
                raise RenderFailed(
                    f"blender worker could not be started ({e.strerror or type(e).__name__}); "
                    "the next render retries"
                ) from None
        if not w.ready:
            try:
                kind, payload = self._receive(w, w.start_timeout_s)
                if kind == "fatal":
                    raise BlenderUnavailable(str(payload))
                if kind != "ready":
                    raise _Died(f"sent {kind!r} instead of its handshake")
                w.conn.send(("configure", w.settings))
                kind, payload = self._receive(w, w.start_timeout_s)
            except OSError:
                raise RenderFailed(
                    f"blender worker failed to start ({w.exit_reason()}); {self._replace(w)}"
                ) from None
            except _Died as e:
                raise RenderFailed(
                    f"blender worker failed to start ({e}); {self._replace(w)}"
                ) from None
            except _Hung:
                raise RenderFailed(
                    f"blender worker failed to start (no reply in {w.start_timeout_s:g} s); "
                    f"killed and {self._replace(w)}"
                ) from None
            except BaseException:  # BlenderUnavailable, or Ctrl-C mid-handshake
                self._discard(w)
                raise
            if kind != "ok":
                self._discard(w)
                raise RenderFailed(f"blender worker could not set up Cycles: {payload}")
            w.ready = True
        return w

    def _discard(self, w: _Worker) -> None:
        w.kill()
        if self._worker is w:
            self._worker = None

    def _replace(self, w: _Worker) -> str:
        """Kill ``w`` and start its successor now (it loads bpy while the caller goes on)."""
        tail = w.stderr_tail()
        if tail:
            log.warning("blender worker %d stderr (last lines):\n%s", w.pid, tail)
        self._discard(w)
        try:
            self._worker = self._start()
        except Exception as e:  # noqa: BLE001 - the next render retries the start
            return f"restart failed ({type(e).__name__}: {e}); the next render retries"
        return "restarted"

    # -- messaging -------------------------------------------------------------------------

    @staticmethod
    def _receive(w: _Worker, timeout_s: float) -> tuple[str, Any]:
        try:
            if not w.conn.poll(timeout_s):
                raise _Hung()
            msg: tuple[str, Any] = w.conn.recv()
        except (EOFError, OSError):
            raise _Died(w.exit_reason()) from None
        return msg

    def _call(self, kind: str, payload: Any, what: str) -> Any:
        """Send one request and wait for its reply; RenderFailed if the worker dies or hangs."""
        w = self._ready_worker()
        try:
            try:
                w.conn.send((kind, payload))
            except OSError:
                raise _Died(w.exit_reason()) from None
            reply, result = self._receive(w, self.timeout_s)
        except _Died as e:
            raise RenderFailed(
                f"blender worker died ({e}) while {what}; {self._replace(w)}"
            ) from None
        except _Hung:
            raise RenderFailed(
                f"blender worker hung (no reply in {self.timeout_s:g} s) while {what}; "
                f"killed and {self._replace(w)}"
            ) from None
        except BaseException:
            # Interrupted (Ctrl-C) between request and reply: its late reply would be read
            # as the next request's, so this worker cannot be trusted any more.
            self._discard(w)
            raise
        if reply == "error":
            # A Python exception inside the worker: the process is fine, the frame is not.
            # It may have evicted meshes before failing: forget what it holds, so the next
            # frame resends every mesh it needs instead of failing on a stale key.
            w.keys = set()
            raise RenderFailed(f"blender worker failed while {what}: {result}")
        return result

    # -- the Renderer interface ------------------------------------------------------------

    def render(
        self,
        scene: RenderScene,
        K: np.ndarray,
        image_size: tuple[int, int],
        T_base_cam: np.ndarray,
        depth_only: bool = False,
        dist: np.ndarray | None = None,
    ) -> RenderOutput:
        """Render ``scene`` from an OpenCV camera; see ``sim.render.Renderer.render``.

        ``K`` (3, 3) has pixel centres at integer coordinates; ``image_size`` is (W, H);
        ``T_base_cam`` (4, 4) maps camera (x right, y down, z forward) to base. Raises
        ``RenderFailed`` (one line) if the worker died or hung; the next call starts anew.
        """
        K = np.asarray(K, dtype=np.float64)
        W, H = (int(s) for s in image_size)
        _check_request(scene, K, (W, H))
        old = self._own_worker()
        if old is not None and old.frames >= self.recycle_frames:
            self.close()  # a fresh worker (meshes are resent) keeps memory flat
        w = self._ready_worker()
        items = tuple(
            ItemState(it.key, np.asarray(it.T_base_obj, np.float64), dict(it.materials), it.is_part)
            for it in scene.items
            if it.is_part or not depth_only
        )
        meshes: dict[str, MeshData] = {}
        for it in scene.items:
            if (it.is_part or not depth_only) and it.key not in w.keys and it.key not in meshes:
                labels = (
                    np.zeros(len(it.mesh.faces), np.int32)
                    if it.face_labels is None
                    else np.asarray(it.face_labels, np.int32)
                )
                meshes[it.key] = MeshData(
                    np.asarray(it.mesh.vertices, np.float64),
                    np.asarray(it.mesh.faces, np.int64),
                    labels,
                )
        req = FrameRequest(
            items=items,
            meshes=meshes,
            lights=tuple(scene.lights),
            environment=scene.environment,
            background=tuple(scene.background),  # type: ignore[arg-type]
            ambient=tuple(scene.ambient),  # type: ignore[arg-type]
            seed=int(scene.seed),
            K=K,
            image_size=(W, H),
            T_base_cam=np.asarray(T_base_cam, np.float64),
            depth_only=depth_only,
        )
        w.frames += 1
        res: FrameResult = self._call("frame", req, "rendering")
        if self._worker is w:
            w.keys = set(res.keys)
        out = RenderOutput(res.rgb, res.depth, res.mask, res.labels)
        if dist is not None and np.any(np.asarray(dist) != 0):
            out = distort_passes(out, K, np.asarray(dist, np.float64), scene.background)
        return out

    # -- diagnostics -----------------------------------------------------------------------

    def ping(self, sleep_s: float = 0.0) -> float:
        """Round-trip seconds to the worker; it sleeps ``sleep_s`` first (tests use this to
        play a hung worker). Raises ``RenderFailed`` like ``render``."""
        t0 = time.perf_counter()
        self._call("sleep", float(sleep_s), "answering a ping")
        return time.perf_counter() - t0

    def bare_render_seconds(self, repeats: int = 3) -> float:
        """Mean seconds of ``bpy.ops.render.render()`` on the scene as the last frame left it,
        timed inside the worker: no IPC, no image files, no readback (the baseline that
        shows this backend's overhead over bare Blender)."""
        return float(self._call("bare", int(repeats), "timing a bare render"))
