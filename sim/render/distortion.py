"""Lens distortion for every backend: warp pinhole passes into a distorted camera's image.

Backends render an ideal pinhole image with the same K and then call ``distort_passes``, so
pyrender and Blender share one lens model (OpenCV k1, k2, p1, p2, k3).
"""

from __future__ import annotations

import functools

import numpy as np

from scenarios.interfaces import RenderOutput
from sim.geometry import undistort_normalized


@functools.lru_cache(maxsize=8)
def _distortion_maps(
    K_bytes: bytes, dist_bytes: bytes, size: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """float32 remap tables: for each distorted pixel, where it lies in the pinhole image."""
    K = np.frombuffer(K_bytes, dtype=np.float64).reshape(3, 3)
    dist = np.frombuffer(dist_bytes, dtype=np.float64)
    W, H = size
    u, v = np.meshgrid(np.arange(W, dtype=np.float64), np.arange(H, dtype=np.float64))
    xy = undistort_normalized(np.column_stack([u.ravel(), v.ravel()]), K, dist)
    map_u = (K[0, 0] * xy[:, 0] + K[0, 1] * xy[:, 1] + K[0, 2]).reshape(H, W)
    map_v = (K[1, 1] * xy[:, 1] + K[1, 2]).reshape(H, W)
    return map_u.astype(np.float32), map_v.astype(np.float32)


def distort_passes(
    out: RenderOutput, K: np.ndarray, dist: np.ndarray, background: tuple[float, float, float]
) -> RenderOutput:
    """Warp pinhole passes into the image of a lens with OpenCV distortion ``dist``.

    Each output pixel looks up where its ray meets the pinhole image (the inverse lens
    model): rgb is sampled bilinearly, depth (z is unchanged along a ray), mask and labels
    by nearest neighbour so they stay exact labels. Pixels whose ray leaves the rendered
    field of view get the background and no part.
    """
    import cv2

    H, W = out.depth.shape
    K64 = np.ascontiguousarray(K, dtype=np.float64)
    d64 = np.ascontiguousarray(dist, dtype=np.float64)
    mu, mv = _distortion_maps(K64.tobytes(), d64.tobytes(), (W, H))
    bg = tuple(float(round(255 * c)) for c in background)
    rgb = np.asarray(
        cv2.remap(
            out.rgb, mu, mv, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=bg
        ),
        dtype=np.uint8,
    )

    def nearest(img: np.ndarray) -> np.ndarray:
        return np.asarray(
            cv2.remap(
                img, mu, mv, cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=(0.0,)
            )
        )

    depth = nearest(out.depth)
    mask = nearest(out.mask.astype(np.uint8)).astype(bool)
    labels = nearest(out.labels).astype(np.int32)
    return RenderOutput(rgb, depth.astype(np.float32), mask, labels)
