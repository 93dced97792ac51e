"""PatchCore (Roth et al., CVPR 2022): the unsupervised baseline that uses real images only.

- **Patch features**: the real image, resized to ``image_size`` square, goes through a
  frozen ResNet (``detectors.backbones``; the paper: Wide-ResNet-50-2); layers 2 and 3 are
  each averaged over a ``patch_size`` x ``patch_size`` neighbourhood (local aggregation,
  stride 1), layer 3 is upsampled (bilinear) to layer 2's grid, each is pooled to
  ``embed_dim`` / 2 channels by adaptive average pooling over channels, and the two are
  concatenated: one ``embed_dim`` feature per patch position.
- **Memory bank**: every training patch feature, reduced by greedy coreset selection to
  ``coreset_fraction`` of them (the paper: 1-10 %), distances for the selection measured
  in a seeded random projection to ``projection_dim`` dimensions (Johnson-Lindenstrauss),
  as the paper does for speed.
- **Score**: each test patch's distance to its nearest memory feature; the map is
  upsampled to the image (bilinear) and smoothed with a Gaussian of ``sigma_px`` (the
  paper: 4); the image score is the map's maximum patch distance (the paper's reweighting
  by the neighbourhood of the nearest memory feature is left out: it needs the memory
  bank's density, and ranking by the maximum is its common simplification; stated here).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, Strict, model_validator
from scipy import ndimage

from scenarios.interfaces import Prediction, Sample


class PatchCoreParams(BaseModel):
    """PatchCore's parameters; the paper's values as defaults where the CPU allows."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    #: The paper's Wide-ResNet-50-2, ResNet-18, or twincell's compact self-supervised one.
    backbone: Literal["resnet18", "wide_resnet50_2", "resnet18_compact"] = "wide_resnet50_2"
    #: "auto" (official checkpoint from the cache), "random" (seeded) or a checkpoint path.
    weights: Annotated[str, Strict()] = "auto"
    image_size: Annotated[int, Strict()] = Field(224, ge=32, le=1024)
    patch_size: Annotated[int, Strict()] = Field(3, ge=1, le=9)
    embed_dim: Annotated[int, Strict()] = Field(1024, ge=8, le=4096)
    coreset_fraction: Annotated[float, Strict()] = Field(0.1, gt=0.0, le=1.0)
    projection_dim: Annotated[int, Strict()] = Field(128, ge=8, le=1024)
    sigma_px: Annotated[float, Strict()] = Field(4.0, ge=0.0, le=32.0)
    seed: Annotated[int, Strict()] = Field(0, ge=0, le=2**31 - 1)

    @model_validator(mode="after")
    def _checked(self) -> PatchCoreParams:
        from detectors.backbones.weights import check_weights

        if self.embed_dim % 2:
            raise ValueError("embed_dim: must be even (half from each layer)")
        check_weights(self.backbone, self.weights)
        return self


def greedy_coreset(features: np.ndarray, n: int, projection_dim: int, seed: int) -> np.ndarray:
    """Indices of ``n`` rows of ``features`` (N, D) chosen by greedy k-center selection
    (each next row is the one farthest from those chosen), distances measured after a
    seeded Gaussian random projection to ``projection_dim`` dimensions; the first row is
    drawn with the same seed."""
    rng = np.random.default_rng(seed)
    N, D = features.shape
    n = max(1, min(n, N))
    if D > projection_dim:
        P = rng.normal(0.0, 1.0 / np.sqrt(projection_dim), (D, projection_dim))
        x = features @ P
    else:
        x = features
    x = x.astype(np.float64)
    chosen = np.empty(n, dtype=np.int64)
    chosen[0] = int(rng.integers(N))
    d = np.linalg.norm(x - x[chosen[0]], axis=1)
    for k in range(1, n):
        chosen[k] = int(np.argmax(d))
        d = np.minimum(d, np.linalg.norm(x - x[chosen[k]], axis=1))
    return chosen


class PatchCore:
    """PatchCore behind the ``Detector`` interface (see the module docstring)."""

    name: str = "patchcore"

    def __init__(self, **params: Any) -> None:
        self.params = PatchCoreParams(**params)
        self._model: Any = None
        self.weights_info: dict[str, Any] = {}
        self.memory: np.ndarray | None = None
        self.grid: tuple[int, int] = (0, 0)

    def _backbone(self) -> Any:
        if self._model is None:
            from detectors.backbones.weights import load_backbone

            p = self.params
            self._model, info = load_backbone(p.backbone, p.weights, seed=p.seed)
            self.weights_info = info.to_json()
        return self._model

    def features(self, rgb: np.ndarray) -> np.ndarray:
        """(P, embed_dim) float32 patch features of one (H, W, 3) uint8 image."""
        import torch
        import torch.nn.functional as F

        from detectors.backbones.resnet import normalize

        p = self.params
        model = self._backbone()
        x = F.interpolate(normalize(rgb[None]), size=(p.image_size,) * 2, mode="bilinear")
        with torch.no_grad():
            feats = model.forward_features(x, ("layer2", "layer3"))
            pad = p.patch_size // 2
            pooled = [
                F.avg_pool2d(f, p.patch_size, stride=1, padding=pad, count_include_pad=False)
                for f in (feats["layer2"], feats["layer3"])
            ]
            h, w = pooled[0].shape[-2:]
            pooled[1] = F.interpolate(pooled[1], size=(h, w), mode="bilinear")
            per_layer = []
            for f in pooled:
                flat = f[0].reshape(f.shape[1], -1).T  # (P, C)
                per_layer.append(F.adaptive_avg_pool1d(flat[:, None, :], p.embed_dim // 2)[:, 0])
            out = torch.cat(per_layer, dim=1)
        self.grid = (int(h), int(w))
        return out.numpy().astype(np.float32)

    def fit(self, samples: Sequence[Sample]) -> None:
        """The memory bank: the coreset of all normal training patches."""
        bank = []
        for s in samples:
            if s.label == 1:
                raise ValueError(f"fit got anomalous sample {s.id!r}; give normal ones only")
            bank.append(self.features(s.real.rgb))
        if not bank:
            raise ValueError("PatchCore needs at least one normal training sample")
        allf = np.concatenate(bank)
        p = self.params
        n = int(np.ceil(p.coreset_fraction * len(allf)))
        self.memory = allf[greedy_coreset(allf, n, p.projection_dim, p.seed)]

    def predict(self, sample: Sample) -> Prediction:
        """Nearest-memory distance map at the image size (smoothed), its maximum the score."""
        import torch

        if self.memory is None:
            raise RuntimeError("PatchCore.predict before fit")
        f = torch.from_numpy(self.features(sample.real.rgb))
        mem = torch.from_numpy(self.memory)
        dist = torch.cat([torch.cdist(chunk, mem).min(dim=1).values for chunk in f.split(4096)])
        h, w = self.grid
        H, W = sample.real.rgb.shape[:2]
        amap = ndimage.zoom(
            dist.numpy().reshape(h, w).astype(np.float64),
            (H / h, W / w),
            order=1,
            grid_mode=True,
            mode="nearest",
        )[:H, :W]
        if self.params.sigma_px > 0:
            amap = ndimage.gaussian_filter(amap, self.params.sigma_px, mode="nearest")
        amap = np.ascontiguousarray(amap, dtype=np.float32)
        return Prediction(score=float(dist.max()), anomaly_map=amap)
