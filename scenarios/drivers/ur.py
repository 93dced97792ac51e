"""A Universal Robots arm on ur_rtde (``pip install 'twincell[ur]'``), as a ``RobotDriver``.

Poses are the flange (tool0: the controller's TCP offset is set to zero) in the
controller's base frame, 4x4 metres; they cross to ur_rtde as ``[x, y, z, rx, ry, rz]``
(metres, rotation vector in radians). ur_rtde raises ``RuntimeError`` when its link to the
controller drops; every such error becomes ``HardwareStopped``.
"""

from __future__ import annotations

import logging
import time
from types import ModuleType
from typing import Any

import numpy as np

from scenarios.drivers.base import HardwareStopped, import_sdk, pose_to_rotvec, rotvec_to_pose
from scenarios.interfaces import FloatArray
from sim.geometry import pose_error

logger = logging.getLogger(__name__)

#: The controller's robot modes (RTDE ``robot_mode``); motion needs RUNNING.
_ROBOT_MODES = {
    -1: "no controller",
    0: "disconnected",
    1: "confirm safety",
    2: "booting",
    3: "power off",
    4: "power on",
    5: "idle",
    6: "backdrive",
    7: "running",
    8: "updating firmware",
}
_RUNNING = 7
#: How often the arrival check polls the reported pose (s).
_POLL_S = 0.01


def _sdk() -> tuple[ModuleType, ModuleType]:
    """The ur_rtde modules (``DriverMissing`` when ur_rtde is not installed)."""
    control = import_sdk("ur", "rtde_control")
    receive = import_sdk("ur", "rtde_receive")
    return control, receive


class URDriver:
    """A UR arm on ur_rtde: linear moves of the flange (``moveL``), its reported pose.

    ``host`` is the controller's address; ``timeout_s`` how long to wait, beyond the move's
    own duration, for the reported pose to come within ``arrive_tol_mm`` /
    ``arrive_tol_deg`` of the target; ``accel_m_s2`` the linear acceleration of every move
    (m/s^2). Moves are sent asynchronously and their arrival polled, so an interrupt during
    a move stops the arm at once.
    """

    def __init__(
        self,
        host: str,
        *,
        timeout_s: float = 5.0,
        accel_m_s2: float = 0.5,
        arrive_tol_mm: float = 1.0,
        arrive_tol_deg: float = 0.5,
    ) -> None:
        for name, v in (
            ("timeout_s", timeout_s),
            ("accel_m_s2", accel_m_s2),
            ("arrive_tol_mm", arrive_tol_mm),
            ("arrive_tol_deg", arrive_tol_deg),
        ):
            if not (np.isfinite(v) and v > 0):
                raise ValueError(f"URDriver: {name} must be a positive number, got {v!r}")
        self.host = host
        self.timeout_s = float(timeout_s)
        self.accel_m_s2 = float(accel_m_s2)
        self.arrive_tol_mm = float(arrive_tol_mm)
        self.arrive_tol_deg = float(arrive_tol_deg)
        self.last_failure = ""
        self._control: Any = None
        self._receive: Any = None
        self._active = False

    # -- lifecycle -----------------------------------------------------------------------

    def configure(self) -> None:
        """Connect both RTDE interfaces and set the TCP offset to zero, so the reported TCP
        is the flange (``HardwareStopped`` when the controller cannot be reached)."""
        control_mod, receive_mod = _sdk()
        if self._control is not None:
            return
        try:
            self._receive = receive_mod.RTDEReceiveInterface(self.host)
            self._control = control_mod.RTDEControlInterface(self.host)
            if not self._control.setTcp([0.0] * 6):
                raise HardwareStopped(
                    f"the UR controller at {self.host} refused to set a zero TCP offset; "
                    "check that it is in remote control mode and rerun"
                )
        except RuntimeError as exc:
            self.cleanup()
            raise HardwareStopped(
                f"cannot connect to the UR controller at {self.host} ({exc}); check the "
                "address, the cable and that the arm is in remote control mode, then rerun"
            ) from None
        except HardwareStopped:
            self.cleanup()
            raise
        logger.info("connected to the UR controller at %s", self.host)

    def activate(self) -> None:
        """Enable motion: refuse an arm that is protective- or emergency-stopped or not
        running (``HardwareStopped``)."""
        self._require_configured("activate")
        try:
            self._check_stops()
            mode = int(self._receive.getRobotMode())
        except RuntimeError as exc:
            raise self._lost(exc) from None
        if mode != _RUNNING:
            raise HardwareStopped(
                f"the UR arm at {self.host} is not running (robot mode "
                f"{_ROBOT_MODES.get(mode, mode)}); power it on and release the brakes on the "
                "teach pendant, then rerun"
            )
        self._active = True

    def deactivate(self) -> None:
        """Stop any motion (``stopL``); safe in any state, and twice."""
        if self._active and self._control is not None:
            try:
                self._control.stopL()
            except RuntimeError as exc:
                logger.warning("stopping the UR arm at %s failed: %s", self.host, exc)
        self._active = False

    def cleanup(self) -> None:
        """Stop the control script and disconnect; safe in any state, and twice."""
        self.deactivate()
        control, receive = self._control, self._receive
        self._control = self._receive = None
        if control is not None:
            for call in (control.stopScript, control.disconnect):
                try:
                    call()
                except RuntimeError as exc:
                    logger.warning("disconnecting from the UR at %s: %s", self.host, exc)
        if receive is not None:
            try:
                receive.disconnect()
            except RuntimeError as exc:
                logger.warning("disconnecting from the UR at %s: %s", self.host, exc)

    # -- read / write --------------------------------------------------------------------

    def read_pose(self) -> FloatArray:
        """The flange pose ``T_base_ee`` (4x4, metres) the controller reports now
        (``HardwareStopped`` when the connection is lost)."""
        self._require_configured("read_pose")
        try:
            self._check_link()
            return rotvec_to_pose(list(self._receive.getActualTCPPose()))
        except RuntimeError as exc:
            raise self._lost(exc) from None

    def move_to(self, T_base_ee: FloatArray, speed_m_s: float) -> bool:
        """Move the flange linearly to ``T_base_ee`` (4x4, metres) at ``speed_m_s`` (m/s)
        and wait until it arrives.

        False with ``last_failure`` (nothing sent) when the controller says the pose is
        outside its safety limits; ``HardwareStopped`` when the link is lost, the arm stops
        (protective or emergency stop) or it does not arrive within the tolerance.
        """
        if not self._active:
            raise RuntimeError(
                "URDriver.move_to() before activate(): call configure(), then activate()"
            )
        if not (np.isfinite(speed_m_s) and speed_m_s > 0):
            raise ValueError(f"URDriver.move_to: speed_m_s must be positive, got {speed_m_s!r}")
        T_target = np.asarray(T_base_ee, dtype=np.float64)
        pose = pose_to_rotvec(T_target)
        self.last_failure = ""
        try:
            self._check_link()
            if not self._control.isPoseWithinSafetyLimits(pose):
                where = ", ".join(f"{v:+.3f}" for v in pose[:3])
                self.last_failure = (
                    f"outside the controller's safety limits (flange at ({where}) m: "
                    "unreachable, or past a safety plane or joint limit)"
                )
                return False
            start = rotvec_to_pose(list(self._receive.getActualTCPPose()))
            # Asynchronous: the call returns at once and the arrival is polled here, so a
            # Ctrl-C (or any error) during the move stops the arm (``stopL``) at once
            # instead of after the move.
            moved = bool(self._control.moveL(pose, float(speed_m_s), self.accel_m_s2, True))
            try:
                self._check_link()
                self._check_stops()
                if not moved:
                    raise HardwareStopped(
                        f"the UR controller at {self.host} aborted the move to "
                        f"({pose[0]:+.3f}, {pose[1]:+.3f}, {pose[2]:+.3f}) m; check the teach "
                        "pendant's log, then rerun"
                    )
                # The move's own duration (trapezoidal profile, generously) plus the wait.
                dist = float(np.linalg.norm(T_target[:3, 3] - start[:3, 3]))
                duration = dist / speed_m_s + speed_m_s / self.accel_m_s2
                self._wait_arrival(T_target, 1.5 * duration + self.timeout_s)
            except BaseException:
                self._stop_quietly()
                raise
        except RuntimeError as exc:
            raise self._lost(exc) from None
        return True

    def _stop_quietly(self) -> None:
        """``stopL`` after an interrupted or failed move; errors (a lost link) are logged."""
        try:
            self._control.stopL()
        except RuntimeError as exc:
            logger.warning("stopping the UR arm at %s failed: %s", self.host, exc)

    # -- helpers -------------------------------------------------------------------------

    def _wait_arrival(self, T_target: FloatArray, within_s: float) -> None:
        """Poll the reported pose until it is within tolerance of ``T_target``, else raise
        ``HardwareStopped`` after ``within_s`` seconds."""
        deadline = time.monotonic() + within_s
        while True:
            T_now = rotvec_to_pose(list(self._receive.getActualTCPPose()))
            d_m, d_rad = pose_error(T_now, T_target)
            d_mm, d_deg = d_m * 1000.0, float(np.degrees(d_rad))
            if d_mm <= self.arrive_tol_mm and d_deg <= self.arrive_tol_deg:
                return
            if time.monotonic() >= deadline:
                raise HardwareStopped(
                    f"the UR arm at {self.host} did not arrive: it stopped {d_mm:.1f} mm / "
                    f"{d_deg:.2f} deg from the target (tolerance {self.arrive_tol_mm} mm / "
                    f"{self.arrive_tol_deg} deg); check the arm, then rerun"
                )
            time.sleep(_POLL_S)
            self._check_link()
            self._check_stops()

    def _check_link(self) -> None:
        """``HardwareStopped`` when either RTDE interface has lost the controller."""
        if not (self._control.isConnected() and self._receive.isConnected()):
            raise HardwareStopped(
                f"connection to the UR controller at {self.host} lost; check the network "
                "and the controller, then rerun"
            )

    def _check_stops(self) -> None:
        """``HardwareStopped`` when the arm is emergency- or protective-stopped."""
        if self._receive.isEmergencyStopped():
            raise HardwareStopped(
                f"the UR arm at {self.host} is emergency-stopped; release the stop and "
                "power the arm on at the teach pendant, then rerun"
            )
        if self._receive.isProtectiveStopped():
            raise HardwareStopped(
                f"the UR arm at {self.host} is protective-stopped; clear the cause, unlock "
                "the stop at the teach pendant, then rerun"
            )

    def _lost(self, exc: RuntimeError) -> HardwareStopped:
        """The ``HardwareStopped`` for a ``RuntimeError`` ur_rtde raised."""
        return HardwareStopped(
            f"connection to the UR controller at {self.host} lost ({exc}); check the "
            "network and the controller, then rerun"
        )

    def _require_configured(self, what: str) -> None:
        """A clear error for a call before ``configure``."""
        if self._control is None:
            raise RuntimeError(f"URDriver.{what}() before configure(): call configure() first")
