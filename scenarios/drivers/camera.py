"""Generic colour cameras whose lens comes from a calibration the user gives (``K``, and
OpenCV ``dist`` or None): any camera OpenCV opens (``OpenCVCamera``: webcams, UVC, video
streams and files) and GenICam industrial cameras through a GenTL producer
(``GenICamCamera`` on harvesters, ``pip install 'twincell[genicam]'``).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from types import ModuleType
from typing import Any

import cv2
import numpy as np
from numpy.typing import ArrayLike, NDArray

from scenarios.drivers.base import (
    CameraTimeout,
    Frame,
    HardwareStopped,
    Intrinsics,
    import_sdk,
)
from scenarios.interfaces import SpecError

logger = logging.getLogger(__name__)


def calibrated_lens(
    width: int, height: int, K: ArrayLike | None, dist: ArrayLike | None, camera: str
) -> Intrinsics:
    """``Intrinsics`` of a user's calibration: ``K`` (3, 3) pixels, ``dist`` OpenCV
    (k1, k2, p1, p2, k3) or None, for ``width`` x ``height`` images (``SpecError`` naming
    ``camera`` when they are missing or malformed)."""
    if K is None:
        raise SpecError(
            f"{camera}: needs its lens calibration: give K (3x3) and dist (k1, k2, p1, p2, k3)"
        )
    K_arr = np.asarray(K, dtype=np.float64)
    if K_arr.shape != (3, 3) or not np.all(np.isfinite(K_arr)):
        raise SpecError(f"{camera}: K must be a finite 3x3 matrix, got {K_arr.tolist()!r}")
    if K_arr[0, 0] <= 0 or K_arr[1, 1] <= 0 or not np.allclose(K_arr[2], [0.0, 0.0, 1.0]):
        raise SpecError(
            f"{camera}: K must be [[fx, 0, cx], [0, fy, cy], [0, 0, 1]] with fx, fy > 0, "
            f"got {K_arr.tolist()!r}"
        )
    dist_arr = None
    if dist is not None:
        dist_arr = np.asarray(dist, dtype=np.float64).reshape(-1)
        if dist_arr.shape != (5,) or not np.all(np.isfinite(dist_arr)):
            raise SpecError(
                f"{camera}: dist must be 5 finite numbers (k1, k2, p1, p2, k3) or omitted, "
                f"got {dist_arr.tolist()!r}"
            )
    if width <= 0 or height <= 0:
        raise SpecError(f"{camera}: the image size must be positive, got {width}x{height}")
    return Intrinsics(width=int(width), height=int(height), K=K_arr, dist=dist_arr)


class OpenCVCamera:
    """A camera OpenCV opens (``cv2.VideoCapture``): ``source`` is a device index or a
    path/URL; frames are ``width`` x ``height`` (the size the calibration ``K``, ``dist``
    was made at); ``timeout_s`` is passed to the backend as its open and read timeouts
    (backends that ignore them block instead).

    ``configure`` opens the source and sets the frame size; the stream runs from then on,
    so ``activate``/``deactivate`` only gate ``capture``. A device (an integer ``source``)
    buffers frames while the arm moves: each capture first discards ``flush`` of them
    (``grab``), so the frame returned was exposed after the capture was asked for.
    """

    def __init__(
        self,
        source: int | str,
        *,
        width: int,
        height: int,
        K: ArrayLike | None,
        dist: ArrayLike | None = None,
        timeout_s: float = 5.0,
        flush: int = 2,
    ) -> None:
        if not (np.isfinite(timeout_s) and timeout_s > 0):
            raise ValueError(f"OpenCVCamera: timeout_s must be positive, got {timeout_s!r}")
        if flush < 0:
            raise ValueError(f"OpenCVCamera: flush must be >= 0, got {flush!r}")
        self.source = source
        self.timeout_s = float(timeout_s)
        self.flush = int(flush) if isinstance(source, int) else 0  # a file has no backlog
        self._lens = calibrated_lens(width, height, K, dist, f"camera {source!r}")
        self._cap: Any = None
        self._active = False

    def configure(self) -> None:
        """Open the source and set the frame size (``HardwareStopped`` when it cannot be
        opened, ``SpecError`` when it reports another size than the calibration's)."""
        if self._cap is not None:
            return
        ms = int(round(self.timeout_s * 1000))
        cap = cv2.VideoCapture(
            self.source,
            cv2.CAP_ANY,
            [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms],
        )
        if not cap.isOpened():
            cap.release()
            raise HardwareStopped(
                f"OpenCV cannot open camera {self.source!r}; check that it is connected, "
                "not in use by another program, and the index or path is right"
            )
        cap.set(cv2.CAP_PROP_FRAME_WIDTH, self._lens.width)
        cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self._lens.height)
        # Some backends report 0 for sizes they do not know: then each frame is checked.
        got = (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
        if all(got) and got != self._lens.image_size:
            cap.release()
            raise self._size_error(got)
        self._cap = cap

    def activate(self) -> None:
        """Allow captures (the stream runs from ``configure``)."""
        if self._cap is None:
            raise RuntimeError("OpenCVCamera.activate() before configure(): call configure() first")
        self._active = True

    def deactivate(self) -> None:
        """Stop allowing captures; safe in any state, and twice."""
        self._active = False

    def cleanup(self) -> None:
        """Release the camera; safe in any state, and twice."""
        self._active = False
        cap, self._cap = self._cap, None
        if cap is not None:
            cap.release()

    def intrinsics(self) -> Intrinsics:
        """The calibration given to the constructor."""
        return self._lens

    def capture(self) -> Frame:
        """The next frame: rgb (H, W, 3) uint8, no depth, host time (s) of the read.

        ``CameraTimeout`` when the read fails; ``HardwareStopped`` when the capture is no
        longer open (device gone); ``SpecError`` when the frame is not the calibrated size.
        """
        if not self._active or self._cap is None:
            raise RuntimeError(
                "OpenCVCamera.capture() before activate(): call configure(), then activate()"
            )
        if not self._cap.isOpened():
            raise HardwareStopped(
                f"camera {self.source!r} is no longer open (disconnected?); reconnect it and rerun"
            )
        for _ in range(self.flush):  # frames buffered while the arm moved
            self._cap.grab()
        ok, bgr = self._cap.read()
        stamp = time.time()
        if not ok or bgr is None:
            if not self._cap.isOpened():
                raise HardwareStopped(
                    f"camera {self.source!r} closed while reading (disconnected?); reconnect "
                    "it and rerun"
                )
            raise CameraTimeout(f"camera {self.source!r} gave no frame (read failed)")
        if bgr.ndim != 3 or bgr.shape[2] != 3 or bgr.dtype != np.uint8:
            raise SpecError(
                f"camera {self.source!r} delivers {bgr.dtype} frames of shape {bgr.shape}, "
                "not 8-bit colour; set the camera to an 8-bit colour mode"
            )
        if (bgr.shape[1], bgr.shape[0]) != self._lens.image_size:
            raise self._size_error((bgr.shape[1], bgr.shape[0]))
        rgb = np.ascontiguousarray(bgr[:, :, ::-1])
        return Frame(rgb=rgb, depth=None, timestamp=stamp)

    def _size_error(self, got: tuple[int, int]) -> SpecError:
        """The error for frames of another size than the calibration's."""
        w, h = self._lens.image_size
        return SpecError(
            f"camera {self.source!r} delivers {got[0]}x{got[1]} frames, not the {w}x{h} "
            "the calibration is for; set width/height to a size the camera offers and give "
            "a calibration made at that size"
        )


#: GenICam pixel formats GenICamCamera reads, and how each becomes RGB.
_BAYER_TO_RGB = {
    "BayerRG8": cv2.COLOR_BayerRGGB2RGB,
    "BayerBG8": cv2.COLOR_BayerBGGR2RGB,
    "BayerGB8": cv2.COLOR_BayerGBRG2RGB,
    "BayerGR8": cv2.COLOR_BayerGRBG2RGB,
}
GENICAM_FORMATS = ("Mono8", "RGB8", "BGR8", *_BAYER_TO_RGB)


def genicam_to_rgb(data: NDArray[Any], width: int, height: int, fmt: str) -> NDArray[np.uint8]:
    """An (H, W, 3) uint8 RGB image from a GenICam buffer's flat ``data`` in pixel format
    ``fmt`` (one of ``GENICAM_FORMATS``; ``SpecError`` for any other)."""
    if fmt not in GENICAM_FORMATS:
        raise SpecError(
            f"the GenICam camera sends pixel format {fmt}, which twincell does not read; set "
            f"PixelFormat to one of {', '.join(GENICAM_FORMATS)}"
        )
    flat = np.asarray(data).reshape(-1)
    channels = 3 if fmt in ("RGB8", "BGR8") else 1
    if flat.dtype != np.uint8 or flat.size != width * height * channels:
        raise HardwareStopped(
            f"the GenICam camera sent {flat.size} {flat.dtype} values for a {width}x{height} "
            f"{fmt} image; check its settings, then rerun"
        )
    if fmt == "RGB8":
        return flat.reshape(height, width, 3).copy()
    if fmt == "BGR8":
        return np.ascontiguousarray(flat.reshape(height, width, 3)[:, :, ::-1])
    mono = flat.reshape(height, width)
    if fmt == "Mono8":
        return np.repeat(mono[:, :, None], 3, axis=2)
    return np.asarray(cv2.cvtColor(mono, _BAYER_TO_RGB[fmt]), dtype=np.uint8)


def _frame_trigger(nodes: Any, errors: tuple[type[BaseException], ...]) -> tuple[bool, str | None]:
    """(whether each frame waits for a trigger, its source) from a GenICam node map: the
    ``TriggerMode``/``TriggerSource`` of the ``FrameStart`` trigger (the SFNC selector; a
    camera without ``TriggerSelector``, or without a ``FrameStart`` entry in it, has its
    one trigger read), (False, None) for a camera without trigger features."""
    selector = getattr(nodes, "TriggerSelector", None)
    if selector is not None:
        try:
            selector.value = "FrameStart"
        except errors:  # no FrameStart trigger: read the one selected
            pass
    mode = getattr(nodes, "TriggerMode", None)
    if mode is None or str(mode.value) != "On":
        return False, None
    source = getattr(nodes, "TriggerSource", None)
    return True, None if source is None else str(source.value)


#: The most filled buffers a capture returns unread (a producer holds a few to a few dozen),
#: and how long it waits for each before deciding none is left (s).
_MAX_BUFFERS = 256
_DRAIN_S = 0.001


def _harvesters() -> ModuleType:
    """harvesters.core (``DriverMissing`` when harvesters is not installed)."""
    return import_sdk("genicam", "harvesters.core")


class GenICamCamera:
    """A GenICam camera (GigE Vision, USB3 Vision) through the GenTL producer ``cti``
    (the vendor's ``.cti`` file) on harvesters; ``serial`` picks one of several cameras
    (None: the first); the image size and pixel format are the camera's own settings
    (read in ``configure``), the lens is the calibration ``K``, ``dist`` given here;
    ``timeout_s`` bounds the wait for a frame.

    A free-running camera (``TriggerMode`` Off) fills buffers while the arm moves, and
    harvesters hands them out oldest first: each capture returns every filled buffer to the
    producer unread, then discards ``flush`` more frames (one whose exposure began before
    the call, while the arm may still have been settling) and returns the next, so the image
    is of the pose the robot reported. A software-triggered camera (``TriggerMode`` On,
    ``TriggerSource`` Software) is triggered once per capture after the same drain; one
    waiting for another trigger source is refused at ``configure``.

    ``configure`` opens the camera (exclusive access), ``activate`` starts acquisition,
    ``deactivate`` stops it, ``cleanup`` releases the camera and the producer.
    """

    def __init__(
        self,
        cti: str,
        *,
        serial: str | None = None,
        K: ArrayLike | None,
        dist: ArrayLike | None = None,
        timeout_s: float = 5.0,
        flush: int = 1,
    ) -> None:
        if not (np.isfinite(timeout_s) and timeout_s > 0):
            raise ValueError(f"GenICamCamera: timeout_s must be positive, got {timeout_s!r}")
        if flush < 0:
            raise ValueError(f"GenICamCamera: flush must be >= 0, got {flush!r}")
        self.cti = cti
        self.flush = int(flush)
        self.serial = serial
        self.timeout_s = float(timeout_s)
        # Validated now (size checked in configure, when the camera's size is known).
        self._K, self._dist = K, dist
        calibrated_lens(1, 1, K, dist, self._name())
        self._lens: Intrinsics | None = None
        self._harvester: Any = None
        self._ia: Any = None
        self._timeout_exc: tuple[type[BaseException], ...] = ()
        self._device_exc: tuple[type[BaseException], ...] = ()
        self._acquiring = False
        self._trigger: Any = None  # the TriggerSoftware command node, when triggered

    def _name(self) -> str:
        """How messages name this camera."""
        return f"GenICam camera {self.serial}" if self.serial else "the GenICam camera"

    def configure(self) -> None:
        """Load the producer, open the camera, read its size and pixel format
        (``SpecError`` for a missing ``.cti`` or an unsupported pixel format,
        ``HardwareStopped`` when the camera is not found or cannot be opened)."""
        core = _harvesters()
        if self._ia is not None:
            return
        if not os.path.isfile(self.cti):
            raise SpecError(
                f"no GenTL producer at {self.cti!r}; give the path of the camera vendor's .cti file"
            )
        self._timeout_exc = tuple(
            e for e in (getattr(core, "TimeoutException", None),) if isinstance(e, type)
        )
        # GenTL (transport) and GenApi (feature access) errors: both mean the device failed.
        self._device_exc = tuple(
            e
            for e in (
                getattr(core, "GenTL_GenericException", None),
                getattr(core, "GenApi_GenericException", None),
            )
            if isinstance(e, type)
        )
        open_errors: tuple[type[BaseException], ...] = (ValueError, *self._device_exc)
        h = core.Harvester()
        self._harvester = h
        try:
            h.add_file(self.cti)
            h.update()
            found = [str(getattr(d, "serial_number", "?")) for d in h.device_info_list]
            if not found or (self.serial is not None and self.serial not in found):
                want = f"GenICam camera {self.serial}" if self.serial else "GenICam camera"
                raise HardwareStopped(
                    f"no {want} found through {self.cti} (found: {', '.join(found) or 'none'}); "
                    "check the cable, the network and the serial, then rerun"
                )
            key = {"serial_number": self.serial} if self.serial is not None else None
            # harvesters' ImageAcquirer takes over Ctrl-C (its handler destroys the acquirer
            # and raises nothing): give it back, so Ctrl-C stops the run as everywhere else.
            sigint = signal.getsignal(signal.SIGINT)
            try:
                if hasattr(h, "create"):
                    self._ia = h.create(key) if key is not None else h.create()
                else:  # harvesters < 1.3.7
                    self._ia = (
                        h.create_image_acquirer(serial_number=self.serial)
                        if self.serial is not None
                        else h.create_image_acquirer(0)
                    )
            finally:
                if threading.current_thread() is threading.main_thread() and sigint is not None:
                    signal.signal(signal.SIGINT, sigint)
            nodes = self._ia.remote_device.node_map
            width, height = int(nodes.Width.value), int(nodes.Height.value)
            fmt = str(nodes.PixelFormat.value)
            triggered, source = _frame_trigger(nodes, self._device_exc)
        except HardwareStopped:
            self.cleanup()
            raise
        except open_errors as exc:
            self.cleanup()
            raise HardwareStopped(
                f"cannot open {self._name()} ({exc}); check that no other program holds it, "
                "then rerun"
            ) from None
        if fmt not in GENICAM_FORMATS:
            self.cleanup()
            raise SpecError(
                f"{self._name()} is set to pixel format {fmt}, which twincell does not read; "
                f"set PixelFormat to one of {', '.join(GENICAM_FORMATS)}"
            )
        if triggered and source != "Software":
            self.cleanup()
            raise SpecError(
                f"{self._name()} waits for a {source or 'hardware'} trigger, which twincell "
                "does not send; "
                "set TriggerMode to Off (free-running) or TriggerSource to Software"
            )
        self._trigger = nodes.TriggerSoftware if triggered else None
        self._lens = calibrated_lens(width, height, self._K, self._dist, self._name())
        logger.info(
            "configured %s: %dx%d %s, %s",
            self._name(),
            width,
            height,
            fmt,
            "software-triggered" if triggered else "free-running",
        )

    def activate(self) -> None:
        """Start acquisition (``HardwareStopped`` when the camera will not start)."""
        if self._ia is None:
            raise RuntimeError(
                "GenICamCamera.activate() before configure(): call configure() first"
            )
        if self._acquiring:
            return
        start = getattr(self._ia, "start", None) or self._ia.start_acquisition
        try:
            start()
        except self._device_exc as exc:
            raise HardwareStopped(f"{self._name()} would not start ({exc}); rerun") from None
        self._acquiring = True

    def deactivate(self) -> None:
        """Stop acquisition; safe in any state, and twice."""
        if self._acquiring and self._ia is not None:
            self._acquiring = False
            stop = getattr(self._ia, "stop", None) or self._ia.stop_acquisition
            try:
                stop()
            except self._device_exc as exc:
                logger.warning("stopping %s: %s", self._name(), exc)
        self._acquiring = False

    def cleanup(self) -> None:
        """Release the camera and the producer; safe in any state, and twice."""
        self.deactivate()
        ia, self._ia = self._ia, None
        h, self._harvester = self._harvester, None
        for obj, what in ((ia, "destroy"), (h, "reset")):
            if obj is None:
                continue
            try:
                getattr(obj, what)()
            except self._device_exc as exc:
                logger.warning("releasing %s: %s", self._name(), exc)

    def intrinsics(self) -> Intrinsics:
        """The calibration given to the constructor, at the camera's image size (after
        ``configure``)."""
        if self._lens is None:
            raise RuntimeError(
                "GenICamCamera.intrinsics() before configure(): call configure() first"
            )
        return self._lens

    def capture(self) -> Frame:
        """The next frame: rgb (H, W, 3) uint8, no depth, host time (s) of the fetch.

        ``CameraTimeout`` when none comes within ``timeout_s``; ``HardwareStopped`` when the
        transport layer fails otherwise (camera gone).
        """
        if not self._acquiring or self._ia is None or self._lens is None:
            raise RuntimeError(
                "GenICamCamera.capture() before activate(): call configure(), then activate()"
            )
        fetch = getattr(self._ia, "fetch", None) or self._ia.fetch_buffer
        try_fetch = getattr(self._ia, "try_fetch", None) or self._ia.try_fetch_buffer
        try:
            # Buffers filled before this call (while the arm moved) go back unread. try_fetch
            # also answers None at once for an incomplete buffer (it requeues it): only a
            # None after the whole wait means none is left.
            for _ in range(_MAX_BUFFERS):
                t0 = time.monotonic()
                stale = try_fetch(timeout=_DRAIN_S)
                if stale is not None:
                    stale.queue()
                elif time.monotonic() - t0 >= _DRAIN_S:
                    break
            if self._trigger is not None:  # exposed now, on our trigger: nothing to discard
                self._trigger.execute()
            else:
                for _ in range(self.flush):
                    with fetch(timeout=self.timeout_s):
                        pass
            # The buffer goes back to the producer's queue when the block ends: copy first.
            with fetch(timeout=self.timeout_s) as buffer:
                stamp = time.time()
                c = buffer.payload.components[0]
                width, height, fmt = int(c.width), int(c.height), str(c.data_format)
                data = np.array(c.data, copy=True)
        except self._timeout_exc:
            raise CameraTimeout(
                f"{self._name()} gave no frame within {self.timeout_s:g} s"
            ) from None
        except self._device_exc as exc:
            raise HardwareStopped(
                f"{self._name()} failed ({type(exc).__name__}: {exc}); check its cable or "
                "network link, then rerun"
            ) from None
        if (width, height) != self._lens.image_size:
            w, h = self._lens.image_size
            raise SpecError(
                f"{self._name()} sent a {width}x{height} image, not the {w}x{h} it was "
                "configured with; leave its Width/Height unchanged during a run"
            )
        return Frame(rgb=genicam_to_rgb(data, width, height, fmt), depth=None, timestamp=stamp)
