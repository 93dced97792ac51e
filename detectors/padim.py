"""PaDiM (Defard et al. 2021), as the part-in-hand paper uses it (../shared/papers/
padim-robotic-multiview.txt, section 2.3): one model per viewpoint, ResNet-18 features.

- **Embedding**: the real image, resized to ``image_size`` square, goes through a frozen
  ResNet (``detectors.backbones``); layers 1-3 are upsampled to layer 1's grid (1/4 of the
  input) and concatenated (448 channels for ResNet-18, 1792 for Wide-ResNet-50-2); a
  seeded random subset of ``channels`` of them is kept (PaDiM: 100 of 448; twincell's
  ``resnet18_compact``, whose self-supervised weights ship for offline use, gives 224).
- **Model**: for every patch position, the mean and covariance of the training
  embeddings, regularised with ``eps`` I (PaDiM: 0.01), kept as the inverse.
- **Score**: the Mahalanobis distance of each position's embedding, upsampled to the
  image (bilinear) and smoothed with a Gaussian of ``sigma_px`` (the paper: 4); the image
  score is the map's maximum (the decision rules over views and parts are elsewhere).
- **Views**: with ``per_view`` (default) one model per ``Sample.view_id``, as the paper
  trains one per perspective; a view with no training image falls back to the model of
  all views. Only the real image is used: PaDiM needs no twin.

Chosen where the paper is silent: the input is resized, not cropped (a part fills
different crops per view); positions where fewer than two training images exist keep
``eps`` I as their covariance (a Euclidean distance); embeddings are float32 and the
covariance is accumulated in float64.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, Strict, model_validator
from scipy import ndimage

from scenarios.interfaces import Prediction, Sample

#: Embedding layers and their order (PaDiM: 1-3).
LAYERS = ("layer1", "layer2", "layer3")
#: Channels of layers 1-3 concatenated, per backbone (the subset is drawn from these).
EMBEDDING_CHANNELS = {"resnet18": 448, "wide_resnet50_2": 1792, "resnet18_compact": 224}
#: Key of the model shared by all views (also the fallback of an unseen view).
ALL_VIEWS = -1


class PaDiMParams(BaseModel):
    """PaDiM's parameters, with the paper's values as defaults where it gives them."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    #: The paper's ResNet-18, or twincell's compact self-supervised one (weights shipped).
    backbone: Literal["resnet18", "wide_resnet50_2", "resnet18_compact"] = "resnet18"
    #: "auto" (official checkpoint from the cache), "random" (seeded) or a checkpoint path.
    weights: Annotated[str, Strict()] = "auto"
    channels: Annotated[int, Strict()] = Field(100, ge=1, le=1792)
    image_size: Annotated[int, Strict()] = Field(224, ge=32, le=1024)
    sigma_px: Annotated[float, Strict()] = Field(4.0, ge=0.0, le=32.0)
    eps: Annotated[float, Strict()] = Field(0.01, gt=0.0, le=10.0)
    per_view: Annotated[bool, Strict()] = True
    seed: Annotated[int, Strict()] = Field(0, ge=0, le=2**31 - 1)

    @model_validator(mode="after")
    def _weights_exist(self) -> PaDiMParams:
        # Missing weights stop the run at load, before any simulation, in one line.
        from detectors.backbones.weights import check_weights

        check_weights(self.backbone, self.weights)
        total = EMBEDDING_CHANNELS[self.backbone]
        if self.channels > total:
            raise ValueError(f"channels: at most {total} for {self.backbone}")
        return self


class PaDiM:
    """PaDiM behind the ``Detector`` interface (see the module docstring)."""

    name: str = "padim"

    def __init__(self, **params: Any) -> None:
        self.params = PaDiMParams(**params)
        self._model: Any = None
        self.weights_info: dict[str, Any] = {}
        self._index: np.ndarray | None = None
        #: view id (ALL_VIEWS for the shared one) -> (mean (P, d), inverse cov (P, d, d))
        self.stats: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self.grid: tuple[int, int] = (0, 0)

    def _backbone(self) -> Any:
        if self._model is None:
            from detectors.backbones.weights import load_backbone

            p = self.params
            self._model, info = load_backbone(p.backbone, p.weights, seed=p.seed)
            self.weights_info = info.to_json()
            rng = np.random.default_rng(p.seed)
            total = EMBEDDING_CHANNELS[p.backbone]
            self._index = np.sort(rng.choice(total, size=p.channels, replace=False))
        return self._model

    def embed(self, rgb: np.ndarray) -> np.ndarray:
        """(P, d) float32 embedding of one (H, W, 3) uint8 image, P = grid positions."""
        import torch
        import torch.nn.functional as F

        from detectors.backbones.resnet import normalize

        model = self._backbone()
        s = self.params.image_size
        x = normalize(rgb[None])
        x = F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False)
        with torch.no_grad():
            feats = model.forward_features(x, LAYERS)
            h, w = feats[LAYERS[0]].shape[-2:]
            maps = [
                f if f.shape[-2:] == (h, w) else F.interpolate(f, size=(h, w), mode="nearest")
                for f in (feats[name] for name in LAYERS)
            ]
            emb = torch.cat(maps, dim=1)[0]
        assert self._index is not None
        sel = emb[torch.from_numpy(self._index)]
        self.grid = (int(h), int(w))
        return sel.reshape(sel.shape[0], -1).T.contiguous().numpy().astype(np.float32)

    def fit(self, samples: Sequence[Sample]) -> None:
        """Gaussians per position from the normal ``samples`` (per view and for all)."""
        groups: dict[int, list[np.ndarray]] = {ALL_VIEWS: []}
        for s in samples:
            if s.label == 1:
                raise ValueError(f"fit got anomalous sample {s.id!r}; give normal ones only")
            e = self.embed(s.real.rgb)
            groups[ALL_VIEWS].append(e)
            if self.params.per_view:
                groups.setdefault(int(s.view_id), []).append(e)
        if not groups[ALL_VIEWS]:
            raise ValueError("PaDiM needs at least one normal training sample")
        self.stats = {k: self._gaussian(np.stack(v)) for k, v in groups.items()}

    def _gaussian(self, emb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(mean (P, d), inverse of the regularised covariance (P, d, d)) of (N, P, d)."""
        n, _, d = emb.shape
        x = emb.astype(np.float64)
        mean = x.mean(axis=0)
        centred = x - mean
        cov = np.einsum("npi,npj->pij", centred, centred) / max(n - 1, 1)
        cov += self.params.eps * np.eye(d)
        return mean.astype(np.float32), np.linalg.inv(cov).astype(np.float32)

    def predict(self, sample: Sample) -> Prediction:
        """Mahalanobis map at the image size (smoothed) and its maximum as the score."""
        if not self.stats:
            raise RuntimeError("PaDiM.predict before fit")
        key = int(sample.view_id) if self.params.per_view else ALL_VIEWS
        mean, inv = self.stats.get(key, self.stats[ALL_VIEWS])
        delta = self.embed(sample.real.rgb) - mean
        dist = np.sqrt(np.maximum(np.einsum("pi,pij,pj->p", delta, inv, delta), 0.0))
        h, w = self.grid
        H, W = sample.real.rgb.shape[:2]
        amap = ndimage.zoom(
            dist.reshape(h, w), (H / h, W / w), order=1, grid_mode=True, mode="nearest"
        )
        amap = amap[:H, :W]
        if self.params.sigma_px > 0:
            amap = ndimage.gaussian_filter(amap, self.params.sigma_px, mode="nearest")
        amap = np.ascontiguousarray(amap, dtype=np.float32)
        return Prediction(score=float(amap.max()), anomaly_map=amap)

    def save(self, path: Path) -> None:
        """Write the fitted model (parameters, channel subset, Gaussians) to ``path`` (.npz);
        the backbone's weights are referenced, not copied."""
        if not self.stats:
            raise RuntimeError("PaDiM.save before fit")
        self._backbone()
        arrays: dict[str, np.ndarray] = {"index": np.asarray(self._index)}
        for k, (mean, inv) in self.stats.items():
            arrays[f"mean_{k}"] = mean
            arrays[f"inv_{k}"] = inv
        import json

        meta = {"params": self.params.model_dump(), "grid": list(self.grid)}
        arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
        with open(path, "wb") as f:
            np.savez(f, **arrays)

    @classmethod
    def load(cls, path: Path) -> PaDiM:
        """A PaDiM restored by ``save`` (its backbone loaded by the same weights rule)."""
        import json

        with np.load(path) as z:
            meta = json.loads(bytes(z["meta"]).decode())
            det = cls(**meta["params"])
            det._backbone()
            det._index = z["index"]
            det.grid = (int(meta["grid"][0]), int(meta["grid"][1]))
            keys = sorted({int(n.split("_", 1)[1]) for n in z.files if n.startswith("mean_")})
            det.stats = {k: (z[f"mean_{k}"], z[f"inv_{k}"]) for k in keys}
        return det
