"""PointNet++ with multi-scale grouping (MSG) and COSARAD's contrastive head, in plain torch.

The encoder is the classification MSG network of Qi et al. (2017) as implemented by
yanx27/Pointnet_Pointnet2_pytorch (``models/pointnet2_cls_msg.py``, the implementation the
COSARAD paper cites): set-abstraction levels that sample centroids by farthest point
sampling (FPS), group the points within several radii of each centroid (ball query), run a
shared MLP (1x1 convolutions, batch norm, ReLU) over each group and max-pool it, then a
group-all level that pools the last centroids into one global vector ``h`` (1024 channels).
The paper's contrastive head (``ContrastiveHead``) maps ``h`` to a unit-norm patch feature.

Compatibility with yanx27's modules:

- Parameter and buffer names and shapes are the reference's: ``sa1.conv_blocks.{i}.{j}``
  (``Conv2d`` 1x1), ``sa1.bn_blocks.{i}.{j}`` (``BatchNorm2d``), ``sa3.mlp_convs.{j}``,
  ``sa3.mlp_bns.{j}``, so an encoder's state_dict can be exchanged with the reference's
  ``get_model(num_class, normal_channel=False)`` (minus its ``fc*``/``bn*``/``drop*``
  classifier). ``in_channel`` follows the reference: for an MSG level it counts the input
  *features only* and the 3 relative coordinates are added inside (the first level has no
  features, so ``sa1.conv_blocks.0.0.weight`` is (32, 3, 1, 1) in the "paper" preset; the
  second level's is (64, 320 + 3, 1, 1)); for the group-all level it counts coordinates and
  features together (640 + 3).
- Grouped inputs are concatenated as there: ``[features, xyz - centroid]`` in an MSG level,
  ``[xyz, features]`` in the group-all level (whose centroid is the origin).
- The arithmetic is the same, but laid out channels-last: a 1x1 convolution is a
  ``linear`` over the last axis and batch norm runs over all (batch, centroid, sample) rows
  per channel, which is what ``BatchNorm2d`` computes on the reference's (B, C, K, S).
  In eval mode batch norm is folded into the preceding 1x1 convolution. From the second
  MSG level on, each branch's first layer is applied to every point before grouping (a
  linear map commutes with gathering; the centroid's share is subtracted after), which
  gives the same numbers for a fraction of the work. The tests check all of this against
  a direct transcription of the reference's forward.
- Deliberate difference: FPS starts at point index 0 (the reference draws a random start),
  so the encoder is deterministic.

Coordinates are in units of the patch radius R: COSARAD's patches (all points within R of
a patch centre) are centred on that centre and divided by R before they reach the encoder,
so every point lies in the unit ball and the radii of ``PointNet2Config`` are fractions of
R. The "paper" preset's radii are yanx27's, whose ModelNet inputs are likewise scaled into
the unit sphere.

Everything runs on the CPU in plain torch (no compiled FPS or ball-query kernels).
"""

from __future__ import annotations

import logging
from typing import Annotated, cast

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, Strict, model_validator
from torch import nn

__all__ = [
    "HIDDEN_CHANNELS",
    "PRESETS",
    "ContrastiveHead",
    "MsgLevel",
    "PatchEncoder",
    "PointNet2Config",
    "PointNetSetAbstraction",
    "PointNetSetAbstractionMsg",
    "ball_query",
    "embed",
    "farthest_point_sample",
    "index_points",
    "preset",
    "square_distance",
]

log = logging.getLogger(__name__)

#: Channels of the encoder's global vector ``h``, which the paper's head expects.
HIDDEN_CHANNELS = 1024

_PosInt = Annotated[int, Strict(), Field(ge=1)]
_Radius = Annotated[float, Field(gt=0.0, le=4.0)]


class MsgLevel(BaseModel):
    """One multi-scale-grouping set-abstraction level: ``npoint`` FPS centroids, and per
    scale a ball radius (units of the patch radius R), a sample count and an MLP's widths."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    npoint: _PosInt
    radii: tuple[_Radius, ...] = Field(min_length=1)
    nsample: tuple[_PosInt, ...] = Field(min_length=1)
    mlps: tuple[tuple[_PosInt, ...], ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _checked(self) -> MsgLevel:
        if not len(self.radii) == len(self.nsample) == len(self.mlps):
            raise ValueError("radii, nsample and mlps: must have one entry per scale")
        if any(len(m) == 0 for m in self.mlps):
            raise ValueError("mlps: every scale needs at least one layer")
        return self

    @property
    def out_channels(self) -> int:
        """Channels of the level's output features (the scales' last widths, summed)."""
        return sum(m[-1] for m in self.mlps)


class PointNet2Config(BaseModel):
    """PointNet++ MSG encoder: the MSG ``levels`` in order, then a group-all level whose
    MLP ``global_mlp`` must end at ``HIDDEN_CHANNELS`` (1024) for the contrastive head."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    levels: tuple[MsgLevel, ...] = Field(min_length=1)
    global_mlp: tuple[_PosInt, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _checked(self) -> PointNet2Config:
        if self.global_mlp[-1] != HIDDEN_CHANNELS:
            raise ValueError(f"global_mlp: must end at {HIDDEN_CHANNELS} channels (the head's)")
        for k in range(1, len(self.levels)):
            if self.levels[k].npoint > self.levels[k - 1].npoint:
                raise ValueError(f"levels[{k}].npoint: must not exceed the previous level's")
        return self


#: The named configurations. "paper": yanx27's ``pointnet2_cls_msg`` (what COSARAD used, on a
#: GPU): about 3.9 GMAC per 512-point patch, some 15 s per 128 patches on two CPU cores.
#: "compact": the same structure (two MSG levels of three scales, then group-all to 1024
#: channels, so the paper's head applies unchanged) at about 10 MMAC per patch (~1/400),
#: sized for two CPU cores: an object's 100-200 patches embed in about 0.2 s and a few
#: thousand triplets train for 20 epochs in about ten minutes. Fewer centroids (64, 16
#: instead of 512, 128), fewer samples per ball (8/16/32 and 8/16/16) and narrower MLPs.
#: Its first-level radii are 1.5x the paper's: 64 centroids on a surface patch lie ~0.2 R
#: apart, and a ball of 0.1 R would hold only ~5 of 512 points and leave gaps between them.
PRESETS: dict[str, PointNet2Config] = {
    "paper": PointNet2Config(
        levels=(
            MsgLevel(
                npoint=512,
                radii=(0.1, 0.2, 0.4),
                nsample=(16, 32, 128),
                mlps=((32, 32, 64), (64, 64, 128), (64, 96, 128)),
            ),
            MsgLevel(
                npoint=128,
                radii=(0.2, 0.4, 0.8),
                nsample=(32, 64, 128),
                mlps=((64, 64, 128), (128, 128, 256), (128, 128, 256)),
            ),
        ),
        global_mlp=(256, 512, 1024),
    ),
    "compact": PointNet2Config(
        levels=(
            MsgLevel(
                npoint=64,
                radii=(0.15, 0.3, 0.6),
                nsample=(8, 16, 32),
                mlps=((16, 16, 32), (16, 16, 32), (16, 24, 32)),
            ),
            MsgLevel(
                npoint=16,
                radii=(0.3, 0.6, 1.2),
                nsample=(8, 16, 16),
                mlps=((32, 32, 64), (32, 32, 64), (32, 32, 64)),
            ),
        ),
        global_mlp=(64, 128, 1024),
    ),
}


def preset(name: str) -> PointNet2Config:
    """The named configuration of ``PRESETS``; an unknown name raises ``ValueError``."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(
            f"unknown PointNet++ preset {name!r} (allowed: {', '.join(sorted(PRESETS))})"
        ) from None


# --- sampling and grouping ----------------------------------------------------------------


def farthest_point_sample(xyz: torch.Tensor, npoint: int) -> torch.Tensor:
    """Indices (B, npoint) int64 of ``npoint`` farthest-point samples of (B, N, 3) ``xyz``.

    Deterministic: every cloud starts at index 0 (the reference draws a random start); each
    next sample is the point farthest (squared Euclidean) from those chosen so far, the
    lowest index on a tie. ``npoint`` must not exceed N.
    """
    b, n, _ = xyz.shape
    if not 1 <= npoint <= n:
        raise ValueError(f"npoint must be in [1, {n}] for clouds of {n} points, got {npoint}")
    # One (B, N) plane per coordinate: the per-iteration distance update then runs on
    # contiguous planes (broadcasting over a trailing axis of 3 is several times slower).
    planes = xyz.detach().permute(2, 0, 1).contiguous()  # (3, B, N)
    flat = planes.view(3, b * n)
    offset = torch.arange(b, device=xyz.device) * n
    out = torch.empty(b, npoint, dtype=torch.long, device=xyz.device)
    nearest = torch.full((b, n), float("inf"), dtype=xyz.dtype, device=xyz.device)
    farthest = torch.zeros(b, dtype=torch.long, device=xyz.device)
    for i in range(npoint):
        out[:, i] = farthest
        chosen = flat.index_select(1, farthest + offset).unsqueeze(-1)  # (3, B, 1)
        d = (planes - chosen).square_().sum(0)
        torch.minimum(nearest, d, out=nearest)
        farthest = nearest.argmax(dim=1)  # the first maximum on ties
    return out


def index_points(points: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Rows of (B, N, C) ``points`` picked by (B, ...) int64 ``idx``: (B, ..., C)."""
    b, n, c = points.shape
    offset = (torch.arange(b, device=idx.device) * n).view((b,) + (1,) * (idx.dim() - 1))
    flat = (idx + offset).reshape(-1)
    return points.reshape(b * n, c).index_select(0, flat).view(*idx.shape, c)


def square_distance(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances (B, S, N) between (B, S, 3) ``src`` and (B, N, 3) ``dst``
    (``|a|^2 + |b|^2 - 2 a.b`` as in the reference, clamped at 0)."""
    d = torch.baddbmm(
        src.square().sum(-1, keepdim=True) + dst.square().sum(-1).unsqueeze(1),
        src,
        dst.transpose(1, 2),
        alpha=-2.0,
    )
    return d.clamp_min_(0.0)


def _ball_query_sqdist(sqdist: torch.Tensor, radius: float, nsample: int) -> torch.Tensor:
    """``ball_query`` from precomputed (B, S, N) squared distances."""
    n = sqdist.shape[-1]
    inside = sqdist <= radius * radius
    # The first ``nsample`` members in index order without sorting all N: members get the
    # key N - index (so lower indices rank higher) and others 0, and topk picks the
    # ``nsample`` largest keys, already in decreasing-key (increasing-index) order.
    ranks = torch.arange(n, 0, -1, dtype=torch.int32, device=sqdist.device)
    keys = inside.to(torch.int32) * ranks
    k = min(nsample, n)
    top, idx = keys.topk(k, dim=-1, largest=True, sorted=True)
    if not bool(top[..., 0].all()):
        # A centroid with no point in its ball (impossible when the centroids are points of
        # xyz, as in the encoder): use its nearest point, so no index is out of range.
        nearest = sqdist.argmin(dim=-1, keepdim=True)
        idx[..., :1] = torch.where(top[..., :1] > 0, idx[..., :1], nearest)
        top[..., :1] = 1
    idx = torch.where(top > 0, idx, idx[..., :1])  # pad with the first member, as the reference
    if k < nsample:
        idx = torch.cat([idx, idx[..., :1].expand(*idx.shape[:-1], nsample - k)], dim=-1)
    return idx


def ball_query(
    radius: float, nsample: int, xyz: torch.Tensor, new_xyz: torch.Tensor
) -> torch.Tensor:
    """Indices (B, S, nsample) int64 into (B, N, 3) ``xyz`` of the points within ``radius``
    (squared distance <= radius^2) of each (B, S, 3) ``new_xyz`` centroid.

    Semantics of yanx27's ``query_ball_point``: the first ``nsample`` such points in index
    order, the rest of the row padded with the first one found. A centroid with no point in
    its ball (the reference would index out of range) gets its nearest point. Costs
    O(B S N) (a top-k over a membership key, no full sort).
    """
    return _ball_query_sqdist(square_distance(new_xyz, xyz), radius, nsample)


# --- layers --------------------------------------------------------------------------------


def _batch_norm_relu(bn: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Training-mode ``bn`` (a ``BatchNorm2d``) then ReLU on (..., C) channels-last ``x``:
    batch statistics over all leading rows per channel, running statistics updated as
    torch's batch norm updates them."""
    assert isinstance(bn, nn.BatchNorm2d)
    shape = x.shape
    factor = 0.0 if bn.momentum is None else bn.momentum
    track = bn.track_running_stats and bn.num_batches_tracked is not None
    if track:
        assert bn.num_batches_tracked is not None
        bn.num_batches_tracked.add_(1)
        if bn.momentum is None:  # cumulative moving average, as torch's batch norm
            factor = 1.0 / float(bn.num_batches_tracked)
    y = F.batch_norm(
        x.reshape(-1, shape[-1]),
        bn.running_mean if track else None,
        bn.running_var if track else None,
        bn.weight,
        bn.bias,
        True,
        factor,
        bn.eps,
    )
    # ReLU in place on batch norm's own output (not on a view of it, which autograd would
    # have to copy back): its backward needs only its output.
    return F.relu(y, inplace=True).view(shape)


def _affine(conv: nn.Module, bn: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None, bool]:
    """Weight (C_out, C_in) and bias of 1x1 ``conv`` as a linear map, with eval-mode ``bn``
    folded in (then the flag is False); in training the flag says batch norm must follow."""
    assert isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d)
    w = conv.weight.flatten(1)
    if bn.training or not bn.track_running_stats or bn.running_var is None:
        return w, conv.bias, True
    assert bn.running_mean is not None
    scale = torch.rsqrt(bn.running_var + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight
    shift = -bn.running_mean if conv.bias is None else conv.bias - bn.running_mean
    bias = shift * scale if bn.bias is None else torch.addcmul(bn.bias, shift, scale)
    return w * scale.unsqueeze(1), bias, False


def _finish(x: torch.Tensor, bn: nn.Module, needs_bn: bool) -> torch.Tensor:
    """Batch norm (unless folded into the preceding linear map) and ReLU."""
    return _batch_norm_relu(bn, x) if needs_bn else F.relu(x, inplace=True)


def _mlp(x: torch.Tensor, convs: nn.ModuleList, bns: nn.ModuleList, start: int = 0) -> torch.Tensor:
    """Layers ``start``.. of a shared MLP (1x1 conv, batch norm, ReLU) on channels-last
    ``x`` (..., C)."""
    for j in range(start, len(convs)):
        w, b, needs_bn = _affine(convs[j], bns[j])
        x = _finish(F.linear(x, w, b), bns[j], needs_bn)
    return x


class PointNetSetAbstractionMsg(nn.Module):
    """Multi-scale-grouping set abstraction (yanx27's module of the same name).

    ``in_channel`` counts the input features without coordinates (0 for the first level);
    each scale's MLP sees ``in_channel + 3`` channels: the features and the coordinates
    relative to the centroid. Radii are in the input's units (patch radii).
    """

    def __init__(
        self,
        npoint: int,
        radius_list: list[float],
        nsample_list: list[int],
        in_channel: int,
        mlp_list: list[list[int]],
    ) -> None:
        super().__init__()
        self.npoint = npoint
        self.radius_list = list(radius_list)
        self.nsample_list = list(nsample_list)
        self.in_channel = in_channel
        self.conv_blocks = nn.ModuleList()
        self.bn_blocks = nn.ModuleList()
        for widths in mlp_list:
            convs, bns = nn.ModuleList(), nn.ModuleList()
            last = in_channel + 3
            for width in widths:
                convs.append(nn.Conv2d(last, width, 1))
                bns.append(nn.BatchNorm2d(width))
                last = width
            self.conv_blocks.append(convs)
            self.bn_blocks.append(bns)

    def forward(
        self, xyz: torch.Tensor, points: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, N, 3) coordinates and (B, N, in_channel) features (``None`` when
        ``in_channel`` is 0) -> (B, npoint, 3) centroids and their (B, npoint, sum of the
        scales' last widths) features, scales concatenated in order."""
        if points is None and self.in_channel:
            raise ValueError(f"this level expects {self.in_channel} feature channels")
        centroids = index_points(xyz, farthest_point_sample(xyz, self.npoint))
        sqdist = square_distance(centroids, xyz.detach())
        outs = []
        for i, (radius, k) in enumerate(zip(self.radius_list, self.nsample_list, strict=True)):
            convs = cast(nn.ModuleList, self.conv_blocks[i])
            bns = cast(nn.ModuleList, self.bn_blocks[i])
            idx = _ball_query_sqdist(sqdist, radius, k)
            w, bias, needs_bn = _affine(convs[0], bns[0])
            if points is None:
                rel = index_points(xyz, idx) - centroids.unsqueeze(2)  # (B, S, K, 3)
                x = F.linear(rel, w, bias)
            else:
                # The reference's input per grouped point is [features, xyz - centroid].
                # Its first 1x1 convolution, W [f; x - c] + bias = (W_f f + W_x x + bias)
                # - W_x c, is computed once per point and once per centroid instead of once
                # per grouped sample (the same numbers for a fraction of the work).
                per_point = F.linear(torch.cat([points, xyz], dim=-1), w, bias)  # (B, N, C1)
                per_centroid = F.linear(centroids, w[:, -3:])  # (B, S, C1)
                x = index_points(per_point, idx) - per_centroid.unsqueeze(2)  # (B, S, K, C1)
            x = _mlp(_finish(x, bns[0], needs_bn), convs, bns, start=1)
            outs.append(x.max(dim=2).values)
        return centroids, torch.cat(outs, dim=-1)


class PointNetSetAbstraction(nn.Module):
    """Group-all set abstraction (yanx27's ``PointNetSetAbstraction`` with
    ``group_all=True``, the only mode the MSG classifier uses): one shared MLP over every
    point's ``[xyz, features]`` (``in_channel`` counts both), max-pooled to one vector."""

    def __init__(self, in_channel: int, mlp: list[int]) -> None:
        super().__init__()
        self.in_channel = in_channel
        self.group_all = True
        self.mlp_convs = nn.ModuleList()
        self.mlp_bns = nn.ModuleList()
        last = in_channel
        for width in mlp:
            self.mlp_convs.append(nn.Conv2d(last, width, 1))
            self.mlp_bns.append(nn.BatchNorm2d(width))
            last = width

    def forward(self, xyz: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        """(B, S, 3) coordinates (relative to the patch centre, the implied centroid) and
        (B, S, in_channel - 3) features -> (B, last width) global features."""
        x = torch.cat([xyz, points], dim=-1)
        return _mlp(x, self.mlp_convs, self.mlp_bns).max(dim=1).values


class ContrastiveHead(nn.Module):
    """COSARAD's head: ``z1 = ReLU(BN_1024(Dropout_0.4(h)))``,
    ``z2 = ReLU(BN_256(Linear_1024->256(z1)))``, ``m = Linear_256->d(z2) / ||.||_2``."""

    def __init__(self, d: int, dropout: float = 0.4) -> None:
        super().__init__()
        if d < 1:
            raise ValueError(f"d must be >= 1, got {d}")
        self.d = d
        self.dropout = nn.Dropout(p=dropout)
        self.bn1 = nn.BatchNorm1d(HIDDEN_CHANNELS)
        self.fc1 = nn.Linear(HIDDEN_CHANNELS, 256)
        self.bn2 = nn.BatchNorm1d(256)
        self.fc2 = nn.Linear(256, d)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """(B, 1024) encoder features -> (B, d) float32 unit-norm patch features."""
        z1 = F.relu(self.bn1(self.dropout(h)))
        z2 = F.relu(self.bn2(self.fc1(z1)))
        return F.normalize(self.fc2(z2), p=2.0, dim=1)


class PatchEncoder(nn.Module):
    """PointNet++ MSG encoder (``sa1`` .. ``saL`` MSG levels, ``sa{L+1}`` group-all) and the
    contrastive head (``head``): (B, P, 3) normalised patches -> (B, d) unit-norm features.

    Patches must be centred on their patch centre and divided by the patch radius R (points
    in the unit ball) and hold at least the first level's ``npoint`` points; P is fixed per
    batch (COSARAD resamples every patch to 512 points). Initial weights come from the
    global torch generator: call ``torch.manual_seed`` first for repeatable weights.
    """

    def __init__(self, config: PointNet2Config, d: int) -> None:
        super().__init__()
        self.config = config
        self.d = d
        channels = 0
        for i, level in enumerate(config.levels):
            sa = PointNetSetAbstractionMsg(
                level.npoint,
                list(level.radii),
                list(level.nsample),
                channels,
                [list(m) for m in level.mlps],
            )
            self.add_module(f"sa{i + 1}", sa)
            channels = level.out_channels
        # Named as in the reference: sa3 after two MSG levels.
        self.add_module(
            f"sa{len(config.levels) + 1}",
            PointNetSetAbstraction(channels + 3, list(config.global_mlp)),
        )
        self.head = ContrastiveHead(d)

    def msg_levels(self) -> list[PointNetSetAbstractionMsg]:
        """The MSG levels ``sa1`` .. ``saL`` in order."""
        n = len(self.config.levels)
        return [cast(PointNetSetAbstractionMsg, getattr(self, f"sa{i + 1}")) for i in range(n)]

    def global_level(self) -> PointNetSetAbstraction:
        """The group-all level ``sa{L+1}``."""
        return cast(PointNetSetAbstraction, getattr(self, f"sa{len(self.config.levels) + 1}"))

    def features(self, patches: torch.Tensor) -> torch.Tensor:
        """(B, P, 3) float32 patches (units of R, centred) -> (B, 1024) encoder output h."""
        if patches.dim() != 3 or patches.shape[-1] != 3:
            raise ValueError(f"patches must be (B, P, 3), got {tuple(patches.shape)}")
        need = self.config.levels[0].npoint
        if patches.shape[1] < need:
            raise ValueError(f"patches need at least {need} points, got {patches.shape[1]}")
        xyz, feats = patches, None
        for sa in self.msg_levels():
            xyz, feats = sa(xyz, feats)
        assert feats is not None
        return self.global_level()(xyz, feats)

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        """(B, P, 3) float32 patches (units of R, centred) -> (B, d) unit-norm features."""
        return self.head(self.features(patches))


def embed(model: PatchEncoder, patches: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """(B, d) float32 unit-norm features of (B, P, 3) float32 ``patches`` (centred, units of
    the patch radius), computed in eval mode under ``torch.inference_mode`` in batches of
    ``batch_size``; the model's train/eval mode is restored afterwards."""
    arr = np.asarray(patches)
    if arr.ndim != 3 or arr.shape[-1] != 3:
        raise ValueError(f"patches must be (B, P, 3), got {arr.shape}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    out = np.empty((arr.shape[0], model.d), dtype=np.float32)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for start in range(0, arr.shape[0], batch_size):
                chunk = torch.from_numpy(
                    np.ascontiguousarray(arr[start : start + batch_size], dtype=np.float32)
                )
                out[start : start + len(chunk)] = model(chunk).numpy()
    finally:
        model.train(was_training)
    log.debug("embedded %d patches of %d points", arr.shape[0], arr.shape[1])
    return out
