"""The camera model of a "real" capture: exposure, white balance, vignetting, optics, noise.

One model for every backend: a renderer gives the ideal display-encoded (sRGB) image of the
scene; ``apply_camera`` turns it into what an industrial camera would deliver. The work is
done on linear intensities (the sRGB curve decoded), in this order:

1. exposure gain and white-balance gains (auto-exposure and AWB settle a little differently
   at every capture);
2. vignetting: a smooth radial fall-off, ``1 - vignetting * (r / r_corner)^2``;
3. optical blur: a Gaussian point spread of ``psf_px`` (lens and demosaicing; it also
   anti-aliases renders that sample pixel centres only);
4. motion blur (optional): a line kernel of up to ``motion_blur_px`` in a random direction,
   the robot still vibrating at the capture;
5. sensor noise: shot noise (variance proportional to the signal) plus read noise, set so
   that the noise standard deviation at mid-grey (sRGB 128) is ``noise_sigma`` 8-bit levels
   and in the dark ``read_noise`` levels. Machine-vision sensors with a full well of a few
   thousand electrons per displayed level range give 1-3 levels at mid-grey.

Then the sRGB curve is applied again and the result rounded to uint8. The twin uses an
ideal camera (no call to this module).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: sRGB 128 in linear intensity, and the slope of the 8-bit encoding there and at black.
MID_GREY_LINEAR = float((((128 / 255) + 0.055) / 1.055) ** 2.4)
_SLOPE_MID = 255.0 * 1.055 / 2.4 * MID_GREY_LINEAR ** (1 / 2.4 - 1)
_SLOPE_BLACK = 255.0 * 12.92


@dataclass(frozen=True)
class SensorModel:
    """Magnitudes of the camera effects (``docs/scenarios.md``, ``cell.camera.sensor``).

    ``exposure``: max relative exposure error per capture; ``white_balance``: max relative
    gain error per colour channel; ``vignetting``: relative fall-off at the image corner;
    ``psf_px``: optical blur sigma in pixels; ``motion_blur_px``: max blur length in pixels;
    ``noise_sigma``: noise sigma at mid-grey, 8-bit levels; ``read_noise``: noise sigma in
    the dark, 8-bit levels (at most ``noise_sigma``).
    """

    exposure: float = 0.05
    white_balance: float = 0.02
    vignetting: float = 0.2
    psf_px: float = 0.6
    motion_blur_px: float = 0.0
    noise_sigma: float = 2.0
    read_noise: float = 0.8


@dataclass(frozen=True)
class CaptureSettings:
    """What one capture drew: exposure gain, white-balance gains (3,), motion blur length
    (px) and direction (radians)."""

    gain: float
    wb: tuple[float, float, float]
    blur_len_px: float
    blur_angle: float


def draw_capture(sensor: SensorModel, rng: np.random.Generator) -> CaptureSettings:
    """Seeded per-capture settings within ``sensor``'s magnitudes."""
    gain = float(1.0 + rng.uniform(-sensor.exposure, sensor.exposure))
    w = 1.0 + rng.uniform(-sensor.white_balance, sensor.white_balance, 3)
    wb = (float(w[0]), float(w[1]), float(w[2]))
    length = float(rng.uniform(0.0, sensor.motion_blur_px))
    angle = float(rng.uniform(0.0, np.pi))
    return CaptureSettings(gain, wb, length, angle)


def srgb_to_linear(v: np.ndarray) -> np.ndarray:
    """sRGB-encoded values in [0, 1] to linear intensity (float32)."""
    v = np.asarray(v, dtype=np.float32)
    return np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4).astype(np.float32)


def linear_to_srgb(v: np.ndarray) -> np.ndarray:
    """Linear intensity to sRGB-encoded values in [0, 1] (float32; clipped)."""
    v = np.clip(np.asarray(v, dtype=np.float32), 0.0, 1.0)
    out = np.where(v <= 0.0031308, v * 12.92, 1.055 * np.power(v, 1 / 2.4) - 0.055)
    return out.astype(np.float32)


def noise_std_linear(linear: np.ndarray, sensor: SensorModel) -> np.ndarray:
    """Per-pixel noise sigma in linear units: sqrt(read^2 + k * signal)."""
    read = min(sensor.read_noise, sensor.noise_sigma) / _SLOPE_BLACK
    mid = sensor.noise_sigma / _SLOPE_MID
    k = max(mid * mid - read * read, 0.0) / MID_GREY_LINEAR
    return np.sqrt(read * read + k * np.clip(linear, 0.0, None)).astype(np.float32)


def _motion_kernel(length: float, angle: float) -> np.ndarray:
    """A normalised line kernel of ``length`` px at ``angle``, anti-aliased."""
    n = int(np.ceil(length)) | 1
    k = np.zeros((n, n), np.float32)
    c = n // 2
    steps = max(4 * n, 8)
    for t in np.linspace(-length / 2, length / 2, steps):
        x, y = c + t * np.cos(angle), c + t * np.sin(angle)
        x0, y0 = int(np.floor(x)), int(np.floor(y))
        fx, fy = x - x0, y - y0
        for dx, dy, w in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy))):
            if 0 <= x0 + dx < n and 0 <= y0 + dy < n:
                k[y0 + dy, x0 + dx] += w
        for dx, dy, w in ((0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
            if 0 <= x0 + dx < n and 0 <= y0 + dy < n:
                k[y0 + dy, x0 + dx] += w
    return k / k.sum()


def apply_camera(
    rgb: np.ndarray, sensor: SensorModel, capture: CaptureSettings, rng: np.random.Generator
) -> np.ndarray:
    """The image (H, W, 3) uint8 a camera with ``sensor`` delivers of the ideal ``rgb``."""
    import cv2

    lin = srgb_to_linear(np.asarray(rgb, dtype=np.float32) / 255.0)
    lin = lin * (capture.gain * np.asarray(capture.wb, dtype=np.float32))
    H, W = lin.shape[:2]
    if sensor.vignetting > 0:
        yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
        r2 = ((xx - (W - 1) / 2) ** 2 + (yy - (H - 1) / 2) ** 2) / (
            ((W - 1) / 2) ** 2 + ((H - 1) / 2) ** 2
        )
        lin = lin * (1.0 - sensor.vignetting * r2)[..., None]
    if sensor.psf_px > 0:
        lin = cv2.GaussianBlur(lin, (0, 0), sensor.psf_px, borderType=cv2.BORDER_REFLECT)
    if capture.blur_len_px >= 1.0:
        kernel = _motion_kernel(capture.blur_len_px, capture.blur_angle)
        lin = cv2.filter2D(lin, -1, kernel, borderType=cv2.BORDER_REFLECT)
    if sensor.noise_sigma > 0:
        std = noise_std_linear(lin, sensor)
        lin = lin + std * rng.standard_normal(lin.shape, dtype=np.float32)
    return np.rint(linear_to_srgb(lin) * 255.0).astype(np.uint8)
