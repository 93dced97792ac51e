"""Tests of the twin-residual baselines, the contract checker and the synthetic samples."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import pytest
from scipy import ndimage
from skimage.color import rgb2gray
from skimage.metrics import structural_similarity
from skimage.morphology import disk

import detectors
from detectors.checker import check_detector
from detectors.residual import TwinResidualDetector
from detectors.testing import make_synthetic_parts, make_synthetic_samples
from scenarios.interfaces import Detector, Prediction, Sample, SpecError

TRAIN = make_synthetic_samples(6, seed=1)
NORMAL = make_synthetic_samples(6, seed=2)
ANOMALOUS = make_synthetic_samples(6, seed=3, anomalous=True)
RESIDUALS = ["rgb_residual", "gradient_residual", "ssim_residual"]


def _fitted(name: str, **params: object) -> Detector:
    """A detector ``name`` fitted on the shared normal training samples."""
    det = detectors.create(name, **params)
    det.fit(TRAIN)
    return det


def test_residual_baselines_are_registered() -> None:
    """The three AVATAR Table I baselines are available under their public names."""
    assert set(RESIDUALS) <= set(detectors.available())


#: Parameters a learned detector is tested with: weights it makes itself (seeded random),
#: small inputs. Others run with their defaults.
TEST_PARAMS: dict[str, dict[str, object]] = {
    "padim": {"weights": "random", "image_size": 64, "channels": 24},
    "patchcore": {"weights": "random", "backbone": "resnet18", "image_size": 64},
    "avatar": {"weights": "random", "image_size": 56, "epochs": 2, "proj_dim": 64},
    "cosarad": {"patches": 32, "register_voxel_mm": 2.0},
}


@pytest.mark.parametrize("name", detectors.available())
def test_every_registered_detector_passes_the_contract(name: str) -> None:
    """check_detector passes on every registered detector (normal and anomalous test samples)."""
    det = detectors.create(name, **TEST_PARAMS.get(name, {}))
    if detectors.level(name) == "part":  # whole parts: fused clouds, not pairs
        train = make_synthetic_parts(3, seed=1)
        test = make_synthetic_parts(1, seed=2) + make_synthetic_parts(1, seed=3, anomalous=True)
        check_detector(det, train, test)
    else:
        check_detector(det, TRAIN, NORMAL[:3] + ANOMALOUS[:3])


@pytest.mark.parametrize("name", RESIDUALS)
def test_anomalous_scores_higher_and_map_peaks_in_blob(name: str) -> None:
    """Mean score of anomalous > normal; each anomalous map peaks on the gt blob (±2 px edge)."""
    det = _fitted(name)
    normal = [det.predict(s).score for s in NORMAL]
    anomalous = [det.predict(s).score for s in ANOMALOUS]
    assert np.mean(anomalous) > np.mean(normal)
    assert min(anomalous) > max(normal)  # this synthetic task separates perfectly
    for sample in ANOMALOUS:
        assert sample.gt_mask is not None
        amap = det.predict(sample).anomaly_map
        peak = np.unravel_index(int(np.argmax(amap)), amap.shape)
        # Edge-based residuals peak on the blob contour, which may sit just outside gt pixels.
        near_blob = ndimage.binary_dilation(sample.gt_mask, structure=disk(2))
        assert near_blob[peak], f"{name}: peak {peak} not on the blob of {sample.id}"


@pytest.mark.parametrize("name", RESIDUALS)
@pytest.mark.parametrize("dilate_px", [0, 2, 5])
def test_map_is_zero_outside_dilated_foreground(name: str, dilate_px: int) -> None:
    """Pixels outside fg_mask dilated by a disc of dilate_px are exactly 0; the band is kept."""
    det = _fitted(name, dilate_px=dilate_px)
    sample = ANOMALOUS[0]
    amap = det.predict(sample).anomaly_map
    allowed = sample.fg_mask
    if dilate_px:
        allowed = ndimage.binary_dilation(sample.fg_mask, structure=disk(dilate_px))
    assert np.all(amap[~allowed] == 0.0)
    if dilate_px:
        band = allowed & ~sample.fg_mask
        assert np.any(amap[band] > 0.0), "silhouette edge band should stay in the map"


def test_empty_foreground_gives_zero_map_and_score() -> None:
    """An empty fg_mask yields an all-zero map and score 0."""
    sample = dataclasses.replace(ANOMALOUS[0], fg_mask=np.zeros_like(ANOMALOUS[0].fg_mask))
    for name in RESIDUALS:
        pred = _fitted(name).predict(sample)
        assert pred.score == 0.0
        assert not pred.anomaly_map.any()


def test_ssim_residual_is_one_minus_skimage_ssim() -> None:
    """Unsmoothed, unfitted ssim_residual equals 1 - skimage SSIM map inside the mask."""
    det = detectors.create("ssim_residual", sigma_px=0)
    sample = ANOMALOUS[1]
    amap = det.predict(sample).anomaly_map
    real = rgb2gray(sample.real.rgb)
    twin = rgb2gray(sample.twin.rgb)
    _, ssim = structural_similarity(
        real,
        twin,
        data_range=1.0,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        full=True,
    )
    inside = ndimage.binary_dilation(sample.fg_mask, structure=disk(2))
    np.testing.assert_allclose(amap[inside], (1.0 - ssim)[inside], atol=1e-6)


def test_rgb_residual_is_channel_mean_abs_difference() -> None:
    """Unsmoothed, unfitted rgb_residual equals mean_c |real - twin| / 255 on the foreground."""
    det = detectors.create("rgb_residual", sigma_px=0.0, dilate_px=0)
    sample = ANOMALOUS[2]
    diff = np.abs(sample.real.rgb.astype(float) - sample.twin.rgb.astype(float)).mean(axis=2)
    expected = np.where(sample.fg_mask, diff / 255.0, 0.0)
    np.testing.assert_allclose(det.predict(sample).anomaly_map, expected, atol=1e-6)


def test_gradient_residual_ignores_uniform_brightness_offset() -> None:
    """A constant brightness offset leaves gradients unchanged, so the residual is 0."""
    twin = NORMAL[0].twin
    shifted = dataclasses.replace(twin, rgb=(twin.rgb.astype(np.int16) + 10).astype(np.uint8))
    sample = dataclasses.replace(NORMAL[0], real=shifted)
    pred = detectors.create("gradient_residual").predict(sample)
    assert pred.score == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("name", RESIDUALS)
def test_fit_sets_normaliser_to_99th_percentile(name: str) -> None:
    """fit stores the 99th pct of training foreground residuals; predict divides by it."""
    raw = detectors.create(name)
    assert isinstance(raw, TwinResidualDetector)
    assert raw.normaliser == 1.0
    det = _fitted(name)
    assert isinstance(det, TwinResidualDetector)
    mask = ndimage.binary_dilation(TRAIN[0].fg_mask, structure=disk(2))
    values = np.concatenate([raw.predict(s).anomaly_map[mask] for s in TRAIN])
    assert det.normaliser == pytest.approx(float(np.percentile(values, 99.0)), rel=1e-5)
    sample = ANOMALOUS[0]
    np.testing.assert_allclose(
        det.predict(sample).anomaly_map,
        raw.predict(sample).anomaly_map / det.normaliser,
        rtol=1e-5,
        atol=1e-7,
    )
    # About 1 % of normal foreground pixels exceed 1.0 after normalisation.
    frac = np.mean(np.concatenate([det.predict(s).anomaly_map[mask] for s in TRAIN]) > 1.0)
    assert 0.0 < frac <= 0.02


def test_fit_on_identical_pairs_keeps_unit_normaliser() -> None:
    """Residual-free training pairs leave the normaliser at 1.0 (no division by zero)."""
    same = [dataclasses.replace(s, real=s.twin) for s in TRAIN]
    det = detectors.create("rgb_residual")
    det.fit(same)
    assert isinstance(det, TwinResidualDetector) and det.normaliser == 1.0


def test_fit_rejects_anomalous_samples() -> None:
    """fit refuses labelled anomalies: it must learn from normal samples only."""
    with pytest.raises(ValueError, match="anomalous"):
        detectors.create("ssim_residual").fit(ANOMALOUS[:1])


def test_mismatched_sizes_raise() -> None:
    """A twin of a different size than the real image is an error, not a silent crop."""
    sample = NORMAL[0]
    small = dataclasses.replace(sample.twin, rgb=sample.twin.rgb[:-1])
    with pytest.raises(ValueError, match="differ in size"):
        detectors.create("rgb_residual").predict(dataclasses.replace(sample, twin=small))


def test_non_square_images_keep_their_shape() -> None:
    """Maps follow the real image's (H, W) for non-square images (size is (W, H))."""
    train = make_synthetic_samples(2, size=(48, 32), seed=4)
    test = make_synthetic_samples(2, size=(48, 32), seed=5, anomalous=True)
    assert test[0].real.rgb.shape == (32, 48, 3)
    for name in RESIDUALS:
        check_detector(detectors.create(name), train, test)


@pytest.mark.parametrize(
    ("param", "value"),
    [
        ("sigma_px", -1.0),
        ("sigma_px", float("nan")),
        ("sigma_px", "2"),
        ("dilate_px", -1),
        ("dilate_px", 1.5),
        ("dilate_px", True),
    ],
)
def test_bad_params_raise_spec_error_naming_param(param: str, value: object) -> None:
    """Invalid sigma_px / dilate_px raise SpecError naming the parameter."""
    with pytest.raises(SpecError, match=param):
        detectors.create("rgb_residual", **{param: value})


def test_synthetic_samples_are_seeded_and_well_formed() -> None:
    """Same seed -> identical samples; labels agree with gt masks; blobs lie in the disc."""
    a = make_synthetic_samples(3, seed=7, anomalous=True)
    b = make_synthetic_samples(3, seed=7, anomalous=True)
    for x, y in zip(a, b, strict=True):
        assert np.array_equal(x.real.rgb, y.real.rgb)
        assert x.gt_mask is not None and x.gt_mask.any() and x.label == 1
        assert not (x.gt_mask & ~x.fg_mask).any()
        assert np.array_equal(x.real.T_base_cam, np.eye(4))
        assert x.real.rgb.dtype == np.uint8 and x.fg_mask.dtype == bool
    for s in make_synthetic_samples(2, seed=7):
        assert s.label == 0 and s.gt_mask is not None and not s.gt_mask.any()
    assert not np.array_equal(a[0].real.rgb, make_synthetic_samples(1, seed=8)[0].real.rgb)


class _Bad:
    """Configurable misbehaving detector for checker tests."""

    name = "bad"

    def __init__(self, fault: str) -> None:
        """Pick the contract breach: dtype, shape, nan, score, random or mutate."""
        self.fault = fault
        self.calls = 0

    def fit(self, samples: Sequence[Sample]) -> None:
        """Optionally mutate the training samples in place."""
        if self.fault == "mutate":
            samples[0].real.rgb[0, 0, 0] ^= 1

    def predict(self, sample: Sample) -> Prediction:
        """Return a prediction broken according to ``fault``."""
        h, w = sample.real.rgb.shape[:2]
        amap = np.zeros((h, w), dtype=np.float32)
        score: float = 0.0
        self.calls += 1
        if self.fault == "dtype":
            return Prediction(score=0.0, anomaly_map=amap.astype(np.float64))
        if self.fault == "shape":
            amap = np.zeros((h, w + 1), dtype=np.float32)
        if self.fault == "nan":
            amap[0, 0] = np.nan
        if self.fault == "score":
            score = float("inf")
        if self.fault == "random":
            amap[0, 0] = float(self.calls)
        return Prediction(score=score, anomaly_map=amap)


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        ("dtype", "float32"),
        ("shape", "shape"),
        ("nan", "non-finite"),
        ("score", "not finite"),
        ("random", "deterministic"),
        ("mutate", "mutated"),
    ],
)
def test_checker_catches_contract_breaches(fault: str, message: str) -> None:
    """check_detector raises AssertionError with a clear message for each kind of breach."""
    train = make_synthetic_samples(2, size=(16, 16), seed=9)
    test = make_synthetic_samples(1, size=(16, 16), seed=10)
    with pytest.raises(AssertionError, match=message):
        check_detector(_Bad(fault), train, test)
