"""An Intel RealSense depth camera on pyrealsense2 (``pip install 'twincell[realsense]'``),
as a ``CameraDriver``: RGB colour and, optionally, depth aligned to the colour image.

``configure`` resolves the requested streams against the device without starting them
(``config.resolve``) and reads the colour lens and the depth scale; ``activate`` starts
the pipeline (and re-reads the lens from the started stream); ``deactivate`` stops it.
"""

from __future__ import annotations

import logging
from types import ModuleType
from typing import Any

import numpy as np

from scenarios.drivers.base import (
    CameraTimeout,
    Frame,
    HardwareStopped,
    Intrinsics,
    import_sdk,
)
from scenarios.interfaces import SpecError

logger = logging.getLogger(__name__)


def _sdk() -> ModuleType:
    """pyrealsense2 (``DriverMissing`` when it is not installed)."""
    return import_sdk("realsense", "pyrealsense2")


def _serials(rs: ModuleType) -> list[str]:
    """Serial numbers of the RealSense devices connected now."""
    return [str(d.get_info(rs.camera_info.serial_number)) for d in rs.context().query_devices()]


def intrinsics_from_rs(rs: ModuleType, intr: Any) -> Intrinsics:
    """Our ``Intrinsics`` of a pyrealsense2 ``intrinsics`` (fx, fy, ppx, ppy in pixels).

    Brown-Conrady coefficients are OpenCV's (k1, k2, p1, p2, k3); any model whose
    coefficients are all zero has no distortion (None). Other models with coefficients
    (modified or inverse Brown-Conrady, F-theta, Kannala-Brandt) are refused (``SpecError``):
    OpenCV's model cannot represent them.
    """
    K = np.array(
        [[intr.fx, 0.0, intr.ppx], [0.0, intr.fy, intr.ppy], [0.0, 0.0, 1.0]], dtype=np.float64
    )
    coeffs = np.asarray(list(intr.coeffs), dtype=np.float64)
    dist: np.ndarray | None
    if not np.any(coeffs):
        dist = None
    elif intr.model == rs.distortion.brown_conrady:
        dist = coeffs[:5].copy()
    else:
        model = str(intr.model).rsplit(".", 1)[-1]
        raise SpecError(
            f"the RealSense colour stream uses the {model} distortion model, which OpenCV's "
            "(k1, k2, p1, p2, k3) cannot represent; calibrate the colour camera with OpenCV "
            "and use the opencv camera driver with that calibration"
        )
    return Intrinsics(width=int(intr.width), height=int(intr.height), K=K, dist=dist)


class RealSenseDriver:
    """A RealSense: colour ``width`` x ``height`` RGB8 at ``fps`` Hz and, with ``depth``,
    Z16 depth aligned to the colour image (float32 metres); ``serial`` picks one of several
    devices (None: the only or first one); ``timeout_s`` bounds the wait for a frame."""

    def __init__(
        self,
        *,
        width: int,
        height: int,
        fps: int = 30,
        serial: str | None = None,
        depth: bool = True,
        timeout_s: float = 5.0,
    ) -> None:
        if width <= 0 or height <= 0 or fps <= 0:
            raise ValueError(
                f"RealSenseDriver: width, height and fps must be positive, got "
                f"{width}x{height} at {fps} Hz"
            )
        if not (np.isfinite(timeout_s) and timeout_s > 0):
            raise ValueError(f"RealSenseDriver: timeout_s must be positive, got {timeout_s!r}")
        self.width, self.height, self.fps = int(width), int(height), int(fps)
        self.serial = serial
        self.depth = bool(depth)
        self.timeout_s = float(timeout_s)
        #: Metres per depth unit (after ``configure``; None without depth).
        self.depth_scale: float | None = None
        self._rs: ModuleType | None = None
        self._pipe: Any = None
        self._config: Any = None
        self._align: Any = None
        self._intrinsics: Intrinsics | None = None
        self._device_serial = ""
        self._streaming = False

    def _name(self) -> str:
        """How messages name this camera."""
        sn = self._device_serial or self.serial
        return f"the RealSense {sn}" if sn else "the RealSense"

    # -- lifecycle -----------------------------------------------------------------------

    def configure(self) -> None:
        """Find the device, check it offers the streams, read the colour lens and the depth
        scale (``HardwareStopped`` when no such device is connected, ``SpecError`` when it
        cannot stream the requested mode or its lens model is not OpenCV's)."""
        rs = _sdk()
        if self._pipe is not None:
            return
        try:
            found = _serials(rs)
        except RuntimeError as exc:
            raise HardwareStopped(
                f"cannot list RealSense devices ({exc}); check the USB link"
            ) from None
        if not found or (self.serial is not None and self.serial not in found):
            want = f"RealSense {self.serial}" if self.serial else "RealSense camera"
            raise HardwareStopped(
                f"no {want} is connected (found: {', '.join(found) or 'none'}); plug it in "
                "(USB 3) or fix the serial, then rerun"
            )
        pipe, config = rs.pipeline(), rs.config()
        if self.serial is not None:
            config.enable_device(self.serial)
        config.enable_stream(rs.stream.color, self.width, self.height, rs.format.rgb8, self.fps)
        if self.depth:
            config.enable_stream(rs.stream.depth, self.width, self.height, rs.format.z16, self.fps)
        mode = (
            f"colour{' and depth' if self.depth else ''} {self.width}x{self.height} "
            f"at {self.fps} Hz"
        )
        try:
            profile = config.resolve(rs.pipeline_wrapper(pipe))
        except RuntimeError as exc:
            raise SpecError(
                f"{self._name()} cannot stream {mode} ({exc}); pick a width, height and fps "
                "the camera offers (e.g. 640x480 or 1280x720 at 30 Hz)"
            ) from None
        device = profile.get_device()
        self._device_serial = str(device.get_info(rs.camera_info.serial_number))
        self._intrinsics = self._read_lens(rs, profile)
        self.depth_scale = (
            float(device.first_depth_sensor().get_depth_scale()) if self.depth else None
        )
        self._rs, self._pipe, self._config = rs, pipe, config
        logger.info("configured %s: %s", self._name(), mode)

    def activate(self) -> None:
        """Start streaming (``HardwareStopped`` when the device will not start)."""
        if self._pipe is None or self._rs is None:
            raise RuntimeError(
                "RealSenseDriver.activate() before configure(): call configure() first"
            )
        if self._streaming:
            return
        rs = self._rs
        try:
            profile = self._pipe.start(self._config)
        except RuntimeError as exc:
            raise HardwareStopped(
                f"{self._name()} would not start streaming ({exc}); reconnect it and rerun"
            ) from None
        self._streaming = True
        self._intrinsics = self._read_lens(rs, profile)
        self._align = rs.align(rs.stream.color) if self.depth else None

    def deactivate(self) -> None:
        """Stop streaming; safe in any state, and twice."""
        if self._streaming:
            self._streaming = False
            try:
                self._pipe.stop()
            except RuntimeError as exc:
                logger.warning("stopping %s: %s", self._name(), exc)
        self._align = None

    def cleanup(self) -> None:
        """Release the device; safe in any state, and twice."""
        self.deactivate()
        self._pipe = self._config = self._rs = None

    # -- read ----------------------------------------------------------------------------

    def intrinsics(self) -> Intrinsics:
        """The colour stream's lens; depth is aligned to it (after ``configure``)."""
        if self._intrinsics is None:
            raise RuntimeError(
                "RealSenseDriver.intrinsics() before configure(): call configure() first"
            )
        return self._intrinsics

    def capture(self) -> Frame:
        """The next frame: rgb (H, W, 3) uint8, depth (H, W) float32 metres aligned to the
        colour image (0: no value) or None, timestamp in seconds.

        ``CameraTimeout`` when no frame comes within ``timeout_s``; ``HardwareStopped``
        when the device has gone from the USB bus.
        """
        if not self._streaming or self._rs is None:
            raise RuntimeError(
                "RealSenseDriver.capture() before activate(): call configure(), then activate()"
            )
        rs = self._rs
        try:
            frames = self._pipe.wait_for_frames(int(round(self.timeout_s * 1000)))
        except RuntimeError as exc:
            # pyrealsense2 raises the same RuntimeError for a late frame and for a device
            # that is gone; the device list tells them apart.
            try:
                present = self._device_serial in _serials(rs)
            except RuntimeError:
                present = False
            if not present:
                raise HardwareStopped(
                    f"{self._name()} is gone ({exc}); reconnect it and rerun"
                ) from None
            raise CameraTimeout(
                f"{self._name()} gave no frame within {self.timeout_s:g} s ({exc})"
            ) from None
        if self._align is not None:
            frames = self._align.process(frames)
        color = frames.get_color_frame()
        if not color:
            raise CameraTimeout(f"{self._name()} delivered a frame set without colour")
        rgb = np.array(np.asanyarray(color.get_data()), dtype=np.uint8, copy=True)
        if rgb.shape != (self.height, self.width, 3):
            raise HardwareStopped(
                f"{self._name()} delivered a {rgb.shape} colour image, not "
                f"({self.height}, {self.width}, 3); reconnect it and rerun"
            )
        depth_m = None
        if self.depth:
            depth_frame = frames.get_depth_frame()
            if not depth_frame:
                raise CameraTimeout(f"{self._name()} delivered a frame set without depth")
            raw = np.asanyarray(depth_frame.get_data())
            assert self.depth_scale is not None
            depth_m = raw.astype(np.float32) * np.float32(self.depth_scale)
            if depth_m.shape != rgb.shape[:2]:
                raise HardwareStopped(
                    f"{self._name()} delivered depth of shape {depth_m.shape}, not aligned to "
                    f"the {rgb.shape[:2]} colour image; reconnect it and rerun"
                )
        # RealSense timestamps are milliseconds.
        return Frame(rgb=rgb, depth=depth_m, timestamp=float(frames.get_timestamp()) / 1000.0)

    def _read_lens(self, rs: ModuleType, profile: Any) -> Intrinsics:
        """The colour stream's lens from a (resolved or started) pipeline profile."""
        stream = profile.get_stream(rs.stream.color).as_video_stream_profile()
        return intrinsics_from_rs(rs, stream.get_intrinsics())
