"""Tests of the anomaly-detection metrics against hand-computed values and a slow reference."""

from __future__ import annotations

import math
import warnings
from collections import deque
from collections.abc import Sequence

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray

from scenarios.metrics import (
    METRIC_NAMES,
    aupro,
    auroc,
    average_precision,
    compute_metrics,
    f1_max,
)

# ----------------------------------------------------------------------------------------------
# Image-level metrics, computed by hand
# ----------------------------------------------------------------------------------------------


def test_metric_names() -> None:
    assert METRIC_NAMES == ("i_auroc", "i_ap", "i_f1max", "p_auroc", "p_ap", "p_f1max", "aupro")


def test_image_level_hand_case() -> None:
    labels = [0, 0, 1, 1]
    scores = [0.1, 0.4, 0.35, 0.8]
    # AUROC = P(score_pos > score_neg) over the 4 (pos, neg) pairs:
    #   0.35>0.1 yes, 0.35>0.4 no, 0.8>0.1 yes, 0.8>0.4 yes  -> 3/4.
    assert auroc(labels, scores) == pytest.approx(0.75)
    # Thresholds, descending: (TP, FP) -> (P, R)
    #   0.8 : (1, 0) -> (1,   1/2)
    #   0.4 : (1, 1) -> (1/2, 1/2)
    #   0.35: (2, 1) -> (2/3, 1)
    #   0.1 : (2, 2) -> (1/2, 1)
    # AP = sum_n (R_n - R_{n-1}) P_n = 1/2 * 1 + 0 * 1/2 + 1/2 * 2/3 + 0 = 5/6.
    assert average_precision(labels, scores) == pytest.approx(5 / 6)
    # F1 = 2PR/(P+R): 2/3, 1/2, 2*(2/3)/(5/3) = 4/5, 2/3 -> max 4/5.
    assert f1_max(labels, scores) == pytest.approx(0.8)


def test_image_level_hand_case_with_tie() -> None:
    labels = [0, 1, 0, 1, 1]
    scores = [0.2, 0.5, 0.5, 0.9, 0.1]
    # Positives {0.5, 0.9, 0.1}, negatives {0.2, 0.5}; a tie counts 1/2:
    #   0.5: 1 + 1/2; 0.9: 1 + 1; 0.1: 0 + 0  -> 3.5 / 6 = 7/12.
    assert auroc(labels, scores) == pytest.approx(7 / 12)
    # Thresholds: (TP, FP) -> (P, R)
    #   0.9: (1, 0) -> (1,   1/3)
    #   0.5: (2, 1) -> (2/3, 2/3)   (the tied pair enters together)
    #   0.2: (2, 2) -> (1/2, 2/3)
    #   0.1: (3, 2) -> (3/5, 1)
    # AP = 1/3 * 1 + 1/3 * 2/3 + 0 + 1/3 * 3/5 = 1/3 + 2/9 + 1/5 = 34/45.
    assert average_precision(labels, scores) == pytest.approx(34 / 45)
    # F1: 1/2, 2/3, 2*(1/2)(2/3)/(7/6) = 4/7, 2*(3/5)/(8/5) = 3/4 -> max 3/4.
    assert f1_max(labels, scores) == pytest.approx(0.75)


def test_f1_max_guards_zero_precision_and_recall() -> None:
    # At threshold 0.9 only the negative is flagged: P = R = 0 (0/0 must give F1 = 0, no
    # warning); at 0.1 both are flagged: P = 1/2, R = 1 -> F1 = 2/3.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert f1_max([1, 0], [0.1, 0.9]) == pytest.approx(2 / 3)
        assert auroc([1, 0], [0.1, 0.9]) == pytest.approx(0.0)
        assert average_precision([1, 0], [0.1, 0.9]) == pytest.approx(0.5)


def test_perfect_separation_gives_one() -> None:
    labels = [0, 0, 0, 1, 1]
    scores = [0.0, 0.2, 0.1, 0.7, 0.9]
    assert auroc(labels, scores) == 1.0
    assert average_precision(labels, scores) == 1.0
    assert f1_max(labels, scores) == 1.0


@pytest.mark.parametrize("labels", [[0, 0, 0], [1, 1, 1], [True, True], []])
def test_single_class_returns_nan(labels: list[int]) -> None:
    scores = np.linspace(0.0, 1.0, len(labels))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert math.isnan(auroc(labels, scores))
        assert math.isnan(average_precision(labels, scores))
        assert math.isnan(f1_max(labels, scores))


def test_binary_input_validation() -> None:
    with pytest.raises(ValueError, match="does not match"):
        auroc([0, 1, 1], [0.1, 0.2])
    with pytest.raises(ValueError, match="1D"):
        auroc([[0, 1]], [[0.1, 0.2]])
    with pytest.raises(ValueError, match="binary"):
        average_precision([0, 2], [0.1, 0.2])
    with pytest.raises(ValueError, match="finite"):
        f1_max([0, 1], [0.1, float("nan")])


# ----------------------------------------------------------------------------------------------
# AUPRO, computed by hand
# ----------------------------------------------------------------------------------------------


def _two_region_case() -> tuple[NDArray[np.bool_], NDArray[np.float64]]:
    """One 4x4 image: region A (2 px, top-left) and region B (2x2, bottom-right), 10 normal."""
    mask = np.array(
        [
            [1, 1, 0, 0],
            [0, 0, 0, 0],
            [0, 0, 1, 1],
            [0, 0, 1, 1],
        ],
        dtype=bool,
    )
    amap = np.array(
        [
            [0.9, 0.5, 0.7, 0.55],
            [0.4, 0.3, 0.1, 0.1],
            [0.1, 0.1, 0.8, 0.8],
            [0.1, 0.1, 0.6, 0.2],
        ]
    )
    return mask, amap


def test_aupro_hand_case_two_regions() -> None:
    mask, amap = _two_region_case()
    # Regions: A = {0.9, 0.5} (2 px), B = {0.8, 0.8, 0.6, 0.2} (4 px); 10 normal pixels with
    # scores {0.7, 0.55, 0.4, 0.3, 0.1 x 6}. PRO = mean over regions of the detected fraction.
    #   t     FPR    A     B     PRO
    #   0.9   0      1/2   0     0.25
    #   0.8   0      1/2   2/4   0.5
    #   0.7   0.1    1/2   2/4   0.5
    #   0.6   0.1    1/2   3/4   0.625
    #   0.55  0.2    1/2   3/4   0.625
    #   0.5   0.2    1     3/4   0.875
    #   0.4   0.3    1     3/4   0.875   <- FPR reaches the 0.3 limit exactly
    #   (0.3  0.4 ... beyond the limit)
    # Curve from (0, 0): the vertical steps at FPR 0, 0.1, 0.2 have no area, so
    #   area = 0.1 * 0.5 + 0.1 * 0.625 + 0.1 * 0.875 = 0.2;  AUPRO = 0.2 / 0.3 = 2/3.
    assert aupro([mask], [amap]) == pytest.approx(2 / 3, abs=1e-12)
    assert aupro(mask[None], amap[None]) == pytest.approx(2 / 3, abs=1e-12)
    # PRO is a mean over regions, not a pixel-weighted overlap: with one pixel-weighted "region"
    # the plateau values would be 1/6, 2/6, 3/6, 4/6 ... and the answer would differ.
    # Splitting the image into two 2x4 images (A in the top half, B in the bottom) pools the
    # regions and the normal pixels across images, so the value is unchanged.
    assert aupro([mask[:2], mask[2:]], [amap[:2], amap[2:]]) == pytest.approx(2 / 3, abs=1e-12)


def test_aupro_two_region_curve_beyond_limit() -> None:
    mask, amap = _two_region_case()
    # Continuing the table: 0.3 -> (0.4, 0.875), 0.2 -> (0.4, 1.0), 0.1 -> (1.0, 1.0).
    # fpr_limit = 0.4: area = 0.2 + 0.1 * 0.875 = 0.2875 -> 0.2875 / 0.4.
    assert aupro([mask], [amap], fpr_limit=0.4) == pytest.approx(0.2875 / 0.4, abs=1e-12)
    # fpr_limit = 1: area = 0.2875 + 0.6 * 1.0 = 0.8875.
    assert aupro([mask], [amap], fpr_limit=1.0) == pytest.approx(0.8875, abs=1e-12)
    # fpr_limit = 0.15 cuts the horizontal segment (0.1, 0.625)-(0.2, 0.625) in half:
    # area = 0.1 * 0.5 + 0.05 * 0.625 = 0.08125.
    assert aupro([mask], [amap], fpr_limit=0.15) == pytest.approx(0.08125 / 0.15, abs=1e-12)


def _one_region_case(
    region_low: float, normal_high: float
) -> tuple[NDArray[np.bool_], NDArray[np.float64]]:
    """A 4x4 image with one 6-px region (3 px at 0.9, 3 px at ``region_low``) and 10 normal
    pixels (5 at ``normal_high``, 5 at 0.1)."""
    mask = np.array(
        [
            [1, 1, 1, 1],
            [1, 1, 0, 0],
            [0, 0, 0, 0],
            [0, 0, 0, 0],
        ],
        dtype=bool,
    )
    amap = np.full((4, 4), 0.1)
    amap[0, :3] = 0.9
    amap[0, 3] = amap[1, 0] = amap[1, 1] = region_low
    amap[1, 2:] = amap[2, :3] = normal_high  # 2 + 3 = 5 normal pixels
    return mask, amap


def test_aupro_interpolates_at_the_fpr_limit() -> None:
    # The normal pixels at 0.5 and the region's low half (0.4) enter at separate thresholds:
    #   (0, 0) -> 0.9: (0, 0.5) -> 0.5: (0.5, 0.5) -> 0.4: (0.5, 1) -> 0.1: (1, 1).
    # The first threshold past FPR 0.3 is at FPR 0.5; the segment (0, 0.5)-(0.5, 0.5) is cut at
    # 0.3: area = 0.3 * 0.5 = 0.15 -> AUPRO 0.5. (Keeping only the points with FPR <= 0.3
    # would give 0.)
    mask, amap = _one_region_case(region_low=0.4, normal_high=0.5)
    assert aupro([mask], [amap]) == pytest.approx(0.5, abs=1e-12)


def test_aupro_ties_form_one_threshold_and_are_interpolated() -> None:
    # Now the region's low half and 5 normal pixels share the score 0.5: one threshold, so the
    # curve jumps diagonally (0, 0.5) -> (0.5, 1.0) and is interpolated at FPR 0.3:
    #   PRO(0.3) = 0.5 + 0.5 * 0.3 / 0.5 = 0.8;  area = 0.3 * (0.5 + 0.8) / 2 = 0.195
    #   AUPRO = 0.195 / 0.3 = 0.65.
    mask, amap = _one_region_case(region_low=0.5, normal_high=0.5)
    assert aupro([mask], [amap]) == pytest.approx(0.65, abs=1e-12)
    # Other limits on the same diagonal: PRO(0.2) = 0.7 -> 0.2 * 1.2 / 2 / 0.2 = 0.6;
    # at 0.5: 0.5 * 1.5 / 2 / 0.5 = 0.75; at 1: (0.375 + 0.5 * 1) / 1 = 0.875.
    assert aupro([mask], [amap], fpr_limit=0.2) == pytest.approx(0.6, abs=1e-12)
    assert aupro([mask], [amap], fpr_limit=0.5) == pytest.approx(0.75, abs=1e-12)
    assert aupro([mask], [amap], fpr_limit=1.0) == pytest.approx(0.875, abs=1e-12)
    # Breaking the tie either way gives the pessimistic / optimistic staircase instead.
    mask, amap = _one_region_case(region_low=0.5 - 1e-9, normal_high=0.5)
    assert aupro([mask], [amap]) == pytest.approx(0.5, abs=1e-12)
    mask, amap = _one_region_case(region_low=0.5 + 1e-9, normal_high=0.5)
    assert aupro([mask], [amap]) == pytest.approx(1.0, abs=1e-12)


def test_aupro_regions_are_8_connected() -> None:
    # The three anomalous pixels touch only diagonally between (0, 0) and (1, 1): one region of
    # 3 px with 8-connectivity (two regions, {(0,0)} and {(1,1),(1,2)}, with 4-connectivity).
    mask = np.zeros((4, 4), dtype=bool)
    mask[0, 0] = mask[1, 1] = mask[1, 2] = True
    amap = np.zeros((4, 4))
    amap[0, 0] = 1.0
    # Curve: (0, 0) -> t=1: (0, 1/3) -> t=0: (1, 1). PRO(0.3) = 1/3 + 0.3 * 2/3 = 8/15.
    # AUPRO = (1/3 + 8/15) / 2 = 13/30. (4-connectivity would give (0.5 + 0.65) / 2 = 0.575.)
    assert aupro([mask], [amap]) == pytest.approx(13 / 30, abs=1e-12)


def test_aupro_perfect_map_is_one() -> None:
    rng = np.random.default_rng(0)
    masks = rng.random((3, 16, 16)) < 0.2
    assert aupro(masks, masks.astype(np.float64)) == pytest.approx(1.0)
    assert aupro(masks, masks * 5.0 + rng.random(masks.shape)) == pytest.approx(1.0)


def test_aupro_nan_cases_and_validation() -> None:
    amap = np.random.default_rng(0).random((2, 4, 4))
    assert math.isnan(aupro(np.zeros((2, 4, 4), dtype=bool), amap))  # no region
    assert math.isnan(aupro(np.ones((2, 4, 4), dtype=bool), amap))  # no normal pixel
    assert math.isnan(aupro([], []))
    with pytest.raises(ValueError, match="shape"):
        aupro([np.zeros((4, 4), bool)], [np.zeros((4, 5))])
    with pytest.raises(ValueError, match="1 gt_masks but 2 anomaly_maps"):
        aupro([np.zeros((4, 4), bool)], [np.zeros((4, 4))] * 2)
    with pytest.raises(ValueError, match="N, H, W"):
        aupro(np.zeros((4, 4), bool), np.zeros((4, 4)))
    with pytest.raises(ValueError, match="fpr_limit"):
        aupro([np.eye(4, dtype=bool)], [np.eye(4)], fpr_limit=0.0)
    with pytest.raises(ValueError, match="finite"):
        aupro([np.eye(4, dtype=bool)], [np.full((4, 4), np.nan)])


# ----------------------------------------------------------------------------------------------
# compute_metrics
# ----------------------------------------------------------------------------------------------


def _random_dataset(
    seed: int, n: int = 6, size: int = 24
) -> tuple[NDArray[np.int64], NDArray[np.float64], NDArray[np.bool_], NDArray[np.float64]]:
    """Images with rectangular defects on half of them and noisy, informative anomaly maps."""
    rng = np.random.default_rng(seed)
    masks = np.zeros((n, size, size), dtype=bool)
    for i in range(0, n, 2):
        for _ in range(2):
            r, c = rng.integers(0, size - 4, 2)
            h, w = rng.integers(1, 5, 2)
            masks[i, r : r + h, c : c + w] = True
    maps = rng.random(masks.shape) + 0.8 * masks
    labels = masks.any(axis=(1, 2)).astype(np.int64)
    scores = maps.max(axis=(1, 2)) + 0.3 * rng.random(n)
    return labels, scores, masks, maps


def test_compute_metrics_keys_and_pixel_pooling() -> None:
    labels, scores, masks, maps = _random_dataset(1)
    out = compute_metrics(labels, scores, masks, maps)
    assert tuple(out) == METRIC_NAMES
    assert all(isinstance(v, float) for v in out.values())
    # Pixel metrics pool all pixels of all images (images may differ in size).
    list_masks = [masks[0], masks[1][:10], masks[2][:, 5:], masks[3]]
    list_maps = [maps[0], maps[1][:10], maps[2][:, 5:], maps[3]]
    out = compute_metrics(labels[:4], scores[:4], list_masks, list_maps)
    flat_y = np.concatenate([m.ravel() for m in list_masks])
    flat_s = np.concatenate([a.ravel() for a in list_maps])
    assert out["p_auroc"] == auroc(flat_y, flat_s)
    assert out["p_ap"] == average_precision(flat_y, flat_s)
    assert out["p_f1max"] == f1_max(flat_y, flat_s)
    assert out["i_auroc"] == auroc(labels[:4], scores[:4])
    assert out["aupro"] == aupro(list_masks, list_maps)


def test_compute_metrics_perfect_detector() -> None:
    _, _, masks, _ = _random_dataset(2)
    labels = masks.any(axis=(1, 2)).astype(np.int64)
    out = compute_metrics(labels, labels * 2.0 + 1.0, masks, masks * 1.0)
    assert out == {name: pytest.approx(1.0) for name in METRIC_NAMES}


def test_compute_metrics_all_normal_is_nan() -> None:
    masks = np.zeros((3, 8, 8), dtype=bool)
    maps = np.linspace(0.0, 1.0, masks.size).reshape(masks.shape)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = compute_metrics([0, 0, 0], [0.1, 0.2, 0.3], masks, maps)
    assert all(math.isnan(v) for v in out.values())


def test_compute_metrics_validation() -> None:
    labels, scores, masks, maps = _random_dataset(3, n=4)
    with pytest.raises(ValueError, match="labels"):
        compute_metrics(labels, scores[:3], masks, maps)
    with pytest.raises(ValueError, match="4 labels but 3 gt_masks"):
        compute_metrics(labels, scores, masks[:3], maps[:3])
    with pytest.raises(ValueError, match="4 gt_masks but 3 anomaly_maps"):
        compute_metrics(labels, scores, masks, maps[:3])
    with pytest.raises(ValueError, match=r"gt_masks\[1\] shape \(24, 24\) != anomaly_maps\[1\]"):
        compute_metrics(labels, scores, list(masks), [maps[0], maps[1][:5], maps[2], maps[3]])


def test_monotone_transform_leaves_all_metrics_unchanged() -> None:
    labels, scores, masks, maps = _random_dataset(4)
    base = compute_metrics(labels, scores, masks, maps)
    for f in (np.exp, lambda x: x * 1000.0, lambda x: x**3 - 7.0):
        out = compute_metrics(labels, f(scores), masks, f(maps))
        assert out == {k: pytest.approx(v, rel=1e-12, abs=1e-12) for k, v in base.items()}


def test_shifting_one_map_changes_aupro() -> None:
    # Without any per-image / min-max normalisation, adding a constant to one image's map moves
    # its pixels relative to the other images' pixels and so changes the pooled metrics.
    _, _, masks, maps = _random_dataset(5)
    shifted = maps.copy()
    shifted[1] += 0.5  # image 1 is defect-free: its normal pixels now rank higher
    assert aupro(masks, shifted) < aupro(masks, maps) - 1e-3

    # Per-image min-max normalisation would have erased the shift: both give the same value.
    def minmax(a: NDArray[np.float64]) -> NDArray[np.float64]:
        lo = a.min(axis=(1, 2), keepdims=True)
        hi = a.max(axis=(1, 2), keepdims=True)
        return (a - lo) / (hi - lo)

    assert aupro(masks, minmax(shifted)) == pytest.approx(aupro(masks, minmax(maps)))


# ----------------------------------------------------------------------------------------------
# Properties and a slow reference implementation
# ----------------------------------------------------------------------------------------------


def _components_8(mask: NDArray[np.bool_]) -> list[list[tuple[int, int]]]:
    """Connected components of ``mask`` under 8-connectivity, by breadth-first search."""
    seen = np.zeros_like(mask, dtype=bool)
    h, w = mask.shape
    comps = []
    for r0 in range(h):
        for c0 in range(w):
            if not mask[r0, c0] or seen[r0, c0]:
                continue
            comp = []
            queue = deque([(r0, c0)])
            seen[r0, c0] = True
            while queue:
                r, c = queue.popleft()
                comp.append((r, c))
                for dr in (-1, 0, 1):
                    for dc in (-1, 0, 1):
                        rr, cc = r + dr, c + dc
                        if 0 <= rr < h and 0 <= cc < w and mask[rr, cc] and not seen[rr, cc]:
                            seen[rr, cc] = True
                            queue.append((rr, cc))
            comps.append(comp)
    return comps


def reference_aupro(
    masks: Sequence[NDArray[np.bool_]],
    maps: Sequence[NDArray[np.float64]],
    fpr_limit: float = 0.3,
) -> float:
    """Direct definition: one (FPR, PRO) point per distinct score, trapezoid to fpr_limit."""
    regions = [(i, comp) for i, m in enumerate(masks) for comp in _components_8(m)]
    num_normal = sum(int((~m).sum()) for m in masks)
    if not regions or num_normal == 0:
        return float("nan")
    thresholds = sorted({float(v) for a in maps for v in a.ravel()}, reverse=True)
    xs, ys = [0.0], [0.0]
    for t in thresholds:
        false_pos = sum(int(((a >= t) & ~m).sum()) for m, a in zip(masks, maps, strict=True))
        overlaps = [sum(maps[i][p] >= t for p in comp) / len(comp) for i, comp in regions]
        xs.append(false_pos / num_normal)
        ys.append(sum(overlaps) / len(overlaps))
    area = 0.0
    for x0, y0, x1, y1 in zip(xs[:-1], ys[:-1], xs[1:], ys[1:], strict=True):
        if x0 >= fpr_limit:
            break
        if x1 <= fpr_limit:
            area += (x1 - x0) * (y0 + y1) / 2
        else:
            y_limit = y0 + (y1 - y0) * (fpr_limit - x0) / (x1 - x0)
            area += (fpr_limit - x0) * (y0 + y_limit) / 2
            break
    return area / fpr_limit


def test_reference_reproduces_hand_cases() -> None:
    mask, amap = _two_region_case()
    assert reference_aupro([mask], [amap]) == pytest.approx(2 / 3, abs=1e-12)
    mask, amap = _one_region_case(region_low=0.5, normal_high=0.5)
    assert reference_aupro([mask], [amap]) == pytest.approx(0.65, abs=1e-12)


@pytest.mark.parametrize("seed", range(8))
def test_aupro_matches_reference_on_random_images(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 4))
    shapes = [tuple(int(v) for v in rng.integers(3, 9, 2)) for _ in range(n)]
    masks = [rng.random(s) < rng.uniform(0.1, 0.5) for s in shapes]
    if seed % 2:  # continuous scores (no ties)
        maps = [rng.random(s) + 0.5 * m for s, m in zip(shapes, masks, strict=True)]
    else:  # coarse scores with many ties between normal and anomalous pixels
        maps = [rng.integers(0, 4, s) + 1.0 * m for s, m in zip(shapes, masks, strict=True)]
    for fpr_limit in (0.05, 0.3, 0.55, 1.0):
        expected = reference_aupro(masks, maps, fpr_limit)
        assert aupro(masks, maps, fpr_limit) == pytest.approx(expected, abs=1e-9)


_image_batches = st.integers(1, 3).flatmap(
    lambda n: st.tuples(
        hnp.arrays(np.bool_, (n, 4, 5)),
        hnp.arrays(np.float64, (n, 4, 5), elements=st.sampled_from([0.0, 0.25, 0.5, 1.0, 2.0])),
    )
)


@settings(max_examples=60, deadline=None)
@given(batch=_image_batches, fpr_limit=st.sampled_from([0.1, 0.3, 0.7, 1.0]))
def test_aupro_matches_reference_property(
    batch: tuple[NDArray[np.bool_], NDArray[np.float64]], fpr_limit: float
) -> None:
    masks, maps = batch
    value = aupro(masks, maps, fpr_limit)
    expected = reference_aupro(list(masks), list(maps), fpr_limit)
    if math.isnan(expected):
        assert math.isnan(value)
    else:
        assert value == pytest.approx(expected, abs=1e-9)


@settings(max_examples=100, deadline=None)
@given(
    batch=_image_batches,
    fpr_limit=st.floats(min_value=0.01, max_value=1.0),
)
def test_aupro_in_unit_interval(
    batch: tuple[NDArray[np.bool_], NDArray[np.float64]], fpr_limit: float
) -> None:
    masks, maps = batch
    value = aupro(masks, maps, fpr_limit)
    has_region, has_normal = masks.any(), not masks.all()
    if has_region and has_normal:
        assert -1e-12 <= value <= 1.0 + 1e-12
    else:
        assert math.isnan(value)


@settings(max_examples=100, deadline=None)
@given(
    data=st.integers(2, 30).flatmap(
        lambda n: st.tuples(
            hnp.arrays(np.int64, n, elements=st.integers(0, 1)),
            hnp.arrays(np.float64, n, elements=st.sampled_from([-1.0, 0.0, 0.3, 0.5, 2.0])),
        )
    )
)
def test_auroc_of_negated_scores(data: tuple[NDArray[np.int64], NDArray[np.float64]]) -> None:
    labels, scores = data
    value = auroc(labels, scores)
    if labels.min() == labels.max():
        assert math.isnan(value) and math.isnan(auroc(labels, -scores))
    else:
        assert 0.0 <= value <= 1.0
        assert auroc(labels, -scores) == pytest.approx(1.0 - value, abs=1e-12)


def test_aupro_on_3m_pixels_matches_analytic_value() -> None:
    rng = np.random.default_rng(0)
    masks = np.zeros((12, 500, 500), dtype=bool)
    masks[::2, 100:140, 200:260] = True
    masks[1::3, 300:305, 10:400] = True
    maps = rng.random(masks.shape, dtype=np.float32) + 0.5 * masks
    value = aupro(masks, maps)
    # Normal scores ~ U(0, 1), defect scores ~ U(0.5, 1.5): at a threshold t in [0.7, 1],
    # FPR = 1 - t and PRO = 1.5 - t = 0.5 + FPR, so AUPRO = 0.5 + 0.3 / 2 = 0.65.
    assert value == pytest.approx(0.65, abs=0.01)


def test_auroc_equals_sklearn_roc_auc_score() -> None:
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(3)
    labels = rng.random(5000) < 0.1
    scores = np.round(rng.random(5000) + 0.3 * labels, 2)  # with ties
    assert auroc(labels, scores) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
