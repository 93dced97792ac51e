"""The camera model: noise at the level it promises, seeded, and each effect where it acts."""

from __future__ import annotations

import numpy as np
import pytest

from sim.render.camera_model import (
    CaptureSettings,
    SensorModel,
    apply_camera,
    draw_capture,
    linear_to_srgb,
    srgb_to_linear,
)

QUIET = SensorModel(
    exposure=0.0, white_balance=0.0, vignetting=0.0, psf_px=0.0, noise_sigma=0.0, read_noise=0.0
)
NEUTRAL = CaptureSettings(1.0, (1.0, 1.0, 1.0), 0.0, 0.0)


def _flat(level: int, size: int = 160) -> np.ndarray:
    return np.full((size, size, 3), level, np.uint8)


def test_srgb_round_trip() -> None:
    v = np.linspace(0, 1, 256, dtype=np.float32)
    assert np.abs(linear_to_srgb(srgb_to_linear(v)) - v).max() < 1e-5


def test_an_ideal_sensor_changes_nothing() -> None:
    img = np.random.default_rng(1).integers(0, 256, (32, 48, 3), dtype=np.uint8)
    out = apply_camera(img, QUIET, NEUTRAL, np.random.default_rng(0))
    assert np.array_equal(out, img)


@pytest.mark.parametrize("sigma", [1.0, 2.0, 3.0])
def test_noise_at_mid_grey_is_noise_sigma(sigma: float) -> None:
    sensor = SensorModel(
        exposure=0, white_balance=0, vignetting=0, psf_px=0, noise_sigma=sigma, read_noise=0.5
    )
    out = apply_camera(_flat(128), sensor, NEUTRAL, np.random.default_rng(0)).astype(float)
    assert out.mean() == pytest.approx(128, abs=0.1)
    assert out.std() == pytest.approx(sigma, rel=0.05)


def test_noise_grows_with_signal_in_linear_terms() -> None:
    """Shot noise: in linear units the variance rises with the signal (read noise floor)."""
    sensor = SensorModel(exposure=0, white_balance=0, vignetting=0, psf_px=0)
    stds = []
    for level in (40, 128, 230):
        out = apply_camera(_flat(level), sensor, NEUTRAL, np.random.default_rng(0))
        stds.append(srgb_to_linear(out / 255.0).std())
    assert stds[0] < stds[1] < stds[2]


def test_vignetting_darkens_the_corners_only() -> None:
    sensor = SensorModel(exposure=0, white_balance=0, vignetting=0.3, psf_px=0, noise_sigma=0)
    out = apply_camera(_flat(200, 101), sensor, NEUTRAL, np.random.default_rng(0)).astype(int)
    assert out[50, 50, 0] == 200
    corner = srgb_to_linear(np.array(out[0, 0, 0] / 255.0))
    assert corner == pytest.approx(0.7 * srgb_to_linear(np.array(200 / 255.0)), rel=0.02)


def test_exposure_and_white_balance_scale_linear_light() -> None:
    cap = CaptureSettings(1.1, (1.0, 0.9, 1.05), 0.0, 0.0)
    out = apply_camera(_flat(100, 8), QUIET, cap, np.random.default_rng(0))
    lin = srgb_to_linear(out[0, 0] / 255.0)
    ref = srgb_to_linear(np.array(100 / 255.0))
    assert lin == pytest.approx(ref * 1.1 * np.array([1.0, 0.9, 1.05]), rel=0.02)


def test_motion_blur_spreads_a_point_along_a_line() -> None:
    img = np.zeros((41, 41, 3), np.uint8)
    img[20, 20] = 255
    out = apply_camera(
        img, QUIET, CaptureSettings(1.0, (1, 1, 1), 9.0, 0.0), np.random.default_rng(0)
    )
    row = out[20, :, 0]
    assert (row > 0).sum() >= 7  # spread along x (angle 0)...
    assert (out[:, 20, 0] > 0).sum() <= 2  # ...not along y


def test_capture_draws_are_seeded_and_bounded() -> None:
    s = SensorModel(exposure=0.1, white_balance=0.05, motion_blur_px=4)
    a = draw_capture(s, np.random.default_rng(3))
    assert a == draw_capture(s, np.random.default_rng(3))
    assert a != draw_capture(s, np.random.default_rng(4))
    assert abs(a.gain - 1) <= 0.1 and all(abs(w - 1) <= 0.05 for w in a.wb)
    assert 0 <= a.blur_len_px <= 4
    img = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    one = apply_camera(img, s, a, np.random.default_rng(9))
    assert np.array_equal(one, apply_camera(img, s, a, np.random.default_rng(9)))
