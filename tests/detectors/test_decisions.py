"""Decision rules: image scores, the cluster rule and its exact score, the k-of-N part rule,
part-level TPR/TNR/dt and the Figure-6-style plot."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from detectors.decisions import (
    cluster_fires,
    cluster_score,
    max_score,
    min_cluster_px,
    mm_per_px,
    part_curve,
    part_fires,
    part_score,
    percentile_score,
)


def _two_clusters() -> np.ndarray:
    """A 2x2 cluster (4 px) valued 5 and a 3x3 cluster (9 px) valued 3, apart, on zeros."""
    m = np.zeros((10, 10))
    m[1:3, 1:3] = 5.0
    m[5:8, 5:8] = 3.0
    return m


def test_max_and_percentile_on_known_arrays() -> None:
    m = np.arange(101, dtype=float).reshape(1, 101)  # 0 .. 100
    assert max_score(m) == 100.0
    assert percentile_score(m, 50.0) == 50.0
    assert percentile_score(m, 99.5) == pytest.approx(99.5)  # linear interpolation
    assert percentile_score(m, 100.0) == 100.0
    # One outlier pixel: the maximum sees it, the 99th percentile of 10 000 pixels does not.
    big = np.zeros((100, 100))
    big[0, 0] = 50.0
    assert max_score(big) == 50.0
    assert percentile_score(big, 99.0) == 0.0
    with pytest.raises(ValueError, match="percentile"):
        percentile_score(m, 101.0)
    with pytest.raises(ValueError, match="NaN"):
        max_score(np.array([[0.0, np.nan]]))


def test_cluster_fires_on_clusters_of_4_and_9_pixels() -> None:
    m = _two_clusters()
    # Above 0 both clusters are in: the 9-pixel one satisfies S <= 9, nothing S = 10.
    assert cluster_fires(m, 0.0, 9)
    assert not cluster_fires(m, 0.0, 10)
    # Above 3 (strict) only the 4-pixel cluster is left.
    assert cluster_fires(m, 3.0, 4)
    assert not cluster_fires(m, 3.0, 5)
    assert cluster_fires(m, 2.99, 5)
    # Above 5 nothing is left, even for S = 1.
    assert not cluster_fires(m, 5.0, 1)
    assert cluster_fires(m, 4.99, 1)


def test_cluster_fires_uses_8_connectivity() -> None:
    diagonal = np.eye(4)  # 4 pixels touching only at corners
    assert cluster_fires(diagonal, 0.5, 4)
    apart = np.zeros((4, 4))
    apart[0, 0] = apart[2, 2] = 1.0  # a gap of one pixel: two clusters of 1
    assert not cluster_fires(apart, 0.5, 2)


def test_cluster_score_on_two_clusters() -> None:
    m = _two_clusters()
    assert cluster_score(m, 1) == 5.0 == max_score(m)
    assert cluster_score(m, 4) == 5.0
    assert cluster_score(m, 5) == 3.0
    assert cluster_score(m, 9) == 3.0
    assert cluster_score(m, 10) == 0.0  # only the whole map (100 px of >= 0) is big enough
    assert cluster_score(m, 101) == -math.inf
    with pytest.raises(ValueError, match="min_px"):
        cluster_score(m, 0)


@settings(max_examples=60, deadline=None)
@given(
    amap=arrays(
        np.float64,
        st.tuples(st.integers(1, 7), st.integers(1, 7)),
        elements=st.integers(0, 3).map(float),  # few values: many ties
    ),
    min_px=st.integers(1, 12),
)
def test_cluster_score_agrees_with_cluster_fires(amap: np.ndarray, min_px: int) -> None:
    score = cluster_score(amap, min_px)
    assert score == -math.inf or score in amap
    values = np.unique(amap)
    probes = np.concatenate([values, (values[:-1] + values[1:]) / 2, [-1.0, 4.0, -np.inf]])
    for t in probes:
        assert cluster_fires(amap, float(t), min_px) == (t < score), (t, score)


def test_part_score_and_part_fires() -> None:
    views = [0.1, 7.0, 3.0, 7.0, 2.0]
    assert part_score(views, k=1) == 7.0
    assert part_score(views, k=2) == 7.0  # a tie: two views at 7
    assert part_score(views, k=3) == 3.0
    assert part_fires(views, 6.9, k=2)
    assert not part_fires(views, 7.0, k=2)  # strict: a view at the threshold does not fire
    assert part_fires(views, 2.9, k=3) and not part_fires(views, 3.0, k=3)
    with pytest.raises(ValueError, match="k must"):
        part_score(views, k=6)


@settings(max_examples=60, deadline=None)
@given(
    views=st.lists(st.integers(0, 4).map(float), min_size=1, max_size=16),
    k=st.integers(1, 4),
    t=st.integers(-1, 5).map(lambda i: i / 2),
)
def test_part_score_agrees_with_part_fires(views: list[float], k: int, t: float) -> None:
    k = min(k, len(views))
    assert part_fires(views, t, k) == (t < part_score(views, k))


def test_part_curve_hand_computed() -> None:
    # Normal parts score 1, 2, 3; anomalous ones 2.5 and 4. A part is anomalous when
    # score > T, so with T in {-inf, 1, 2, 2.5, 3, 4}:
    #   TPR: 2.5 > T and 4 > T  ->  1, 1, 1, 1/2, 1/2, 0
    #   TNR: normals <= T       ->  0, 1/3, 2/3, 2/3, 1, 1
    # The highest T still detecting both anomalies is 2 (2.5 > 2), where 2 of 3 normals
    # are passed: t_max = 2, dt = 2/3.
    c = part_curve([1.0, 2.0, 3.0, 2.5, 4.0], [0, 0, 0, 1, 1])
    np.testing.assert_array_equal(c.thresholds, [-np.inf, 1.0, 2.0, 2.5, 3.0, 4.0])
    np.testing.assert_allclose(c.tpr, [1, 1, 1, 0.5, 0.5, 0])
    np.testing.assert_allclose(c.tnr, [0, 1 / 3, 2 / 3, 2 / 3, 1, 1])
    assert c.t_max == 2.0
    assert c.dt == pytest.approx(2 / 3)


def test_part_curve_on_a_grid_and_separable_scores() -> None:
    # The paper's kind of sweep (integer thresholds); perfectly separable scores give dt = 1.
    c = part_curve([1.0, 2.0, 8.0, 9.0], [0, 0, 1, 1], thresholds=range(0, 11))
    assert c.t_max == 7.0  # 8 > 7, but not 8 > 8
    assert c.dt == 1.0
    # A grid that starts above the weakest anomaly: no threshold reaches TPR = 1.
    c = part_curve([1.0, 2.0, 8.0, 9.0], [0, 0, 1, 1], thresholds=[8.5, 10.0])
    assert math.isnan(c.t_max) and math.isnan(c.dt)


def test_part_curve_undefined_classes_are_nan() -> None:
    no_anomaly = part_curve([1.0, 2.0], [0, 0])
    assert np.isnan(no_anomaly.tpr).all()
    assert math.isnan(no_anomaly.t_max) and math.isnan(no_anomaly.dt)
    no_normal = part_curve([1.0, 2.0], [1, 1])
    assert np.isnan(no_normal.tnr).all() and math.isnan(no_normal.dt)
    assert no_normal.t_max == -math.inf  # every threshold at a score misses the part at it
    with pytest.raises(ValueError, match="labels"):
        part_curve([1.0, 2.0], [0, 2])


def test_min_cluster_px_worked_example() -> None:
    # 0.5 mm at 0.1 mm/px is 5 px; a kernel of 8 px makes 13 px; pi 13^2 / 4 = 132.7.
    assert min_cluster_px(0.5, 0.1, 8.0) == 133
    assert min_cluster_px(0.5, 0.1, 0.0) == 20  # pi 25 / 4 = 19.6
    assert min_cluster_px(0.6, 0.1, 0.0) == 28  # pi 36 / 4 = 28.3: rounded, not ceiled
    assert min_cluster_px(0.01, 100.0, 0.0) == 1  # never below one pixel


def test_min_cluster_px_can_reproduce_the_papers_pattern() -> None:
    # Our fit (not stated in the paper): kernel 8 px and 0.5 mm = 4.9 px at 1024, the
    # pixel doubling in size at each halving of the map, gives its S = 131, 86, 67.
    mm_1024 = 0.5 / 4.9
    got = [min_cluster_px(0.5, mm_1024 * f, 8.0) for f in (1, 2, 4)]
    assert got == [131, 86, 67]


def test_mm_per_px_pinhole() -> None:
    K = np.array([[1000.0, 0, 320], [0, 1200.0, 240], [0, 0, 1]])
    # f = 1100 px; at 0.55 m one pixel covers 550 mm / 1100 = 0.5 mm.
    assert mm_per_px(K, 0.55) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="distance"):
        mm_per_px(K, 0.0)
