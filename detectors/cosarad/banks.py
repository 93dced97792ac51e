"""Memory banks and scores of COSARAD (paper section III.B, Algorithm 2, eqs. 2 and 3).

- **Location-specific banks**: bank ``M_j`` holds the features of the G templates' patches
  at centre ``c_j``. A test patch's distances to its bank, ``D_j^t`` (G values), are
  compared with the bank's own pairwise distances ``D_j`` (G (G - 1) values, both orders,
  as the paper counts them) by Cohen's effect size with the pooled standard deviation
  (eq. 2). The paper takes the absolute value, so a patch unusually *close* to every
  template also scores; kept as written.
- **Global bank** (the paper's Table IV ablation, PatchCore-style): every template patch
  feature in one bank; a test patch scores its distance to the nearest one, wherever on
  the part that came from.
- **Object score**: an aggregation of the k highest patch scores (``max`` of 1 is the
  paper's baseline; ``sum`` and ``mean`` of the top 3 or 5 its ablation).
- **Point scores**: the Gaussian-weighted average of the patch scores, weight
  ``exp(-||x - c_j||^2 / (2 R^2))`` (eq. 3).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from scipy.spatial.distance import cdist

#: Floor of the pooled standard deviation (features that never vary would divide by 0).
MIN_POOLED_STD = 1e-12

Aggregate = Literal["max", "sum", "mean"]


def cohens_d(d_test: np.ndarray, d_bank: np.ndarray) -> float:
    """Cohen's effect size between two samples of distances (paper eq. 2).

    ``|mean(d_bank) - mean(d_test)| / s``, ``s`` the pooled standard deviation
    ``sqrt(((n_b - 1) var_b + (n_t - 1) var_t) / (n_b + n_t - 2))`` with unbiased
    variances (ddof 1; a sample of one value has variance 0 here).
    """
    t = np.asarray(d_test, dtype=np.float64).ravel()
    b = np.asarray(d_bank, dtype=np.float64).ravel()
    nt, nb = len(t), len(b)
    if nt < 1 or nb < 1 or nt + nb < 3:
        raise ValueError(f"Cohen's d needs n_test + n_bank >= 3, got {nt} and {nb}")
    var_t = float(np.var(t, ddof=1)) if nt > 1 else 0.0
    var_b = float(np.var(b, ddof=1)) if nb > 1 else 0.0
    s = np.sqrt(((nb - 1) * var_b + (nt - 1) * var_t) / (nb + nt - 2))
    return float(abs(b.mean() - t.mean()) / max(float(s), MIN_POOLED_STD))


def pairwise_bank_distances(features: np.ndarray) -> np.ndarray:
    """The G (G - 1) distances between distinct members of one bank (G, d), both orders."""
    F = np.asarray(features, dtype=np.float64)
    D = cdist(F, F)
    return D[~np.eye(len(F), dtype=bool)]


class LocationBanks:
    """One memory bank per patch centre: ``features`` (G, L, d) of G templates at L
    centres, ``valid`` (G, L) bool where a template's patch had enough points."""

    def __init__(self, features: np.ndarray, valid: np.ndarray) -> None:
        F = np.asarray(features, dtype=np.float64)
        V = np.asarray(valid, dtype=bool)
        if F.ndim != 3 or V.shape != F.shape[:2]:
            raise ValueError(f"features (G, L, d) and valid (G, L), got {F.shape} and {V.shape}")
        self.features = F
        self.valid = V
        #: Per centre, the bank's own pairwise distances (None: fewer than 2 members).
        self.own: list[np.ndarray | None] = []
        for j in range(F.shape[1]):
            members = F[V[:, j], j]
            self.own.append(pairwise_bank_distances(members) if len(members) >= 2 else None)

    def score(self, features: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """(L,) float64 Cohen's d of each test patch against its own location's bank;
        NaN where the test patch or the bank is missing."""
        F = np.asarray(features, dtype=np.float64)
        out = np.full(F.shape[0], np.nan)
        for j, own in enumerate(self.own):
            if own is None or not valid[j]:
                continue
            members = self.features[self.valid[:, j], j]
            d_t = np.linalg.norm(members - F[j], axis=1)
            out[j] = cohens_d(d_t, own)
        return out


class GlobalBank:
    """The ablation: every valid template patch feature in one bank (PatchCore-style)."""

    def __init__(self, features: np.ndarray, valid: np.ndarray) -> None:
        F = np.asarray(features, dtype=np.float64)
        self.bank = F[np.asarray(valid, dtype=bool)]
        if len(self.bank) == 0:
            raise ValueError("the global bank is empty: no template patch had enough points")

    def score(self, features: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """(L,) float64 distance of each test patch to its nearest bank feature (NaN where
        the test patch is missing)."""
        F = np.asarray(features, dtype=np.float64)
        out = np.full(F.shape[0], np.nan)
        ok = np.asarray(valid, dtype=bool)
        if ok.any():
            out[ok] = cdist(F[ok], self.bank).min(axis=1)
        return out


def aggregate(patch_scores: np.ndarray, op: Aggregate = "max", k: int = 1) -> float:
    """Object score from the patch scores (NaN = not scored): the max, sum or mean of the
    ``k`` highest (``max`` uses the highest one whatever ``k``); 0.0 if none is scored."""
    s = np.asarray(patch_scores, dtype=np.float64)
    s = np.sort(s[np.isfinite(s)])[::-1]
    if len(s) == 0:
        return 0.0
    if op == "max":
        return float(s[0])
    top = s[: max(1, int(k))]
    return float(top.sum() if op == "sum" else top.mean())


def point_scores(
    points: np.ndarray,
    centres: np.ndarray,
    patch_scores: np.ndarray,
    radius_m: float,
    chunk: int = 8192,
) -> np.ndarray:
    """(N,) float32 scores of ``points`` (N, 3): the Gaussian-weighted mean (sigma =
    ``radius_m``) of the scored patches (eq. 3); all zeros if no patch is scored."""
    P = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    s = np.asarray(patch_scores, dtype=np.float64)
    ok = np.isfinite(s)
    out = np.zeros(len(P), dtype=np.float32)
    if not ok.any():
        return out
    C, s = np.asarray(centres, dtype=np.float64)[ok], s[ok]
    for a in range(0, len(P), chunk):
        d2 = cdist(P[a : a + chunk], C, "sqeuclidean")
        # Shift by each point's nearest centre before exp: far points would underflow to 0/0.
        w = np.exp(-(d2 - d2.min(axis=1, keepdims=True)) / (2.0 * radius_m**2))
        out[a : a + chunk] = (w @ s / w.sum(axis=1)).astype(np.float32)
    return out
