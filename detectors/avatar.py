"""AVATAR (Liu et al. 2026, ../shared/papers/avatar-real-to-twin.txt, section III): Real-to-Twin
anomaly detection by twin-anchored representation calibration.

Following the paper (eq. numbers are its own):

- **Tokens**: the real image ``I_r`` and the twin render ``I_s``, each resized to
  ``image_size`` square, go through a frozen DINOv2 ViT-S/14 (``detectors.backbones``); the
  last block's normalised patch tokens are ``F_r``, ``F_s`` (N, 384), N = (image_size/14)^2
  (504 px: 36 x 36, the paper's setting). ``backbone: resnet18_compact`` swaps in twincell's
  own compact ResNet (below); everything after the tokens is the same.
- **Dual projectors**: ``Z_r = phi_r(F_r)``, ``Z_s = phi_s(F_s)`` into a shared space of
  ``proj_dim`` channels.
- **Semantic reassembly** (single head, eqs. 3-4): ``M = softmax(Q(Z_r) E(Z_s)^T / sqrt(d))``
  (N, N), queries from the real tokens, keys from the twin tokens, d = ``proj_dim``;
  ``Zs_hat = M D(Z_s)``, the twin's dictionary projection routed onto the real layout.
- **Losses**: local (eq. 5) ``sum((1 - cos(Z_r, Zs_hat)) * W) / sum(W)`` with ``W`` the
  twin's foreground at token resolution, so background real tokens never enter it; global
  (eq. 6) ``1 - cos(GAP(Zs_hat), GAP(Z_s))`` against the twin's own projected tokens, which
  stops ``M`` from copying the real image; total ``lambda_local L_local + lambda_global
  L_global`` (1 and 1). AdamW, lr 1e-4, weight decay 1e-4, batch 8, 50 epochs.
- **Score map** (eq. 7): ``A = (1 - cos(Z_r, Zs_hat)) * W`` on the token grid, upsampled
  bilinearly to the real image's H x W.
- **Ablations** (Table II): ``real_projector`` / ``render_projector`` false make ``phi_r`` /
  ``phi_s`` the identity (the backbone tokens are used as they are); ``local_loss`` false
  trains on the global loss alone.

Chosen where the paper is silent (stated so results can be read against it):

- Projectors are two-layer MLPs ``Linear(C, proj_dim) - GELU - Linear(proj_dim, proj_dim)``
  ("lightweight", "non-linearly"), C the backbone's token channels (``TOKEN_SPECS``); ``Q``,
  ``E`` and ``D`` are single linear layers (with bias) to ``proj_dim`` channels. The paper
  gives no width: ``proj_dim`` unset means the backbone's C (384 for DINOv2). An identity
  projector keeps C channels, so with a projector switched off ``proj_dim`` must be C or
  unset (checked at load).
- ``resnet18_compact`` tokens (the paper uses DINOv2 only): ``layer2`` (64 channels, stride
  8) average-pooled 2 x 2 onto ``layer3``'s grid and concatenated with ``layer3`` (128
  channels, stride 16), so a token is 192 channels on a stride-16 grid (224 px: 14 x 14),
  and ``image_size`` must be a multiple of 16. Two scales, as PaDiM's multi-scale embedding
  but pooled down to the coarser grid rather than upsampled to the finer one, so N (and the
  N x N attention) stays at the ViT's size; the maps are used raw (ReLU outputs, no
  normalisation), as PaDiM and PatchCore use theirs.
- ``W``: a token is foreground when at least half of its cell of ``fg_mask`` is (area
  average, threshold 0.5). The same ``W`` masks the loss and the score map, as the paper
  uses one ``W`` for both.
- Batching: the local loss is computed per image and averaged over the batch (an image with
  an empty ``W`` adds 0); GAP averages all N tokens (the paper writes no mask there).
- Images are resized with bilinear interpolation and antialiasing (a 640 px image is shrunk
  about 3x at 224), then ImageNet-normalised (DINOv2's own normalisation, and the ResNets').
- Map post-processing: a Gaussian of ``sigma_px`` (default 4 px at the real image's
  resolution), as PaDiM and PatchCore use here, so the detectors of one table differ in the
  method and not in the smoothing; 4 px is a tenth of a token's footprint on a 640 px image
  at 224 (40 px), so it removes the bilinear grid's ridges without moving a defect. 0 gives
  the paper's eq. 7 map exactly.
- Image score: the maximum of the (smoothed) map. The map is already zero outside the
  twin's foreground tokens, so this is the maximum within the foreground, as the residual
  baselines and PaDiM score.
- Training order: a seeded permutation per epoch; head initialisation under
  ``torch.manual_seed(seed)`` in a forked RNG (the global RNG is left as it was); torch's
  deterministic algorithms are on during ``fit`` and ``predict``.
- Caution the paper does not discuss: nothing but the frozen backbone keeps the projectors
  from collapsing both domains to a constant (which zeroes both losses and every map); with
  the paper's short schedule they do not get there on our data, and ``history`` records the
  losses per epoch so a run can be checked.

Practicalities: the backbone runs once per distinct image in ``fit`` (tokens are kept in
memory for all epochs, identical images share one pass); ``set_feature_cache(dir)`` also
keeps every image's tokens on disk (keyed by backbone and its weights, image size and the
image's bytes), so a rerun in the same run directory skips the backbone.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, Strict, model_validator
from scipy import ndimage

from scenarios.interfaces import Prediction, Sample

if TYPE_CHECKING:  # annotations only: torch is imported inside the functions that use it
    import torch

#: A token is foreground when at least this fraction of its cell is twin foreground.
FG_TOKEN_FRACTION = 0.5
#: ``image_size`` bounds in px (both backbones' strides divide the upper one).
MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 28, 1008
#: The backbones AVATAR accepts (the keys of ``TOKEN_SPECS``).
Backbone = Literal["dinov2_vits14", "resnet18_compact"]


def vit_tokens(model: Any, x: torch.Tensor) -> torch.Tensor:
    """DINOv2's last-block LayerNorm-ed patch tokens (B, N, 384) float32 of normalised
    (B, 3, S, S) input, row-major over the (S/14, S/14) grid."""
    return model.forward_tokens(x, layer=-1, norm=True)


def resnet_tokens(model: Any, x: torch.Tensor) -> torch.Tensor:
    """``resnet18_compact`` tokens (B, N, 64 + 128) float32 of normalised (B, 3, S, S) input:
    ``layer2`` average-pooled 2 x 2 onto ``layer3``'s grid, then ``layer3``, channels in that
    order, row-major over the (S/16, S/16) grid."""
    import torch
    import torch.nn.functional as F

    maps = model.forward_features(x, ("layer2", "layer3"))
    fine = F.avg_pool2d(maps["layer2"], kernel_size=2, stride=2)
    grid = torch.cat([fine, maps["layer3"]], dim=1)  # (B, C, S/16, S/16)
    return grid.flatten(2).transpose(1, 2)


@dataclass(frozen=True)
class TokenSpec:
    """A backbone's tokens: ``channels`` each, one per ``stride_px`` x ``stride_px`` input
    cell, computed by ``extract(model, x)`` -> (B, N, channels); ``hint`` names good sizes."""

    channels: int
    stride_px: int
    extract: Callable[[Any, torch.Tensor], torch.Tensor]
    hint: str


#: Token channels and stride per backbone (resnet18_compact: ``RESNET_CHANNELS`` layer2 +
#: layer3, written out so this module imports no torch).
TOKEN_SPECS: dict[str, TokenSpec] = {
    "dinov2_vits14": TokenSpec(
        channels=384,
        stride_px=14,
        extract=vit_tokens,
        hint="224 gives 16x16 tokens, 504 the paper's 36x36",
    ),
    "resnet18_compact": TokenSpec(
        channels=64 + 128,
        stride_px=16,
        extract=resnet_tokens,
        hint="224 gives 14x14 tokens, 256 16x16",
    ),
}


def _nearest_sizes(size: int, stride: int) -> str:
    """The allowed multiples of ``stride`` either side of ``size`` ("224 or 240")."""
    below, smallest = size // stride * stride, max(MIN_IMAGE_SIZE, 2 * stride)
    sides = [v for v in (below, below + stride) if smallest <= v <= MAX_IMAGE_SIZE]
    return " or ".join(str(v) for v in sides)


class AVATARParams(BaseModel):
    """AVATAR's parameters, with the paper's values as defaults where it gives them."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    #: The paper's DINOv2 ViT-S/14, or twincell's compact ResNet (see the module docstring).
    backbone: Backbone = "dinov2_vits14"
    #: "auto" (official checkpoint from the cache), "random" (seeded) or a checkpoint path.
    weights: Annotated[str, Strict()] = "auto"
    #: Square input side in px, a multiple of the backbone's stride (DINOv2: 14, the paper:
    #: 504, 224 keeps the CPU practical; resnet18_compact: 16).
    image_size: Annotated[int, Strict()] = Field(224, ge=MIN_IMAGE_SIZE, le=MAX_IMAGE_SIZE)
    #: Projection channels; None: the backbone's token channels (384 DINOv2, 192 ResNet).
    proj_dim: Annotated[int, Strict(), Field(ge=8, le=2048)] | None = None
    epochs: Annotated[int, Strict()] = Field(50, ge=0, le=10_000)
    batch_size: Annotated[int, Strict()] = Field(8, ge=1, le=1024)
    lr: Annotated[float, Strict()] = Field(1e-4, gt=0.0, le=1.0)
    weight_decay: Annotated[float, Strict()] = Field(1e-4, ge=0.0, le=1.0)
    lambda_local: Annotated[float, Strict()] = Field(1.0, ge=0.0, le=100.0)
    lambda_global: Annotated[float, Strict()] = Field(1.0, ge=0.0, le=100.0)
    #: Table II ablations: False makes phi_r / phi_s the identity, or drops the local loss.
    real_projector: Annotated[bool, Strict()] = True
    render_projector: Annotated[bool, Strict()] = True
    local_loss: Annotated[bool, Strict()] = True
    #: Gaussian smoothing of the upsampled map, px of the real image (0: the paper's map).
    sigma_px: Annotated[float, Strict()] = Field(4.0, ge=0.0, le=32.0)
    seed: Annotated[int, Strict()] = Field(0, ge=0, le=2**31 - 1)

    @model_validator(mode="after")
    def _checked(self) -> AVATARParams:
        from detectors.backbones.weights import check_weights

        spec = self.token_spec
        if self.image_size % spec.stride_px:
            raise ValueError(
                f"image_size: must be a multiple of {spec.stride_px} px for {self.backbone} "
                f"(nearest: {_nearest_sizes(self.image_size, spec.stride_px)}; {spec.hint})"
            )
        identity = not (self.real_projector and self.render_projector)
        if identity and self.proj_dim not in (None, spec.channels):
            raise ValueError(
                f"proj_dim: must be {spec.channels} ({self.backbone}'s channels) or unset when "
                f"a projector is switched off, since the identity keeps them"
            )
        check_weights(self.backbone, self.weights)
        return self

    @property
    def token_spec(self) -> TokenSpec:
        """The backbone's token channels, stride and extractor."""
        return TOKEN_SPECS[self.backbone]

    @property
    def grid(self) -> int:
        """Tokens per side of the square token grid: ``image_size`` / the backbone's stride."""
        return self.image_size // self.token_spec.stride_px

    @property
    def dim(self) -> int:
        """The projection channels: ``proj_dim``, or the backbone's token channels if unset."""
        return self.token_spec.channels if self.proj_dim is None else self.proj_dim


def build_head(params: AVATARParams) -> torch.nn.ModuleDict:
    """The trainable part: ``phi_r``, ``phi_s`` (MLP or identity) and ``q``, ``e``, ``d``
    (linear), initialised from torch's global RNG (seed it first)."""
    from torch import nn

    dim, channels = params.dim, params.token_spec.channels

    def projector(on: bool) -> nn.Module:
        if not on:
            return nn.Identity()
        return nn.Sequential(nn.Linear(channels, dim), nn.GELU(), nn.Linear(dim, dim))

    return nn.ModuleDict(
        {
            "phi_r": projector(params.real_projector),
            "phi_s": projector(params.render_projector),
            "q": nn.Linear(dim, dim),
            "e": nn.Linear(dim, dim),
            "d": nn.Linear(dim, dim),
        }
    )


def reassemble(
    head: torch.nn.ModuleDict, real_tokens: torch.Tensor, twin_tokens: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(Z_r, Zs_hat, Z_s)``, each (B, N, proj_dim), from backbone tokens (B, N, C).

    ``Z_r = phi_r(F_r)``, ``Z_s = phi_s(F_s)``, ``Zs_hat = softmax(Q(Z_r) E(Z_s)^T / sqrt(d))
    D(Z_s)`` (eqs. 3-4). Every real token's output depends on that token and the twin only.
    """
    z_r = head["phi_r"](real_tokens)
    z_s = head["phi_s"](twin_tokens)
    q, k = head["q"](z_r), head["e"](z_s)
    affinity = (q @ k.transpose(1, 2)) / float(q.shape[-1]) ** 0.5
    zs_hat = affinity.softmax(dim=-1) @ head["d"](z_s)
    return z_r, zs_hat, z_s


def residual(z_r: torch.Tensor, zs_hat: torch.Tensor) -> torch.Tensor:
    """``1 - cos(Z_r, Zs_hat)`` per token (B, N) from (B, N, C) (channel-wise cosine)."""
    import torch.nn.functional as F

    return 1.0 - F.cosine_similarity(z_r, zs_hat, dim=-1)


def local_loss(z_r: torch.Tensor, zs_hat: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Eq. 5 per image, averaged over the batch: ``sum((1 - cos) * W) / sum(W)``; ``w`` is
    (B, N) float in {0, 1}; an image with an empty ``W`` contributes 0."""
    per_image = (residual(z_r, zs_hat) * w).sum(dim=1) / w.sum(dim=1).clamp(min=1.0)
    return per_image.mean()


def global_loss(zs_hat: torch.Tensor, z_s: torch.Tensor) -> torch.Tensor:
    """Eq. 6 averaged over the batch: ``1 - cos(GAP(Zs_hat), GAP(Z_s))``, GAP over all tokens."""
    import torch.nn.functional as F

    return (1.0 - F.cosine_similarity(zs_hat.mean(dim=1), z_s.mean(dim=1), dim=-1)).mean()


@contextmanager
def _deterministic() -> Iterator[None]:
    """torch's deterministic algorithms on inside the block, the previous setting after."""
    import torch

    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before)


class AVATAR:
    """AVATAR behind the ``Detector`` interface (see the module docstring).

    After ``fit``, ``history`` holds one record per epoch: ``{"epoch", "loss", "local",
    "global"}``, the sample-weighted means over the epoch (``local`` is recorded even when
    the ablation leaves it out of ``loss``).
    """

    name: str = "avatar"

    def __init__(self, **params: Any) -> None:
        self.params = AVATARParams(**params)
        self._model: Any = None
        self.head: Any = None
        self.weights_info: dict[str, Any] = {}
        self.history: list[dict[str, float]] = []
        self.cache_dir: Path | None = None

    # -- features ------------------------------------------------------------------------

    def set_feature_cache(self, directory: Path | str | None) -> None:
        """Keep every image's backbone tokens under ``directory`` (created on demand; None
        turns it off). Files are named by a hash of the backbone and its weights,
        ``image_size`` and the image's bytes, so a cache is never read for another
        configuration."""
        self.cache_dir = None if directory is None else Path(directory)

    def _backbone(self) -> Any:
        if self._model is None:
            import torch

            from detectors.backbones.weights import load_backbone

            p = self.params
            with torch.random.fork_rng(devices=[]):  # "random" weights reseed the global RNG
                self._model, info = load_backbone(p.backbone, p.weights, seed=p.seed)
            self.weights_info = info.to_json()
        return self._model

    def _key(self, rgb: np.ndarray) -> str:
        h = hashlib.sha256()
        # weights_info names the backbone too, so two backbones never share a file.
        h.update(json.dumps([self.weights_info, self.params.image_size]).encode())
        h.update(str((rgb.shape, str(rgb.dtype))).encode())
        h.update(np.ascontiguousarray(rgb).tobytes())
        return h.hexdigest()

    def tokens(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """Backbone tokens (B, N, C) float32 of (H, W, 3) uint8 images, N = ``grid`` ** 2 and
        C the backbone's channels; each distinct image runs once (identical ones share a
        pass; the disk cache is used when set)."""
        import torch
        import torch.nn.functional as F

        from detectors.backbones.resnet import normalize

        model = self._backbone()
        s = self.params.image_size
        extract = self.params.token_spec.extract
        keys = [self._key(im) for im in images]
        found: dict[str, torch.Tensor] = {}
        for key in set(keys):
            path = self._cache_path(key)
            if path is not None and path.is_file():
                found[key] = torch.load(path, map_location="cpu", weights_only=True)
        todo = [(k, im) for k, im in zip(keys, images, strict=True) if k not in found]
        todo = list({k: (k, im) for k, im in todo}.values())
        step = max(1, self.params.batch_size)
        for i in range(0, len(todo), step):
            chunk = todo[i : i + step]
            sizes = {im.shape for _, im in chunk}
            groups = [[c for c in chunk if c[1].shape == sz] for sz in sorted(sizes)]
            for group in groups:
                x = normalize(np.stack([im for _, im in group]))
                x = F.interpolate(x, size=(s, s), mode="bilinear", antialias=True)
                with torch.no_grad():
                    out = extract(model, x)
                for (key, _), t in zip(group, out, strict=True):
                    found[key] = t.contiguous()
                    self._store(key, found[key])
        return torch.stack([found[k] for k in keys])

    def _cache_path(self, key: str) -> Path | None:
        return None if self.cache_dir is None else self.cache_dir / f"avatar-{key[:32]}.pt"

    def _store(self, key: str, tokens: torch.Tensor) -> None:
        import torch

        path = self._cache_path(key)
        if path is None:
            return
        from scenarios.interfaces import TEMP_PREFIX

        path.parent.mkdir(parents=True, exist_ok=True)
        # The run directory's temporary-file prefix: a kill's leftovers are removed on resume.
        tmp = path.with_name(f"{TEMP_PREFIX}{path.name}.{os.getpid()}")
        torch.save(tokens.clone(), tmp)
        os.replace(tmp, path)  # atomic: a reader never sees half a file

    def token_mask(self, fg_masks: Sequence[np.ndarray]) -> torch.Tensor:
        """``W`` (B, N) float32 in {0, 1}: twin foreground (H, W) bool masks at token
        resolution (a token is foreground when >= half of its cell is)."""
        import torch
        import torch.nn.functional as F

        g = self.params.grid
        rows = []
        for m in fg_masks:
            x = torch.from_numpy(np.asarray(m, dtype=np.float32))[None, None]
            frac = F.interpolate(x, size=(g, g), mode="area")[0, 0]
            rows.append((frac >= FG_TOKEN_FRACTION).to(torch.float32).reshape(-1))
        return torch.stack(rows)

    # -- training ------------------------------------------------------------------------

    def _init_head(self) -> None:
        import torch

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.params.seed)
            self.head = build_head(self.params)

    def loss_terms(
        self, real_tokens: torch.Tensor, twin_tokens: torch.Tensor, w: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """``{"loss", "local", "global"}`` of a batch of backbone tokens (B, N, C) and
        ``W`` (B, N); ``loss`` leaves the local term out when ``local_loss`` is off."""
        p = self.params
        z_r, zs_hat, z_s = reassemble(self.head, real_tokens, twin_tokens)
        local = local_loss(z_r, zs_hat, w)
        glob = global_loss(zs_hat, z_s)
        total = p.lambda_global * glob
        if p.local_loss:
            total = total + p.lambda_local * local
        return {"loss": total, "local": local, "global": glob}

    def fit(self, samples: Sequence[Sample]) -> None:
        """Train the projectors and the attention on normal pairs (label 1 is refused)."""
        import torch

        for s in samples:
            if s.label == 1:
                raise ValueError(f"fit got anomalous sample {s.id!r}; give normal ones only")
            _check_sample(s)
        if not samples:
            raise ValueError("AVATAR needs at least one normal training sample")
        p = self.params
        with _deterministic():
            both = self.tokens([s.real.rgb for s in samples] + [s.twin.rgb for s in samples])
            real, twin = both[: len(samples)], both[len(samples) :]
            w = self.token_mask([s.fg_mask for s in samples])
            self._init_head()
            head = self.head
            opt = torch.optim.AdamW(head.parameters(), lr=p.lr, weight_decay=p.weight_decay)
            gen = torch.Generator().manual_seed(p.seed)
            self.history = []
            n = len(samples)
            head.train()
            for epoch in range(p.epochs):
                sums = {"loss": 0.0, "local": 0.0, "global": 0.0}
                for idx in torch.randperm(n, generator=gen).split(p.batch_size):
                    terms = self.loss_terms(real[idx], twin[idx], w[idx])
                    opt.zero_grad(set_to_none=True)
                    if terms["loss"].requires_grad:
                        terms["loss"].backward()
                        opt.step()
                    for k in sums:
                        sums[k] += float(terms[k].detach()) * len(idx)
                self.history.append({"epoch": float(epoch), **{k: v / n for k, v in sums.items()}})
            head.eval()

    # -- inference -----------------------------------------------------------------------

    def token_map(self, sample: Sample) -> np.ndarray:
        """Eq. 7's map ``(1 - cos(Z_r, Zs_hat)) * W`` on the token grid (g, g) float32."""
        import torch

        if self.head is None:
            raise RuntimeError("AVATAR.predict before fit")
        _check_sample(sample)
        g = self.params.grid
        with _deterministic(), torch.no_grad():
            both = self.tokens([sample.real.rgb, sample.twin.rgb])  # one backbone batch
            w = self.token_mask([sample.fg_mask])
            z_r, zs_hat, _ = reassemble(self.head, both[:1], both[1:])
            amap = (residual(z_r, zs_hat) * w)[0].reshape(g, g)
        return amap.numpy().astype(np.float32)

    def predict(self, sample: Sample) -> Prediction:
        """The map upsampled (bilinear) to the real image, smoothed; its maximum the score."""
        import torch
        import torch.nn.functional as F

        tok = torch.from_numpy(self.token_map(sample))[None, None]
        H, W = sample.real.rgb.shape[:2]
        up = F.interpolate(tok, size=(H, W), mode="bilinear", align_corners=False)[0, 0]
        amap = up.numpy().astype(np.float64)
        if self.params.sigma_px > 0:
            amap = ndimage.gaussian_filter(amap, self.params.sigma_px, mode="nearest")
        out = np.ascontiguousarray(amap).astype(np.float32)
        return Prediction(score=float(out.max()), anomaly_map=out)

    # -- persistence ---------------------------------------------------------------------

    def save(self, path: Path | str) -> None:
        """Write the trained head's state_dict, the parameters (JSON) and ``history`` to
        ``path`` (torch.save); the backbone is referenced by its weights rule, not copied."""
        import torch

        if self.head is None:
            raise RuntimeError("AVATAR.save before fit")
        self._backbone()
        state = {k: v.detach().clone() for k, v in self.head.state_dict().items()}
        blob = {
            "format": "twincell-avatar-1",
            "params": json.dumps(self.params.model_dump()),
            "weights_info": json.dumps(self.weights_info),
            "history": json.dumps(self.history),
            "state_dict": state,
        }
        torch.save(blob, Path(path))

    @classmethod
    def load(cls, path: Path | str) -> AVATAR:
        """An AVATAR restored by ``save`` (its backbone loaded by the same weights rule)."""
        import torch

        blob = torch.load(Path(path), map_location="cpu", weights_only=True)
        if not isinstance(blob, dict) or blob.get("format") != "twincell-avatar-1":
            raise ValueError(f"{path}: not an AVATAR model saved by twincell")
        det = cls(**json.loads(blob["params"]))
        det._backbone()
        det._init_head()
        det.head.load_state_dict(blob["state_dict"], strict=True)
        det.head.eval()
        det.history = json.loads(blob["history"])
        return det


def _check_sample(sample: Sample) -> None:
    """Refuse a pair whose real image, twin image and foreground mask disagree in size."""
    real, twin = sample.real.rgb, sample.twin.rgb
    for name, im in (("real", real), ("twin", twin)):
        if im.dtype != np.uint8 or im.ndim != 3 or im.shape[2] != 3 or min(im.shape[:2]) < 1:
            raise ValueError(
                f"sample {sample.id!r}: {name} image must be (H, W, 3) uint8, got "
                f"{im.dtype} {im.shape}"
            )
    if real.shape != twin.shape:
        raise ValueError(
            f"sample {sample.id!r}: real image {real.shape} and twin image {twin.shape} "
            f"differ in size"
        )
    if sample.fg_mask.shape != real.shape[:2]:
        raise ValueError(
            f"sample {sample.id!r}: fg_mask {sample.fg_mask.shape} does not match the "
            f"image {real.shape[:2]}"
        )
