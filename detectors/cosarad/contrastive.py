"""Triplet training of COSARAD's contrastive patch-feature extractor (paper section III.A).

A ``PatchEncoder`` (PointNet++ MSG and the paper's contrastive head,
``detectors.cosarad.pointnet2``) learns to map the two good patches of a triplet (anchor
``P_g``, positive ``P_p``) close together and the defective one at the same place
(negative ``P_b``) far from the anchor, with the triplet loss (paper eq. 1)
``mean max(0, ||m_g - m_p||^2 - ||m_g - m_b||^2 + alpha)``.

Training follows the paper:

- **Dual networks**: a *trainer* updated by Adam (lr 5e-4, cosine schedule over all steps)
  and a *miner* whose weights are an exponential moving average of the trainer's,
  ``theta_m <- lambda theta_m + (1 - lambda) theta`` after every step (lambda 0.99). The
  miner runs in eval mode, on batch-norm running statistics copied from the trainer after
  every step (ours: the paper does not say). They are already a moving average over
  batches (momentum 0.1); averaging them once more with lambda 0.99 would keep the
  initial statistics (mean 0, variance 1) for hundreds of steps, and since the first
  layers' true variances are ~1e-3 (coordinates in patch radii), the miner's features
  would stay collapsed and its mining random for most of a CPU-sized run.
- **Mining** (Algorithm 1, ``mine``): the miner embeds each augmented batch; the semi-hard
  triplets (``0 < d- - d+ <= alpha``, Euclidean distances) are kept, and if their share
  ``y`` is below the critical yield gamma, hard ones (``d- - d+ <= 0``) and then easy ones
  are added up to ``floor(gamma |B|)`` items. The trainer takes one gradient step on the
  mined triplets.
- **Adaptive margin** (``update_margin``): after each epoch, a mean yield below
  ``yield_min`` raises alpha, above ``yield_max`` lowers it.
- **Augmentation** (``augment_triplets``): a global rotation shared by the three patches
  of a triplet, and per patch a small rotation, a translation, Gaussian noise and edge
  crops.

Patches are the detector's normalised patches: centred on the patch centre and divided by
the patch radius R, so lengths here are in units of R (the paper's lengths are for R = 2
and are halved). Everything is seeded: the same parameters and data give the same weights
on one machine.

torch is imported inside the functions that need it, so this module imports without it.
"""

from __future__ import annotations

import json
import logging
import math
import os
import secrets
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, Strict, ValidationError, model_validator

from scenarios.interfaces import TEMP_PREFIX

if TYPE_CHECKING:
    import torch

    from detectors.cosarad.pointnet2 import PatchEncoder

log = logging.getLogger(__name__)

#: Keys of a saved extractor checkpoint.
CHECKPOINT_KEYS = ("state_dict", "config", "params", "meta")


class TripletParams(BaseModel):
    """Parameters of the contrastive extractor's training.

    Defaults are the paper's (section IV.2) except where the CPU budget or the patch
    normalisation asks otherwise: ``preset`` "compact" instead of the full MSG network,
    ``epochs`` 20 instead of 150 (both so that a few thousand triplets train in about ten
    minutes on two CPU cores), and the augmentation lengths halved to units of the patch
    radius (the paper's are for R = 2). The margin step and the edge-crop details are ours
    (the paper gives none).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    #: PointNet++ configuration (``detectors.cosarad.pointnet2.PRESETS``).
    preset: Literal["compact", "paper"] = "compact"
    #: Embedding size d.
    d: Annotated[int, Strict()] = Field(64, ge=2, le=1024)
    batch_size: Annotated[int, Strict()] = Field(84, ge=2, le=4096)
    lr: Annotated[float, Strict()] = Field(5e-4, gt=0.0, le=1.0)
    epochs: Annotated[int, Strict()] = Field(20, ge=1, le=10_000)
    #: Initial triplet margin alpha (eq. 1 and Algorithm 1).
    margin: Annotated[float, Strict()] = Field(0.6, gt=0.0, le=4.0)
    #: The margin is multiplied by this factor when the epoch's mean yield is below
    #: ``yield_min`` and divided by it when above ``yield_max`` (ours: the paper says only
    #: "increased" / "decreased"), and kept within [margin_min, margin_max]. Unit-norm
    #: features are at most 2 apart, so a margin above 2 would make every triplet non-easy.
    margin_factor: Annotated[float, Strict()] = Field(1.1, gt=1.0, le=4.0)
    margin_min: Annotated[float, Strict()] = Field(0.05, gt=0.0, le=4.0)
    margin_max: Annotated[float, Strict()] = Field(2.0, gt=0.0, le=4.0)
    #: Miner momentum lambda of the EMA update.
    miner_momentum: Annotated[float, Strict()] = Field(0.99, ge=0.0, lt=1.0)
    #: Critical yield gamma: mined batches hold at least floor(gamma |B|) triplets when
    #: enough are available.
    critical_yield: Annotated[float, Strict()] = Field(0.5, ge=0.0, le=1.0)
    yield_min: Annotated[float, Strict()] = Field(0.5, ge=0.0, le=1.0)
    yield_max: Annotated[float, Strict()] = Field(0.75, ge=0.0, le=1.0)
    #: Share of the triplets held out for validation (the paper trains on 75 %).
    val_fraction: Annotated[float, Strict()] = Field(0.25, gt=0.0, lt=1.0)
    #: Augmentation of the training batches (validation triplets are never augmented).
    augment: bool = True
    #: Global rotation: Euler angles about x, y, z each uniform in +-this, degrees, one
    #: rotation for the three patches of a triplet.
    global_rot_deg: Annotated[float, Strict()] = Field(90.0, ge=0.0, le=180.0)
    #: Individual rotation per patch, each Euler angle uniform in +-this, degrees.
    local_rot_deg: Annotated[float, Strict()] = Field(3.0, ge=0.0, le=180.0)
    #: Translation per patch, each axis uniform in +-this, units of R (paper: 0.03 at R = 2).
    translate: Annotated[float, Strict()] = Field(0.015, ge=0.0, le=1.0)
    #: Gaussian noise per point, standard deviation in units of R (paper: 0.005 at R = 2).
    noise_sigma: Annotated[float, Strict()] = Field(0.0025, ge=0.0, le=1.0)
    #: Edge crop: per patch, a number of spheres uniform in {0, ..., crop_spheres}
    #: (ours: the paper says "a few"), radius uniform in (crop_radius_min, crop_radius_max)
    #: units of R (the paper's 0.05 R .. 0.15 R), each centred on a random point of the
    #: patch at least ``crop_edge`` times the patch's largest point norm from its centre.
    #: Removed points are replaced by random remaining ones, so the patch keeps P points.
    crop_spheres: Annotated[int, Strict()] = Field(3, ge=0, le=32)
    crop_radius_min: Annotated[float, Strict()] = Field(0.05, gt=0.0, le=1.0)
    crop_radius_max: Annotated[float, Strict()] = Field(0.15, gt=0.0, le=1.0)
    crop_edge: Annotated[float, Strict()] = Field(0.8, ge=0.0, le=1.0)
    #: Patches per forward pass when validating.
    eval_batch_size: Annotated[int, Strict()] = Field(256, ge=1, le=65_536)
    seed: Annotated[int, Strict()] = Field(0, ge=0, le=2**31 - 1)

    @model_validator(mode="after")
    def _checked(self) -> TripletParams:
        if self.yield_min > self.yield_max:
            raise ValueError("yield_min: must not exceed yield_max")
        if self.margin_min > self.margin_max:
            raise ValueError("margin_min: must not exceed margin_max")
        if not self.margin_min <= self.margin <= self.margin_max:
            raise ValueError("margin: must lie within [margin_min, margin_max]")
        if self.crop_radius_min > self.crop_radius_max:
            raise ValueError("crop_radius_min: must not exceed crop_radius_max")
        return self


# --- loss, mining, margin -----------------------------------------------------------------


def triplet_loss(
    mg: torch.Tensor, mp: torch.Tensor, mb: torch.Tensor, margin: float
) -> torch.Tensor:
    """Paper eq. 1: ``mean max(0, ||mg - mp||^2 - ||mg - mb||^2 + margin)`` over the rows
    of (n, d) anchor, positive and negative features; a scalar tensor."""
    d_pos = (mg - mp).square().sum(dim=1)
    d_neg = (mg - mb).square().sum(dim=1)
    return (d_pos - d_neg + margin).clamp_min(0.0).mean()


def mine(
    d_pos: np.ndarray,
    d_neg: np.ndarray,
    margin: float,
    gamma: float,
    rng: np.random.Generator,
) -> tuple[np.ndarray, float]:
    """Algorithm 1's selection from (n,) anchor-positive and anchor-negative Euclidean
    distances: (indices of the mined triplets, int64, the yield y).

    With ``r = d_neg - d_pos``: all semi-hard triplets (``0 < r <= margin``, index order)
    are taken and ``y = |S| / n``. If ``y < gamma``, up to ``floor((gamma - y) n)`` hard
    ones (``r <= 0``) are added, the hardest (lowest r) first, and y is updated; if still
    ``y < gamma``, up to ``floor((gamma - y) n)`` easy ones (``r > margin``) are added,
    drawn at random with ``rng``. As in the algorithm, the easy top-up does not update y:
    the returned yield is the share of informative (semi-hard and hard) triplets used.
    ``floor((gamma - y) n)`` is evaluated as ``floor(gamma n) - |B'|`` (the same number,
    without round-off).
    """
    d_pos = np.asarray(d_pos, dtype=np.float64).ravel()
    d_neg = np.asarray(d_neg, dtype=np.float64).ravel()
    if d_pos.shape != d_neg.shape:
        raise ValueError(f"d_pos and d_neg differ in length: {d_pos.shape} vs {d_neg.shape}")
    n = d_pos.size
    if n == 0:
        raise ValueError("cannot mine an empty batch")
    r = d_neg - d_pos
    semi = np.flatnonzero((r > 0.0) & (r <= margin))
    chosen = [semi]
    count = semi.size
    y = count / n
    target = math.floor(gamma * n + 1e-9)
    if y < gamma:
        hard = np.flatnonzero(r <= 0.0)
        hard = hard[np.argsort(r[hard], kind="stable")]
        add = hard[: max(0, target - count)]
        chosen.append(add)
        count += add.size
        y = count / n
        if y < gamma:
            easy = np.flatnonzero(r > margin)
            k = min(max(0, target - count), easy.size)
            chosen.append(np.sort(rng.choice(easy, size=k, replace=False)))
    return np.concatenate(chosen).astype(np.int64), float(y)


def update_margin(margin: float, mean_yield: float, params: TripletParams) -> float:
    """The next epoch's margin: ``margin * margin_factor`` if ``mean_yield < yield_min``
    (too few informative triplets: widen the semi-hard band), ``margin / margin_factor``
    if ``mean_yield > yield_max``, else unchanged; kept in [margin_min, margin_max]."""
    if mean_yield < params.yield_min:
        margin *= params.margin_factor
    elif mean_yield > params.yield_max:
        margin /= params.margin_factor
    return float(min(max(margin, params.margin_min), params.margin_max))


# --- augmentation ----------------------------------------------------------------------------


def euler_rotations(angles_rad: np.ndarray) -> np.ndarray:
    """Rotation matrices (..., 3, 3) float64 ``Rz(c) @ Ry(b) @ Rx(a)`` of (..., 3) Euler
    angles (a, b, c) about x, y, z, radians."""
    a = np.asarray(angles_rad, dtype=np.float64)
    ca, sa = np.cos(a[..., 0]), np.sin(a[..., 0])
    cb, sb = np.cos(a[..., 1]), np.sin(a[..., 1])
    cc, sc = np.cos(a[..., 2]), np.sin(a[..., 2])
    out = np.empty(a.shape[:-1] + (3, 3))
    out[..., 0, 0] = cc * cb
    out[..., 0, 1] = cc * sb * sa - sc * ca
    out[..., 0, 2] = cc * sb * ca + sc * sa
    out[..., 1, 0] = sc * cb
    out[..., 1, 1] = sc * sb * sa + cc * ca
    out[..., 1, 2] = sc * sb * ca - cc * sa
    out[..., 2, 0] = -sb
    out[..., 2, 1] = cb * sa
    out[..., 2, 2] = cb * ca
    return out


def edge_crop(patches: np.ndarray, params: TripletParams, rng: np.random.Generator) -> np.ndarray:
    """(n, P, 3) patches (units of R, centred) with up to ``crop_spheres`` small spheres cut
    out near each patch's edge, the removed points replaced by random remaining points of
    the same patch so that every patch keeps P points; a new float32 array."""
    x = np.asarray(patches, dtype=np.float32)
    n, p, _ = x.shape
    m = params.crop_spheres
    if m == 0 or n == 0:
        return x.copy()
    norms = np.linalg.norm(x, axis=-1)  # (n, P)
    edge = norms >= params.crop_edge * norms.max(axis=1, keepdims=True)
    # Sphere centres: random edge points (largest random key among the edge points).
    keys = rng.random((n, m, p)) * edge[:, None, :]
    centres = np.take_along_axis(x, keys.argmax(axis=2)[..., None], axis=1)  # (n, m, 3)
    radii = rng.uniform(params.crop_radius_min, params.crop_radius_max, (n, m))
    active = np.arange(m)[None, :] < rng.integers(0, m + 1, n)[:, None]  # (n, m)
    d2 = np.square(x[:, None, :, :] - centres[:, :, None, :]).sum(-1)  # (n, m, P)
    removed = ((d2 < np.square(radii)[..., None]) & active[..., None]).any(axis=1)  # (n, P)
    kept = ~removed
    n_kept = kept.sum(axis=1)
    removed &= (n_kept > 0)[:, None]  # never empty a patch (cannot happen for real sizes)
    # A random kept point for every slot: the kept indices come first, in random order, in
    # ``order``; slot j takes order[floor(u_j * n_kept)].
    order = np.argsort(-(kept + rng.random((n, p))), axis=1, kind="stable")
    pick = np.minimum((rng.random((n, p)) * n_kept[:, None]).astype(np.int64), p - 1)
    source = np.take_along_axis(order, pick, axis=1)
    replaced = np.take_along_axis(x, source[..., None], axis=1)
    return np.where(removed[..., None], replaced, x)


def augment_triplets(
    triplets: np.ndarray, params: TripletParams, rng: np.random.Generator
) -> np.ndarray:
    """The paper's augmentation of (n, 3, P, 3) float32 triplets (units of R, centred): per
    patch an edge crop, a small rotation, a translation and Gaussian noise, and one large
    rotation per triplet shared by its three patches (applied after the small one); a new
    (n, 3, P, 3) float32 array."""
    x = np.asarray(triplets, dtype=np.float32)
    n, three, p, _ = x.shape
    flat = edge_crop(x.reshape(n * three, p, 3), params, rng).reshape(n, three, p, 3)
    small = euler_rotations(np.deg2rad(rng.uniform(-1, 1, (n, three, 3)) * params.local_rot_deg))
    large = euler_rotations(np.deg2rad(rng.uniform(-1, 1, (n, 3)) * params.global_rot_deg))
    rot = (large[:, None] @ small).astype(np.float32)  # (n, 3, 3, 3): global after local
    out = flat @ rot.transpose(0, 1, 3, 2)  # row vectors: x' = x R^T
    out += rng.uniform(-params.translate, params.translate, (n, three, 1, 3)).astype(np.float32)
    if params.noise_sigma > 0:
        out += rng.normal(0.0, params.noise_sigma, out.shape).astype(np.float32)
    return out.astype(np.float32, copy=False)


# --- training ------------------------------------------------------------------------------


def _triplet_features(model: PatchEncoder, batch: torch.Tensor) -> torch.Tensor:
    """(3, n, d) features of an (n, 3, P, 3) batch of triplets, one forward pass."""
    n, _, p, _ = batch.shape
    feats = model(batch.transpose(0, 1).reshape(3 * n, p, 3))
    return feats.view(3, n, -1)


def ema_update(miner: torch.nn.Module, model: torch.nn.Module, momentum: float) -> None:
    """``theta_m <- momentum theta_m + (1 - momentum) theta`` for every parameter of
    ``miner`` from ``model`` (same architecture); the buffers (batch-norm running
    statistics) are copied (see the module docstring)."""
    import torch

    with torch.no_grad():
        for pm, p in zip(miner.parameters(), model.parameters(), strict=True):
            pm.mul_(momentum).add_(p.detach(), alpha=1.0 - momentum)
        for bm, b in zip(miner.buffers(), model.buffers(), strict=True):
            bm.copy_(b)


def evaluate(
    model: PatchEncoder, triplets: np.ndarray, margin: float, batch_size: int = 256
) -> tuple[float, float]:
    """(mean triplet loss at ``margin``, accuracy: the share with d- > d+) of ``model`` in
    eval mode on (T, 3, P, 3) float32 triplets, without augmentation."""
    import torch

    from detectors.cosarad.pointnet2 import embed

    t, _, p, _ = triplets.shape
    if t == 0:
        raise ValueError("no triplets to evaluate")
    feats = embed(model, triplets.reshape(t * 3, p, 3), batch_size=batch_size)
    m = torch.from_numpy(feats.reshape(t, 3, -1))
    loss = float(triplet_loss(m[:, 0], m[:, 1], m[:, 2], margin))
    d_pos = (m[:, 0] - m[:, 1]).square().sum(1)
    d_neg = (m[:, 0] - m[:, 2]).square().sum(1)
    return loss, float((d_neg > d_pos).double().mean())


def _checked_triplets(triplets: np.ndarray) -> np.ndarray:
    arr = np.asarray(triplets)
    if arr.ndim != 4 or arr.shape[1] != 3 or arr.shape[3] != 3:
        raise ValueError(f"triplets must be (T, 3, P, 3), got {arr.shape}")
    if arr.dtype != np.float32:
        raise TypeError(f"triplets must be float32, got {arr.dtype}")
    if not np.isfinite(arr).all():
        raise ValueError("triplets hold non-finite coordinates")
    return arr


def train_extractor(
    triplets: np.ndarray, params: TripletParams | None = None, progress: bool = True
) -> tuple[PatchEncoder, list[dict[str, float]]]:
    """Train a ``PatchEncoder`` on (T, 3, P, 3) float32 triplets [anchor, positive,
    negative] of normalised patches (centred, units of the patch radius); returns the
    trainer network in eval mode and one history record per epoch: ``epoch``,
    ``train_loss`` (mean over the epoch's mined batches), ``val_loss`` (at the epoch's
    margin) and ``val_accuracy`` (share of validation triplets with d- > d+), ``margin``
    (used in the epoch), ``yield`` (its mean mining yield), ``mined`` (mean share of a
    batch the trainer stepped on), ``lr`` (at the epoch's end) and ``seconds``.

    A seeded ``val_fraction`` of the triplets is held out. The validation figures come from
    the eval-mode network, whose batch-norm running statistics start at (0, 1) and forget
    that at momentum 0.1 per step: over the first ~50 steps (a few epochs of a small set)
    they understate what the network has learnt. Determinism: the weights, the
    split, the batches, the augmentation, the mining and dropout all follow
    ``params.seed``; the caller's global torch random state is left as it was.
    """
    import copy

    import torch
    from tqdm import tqdm

    from detectors.cosarad.pointnet2 import PatchEncoder, preset

    p = TripletParams() if params is None else params
    data = _checked_triplets(triplets)
    t = data.shape[0]
    n_val = int(round(t * p.val_fraction))
    n_train = t - n_val
    if n_val < 1 or n_train < 2:
        raise ValueError(
            f"{t} triplets cannot be split into >= 2 training and >= 1 validation "
            f"triplets at val_fraction {p.val_fraction}"
        )
    rng = np.random.default_rng(p.seed)
    perm = rng.permutation(t)
    val_idx, train_idx = np.sort(perm[:n_val]), np.sort(perm[n_val:])
    val = data[val_idx]
    n_batches = math.ceil(n_train / p.batch_size)
    total = n_batches * p.epochs
    history: list[dict[str, float]] = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(p.seed)
        model = PatchEncoder(preset(p.preset), p.d)
        miner = copy.deepcopy(model).eval().requires_grad_(False)
        model.train()
        opt = torch.optim.Adam(model.parameters(), lr=p.lr)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda step: 0.5 * (1.0 + math.cos(math.pi * min(step, total) / total))
        )
        margin = p.margin
        bar = tqdm(range(p.epochs), desc="cosarad extractor", unit="epoch", disable=not progress)
        for epoch in bar:
            t0 = time.perf_counter()
            losses: list[float] = []
            yields: list[float] = []
            mined: list[float] = []
            order = rng.permutation(train_idx)
            for chunk in np.array_split(order, n_batches):
                batch = data[chunk]
                if p.augment:
                    batch = augment_triplets(batch, p, rng)
                x = torch.from_numpy(np.ascontiguousarray(batch))
                with torch.no_grad():
                    mg, mp, mb = _triplet_features(miner, x)
                    d_pos = (mg - mp).norm(dim=1).numpy()
                    d_neg = (mg - mb).norm(dim=1).numpy()
                idx, y = mine(d_pos, d_neg, margin, p.critical_yield, rng)
                yields.append(y)
                mined.append(idx.size / len(chunk))
                if idx.size:
                    fg, fp, fb = _triplet_features(model, x[torch.from_numpy(idx)])
                    loss = triplet_loss(fg, fp, fb, margin)
                    if not torch.isfinite(loss):
                        raise FloatingPointError(f"extractor training diverged at epoch {epoch}")
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    losses.append(loss.item())
                sched.step()
                ema_update(miner, model, p.miner_momentum)
            val_loss, val_acc = evaluate(model, val, margin, p.eval_batch_size)
            mean_yield = float(np.mean(yields))
            record = {
                "epoch": float(epoch),
                "train_loss": float(np.mean(losses)) if losses else float("nan"),
                "val_loss": val_loss,
                "val_accuracy": val_acc,
                "margin": margin,
                "yield": mean_yield,
                "mined": float(np.mean(mined)),
                "lr": float(sched.get_last_lr()[0]),
                "seconds": time.perf_counter() - t0,
            }
            history.append(record)
            log.info(
                "extractor epoch %d: train %.4f, val %.4f (acc %.3f), margin %.3f, yield %.3f",
                epoch,
                record["train_loss"],
                val_loss,
                val_acc,
                margin,
                mean_yield,
            )
            bar.set_postfix(loss=f"{val_loss:.3f}", acc=f"{val_acc:.2f}", margin=f"{margin:.2f}")
            margin = update_margin(margin, mean_yield, p)
    model.eval()
    return model, history


# --- checkpoints -----------------------------------------------------------------------------


def save_extractor(
    path: str | os.PathLike[str], model: PatchEncoder, params: TripletParams, meta: dict[str, Any]
) -> None:
    """Write ``{"state_dict", "config", "params", "meta"}`` to ``path`` with ``torch.save``,
    atomically (a temporary file in the same directory renamed into place). ``config``
    holds the PointNet++ configuration and d, so ``load_extractor`` rebuilds the network;
    ``meta`` must be JSON-serialisable (checkpoints are read with ``weights_only=True``)."""
    import torch

    try:
        json.dumps(meta)
    except (TypeError, ValueError) as e:
        raise TypeError(f"meta must be JSON-serialisable plain values: {e}") from None
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "config": {"pointnet2": model.config.model_dump(mode="json"), "d": model.d},
        "params": params.model_dump(mode="json"),
        "meta": meta,
    }
    tmp = path.with_name(f"{TEMP_PREFIX}{path.name}.{secrets.token_hex(4)}")
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load_extractor(path: str | os.PathLike[str]) -> tuple[PatchEncoder, dict[str, Any]]:
    """The ``PatchEncoder`` (eval mode) saved at ``path`` by ``save_extractor``, rebuilt
    from the saved configuration and loaded with ``strict=True``, and ``{"params":
    TripletParams, "config": PointNet2Config, "d": int, "meta": dict}``. A missing file or
    one that is not such a checkpoint raises ``ValueError`` with one line."""
    import torch

    from detectors.cosarad.pointnet2 import PatchEncoder, PointNet2Config

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"no COSARAD extractor checkpoint at {path}: file not found")
    what = f"{path} is not a COSARAD extractor checkpoint"
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for files it cannot unpickle
        raise ValueError(f"{what} (torch.load failed: {type(e).__name__})") from None
    if not isinstance(ckpt, dict) or not set(CHECKPOINT_KEYS) <= set(ckpt):
        raise ValueError(f"{what} (expected keys {', '.join(CHECKPOINT_KEYS)})")
    try:
        config = PointNet2Config.model_validate(ckpt["config"]["pointnet2"])
        d = int(ckpt["config"]["d"])
        params = TripletParams.model_validate(ckpt["params"])
    except (KeyError, TypeError, ValidationError) as e:
        first = str(e).splitlines()[0]
        raise ValueError(f"{what} (bad config or params: {first})") from None
    model = PatchEncoder(config, d)
    state = ckpt["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"{what} (state_dict is not a dict)")
    expected = set(model.state_dict())
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise ValueError(
            f"{what} (state_dict does not fit its config: missing {missing[:3]}, "
            f"unexpected {unexpected[:3]})"
        )
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:  # shape mismatches
        detail = " ".join(str(e).split())
        raise ValueError(f"{what} (state_dict does not fit its config: {detail})") from None
    model.eval()
    return model, {"params": params, "config": config, "d": d, "meta": ckpt["meta"]}
