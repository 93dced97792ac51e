"""Anomaly-detection metrics at image level, pixel level and per region (AUPRO).

The seven reported metrics (``METRIC_NAMES``) follow the MVTec AD conventions:

* ``i_auroc``, ``i_ap``, ``i_f1max``: image level, from binary image labels and one anomaly
  score per image;
* ``p_auroc``, ``p_ap``, ``p_f1max``: pixel level, over all pixels of all images flattened
  and concatenated together (not averaged per image);
* ``aupro``: area under the per-region-overlap (PRO) curve up to a false-positive rate of
  0.3, normalised by 0.3 so that a perfect detector scores 1.0.

ROC AUC, average precision and the precision-recall curve come from scikit-learn. Scores are
used as given: they are never min-max normalised, per image or globally, so every metric is
invariant to any strictly increasing transform of all scores together but not to a per-image
rescaling. Every function returns ``float('nan')`` where the metric is undefined (only one
class present, no ground-truth region, no normal pixel) instead of raising.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import ndimage
from sklearn.metrics import auc, average_precision_score, precision_recall_curve, roc_curve

__all__ = [
    "METRIC_NAMES",
    "aupro",
    "auroc",
    "average_precision",
    "compute_metrics",
    "f1_max",
]

METRIC_NAMES: tuple[str, ...] = (
    "i_auroc",
    "i_ap",
    "i_f1max",
    "p_auroc",
    "p_ap",
    "p_f1max",
    "aupro",
)

# 8-connectivity for ground-truth regions, as in the MVTec AD evaluation code.
_EIGHT_CONNECTED: NDArray[np.int_] = np.ones((3, 3), dtype=np.int_)

MaskInput = NDArray[np.generic] | Sequence[ArrayLike]


def _binary_inputs(labels: ArrayLike, scores: ArrayLike) -> tuple[NDArray[np.bool_], NDArray]:
    """Validate 1D labels (N,) in {0, 1} and scores (N,); return (bool labels, float64 scores)."""
    y = np.asarray(labels)
    s = np.asarray(scores, dtype=np.float64)
    if y.ndim != 1 or s.ndim != 1:
        raise ValueError(f"labels and scores must be 1D, got shapes {y.shape} and {s.shape}")
    if y.shape != s.shape:
        raise ValueError(f"labels shape {y.shape} does not match scores shape {s.shape}")
    if y.dtype != np.bool_ and not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be binary (0/1 or bool)")
    if not np.isfinite(s).all():
        raise ValueError("scores must be finite")
    return y.astype(bool), s


def _one_class(y: NDArray[np.bool_]) -> bool:
    """True when ``y`` lacks positives or negatives (the metric is then undefined)."""
    n_pos = int(np.count_nonzero(y))
    return n_pos == 0 or n_pos == y.size


def auroc(labels: ArrayLike, scores: ArrayLike) -> float:
    """ROC AUC of scores (N,) float against labels (N,) 0/1; nan if only one class is present."""
    y, s = _binary_inputs(labels, scores)
    if _one_class(y):
        return float("nan")
    # roc_auc_score computes exactly auc(roc_curve(...)) for binary labels, but its input
    # checks cost ~10x the curve itself on millions of pixels; call the two parts directly.
    fpr, tpr, _ = roc_curve(y, s)
    return float(auc(fpr, tpr))


def average_precision(labels: ArrayLike, scores: ArrayLike) -> float:
    """Average precision (sklearn step-wise sum) of scores (N,) vs labels (N,); nan if one class."""
    y, s = _binary_inputs(labels, scores)
    if _one_class(y):
        return float("nan")
    return float(average_precision_score(y, s))


def f1_max(labels: ArrayLike, scores: ArrayLike) -> float:
    """Max over thresholds of F1 = 2PR/(P+R) for scores (N,) vs labels (N,); nan if one class."""
    y, s = _binary_inputs(labels, scores)
    if _one_class(y):
        return float("nan")
    precision, recall, _ = precision_recall_curve(y, s)
    denom = precision + recall
    f1 = np.divide(2.0 * precision * recall, denom, out=np.zeros_like(denom), where=denom > 0)
    return float(f1.max())


def _image_list(images: MaskInput, name: str) -> list[NDArray]:
    """Split (N, H, W) arrays or sequences of (H, W) arrays into a list of 2D arrays."""
    if isinstance(images, np.ndarray):
        if images.ndim != 3:
            raise ValueError(f"{name} must be (N, H, W) or a list of (H, W), got {images.shape}")
        return list(images)
    out = [np.asarray(im) for im in images]
    for i, im in enumerate(out):
        if im.ndim != 2:
            raise ValueError(f"{name}[{i}] must be 2D (H, W), got shape {im.shape}")
    return out


def _paired_images(
    gt_masks: MaskInput, anomaly_maps: MaskInput
) -> tuple[list[NDArray[np.bool_]], list[NDArray]]:
    """Validate masks against maps image by image; return (bool masks, float64 maps)."""
    masks = _image_list(gt_masks, "gt_masks")
    maps = _image_list(anomaly_maps, "anomaly_maps")
    if len(masks) != len(maps):
        raise ValueError(f"{len(masks)} gt_masks but {len(maps)} anomaly_maps")
    for i, (m, a) in enumerate(zip(masks, maps, strict=True)):
        if m.shape != a.shape:
            raise ValueError(f"gt_masks[{i}] shape {m.shape} != anomaly_maps[{i}] shape {a.shape}")
    bool_masks = [m if m.dtype == np.bool_ else m != 0 for m in masks]
    float_maps = [np.asarray(a, dtype=np.float64) for a in maps]
    return bool_masks, float_maps


def _flatten(images: Sequence[NDArray]) -> NDArray:
    """Concatenate the pixels of a list of (H_i, W_i) arrays into one 1D array."""
    if not images:
        return np.zeros(0)
    return np.concatenate([im.ravel() for im in images])


def aupro(gt_masks: MaskInput, anomaly_maps: MaskInput, fpr_limit: float = 0.3) -> float:
    """Normalised area under the PRO curve up to ``fpr_limit`` (MVTec AD definition).

    ``gt_masks`` is (N, H, W) bool or a list of (H_i, W_i) bool arrays (non-zero counts as
    anomalous); ``anomaly_maps`` has the same shape(s), float. Ground-truth regions are the
    connected components of each mask under 8-connectivity (``scipy.ndimage.label`` with a 3x3
    structure of ones). At a threshold t, PRO is the mean over all regions of all images of
    the fraction of the region's pixels with score >= t, and FPR is the fraction of all normal
    pixels (mask False, all images together) with score >= t.

    As in the official MVTec evaluation code, all pixels are sorted by score descending and
    the per-pixel FPR (1/num_normal per normal pixel) and PRO (1/(num_regions * region_size)
    per anomalous pixel) increments are cumulatively summed; only the last index of each run
    of equal scores is kept (ties form one threshold) and (0, 0) is prepended. PRO is
    integrated over FPR in [0, fpr_limit] with the trapezoid rule, linearly interpolating PRO
    at FPR = fpr_limit, and the area is divided by ``fpr_limit``. Scores are never normalised.
    Pixels scoring below the first threshold past ``fpr_limit`` are dropped before sorting,
    which leaves the result unchanged. Returns nan when there is no ground-truth region or no
    normal pixel; raises ValueError on mismatched shapes or non-finite scores.
    """
    if not 0.0 < fpr_limit <= 1.0:
        raise ValueError(f"fpr_limit must be in (0, 1], got {fpr_limit}")
    masks, maps = _paired_images(gt_masks, anomaly_maps)
    scores = _flatten(maps).astype(np.float64, copy=False)
    if not np.isfinite(scores).all():
        raise ValueError("anomaly_maps must be finite")

    # Per-pixel PRO weight: 1 / region_size inside a region (divided by num_regions below).
    pro_weights: list[NDArray[np.float64]] = []
    num_regions = 0
    for mask in masks:
        regions, n = ndimage.label(mask, structure=_EIGHT_CONNECTED)
        regions = np.asarray(regions).ravel()
        sizes = np.bincount(regions, minlength=n + 1).astype(np.float64)
        inv_size = np.zeros(n + 1, dtype=np.float64)
        inv_size[1:] = 1.0 / sizes[1:]
        pro_weights.append(inv_size[regions])
        num_regions += int(n)
    normal = ~_flatten(masks).astype(bool, copy=False)
    num_normal = int(np.count_nonzero(normal))
    if num_regions == 0 or num_normal == 0:
        return float("nan")

    weights = _flatten(pro_weights)

    # Speed-up that leaves the result unchanged: the curve is needed only up to the first
    # threshold whose FPR exceeds fpr_limit, i.e. down to the k-th highest normal score with
    # k > fpr_limit * num_normal. Pixels scoring below that cutoff only affect later points,
    # so they are dropped (an O(n) partition) before the O(n log n) sort.
    k = min(num_normal, math.ceil(fpr_limit * num_normal) + 1)
    if k < num_normal:
        cutoff = np.partition(scores[normal], num_normal - k)[num_normal - k]
        top = scores >= cutoff
        scores, normal, weights = scores[top], normal[top], weights[top]

    order = np.argsort(-scores)  # descending; the order within ties is irrelevant
    sorted_scores = scores[order]
    # FPR as a cumulative count / num_normal: the same as summing 1/num_normal, without drift.
    fprs = np.cumsum(normal[order], dtype=np.int64) / num_normal
    pros = np.cumsum(weights[order]) / num_regions

    # One threshold per distinct score: keep the last pixel of each run of equal scores.
    keep = np.append(sorted_scores[1:] != sorted_scores[:-1], True)
    fprs = np.concatenate(([0.0], fprs[keep]))
    pros = np.concatenate(([0.0], pros[keep]))

    # Trapezoid over FPR in [0, fpr_limit]; fprs is non-decreasing and reaches >= fpr_limit.
    end = int(np.searchsorted(fprs, fpr_limit, side="right"))  # fprs[:end] <= fpr_limit
    x = fprs[:end]
    y = pros[:end]
    if x[-1] < fpr_limit:
        x0, x1, y0, y1 = fprs[end - 1], fprs[end], pros[end - 1], pros[end]
        y_limit = y0 + (y1 - y0) * (fpr_limit - x0) / (x1 - x0)
        x = np.append(x, fpr_limit)
        y = np.append(y, y_limit)
    area = float(np.sum(np.diff(x) * (y[1:] + y[:-1]) * 0.5))
    return area / fpr_limit


def compute_metrics(
    labels: ArrayLike,
    scores: ArrayLike,
    gt_masks: MaskInput,
    anomaly_maps: MaskInput,
) -> dict[str, float]:
    """All seven metrics, keyed and ordered as ``METRIC_NAMES``.

    ``labels`` (N,) int 0/1 and ``scores`` (N,) float give the image-level metrics;
    ``gt_masks`` (N, H, W) bool or a list of N (H_i, W_i) bool arrays and ``anomaly_maps`` of
    the same shape(s), float, give the pixel-level metrics (all pixels of all images flattened
    together, as in MVTec AD) and AUPRO. Raises ValueError on any shape mismatch.
    """
    y = np.asarray(labels)
    s = np.asarray(scores)
    if y.ndim != 1 or s.ndim != 1 or y.shape != s.shape:
        raise ValueError(f"labels {y.shape} and scores {s.shape} must be 1D of equal length")
    masks, maps = _paired_images(gt_masks, anomaly_maps)
    if len(masks) != y.shape[0]:
        raise ValueError(f"{y.shape[0]} labels but {len(masks)} gt_masks / anomaly_maps")
    pixel_labels = _flatten(masks).astype(bool, copy=False)
    pixel_scores = _flatten(maps)
    return {
        "i_auroc": auroc(y, s),
        "i_ap": average_precision(y, s),
        "i_f1max": f1_max(y, s),
        "p_auroc": auroc(pixel_labels, pixel_scores),
        "p_ap": average_precision(pixel_labels, pixel_scores),
        "p_f1max": f1_max(pixel_labels, pixel_scores),
        "aupro": aupro(masks, maps),
    }
