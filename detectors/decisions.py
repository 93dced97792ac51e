"""Image and part decisions over anomaly maps, as the part-in-hand paper makes them
(../shared/papers/padim-robotic-multiview.txt, section 2.4).

- **Image rules**: each turns one anomaly map into a score ``A`` that is compared with a
  threshold ``T`` (the view fires when ``A > T``): the maximum (eq. 1), the p-th
  percentile (eq. 2, p = 99.99) and the cluster rule (2.4.3: a view fires when some
  8-connected cluster of pixels above ``T`` has at least ``S`` pixels). The cluster rule
  is a decision, not a score; ``cluster_score`` gives the exact score that makes it one
  (``cluster_fires(M, T, S) == (T < cluster_score(M, S))``), so that all three rules
  can be swept over thresholds alike.
- **Part rule**: a part is anomalous when at least ``k`` of its views fire (the paper:
  2 of 16); ``part_score`` is the k-th largest view score, so again
  ``part_fires(s, T, k) == (T < part_score(s, k))``.
- **Part metrics**: TPR and TNR against the threshold and ``dt``, the TNR at the highest
  threshold that still detects every anomalous part (the paper's D_T, eq. 3), with a
  plot like the paper's Figure 6.

Everywhere "fires" means strictly above the threshold (``>``). Pure numpy/scipy: no
torch, no simulator.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

#: 8-connectivity for the cluster rule (diagonal neighbours belong to the same cluster).
EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


def _as_map(amap: np.ndarray) -> np.ndarray:
    """Validate an anomaly map: (H, W), non-empty, no NaN; returned as float64."""
    m = np.asarray(amap, dtype=np.float64)
    if m.ndim != 2 or m.size == 0:
        raise ValueError(f"anomaly map must be a non-empty (H, W) array, got shape {m.shape}")
    if np.isnan(m).any():
        raise ValueError("anomaly map contains NaN")
    return m


def _check_min_px(min_px: int) -> None:
    if int(min_px) != min_px or min_px < 1:
        raise ValueError(f"min_px must be an integer >= 1, got {min_px!r}")


def max_score(amap: np.ndarray) -> float:
    """The map's maximum (the paper's A_max, eq. 1).

    amap : (H, W) float, anomaly scores.
    """
    return float(np.max(_as_map(amap)))


def percentile_score(amap: np.ndarray, p: float = 99.99) -> float:
    """The map's p-th percentile (the paper's A_p, eq. 2; p = 99.99 in its Table 1).

    amap : (H, W) float, anomaly scores. numpy's default (linear) interpolation between
    the two nearest pixel values: the paper does not say which it used, and at
    256 x 256 the 99.99th percentile falls between the two largest values.
    """
    if not 0.0 <= p <= 100.0:
        raise ValueError(f"percentile p must lie in [0, 100], got {p}")
    return float(np.percentile(_as_map(amap), p))


def mm_per_px(K: np.ndarray, distance_m: float) -> float:
    """Millimetres on the part per image pixel at ``distance_m``, by the pinhole model.

    K : (3, 3) intrinsics of the image the anomaly map is measured in, pixels;
    the focal length is f = (fx + fy) / 2 and the footprint of one pixel at depth
    ``distance_m`` is 1000 * distance_m / f millimetres. A map at another resolution than
    the image needs K scaled with it (a map of width W_map of an image of width W has
    mm_per_px multiplied by W / W_map).
    """
    K = np.asarray(K, dtype=np.float64)
    if K.shape != (3, 3):
        raise ValueError(f"K must be (3, 3), got shape {K.shape}")
    f = 0.5 * (K[0, 0] + K[1, 1])
    if not (np.isfinite(f) and f > 0.0):
        raise ValueError(f"focal length must be positive, got fx={K[0, 0]}, fy={K[1, 1]}")
    if not (math.isfinite(distance_m) and distance_m > 0.0):
        raise ValueError(f"distance_m must be positive, got {distance_m}")
    return 1000.0 * distance_m / f


def min_cluster_px(defect_mm: float, mm_per_px: float, kernel_px: float) -> int:
    """The cluster rule's minimum size S: the pixel area of the smallest expected defect.

    As the paper (2.4.3) describes it: the defect is a disc of diameter ``defect_mm``
    (its smallest defect: 0.5 mm), i.e. d = defect_mm / mm_per_px pixels of the map;
    the smoothing kernel size ``kernel_px`` (map pixels) is added to that diameter,
    because smoothing spreads a defect's response by about the kernel's width; then
    S = round(pi (d + kernel_px)^2 / 4), at least 1 (halves round up).

    The paper gives S = 131, 86, 67 for maps of 1024, 512 and 256 pixels but neither
    its mm/px nor what it calls the kernel size, so the formula cannot be checked
    exactly. It can reproduce the pattern, though: with the map's pixel doubling in size
    at each halving of the resolution, the three values hold together only for a
    kernel size near 8 px (7.96 to 8.06 px, i.e. 2 sigma for its sigma = 4) and
    d ~ 4.9 px at 1024 (4.89 to 4.94 px: about 0.102 mm per map pixel), giving
    130.7 -> 131, 85.8 -> 86 and 66.8 -> 67. That fit is our inference, not a figure
    the paper states.
    """
    if not (math.isfinite(defect_mm) and defect_mm > 0.0):
        raise ValueError(f"defect_mm must be positive, got {defect_mm}")
    if not (math.isfinite(mm_per_px) and mm_per_px > 0.0):
        raise ValueError(f"mm_per_px must be positive, got {mm_per_px}")
    if not (math.isfinite(kernel_px) and kernel_px >= 0.0):
        raise ValueError(f"kernel_px must be >= 0, got {kernel_px}")
    d_px = defect_mm / mm_per_px + kernel_px
    return max(1, math.floor(math.pi * d_px * d_px / 4.0 + 0.5))


def _largest_cluster(mask: np.ndarray) -> int:
    """Pixel count of the largest 8-connected cluster of a boolean (H, W) mask (0 if none)."""
    labels, n = ndimage.label(mask, structure=EIGHT_CONNECTED)
    if n == 0:
        return 0
    return int(np.bincount(labels.ravel())[1:].max())


def cluster_fires(amap: np.ndarray, threshold: float, min_px: int) -> bool:
    """The cluster rule (2.4.3): some 8-connected cluster of ``amap > threshold`` has at
    least ``min_px`` pixels.

    amap : (H, W) float, anomaly scores; min_px >= 1 (see ``min_cluster_px``).
    """
    _check_min_px(min_px)
    return _largest_cluster(_as_map(amap) > threshold) >= min_px


def cluster_score(amap: np.ndarray, min_px: int) -> float:
    """The cluster rule as a score: the largest value v of the map such that the pixels
    ``>= v`` hold an 8-connected cluster of at least ``min_px`` pixels.

    Exact, with the same strict inequality as ``cluster_fires``: for every threshold T,
    ``cluster_fires(amap, T, min_px) == (T < cluster_score(amap, min_px))``. The result is
    one of the map's values, or -inf when the map has fewer than ``min_px`` pixels (it
    never fires). With ``min_px`` = 1 it equals the maximum.

    Why it is exact: clusters only grow as the threshold falls, so "a big enough cluster
    exists" is monotone in the threshold and can be bisected over the map's sorted
    distinct values u_0 < u_1 < ...; for T in [u_i, u_{i+1}) the pixels above T are
    exactly those >= u_{i+1}. Costs O(log(#distinct values)) labellings.
    """
    _check_min_px(min_px)
    m = _as_map(amap)
    if m.size < min_px:
        return -math.inf
    u = np.unique(m)  # sorted ascending, distinct

    def big_enough(i: int) -> bool:
        return _largest_cluster(m >= u[i]) >= min_px

    # Invariant: big_enough(lo) (at u_0 every pixel is in, and the map is one cluster)
    # and not big_enough(hi) (hi == len(u) stands for "no pixel").
    lo, hi = 0, len(u)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if big_enough(mid):
            lo = mid
        else:
            hi = mid
    return float(u[lo])


def _as_view_scores(view_scores: Sequence[float], k: int) -> np.ndarray:
    s = np.asarray(view_scores, dtype=np.float64)
    if s.ndim != 1:
        raise ValueError(f"view scores must be 1-D (one per view), got shape {s.shape}")
    if np.isnan(s).any():
        raise ValueError("view scores contain NaN")
    if int(k) != k or not 1 <= k <= s.size:
        raise ValueError(f"k must be an integer in [1, number of views = {s.size}], got {k!r}")
    return s


def part_fires(view_scores: Sequence[float], threshold: float, k: int = 2) -> bool:
    """The part rule: at least ``k`` views score strictly above ``threshold`` (the paper:
    2 of 16).

    view_scores : (N,) float, one image score per view (any image rule); 1 <= k <= N.
    """
    s = _as_view_scores(view_scores, k)
    return int(np.count_nonzero(s > threshold)) >= k


def part_score(view_scores: Sequence[float], k: int = 2) -> float:
    """The part rule as a score: the k-th largest view score, so that
    ``part_fires(s, T, k) == (T < part_score(s, k))`` for every T.

    view_scores : (N,) float, one image score per view; 1 <= k <= N.
    """
    s = _as_view_scores(view_scores, k)
    return float(np.sort(s)[-k])


@dataclass(frozen=True)
class PartCurve:
    """Part-level TPR and TNR against the threshold, for one decision rule.

    thresholds : (M,) float64, ascending (the first may be -inf);
    tpr : (M,) float64, fraction of anomalous parts with score > threshold (NaN if none);
    tnr : (M,) float64, fraction of normal parts with score <= threshold (NaN if none);
    t_max : the highest of ``thresholds`` with TPR == 1 (NaN if there is none, or no
    anomalous part); dt : TNR at ``t_max`` (the paper's D_T; NaN if ``t_max`` or the TNR
    is undefined).
    """

    thresholds: np.ndarray
    tpr: np.ndarray
    tnr: np.ndarray
    dt: float
    t_max: float


def part_curve(
    part_scores: Sequence[float],
    labels: Sequence[int],
    *,
    thresholds: Sequence[float] | None = None,
) -> PartCurve:
    """TPR, TNR, ``t_max`` and ``dt`` of the part decision ``score > threshold``.

    part_scores : (P,) float, one score per part (``part_score`` of its views);
    labels : (P,) int, 1 for an anomalous part, 0 for a normal one;
    thresholds : by default every distinct part score plus -inf, which is exact: TPR and
    TNR only change at a score, and ``dt`` is then the fraction of normal parts scoring
    below the lowest anomalous one. A given grid (e.g. the paper's 0, 1, ..., 15) is
    sorted and used as is, and ``t_max`` is then the highest grid value with TPR == 1.

    Undefined classes: with no anomalous part the TPR is NaN everywhere, and ``t_max``
    and ``dt`` are NaN; with no normal part the TNR and ``dt`` are NaN (``t_max`` is
    still defined).
    """
    s = np.asarray(part_scores, dtype=np.float64)
    y = np.asarray(labels)
    if s.ndim != 1 or s.size == 0:
        raise ValueError(f"part scores must be a non-empty 1-D array, got shape {s.shape}")
    if y.shape != s.shape:
        raise ValueError(f"labels shape {y.shape} differs from part scores shape {s.shape}")
    if np.isnan(s).any():
        raise ValueError("part scores contain NaN")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0 (normal) or 1 (anomalous)")
    if thresholds is None:
        t = np.unique(np.concatenate([[-np.inf], s]))
    else:
        t = np.unique(np.asarray(thresholds, dtype=np.float64))
        if t.ndim != 1 or t.size == 0 or np.isnan(t).any():
            raise ValueError("thresholds must be a non-empty 1-D sequence without NaN")
    anomalous, normal = s[y == 1], s[y == 0]
    nan = np.full(t.size, np.nan)
    # (M, P) comparisons: fine for the few hundred parts a scenario holds.
    tpr = (anomalous[None, :] > t[:, None]).mean(axis=1) if anomalous.size else nan
    tnr = (normal[None, :] <= t[:, None]).mean(axis=1) if normal.size else nan.copy()
    hits = np.flatnonzero(tpr == 1.0)
    if hits.size == 0:
        return PartCurve(t, tpr, tnr, dt=math.nan, t_max=math.nan)
    i = int(hits[-1])
    return PartCurve(t, tpr, tnr, dt=float(tnr[i]), t_max=float(t[i]))
