"""RealSenseDriver against a test double of pyrealsense2."""

from __future__ import annotations

import enum
import sys
import types
from typing import Any

import numpy as np
import pytest

from scenarios.drivers.base import CameraTimeout, DriverMissing, HardwareStopped
from scenarios.drivers.realsense import RealSenseDriver
from scenarios.interfaces import SpecError

W, H = 64, 48


class distortion(enum.Enum):  # noqa: N801 - pyrealsense2's enum is spelled so
    none = 0
    modified_brown_conrady = 1
    inverse_brown_conrady = 2
    ftheta = 3
    brown_conrady = 4
    kannala_brandt4 = 5


class FakeRealSense:
    """One RealSense as pyrealsense2 shows it, and a log of what the driver asked."""

    def __init__(self, serial: str = "123456") -> None:
        self.serial = serial
        self.plugged = True
        self.modes = {(W, H, 30)}
        self.model = distortion.brown_conrady
        self.coeffs = [0.1, -0.05, 0.001, 0.002, 0.01]
        self.scale = 0.001
        self.timeouts = 0  # how many of the next waits time out
        self.n = 0  # frames delivered
        self.log: list[tuple[Any, ...]] = []

    def rgb(self, n: int) -> np.ndarray:
        img = np.zeros((H, W, 3), np.uint8)
        img[..., 0], img[..., 1], img[..., 2] = 10 + n, 100, 200
        return img

    def depth_raw(self, aligned: bool) -> np.ndarray:
        raw = np.full((H, W), 500 if aligned else 900, np.uint16)  # 0.5 m aligned
        raw[0, 0] = 0  # no value
        raw[1, 1] = 1234
        return raw

    def module(self) -> types.ModuleType:
        dev = self
        rs = types.ModuleType("pyrealsense2")
        rs.stream = types.SimpleNamespace(color="color", depth="depth")  # type: ignore[attr-defined]
        rs.format = types.SimpleNamespace(rgb8="rgb8", z16="z16")  # type: ignore[attr-defined]
        rs.camera_info = types.SimpleNamespace(serial_number="serial_number")  # type: ignore[attr-defined]
        rs.distortion = distortion  # type: ignore[attr-defined]

        class Device:
            def get_info(self, key: str) -> str:
                assert key == "serial_number"
                return dev.serial

            def first_depth_sensor(self) -> Any:
                return types.SimpleNamespace(get_depth_scale=lambda: dev.scale)

        class Profile:
            def get_device(self) -> Device:
                return Device()

            def get_stream(self, stream: str) -> Any:
                assert stream == "color"
                intr = types.SimpleNamespace(
                    width=W, height=H, fx=50.0, fy=51.0, ppx=31.5, ppy=23.25,
                    model=dev.model, coeffs=list(dev.coeffs),
                )  # fmt: skip
                vsp = types.SimpleNamespace(get_intrinsics=lambda: intr)
                return types.SimpleNamespace(as_video_stream_profile=lambda: vsp)

        class context:  # noqa: N801
            def query_devices(self) -> list[Device]:
                return [Device()] if dev.plugged else []

        class config:  # noqa: N801
            def __init__(self) -> None:
                self.streams: list[tuple[Any, ...]] = []

            def enable_device(self, serial: str) -> None:
                dev.log.append(("enable_device", serial))

            def enable_stream(self, *args: Any) -> None:
                dev.log.append(("enable_stream", *args))
                self.streams.append(args)

            def resolve(self, wrapper: Any) -> Profile:
                for s in self.streams:
                    if (s[1], s[2], s[4]) not in dev.modes:
                        raise RuntimeError("Couldn't resolve requests")
                return Profile()

        class Frame:
            def __init__(self, data: np.ndarray) -> None:
                self.data = data

            def get_data(self) -> np.ndarray:
                return self.data

            def __bool__(self) -> bool:
                return True

        class Frameset:
            def __init__(self, n: int, aligned: bool) -> None:
                self.n, self.aligned = n, aligned

            def get_color_frame(self) -> Frame:
                return Frame(dev.rgb(self.n))

            def get_depth_frame(self) -> Frame:
                return Frame(dev.depth_raw(self.aligned))

            def get_timestamp(self) -> float:
                return 1_700_000_000_000.0 + 33.0 * self.n  # ms

        class pipeline:  # noqa: N801
            def start(self, cfg: config) -> Profile:
                dev.log.append(("start",))
                return Profile()

            def stop(self) -> None:
                dev.log.append(("stop",))

            def wait_for_frames(self, timeout_ms: int) -> Frameset:
                dev.log.append(("wait_for_frames", timeout_ms))
                if not dev.plugged:
                    raise RuntimeError("Frame didn't arrive within 2000")
                if dev.timeouts:
                    dev.timeouts -= 1
                    raise RuntimeError(f"Frame didn't arrive within {timeout_ms}")
                dev.n += 1
                return Frameset(dev.n, aligned=False)

        class align:  # noqa: N801
            def __init__(self, to: str) -> None:
                dev.log.append(("align", to))

            def process(self, frames: Frameset) -> Frameset:
                return Frameset(frames.n, aligned=True)

        rs.context, rs.config, rs.pipeline, rs.align = context, config, pipeline, align  # type: ignore[attr-defined]
        rs.pipeline_wrapper = lambda pipe: pipe  # type: ignore[attr-defined]
        return rs


@pytest.fixture
def cam(monkeypatch: pytest.MonkeyPatch) -> FakeRealSense:
    dev = FakeRealSense()
    monkeypatch.setitem(sys.modules, "pyrealsense2", dev.module())
    return dev


def test_lens_depth_scale_and_aligned_depth_in_metres(cam: FakeRealSense) -> None:
    d = RealSenseDriver(width=W, height=H, fps=30, serial="123456", timeout_s=2.0)
    d.configure()
    lens = d.intrinsics()
    np.testing.assert_array_equal(lens.K, [[50.0, 0.0, 31.5], [0.0, 51.0, 23.25], [0.0, 0.0, 1.0]])
    assert lens.dist is not None
    np.testing.assert_allclose(lens.dist, [0.1, -0.05, 0.001, 0.002, 0.01])  # OpenCV order
    assert lens.image_size == (W, H) and d.depth_scale == 0.001
    assert ("enable_device", "123456") in cam.log
    assert ("enable_stream", "color", W, H, "rgb8", 30) in cam.log
    assert ("enable_stream", "depth", W, H, "z16", 30) in cam.log
    assert ("start",) not in cam.log  # configure resolves, activate starts
    d.activate()
    assert ("align", "color") in cam.log
    f = d.capture()
    np.testing.assert_array_equal(f.rgb, cam.rgb(1))
    assert f.rgb.dtype == np.uint8 and f.rgb.shape == (H, W, 3)
    assert f.depth is not None and f.depth.dtype == np.float32
    assert f.depth[0, 0] == 0.0 and f.depth[5, 5] == pytest.approx(0.5)  # aligned, not 0.9
    assert f.depth[1, 1] == pytest.approx(1.234)
    assert f.timestamp == pytest.approx(1_700_000_000.033)
    assert ("wait_for_frames", 2000) in cam.log


def test_without_depth_there_is_no_depth_stream(cam: FakeRealSense) -> None:
    d = RealSenseDriver(width=W, height=H, depth=False)
    d.configure()
    d.activate()
    f = d.capture()
    assert f.depth is None and d.depth_scale is None
    assert not [c for c in cam.log if c[:2] == ("enable_stream", "depth")]
    assert not [c for c in cam.log if c[0] == "align"]


def test_zero_coefficients_mean_no_distortion_whatever_the_model(cam: FakeRealSense) -> None:
    cam.model, cam.coeffs = distortion.inverse_brown_conrady, [0.0] * 5
    d = RealSenseDriver(width=W, height=H)
    d.configure()
    assert d.intrinsics().dist is None


def test_a_distortion_model_opencv_cannot_represent_is_refused(cam: FakeRealSense) -> None:
    cam.model = distortion.modified_brown_conrady
    with pytest.raises(SpecError, match="modified_brown_conrady distortion model"):
        RealSenseDriver(width=W, height=H).configure()


def test_a_timeout_fails_one_capture_and_the_next_works(cam: FakeRealSense) -> None:
    d = RealSenseDriver(width=W, height=H)
    d.configure()
    d.activate()
    d.capture()
    cam.timeouts = 1
    with pytest.raises(CameraTimeout, match="no frame within 5 s"):
        d.capture()
    f = d.capture()
    np.testing.assert_array_equal(f.rgb, cam.rgb(2))


def test_a_device_gone_mid_sequence_stops_the_run(cam: FakeRealSense) -> None:
    d = RealSenseDriver(width=W, height=H)
    d.configure()
    d.activate()
    d.capture()
    d.capture()
    cam.plugged = False
    with pytest.raises(HardwareStopped, match="RealSense 123456 is gone"):
        d.capture()
    d.deactivate()
    d.cleanup()


def test_no_device_or_another_serial_stops_at_configure(cam: FakeRealSense) -> None:
    with pytest.raises(HardwareStopped, match=r"no RealSense 999 is connected \(found: 123456\)"):
        RealSenseDriver(width=W, height=H, serial="999").configure()
    cam.plugged = False
    with pytest.raises(HardwareStopped, match=r"no RealSense camera is connected \(found: none\)"):
        RealSenseDriver(width=W, height=H).configure()


def test_a_mode_the_camera_does_not_offer_is_refused(cam: FakeRealSense) -> None:
    with pytest.raises(SpecError, match="cannot stream colour and depth 640x480 at 30 Hz"):
        RealSenseDriver(width=640, height=480).configure()


def test_lifecycle_is_safe_in_any_state_and_twice(cam: FakeRealSense) -> None:
    d = RealSenseDriver(width=W, height=H)
    d.deactivate()
    d.cleanup()
    with pytest.raises(RuntimeError, match="before configure"):
        d.intrinsics()
    d.configure()
    with pytest.raises(RuntimeError, match="before activate"):
        d.capture()
    d.activate()
    d.capture()
    d.deactivate()
    d.deactivate()
    with pytest.raises(RuntimeError, match="before activate"):
        d.capture()
    d.cleanup()
    d.cleanup()
    assert cam.log.count(("start",)) == cam.log.count(("stop",)) == 1


def test_without_pyrealsense2_one_line_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "pyrealsense2", None)
    with pytest.raises(DriverMissing) as err:
        RealSenseDriver(width=W, height=H).configure()
    assert "pip install 'twincell[realsense]'" in str(err.value)
    assert "\n" not in str(err.value) and err.value.exit_code == 2


def test_the_realsense_driver_meets_the_shared_camera_contract(cam: FakeRealSense) -> None:
    from scenarios.checks import check_camera_driver

    check_camera_driver(RealSenseDriver(width=W, height=H))
    check_camera_driver(RealSenseDriver(width=W, height=H, depth=False))
