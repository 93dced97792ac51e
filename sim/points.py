"""Point clouds from depth images: a RealSense-D435-like depth noise model, labels, fusion, PLY.

A renderer gives the ideal z-depth of the scene (float32 metres along the OpenCV optical
axis, 0 where nothing was hit). ``simulate_depth`` turns it into what an active-stereo depth
camera such as the Intel RealSense D435 would report, in this order:

1. **Flying pixels.** Block matching mixes foreground and background inside its window, so
   at a depth discontinuity the matcher reports depths *between* the two surfaces. Here a
   1-px band on the background side of every jump gets ``z_bg + w (z_fg - z_bg)`` with a
   random mix weight ``w ~ U(0, 1)`` (the foreground "fattens" into the background, which is
   what stereo matching does). A jump is a neighbour difference larger than any surface
   flatter than 85 degrees to the view ray could produce over one pixel (``z tan 85 / fx``),
   so steep but continuous surfaces are not mistaken for edges.
2. **Axial noise.** Intel's stereo RMS error formula (D400 datasheet; Grunnet-Jepsen et al.,
   "Tuning depth cameras for best performance", Intel white paper)::

       depth RMS error = z^2 * subpixel / (f_px * baseline)

   i.e. a disparity error of ``subpixel`` px propagated to depth. ``f_px`` is ``K[0, 0]``:
   the depth image is treated as the sensor's native pixel grid. Stereo matching aggregates
   costs over a window, so neighbouring errors are correlated: white noise is smoothed by a
   Gaussian of ``noise_corr_px`` and rescaled so that the per-pixel standard deviation is
   still exactly the formula's (``noise_corr_px = 0`` gives white noise).
3. **Dropouts** (no return, depth 0), each an independent probability per pixel:

   * grazing angle: normals are estimated from the *ideal* depth (back-projected points,
     cross product of the neighbour differences on the smoother side of each pixel); the
     dropout probability ramps linearly from 0 at ``grazing_deg - 10`` to 1 at
     ``grazing_deg + 10`` (65 to 85 degrees by default) -- the projected pattern is
     foreshortened and matching windows straddle large depth changes;
   * dark surfaces: the luminance of ``rgb`` in linear light (Rec. 709 weights on the
     decoded sRGB) below ``dark_level`` ramps linearly to certain dropout at black. The D435
     matches in near infrared; the visible albedo stands in for the IR reflectance;
   * specular surfaces: for a caller-supplied per-pixel specularity s in [0, 1],
     ``specular_dropout * s`` in the highlight (near normal incidence, the emitter sits
     between the imagers) and ``specular_dropout * s^4`` off it (only near-mirrors reflect
     the pattern away everywhere);
   * out of range: measured depth outside ``[min_depth_m, max_depth_m]``.

   Dropouts come in blobs (``dropout_corr_px``): the uniform draw is a smoothed Gaussian
   field through its CDF, so each pixel keeps its probability and neighbours drop together.

With ``enabled=False`` the depth is returned unchanged (the twin's ideal sensor). All
randomness comes from the ``np.random.Generator`` passed in, and the same number of draws is
made whatever the inputs, so the same generator state gives the same bytes.

The rest of the module turns depth into labelled base-frame point clouds
(``depth_to_base_points``, ``labels_from_mask``, ``crop_points``), fuses several views on a voxel
grid (``fuse_points``) and writes / reads binary PLY files (``ply_bytes``, ``read_ply``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from numpy.typing import NDArray
from scipy.special import ndtr

from sim import geometry
from sim.geometry import transform_points
from sim.render.camera_model import srgb_to_linear

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]
IntArray = NDArray[np.int64]

__all__ = [
    "DepthSensorModel",
    "crop_points",
    "depth_to_base_points",
    "fuse_points",
    "label_colors",
    "labels_from_mask",
    "ply_bytes",
    "read_ply",
    "simulate_depth",
    "view_angle_deg",
]


@dataclass(frozen=True)
class DepthSensorModel:
    """RealSense D435-like active stereo depth noise (see the module docstring for the model).

    Sources of the defaults:

    * ``baseline_m = 0.050``: the D435 stereo baseline, 50 mm (Intel RealSense D400 Series
      Product Family Datasheet).
    * ``subpixel = 0.08``: the disparity RMS error in px that Intel's depth-tuning white paper
      (Grunnet-Jepsen et al., "Tuning depth cameras for best performance") uses in its RMS
      error formula ``z^2 * subpixel / (f_px * baseline)`` for a well-textured target.
    * ``min_depth_m = 0.105``: the D435's minimum depth (Min-Z) at 848x480 in the datasheet;
      closer objects fall outside the disparity search range and return nothing.
    * ``max_depth_m = 3.0``: the upper end of Intel's quoted ideal range (0.3-3 m) for the
      D435; beyond it the error grows quadratically and returns thin out.
    * ``grazing_deg = 75.0``: not a datasheet value; a tuning choice. The white paper notes
      that steeply inclined surfaces lose depth; half the returns drop out at 75 degrees
      between the surface normal and the view ray, none below 65 and all beyond 85.
    * ``dark_level = 0.06``: not a datasheet value; a tuning choice. Dark, low-reflectivity
      surfaces (the white paper's "black objects") return a weak pattern; below 6 % linear
      luminance (sRGB ~70/255) returns start to drop out, all at black.
    * ``specular_dropout = 0.6``: not a datasheet value; a tuning choice. Shiny surfaces
      give holes (white paper): in the highlight, within about ``SPECULAR_LOBE_DEG`` of
      normal incidence (the emitter sits between the imagers), a pixel of specularity s
      drops with probability 0.6 s; off it, only near-mirrors lose the pattern (0.6 s^4). A
      fully specular pixel drops with probability 0.6 at any angle.
    * ``flying_pixels = True``: mixed depths at discontinuities, a known stereo artefact that
      the RealSense post-processing filters exist to remove.
    * ``noise_corr_px = 1.0``: Gaussian sigma (px) of the spatial correlation of the axial
      noise, standing in for the matching window; 0 gives white noise.
    * ``dropout_corr_px = 2.0``: Gaussian sigma (px) of the spatial correlation of the
      dropouts (a tuning choice): holes come in blobs a few pixels wide, as the matching
      window fails together; 0 drops pixels independently.
    * ``enabled = False``: ideal depth (no noise, no dropouts), for twins.
    """

    baseline_m: float = 0.050
    subpixel: float = 0.08
    min_depth_m: float = 0.105
    max_depth_m: float = 3.0
    grazing_deg: float = 75.0
    dark_level: float = 0.06
    specular_dropout: float = 0.6
    flying_pixels: bool = True
    enabled: bool = True
    noise_corr_px: float = 1.0
    dropout_corr_px: float = 2.0

    def __post_init__(self) -> None:
        if self.baseline_m <= 0.0:
            raise ValueError(f"baseline_m must be > 0, got {self.baseline_m}")
        if self.subpixel < 0.0:
            raise ValueError(f"subpixel must be >= 0, got {self.subpixel}")
        if not 0.0 <= self.min_depth_m < self.max_depth_m:
            raise ValueError(
                f"need 0 <= min_depth_m < max_depth_m, got {self.min_depth_m}, {self.max_depth_m}"
            )
        if self.dark_level < 0.0:
            raise ValueError(f"dark_level must be >= 0, got {self.dark_level}")
        if not 0.0 <= self.specular_dropout <= 1.0:
            raise ValueError(f"specular_dropout must be in [0, 1], got {self.specular_dropout}")
        if self.noise_corr_px < 0.0:
            raise ValueError(f"noise_corr_px must be >= 0, got {self.noise_corr_px}")
        if self.dropout_corr_px < 0.0:
            raise ValueError(f"dropout_corr_px must be >= 0, got {self.dropout_corr_px}")

    def depth_rms_m(self, depth_m: np.ndarray, fx_px: float) -> FloatArray:
        """Axial RMS error (m) at ``depth_m`` (any shape, m) for focal length ``fx_px``."""
        z = np.asarray(depth_m, dtype=np.float64)
        return z * z * self.subpixel / (fx_px * self.baseline_m)


# Half-width (deg) of the grazing-angle dropout ramp around DepthSensorModel.grazing_deg.
_GRAZING_RAMP_DEG = 10.0
# A neighbour difference is a discontinuity when it exceeds what a surface at this angle to the
# view ray would produce over one pixel: z * tan(85 deg) / fx, about 11 pixel footprints.
_JUMP_SLOPE = float(np.tan(np.deg2rad(85.0)))
# Rec. 709 / sRGB luminance weights (linear light).
_LUMA = np.array([0.2126, 0.7152, 0.0722])


def _pixel_rays(H: int, W: int, K: np.ndarray) -> FloatArray:
    """(H, W, 3) rays (x/z, y/z, 1) of the pixel centres for an undistorted pinhole K."""
    u = np.arange(W, dtype=np.float64)
    v = np.arange(H, dtype=np.float64)
    x = (u - K[0, 2]) / K[0, 0]
    y = (v - K[1, 2]) / K[1, 1]
    rays = np.empty((H, W, 3))
    rays[..., 0] = x[None, :]
    rays[..., 1] = y[:, None]
    rays[..., 2] = 1.0
    return rays


def _tangent(P: FloatArray, valid: BoolArray, axis: int) -> tuple[FloatArray, BoolArray]:
    """Per-pixel tangent of the point map ``P`` (H, W, 3) along image ``axis`` (1 = u, 0 = v).

    Takes the forward or backward neighbour difference, whichever is defined and changes
    depth less, so that a pixel next to a discontinuity gets the tangent of its own surface.
    """
    n = P.shape[axis]
    diff = np.diff(P, axis=axis)  # element i: P[i + 1] - P[i]
    pair_ok = np.logical_and(
        np.take(valid, range(1, n), axis=axis), np.take(valid, range(n - 1), axis=axis)
    )
    pad_shape = list(P.shape)
    pad_shape[axis] = 1
    nan_pad = np.full(pad_shape, np.nan)
    fwd = np.concatenate([diff, nan_pad], axis=axis)
    bwd = np.concatenate([nan_pad, diff], axis=axis)
    false_pad = np.zeros(pad_shape[:2], dtype=bool)
    fwd_ok = np.concatenate([pair_ok, false_pad], axis=axis)
    bwd_ok = np.concatenate([false_pad, pair_ok], axis=axis)
    dz_f = np.where(fwd_ok, np.abs(fwd[..., 2]), np.inf)
    dz_b = np.where(bwd_ok, np.abs(bwd[..., 2]), np.inf)
    use_fwd = dz_f <= dz_b
    t = np.where(use_fwd[..., None], fwd, bwd)
    ok = fwd_ok | bwd_ok
    return np.where(ok[..., None], t, 0.0), ok


def view_angle_deg(depth: np.ndarray, K: np.ndarray) -> FloatArray:
    """Angle (deg) between the estimated surface normal and the view ray, per pixel.

    ``depth`` is an (H, W) z-depth map (m, 0 = no hit); returns (H, W) float64 in [0, 90],
    nan where no normal can be estimated (no hit, or no valid neighbour along u or v).
    Normals are the cross product of the u and v tangents of the back-projected points.
    """
    z = np.nan_to_num(np.asarray(depth, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    valid = z > 0.0
    P = _pixel_rays(z.shape[0], z.shape[1], np.asarray(K, dtype=np.float64)) * z[..., None]
    tu, ok_u = _tangent(P, valid, axis=1)
    tv, ok_v = _tangent(P, valid, axis=0)
    normal = np.cross(tu, tv)
    n_norm = np.linalg.norm(normal, axis=-1)
    p_norm = np.linalg.norm(P, axis=-1)
    ok = valid & ok_u & ok_v & (n_norm > 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = np.abs(np.sum(normal * P, axis=-1)) / (n_norm * p_norm)
    angle = np.degrees(np.arccos(np.clip(cos, 0.0, 1.0)))
    return np.where(ok, angle, np.nan)


def _flying(z: FloatArray, fx: float, weights: FloatArray) -> FloatArray:
    """Mix depth across discontinuities on the background side (a 1-px band)."""
    valid = z > 0.0
    fg = np.full(z.shape, np.inf)
    # For each 4-neighbour direction, a pixel whose neighbour is nearer by more than the jump
    # threshold is on the background side of an edge; remember its nearest such neighbour.
    for dv, du in ((0, 1), (0, -1), (1, 0), (-1, 0)):
        nb = np.zeros_like(z)
        src_v = slice(max(dv, 0), z.shape[0] + min(dv, 0))
        dst_v = slice(max(-dv, 0), z.shape[0] + min(-dv, 0))
        src_u = slice(max(du, 0), z.shape[1] + min(du, 0))
        dst_u = slice(max(-du, 0), z.shape[1] + min(-du, 0))
        nb[dst_v, dst_u] = z[src_v, src_u]
        jump = valid & (nb > 0.0) & (z - nb > nb * _JUMP_SLOPE / fx)
        fg = np.where(jump, np.minimum(fg, nb), fg)
    band = np.isfinite(fg)
    out = z.copy()
    out[band] = z[band] + weights[band] * (fg[band] - z[band])
    return out


#: Half-width (deg, 1/e) of the highlight around normal incidence where shiny surfaces
#: lose the projected pattern.
SPECULAR_LOBE_DEG = 20.0


def _correlated_normal(
    shape: tuple[int, int], sigma_px: float, rng: np.random.Generator
) -> FloatArray:
    """(H, W) zero-mean, unit-variance Gaussian noise, smoothed by a Gaussian of ``sigma_px``.

    White noise is drawn on a grid padded by the kernel radius and filtered without touching
    the border, then divided by the kernel's L2 norm, so every pixel has variance exactly 1.
    """
    H, W = shape
    if sigma_px <= 0.0:
        return rng.standard_normal((H, W))
    r = int(np.ceil(3.0 * sigma_px))
    white = rng.standard_normal((H + 2 * r, W + 2 * r))
    k = cv2.getGaussianKernel(2 * r + 1, sigma_px, cv2.CV_64F)
    smooth = cv2.sepFilter2D(white, cv2.CV_64F, k, k, borderType=cv2.BORDER_CONSTANT)
    # Variance of sum_ij k_i k_j e_ij with unit white e is (sum k^2)^2.
    return smooth[r : r + H, r : r + W] / float(np.sum(k * k))


def simulate_depth(
    depth: np.ndarray,
    K: np.ndarray,
    rgb: np.ndarray | None,
    specular: np.ndarray | None,
    model: DepthSensorModel,
    rng: np.random.Generator,
) -> np.ndarray:
    """What a D435-like sensor reports for an ideal z-depth map (see the module docstring).

    ``depth`` : (H, W) float, m, z along the optical axis, 0 (or non-finite) = no hit.
    ``K`` : (3, 3) intrinsics of the depth image. ``rgb`` : (H, W, 3) sRGB image (uint8, or
    float in [0, 1]) registered to the depth, or None (no dark dropouts). ``specular`` : (H, W)
    specularity in [0, 1], or None (no specular dropouts). Returns (H, W) float32 metres with
    0 where the sensor returns nothing. With ``model.enabled`` False it returns a float32 copy
    of ``depth`` and draws nothing from ``rng``.
    """
    d_in = np.asarray(depth)
    if d_in.ndim != 2:
        raise ValueError(f"depth must be (H, W), got shape {d_in.shape}")
    if not model.enabled:
        return d_in.astype(np.float32, copy=True)
    H, W = d_in.shape
    K = np.asarray(K, dtype=np.float64)
    if K.shape != (3, 3):
        raise ValueError(f"K must be (3, 3), got {K.shape}")
    fx = float(K[0, 0])
    z0 = np.nan_to_num(d_in.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    z0[z0 < 0.0] = 0.0
    valid = z0 > 0.0

    # Fixed draw order and sizes, whatever the inputs: same generator state, same bytes.
    mix = rng.random((H, W))
    noise = _correlated_normal((H, W), model.noise_corr_px, rng)
    # Dropouts come in blobs (stereo matching fails over its window, not per pixel): the
    # uniform draw is a smoothed Gaussian field through its CDF (a Gaussian copula), so
    # each pixel still drops with exactly its probability, but neighbours drop together.
    u_drop = ndtr(_correlated_normal((H, W), model.dropout_corr_px, rng))

    # 1. Flying pixels (from the ideal depth).
    z = _flying(z0, fx, mix) if model.flying_pixels else z0.copy()

    # 2. Axial noise, its RMS from the formula at the (possibly mixed) depth.
    z = np.where(valid, z + model.depth_rms_m(z, fx) * noise, 0.0)

    # 3. Dropouts: independent causes, combined as 1 - prod(1 - p_i).
    keep = np.ones((H, W))
    angle = view_angle_deg(z0, K)
    lo = model.grazing_deg - _GRAZING_RAMP_DEG
    p_graze = np.clip((angle - lo) / (2.0 * _GRAZING_RAMP_DEG), 0.0, 1.0)
    keep *= 1.0 - np.nan_to_num(p_graze, nan=0.0)
    if rgb is not None:
        img = np.asarray(rgb)
        if img.shape != (H, W, 3):
            raise ValueError(f"rgb must be ({H}, {W}, 3), got {img.shape}")
        srgb = img / 255.0 if img.dtype == np.uint8 else img.astype(np.float64)
        lum = srgb_to_linear(np.clip(srgb, 0.0, 1.0)).astype(np.float64) @ _LUMA
        if model.dark_level > 0.0:
            keep *= 1.0 - np.clip(1.0 - lum / model.dark_level, 0.0, 1.0)
    if specular is not None:
        spec = np.asarray(specular, dtype=np.float64)
        if spec.shape != (H, W):
            raise ValueError(f"specular must be ({H}, {W}), got {spec.shape}")
        spec = np.clip(spec, 0.0, 1.0)
        # Shiny surfaces lose the pattern in the highlight, where they face the camera and
        # its co-located emitter (a lobe of SPECULAR_LOBE_DEG around normal incidence);
        # off the highlight only a near-mirror (spec -> 1) reflects the pattern away.
        lobe = np.exp(-((np.nan_to_num(angle, nan=90.0) / SPECULAR_LOBE_DEG) ** 2))
        keep *= 1.0 - model.specular_dropout * (spec * lobe + spec**4 * (1.0 - lobe))
    drop = u_drop >= keep
    drop |= (z < model.min_depth_m) | (z > model.max_depth_m)
    z[drop | ~valid] = 0.0
    return z.astype(np.float32)


def depth_to_base_points(
    depth: np.ndarray,
    K: np.ndarray,
    T_base_cam: np.ndarray,
    dist: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Back-project every pixel with depth > 0 into the base frame.

    ``depth`` : (H, W) z-depth (m, along the optical axis, not ray length), 0 = no return.
    ``K`` : (3, 3). ``T_base_cam`` : (4, 4). ``dist`` : (k1, k2, p1, p2[, k3]) or None; when
    given and non-zero the depth image lives on the distorted pixel grid and pixel centres
    are undistorted by ``sim.geometry.undistort_normalized`` (OpenCV's fixed-point
    inversion, run to convergence). Returns ``(points, pixel_idx)``:
    (N, 3) float64 metres in the base frame and (N,) int64 flat row-major indices
    ``v * W + u`` into the (H, W) image, in increasing order.
    """
    D = np.asarray(depth, dtype=np.float64)
    if D.ndim != 2:
        raise ValueError(f"depth must be (H, W), got shape {D.shape}")
    d = None if dist is None else np.asarray(dist, dtype=np.float64).reshape(-1)
    if d is not None and d.size not in (4, 5):
        raise ValueError(f"dist must have 4 or 5 coefficients, got {d.size}")
    if d is not None and d.size == 4:
        d = np.append(d, 0.0)
    # One back-projection for the whole code base: sim.geometry's (camera frame, the
    # OpenCV distortion inverted to convergence), here moved into the base frame.
    P_cam, mask = geometry.depth_to_points(D, K, d)
    idx = np.flatnonzero(mask.reshape(-1)).astype(np.int64)
    return transform_points(T_base_cam, P_cam), idx


def labels_from_mask(mask: np.ndarray, pixel_idx: np.ndarray) -> np.ndarray:
    """Per-point bool labels (N,) from an (H, W) pixel mask and the flat pixel indices
    of ``depth_to_base_points``."""
    return np.asarray(mask, dtype=bool).reshape(-1)[np.asarray(pixel_idx, dtype=np.int64)]


def crop_points(
    points: np.ndarray,
    T_base_obj: np.ndarray,
    bounds_obj: np.ndarray,
    margin_m: float,
    min_height_m: float | None = 0.001,
) -> np.ndarray:
    """(N,) bool keep-mask of base-frame points inside an object-frame box, above the table.

    ``points`` : (N, 3) m, base frame. ``bounds_obj`` : (2, 3) min / max corners of an
    axis-aligned box in the object frame posed at ``T_base_obj`` (4, 4), grown by
    ``margin_m`` on every side. If ``min_height_m`` is not None, points must also have base
    z > ``min_height_m`` (removes the table plane at z = 0 as plane removal would).
    """
    P = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    B = np.asarray(bounds_obj, dtype=np.float64)
    if B.shape != (2, 3):
        raise ValueError(f"bounds_obj must be (2, 3), got {B.shape}")
    T = np.asarray(T_base_obj, dtype=np.float64)
    # p_obj = R^T (p_base - t) for T_base_obj = [R t].
    P_obj = (P - T[:3, 3]) @ T[:3, :3]
    keep = np.all((P_obj >= B[0] - margin_m) & (P_obj <= B[1] + margin_m), axis=1)
    if min_height_m is not None:
        keep &= P[:, 2] > min_height_m
    return keep


def fuse_points(
    clouds: Sequence[np.ndarray], labels: Sequence[np.ndarray], voxel_m: float = 0.0005
) -> tuple[np.ndarray, np.ndarray]:
    """Fuse labelled base-frame clouds on a voxel grid.

    ``clouds`` : (Ni, 3) m, base frame; ``labels`` : (Ni,) bool, one per point. Points are
    binned into cubes of ``voxel_m`` (keys ``floor(p / voxel_m)``); each occupied voxel gives
    its points' centroid, labelled True if *any* of its points is True: a defect seen by any
    view stays a defect. Voxels come out in lexicographic key order (deterministic). Returns
    ((M, 3) float64, (M,) bool); empty input gives (0, 3) and (0,) arrays.
    """
    if len(clouds) != len(labels):
        raise ValueError(f"{len(clouds)} clouds but {len(labels)} label arrays")
    if voxel_m <= 0.0:
        raise ValueError(f"voxel_m must be > 0, got {voxel_m}")
    pts_list = [np.asarray(c, dtype=np.float64).reshape(-1, 3) for c in clouds]
    lab_list = [np.asarray(lb, dtype=bool).reshape(-1) for lb in labels]
    for i, (p, lb) in enumerate(zip(pts_list, lab_list, strict=True)):
        if p.shape[0] != lb.shape[0]:
            raise ValueError(f"cloud {i} has {p.shape[0]} points but {lb.shape[0]} labels")
    if not pts_list or sum(p.shape[0] for p in pts_list) == 0:
        return np.zeros((0, 3)), np.zeros(0, dtype=bool)
    P = np.concatenate(pts_list)
    L = np.concatenate(lab_list)
    keys = np.floor(P / voxel_m).astype(np.int64)
    _, inv, counts = np.unique(keys, axis=0, return_inverse=True, return_counts=True)
    inv = inv.reshape(-1)
    m = counts.size
    centroids = (
        np.column_stack([np.bincount(inv, weights=P[:, j], minlength=m) for j in range(3)])
        / counts[:, None]
    )
    any_true = np.bincount(inv, weights=L.astype(np.float64), minlength=m) > 0
    return centroids, any_true


_PLY_X, _PLY_LABEL, _PLY_RGB = ("x", "y", "z"), ("label",), ("red", "green", "blue")


def ply_bytes(
    points: np.ndarray, labels: np.ndarray | None = None, colors: np.ndarray | None = None
) -> bytes:
    """A binary little-endian PLY point cloud: float32 x y z, optional uchar label and RGB.

    ``points`` : (N, 3) m (stored as float32). ``labels`` : (N,) bool or 0/1, written as a
    uchar ``label`` property. ``colors`` : (N, 3) uint8, written as uchar red green blue.
    """
    P = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    n = P.shape[0]
    fields: list[tuple[str, str]] = [(name, "<f4") for name in _PLY_X]
    if labels is not None:
        lab = np.asarray(labels).reshape(-1)
        if lab.shape[0] != n:
            raise ValueError(f"{n} points but {lab.shape[0]} labels")
        fields.append(("label", "u1"))
    if colors is not None:
        col = np.asarray(colors)
        if col.shape != (n, 3) or col.dtype != np.uint8:
            raise ValueError(f"colors must be ({n}, 3) uint8, got {col.shape} {col.dtype}")
        fields += [(name, "u1") for name in _PLY_RGB]
    data = np.empty(n, dtype=np.dtype(fields))
    for j, name in enumerate(_PLY_X):
        data[name] = P[:, j]
    if labels is not None:
        data["label"] = lab != 0
    if colors is not None:
        for j, name in enumerate(_PLY_RGB):
            data[name] = col[:, j]
    header = ["ply", "format binary_little_endian 1.0", f"element vertex {n}"]
    header += [f"property {'float' if t == '<f4' else 'uchar'} {name}" for name, t in fields]
    header.append("end_header")
    return ("\n".join(header) + "\n").encode("ascii") + data.tobytes()


def read_ply(path_or_bytes: str | os.PathLike[str] | bytes) -> tuple[np.ndarray, np.ndarray | None]:
    """Read a PLY written by ``ply_bytes``: ((N, 3) float64 points, (N,) bool labels or None).

    Accepts a path or the file's bytes. Anything else -- ASCII or big-endian PLY, other
    elements (faces) or properties, a truncated or over-long payload -- raises ValueError.
    """
    if isinstance(path_or_bytes, bytes | bytearray | memoryview):
        raw = bytes(path_or_bytes)
    else:
        raw = Path(path_or_bytes).read_bytes()
    end = raw.find(b"end_header\n")
    if not raw.startswith(b"ply\n") or end < 0:
        raise ValueError("not a PLY file written by ply_bytes (no 'ply' magic or end_header)")
    lines = raw[:end].decode("ascii", errors="replace").splitlines()
    payload = raw[end + len(b"end_header\n") :]
    if len(lines) < 3 or lines[1] != "format binary_little_endian 1.0":
        got = lines[1] if len(lines) > 1 else ""
        raise ValueError(f"unsupported PLY format {got!r}: only binary_little_endian 1.0")
    parts = lines[2].split()
    if len(parts) != 3 or parts[:2] != ["element", "vertex"] or not parts[2].isdigit():
        raise ValueError(f"unsupported PLY element line {lines[2]!r}: want 'element vertex N'")
    n = int(parts[2])
    props = [tuple(line.split()) for line in lines[3:]]
    expected = [("property", "float", name) for name in _PLY_X]
    layouts = [
        expected,
        expected + [("property", "uchar", name) for name in _PLY_LABEL],
        expected + [("property", "uchar", name) for name in _PLY_RGB],
        expected + [("property", "uchar", name) for name in _PLY_LABEL + _PLY_RGB],
    ]
    if props not in layouts:
        raise ValueError(
            f"unsupported PLY properties {[' '.join(p) for p in props]}: "
            "want float x y z, optional uchar label, optional uchar red green blue"
        )
    dtype = np.dtype([(p[2], "<f4" if p[1] == "float" else "u1") for p in props])
    if len(payload) != n * dtype.itemsize:
        raise ValueError(
            f"PLY payload is {len(payload)} bytes, want {n} vertices x {dtype.itemsize} bytes"
        )
    data = np.frombuffer(payload, dtype=dtype, count=n)
    points = np.column_stack([data[name].astype(np.float64) for name in _PLY_X]).reshape(n, 3)
    labels = data["label"] != 0 if "label" in (dtype.names or ()) else None
    return points, labels


#: label_colors' colours (uint8 RGB): normal points grey-blue, defect points red.
NORMAL_COLOR = (150, 165, 190)
DEFECT_COLOR = (220, 30, 30)


def label_colors(labels: np.ndarray) -> np.ndarray:
    """(N, 3) uint8 RGB per point for pictures: grey-blue for normal, red for defect."""
    lab = np.asarray(labels, dtype=bool).reshape(-1)
    return np.where(lab[:, None], DEFECT_COLOR, NORMAL_COLOR).astype(np.uint8)
