"""Tests of the plain-torch DINOv2 ViT-S/14 against the official ``dinov2_vits14`` layout."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from detectors.backbones.vit import DinoVisionTransformer, vit_small_patch14_dinov2

# dinov2_vits14_pretrain.pth (facebookresearch/dinov2 hub), written out from its published
# architecture, not from the model code: dim 384, 12 blocks, MLP 1536, 14 px patches, 518 px
# (37x37 patches) positional grid, one class token, no registers.
DIM, HIDDEN, DEPTH = 384, 1536, 12
GLOBAL_KEYS: dict[str, tuple[int, ...]] = {
    "cls_token": (1, 1, DIM),
    "pos_embed": (1, 1 + 37 * 37, DIM),
    "mask_token": (1, DIM),
    "patch_embed.proj.weight": (DIM, 3, 14, 14),
    "patch_embed.proj.bias": (DIM,),
    "norm.weight": (DIM,),
    "norm.bias": (DIM,),
}
BLOCK_KEYS: dict[str, tuple[int, ...]] = {
    "norm1.weight": (DIM,),
    "norm1.bias": (DIM,),
    "attn.qkv.weight": (3 * DIM, DIM),
    "attn.qkv.bias": (3 * DIM,),
    "attn.proj.weight": (DIM, DIM),
    "attn.proj.bias": (DIM,),
    "ls1.gamma": (DIM,),
    "norm2.weight": (DIM,),
    "norm2.bias": (DIM,),
    "mlp.fc1.weight": (HIDDEN, DIM),
    "mlp.fc1.bias": (HIDDEN,),
    "mlp.fc2.weight": (DIM, HIDDEN),
    "mlp.fc2.bias": (DIM,),
    "ls2.gamma": (DIM,),
}
EXPECTED: dict[str, tuple[int, ...]] = {
    **GLOBAL_KEYS,
    **{f"blocks.{i}.{k}": s for i in range(DEPTH) for k, s in BLOCK_KEYS.items()},
}


def synthetic_state_dict(seed: int) -> dict[str, torch.Tensor]:
    """A random state_dict with the official keys and shapes (norms and gammas near 1)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, shape in EXPECTED.items():
        noise = 0.05 * torch.randn(shape, generator=g)
        near_one = k.endswith(("gamma", "norm.weight", "norm1.weight", "norm2.weight"))
        out[k] = 1.0 + noise if near_one else noise
    return out


@pytest.fixture(scope="module")
def model() -> DinoVisionTransformer:
    """ViT-S/14 in eval mode holding a seeded synthetic official-layout state_dict."""
    m = vit_small_patch14_dinov2().eval()
    m.load_state_dict(synthetic_state_dict(0), strict=True)
    return m


def images(batch: int, height: int, width: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, 3, height, width, generator=torch.Generator().manual_seed(seed))


def test_state_dict_keys_and_shapes_match_the_official_release(
    model: DinoVisionTransformer,
) -> None:
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert len(EXPECTED) == 7 + 14 * 12
    assert got == EXPECTED


def test_synthetic_official_state_dict_loads_strictly(model: DinoVisionTransformer) -> None:
    want = synthetic_state_dict(0)
    got = model.state_dict()
    assert all(torch.equal(got[k], want[k]) for k in EXPECTED)


def test_init_is_seedable() -> None:
    a, b = DinoVisionTransformer(depth=1), DinoVisionTransformer(depth=1)
    a.init_weights(torch.Generator().manual_seed(3))
    b.init_weights(torch.Generator().manual_seed(3))
    sa, sb = a.state_dict(), b.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert torch.equal(sa["blocks.0.ls1.gamma"], torch.ones(DIM))


@pytest.mark.parametrize(
    ("height", "width", "grid"), [(504, 504, (36, 36)), (224, 224, (16, 16)), (280, 224, (20, 16))]
)
def test_patch_grid(model: DinoVisionTransformer, height: int, width: int, grid: tuple) -> None:
    assert model.patch_grid(height, width) == grid
    rows, cols = grid
    assert model.interpolate_pos_encoding(rows, cols).shape == (1, 1 + rows * cols, DIM)


@pytest.mark.parametrize(("height", "width"), [(500, 500), (504, 500), (0, 224)])
def test_sizes_off_the_patch_grid_raise(model: DinoVisionTransformer, height, width) -> None:
    with pytest.raises(ValueError, match="multiple of the patch size 14"):
        model.patch_grid(height, width)
    with pytest.raises(ValueError, match="allowed sizes"):
        model.forward_tokens(torch.zeros(1, 3, height, width))


def test_pos_embed_is_not_resized_on_the_pretraining_grid(model: DinoVisionTransformer) -> None:
    # 518 px = 37x37 patches: the tokens use the stored embeddings, with no interpolation.
    assert model.interpolate_pos_encoding(37, 37) is model.pos_embed
    x = images(1, 518, 518)
    with torch.no_grad():
        patches = model.patch_embed.proj(x).flatten(2).transpose(1, 2)
        want = torch.cat((model.cls_token, patches), dim=1) + model.pos_embed
        got = model.prepare_tokens(x)
    assert torch.equal(got, want)


def test_pos_embed_resize_follows_the_official_offset_rule(model: DinoVisionTransformer) -> None:
    # Official DINOv2: bicubic with scale_factor (36 + 0.1) / 37, not output size 36.
    grid = model.pos_embed[:, 1:].reshape(1, 37, 37, DIM).permute(0, 3, 1, 2)
    with torch.no_grad():
        got = model.interpolate_pos_encoding(36, 36)
        scaled = F.interpolate(grid, scale_factor=(36.1 / 37, 36.1 / 37), mode="bicubic")
        sized = F.interpolate(grid, size=(36, 36), mode="bicubic")
    assert torch.equal(got[:, :1], model.pos_embed[:, :1])
    assert torch.equal(got[:, 1:], scaled.permute(0, 2, 3, 1).reshape(1, 36 * 36, DIM))
    assert not torch.allclose(got[:, 1:], sized.permute(0, 2, 3, 1).reshape(1, 36 * 36, DIM))


def test_constant_pos_embed_stays_constant_when_resized() -> None:
    m = DinoVisionTransformer(depth=1)
    with torch.no_grad():
        m.pos_embed.fill_(0.25)
        out = m.interpolate_pos_encoding(20, 16)
    torch.testing.assert_close(out, torch.full((1, 1 + 320, DIM), 0.25))


def test_forward_tokens_shape_and_determinism(model: DinoVisionTransformer) -> None:
    x = images(2, 112, 112)
    with torch.no_grad():
        a = model.forward_tokens(x)
        b = model.forward_tokens(x)
        c = model.forward_tokens(x[1:])
        at_224 = model.forward_tokens(images(1, 224, 224), layer=0)
    assert at_224.shape == (1, 16 * 16, DIM)
    assert a.shape == (2, 8 * 8, DIM) and a.dtype == torch.float32
    assert torch.isfinite(a).all()
    assert torch.equal(a, b)
    torch.testing.assert_close(c, a[1:], rtol=1e-5, atol=1e-5)  # batch items are independent


def test_forward_tokens_at_504_gives_36x36(model: DinoVisionTransformer) -> None:
    with torch.no_grad():
        out = model.forward_tokens(images(1, 504, 504))
    assert out.shape == (1, 36 * 36, DIM)


def test_non_square_input(model: DinoVisionTransformer) -> None:
    with torch.no_grad():
        out = model.forward_tokens(images(1, 280, 224), layer=2)
    assert out.shape == (1, 20 * 16, DIM)


def test_layer_selection_and_norm(model: DinoVisionTransformer) -> None:
    x = images(1, 56, 56)
    with torch.no_grad():
        last = model.forward_tokens(x)
        eleventh = model.forward_tokens(x, layer=11)
        fifth = model.forward_tokens(x, layer=5)
        fifth_raw = model.forward_tokens(x, layer=5, norm=False)
        cls = model(x)
    assert torch.equal(last, eleventh)
    assert not torch.allclose(fifth, last, atol=1e-3)
    assert not torch.allclose(fifth_raw, fifth, atol=1e-3)
    torch.testing.assert_close(model.norm(fifth_raw), fifth)
    assert cls.shape == (1, DIM)
    with torch.no_grad():
        tokens = model.prepare_tokens(x)
        for block in model.blocks:
            tokens = block(tokens)
    torch.testing.assert_close(cls, model.norm(tokens)[:, 0])  # the official forward's output
    with pytest.raises(ValueError, match="layer 12"):
        model.forward_tokens(x, layer=12)
