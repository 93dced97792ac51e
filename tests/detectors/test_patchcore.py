"""PatchCore: the detector contract, the greedy coreset, anomalies above normals."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy import ndimage

import detectors
from detectors.patchcore import PatchCore, greedy_coreset
from detectors.testing import make_synthetic_samples
from scenarios.interfaces import SpecError

SMALL = {"weights": "random", "backbone": "resnet18", "image_size": 64, "embed_dim": 64}


def test_greedy_coreset_covers_the_set_farthest_first() -> None:
    rng = np.random.default_rng(0)
    blob = rng.normal(0.0, 0.01, (200, 3))
    outliers = np.array([[5.0, 0, 0], [-5.0, 0, 0], [0, 5.0, 0]])
    x = np.concatenate([blob, outliers])
    idx = greedy_coreset(x, 4, projection_dim=8, seed=1)
    assert len(set(idx.tolist())) == 4
    # Three of the four are the far outliers (the first pick is random, then farthest).
    assert {200, 201, 202} <= set(idx.tolist())
    np.testing.assert_array_equal(idx, greedy_coreset(x, 4, projection_dim=8, seed=1))
    # Coverage: every point lies within the largest selection gap of a chosen one.
    full = greedy_coreset(x, 50, projection_dim=8, seed=1)
    d = np.linalg.norm(x[:, None] - x[full][None], axis=2).min(axis=1)
    assert d.max() < 0.05


def test_the_memory_bank_is_the_coreset_fraction() -> None:
    det = PatchCore(**{**SMALL, "coreset_fraction": 0.25})
    det.fit(make_synthetic_samples(3, seed=1))
    h, w = det.grid
    assert det.memory is not None
    assert det.memory.shape == (int(np.ceil(0.25 * 3 * h * w)), 64)


def test_anomalous_images_score_above_normal_ones() -> None:
    # 128 px: a 16 x 16 grid of layer-2 patches, fine enough to place the 64 px blob.
    det = PatchCore(**{**SMALL, "image_size": 128})
    det.fit(make_synthetic_samples(8, seed=1))
    normal = [det.predict(s).score for s in make_synthetic_samples(6, seed=5)]
    bad = make_synthetic_samples(6, seed=6, anomalous=True)
    preds = [det.predict(s) for s in bad]
    assert min(p.score for p in preds) > np.median(normal)
    hits = 0
    for s, p in zip(bad, preds, strict=True):
        y, x = np.unravel_index(np.argmax(p.anomaly_map), p.anomaly_map.shape)
        hits += bool(ndimage.binary_dilation(s.gt_mask, iterations=4)[y, x])
    assert hits >= 5


def test_it_uses_the_real_image_only() -> None:
    """The twin does not change PatchCore's answer (an unsupervised, real-only baseline)."""
    det = PatchCore(**SMALL)
    det.fit(make_synthetic_samples(3, seed=1))
    s = make_synthetic_samples(1, seed=2, anomalous=True)[0]
    other = dataclasses.replace(s, twin=dataclasses.replace(s.twin, rgb=s.twin.rgb * 0))
    np.testing.assert_array_equal(det.predict(s).anomaly_map, det.predict(other).anomaly_map)


def test_parameters_are_checked_at_load() -> None:
    with pytest.raises(SpecError, match="embed_dim: must be even"):
        detectors.validate_params("patchcore", {"weights": "random", "embed_dim": 65})
