"""Twin-residual baselines (AVATAR, Table I): RGB, gradient and SSIM residual of real vs twin.

Every detector here shares one pipeline (``TwinResidualDetector``):

1. convert the real and the pose-matched twin image (H, W, 3) uint8 to float in [0, 1] and to
   grayscale (``skimage.color.rgb2gray``, ITU-R BT.709 luma);
2. compute a per-pixel residual map (H, W) float64 (the only method-specific step);
3. smooth it with a Gaussian of ``sigma_px`` pixels (0 disables);
4. mask it to the twin foreground ``sample.fg_mask`` dilated by a disc of ``dilate_px`` pixels,
   so silhouette edges stay in; pixels outside are 0;
5. divide by the normaliser learnt in ``fit`` and return it as float32 with score = its max.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Annotated, ClassVar

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field, Strict
from scipy import ndimage
from skimage.color import rgb2gray
from skimage.metrics import structural_similarity

from detectors.registry import check_params_model
from scenarios.interfaces import BoolArray, ImageU8, Prediction, Sample

FloatArray = NDArray[np.float64]

NORMALISER_PERCENTILE = 99.0


class ResidualParams(BaseModel):
    """Parameters of every twin-residual detector, with the ranges a real image could use."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    #: Gaussian smoothing of the residual (pixels; 0 disables).
    sigma_px: Annotated[float, Strict()] = Field(2.0, ge=0.0, le=20.0)
    #: Dilation of the twin foreground mask (pixels; 0 keeps the mask as is).
    dilate_px: Annotated[int, Strict()] = Field(2, ge=0, le=32)


def disc_footprint(radius_px: int) -> BoolArray:
    """Disc structuring element (2r+1, 2r+1) bool of pixels within ``radius_px`` of the centre."""
    r = int(radius_px)
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    return np.asarray(xx * xx + yy * yy <= r * r, dtype=bool)


def foreground_mask(fg_mask: BoolArray, dilate_px: int) -> BoolArray:
    """(H, W) bool foreground ``fg_mask`` dilated by a disc of radius ``dilate_px`` (0 = as is)."""
    mask = np.asarray(fg_mask, dtype=bool)
    if dilate_px <= 0 or not mask.any():
        return mask.copy()
    return np.asarray(ndimage.binary_dilation(mask, structure=disc_footprint(dilate_px)))


def to_unit_float(rgb: ImageU8) -> FloatArray:
    """(H, W, 3) uint8 image -> (H, W, 3) float64 in [0, 1]."""
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) uint8 image, got {rgb.dtype} {rgb.shape}")
    return rgb.astype(np.float64) / 255.0


def to_gray(rgb: FloatArray) -> FloatArray:
    """(H, W, 3) float64 in [0, 1] -> (H, W) float64 luma in [0, 1] (``skimage rgb2gray``)."""
    return np.asarray(rgb2gray(rgb), dtype=np.float64)


class TwinResidualDetector:
    """Shared real-vs-twin residual pipeline; subclasses implement ``_residual`` only.

    ``normaliser`` rescales the maps so that 1.0 is roughly the top of normal variation: it is
    the 99th percentile of the (smoothed) foreground residual values over all pixels of the
    training samples seen by ``fit`` (1.0 until then). It serves display and thresholds; ranking
    metrics (AUROC, AP, PRO) are unaffected because it is one positive constant. It is NOT
    min-max normalisation over the test set: test samples never change it.
    """

    name: str = "twin_residual"
    paper_name: ClassVar[str] = "Twin Residual"

    def __init__(self, sigma_px: float = 2.0, dilate_px: int = 2) -> None:
        """Configure smoothing ``sigma_px`` (>= 0, 0 disables) and mask dilation ``dilate_px``."""
        p = check_params_model(
            ResidualParams, {"sigma_px": sigma_px, "dilate_px": dilate_px}, f"{self.name}.params"
        )
        self.sigma_px: float = p["sigma_px"]
        self.dilate_px: int = p["dilate_px"]
        self.normaliser = 1.0

    def __repr__(self) -> str:
        """Readable form with the parameters and the learnt normaliser."""
        return (
            f"{type(self).__name__}(sigma_px={self.sigma_px}, dilate_px={self.dilate_px}, "
            f"normaliser={self.normaliser:.6g})"
        )

    def _residual(
        self,
        real_rgb: FloatArray,
        twin_rgb: FloatArray,
        real_gray: FloatArray,
        twin_gray: FloatArray,
    ) -> FloatArray:
        """Per-pixel residual (H, W) float64 >= 0 from (H, W, 3) rgb and (H, W) gray in [0, 1]."""
        raise NotImplementedError

    def _raw_map(self, sample: Sample) -> tuple[FloatArray, BoolArray]:
        """Un-normalised masked map (H, W) float64 and the dilated foreground (H, W) bool."""
        real_u8, twin_u8 = sample.real.rgb, sample.twin.rgb
        if real_u8.shape != twin_u8.shape:
            raise ValueError(
                f"sample {sample.id!r}: real image {real_u8.shape} and twin image "
                f"{twin_u8.shape} differ in size"
            )
        if sample.fg_mask.shape != real_u8.shape[:2]:
            raise ValueError(
                f"sample {sample.id!r}: fg_mask {sample.fg_mask.shape} does not match the "
                f"image {real_u8.shape[:2]}"
            )
        real_rgb, twin_rgb = to_unit_float(real_u8), to_unit_float(twin_u8)
        residual = self._residual(real_rgb, twin_rgb, to_gray(real_rgb), to_gray(twin_rgb))
        if self.sigma_px > 0.0:
            residual = ndimage.gaussian_filter(residual, sigma=self.sigma_px, mode="nearest")
        mask = foreground_mask(sample.fg_mask, self.dilate_px)
        return np.where(mask, residual, 0.0), mask

    def fit(self, samples: Sequence[Sample]) -> None:
        """Set ``normaliser`` from normal ``samples`` (99th pct of foreground residuals).

        The percentile is exact (numpy's linear interpolation) in memory that does not grow
        with the foreground: it needs only the top (1 - q) of all values, and at most
        (1 - q) x len(samples) x pixels per image of them can be needed, so only those are
        kept. ``samples`` may load lazily; each is visited once (twice only if image sizes
        grow during the pass, which makes that bound unknowable up front).
        """
        values = self._top_values(samples, exact_all=False)
        if values is None:
            values = self._top_values(samples, exact_all=True)
        assert values is not None
        tops, count = values
        if count == 0:
            self.normaliser = 1.0
            return
        pos = NORMALISER_PERCENTILE / 100.0 * (count - 1)
        lo, hi = math.floor(pos), math.ceil(pos)
        off = count - tops.size  # global sorted index of tops[0]
        v_lo, v_hi = float(tops[lo - off]), float(tops[hi - off])
        top = v_lo + (v_hi - v_lo) * (pos - lo)
        # A residual-free training set (twin == real) leaves no scale to learn: keep 1.0.
        self.normaliser = top if math.isfinite(top) and top > 1e-12 else 1.0

    def _top_values(
        self, samples: Sequence[Sample], exact_all: bool
    ) -> tuple[NDArray[np.float32], int] | None:
        """(the largest foreground residuals, sorted ascending, and the count of all of them).

        Keeps enough values for the percentile; None if pruning may have dropped a needed
        one (image sizes grew mid-pass) - then call again with ``exact_all`` (keep all).
        """
        q = NORMALISER_PERCENTILE / 100.0
        kept: list[NDArray[np.float32]] = []
        kept_size = count = cap = 0
        min_cap = math.inf
        for sample in samples:
            if sample.label == 1:
                raise ValueError(f"fit got anomalous sample {sample.id!r}; give normal ones only")
            raw, mask = self._raw_map(sample)
            vals = raw[mask].astype(np.float32)
            kept.append(vals)
            kept_size += vals.size
            count += vals.size
            cap = max(cap, math.ceil((1.0 - q) * len(samples) * raw.size) + 2)
            if not exact_all and kept_size > 2 * cap:
                pooled = np.concatenate(kept)
                kept = [np.partition(pooled, pooled.size - cap)[pooled.size - cap :]]
                kept_size = cap
                min_cap = min(min_cap, cap)
        need = count - math.floor(q * (count - 1)) if count else 0
        if need > min_cap:
            return None
        pooled = np.concatenate(kept) if kept else np.zeros(0, dtype=np.float32)
        return np.sort(pooled), count

    def predict(self, sample: Sample) -> Prediction:
        """Anomaly map (H, W) float32 (0 off the dilated foreground) and its max as score."""
        raw, _ = self._raw_map(sample)
        amap = (raw / self.normaliser).astype(np.float32)
        score = float(amap.max()) if amap.size else 0.0
        return Prediction(score=score, anomaly_map=amap)


class RGBResidual(TwinResidualDetector):
    """RGB Residual: mean over the 3 channels of |real - twin| in [0, 1]."""

    name: str = "rgb_residual"
    paper_name: ClassVar[str] = "RGB Residual"

    def _residual(
        self,
        real_rgb: FloatArray,
        twin_rgb: FloatArray,
        real_gray: FloatArray,
        twin_gray: FloatArray,
    ) -> FloatArray:
        """(H, W) float64 channel-mean absolute difference of the rgb images."""
        return np.asarray(np.abs(real_rgb - twin_rgb).mean(axis=2), dtype=np.float64)


def gradient_magnitude(gray: FloatArray) -> FloatArray:
    """(H, W) float64 Sobel gradient magnitude of (H, W) gray, in intensity per pixel."""
    # The Sobel kernel's central difference spans 2 px with weights summing to 4: divide by 8.
    gx = ndimage.sobel(gray, axis=1, mode="nearest") / 8.0
    gy = ndimage.sobel(gray, axis=0, mode="nearest") / 8.0
    return np.asarray(np.hypot(gx, gy), dtype=np.float64)


class GradientResidual(TwinResidualDetector):
    """Gradient Residual: | |grad real_gray| - |grad twin_gray| | with Sobel gradients."""

    name: str = "gradient_residual"
    paper_name: ClassVar[str] = "Gradient Residual"

    def _residual(
        self,
        real_rgb: FloatArray,
        twin_rgb: FloatArray,
        real_gray: FloatArray,
        twin_gray: FloatArray,
    ) -> FloatArray:
        """(H, W) float64 absolute difference of the gray Sobel gradient magnitudes."""
        return np.abs(gradient_magnitude(real_gray) - gradient_magnitude(twin_gray))


def ssim_map(real_gray: FloatArray, twin_gray: FloatArray) -> FloatArray:
    """(H, W) float64 SSIM map of two (H, W) gray images in [0, 1] (scikit-image, Gaussian 1.5).

    Images must be at least 11 x 11 pixels (the Gaussian window of sigma 1.5).
    """
    _, full = structural_similarity(
        real_gray,
        twin_gray,
        data_range=1.0,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        full=True,
    )
    return np.asarray(full, dtype=np.float64)


class SSIMResidual(TwinResidualDetector):
    """SSIM Residual: 1 - SSIM map (scikit-image) of the gray real and twin images."""

    name: str = "ssim_residual"
    paper_name: ClassVar[str] = "SSIM Residual"

    def _residual(
        self,
        real_rgb: FloatArray,
        twin_rgb: FloatArray,
        real_gray: FloatArray,
        twin_gray: FloatArray,
    ) -> FloatArray:
        """(H, W) float64 dissimilarity 1 - SSIM, in [0, 2]."""
        return 1.0 - ssim_map(real_gray, twin_gray)


__all__ = [
    "GradientResidual",
    "RGBResidual",
    "ResidualParams",
    "SSIMResidual",
    "TwinResidualDetector",
    "disc_footprint",
    "foreground_mask",
    "gradient_magnitude",
    "ssim_map",
    "to_gray",
    "to_unit_float",
]
