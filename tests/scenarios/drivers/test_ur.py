"""URDriver against a test double of ur_rtde (the ``rtde_control``/``rtde_receive`` modules)."""

from __future__ import annotations

import sys
import types
from typing import Any

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from scenarios.drivers.base import DriverMissing, HardwareStopped, pose_to_rotvec
from scenarios.drivers.ur import URDriver

HOST = "10.0.0.2"


class FakeController:
    """The UR controller as ur_rtde shows it: one pose, stop flags, a command log."""

    def __init__(self) -> None:
        self.pose = [0.4, 0.0, 0.3, 0.0, np.pi, 0.0]
        self.log: list[tuple[Any, ...]] = []
        self.connected = True
        self.refuse_connect = False
        self.protective = False
        self.estop = False
        self.mode = 7
        self.within_limits = True
        self.arrives = True
        #: Called by moveL before it moves: may change the state, raise, or return False.
        self.on_move: Any = None

    def modules(self) -> tuple[types.ModuleType, types.ModuleType]:
        """Fake ``rtde_control`` and ``rtde_receive`` modules bound to this controller."""
        ctl = self

        class RTDEControlInterface:
            def __init__(self, host: str) -> None:
                ctl.log.append(("control", host))
                if ctl.refuse_connect:
                    raise RuntimeError("One of the RTDE input registers are already in use!")

            def setTcp(self, pose: list[float]) -> bool:
                ctl.log.append(("setTcp", list(pose)))
                return True

            def isConnected(self) -> bool:
                return ctl.connected

            def isPoseWithinSafetyLimits(self, pose: list[float]) -> bool:
                ctl.log.append(("isPoseWithinSafetyLimits", list(pose)))
                return ctl.within_limits

            def moveL(
                self,
                pose: list[float],
                speed: float,
                acceleration: float,
                asynchronous: bool = False,
            ) -> bool:
                ctl.log.append(("moveL", list(pose), speed, acceleration, asynchronous))
                if not ctl.connected:
                    raise RuntimeError("RTDE control script is not running!")
                if ctl.on_move is not None and ctl.on_move(pose) is False:
                    return False
                if ctl.arrives:
                    ctl.pose = list(pose)
                return True

            def stopL(self, a: float = 10.0) -> None:
                ctl.log.append(("stopL",))

            def stopScript(self) -> None:
                ctl.log.append(("stopScript",))

            def disconnect(self) -> None:
                ctl.log.append(("disconnect control",))

        class RTDEReceiveInterface:
            def __init__(self, host: str) -> None:
                ctl.log.append(("receive", host))
                if ctl.refuse_connect:
                    raise RuntimeError(f"Failed to connect to {host}")

            def getActualTCPPose(self) -> list[float]:
                if not ctl.connected:
                    raise RuntimeError("receive: not connected")
                return list(ctl.pose)

            def isConnected(self) -> bool:
                return ctl.connected

            def isProtectiveStopped(self) -> bool:
                return ctl.protective

            def isEmergencyStopped(self) -> bool:
                return ctl.estop

            def getRobotMode(self) -> int:
                return ctl.mode

            def disconnect(self) -> None:
                ctl.log.append(("disconnect receive",))

        control = types.ModuleType("rtde_control")
        control.RTDEControlInterface = RTDEControlInterface  # type: ignore[attr-defined]
        receive = types.ModuleType("rtde_receive")
        receive.RTDEReceiveInterface = RTDEReceiveInterface  # type: ignore[attr-defined]
        return control, receive

    def commands(self, name: str) -> list[tuple[Any, ...]]:
        """The logged calls of ``name``."""
        return [c for c in self.log if c[0] == name]


@pytest.fixture
def ur(monkeypatch: pytest.MonkeyPatch) -> FakeController:
    ctl = FakeController()
    control, receive = ctl.modules()
    monkeypatch.setitem(sys.modules, "rtde_control", control)
    monkeypatch.setitem(sys.modules, "rtde_receive", receive)
    return ctl


def _pose(xyz: tuple[float, float, float], rotvec: tuple[float, float, float]) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = Rotation.from_rotvec(rotvec).as_matrix()
    T[:3, 3] = xyz
    return T


def _active(**kw: Any) -> URDriver:
    d = URDriver(HOST, **kw)
    d.configure()
    d.activate()
    return d


def test_moves_round_trip_through_the_rotation_vector(ur: FakeController) -> None:
    d = _active(accel_m_s2=0.7)
    assert ur.commands("setTcp") == [("setTcp", [0.0] * 6)]  # the reported TCP is the flange
    rng = np.random.default_rng(3)
    for _ in range(5):
        T = _pose(tuple(rng.uniform(-0.5, 0.5, 3)), tuple(Rotation.random(rng=rng).as_rotvec()))
        assert d.move_to(T, 0.25) is True
        _, pose, speed, accel, asynchronous = ur.commands("moveL")[-1]
        assert pose == pytest.approx(pose_to_rotvec(T), abs=1e-15)
        assert (speed, accel, asynchronous) == (0.25, 0.7, True)
        np.testing.assert_allclose(d.read_pose(), T, atol=1e-12)
    assert d.last_failure == ""


def test_a_pose_outside_the_safety_limits_is_refused_without_motion(ur: FakeController) -> None:
    d = _active()
    ur.within_limits = False
    assert d.move_to(_pose((0.9, 0.9, -0.2), (0.0, np.pi, 0.0)), 0.1) is False
    assert d.last_failure.startswith("outside the controller's safety limits (")
    assert "+0.900" in d.last_failure
    assert ur.commands("moveL") == []
    ur.within_limits = True  # the next pose goes through
    assert d.move_to(_pose((0.4, 0.1, 0.3), (0.0, np.pi, 0.0)), 0.1) is True
    assert d.last_failure == ""


def test_connection_lost_mid_sequence_stops_the_run(ur: FakeController) -> None:
    d = _active()
    assert d.move_to(_pose((0.4, 0.0, 0.3), (0.0, np.pi, 0.0)), 0.1)
    assert d.move_to(_pose((0.4, 0.1, 0.3), (0.0, np.pi, 0.0)), 0.1)
    ur.connected = False
    with pytest.raises(HardwareStopped, match=f"connection to the UR controller at {HOST} lost"):
        d.move_to(_pose((0.4, 0.2, 0.3), (0.0, np.pi, 0.0)), 0.1)
    with pytest.raises(HardwareStopped, match="lost"):
        d.read_pose()
    assert len(ur.commands("moveL")) == 2  # the lost link is seen before the third move


def test_the_sdk_raising_on_a_dropped_link_is_hardware_stopped(ur: FakeController) -> None:
    d = _active()

    def drop(pose: list[float]) -> bool:
        ur.connected = False
        raise RuntimeError("RTDE control script is not running!")

    ur.on_move = drop
    with pytest.raises(HardwareStopped, match=f"connection to the UR controller at {HOST} lost"):
        d.move_to(_pose((0.4, 0.2, 0.3), (0.0, np.pi, 0.0)), 0.1)


def test_a_link_lost_during_the_move_is_seen_on_arrival(ur: FakeController) -> None:
    d = _active()

    def drop(pose: list[float]) -> bool:
        ur.connected = False
        return True

    ur.on_move = drop
    with pytest.raises(HardwareStopped, match="lost"):
        d.move_to(_pose((0.4, 0.2, 0.3), (0.0, np.pi, 0.0)), 0.1)


def test_a_protective_stop_during_a_move_stops_the_run(ur: FakeController) -> None:
    d = _active()

    def stop(pose: list[float]) -> bool:
        ur.protective = True
        return False

    ur.on_move = stop
    with pytest.raises(HardwareStopped, match="protective-stopped"):
        d.move_to(_pose((0.4, 0.2, 0.3), (0.0, np.pi, 0.0)), 0.1)


def test_an_aborted_move_without_a_stop_flag_stops_the_run(ur: FakeController) -> None:
    d = _active()
    ur.on_move = lambda pose: False
    with pytest.raises(HardwareStopped, match="aborted the move"):
        d.move_to(_pose((0.4, 0.2, 0.3), (0.0, np.pi, 0.0)), 0.1)


def test_a_move_that_does_not_arrive_stops_the_run(ur: FakeController) -> None:
    d = _active(timeout_s=0.05)
    ur.arrives = False
    with pytest.raises(HardwareStopped, match="did not arrive: it stopped 200.0 mm"):
        d.move_to(_pose((0.4, 0.2, 0.3), (0.0, np.pi, 0.0)), 0.1)


def test_arrival_within_the_tolerance_is_accepted(ur: FakeController) -> None:
    d = _active(arrive_tol_mm=1.0)
    T = _pose((0.4, 0.2, 0.3), (0.0, np.pi, 0.0))

    def near(pose: list[float]) -> bool:  # the arm settles 0.5 mm off the target
        ur.pose = [pose[0] + 0.0005, *pose[1:]]
        ur.arrives = False
        return True

    ur.on_move = near
    assert d.move_to(T, 0.1) is True
    assert d.read_pose()[0, 3] == pytest.approx(0.4005)


@pytest.mark.parametrize(
    ("state", "match"),
    [
        ({"protective": True}, "protective-stopped"),
        ({"estop": True}, "emergency-stopped"),
        ({"mode": 3}, "power off"),
    ],
)
def test_activate_refuses_a_stopped_arm(
    ur: FakeController, state: dict[str, Any], match: str
) -> None:
    for k, v in state.items():
        setattr(ur, k, v)
    d = URDriver(HOST)
    d.configure()
    with pytest.raises(HardwareStopped, match=match):
        d.activate()
    with pytest.raises(RuntimeError, match="before activate"):
        d.move_to(np.eye(4), 0.1)
    assert ur.commands("moveL") == []


def test_a_controller_that_cannot_be_reached_names_the_host(ur: FakeController) -> None:
    ur.refuse_connect = True
    d = URDriver(HOST)
    with pytest.raises(HardwareStopped, match=f"cannot connect to the UR controller at {HOST}"):
        d.configure()
    d.cleanup()  # nothing held: fine


def test_lifecycle_is_safe_in_any_state_and_twice(ur: FakeController) -> None:
    d = URDriver(HOST)
    d.deactivate()
    d.cleanup()  # before configure: nothing to do
    with pytest.raises(RuntimeError, match="before configure"):
        d.read_pose()
    with pytest.raises(RuntimeError, match="before activate"):
        d.move_to(np.eye(4), 0.1)
    d.configure()
    d.activate()
    d.deactivate()
    d.deactivate()
    assert len(ur.commands("stopL")) == 1
    d.cleanup()
    d.cleanup()
    assert ur.commands("stopScript") == [("stopScript",)]
    assert len(ur.commands("disconnect control")) == len(ur.commands("disconnect receive")) == 1
    with pytest.raises(RuntimeError, match="before configure"):
        d.read_pose()


def test_a_bad_speed_is_refused_before_anything_is_sent(ur: FakeController) -> None:
    d = _active()
    with pytest.raises(ValueError, match="speed_m_s"):
        d.move_to(np.eye(4), 0.0)
    assert ur.commands("moveL") == [] and ur.commands("isPoseWithinSafetyLimits") == []


def test_without_ur_rtde_one_line_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "rtde_control", None)  # makes the import fail
    d = URDriver(HOST)  # the driver builds without the SDK; configure needs it
    with pytest.raises(DriverMissing) as err:
        d.configure()
    assert "pip install 'twincell[ur]'" in str(err.value)
    assert "\n" not in str(err.value)
    assert err.value.exit_code == 2


def test_an_interrupt_during_a_move_stops_the_arm_at_once(ur: FakeController) -> None:
    """Moves are asynchronous: a Ctrl-C while the arm travels sends ``stopL`` before it
    propagates, not after the move."""
    d = _active(timeout_s=30.0)
    ur.arrives = False  # the arm is still on its way
    polls = {"n": 0}
    real_pose = ur.pose

    def interrupted() -> None:
        polls["n"] += 1
        if polls["n"] == 3:
            raise KeyboardInterrupt

    original = d._receive.getActualTCPPose

    def pose_then_interrupt() -> list[float]:
        interrupted()
        return list(original())

    d._receive.getActualTCPPose = pose_then_interrupt
    with pytest.raises(KeyboardInterrupt):
        d.move_to(_pose((0.3, 0.1, 0.3), (0.0, np.pi, 0.0)), 0.1)
    assert ur.commands("stopL")  # stopped at once
    assert ur.pose == real_pose  # it never arrived


def test_the_ur_driver_meets_the_shared_robot_contract(ur: FakeController) -> None:
    from scenarios.checks import check_robot_driver

    targets = [_pose((0.4, 0.1 * k, 0.3), (0.0, np.pi, 0.0)) for k in range(3)]
    check_robot_driver(URDriver(HOST), targets)
