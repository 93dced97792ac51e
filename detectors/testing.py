"""Tiny synthetic real/twin sample pairs built in code, for detector tests and contract checks."""

from __future__ import annotations

import numpy as np

from scenarios.interfaces import BoolArray, FloatArray, ImageU8, Observation, PartSample, Sample

BACKGROUND_LEVEL = 20.0
DISC_LEVEL = 128.0
NOISE_STD = 2.0
BLOB_CONTRAST = 90.0


def _disc(h: int, w: int, cy: float, cx: float, radius: float) -> BoolArray:
    """(h, w) bool mask of pixel centres within ``radius`` of (cy, cx)."""
    yy, xx = np.mgrid[0:h, 0:w]
    return np.asarray((yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2, dtype=bool)


def pinhole_K(size: tuple[int, int]) -> FloatArray:
    """(3, 3) float64 pinhole K for ``size`` = (W, H): f = W px, centred principal point."""
    w, h = size
    return np.array(
        [[float(w), 0.0, (w - 1) / 2.0], [0.0, float(w), (h - 1) / 2.0], [0.0, 0.0, 1.0]],
        dtype=np.float64,
    )


def make_synthetic_samples(
    n: int, size: tuple[int, int] = (64, 64), seed: int = 0, anomalous: bool = False
) -> list[Sample]:
    """``n`` seeded synthetic pairs of image ``size`` = (W, H); twin = grey disc on dark ground.

    The real image is the twin with a benign brightness change (gain 0.92..1.08, offset
    -4..4 grey levels) plus Gaussian noise (std 2 grey levels); when ``anomalous`` it also gets a
    bright or dark disc-shaped blob (+-90 grey levels) fully inside the part disc, marked in
    ``gt_mask`` with label 1. Normal samples have an all-False ``gt_mask`` and label 0.
    ``fg_mask`` is the part disc, ``K`` a simple pinhole, ``T_base_cam`` the identity. All
    randomness comes from ``np.random.default_rng(seed)``.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    w, h = int(size[0]), int(size[1])
    if w < 16 or h < 16:
        raise ValueError(f"size must be at least (16, 16), got {size}")
    rng = np.random.default_rng(seed)
    K = pinhole_K((w, h))
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    radius = 0.35 * min(w, h)
    fg = _disc(h, w, cy, cx, radius)
    twin_f = np.where(fg, DISC_LEVEL, BACKGROUND_LEVEL)
    twin_rgb: ImageU8 = np.repeat(twin_f[..., None], 3, axis=2).astype(np.uint8)
    kind = "anomalous" if anomalous else "normal"
    samples: list[Sample] = []
    for i in range(n):
        gain = rng.uniform(0.92, 1.08)
        offset = rng.uniform(-4.0, 4.0)
        real_f = twin_rgb.astype(np.float64) * gain + offset
        real_f += rng.normal(0.0, NOISE_STD, size=real_f.shape)
        gt = np.zeros((h, w), dtype=bool)
        if anomalous:
            blob_r = max(2.0, 0.08 * min(w, h))
            # Blob centre uniformly inside the part disc shrunk so the blob stays inside it.
            reach = radius - blob_r - 1.0
            angle = rng.uniform(0.0, 2.0 * np.pi)
            dist = reach * np.sqrt(rng.uniform(0.0, 1.0))
            by, bx = cy + dist * np.sin(angle), cx + dist * np.cos(angle)
            gt = _disc(h, w, by, bx, blob_r) & fg
            polarity = 1.0 if rng.uniform() < 0.5 else -1.0
            real_f[gt] += polarity * BLOB_CONTRAST
        real_rgb: ImageU8 = np.clip(np.rint(real_f), 0, 255).astype(np.uint8)
        eye = np.eye(4, dtype=np.float64)
        real = Observation(rgb=real_rgb, K=K.copy(), T_base_cam=eye.copy(), timestamp=float(i))
        twin = Observation(rgb=twin_rgb.copy(), K=K.copy(), T_base_cam=eye.copy())
        samples.append(
            Sample(
                id=f"synthetic-{kind}-{seed}-{i}",
                real=real,
                twin=twin,
                fg_mask=fg.copy(),
                gt_mask=gt,
                label=int(gt.any()),
                part_id="synthetic-disc",
                category="synthetic",
                view_id=i,
            )
        )
    return samples


#: Synthetic part: an L-shaped plate (metres) with a boss, and the extra bump of a defect.
PLATE_MM = (80.0, 60.0)
NOTCH_MM = (40.0, 30.0)
BOSS_AT_MM = (-20.0, -12.0)
BUMP_HEIGHT_MM = 2.0
BUMP_SIGMA_MM = 3.0


def _bump(xy: FloatArray, at: tuple[float, float], height: float, sigma: float) -> FloatArray:
    d2 = (xy[:, 0] - at[0]) ** 2 + (xy[:, 1] - at[1]) ** 2
    return np.asarray(height * np.exp(-d2 / (2.0 * sigma**2)))


def synthetic_part_points(
    seed: int, n_points: int = 6000, bump_at_mm: tuple[float, float] | None = None
) -> tuple[FloatArray, BoolArray]:
    """Points (N, 3) metres of an L-shaped 80 x 60 mm plate (a 40 x 30 mm notch cut from one
    corner) with a Gaussian boss, in the part frame (not moved), and their defect labels.

    The plate's top (z = boss height, mm) is sampled uniformly (seeded) with 0.05 mm
    Gaussian noise in z. ``bump_at_mm`` adds a defect: a bump of the boss's shape (2 mm high,
    sigma 3 mm) at that (x, y), its points labelled where it rises above 0.2 mm, so the
    bump is normal geometry elsewhere on the part (at the boss).
    """
    rng = np.random.default_rng(seed)
    w, h = PLATE_MM
    xy = np.empty((0, 2))
    while len(xy) < n_points:  # rejection-sample the L outline
        c = rng.uniform([-w / 2, -h / 2], [w / 2, h / 2], size=(n_points, 2))
        keep = ~((c[:, 0] > w / 2 - NOTCH_MM[0]) & (c[:, 1] > h / 2 - NOTCH_MM[1]))
        xy = np.concatenate([xy, c[keep]])
    xy = xy[:n_points]
    z = _bump(xy, BOSS_AT_MM, BUMP_HEIGHT_MM, BUMP_SIGMA_MM)
    labels = np.zeros(n_points, dtype=bool)
    if bump_at_mm is not None:
        extra = _bump(xy, bump_at_mm, BUMP_HEIGHT_MM, BUMP_SIGMA_MM)
        z = z + extra
        labels = extra > 0.2
    z = z + rng.normal(0.0, 0.05, n_points)
    return np.column_stack([xy, z]) / 1000.0, labels


def make_synthetic_parts(
    n: int, seed: int = 0, anomalous: bool = False, n_points: int = 6000
) -> list[PartSample]:
    """``n`` seeded synthetic whole parts (``synthetic_part_points``) for part-level
    detectors, each in its own rigid pose (a turn of up to 180 degrees about z and a shift of
    up to 0.1 m), as parts placed in a cell are; ``anomalous`` ones carry a bump at a seeded
    place on the plate away from the boss."""
    rng = np.random.default_rng([seed, 1])
    kind = "anomalous" if anomalous else "normal"
    parts: list[PartSample] = []
    for i in range(n):
        at = (float(rng.uniform(5.0, 30.0)), float(rng.uniform(-25.0, 0.0))) if anomalous else None
        P, labels = synthetic_part_points(int(rng.integers(2**31)), n_points, at)
        a = rng.uniform(-np.pi, np.pi)
        R = np.array([[np.cos(a), -np.sin(a), 0.0], [np.sin(a), np.cos(a), 0.0], [0, 0, 1.0]])
        P = P @ R.T + np.array([*rng.uniform(-0.1, 0.1, 2), 0.0])
        parts.append(
            PartSample(
                id=f"synthetic-{kind}-{seed}-{i}",
                category="synthetic_plate",
                points=P,
                gt_point_labels=labels,
                label=int(labels.any()),
            )
        )
    return parts
