"""PaDiM: the detector contract, one Gaussian per position and per view, anomalies scored
above normals, save/reload giving the same maps, and weights checked at load."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

import detectors
from detectors.checker import check_detector
from detectors.padim import ALL_VIEWS, PaDiM
from detectors.testing import make_synthetic_samples
from scenarios.interfaces import SpecError

SMALL = {"weights": "random", "image_size": 64, "channels": 24, "sigma_px": 1.0}


def _views(samples: list, view: int) -> list:  # type: ignore[type-arg]
    return [dataclasses.replace(s, view_id=view) for s in samples]


def test_padim_obeys_the_detector_contract() -> None:
    train = make_synthetic_samples(4, seed=1)
    test = make_synthetic_samples(2, seed=2) + make_synthetic_samples(2, seed=3, anomalous=True)
    check_detector(detectors.create("padim", **SMALL), train, test)


def test_anomalous_images_score_above_normal_ones() -> None:
    det = PaDiM(**SMALL)
    det.fit(_views(make_synthetic_samples(12, seed=1), 0))
    normal = [det.predict(s).score for s in _views(make_synthetic_samples(6, seed=5), 0)]
    bad = _views(make_synthetic_samples(6, seed=6, anomalous=True), 0)
    preds = [det.predict(s) for s in bad]
    assert min(p.score for p in preds) > np.median(normal)
    # The map is highest on the defect: its peak lies on the ground-truth blob (dilated).
    from scipy import ndimage

    hits = 0
    for s, p in zip(bad, preds, strict=True):
        y, x = np.unravel_index(np.argmax(p.anomaly_map), p.anomaly_map.shape)
        hits += bool(ndimage.binary_dilation(s.gt_mask, iterations=4)[y, x])
    assert hits >= 5


def test_one_model_per_view_and_a_fallback_for_an_unseen_view() -> None:
    a = _views(make_synthetic_samples(3, seed=1), 0)
    b = _views(make_synthetic_samples(3, seed=2), 1)
    det = PaDiM(**SMALL)
    det.fit(a + b)
    assert set(det.stats) == {ALL_VIEWS, 0, 1}
    mean0 = det.stats[0][0]
    assert not np.allclose(mean0, det.stats[1][0])
    np.testing.assert_allclose(
        det.stats[ALL_VIEWS][0], (mean0 + det.stats[1][0]) / 2, rtol=1e-4, atol=1e-5
    )
    unseen = _views(make_synthetic_samples(1, seed=9), 7)[0]
    shared = PaDiM(**{**SMALL, "per_view": False})
    shared.fit(a + b)
    np.testing.assert_allclose(
        det.predict(unseen).anomaly_map, shared.predict(unseen).anomaly_map, rtol=1e-5
    )


def test_a_saved_model_reloads_and_gives_the_same_maps(tmp_path: Path) -> None:
    det = PaDiM(**SMALL)
    det.fit(_views(make_synthetic_samples(3, seed=1), 2))
    path = tmp_path / "padim.npz"
    det.save(path)
    again = PaDiM.load(path)
    for s in _views(make_synthetic_samples(2, seed=4, anomalous=True), 2):
        np.testing.assert_array_equal(det.predict(s).anomaly_map, again.predict(s).anomaly_map)


def test_weights_and_channels_are_checked_when_the_scenario_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TWINCELL_WEIGHTS", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(
        SpecError,
        match=r"detectors.0.params: weights: no weights for resnet18: put resnet18-f37072fd",
    ):
        detectors.validate_params("padim", {}, where="detectors.0.params")
    with pytest.raises(SpecError, match="channels: at most 448 for resnet18"):
        detectors.validate_params("padim", {"weights": "random", "channels": 500})
