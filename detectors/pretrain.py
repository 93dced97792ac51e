"""Self-supervised pretraining of a compact backbone on the simulator's own renders.

No pretrained weights may be downloaded, and ``weights: random`` is a weak floor, so
``twincell pretrain`` trains ``resnet18_compact`` (``detectors.backbones.resnet``) from
scratch on pose-matched real/twin pairs that a pretraining scenario simulates (normal parts
only; ``scenarios.pretrain`` runs the simulation and calls ``train`` here).

Method (ours; no paper of ``../shared/papers`` prescribes one): **dense VICReg** (Bardes et
al. 2022, with the dense term of VICRegL) across the simulator's real/twin pairs.

- **Positives** are the same pixel in the real capture and in the twin render of one view:
  the two differ in everything the twin does not model (material finish, lights, sensor
  noise, exposure, vignetting, clutter, pose error) and agree on the part's geometry, which
  is what an inspection backbone must see. On top: square crops at about the detectors'
  pixel scale (zoom 0.6-1.2; they see a 256 px capture at 224), the pair flipped together,
  optionally branch b's crop shifted from branch a's by up to ``shift_cells`` layer-3
  cells (one shift per batch; the loss matches the cells that see the same scene point,
  as VICRegL matches by location), and a photometric jitter per crop (brightness,
  contrast, saturation, gamma, blur, noise, grey). Aligned crops let a cell's position in
  its crop (which zero padding shows) help satisfy the invariance and variance terms; the
  shift removes that shortcut, but on the validation scenarios
  (``benchmarks/scenarios/ssl-validation*.yaml``) it gave lower PaDiM pixel AUROC and AP
  and AVATAR pixel AUROC after the same 20 epochs, so the default is 0 (aligned).
- **Loss** per stage (layers 1, 2, 3): a 1x1-convolution expander (C -> 128 -> 128, batch
  norm and ReLU between) maps each feature-map cell to a vector; VICReg's invariance term
  (mean squared difference of matching cells), variance term (hinge keeping each dimension's
  standard deviation over all cells of the batch at >= 1) and covariance term (squared
  off-diagonal covariances / dimensions), weighted 25, 25, 1 as in the paper, averaged
  over the three stages. The variance and covariance terms keep the features from
  collapsing, which invariance alone would reward.
- **Optimiser**: AdamW (lr 1e-3, weight decay 1e-4, cosine decay, batch 32), seeded; the
  expanders are thrown away and only the trunk is saved, with its batch-norm statistics.

Only the trunk is returned and saved, as a plain state_dict with the torchvision-style key
names of ``resnet18_compact`` (``load_backbone`` loads it with ``strict=True``), wrapped
as ``{"state_dict": ..., "meta": ...}`` with the parameters, the data digest and the loss
history, so a checkpoint says how it was made.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, Strict, model_validator

if TYPE_CHECKING:
    import torch

#: Stages the loss is applied to (those PaDiM and AVATAR read).
STAGES = ("layer1", "layer2", "layer3")
#: Output stride of the deepest trained stage (layer3): crop shifts are whole cells of it
#: (``detectors.backbones.resnet.STAGE_STRIDES``, kept here so the parameter check needs no
#: torch).
STRIDE_PX = 16


class PretrainParams(BaseModel):
    """Pretraining parameters; the defaults made the shipped checkpoint."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    backbone: Literal["resnet18_compact", "resnet18"] = "resnet18_compact"
    #: Square crop side fed to the network, px.
    image_size: Annotated[int, Strict()] = Field(96, ge=32, le=512)
    epochs: Annotated[int, Strict()] = Field(20, ge=1, le=10_000)
    batch_size: Annotated[int, Strict()] = Field(32, ge=2, le=1024)
    lr: Annotated[float, Strict()] = Field(1e-3, gt=0.0, le=1.0)
    weight_decay: Annotated[float, Strict()] = Field(1e-4, ge=0.0, le=1.0)
    expander_dim: Annotated[int, Strict()] = Field(128, ge=8, le=4096)
    #: VICReg weights: invariance, variance, covariance (the paper's 25, 25, 1).
    sim_coeff: Annotated[float, Strict()] = Field(25.0, ge=0.0)
    std_coeff: Annotated[float, Strict()] = Field(25.0, ge=0.0)
    cov_coeff: Annotated[float, Strict()] = Field(1.0, ge=0.0)
    #: Range of the crop's zoom (network px per image px). The detectors see a 256 px
    #: capture resized to 224 (0.875), so the crops are drawn around that scale rather than
    #: shrinking whole images, which would teach features of parts 2-3x smaller than tested.
    scale_min: Annotated[float, Strict()] = Field(0.6, gt=0.0, le=8.0)
    scale_max: Annotated[float, Strict()] = Field(1.2, gt=0.0, le=8.0)
    #: Largest shift, in layer-3 cells, between the crops of a pair (0: aligned crops).
    shift_cells: Annotated[int, Strict()] = Field(0, ge=0, le=16)
    seed: Annotated[int, Strict()] = Field(0, ge=0, le=2**31 - 1)

    @model_validator(mode="after")
    def _checked(self) -> PretrainParams:
        if self.scale_min > self.scale_max:
            raise ValueError("scale_min: must not exceed scale_max")
        if self.image_size % STRIDE_PX:
            raise ValueError(f"image_size: must be a multiple of {STRIDE_PX} px")
        if 2 * self.shift_cells >= self.image_size // STRIDE_PX:
            raise ValueError(
                f"shift_cells: must be below half the layer-3 grid "
                f"({self.image_size // STRIDE_PX} cells at image_size {self.image_size})"
            )
        return self


def vicreg_terms(za: torch.Tensor, zb: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """VICReg's (invariance, variance, covariance) terms of two (n, d) batches of vectors,
    row i of ``za`` a positive of row i of ``zb``."""
    import torch
    import torch.nn.functional as F

    inv = F.mse_loss(za, zb)
    za = za - za.mean(dim=0)
    zb = zb - zb.mean(dim=0)
    std_a = torch.sqrt(za.var(dim=0) + 1e-4)
    std_b = torch.sqrt(zb.var(dim=0) + 1e-4)
    var = (F.relu(1.0 - std_a).mean() + F.relu(1.0 - std_b).mean()) / 2.0
    n, d = za.shape
    cov = za.new_zeros(())
    for z in (za, zb):
        c = (z.T @ z) / (n - 1)
        off = c - torch.diag(torch.diag(c))
        cov = cov + off.pow(2).sum() / d
    return inv, var, cov


def _expander(channels: int, dim: int) -> torch.nn.Module:
    from torch import nn

    return nn.Sequential(
        nn.Conv2d(channels, dim, 1),
        nn.BatchNorm2d(dim),
        nn.ReLU(inplace=True),
        nn.Conv2d(dim, dim, 1),
    )


def _photometric(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Per-image colour jitter, gamma, blur, noise and greyscale of (B, 3, H, W) in [0, 1]."""
    import torch
    import torch.nn.functional as F

    b = x.shape[0]

    def u(lo: float, hi: float) -> torch.Tensor:
        return (lo + (hi - lo) * torch.rand(b, 1, 1, 1, generator=g)).to(x)

    x = x * u(0.6, 1.4)  # brightness
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * u(0.6, 1.4) + mean  # contrast
    grey = x.mean(dim=1, keepdim=True)
    x = (x - grey) * u(0.5, 1.5) + grey  # saturation
    x = x.clamp(0.0, 1.0) ** u(0.7, 1.4)  # gamma
    blur = torch.rand(b, generator=g) < 0.3
    if bool(blur.any()):
        k = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0]) / 16.0
        kernel = (k[:, None] * k[None, :]).to(x).expand(3, 1, 5, 5)
        smooth = F.conv2d(F.pad(x, (2, 2, 2, 2), mode="replicate"), kernel, groups=3)
        x = torch.where(blur.view(b, 1, 1, 1).to(x.device), smooth, x)
    x = x + torch.randn(x.shape, generator=g).to(x) * u(0.0, 0.03)
    to_grey = (torch.rand(b, generator=g) < 0.1).view(b, 1, 1, 1).to(x.device)
    x = torch.where(to_grey, x.mean(dim=1, keepdim=True).expand_as(x), x)
    return x.clamp(0.0, 1.0)


def _crop_pairs(
    n: int, h: int, w: int, params: PretrainParams, shift: tuple[int, int], rng: np.random.Generator
) -> list[tuple[tuple[int, int, int], tuple[int, int, int]]]:
    """``n`` pairs of square crops ((y0, x0, side) of branch a, of branch b), each seen at
    ``image_size``: zoom log-uniform in [scale_min, scale_max], branch b's crop shifted from
    branch a's by ``shift`` layer-3 cells (rounded to source pixels), both inside the image."""
    pairs = []
    lo, hi = math.log(params.scale_min), math.log(params.scale_max)
    s = params.image_size
    for _ in range(n):
        zoom = math.exp(rng.uniform(lo, hi))
        sy, sx = (round(d * STRIDE_PX / zoom) for d in shift)
        side = int(round(s / zoom))
        side = max(2, min(side, h - abs(sy), w - abs(sx)))
        zoom = s / side  # the crop may have been clipped: shift again at the actual zoom
        sy, sx = (round(d * STRIDE_PX / zoom) for d in shift)
        y0 = int(rng.integers(max(0, -sy), h - side - max(0, sy) + 1))
        x0 = int(rng.integers(max(0, -sx), w - side - max(0, sx) + 1))
        pairs.append(((y0, x0, side), (y0 + sy, x0 + sx, side)))
    return pairs


def make_batch(
    real: np.ndarray,
    twin: np.ndarray,
    params: PretrainParams,
    rng: np.random.Generator,
    g: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int]]:
    """Two (B, 3, S, S) normalised batches from (B, H, W, 3) uint8 real and twin images,
    and the shift (dy, dx) in layer-3 cells of branch b's crops from branch a's: cell
    ``(i + dy, j + dx)`` of a and cell ``(i, j)`` of b see the same scene point. One image
    of each pair (drawn: neither domain is the anchor) goes to branch a, the other to b;
    the pair is flipped together; each crop gets its own photometric jitter.

    The shift (one per batch, up to ``shift_cells``) is what keeps the features from
    encoding where in the crop a cell lies: with aligned crops, position (which zero
    padding makes visible) alone would satisfy both the invariance and the variance terms.
    """
    import torch
    import torch.nn.functional as F

    from detectors.backbones.resnet import IMAGENET_MEAN, IMAGENET_STD

    s, m = params.image_size, params.shift_cells
    b, h, w, _ = real.shape
    shift = (int(rng.integers(-m, m + 1)), int(rng.integers(-m, m + 1)))
    crops = _crop_pairs(b, h, w, params, shift, rng)
    flips = rng.random(b) < 0.5
    swap = rng.random(b) < 0.5
    xr = torch.from_numpy(np.ascontiguousarray(real)).permute(0, 3, 1, 2).float() / 255.0
    xt = torch.from_numpy(np.ascontiguousarray(twin)).permute(0, 3, 1, 2).float() / 255.0
    out: list[list[torch.Tensor]] = [[], []]
    for i, boxes in enumerate(crops):
        pair = (xt[i : i + 1], xr[i : i + 1]) if swap[i] else (xr[i : i + 1], xt[i : i + 1])
        for k, (img, (y0, x0, side)) in enumerate(zip(pair, boxes, strict=True)):
            if flips[i]:
                img = img.flip(-1)
            out[k].append(
                F.interpolate(
                    img[:, :, y0 : y0 + side, x0 : x0 + side],
                    size=(s, s),
                    mode="bilinear",
                    align_corners=False,
                    antialias=True,
                )
            )
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    a = (_photometric(torch.cat(out[0]), g) - mean) / std
    c = (_photometric(torch.cat(out[1]), g) - mean) / std
    return a, c, shift


def overlap(
    za: torch.Tensor, zb: torch.Tensor, shift: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """The cells of (B, C, H, W) maps ``za`` and ``zb`` that see the same scene points when
    b's crop is shifted by ``shift`` cells of this map: a's ``(i + dy, j + dx)`` with b's
    ``(i, j)``; each returned as (B * n, C) rows in matching order."""
    dy, dx = shift
    h, w = za.shape[-2:]
    ya, yb = slice(max(dy, 0), h + min(dy, 0)), slice(max(-dy, 0), h + min(-dy, 0))
    xa, xb = slice(max(dx, 0), w + min(dx, 0)), slice(max(-dx, 0), w + min(-dx, 0))
    c = za.shape[1]
    ra = za[:, :, ya, xa].permute(0, 2, 3, 1).reshape(-1, c)
    rb = zb[:, :, yb, xb].permute(0, 2, 3, 1).reshape(-1, c)
    return ra, rb


def train(
    real: np.ndarray,
    twin: np.ndarray,
    params: PretrainParams,
    progress: Callable[[int, int, dict[str, float]], None] | None = None,
) -> tuple[dict[str, Any], list[dict[str, float]]]:
    """Train ``params.backbone`` on (N, H, W, 3) uint8 pose-matched ``real`` and ``twin``
    images; returns (the trunk's state_dict, loss history per epoch). ``progress`` is called
    after every step with (step, total steps, latest losses)."""
    import torch

    from detectors.backbones.resnet import RESNET_CHANNELS, STAGE_STRIDES
    from detectors.backbones.weights import build_backbone

    if real.shape != twin.shape or real.ndim != 4 or real.shape[-1] != 3:
        raise ValueError(
            f"real and twin must be equal (N, H, W, 3), got {real.shape}, {twin.shape}"
        )
    if real.dtype != np.uint8 or twin.dtype != np.uint8:
        raise TypeError("real and twin must be uint8 images")
    n = real.shape[0]
    if n < params.batch_size:
        raise ValueError(f"{n} pairs is fewer than one batch of {params.batch_size}")
    p = params
    torch.manual_seed(p.seed)
    trunk = build_backbone(p.backbone)
    channels = RESNET_CHANNELS[p.backbone]
    heads = torch.nn.ModuleDict({s: _expander(channels[s], p.expander_dim) for s in STAGES})
    trunk.train()
    heads.train()
    params_all = list(trunk.parameters()) + list(heads.parameters())
    opt = torch.optim.AdamW(params_all, lr=p.lr, weight_decay=p.weight_decay)
    steps_per_epoch = n // p.batch_size
    total = steps_per_epoch * p.epochs
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda step: 0.5 * (1.0 + math.cos(math.pi * min(step, total) / total))
    )
    rng = np.random.default_rng(p.seed)
    g = torch.Generator().manual_seed(p.seed)
    history: list[dict[str, float]] = []
    step = 0
    for epoch in range(p.epochs):
        t0 = time.perf_counter()
        order = rng.permutation(n)
        sums = dict.fromkeys(("loss", "invariance", "variance", "covariance"), 0.0)
        for k in range(steps_per_epoch):
            idx = np.sort(order[k * p.batch_size : (k + 1) * p.batch_size])
            xa, xb, shift = make_batch(real[idx], twin[idx], p, rng, g)
            fa = trunk.forward_features(xa, STAGES)
            fb = trunk.forward_features(xb, STAGES)
            inv = var = cov = xa.new_zeros(())
            for s in STAGES:
                r = STRIDE_PX // STAGE_STRIDES[s]
                terms = vicreg_terms(
                    *overlap(heads[s](fa[s]), heads[s](fb[s]), (shift[0] * r, shift[1] * r))
                )
                inv, var, cov = inv + terms[0], var + terms[1], cov + terms[2]
            inv, var, cov = inv / len(STAGES), var / len(STAGES), cov / len(STAGES)
            loss = p.sim_coeff * inv + p.std_coeff * var + p.cov_coeff * cov
            if not torch.isfinite(loss):
                raise FloatingPointError(f"pretraining diverged at epoch {epoch}, step {k}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            latest = {
                "loss": loss.item(),
                "invariance": inv.item(),
                "variance": var.item(),
                "covariance": cov.item(),
            }
            for key, v in latest.items():
                sums[key] += v
            if progress is not None:
                progress(step, total, latest)
        history.append(
            {
                "epoch": float(epoch),
                **{k: v / steps_per_epoch for k, v in sums.items()},
                "seconds": time.perf_counter() - t0,
            }
        )
    trunk.eval()
    state = {k: v.detach().clone() for k, v in trunk.state_dict().items()}
    return state, history


def save_checkpoint(path: Any, state: dict[str, Any], meta: dict[str, Any]) -> None:
    """Write ``{"state_dict": state, "meta": meta}`` with ``torch.save`` to ``path``
    atomically (a temporary file renamed into place)."""
    import os
    from pathlib import Path

    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"state_dict": state, "meta": meta}, tmp)
    os.replace(tmp, path)


def embedding_spread(state: dict[str, Any], backbone: str, images: Sequence[np.ndarray]) -> float:
    """Mean per-channel standard deviation of the layer-3 features of ``images`` under
    ``state``: a collapsed trunk gives about 0 (a check the tests and the CLI use)."""
    import torch

    from detectors.backbones.resnet import normalize
    from detectors.backbones.weights import build_backbone

    model = build_backbone(backbone)
    model.load_state_dict(state, strict=True)
    model.eval()
    with torch.no_grad():
        f = model.forward_features(normalize(np.stack(images)), ("layer3",))["layer3"]
    return float(f.permute(1, 0, 2, 3).reshape(f.shape[1], -1).std(dim=1).mean())
