"""OpenCVCamera against a test double of cv2.VideoCapture; GenICamCamera against one of
harvesters.core."""

from __future__ import annotations

import signal
import sys
import time
import types
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from scenarios.drivers.base import CameraTimeout, DriverMissing, HardwareStopped
from scenarios.drivers.camera import GenICamCamera, OpenCVCamera, genicam_to_rgb
from scenarios.interfaces import SpecError

W, H = 32, 24
K = np.array([[40.0, 0.0, 15.5], [0.0, 40.0, 11.5], [0.0, 0.0, 1.0]])
DIST = np.array([0.01, -0.02, 0.0, 0.0, 0.003])


def _bgr(n: int, w: int = W, h: int = H) -> np.ndarray:
    img = np.zeros((h, w, 3), np.uint8)
    img[..., 0], img[..., 1], img[..., 2] = 200, 100, n  # B, G, R
    return img


class FakeCapture:
    """cv2.VideoCapture as a webcam shows it; the class attributes script its behaviour."""

    openable = True
    native = (W, H)  # the size it delivers whatever is asked (None: what is asked)
    reports_size = True
    script: list[str] = []  # per read: "ok", "fail" (read failed), "gone" (closed)
    instances: list[FakeCapture] = []

    def __init__(self, source: Any, api: int | None = None, params: Any = None) -> None:
        self.source, self.api, self.params = source, api, list(params or [])
        self.opened = FakeCapture.openable
        self.props: dict[int, float] = {}
        self.n = 0
        self.released = 0
        FakeCapture.instances.append(self)

    def isOpened(self) -> bool:
        return self.opened

    def set(self, prop: int, value: float) -> bool:
        self.props[prop] = value
        return True

    def get(self, prop: int) -> float:
        if not FakeCapture.reports_size:
            return 0.0
        if prop == cv2.CAP_PROP_FRAME_WIDTH:
            return float(FakeCapture.native[0])
        if prop == cv2.CAP_PROP_FRAME_HEIGHT:
            return float(FakeCapture.native[1])
        return 0.0

    def read(self) -> tuple[bool, np.ndarray | None]:
        what = FakeCapture.script.pop(0) if FakeCapture.script else "ok"
        if what == "gone":
            self.opened = False
            return False, None
        if what == "fail":
            return False, None
        self.n += 1
        return True, _bgr(self.n, *FakeCapture.native)

    def grab(self) -> bool:
        self.grabbed = getattr(self, "grabbed", 0) + 1
        return True

    def release(self) -> None:
        self.released += 1


@pytest.fixture
def webcam(monkeypatch: pytest.MonkeyPatch) -> type[FakeCapture]:
    monkeypatch.setattr(cv2, "VideoCapture", FakeCapture)
    monkeypatch.setattr(FakeCapture, "openable", True)
    monkeypatch.setattr(FakeCapture, "native", (W, H))
    monkeypatch.setattr(FakeCapture, "reports_size", True)
    monkeypatch.setattr(FakeCapture, "script", [])
    monkeypatch.setattr(FakeCapture, "instances", [])
    return FakeCapture


def _webcam(**kw: Any) -> OpenCVCamera:
    cam = OpenCVCamera(0, width=W, height=H, K=K, dist=DIST, timeout_s=2.0, **kw)
    cam.configure()
    cam.activate()
    return cam


def test_opencv_frames_are_rgb_with_the_given_lens(webcam: type[FakeCapture]) -> None:
    cam = _webcam()
    cap = webcam.instances[0]
    assert cap.props[cv2.CAP_PROP_FRAME_WIDTH] == W and cap.props[cv2.CAP_PROP_FRAME_HEIGHT] == H
    assert cap.params == [
        cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
        2000,
        cv2.CAP_PROP_READ_TIMEOUT_MSEC,
        2000,
    ]
    f = cam.capture()
    assert f.rgb.shape == (H, W, 3) and f.rgb.dtype == np.uint8 and f.depth is None
    np.testing.assert_array_equal(f.rgb[0, 0], [1, 100, 200])  # R, G, B
    lens = cam.intrinsics()
    np.testing.assert_array_equal(lens.K, K)
    assert lens.dist is not None
    np.testing.assert_array_equal(lens.dist, DIST)
    assert lens.image_size == (W, H)


def test_opencv_a_source_that_does_not_open_is_refused(webcam: type[FakeCapture]) -> None:
    webcam.openable = False
    with pytest.raises(HardwareStopped, match="OpenCV cannot open camera 0"):
        OpenCVCamera(0, width=W, height=H, K=K).configure()
    assert webcam.instances[0].released == 1


def test_opencv_another_frame_size_is_a_clear_error(webcam: type[FakeCapture]) -> None:
    webcam.native = (64, 48)
    with pytest.raises(SpecError, match="delivers 64x48 frames, not the 32x24"):
        OpenCVCamera(0, width=W, height=H, K=K).configure()
    webcam.reports_size = False  # a backend that does not report its size: seen per frame
    cam = _webcam()
    with pytest.raises(SpecError, match="delivers 64x48 frames, not the 32x24"):
        cam.capture()


def test_opencv_a_failed_read_fails_one_capture_and_the_next_works(
    webcam: type[FakeCapture],
) -> None:
    cam = _webcam()
    cam.capture()
    webcam.script[:] = ["fail"]
    with pytest.raises(CameraTimeout, match="gave no frame"):
        cam.capture()
    assert cam.capture().rgb[0, 0, 0] == 2


def test_opencv_a_camera_gone_mid_sequence_stops_the_run(webcam: type[FakeCapture]) -> None:
    cam = _webcam()
    cam.capture()
    cam.capture()
    webcam.script[:] = ["gone"]
    with pytest.raises(HardwareStopped, match="closed while reading"):
        cam.capture()
    with pytest.raises(HardwareStopped, match="no longer open"):
        cam.capture()


def test_opencv_lifecycle_is_safe_in_any_state_and_twice(webcam: type[FakeCapture]) -> None:
    cam = OpenCVCamera("rtsp://cam/stream", width=W, height=H, K=K)
    cam.deactivate()
    cam.cleanup()
    cam.configure()
    with pytest.raises(RuntimeError, match="before activate"):
        cam.capture()
    cam.activate()
    cam.capture()
    cam.deactivate()
    cam.deactivate()
    with pytest.raises(RuntimeError, match="before activate"):
        cam.capture()
    cam.cleanup()
    cam.cleanup()
    assert webcam.instances[0].source == "rtsp://cam/stream"
    assert webcam.instances[0].released == 1


@pytest.mark.parametrize(
    ("K_", "dist", "match"),
    [
        (None, None, "needs its lens calibration"),
        (np.eye(2), None, "finite 3x3"),
        (np.diag([-1.0, 1.0, 1.0]), None, "fx, fy > 0"),
        (K, [0.1, 0.2], "5 finite numbers"),
    ],
)
def test_a_malformed_calibration_is_refused(K_: Any, dist: Any, match: str) -> None:
    with pytest.raises(SpecError, match=match):
        OpenCVCamera(0, width=W, height=H, K=K_, dist=dist)
    with pytest.raises(SpecError, match=match):
        GenICamCamera("x.cti", K=K_, dist=dist)


# -- GenICam -------------------------------------------------------------------------------


def _mosaic(rgb: np.ndarray, pattern: str) -> np.ndarray:
    """A Bayer mosaic of ``rgb`` whose top-left 2x2 cell reads ``pattern`` (e.g. "RGGB")."""
    out = np.zeros(rgb.shape[:2], np.uint8)
    for k, ch in enumerate(pattern):
        dy, dx = divmod(k, 2)
        out[dy::2, dx::2] = rgb[dy::2, dx::2, "RGB".index(ch)]
    return out


COLOUR = np.array([200, 60, 20], np.uint8)  # R, G, B
#: The top-left 2x2 cell of each GenICam Bayer format, row by row.
BAYER_CELLS = {"BayerRG8": "RGGB", "BayerBG8": "BGGR", "BayerGB8": "GBRG", "BayerGR8": "GRBG"}


class FakeGenICam:
    """One GenICam camera behind a GenTL producer, as harvesters.core shows it."""

    def __init__(self) -> None:
        self.serials = ["S1", "S2"]
        self.fmt = "RGB8"
        self.script: list[str] = []  # per fetch: "ok", "timeout", "gone"
        self.log: list[tuple[Any, ...]] = []
        self.n = 0  # frames exposed so far; pixel (0, 0) of frame n is (n, n, n)
        self.filled: list[int] = []  # frames exposed and waiting in the producer's buffers
        self.trigger: str | None = "Off"
        self.selector: str | None = None

    def trigger_nodes(self) -> dict[str, Any]:
        """The trigger features, as the camera is set (``trigger``: None, a camera without
        them; "Off"; or the source its FrameStart trigger waits for). With ``selector``, the
        node map has a ``TriggerSelector`` left at ``selector`` (whose trigger is Off): the
        frame trigger shows only once FrameStart is selected."""
        if self.trigger is None:
            return {}
        cam = self

        class Selector:
            value = cam.selector or "FrameStart"

        sel = Selector()

        class Mode:
            @property
            def value(self) -> str:
                return "Off" if cam.trigger == "Off" or sel.value != "FrameStart" else "On"

        nodes: dict[str, Any] = {"TriggerMode": Mode()}
        if self.selector is not None:
            nodes["TriggerSelector"] = sel
        if self.trigger != "Off":
            nodes["TriggerSource"] = types.SimpleNamespace(value=self.trigger)
            nodes["TriggerSoftware"] = types.SimpleNamespace(execute=lambda: self.expose(1))
        return nodes

    def expose(self, frames: int) -> None:
        """The camera runs free while nobody fetches (the arm moving): ``frames`` more
        buffers fill."""
        for _ in range(frames):
            self.n += 1
            self.filled.append(self.n)

    def image(self) -> np.ndarray:
        rgb = np.broadcast_to(COLOUR, (H, W, 3)).copy()
        rgb[0, 0] = (self.n, self.n, self.n)
        if self.fmt == "RGB8":
            return rgb.reshape(-1)
        if self.fmt == "BGR8":
            return rgb[:, :, ::-1].reshape(-1).copy()
        if self.fmt == "Mono8":
            return rgb[:, :, 0].reshape(-1).copy()
        return _mosaic(rgb, BAYER_CELLS[self.fmt]).reshape(-1)

    def module(self) -> types.ModuleType:
        cam = self
        core = types.ModuleType("harvesters.core")

        class GenTL_GenericException(Exception):  # noqa: N818 - genicam's name
            pass

        class TimeoutException(GenTL_GenericException):
            pass

        class ImageAcquirer:
            def __init__(self) -> None:
                nodes = types.SimpleNamespace(
                    Width=types.SimpleNamespace(value=W),
                    Height=types.SimpleNamespace(value=H),
                    PixelFormat=types.SimpleNamespace(value=cam.fmt),
                    **cam.trigger_nodes(),
                )
                self.remote_device = types.SimpleNamespace(node_map=nodes)

            def start(self) -> None:
                cam.log.append(("start",))

            def stop(self) -> None:
                cam.log.append(("stop",))

            def destroy(self) -> None:
                cam.log.append(("destroy",))

            def try_fetch(self, *, timeout: float) -> Any:
                # harvesters: a filled buffer (oldest first), or None after ``timeout``; an
                # incomplete buffer (frame number 0 here) is requeued and None returned at once
                if not cam.filled:
                    time.sleep(timeout)
                    return None
                n = cam.filled.pop(0)
                if n == 0:
                    cam.log.append(("incomplete",))
                    return None
                cam.log.append(("stale", n))
                return types.SimpleNamespace(queue=lambda: cam.log.append(("requeued", n)))

            @contextmanager
            def fetch(self, *, timeout: float = 0) -> Any:
                cam.log.append(("fetch", timeout))
                what = cam.script.pop(0) if cam.script else "ok"
                if what == "timeout":
                    raise TimeoutException()
                if what == "gone":
                    raise GenTL_GenericException("GC_ERR_IO: device lost")
                if cam.filled:
                    n = cam.filled.pop(0)
                else:  # wait for the next exposure
                    cam.n += 1
                    n = cam.n
                cam.log.append(("delivered", n))
                comp = types.SimpleNamespace(
                    width=W, height=H, data_format=cam.fmt, data=cam.image()
                )
                yield types.SimpleNamespace(payload=types.SimpleNamespace(components=[comp]))
                cam.log.append(("queued",))

        class Harvester:
            def __init__(self) -> None:
                self.device_info_list: list[Any] = []

            def add_file(self, path: str) -> None:
                cam.log.append(("add_file", path))

            def update(self) -> None:
                self.device_info_list = [
                    types.SimpleNamespace(serial_number=s) for s in cam.serials
                ]

            def create(self, search_key: Any = None) -> ImageAcquirer:
                cam.log.append(("create", search_key))
                # harvesters' ImageAcquirer installs its own Ctrl-C handler
                signal.signal(signal.SIGINT, lambda signum, frame: cam.log.append(("sigint",)))
                return ImageAcquirer()

            def reset(self) -> None:
                cam.log.append(("reset",))

        core.Harvester = Harvester  # type: ignore[attr-defined]
        core.TimeoutException = TimeoutException  # type: ignore[attr-defined]
        core.GenTL_GenericException = GenTL_GenericException  # type: ignore[attr-defined]
        return core


@pytest.fixture
def genicam(monkeypatch: pytest.MonkeyPatch) -> FakeGenICam:
    cam = FakeGenICam()
    monkeypatch.setitem(sys.modules, "harvesters", types.ModuleType("harvesters"))
    monkeypatch.setitem(sys.modules, "harvesters.core", cam.module())
    return cam


@pytest.fixture
def cti(tmp_path: Path) -> str:
    p = tmp_path / "producer.cti"
    p.write_bytes(b"")
    return str(p)


def _genicam(cti: str, **kw: Any) -> GenICamCamera:
    cam = GenICamCamera(cti, K=K, dist=DIST, timeout_s=1.5, **kw)
    cam.configure()
    cam.activate()
    return cam


@pytest.mark.parametrize("fmt", ["RGB8", "BGR8", "BayerRG8", "BayerBG8", "BayerGB8", "BayerGR8"])
def test_genicam_colour_formats_become_the_same_rgb(
    genicam: FakeGenICam, cti: str, fmt: str
) -> None:
    genicam.fmt = fmt
    f = _genicam(cti).capture()
    assert f.rgb.shape == (H, W, 3) and f.rgb.dtype == np.uint8 and f.depth is None
    # Demosaicing a flat colour gives it back exactly away from the border.
    np.testing.assert_array_equal(f.rgb[4:-4, 4:-4], np.broadcast_to(COLOUR, (H - 8, W - 8, 3)))


def test_genicam_mono_becomes_grey_rgb(genicam: FakeGenICam, cti: str) -> None:
    genicam.fmt = "Mono8"
    f = _genicam(cti).capture()
    np.testing.assert_array_equal(f.rgb[5, 5], [200, 200, 200])
    np.testing.assert_array_equal(f.rgb[0, 0], [2, 2, 2])  # frame 1 discarded (flush)


def test_genicam_opens_the_serial_asked_and_copies_before_requeueing(
    genicam: FakeGenICam, cti: str
) -> None:
    cam = _genicam(cti, serial="S2")
    assert ("add_file", cti) in genicam.log
    assert ("create", {"serial_number": "S2"}) in genicam.log
    f = cam.capture()
    assert genicam.log[-3:] == [("fetch", 1.5), ("delivered", 2), ("queued",)]
    assert f.rgb[0, 0, 0] == 2
    lens = cam.intrinsics()
    assert lens.image_size == (W, H)
    np.testing.assert_array_equal(lens.K, K)


def test_genicam_an_unsupported_pixel_format_is_refused(genicam: FakeGenICam, cti: str) -> None:
    genicam.fmt = "Mono12Packed"
    with pytest.raises(SpecError, match="pixel format Mono12Packed.*Mono8, RGB8, BGR8, BayerRG8"):
        GenICamCamera(cti, K=K).configure()
    assert ("destroy",) in genicam.log and ("reset",) in genicam.log
    with pytest.raises(SpecError, match="pixel format YUV422"):
        genicam_to_rgb(np.zeros(W * H * 2, np.uint8), W, H, "YUV422")


def test_genicam_a_timeout_fails_one_capture_and_the_next_works(
    genicam: FakeGenICam, cti: str
) -> None:
    cam = _genicam(cti)
    cam.capture()
    genicam.script[:] = ["timeout"]
    with pytest.raises(CameraTimeout, match="no frame within 1.5 s"):
        cam.capture()
    assert cam.capture().rgb[0, 0, 0] == 4  # frames 1-2, then (timeout) 3-4


def test_genicam_a_camera_gone_mid_sequence_stops_the_run(genicam: FakeGenICam, cti: str) -> None:
    cam = _genicam(cti)
    cam.capture()
    cam.capture()
    genicam.script[:] = ["gone"]
    with pytest.raises(HardwareStopped, match="device lost"):
        cam.capture()


def test_genicam_missing_camera_or_producer(genicam: FakeGenICam, cti: str) -> None:
    with pytest.raises(HardwareStopped, match=r"no GenICam camera S9 found .* \(found: S1, S2\)"):
        GenICamCamera(cti, serial="S9", K=K).configure()
    assert not [c for c in genicam.log if c[0] == "create"]
    with pytest.raises(SpecError, match="no GenTL producer at"):
        GenICamCamera(cti + ".missing", K=K).configure()


def test_genicam_lifecycle_is_safe_in_any_state_and_twice(genicam: FakeGenICam, cti: str) -> None:
    cam = GenICamCamera(cti, K=K)
    cam.deactivate()
    cam.cleanup()
    cam.configure()
    with pytest.raises(RuntimeError, match="before activate"):
        cam.capture()
    cam.activate()
    cam.capture()
    cam.deactivate()
    cam.deactivate()
    cam.cleanup()
    cam.cleanup()
    assert [c for c in genicam.log if c[0] in ("start", "stop", "destroy", "reset")] == [
        ("start",),
        ("stop",),
        ("destroy",),
        ("reset",),
    ]


def test_without_harvesters_one_line_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, cti: str
) -> None:
    monkeypatch.setitem(sys.modules, "harvesters.core", None)
    with pytest.raises(DriverMissing) as err:
        GenICamCamera(cti, K=K).configure()
    assert "pip install 'twincell[genicam]'" in str(err.value)
    assert "\n" not in str(err.value) and err.value.exit_code == 2


def test_the_generic_cameras_meet_the_shared_camera_contract(
    webcam: type[FakeCapture], genicam: FakeGenICam, cti: str
) -> None:
    from scenarios.checks import check_camera_driver

    check_camera_driver(_webcam())
    check_camera_driver(_genicam(cti))


def test_genicam_leaves_ctrl_c_to_twincell(genicam: FakeGenICam, cti: str) -> None:
    """harvesters' ImageAcquirer takes over SIGINT (destroying itself, raising nothing):
    the driver puts back the handler it found, so Ctrl-C stops the run."""

    def ours(signum: int, frame: object) -> None:
        pass

    previous = signal.signal(signal.SIGINT, ours)
    try:
        _genicam(cti)
        assert signal.getsignal(signal.SIGINT) is ours
    finally:
        signal.signal(signal.SIGINT, previous)


def test_genicam_returns_a_frame_exposed_after_the_capture_was_asked_for(
    genicam: FakeGenICam, cti: str
) -> None:
    cam = _genicam(cti)
    genicam.expose(5)  # buffers filled while the arm moved: frames 1-5
    genicam.filled.insert(2, 0)  # an incomplete buffer among them does not end the drain
    cam.capture()
    delivered = [e[1] for e in genicam.log if e[0] == "delivered"]
    assert [e[1] for e in genicam.log if e[0] == "stale"] == [1, 2, 3, 4, 5]
    assert [e[1] for e in genicam.log if e[0] == "requeued"] == [1, 2, 3, 4, 5]  # unread
    assert delivered == [6, 7]  # frame 6 began before the call: discarded; 7 returned
    assert cam.capture().rgb[0, 0, 0] == 9
    genicam.log.clear()
    eager = _genicam(cti, flush=0)  # flush=0: the first frame after the drain
    genicam.expose(2)
    assert eager.capture().rgb[0, 0, 0] == 12
    assert [e[1] for e in genicam.log if e[0] == "stale"] == [10, 11]
    with pytest.raises(ValueError, match="flush must be >= 0"):
        GenICamCamera(cti, K=K, dist=DIST, flush=-1)


def test_genicam_software_trigger_fires_once_per_capture_and_other_triggers_are_refused(
    genicam: FakeGenICam, cti: str
) -> None:
    genicam.trigger = "Software"
    cam = _genicam(cti)
    genicam.expose(3)  # frames left from before (a trigger sent by another program)
    assert cam.capture().rgb[0, 0, 0] == 4  # the one our trigger exposed
    assert [e[1] for e in genicam.log if e[0] == "delivered"] == [4]
    genicam.trigger = "Line1"
    with pytest.raises(SpecError, match="waits for a Line1 trigger.*TriggerMode to Off"):
        GenICamCamera(cti, K=K).configure()
    assert ("destroy",) in genicam.log
    # the frame trigger is read under FrameStart, whatever selector the camera was left at
    genicam.selector = "AcquisitionStart"
    with pytest.raises(SpecError, match="waits for a Line1 trigger"):
        GenICamCamera(cti, K=K).configure()
    genicam.trigger = None  # a camera without trigger features runs free
    assert _genicam(cti).capture().rgb[0, 0, 0] == 6


def test_opencv_a_device_discards_its_buffered_frames_before_each_capture(
    webcam: type[FakeCapture],
) -> None:
    cam = _webcam()  # device 0
    cam.capture()
    cam.capture()
    assert webcam.instances[-1].grabbed == 4  # two buffered frames dropped per capture
    video = OpenCVCamera("clip.mp4", width=W, height=H, K=K, dist=DIST)
    video.configure()
    video.activate()
    video.capture()
    assert not hasattr(webcam.instances[-1], "grabbed")  # a file has no backlog
