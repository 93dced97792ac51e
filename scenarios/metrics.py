"""Anomaly-detection metrics at image level, pixel level and per region (AUPRO).

The seven reported metrics (``METRIC_NAMES``) follow the MVTec AD conventions:

* ``i_auroc``, ``i_ap``, ``i_f1max``: image level, from binary image labels and one anomaly
  score per image;
* ``p_auroc``, ``p_ap``, ``p_f1max``: pixel level, over all pixels of all images flattened
  and concatenated together (not averaged per image);
* ``aupro``: area under the per-region-overlap (PRO) curve up to a false-positive rate of
  0.3, normalised by 0.3 so that a perfect detector scores 1.0.

Image-level ROC AUC, average precision and the precision-recall curve come from scikit-learn.
The pixel-level metrics and AUPRO come from ``PixelMetrics``, which computes the same values
over a stream of images in bounded memory (a budget of pixels held at once; when they do not
fit, the images are re-read from their source a bounded number of times and the pixels to sort
spilled to temporary files) instead of concatenating every pixel; with all pixels within the
budget its ``p_auroc``, ``p_ap`` and ``p_f1max`` are bit-identical to the scikit-learn functions
on the concatenated pixels. Scores are used as given: they are never min-max normalised, per
image or globally, so every metric is invariant to any strictly increasing transform of all
scores together but not to a per-image rescaling. Every function returns ``float('nan')`` where
the metric is undefined (only one class present, no ground-truth region, no normal pixel)
instead of raising.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import ndimage
from sklearn.metrics import auc, average_precision_score, precision_recall_curve, roc_curve

from scenarios.rundir import TEMP_PREFIX

__all__ = [
    "DEFAULT_BUDGET_PX",
    "METRIC_NAMES",
    "PART_METRIC_NAMES",
    "PixelMetrics",
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

#: The metrics of a part-level (3D) detector (COSARAD's O-ROC and P-ROC, plus APs): object
#: level ``o_auroc``, ``o_ap`` over the test parts; point level ``p_auroc``, ``p_ap`` over
#: every point of every test part's fused cloud (for these detectors ``p_`` is *point*).
PART_METRIC_NAMES: tuple[str, ...] = ("o_auroc", "o_ap", "p_auroc", "p_ap")

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


# ----------------------------------------------------------------------------------------------
# Pixel metrics over a stream of images
# ----------------------------------------------------------------------------------------------

# A pass over the images yields (gt_mask, anomaly_map) pairs of (H, W) arrays.
ImagePairs = Iterable[tuple[ArrayLike, ArrayLike]]

_SIGN_BIT = np.uint64(1 << 63)
# Pass-1 buckets are the top 16 bits of the 64-bit score key: sign, exponent and 4 mantissa bits.
_TOP_BITS = 16
_TOP_SHIFT = np.uint64(64 - _TOP_BITS)
# A bucket holding more than the budget is split into this many sub-ranges (a power of two in
# [_MIN_SPLIT, _MAX_SPLIT], about 64 per budget's worth of pixels so that one split usually
# suffices even for uneven score densities).
_MIN_SPLIT_BITS = 8
_MAX_SPLIT_BITS = 16
_UINT64_MAX = np.iinfo(np.uint64).max

# Thresholds processed at once inside one chunk (bounds the temporaries to a few MB each).
_BLOCK = 1 << 18

# Spilling (see PixelMetrics): pixels buffered before they are appended to their chunk's files
# (~8-12 MB), the on-disk record of an anomalous pixel (key, region size; packed, 12 bytes),
# and the largest image, whose region sizes must fit that uint32.
_SPILL_BUFFER_PX = 1 << 20
_ANOMALOUS_RECORD = np.dtype([("key", np.uint64), ("size", np.uint32)])
_MAX_IMAGE_PX = int(np.iinfo(np.uint32).max)

# Default most pixels ``PixelMetrics`` holds at once: ~40 bytes each at worst (~0.3 GB); 122
# maps of 256 x 256 (the quickstart has 55) still need no second pass over the maps.
DEFAULT_BUDGET_PX = 8_000_000


def _score_keys(scores: NDArray) -> NDArray[np.uint64]:
    """Order-preserving integer keys (H*W,) uint64 of finite scores (H, W), any real dtype.

    Scores are converted to float64 first, which is exact for float16/float32 maps, so ties
    and order are those of the float64 values sklearn sees. IEEE 754 bit patterns of
    non-negative floats increase with the value, those of negative floats decrease (sign and
    magnitude); flipping every bit of a negative and only the sign bit of a non-negative
    gives one increasing unsigned order: key(a) < key(b) iff a < b, key(a) == key(b) iff
    a == b. Adding 0.0 first turns -0.0 into +0.0, so the two zeros tie as they compare.
    """
    s = np.asarray(scores, dtype=np.float64).ravel() + 0.0
    flip = (s.view(np.int64) >> np.int64(63)).view(np.uint64) | _SIGN_BIT
    return s.view(np.uint64) ^ flip


def _checked_pair(
    gt_mask: ArrayLike, anomaly_map: ArrayLike, where: str
) -> tuple[NDArray[np.bool_], NDArray]:
    """Validate one (H, W) mask (non-zero = anomalous) and (H, W) finite real map."""
    m = np.asarray(gt_mask)
    a = np.asarray(anomaly_map)
    if m.ndim != 2 or m.shape != a.shape:
        raise ValueError(
            f"{where}: gt_mask {m.shape} and anomaly_map {a.shape} must be 2D of equal shape"
        )
    if a.dtype.kind not in "biuf":  # bool, signed and unsigned integer, float
        raise ValueError(f"{where}: anomaly_map must be real-valued, got dtype {a.dtype}")
    if not np.isfinite(a).all():
        raise ValueError(f"{where}: anomaly_map must be finite")
    return (m if m.dtype == np.bool_ else m != 0), a


@dataclass
class _ImagePixels:
    """The pixels of one (H, W) image, flattened to (H*W,) in row-major order."""

    keys: NDArray[np.uint64]  # score keys, see _score_keys
    anomalous: NDArray[np.bool_]  # ground truth
    # 8-connected ground-truth region of each pixel (0 if normal), if labelled; the region
    # sizes and PRO weights 1/size per label (n_regions + 1,), both 0 for label 0.
    regions: NDArray[np.intp] | None
    sizes: NDArray[np.int64] | None
    inv_size: NDArray[np.float64] | None
    n_regions: int  # 0 if not labelled

    def weights(self, sel: NDArray[np.bool_]) -> NDArray[np.float64]:
        """PRO weights 1/region_size of the (anomalous) pixels ``sel`` (H*W,) selects."""
        assert self.regions is not None and self.inv_size is not None
        return self.inv_size[self.regions[sel]]


def _image_pixels(mask: NDArray[np.bool_], amap: NDArray, labelled: bool) -> _ImagePixels:
    """Score keys, labels and (if ``labelled``) regions of one validated (H, W) image."""
    anomalous = mask.ravel()
    if not labelled:
        return _ImagePixels(_score_keys(amap), anomalous, None, None, None, 0)
    regions, n = ndimage.label(mask, structure=_EIGHT_CONNECTED)
    regions = np.asarray(regions).ravel()
    sizes = np.bincount(regions, minlength=n + 1).astype(np.int64, copy=False)
    sizes[0] = 0
    inv_size = np.zeros(n + 1, dtype=np.float64)
    inv_size[1:] = 1.0 / sizes[1:]
    return _ImagePixels(_score_keys(amap), anomalous, regions, sizes, inv_size, int(n))


@dataclass
class _Buckets:
    """Disjoint key ranges [kmin, kmax] in descending order with their pixel statistics.

    All fields are (B,) arrays: kmin/kmax uint64 (the smallest/largest key present), count and
    pos int64 (all / anomalous pixels), wsum float64 (sum of PRO weights).
    """

    kmin: NDArray[np.uint64]
    kmax: NDArray[np.uint64]
    count: NDArray[np.int64]
    pos: NDArray[np.int64]
    wsum: NDArray[np.float64]

    @staticmethod
    def concat(parts: Sequence[_Buckets]) -> _Buckets:
        """The buckets of ``parts`` one after the other."""
        return _Buckets(
            *(np.concatenate([getattr(b, f) for b in parts]) for f in _Buckets.__annotations__)
        )


class _Histogram:
    """Per-bin pixel statistics over (n_bins,) bins of a key range, accumulated image by image."""

    def __init__(self, n_bins: int) -> None:
        self.count = np.zeros(n_bins, dtype=np.int64)
        self.pos = np.zeros(n_bins, dtype=np.int64)
        self.wsum = np.zeros(n_bins, dtype=np.float64)
        self.kmin = np.full(n_bins, _UINT64_MAX, dtype=np.uint64)
        self.kmax = np.zeros(n_bins, dtype=np.uint64)

    def add(
        self,
        bins: NDArray[np.intp],
        keys: NDArray[np.uint64],
        anomalous: NDArray[np.bool_],
        anom_weights: NDArray[np.float64],
    ) -> None:
        """Count pixels (P,) given their bin (P,) intp, key and label, and the PRO weights (A,)
        of the A anomalous ones among them in the same order."""
        n = self.count.size
        self.count += np.bincount(bins, minlength=n)
        bins_a = bins[anomalous]
        self.pos += np.bincount(bins_a, minlength=n)
        self.wsum += np.bincount(bins_a, weights=anom_weights, minlength=n)
        # The exact key range of each bin: a bin holding one key is a single tie group whose
        # statistics are complete without its pixels, and tight ranges split faster.
        np.minimum.at(self.kmin, bins, keys)
        np.maximum.at(self.kmax, bins, keys)

    def buckets(self) -> _Buckets:
        """The non-empty bins as buckets, highest keys first."""
        nz = np.flatnonzero(self.count)[::-1]
        return _Buckets(self.kmin[nz], self.kmax[nz], self.count[nz], self.pos[nz], self.wsum[nz])


@dataclass
class _Chunk:
    """A key range [lo, hi] of at most budget_px pixels, or a single key (``tie``) of any size."""

    lo: int
    hi: int
    count: int
    pos: int
    wsum: float
    tie: bool  # one score value over budget: its statistics suffice, its pixels are never read


class _CurveSums:
    """Running sums of the four pixel curves, fed the tie groups in descending score order.

    Each ``update`` takes the next run of thresholds (one per distinct score). The arithmetic
    per threshold mirrors scikit-learn's (roc_curve with drop_intermediate, auc's trapezoid,
    average_precision_score's step sum, precision_recall_curve's points) and the terms of an
    update are summed in one ``np.sum`` in sklearn's order, so a single update holding all
    thresholds reproduces its results bit for bit; split over several updates the sums differ
    only by floating-point summation order.
    """

    def __init__(self, n_pos: int, n_neg: int, n_regions: int, fpr_limit: float) -> None:
        self.n_pos, self.n_neg, self.n_regions = float(n_pos), float(n_neg), float(n_regions)
        self.fpr_limit = fpr_limit
        self.tp = 0  # cumulative anomalous / normal pixel counts so far (exact integers)
        self.fp = 0
        self.roc_last = (0.0, 0.0)  # last (FPR, TPR) point, from which the next segment starts
        self.roc_area = 0.0
        self.recall_last = 0.0
        self.ap_sum = 0.0  # sum of (R_{k-1} - R_k) * P_k, i.e. minus the average precision
        self.f1 = 0.0  # sklearn's appended (P=1, R=0) point has F1 = 0
        self.pro_weight = 0.0  # cumulative sum of PRO weights (divided by n_regions for PRO)
        self.pro_last = (0.0, 0.0)  # last (FPR, PRO) point
        self.pro_area = 0.0
        self.pro_done = False  # the curve has reached fpr_limit: later points do not count

    def update(
        self,
        pos: NDArray[np.int64],
        neg: NDArray[np.int64],
        wsum: NDArray[np.float64] | None,
    ) -> None:
        """Add T thresholds given anomalous / normal counts and PRO weight sums (T,) per group.

        Groups must be in descending score order; ``wsum`` may be None once ``pro_done``.
        The thresholds are processed in blocks of ``_BLOCK`` so that the temporaries stay
        small; only the ROC and AP terms (T,) float64 are stored, to be summed at once.
        """
        t = pos.size
        # sklearn's roc_curve drops a point whose second differences of FP and TP counts are
        # both 0, i.e. whose incoming and outgoing steps are equal. Across updates the
        # neighbours are unknown, so the first and last point of each update are kept:
        # extra collinear points change the area only by rounding.
        keep = np.ones(t, dtype=bool)
        if t > 2:
            keep[1:-1] = (neg[2:] != neg[1:-1]) | (pos[2:] != pos[1:-1])
        roc_terms = np.empty(int(np.count_nonzero(keep)), dtype=np.float64)
        ap_terms = np.empty(t, dtype=np.float64)  # in ascending score order, as sklearn sums
        n_roc = 0
        for b0 in range(0, t, _BLOCK):
            b1 = min(t, b0 + _BLOCK)
            # Cumulative counts as float64: exact integers (< 2**53), the values sklearn uses.
            tps = np.cumsum(pos[b0:b1], dtype=np.float64) + float(self.tp)
            fps = np.cumsum(neg[b0:b1], dtype=np.float64) + float(self.fp)
            self.tp, self.fp = int(tps[-1]), int(fps[-1])

            # ROC trapezoids between consecutive kept points.
            kb = keep[b0:b1]
            x = np.concatenate(([self.roc_last[0]], fps[kb] / self.n_neg))
            y = np.concatenate(([self.roc_last[1]], tps[kb] / self.n_pos))
            roc_terms[n_roc : n_roc + x.size - 1] = (x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2.0
            n_roc += x.size - 1
            self.roc_last = (float(x[-1]), float(y[-1]))
            del x, y

            # Precision-recall points: F1 max and the step-wise AP terms.
            precision = tps / (tps + fps)
            recall = tps / self.n_pos
            denom = precision + recall
            f1 = np.divide(
                2.0 * precision * recall, denom, out=np.zeros_like(denom), where=denom > 0
            )
            self.f1 = max(self.f1, float(f1.max()))
            del denom, f1
            recall_prev = np.concatenate(([self.recall_last], recall[:-1]))
            ap_terms[t - b1 : t - b0] = ((recall_prev - recall) * precision)[::-1]
            self.recall_last = float(recall[-1])
            del precision, recall, recall_prev

            if not self.pro_done and wsum is not None:
                self._pro_block(fps, wsum[b0:b1])
        self.roc_area += float(np.sum(roc_terms))
        self.ap_sum += float(np.sum(ap_terms))

    def _pro_block(self, fps: NDArray[np.float64], wsum: NDArray[np.float64]) -> None:
        """Extend the PRO area over thresholds with cumulative FP counts and weight sums (B,)."""
        fpr = fps / self.n_neg
        end = int(np.searchsorted(fpr, self.fpr_limit, side="right"))  # fpr[:end] <= limit
        cum = self.pro_weight + np.cumsum(wsum[: end + 1])
        pro = cum / self.n_regions
        x = np.concatenate(([self.pro_last[0]], fpr[:end]))
        y = np.concatenate(([self.pro_last[1]], pro[:end]))
        if end < fpr.size:  # this block crosses the limit: interpolate PRO at the limit
            if x[-1] < self.fpr_limit:
                x0, x1, y0, y1 = x[-1], fpr[end], y[-1], pro[end]
                y_limit = y0 + (y1 - y0) * (self.fpr_limit - x0) / (x1 - x0)
                x = np.append(x, self.fpr_limit)
                y = np.append(y, y_limit)
            self.pro_done = True
        else:
            self.pro_weight = float(cum[-1])
        self.pro_area += float(np.sum(np.diff(x) * (y[1:] + y[:-1]) * 0.5))
        self.pro_last = (float(x[-1]), float(y[-1]))
        # A point exactly at the limit ends the area too: later points add zero width.
        self.pro_done = self.pro_done or self.pro_last[0] >= self.fpr_limit

    def result(self) -> dict[str, float]:
        """The four pixel metrics from the sums, after all thresholds were added."""
        return {
            "p_auroc": self.roc_area,
            "p_ap": max(0.0, -self.ap_sum),
            "p_f1max": self.f1,
            "aupro": self.pro_area / self.fpr_limit,
        }


class PixelMetrics:
    """Exact pixel metrics (p_auroc, p_ap, p_f1max, aupro) of an image stream in bounded memory.

    Feed the images one at a time to ``add``, then call ``result``. The metrics are those of
    ``compute_metrics``: all pixels of all images pooled (MVTec AD), AUPRO as in ``aupro``
    (8-connected regions per image, PRO averaged over all regions of all images, FPR over all
    normal pixels, trapezoid to ``fpr_limit`` with linear interpolation, ties form one
    threshold). Maps of any real dtype are accepted and compared as float64, which is exact for
    the float32 maps of the engine: ties and order are those of the values themselves.

    Memory does not grow with the number of images: at most ``budget_px`` pixels are held at
    once (plus fixed-size histograms of 2**16 bins and, during a split, a few sub-histograms).
    ``add`` labels the regions of the mask and counts its pixels into a histogram over the top
    16 bits of an order-preserving 64-bit integer key of the score (anomalous / all pixels, PRO
    weight 1/region_size, smallest and largest key per bucket). While the pixels added so far
    number at most ``budget_px`` they are also kept (copied); past that they are dropped, and
    ``result`` needs ``reread``, a callable that returns an iterable over the same (gt_mask,
    anomaly_map) pairs in the same order each time it is called (e.g. loading the maps saved
    as .npy files). ``result`` then:

    1. splits every bucket that holds more than ``budget_px`` pixels and more than one key into
       finer key ranges (one pass over the images per level, all such buckets at once; a
       bucket whose pixels all share one score is one tie group and is never split or read);
    2. groups consecutive buckets, from the highest score down, into chunks of at most
       ``budget_px`` pixels;
    3. if more than one chunk has pixels to sort, reads the images once more and appends each
       pixel of those chunks to its chunk's files in a fresh temporary directory (the key,
       8 bytes, of a normal pixel; the key and the size of its region as uint32, 12 bytes, of
       an anomalous one, from which the PRO weight 1/size is recomputed exactly);
    4. for each chunk, from the highest score down, takes its pixels (from its files, or from
       one more pass over the images when it is the only chunk to sort), sorts them, merges
       ties into one threshold each, and extends running sums carried from chunk to chunk:
       true/false positive counts, the ROC trapezoid area, the average-precision step sum,
       the F1 maximum and, until the FPR passes ``fpr_limit``, the PRO trapezoid area.

    ``reread`` is therefore called at most (number of split levels, at most 6) + 1 times,
    however many chunks there are (about ``2 * n_pixels / budget_px + 1``, plus one per
    over-budget tie group, counted but never read). The temporary directory is created inside
    ``spill_dir`` (the system's temporary directory if None) with a name starting with
    ``scenarios.rundir.TEMP_PREFIX``, and removed before ``result`` returns or raises (also on
    KeyboardInterrupt). Its files take 8 bytes per normal and 12 per anomalous pixel outside the
    over-budget tie groups (so about 8 bytes per pixel whose score is not one of those ties;
    ``spilled_bytes`` after ``result``), and each chunk's files are deleted once they are read
    back. With all pixels within the budget ``reread`` is never called, nothing is written, and
    ``p_auroc``, ``p_ap``, ``p_f1max`` are bit-identical to the scikit-learn based ``auroc``,
    ``average_precision`` and ``f1_max`` of the concatenated pixels; across several chunks every
    value is exact up to floating-point summation order (~1e-15), and the same whether or not
    chunks were spilled. Peak memory of ``result`` is at most about 40 bytes per budget pixel
    when all scores differ (8-byte keys sorted in place, then five 8-byte arrays per tie group;
    fewer with ties), plus a few MB of histograms, per-image temporaries and (while spilling)
    write buffers, plus the kept copies (the mask's byte and the map's dtype per pixel) when
    within the budget.
    """

    def __init__(
        self,
        budget_px: int = DEFAULT_BUDGET_PX,
        fpr_limit: float = 0.3,
        spill_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        """``budget_px``: most pixels held in memory at once; ``fpr_limit`` in (0, 1];
        ``spill_dir``: an existing directory for ``result``'s temporary files (None: the
        system's temporary directory)."""
        if int(budget_px) != budget_px or budget_px < 1:
            raise ValueError(f"budget_px must be a positive integer, got {budget_px}")
        if not 0.0 < fpr_limit <= 1.0:
            raise ValueError(f"fpr_limit must be in (0, 1], got {fpr_limit}")
        self.budget_px = int(budget_px)
        self.fpr_limit = float(fpr_limit)
        self.spill_dir = spill_dir
        self.n_images = 0
        self.n_pixels = 0
        self.n_anomalous = 0
        self.n_regions = 0
        self.spilled_bytes = 0  # bytes the last ``result`` wrote to temporary files
        self._top = _Histogram(1 << _TOP_BITS)
        # Copies of the images added while they fit the budget; None once they did not.
        self._kept: list[tuple[NDArray[np.bool_], NDArray]] | None = []

    def add(self, gt_mask: ArrayLike, anomaly_map: ArrayLike) -> None:
        """Add one image: ``gt_mask`` (H, W) bool (non-zero = anomalous), ``anomaly_map`` (H, W).

        The map may be any real dtype (float32 from the engine) and must be finite; raises
        ValueError otherwise or if the shapes differ.
        """
        mask, amap = _checked_pair(gt_mask, anomaly_map, f"image {self.n_images}")
        if mask.size > _MAX_IMAGE_PX:
            raise ValueError(f"image {self.n_images}: more than {_MAX_IMAGE_PX} pixels")
        px = _image_pixels(mask, amap, labelled=True)
        bins = (px.keys >> _TOP_SHIFT).astype(np.intp)
        self._top.add(bins, px.keys, px.anomalous, px.weights(px.anomalous))
        self.n_images += 1
        self.n_pixels += px.keys.size
        self.n_anomalous += int(np.count_nonzero(px.anomalous))
        self.n_regions += px.n_regions
        if self._kept is not None:
            if self.n_pixels <= self.budget_px:
                self._kept.append((np.array(mask, dtype=bool), np.array(amap)))
            else:
                self._kept = None

    def result(self, reread: Callable[[], ImagePairs] | None = None) -> dict[str, float]:
        """``{"p_auroc", "p_ap", "p_f1max", "aupro"}`` of the images added so far.

        ``reread`` returns a fresh iterable over the same (gt_mask, anomaly_map) pairs in the
        order they were added; it is needed only if the pixels exceeded ``budget_px`` (else
        ValueError) and is otherwise never called. Every metric is nan when only one pixel
        class is present (so also when no image was added); AUPRO's conditions (a region and
        a normal pixel) coincide with that. Raises ValueError if a pass over ``reread``
        yields images that do not match what was added.
        """
        self.spilled_bytes = 0
        n_neg = self.n_pixels - self.n_anomalous
        if self.n_anomalous == 0 or n_neg == 0:
            return {name: float("nan") for name in ("p_auroc", "p_ap", "p_f1max", "aupro")}
        read = self._pass_source(reread)
        buckets = self._top.buckets()
        while True:
            big = np.flatnonzero((buckets.count > self.budget_px) & (buckets.kmin != buckets.kmax))
            if big.size == 0:
                break
            buckets = self._split(buckets, big, read)
        chunks = list(self._chunks(buckets))
        sums = _CurveSums(self.n_anomalous, n_neg, self.n_regions, self.fpr_limit)
        if sum(not chunk.tie for chunk in chunks) <= 1:  # always so within the budget

            def load(i: int, labelled: bool) -> _ChunkPixels:
                return self._read(chunks[i], read, labelled)

            self._accumulate(sums, chunks, load)
        else:
            directory = tempfile.mkdtemp(dir=self.spill_dir, prefix=TEMP_PREFIX + "metrics.")
            try:
                spill = self._spill(chunks, read, Path(directory))
                self.spilled_bytes = spill.nbytes
                self._accumulate(sums, chunks, spill.load)
            finally:
                shutil.rmtree(directory, ignore_errors=True)
        if sums.tp != self.n_anomalous or sums.fp != n_neg:  # pragma: no cover - a bug guard
            raise RuntimeError("pixel counts of the chunks do not add up")
        return sums.result()

    @staticmethod
    def _accumulate(
        sums: _CurveSums, chunks: Sequence[_Chunk], load: Callable[[int, bool], _ChunkPixels]
    ) -> None:
        """Feed the chunks' tie groups to ``sums``; ``load(i, labelled)`` gives chunk i's pixels."""
        for i, chunk in enumerate(chunks):
            if chunk.tie:
                pos = np.array([chunk.pos], dtype=np.int64)
                neg = np.array([chunk.count - chunk.pos], dtype=np.int64)
                sums.update(pos, neg, np.array([chunk.wsum]))
            else:
                sums.update(*_tie_groups(load(i, not sums.pro_done)))

    # -- passes over the images ------------------------------------------------------------

    def _pass_source(
        self, reread: Callable[[], ImagePairs] | None
    ) -> Callable[[bool], Iterator[_ImagePixels]]:
        """A function running one pass over the images: kept copies if any, else ``reread``.

        Its argument says whether the ground-truth regions are labelled.
        """
        kept = self._kept
        source: Callable[[], ImagePairs]
        if kept is not None:
            source = lambda: kept  # noqa: E731 - the kept copies serve every pass
        elif reread is not None:
            source = reread
        else:
            raise ValueError(
                f"{self.n_pixels} pixels exceed budget_px={self.budget_px}, so they were not "
                "kept in memory: pass reread, a callable returning the (gt_mask, anomaly_map) "
                "pairs again in the order they were added"
            )

        def read(labelled: bool) -> Iterator[_ImagePixels]:
            n_images = n_pixels = 0
            pairs = source()
            for gt_mask, anomaly_map in pairs:
                mask, amap = _checked_pair(gt_mask, anomaly_map, f"reread image {n_images}")
                n_images += 1
                n_pixels += mask.size
                yield _image_pixels(mask, amap, labelled)
            if (n_images, n_pixels) != (self.n_images, self.n_pixels):
                raise ValueError(
                    f"reread yielded {n_images} images / {n_pixels} pixels, but "
                    f"{self.n_images} / {self.n_pixels} were added"
                )

        return read

    def _split(
        self,
        buckets: _Buckets,
        big: NDArray[np.intp],
        read: Callable[[bool], Iterator[_ImagePixels]],
    ) -> _Buckets:
        """Replace the buckets ``big`` (indices) by their non-empty sub-ranges, in one pass."""
        splits: list[tuple[np.uint64, np.uint64, np.uint64, _Histogram]] = []
        for j in big:
            lo, hi, count = int(buckets.kmin[j]), int(buckets.kmax[j]), int(buckets.count[j])
            # ~64 sub-ranges per budget's worth of pixels, as a power of two in [2^8, 2^16].
            want = (64 * -(-count // self.budget_px) - 1).bit_length()
            bits = min(max(want, _MIN_SPLIT_BITS), _MAX_SPLIT_BITS)
            shift = max(0, (hi - lo).bit_length() - bits)
            hist = _Histogram(((hi - lo) >> shift) + 1)
            splits.append((np.uint64(lo), np.uint64(hi), np.uint64(shift), hist))
        for px in read(True):
            for lo_u, hi_u, shift_u, hist in splits:
                sel = (px.keys >= lo_u) & (px.keys <= hi_u)
                keys = px.keys[sel]
                bins = ((keys - lo_u) >> shift_u).astype(np.intp)
                anomalous = px.anomalous[sel]
                hist.add(bins, keys, anomalous, px.weights(sel & px.anomalous))
        parts: list[_Buckets] = []
        prev = 0
        for j, (_, _, _, hist) in zip(big, splits, strict=True):
            sub = hist.buckets()
            if int(sub.count.sum()) != int(buckets.count[j]) or int(sub.pos.sum()) != int(
                buckets.pos[j]
            ):
                raise ValueError("reread yielded different pixels than were added")
            parts.append(_take(buckets, slice(prev, j)))
            parts.append(sub)
            prev = j + 1
        parts.append(_take(buckets, slice(prev, None)))
        return _Buckets.concat(parts)

    def _chunks(self, buckets: _Buckets) -> Iterator[_Chunk]:
        """Group the buckets greedily, highest keys first, into chunks of <= budget_px pixels.

        Loops over buckets (at most 2**16 plus the sub-ranges of split buckets), never pixels.
        """
        kmin, kmax = buckets.kmin.tolist(), buckets.kmax.tolist()
        count, pos, wsum = buckets.count.tolist(), buckets.pos.tolist(), buckets.wsum.tolist()
        cur: _Chunk | None = None
        for j in range(len(count)):
            if count[j] > self.budget_px:  # one score value (the split made sure of it)
                if cur is not None:
                    yield cur
                    cur = None
                yield _Chunk(kmin[j], kmax[j], count[j], pos[j], wsum[j], tie=True)
            elif cur is not None and cur.count + count[j] <= self.budget_px:
                cur.lo = kmin[j]
                cur.count += count[j]
                cur.pos += pos[j]
            else:
                if cur is not None:
                    yield cur
                cur = _Chunk(kmin[j], kmax[j], count[j], pos[j], 0.0, tie=False)
        if cur is not None:
            yield cur

    def _read(
        self, chunk: _Chunk, read: Callable[[bool], Iterator[_ImagePixels]], labelled: bool
    ) -> _ChunkPixels:
        """One pass over the images collecting the pixels of ``chunk`` (PRO weights if
        ``labelled``)."""
        lo, hi = np.uint64(chunk.lo), np.uint64(chunk.hi)
        keys = np.empty(chunk.count, dtype=np.uint64)  # sizes known from the histogram
        anom_keys = np.empty(chunk.pos, dtype=np.uint64)
        anom_w = np.empty(chunk.pos, dtype=np.float64) if labelled else None
        n = n_a = 0
        for px in read(labelled):
            sel = (px.keys >= lo) & (px.keys <= hi)
            k = px.keys[sel]
            sel &= px.anomalous
            ka = px.keys[sel]
            if n + k.size > keys.size or n_a + ka.size > anom_keys.size:
                raise ValueError("reread yielded different pixels than were added")
            keys[n : n + k.size] = k
            anom_keys[n_a : n_a + ka.size] = ka
            if anom_w is not None:
                anom_w[n_a : n_a + ka.size] = px.weights(sel)
            n += k.size
            n_a += ka.size
        if n != keys.size or n_a != anom_keys.size:
            raise ValueError("reread yielded different pixels than were added")
        return _ChunkPixels(keys, anom_keys, anom_w)

    def _spill(
        self,
        chunks: Sequence[_Chunk],
        read: Callable[[bool], Iterator[_ImagePixels]],
        directory: Path,
    ) -> _Spill:
        """One pass: the pixels of every chunk that is not a tie group, into its files."""
        n_chunks = len(chunks)
        # Chunk bounds in ascending key order; chunk i (descending) is n_chunks - 1 - i here.
        lo = np.array([c.lo for c in reversed(chunks)], dtype=np.uint64)
        hi = np.array([c.hi for c in reversed(chunks)], dtype=np.uint64)
        sorted_ = np.array([not c.tie for c in chunks], dtype=bool)
        count = np.zeros(n_chunks, dtype=np.int64)
        pos = np.zeros(n_chunks, dtype=np.int64)
        spill = _Spill(directory, chunks, flush_px=min(self.budget_px, _SPILL_BUFFER_PX))
        for px in read(True):
            if px.keys.size > _MAX_IMAGE_PX:  # region sizes are stored as uint32
                raise ValueError("reread yielded different pixels than were added")
            asc = np.searchsorted(lo, px.keys, side="right") - 1  # the chunk with lo <= key
            if asc.size and (int(asc.min()) < 0 or (px.keys > hi[asc]).any()):
                raise ValueError("reread yielded different pixels than were added")
            ids = (n_chunks - 1) - asc
            del asc
            ids_a = ids[px.anomalous]
            count += np.bincount(ids, minlength=n_chunks)
            pos += np.bincount(ids_a, minlength=n_chunks)
            keep = sorted_[ids]
            normal = keep & ~px.anomalous
            keep &= px.anomalous
            assert px.regions is not None and px.sizes is not None
            records = np.empty(int(np.count_nonzero(keep)), dtype=_ANOMALOUS_RECORD)
            records["key"] = px.keys[keep]
            records["size"] = px.sizes[px.regions[keep]]
            spill.append(ids[normal], px.keys[normal], ids[keep], records)
        spill.flush()
        expected_count = np.array([c.count for c in chunks], dtype=np.int64)
        expected_pos = np.array([c.pos for c in chunks], dtype=np.int64)
        if not (np.array_equal(count, expected_count) and np.array_equal(pos, expected_pos)):
            raise ValueError("reread yielded different pixels than were added")
        return spill


@dataclass
class _ChunkPixels:
    """The pixels of one chunk, in any order: keys (C,) of all, keys (A,) of the anomalous ones
    and their PRO weights (A,) in the same order (None when not needed)."""

    keys: NDArray[np.uint64]
    anom_keys: NDArray[np.uint64]
    anom_w: NDArray[np.float64] | None


def _tie_groups(
    px: _ChunkPixels,
) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.float64] | None]:
    """A chunk's tie groups, descending, as (anomalous, normal, PRO weight sum) (T,) each.

    The weight sums are None if the weights are. Consumes ``px`` (its keys are sorted in place
    and its arrays released).
    """
    # Sort, then free each array as soon as the next is built: the chunk's keys are the
    # largest allocation, and the per-group arrays (T,) can be almost as large.
    keys, anom_keys, anom_w = px.keys, px.anom_keys, px.anom_w
    px.keys = px.anom_keys = np.empty(0, dtype=np.uint64)
    px.anom_w = None
    count = keys.size
    keys.sort()
    first = np.empty(count, dtype=bool)  # first pixel of each run of equal keys
    first[0] = True
    np.not_equal(keys[1:], keys[:-1], out=first[1:])
    starts = np.flatnonzero(first)
    del first
    distinct = keys[starts]
    del keys
    neg = np.empty(starts.size, dtype=np.int64)  # group sizes, minus positives below
    np.subtract(starts[1:], starts[:-1], out=neg[:-1])
    neg[-1] = count - starts[-1]
    del starts
    # Anomalous pixels find their tie group by binary search; only they carry weights.
    group = np.searchsorted(distinct, anom_keys)
    del distinct, anom_keys
    pos = np.bincount(group, minlength=neg.size).astype(np.int64, copy=False)
    neg -= pos
    wsum = None
    if anom_w is not None:
        wsum = np.bincount(group, weights=anom_w, minlength=neg.size).astype(np.float64, copy=False)
    return pos[::-1], neg[::-1], (wsum[::-1] if wsum is not None else None)


class _Spill:
    """Per-chunk temporary files of the pixels to sort, written in one pass over the images.

    Chunk i has two files in ``directory``: ``i.normal``, the keys (uint64) of its normal
    pixels, and ``i.anomalous``, ``_ANOMALOUS_RECORD`` (key, region size) records of its
    anomalous ones, each in the order of the pass (images, then pixels row-major), so that
    ``load`` gives the pixels in the same order as a pass over the images would.
    Appended pixels are buffered and written ``flush_px`` at a time, one file open at a time.
    """

    def __init__(self, directory: Path, chunks: Sequence[_Chunk], flush_px: int) -> None:
        self.directory = directory
        self.chunks = chunks
        self.flush_px = flush_px
        self.nbytes = 0  # written so far
        # Chunk index -> (normal keys, anomalous records) not yet written.
        self._pending: dict[int, tuple[list[NDArray], list[NDArray]]] = {}
        self._pending_px = 0
        self._id_dtype = np.uint16 if len(chunks) <= 1 << 16 else np.intp  # radix sort if 16 bits

    def _paths(self, i: int) -> tuple[Path, Path]:
        return self.directory / f"{i}.normal", self.directory / f"{i}.anomalous"

    def append(
        self,
        ids: NDArray[np.intp],
        keys: NDArray[np.uint64],
        anom_ids: NDArray[np.intp],
        records: NDArray[np.void],
    ) -> None:
        """Add normal pixels (N,) by chunk index and key, anomalous ones (A,) by chunk, record."""
        for which, (chunk_ids, data) in enumerate(((ids, keys), (anom_ids, records))):
            if chunk_ids.size == 0:
                continue
            first = int(chunk_ids[0])
            if (chunk_ids == first).all():
                groups = [(first, data)]
            else:  # group by chunk; the stable sort keeps the pass's order within each chunk
                order = np.argsort(chunk_ids.astype(self._id_dtype), kind="stable")
                data = data[order]
                sizes = np.bincount(chunk_ids, minlength=len(self.chunks))
                present = np.flatnonzero(sizes)
                ends = np.cumsum(sizes[present]).tolist()
                starts = [0, *ends[:-1]]
                groups = [
                    (c, data[s:e]) for c, s, e in zip(present.tolist(), starts, ends, strict=True)
                ]
            for c, part in groups:
                self._pending.setdefault(c, ([], []))[which].append(part)
            self._pending_px += data.size
        if self._pending_px >= self.flush_px:
            self.flush()

    def flush(self) -> None:
        """Append the buffered pixels to their files."""
        for c, parts in self._pending.items():
            for path, arrays in zip(self._paths(c), parts, strict=True):
                if arrays:
                    with open(path, "ab") as f:
                        for a in arrays:  # contiguous: written as they are in memory
                            f.write(a.data)
                            self.nbytes += a.nbytes
        self._pending.clear()
        self._pending_px = 0

    def load(self, i: int, labelled: bool) -> _ChunkPixels:
        """The pixels of chunk i from its files (PRO weights if ``labelled``); deletes them."""
        chunk = self.chunks[i]
        n_normal = chunk.count - chunk.pos
        keys = np.empty(chunk.count, dtype=np.uint64)
        records = np.empty(chunk.pos, dtype=_ANOMALOUS_RECORD)
        for path, out in zip(self._paths(i), (keys[:n_normal], records), strict=True):
            _read_file(path, out)
            path.unlink(missing_ok=True)
        keys[n_normal:] = records["key"]
        anom_keys = np.ascontiguousarray(records["key"])
        # 1/size in float64 from the exact integer size: the same as when the image was read.
        anom_w = 1.0 / records["size"].astype(np.float64) if labelled else None
        return _ChunkPixels(keys, anom_keys, anom_w)


def _read_file(path: Path, out: NDArray) -> None:
    """Fill the contiguous array ``out`` with the bytes of ``path``, which must match its size."""
    if out.nbytes == 0:
        return
    with open(path, "rb", buffering=0) as f:
        if os.fstat(f.fileno()).st_size != out.nbytes:  # pragma: no cover - a bug guard
            raise RuntimeError(f"{path} does not hold the expected {out.nbytes} bytes")
        view = out.view(np.uint8).data
        done = 0
        while done < out.nbytes:
            n = f.readinto(view[done:])
            if not n:  # pragma: no cover - the file shrank while being read
                raise RuntimeError(f"{path} ended after {done} of {out.nbytes} bytes")
            done += n


def _take(buckets: _Buckets, index: slice) -> _Buckets:
    """The buckets ``index`` selects."""
    return _Buckets(*(getattr(buckets, f)[index] for f in _Buckets.__annotations__))


def _pixel_metrics(
    masks: Sequence[NDArray[np.bool_]], maps: Sequence[NDArray], fpr_limit: float = 0.3
) -> dict[str, float]:
    """``PixelMetrics`` of validated in-memory images, re-read from the lists if over budget."""
    # The budget is looked up at call time (not bound as a default) so that it can be patched.
    metrics = PixelMetrics(budget_px=DEFAULT_BUDGET_PX, fpr_limit=fpr_limit)
    for mask, amap in zip(masks, maps, strict=True):
        metrics.add(mask, amap)
    return metrics.result(reread=lambda: zip(masks, maps, strict=True))


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
    Computed by ``PixelMetrics`` (the increments are summed per tie group, then cumulatively).
    Returns nan when there is no ground-truth region or no normal pixel; raises ValueError on
    mismatched shapes or non-finite scores.
    """
    if not 0.0 < fpr_limit <= 1.0:
        raise ValueError(f"fpr_limit must be in (0, 1], got {fpr_limit}")
    masks, maps = _paired_images(gt_masks, anomaly_maps)
    return _pixel_metrics(masks, maps, fpr_limit)["aupro"]


def compute_metrics(
    labels: ArrayLike,
    scores: ArrayLike,
    gt_masks: MaskInput,
    anomaly_maps: MaskInput,
) -> dict[str, float]:
    """All seven metrics, keyed and ordered as ``METRIC_NAMES``.

    ``labels`` (N,) int 0/1 and ``scores`` (N,) float give the image-level metrics;
    ``gt_masks`` (N, H, W) bool or a list of N (H_i, W_i) bool arrays and ``anomaly_maps`` of
    the same shape(s), float, give the pixel-level metrics (all pixels of all images pooled,
    as in MVTec AD) and AUPRO, computed by ``PixelMetrics``. Raises ValueError on any shape
    mismatch.
    """
    y = np.asarray(labels)
    s = np.asarray(scores)
    if y.ndim != 1 or s.ndim != 1 or y.shape != s.shape:
        raise ValueError(f"labels {y.shape} and scores {s.shape} must be 1D of equal length")
    masks, maps = _paired_images(gt_masks, anomaly_maps)
    if len(masks) != y.shape[0]:
        raise ValueError(f"{y.shape[0]} labels but {len(masks)} gt_masks / anomaly_maps")
    pixel = _pixel_metrics(masks, maps)
    return {
        "i_auroc": auroc(y, s),
        "i_ap": average_precision(y, s),
        "i_f1max": f1_max(y, s),
        "p_auroc": pixel["p_auroc"],
        "p_ap": pixel["p_ap"],
        "p_f1max": pixel["p_f1max"],
        "aupro": pixel["aupro"],
    }
