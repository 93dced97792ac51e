"""What every hardware driver is: a small lifecycle, a few read/write methods, its errors.

The lifecycle follows ros2_control's hardware components: a driver is built
*unconfigured* (no connection), ``configure()`` connects and reads the device's fixed
parameters (*inactive*), ``activate()`` starts streaming or enables motion (*active*),
then the cell reads (``read_pose``, ``capture``) and writes (``move_to``);
``deactivate()`` stops motion or streaming and ``cleanup()`` disconnects. ``deactivate``
and ``cleanup`` may be called in any state and twice: the cell calls them on every way out
(a finished run, Ctrl-C, a lost connection).

Errors a driver raises, and what the engine does with them:
- ``DriverMissing`` (exit 2): the SDK is not installed; one line says what to install.
- ``HardwareStopped`` (exit 6): connection lost, protective or emergency stop, a move that
  did not arrive. The run stops at once; finished samples are kept and a rerun resumes.
- ``CameraTimeout`` (a ``CaptureFailed``): no frame in time. That sample is recorded as
  failed and the run goes on; a rerun retries it.
- ``move_to`` returns False with ``last_failure`` for a pose the controller refuses before
  moving (unreachable, outside its own safety limits): that viewpoint is dropped.

Every SDK is imported only inside its driver module, through ``import_sdk``; ``SDKS`` says
which modules each driver needs and which pip extra installs them.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from scenarios.interfaces import (
    EXIT_HARDWARE,
    CaptureFailed,
    FloatArray,
    SpecError,
    TwincellError,
)


class DriverMissing(SpecError):
    """A driver's SDK is not installed (exit 2): says which extra to install."""


class HardwareStopped(TwincellError):
    """The hardware cannot go on (connection lost, protective or emergency stop): the run
    stops, finished samples are kept, and a rerun with the same ``--out`` resumes."""

    exit_code = EXIT_HARDWARE


class CameraTimeout(CaptureFailed):
    """The camera gave no frame in time: this sample fails, the run goes on."""


@dataclass(frozen=True)
class Sdk:
    """What a driver imports: its Python modules, a name for messages, its pip extra."""

    name: str
    extra: str
    modules: tuple[str, ...]


#: The SDK of each driver that needs one (``cell.hardware.{robot,camera}.driver``): the one
#: table ``import_sdk`` (at connect) and ``missing_sdk`` (before a run writes anything) read.
SDKS: dict[str, Sdk] = {
    "ur": Sdk("UR", "ur", ("rtde_control", "rtde_receive")),
    "realsense": Sdk("RealSense", "realsense", ("pyrealsense2",)),
    "genicam": Sdk("GenICam", "genicam", ("harvesters.core",)),
}


def _install_hint(sdk: Sdk, module: str) -> str:
    return (
        f"needs the Python module {module}, which is not installed; "
        f"run `pip install 'twincell[{sdk.extra}]'`"
    )


def import_sdk(driver: str, module: str) -> ModuleType:
    """Import ``module`` of ``driver``'s SDK, or raise ``DriverMissing`` saying what to
    install (``pip install 'twincell[<extra>]'``)."""
    sdk = SDKS[driver]
    assert module in sdk.modules, f"{module} is not in the {driver} SDK {sdk.modules}"
    try:
        return importlib.import_module(module)
    except ImportError:
        raise DriverMissing(f"the {sdk.name} driver {_install_hint(sdk, module)}") from None


def missing_sdk(driver: str) -> str | None:
    """Why ``driver`` cannot run here (its SDK is not installed: what to install), or None.
    Checks without importing: an SDK may be slow to import or talk to devices on import."""
    import importlib.util
    import sys

    def installed(name: str) -> bool:
        if name in sys.modules:  # already imported (or provided, e.g. a test double)
            return sys.modules[name] is not None
        try:
            return importlib.util.find_spec(name) is not None
        except ModuleNotFoundError:  # its parent package is not there
            return False
        except ValueError:  # a module without a spec: it is there
            return True

    sdk = SDKS.get(driver)
    if sdk is None:
        return None
    for module in sdk.modules:
        if not installed(module):
            return f"{driver} {_install_hint(sdk, module)}"
    return None


@dataclass(frozen=True)
class Intrinsics:
    """A camera's lens: image size (W, H) in pixels, K (3, 3) and OpenCV distortion
    (k1, k2, p1, p2, k3) or None."""

    width: int
    height: int
    K: FloatArray
    dist: FloatArray | None = None

    @property
    def image_size(self) -> tuple[int, int]:
        """(W, H) in pixels."""
        return (self.width, self.height)


@dataclass(frozen=True)
class Frame:
    """One camera frame: rgb (H, W, 3) uint8, depth (H, W) float32 metres aligned to the
    colour image (0 where the sensor has no value) or None, and the capture time (s).
    ``truth`` holds what only a simulated camera knows (``T_base_cam``, the true camera
    pose; ``T_base_obj``, the true part pose); a real camera leaves it empty."""

    rgb: NDArray[np.uint8]
    depth: NDArray[np.float32] | None = None
    timestamp: float = 0.0
    truth: dict[str, Any] = field(default_factory=dict)


class Lifecycle(Protocol):
    """The lifecycle every driver follows (module docstring)."""

    def configure(self) -> None:
        """Connect and read the device's fixed parameters (unconfigured -> inactive)."""
        ...

    def activate(self) -> None:
        """Start streaming or enable motion (inactive -> active)."""
        ...

    def deactivate(self) -> None:
        """Stop motion or streaming (active -> inactive); safe in any state, and twice."""
        ...

    def cleanup(self) -> None:
        """Disconnect (inactive -> unconfigured); safe in any state, and twice."""
        ...


class RobotDriver(Lifecycle, Protocol):
    """An arm: move the flange to a pose, read where it is. Poses are ``T_base_ee``, the
    flange (tool flange, no tool offset) in the robot base frame, 4x4 metres."""

    last_failure: str

    def read_pose(self) -> FloatArray:
        """The flange pose the controller reports now (raises ``HardwareStopped`` when the
        connection is lost)."""
        ...

    def move_to(self, T_base_ee: FloatArray, speed_m_s: float) -> bool:
        """Move the flange to ``T_base_ee`` at most at ``speed_m_s`` and wait until it
        arrives. False (with ``last_failure``) when the controller refuses the pose before
        moving; ``HardwareStopped`` when the arm stops on the way or the link is lost."""
        ...


class CameraDriver(Lifecycle, Protocol):
    """A camera: its lens as the device (or its calibration) states it, and frames."""

    def intrinsics(self) -> Intrinsics:
        """The colour stream's lens (after ``configure``)."""
        ...

    def capture(self) -> Frame:
        """The next frame (``CameraTimeout`` when none comes in time; ``HardwareStopped``
        when the device is gone)."""
        ...


@dataclass(frozen=True)
class Workspace:
    """Where the robot may take the flange and the camera: an axis-aligned box in the base
    frame (metres), and the highest linear speed (m/s) it may move at.

    A straight-line move between two points in a box stays in the box (it is convex), so
    checking each target before it is sent keeps the whole linear path inside it.
    """

    min_m: tuple[float, float, float]
    max_m: tuple[float, float, float]
    max_speed_m_s: float

    def refusal(self, points: dict[str, FloatArray], when: str = "") -> str:
        """'' when every named point (3,) lies in the box, else one line: which point, where
        it is and which bound it crosses (``when`` says where on a move, e.g. ``on the way,
        40% of the move``)."""
        lo, hi = np.asarray(self.min_m), np.asarray(self.max_m)
        for name, p in points.items():
            p = np.asarray(p, dtype=np.float64)
            for axis, (v, a, b) in enumerate(zip(p, lo, hi, strict=True)):
                if v < a or v > b:
                    side = f"< min {a:+.3f}" if v < a else f"> max {b:+.3f}"
                    where = ", ".join(f"{x:+.3f}" for x in p)
                    return (
                        f"outside the workspace{' ' + when if when else ''} ({name} at "
                        f"({where}) m: "
                        f"{'xyz'[axis]} {v:+.3f} {side})"
                    )
        return ""


def pose_to_rotvec(T: FloatArray) -> list[float]:
    """``[x, y, z, rx, ry, rz]``: a pose as translation (m) and rotation vector (rad), the
    form Universal Robots (and many controllers) use."""
    from sim.geometry import axis_angle

    T = np.asarray(T, dtype=np.float64)
    return [*map(float, T[:3, 3]), *map(float, axis_angle(T[:3, :3]))]


def rotvec_to_pose(p: list[float] | tuple[float, ...] | FloatArray) -> FloatArray:
    """The 4x4 pose of ``[x, y, z, rx, ry, rz]`` (``pose_to_rotvec``'s inverse)."""
    from sim.geometry import make_pose, rotation_matrix

    p = np.asarray(p, dtype=np.float64)
    if p.shape != (6,) or not np.all(np.isfinite(p)):
        raise ValueError(f"a pose needs 6 finite numbers [x, y, z, rx, ry, rz], got {p!r}")
    return make_pose(rotation_matrix(p[3:]), p[:3])


class Operator(Protocol):
    """The person at the cell, for what only a person can do (swap the part, turn a manual
    turntable, hold the part): ``ask`` shows one instruction and returns when it is done."""

    def ask(self, message: str) -> None:
        """Show ``message`` and wait until the operator confirms it is done."""
        ...


class ConsoleOperator:
    """An operator at this terminal: prints the instruction, waits for Enter."""

    def ask(self, message: str) -> None:
        """Print ``message`` and wait for Enter (``HardwareStopped`` without a terminal, or
        when the operator types ``q``)."""
        import sys

        if not sys.stdin.isatty():
            raise HardwareStopped(
                f"the cell needs an operator at a terminal to: {message}; run it interactively"
            )
        answer = input(f"[twincell] {message} - press Enter when done (q to stop): ")
        if answer.strip().lower() == "q":
            raise HardwareStopped("stopped by the operator")
