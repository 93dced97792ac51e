"""Public contract checker: asserts that a Detector obeys the Prediction contract."""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from scenarios.interfaces import Detector, PartSample, Prediction, Sample, detector_level


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


def _check_prediction(
    detector: Detector, sample: Sample | PartSample, pred: Any, when: str
) -> None:
    """Assert ``pred`` is a well-formed Prediction for ``sample`` (a view or a part)."""
    who = f"detector {getattr(detector, 'name', detector)!r} ({when}) on sample {sample.id!r}"
    assert isinstance(pred, Prediction), f"{who}: predict returned {type(pred).__name__}"
    if isinstance(sample, PartSample):
        values, what = pred.point_scores, "point_scores"
        shape: tuple[int, ...] = (len(sample.points),)
        assert pred.anomaly_map is None, f"{who}: a part-level detector gives no anomaly_map"
    else:
        values, what = pred.anomaly_map, "anomaly_map"
        shape = tuple(sample.real.rgb.shape[:2])
    assert isinstance(values, np.ndarray), f"{who}: {what} is {type(values).__name__}"
    assert values.dtype == np.float32, f"{who}: {what} dtype is {values.dtype}, not float32"
    assert values.shape == shape, f"{who}: {what} shape {values.shape} != expected {shape}"
    n_bad = int(np.size(values) - np.count_nonzero(np.isfinite(values)))
    assert n_bad == 0, f"{who}: {what} has {n_bad} non-finite values"
    score = pred.score
    assert isinstance(score, float | np.floating) and not isinstance(score, bool), (
        f"{who}: score is {type(score).__name__}, not float"
    )
    assert math.isfinite(float(score)), f"{who}: score {score!r} is not finite"


def check_detector(
    detector: Detector,
    train: Sequence[Sample] | Sequence[PartSample],
    test: Sequence[Sample] | Sequence[PartSample],
) -> None:
    """Fit ``detector`` on ``train``, predict ``test``; raise AssertionError on any contract breach.

    Checks: it is a Detector with a str ``name``; its ``level`` matches the samples (views:
    ``Sample``, parts: ``PartSample``); predict before fit may raise or return, but a
    returned value must be well-formed; after fit every prediction has a finite float score
    and a float32 finite anomaly map of the real image's (H, W) (views) or one point score
    per point (parts, and no map); predicting the same sample twice gives identical
    results; neither fit nor predict mutates the samples.
    """
    assert isinstance(detector, Detector), f"{detector!r} does not implement Detector"
    assert isinstance(detector.name, str) and detector.name, f"{detector!r}: name must be a str"
    assert len(test) > 0, "check_detector needs at least one test sample"
    kind = PartSample if detector_level(detector) == "part" else Sample
    for s in [*train, *test]:
        assert isinstance(s, kind), (
            f"detector {detector.name!r} works on {kind.__name__}, got {type(s).__name__}"
        )
    train_list: list[Sample | PartSample] = list(train)
    test_list: list[Sample | PartSample] = list(test)
    train_before = copy.deepcopy(train_list)
    test_before = copy.deepcopy(test_list)

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
    for before, after in zip(train_before, train_list, strict=True):
        assert _equal(before, after), f"detector {detector.name!r}: fit mutated sample {after.id!r}"

    for sample in test_list:
        try:
            first = detector.predict(sample)
            second = detector.predict(sample)
        except Exception as exc:
            raise AssertionError(
                f"detector {detector.name!r}: predict after fit raised {exc!r} on {sample.id!r}"
            ) from exc
        _check_prediction(detector, sample, first, "after fit")
        _check_prediction(detector, sample, second, "after fit, repeated")
        for what in ("anomaly_map", "point_scores"):
            a, b = getattr(first, what), getattr(second, what)
            assert (a is None and b is None) or np.array_equal(a, b), (
                f"detector {detector.name!r}: predict is not deterministic on {sample.id!r} "
                f"({what})"
            )
        assert float(first.score) == float(second.score), (
            f"detector {detector.name!r}: predict is not deterministic on {sample.id!r} "
            f"(score {first.score!r} vs {second.score!r})"
        )
    for before, after in zip(test_before, test_list, strict=True):
        assert _equal(before, after), f"detector {detector.name!r}: predict mutated {after.id!r}"
    for before, after in zip(train_before, train_list, strict=True):
        assert _equal(before, after), f"detector {detector.name!r}: predict mutated {after.id!r}"
