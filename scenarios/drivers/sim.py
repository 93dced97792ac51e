"""The simulated cell behind the driver interfaces: a robot and a camera driver that move
and capture in the simulated eye-in-hand cell (``sim.cells``).

A hardware scenario with ``driver: sim`` runs the hardware cell's own code (planning, the
safety check, moving, reading the reported pose, building the observation, rendering the
twin) against the simulator instead of a UR arm and a RealSense: the proof that the swap
works, and a way to rehearse a hardware scenario without the hardware. The simulated world
is the eye-in-hand scenario the hardware scenario describes (``sim_scenario``): the same
parts, defects, pose errors and appearance, so each sample is the simulated cell's own.

What only a simulator knows travels beside the frame (``Frame.truth``, ``ground_truth``),
never through the driver protocols a real device implements.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from scenarios.drivers.base import Frame, Intrinsics
from scenarios.interfaces import FloatArray, GroundTruth


def sim_scenario(sc: Any) -> Any:
    """The eye-in-hand scenario a hardware scenario with sim drivers simulates: the same
    scenario with ``cell.kind: eye_in_hand`` (``cell.robot`` the arm, ``cell.camera`` its
    camera, ``cell.hand_eye`` the true mount)."""
    cell = sc.cell.model_copy(update={"kind": "eye_in_hand", "hardware": None})
    return sc.model_copy(update={"cell": cell})


class _Bound:
    """The lifecycle both simulated drivers share: nothing to connect to; they work on the
    simulated cell they are bound to (``bind``), one per sample."""

    def __init__(self) -> None:
        self._cell: Any = None
        self._state = "unconfigured"

    def bind(self, cell: Any) -> None:
        """Work on the simulated cell ``cell`` (an ``EyeInHandCell``) from now on."""
        self._cell = cell

    def configure(self) -> None:
        """Nothing to connect to."""
        self._state = "inactive"

    def activate(self) -> None:
        """Enable motion or capture."""
        if self._state == "unconfigured":
            raise RuntimeError("activate before configure")
        self._state = "active"

    def deactivate(self) -> None:
        """Disable motion or capture."""
        if self._state == "active":
            self._state = "inactive"

    def cleanup(self) -> None:
        """Forget the cell."""
        self._state = "unconfigured"
        self._cell = None

    def _require_active(self, what: str) -> None:
        if self._state != "active" or self._cell is None:
            raise RuntimeError(f"{what} before activate (or with no cell bound)")


class SimRobot(_Bound):
    """A ``RobotDriver`` on the simulated arm: moves by inverse kinematics in PyBullet and
    reports the flange pose forward kinematics gives (the repeatability error is the
    camera's to draw, as on a real arm, where it shows only in the image)."""

    def __init__(self) -> None:
        super().__init__()
        self.last_failure = ""

    def move_to(self, T_base_ee: FloatArray, speed_m_s: float) -> bool:
        """Move the flange to ``T_base_ee`` (inverse kinematics, collision check); False
        with ``last_failure`` when unreachable or colliding."""
        self._require_active("move_to")
        ok = bool(self._cell.move_flange(np.asarray(T_base_ee, dtype=np.float64)))
        self.last_failure = self._cell.last_failure
        return ok

    def read_pose(self) -> FloatArray:
        """The flange pose the simulated controller reports."""
        self._require_active("read_pose")
        return np.asarray(self._cell.reported_flange, dtype=np.float64)


class SimCamera(_Bound):
    """A ``CameraDriver`` on the simulated camera: renders the real image (and the depth
    sensor's depth) at the pose the arm really reached, and keeps the capture's exact
    ground truth for ``ground_truth``."""

    def __init__(self, setup: Any) -> None:
        super().__init__()
        self._setup = setup
        self._truth: GroundTruth | None = None

    def bind(self, cell: Any) -> None:
        """Capture in the simulated cell ``cell`` from now on."""
        super().bind(cell)
        self._truth = None

    def intrinsics(self) -> Intrinsics:
        """The simulated lens (``cell.camera``)."""
        cam = self._setup.camera
        return Intrinsics(cam.width, cam.height, cam.K, cam.dist)

    def capture(self) -> Frame:
        """Render the real capture at the pose reached (``EyeInHandCell.capture_real``)."""
        self._require_active("capture")
        real, truth, poses = self._cell.capture_real()
        self._truth = truth
        return Frame(
            real.rgb,
            real.depth,
            real.timestamp,
            truth={"T_base_cam": poses.T_base_cam, "T_base_obj": poses.T_base_obj},
        )

    def ground_truth(self) -> GroundTruth | None:
        """The exact ground truth of the last capture (only a simulator has one)."""
        return self._truth
