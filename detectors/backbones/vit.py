"""DINOv2 ViT-S/14 (facebookresearch/dinov2) in plain torch, for frozen patch-token features.

Architecture, as in the official ``dinov2_vits14`` hub model: a 14x14 stride-14 convolution
embeds RGB patches into 384 channels; a learnt class token and learnt positional embeddings
(trained at 518x518 px, i.e. a 37x37 patch grid, bicubically resized to other grids) are
added; 12 pre-norm transformer blocks follow (6-head self-attention with a fused qkv
projection, GELU MLP of width 1536, LayerScale on both residual branches, LayerNorm with
eps 1e-6), then a final LayerNorm. There are no register tokens and no classifier head.

The state_dict keys and shapes match the official release ``dinov2_vits14_pretrain.pth``
exactly (``cls_token``, ``pos_embed`` (1, 1370, 384), ``mask_token``, ``patch_embed.proj.*``,
``blocks.{0..11}.{norm1,attn.qkv,attn.proj,ls1,norm2,mlp.fc1,mlp.fc2,ls2}.*``, ``norm.*``),
so that checkpoint loads with ``load_state_dict(..., strict=True)``. Nothing is downloaded
here: weights come from ``detectors.backbones.weights``; a fresh model is randomly
initialised as the official code does, drawing from torch's global RNG unless a
``torch.Generator`` is passed to ``init_weights``.

Inputs are (B, 3, H, W) float32 images, normalised as the official model expects (ImageNet
mean and std), with H and W multiples of 14; the patch grid is (H // 14, W // 14), so
504x504 px gives 36x36 patch tokens and 224x224 px gives 16x16.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

PATCH_SIZE = 14
EMBED_DIM = 384
DEPTH = 12
NUM_HEADS = 6
MLP_RATIO = 4
#: The official model's training resolution (px) and hence its positional-embedding grid.
PRETRAIN_IMG_SIZE = 518
LAYERNORM_EPS = 1e-6


def _layer_norm(dim: int) -> nn.LayerNorm:
    return nn.LayerNorm(dim, eps=LAYERNORM_EPS)


class PatchEmbed(nn.Module):
    """(B, 3, H, W) images to (B, (H/p)*(W/p), dim) patch embeddings, row-major over the grid."""

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    """Multi-head self-attention with a fused qkv projection (keys ``qkv``, ``proj``)."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        # The official layout of the qkv output: (3, heads, head_dim) along the channels.
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, heads, N, head_dim)
        out = F.scaled_dot_product_attention(q, k, v)  # scale 1/sqrt(head_dim), as official
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    """Two-layer GELU MLP (keys ``fc1``, ``fc2``)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class LayerScale(nn.Module):
    """Per-channel scale of a residual branch (key ``gamma``), initialised to ``init_value``."""

    def __init__(self, dim: int, init_value: float = 1.0) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), init_value))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Block(nn.Module):
    """Pre-norm transformer block: x + ls1(attn(norm1(x))), then x + ls2(mlp(norm2(x)))."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: int) -> None:
        super().__init__()
        self.norm1 = _layer_norm(dim)
        self.attn = Attention(dim, num_heads)
        self.ls1 = LayerScale(dim)
        self.norm2 = _layer_norm(dim)
        self.mlp = Mlp(dim, dim * mlp_ratio)
        self.ls2 = LayerScale(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class DinoVisionTransformer(nn.Module):
    """DINOv2 vision transformer with the official parameter names (no registers, no head).

    ``interpolate_offset`` and ``interpolate_antialias`` are the official positional-embedding
    resizing options; the hub models use 0.1 and False (the defaults here).
    """

    def __init__(
        self,
        patch_size: int = PATCH_SIZE,
        embed_dim: int = EMBED_DIM,
        depth: int = DEPTH,
        num_heads: int = NUM_HEADS,
        mlp_ratio: int = MLP_RATIO,
        img_size: int = PRETRAIN_IMG_SIZE,
        interpolate_offset: float = 0.1,
        interpolate_antialias: bool = False,
    ) -> None:
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        self.patch_size = patch_size
        self.embed_dim = embed_dim
        self.interpolate_offset = interpolate_offset
        self.interpolate_antialias = interpolate_antialias
        #: Side of the square patch grid the positional embeddings were learnt on.
        self.pos_grid = img_size // patch_size

        self.patch_embed = PatchEmbed(patch_size, 3, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.pos_grid**2, embed_dim))
        self.blocks = nn.ModuleList(Block(embed_dim, num_heads, mlp_ratio) for _ in range(depth))
        self.norm = _layer_norm(embed_dim)
        # Unused at inference; kept so the official checkpoint loads with strict=True.
        self.mask_token = nn.Parameter(torch.zeros(1, embed_dim))
        self.init_weights()

    @torch.no_grad()
    def init_weights(self, generator: torch.Generator | None = None) -> None:
        """Random initialisation as in the official code (timm ViT scheme); LayerScale = 1.

        Draws from ``generator``, or from torch's global RNG when it is None.
        """
        g = generator
        nn.init.trunc_normal_(self.pos_embed, std=0.02, generator=g)
        nn.init.normal_(self.cls_token, std=1e-6, generator=g)
        nn.init.zeros_(self.mask_token)
        # PyTorch's default Conv2d initialisation (the official code leaves it), made seedable.
        w = self.patch_embed.proj.weight
        nn.init.kaiming_uniform_(w, a=math.sqrt(5), generator=g)
        bound = 1.0 / math.sqrt(w[0].numel())
        bias = self.patch_embed.proj.bias
        assert bias is not None
        nn.init.uniform_(bias, -bound, bound, generator=g)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02, generator=g)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, LayerScale):
                nn.init.ones_(m.gamma)

    def patch_grid(self, height: int, width: int) -> tuple[int, int]:
        """The (rows, cols) patch grid of a ``height`` x ``width`` px input.

        Raises ValueError unless both are positive multiples of the patch size (14 px).
        """
        p = self.patch_size
        bad = [(name, v) for name, v in (("height", height), ("width", width)) if v <= 0 or v % p]
        if bad:
            name, v = bad[0]
            lower = max(p, v // p * p)
            raise ValueError(
                f"input {name} {v} px is not a positive multiple of the patch size {p} px; "
                f"allowed sizes are {p}*k px (nearest: {lower} or {lower + p}; 224 gives "
                f"16 patches, 504 gives 36, {self.pos_grid * p} gives {self.pos_grid})"
            )
        return height // p, width // p

    def interpolate_pos_encoding(self, rows: int, cols: int) -> torch.Tensor:
        """Positional embeddings (1, 1 + rows*cols, dim) for a rows x cols patch grid.

        As the official ``interpolate_pos_encoding``: the learnt grid is returned unchanged
        when the input grid is the learnt square grid; otherwise the patch part is resized
        bicubically (align_corners=False) in float32 with ``scale_factor = (rows + offset) /
        M, (cols + offset) / M`` (M = 37, offset = 0.1) rather than an output size, which is
        what the official code does and what its weights were used with. The output size is
        then floor(rows + offset) = rows, but the sampling positions use that scale factor.
        """
        m = self.pos_grid
        if rows == m and cols == m:
            return self.pos_embed
        pos = self.pos_embed.float()
        cls_pos, patch_pos = pos[:, :1], pos[:, 1:]
        grid = patch_pos.reshape(1, m, m, self.embed_dim).permute(0, 3, 1, 2)
        if self.interpolate_offset:
            scale = ((rows + self.interpolate_offset) / m, (cols + self.interpolate_offset) / m)
            grid = F.interpolate(
                grid, scale_factor=scale, mode="bicubic", antialias=self.interpolate_antialias
            )
        else:
            grid = F.interpolate(
                grid, size=(rows, cols), mode="bicubic", antialias=self.interpolate_antialias
            )
        if tuple(grid.shape[-2:]) != (rows, cols):  # floating-point rounding of the size
            raise RuntimeError(f"resized positional grid {tuple(grid.shape[-2:])} != {rows, cols}")
        patch_pos = grid.permute(0, 2, 3, 1).reshape(1, rows * cols, self.embed_dim)
        return torch.cat((cls_pos, patch_pos), dim=1).to(self.pos_embed.dtype)

    def prepare_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) images to (B, 1 + h*w, dim) tokens: class token, then patches."""
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected a (B, 3, H, W) image batch, got shape {tuple(x.shape)}")
        rows, cols = self.patch_grid(x.shape[2], x.shape[3])
        tokens = self.patch_embed(x)
        tokens = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), tokens), dim=1)
        return tokens + self.interpolate_pos_encoding(rows, cols)

    def _run_blocks(self, x: torch.Tensor, layer: int) -> torch.Tensor:
        depth = len(self.blocks)
        if not -depth <= layer < depth:
            raise ValueError(f"layer {layer} is out of range for {depth} blocks")
        last = layer % depth
        tokens = self.prepare_tokens(x)
        for block in self.blocks[: last + 1]:
            tokens = block(tokens)
        return tokens

    def forward_tokens(self, x: torch.Tensor, layer: int = -1, norm: bool = True) -> torch.Tensor:
        """Patch tokens (B, h*w, dim) float32 from block ``layer`` (-1: the last), no class token.

        ``x`` is (B, 3, H, W) with H, W multiples of 14; tokens are row-major over the
        (H/14, W/14) grid. With ``norm`` the final LayerNorm is applied, as the official
        ``get_intermediate_layers(norm=True)`` does for every layer.
        """
        tokens = self._run_blocks(x, layer)
        if norm:
            tokens = self.norm(tokens)
        return tokens[:, 1:]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised class-token features (B, dim), as the official ``forward``."""
        return self.norm(self._run_blocks(x, -1))[:, 0]


def vit_small_patch14_dinov2(**kw: Any) -> DinoVisionTransformer:
    """DINOv2 ViT-S/14, randomly initialised, shaped for ``dinov2_vits14_pretrain.pth``.

    ``kw`` overrides ``DinoVisionTransformer``'s arguments (e.g. ``interpolate_offset``).
    """
    return DinoVisionTransformer(**kw)
