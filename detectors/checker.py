"""Public contract checker: asserts that a Detector obeys the Prediction contract."""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from scenarios.interfaces import Detector, Prediction, Sample


def _equal(a: Any, b: Any) -> bool:
    """Deep equality of sample contents: arrays by dtype/shape/values (NaN == NaN)."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        if not (isinstance(a, np.ndarray) and isinstance(b, np.ndarray)):
            return False
        if a.dtype != b.dtype or a.shape != b.shape:
            return False
        equal_nan = a.dtype.kind in "fc"
        return bool(np.array_equal(a, b, equal_nan=equal_nan))
    if dataclasses.is_dataclass(a) and not isinstance(a, type):
        if type(a) is not type(b):
            return False
        return all(_equal(getattr(a, f.name), getattr(b, f.name)) for f in dataclasses.fields(a))
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        if type(a) is not type(b) or len(a) != len(b):
            return False
        return all(_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return bool(a == b)


def _check_prediction(detector: Detector, sample: Sample, pred: Any, when: str) -> None:
    """Assert ``pred`` is a well-formed Prediction for ``sample``."""
    who = f"detector {getattr(detector, 'name', detector)!r} ({when}) on sample {sample.id!r}"
    assert isinstance(pred, Prediction), f"{who}: predict returned {type(pred).__name__}"
    amap = pred.anomaly_map
    assert isinstance(amap, np.ndarray), f"{who}: anomaly_map is {type(amap).__name__}"
    assert amap.dtype == np.float32, f"{who}: anomaly_map dtype is {amap.dtype}, not float32"
    hw = tuple(sample.real.rgb.shape[:2])
    assert amap.shape == hw, f"{who}: anomaly_map shape {amap.shape} != real image (H, W) {hw}"
    n_bad = int(np.size(amap) - np.count_nonzero(np.isfinite(amap)))
    assert n_bad == 0, f"{who}: anomaly_map has {n_bad} non-finite values"
    score = pred.score
    assert isinstance(score, float | np.floating) and not isinstance(score, bool), (
        f"{who}: score is {type(score).__name__}, not float"
    )
    assert math.isfinite(float(score)), f"{who}: score {score!r} is not finite"


def check_detector(detector: Detector, train: Sequence[Sample], test: Sequence[Sample]) -> None:
    """Fit ``detector`` on ``train``, predict ``test``; raise AssertionError on any contract breach.

    Checks: it is a Detector with a str ``name``; predict before fit may raise or return, but a
    returned value must be well-formed; after fit every prediction has a float32 (H, W) finite
    anomaly map of the real image's size and a finite float score; predicting the same sample
    twice gives identical results; neither fit nor predict mutates the samples.
    """
    assert isinstance(detector, Detector), f"{detector!r} does not implement Detector"
    assert isinstance(detector.name, str) and detector.name, f"{detector!r}: name must be a str"
    assert len(test) > 0, "check_detector needs at least one test sample"
    train_before = copy.deepcopy(list(train))
    test_before = copy.deepcopy(list(test))

    try:
        early = detector.predict(test[0])
    except Exception:  # noqa: BLE001 - predicting before fit may legitimately refuse
        early = None
    if early is not None:
        _check_prediction(detector, test[0], early, "before fit")

    try:
        detector.fit(train)
    except Exception as exc:
        raise AssertionError(f"detector {detector.name!r}: fit raised {exc!r}") from exc
    for before, after in zip(train_before, train, strict=True):
        assert _equal(before, after), f"detector {detector.name!r}: fit mutated sample {after.id!r}"

    for sample in test:
        try:
            first = detector.predict(sample)
            second = detector.predict(sample)
        except Exception as exc:
            raise AssertionError(
                f"detector {detector.name!r}: predict after fit raised {exc!r} on {sample.id!r}"
            ) from exc
        _check_prediction(detector, sample, first, "after fit")
        _check_prediction(detector, sample, second, "after fit, repeated")
        assert np.array_equal(first.anomaly_map, second.anomaly_map), (
            f"detector {detector.name!r}: predict is not deterministic on {sample.id!r} (map)"
        )
        assert float(first.score) == float(second.score), (
            f"detector {detector.name!r}: predict is not deterministic on {sample.id!r} "
            f"(score {first.score!r} vs {second.score!r})"
        )
    for before, after in zip(test_before, test, strict=True):
        assert _equal(before, after), f"detector {detector.name!r}: predict mutated {after.id!r}"
    for before, after in zip(train_before, train, strict=True):
        assert _equal(before, after), f"detector {detector.name!r}: predict mutated {after.id!r}"
