"""Patches of a part cloud: farthest-point-sampled centres and spherical neighbourhoods.

A patch ``P_j`` is every point within radius ``R`` of its centre ``c_j`` (COSARAD, section
III), resampled to a fixed size for a network: a seeded subset without replacement when it
has more points, every point plus seeded repeats when it has fewer. A patch with fewer than
``|P|_min`` points is left out (a partial scan that never saw that place).
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree


def farthest_point_sample(points: np.ndarray, n: int, start: int = 0) -> np.ndarray:
    """Indices (n,) int64 of ``n`` farthest-point-sampled ``points`` (N, 3), starting at
    index ``start`` (deterministic). Fewer when the cloud has fewer than ``n`` points."""
    P = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    n = min(int(n), len(P))
    out = np.empty(n, dtype=np.int64)
    if n == 0:
        return out
    d2 = np.full(len(P), np.inf)
    i = int(start)
    for k in range(n):
        out[k] = i
        d2 = np.minimum(d2, np.sum((P - P[i]) ** 2, axis=1))
        i = int(np.argmax(d2))
    return out


def patch_members(points: np.ndarray, centres: np.ndarray, radius_m: float) -> list[np.ndarray]:
    """For each centre (L, 3), the indices (sorted int64) of ``points`` (N, 3) within
    ``radius_m`` of it."""
    tree = cKDTree(np.asarray(points, dtype=np.float64))
    found = tree.query_ball_point(np.asarray(centres, dtype=np.float64), r=radius_m)
    return [np.asarray(sorted(ix), dtype=np.int64) for ix in found]


def resample(members: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """``size`` indices drawn from ``members``: a subset without replacement when there are
    enough, else all of them plus repeats drawn with replacement."""
    m = np.asarray(members, dtype=np.int64)
    if len(m) >= size:
        return np.sort(rng.choice(m, size=size, replace=False))
    if len(m) == 0:
        raise ValueError("cannot resample an empty patch")
    return np.concatenate([m, rng.choice(m, size=size - len(m), replace=True)])


def normalised_patches(
    points: np.ndarray,
    centres: np.ndarray,
    members: list[np.ndarray],
    radius_m: float,
    size: int,
    seed: int,
) -> np.ndarray:
    """(L, size, 3) float32 patches centred on their centres and divided by ``radius_m``
    (inside the unit ball), each resampled to ``size`` points with ``rng([seed, j])``;
    empty patches are all zeros (callers leave them out)."""
    P = np.asarray(points, dtype=np.float64)
    out = np.zeros((len(centres), size, 3), dtype=np.float32)
    for j, (c, m) in enumerate(zip(np.asarray(centres), members, strict=True)):
        if len(m) == 0:
            continue
        ix = resample(m, size, np.random.default_rng([seed, j]))
        out[j] = ((P[ix] - c) / radius_m).astype(np.float32)
    return out
