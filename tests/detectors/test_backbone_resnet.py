"""Tests of the plain-torch ResNet-18 / Wide-ResNet-50-2 backbones against torchvision's layout."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from detectors.backbones.resnet import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    RESNET_CHANNELS,
    ResNet,
    normalize,
    resnet18,
    wide_resnet50_2,
)

BN_SUFFIXES = ("weight", "bias", "running_mean", "running_var")

# torchvision resnet18 (resnet18-f37072fd.pth), written out by hand: every weight tensor ...
R18_WEIGHTS: dict[str, tuple[int, ...]] = {
    "conv1.weight": (64, 3, 7, 7),
    "layer1.0.conv1.weight": (64, 64, 3, 3),
    "layer1.0.conv2.weight": (64, 64, 3, 3),
    "layer1.1.conv1.weight": (64, 64, 3, 3),
    "layer1.1.conv2.weight": (64, 64, 3, 3),
    "layer2.0.conv1.weight": (128, 64, 3, 3),
    "layer2.0.conv2.weight": (128, 128, 3, 3),
    "layer2.0.downsample.0.weight": (128, 64, 1, 1),
    "layer2.1.conv1.weight": (128, 128, 3, 3),
    "layer2.1.conv2.weight": (128, 128, 3, 3),
    "layer3.0.conv1.weight": (256, 128, 3, 3),
    "layer3.0.conv2.weight": (256, 256, 3, 3),
    "layer3.0.downsample.0.weight": (256, 128, 1, 1),
    "layer3.1.conv1.weight": (256, 256, 3, 3),
    "layer3.1.conv2.weight": (256, 256, 3, 3),
    "layer4.0.conv1.weight": (512, 256, 3, 3),
    "layer4.0.conv2.weight": (512, 512, 3, 3),
    "layer4.0.downsample.0.weight": (512, 256, 1, 1),
    "layer4.1.conv1.weight": (512, 512, 3, 3),
    "layer4.1.conv2.weight": (512, 512, 3, 3),
    "fc.weight": (1000, 512),
    "fc.bias": (1000,),
}
# ... and every batch norm (prefix -> channels), each with the four BN_SUFFIXES tensors.
R18_BATCHNORMS: dict[str, int] = {
    "bn1": 64,
    "layer1.0.bn1": 64,
    "layer1.0.bn2": 64,
    "layer1.1.bn1": 64,
    "layer1.1.bn2": 64,
    "layer2.0.bn1": 128,
    "layer2.0.bn2": 128,
    "layer2.0.downsample.1": 128,
    "layer2.1.bn1": 128,
    "layer2.1.bn2": 128,
    "layer3.0.bn1": 256,
    "layer3.0.bn2": 256,
    "layer3.0.downsample.1": 256,
    "layer3.1.bn1": 256,
    "layer3.1.bn2": 256,
    "layer4.0.bn1": 512,
    "layer4.0.bn2": 512,
    "layer4.0.downsample.1": 512,
    "layer4.1.bn1": 512,
    "layer4.1.bn2": 512,
}


def _expand(
    weights: dict[str, tuple[int, ...]], batchnorms: dict[str, int]
) -> dict[str, tuple[int, ...]]:
    """Key -> shape of a checkpoint without num_batches_tracked (as the official files)."""
    keys = dict(weights)
    for prefix, channels in batchnorms.items():
        keys.update({f"{prefix}.{s}": (channels,) for s in BN_SUFFIXES})
    return keys


R18_KEYS = _expand(R18_WEIGHTS, R18_BATCHNORMS)

# Spot checks of torchvision wide_resnet50_2 (inner width 2x, stride on the 3x3 conv).
WRN_KEYS: dict[str, tuple[int, ...]] = {
    "conv1.weight": (64, 3, 7, 7),
    "bn1.running_var": (64,),
    "layer1.0.conv1.weight": (128, 64, 1, 1),
    "layer1.0.bn1.weight": (128,),
    "layer1.0.conv2.weight": (128, 128, 3, 3),
    "layer1.0.conv3.weight": (256, 128, 1, 1),
    "layer1.0.bn3.running_mean": (256,),
    "layer1.0.downsample.0.weight": (256, 64, 1, 1),
    "layer1.0.downsample.1.bias": (256,),
    "layer1.2.conv1.weight": (128, 256, 1, 1),
    "layer2.0.conv1.weight": (256, 256, 1, 1),
    "layer2.0.conv2.weight": (256, 256, 3, 3),
    "layer2.0.downsample.0.weight": (512, 256, 1, 1),
    "layer2.3.conv3.weight": (512, 256, 1, 1),
    "layer3.0.conv1.weight": (512, 512, 1, 1),
    "layer3.0.downsample.0.weight": (1024, 512, 1, 1),
    "layer3.5.conv2.weight": (512, 512, 3, 3),
    "layer3.5.conv3.weight": (1024, 512, 1, 1),
    "layer3.5.bn3.running_var": (1024,),
    "layer4.0.conv2.weight": (1024, 1024, 3, 3),
    "layer4.0.downsample.0.weight": (2048, 1024, 1, 1),
    "layer4.2.conv3.weight": (2048, 1024, 1, 1),
    "fc.weight": (1000, 2048),
    "fc.bias": (1000,),
}

SIZES = [(224, 224), (256, 256)]


@pytest.fixture(scope="module")
def r18() -> ResNet:
    """One seeded ResNet-18 in eval mode, shared by the module's tests."""
    torch.manual_seed(0)
    return resnet18().eval()


@pytest.fixture(scope="module")
def wrn() -> ResNet:
    """One Wide-ResNet-50-2 (69M parameters, built once) in eval mode; only shapes matter."""
    torch.manual_seed(0)
    return wide_resnet50_2().eval()


def _official_like(
    model: ResNet, spot: dict[str, tuple[int, ...]], seed: int, with_counters: bool
) -> dict[str, torch.Tensor]:
    """A synthetic checkpoint: random tensors for the model's keys, checked against ``spot``.

    Every ``spot`` key must be in the model with that shape; the tensors are fresh random
    values (running_var positive), so a strict load proves names and shapes agree.
    """
    g = torch.Generator().manual_seed(seed)
    own = model.state_dict()
    for key, shape in spot.items():
        assert key in own, key
        assert tuple(own[key].shape) == shape, key
    sd: dict[str, torch.Tensor] = {}
    for key, t in own.items():
        if key.endswith("num_batches_tracked"):
            if with_counters:
                sd[key] = torch.tensor(7, dtype=torch.long)
            continue
        sd[key] = torch.rand(t.shape, generator=g) + (0.5 if key.endswith("running_var") else 0)
    return sd


def _nbt_free_keys(model: nn.Module) -> set[str]:
    """State-dict keys other than the batch norms' num_batches_tracked counters."""
    return {k for k in model.state_dict() if not k.endswith("num_batches_tracked")}


def test_resnet18_keys_and_shapes_match_torchvision_exactly(r18: ResNet) -> None:
    """102 tensors (122 with the num_batches_tracked counters), names and shapes as torchvision."""
    assert len(R18_KEYS) == 102
    own = r18.state_dict()
    assert len(own) == 122
    assert _nbt_free_keys(r18) == set(R18_KEYS)
    for key, shape in R18_KEYS.items():
        assert tuple(own[key].shape) == shape, key
    assert sum(p.numel() for p in r18.parameters()) == 11_689_512  # torchvision's count


def test_resnet18_loads_synthetic_official_checkpoint_strictly() -> None:
    """A checkpoint built only from the hard-coded key table loads with strict=True, values kept."""
    model = resnet18()
    g = torch.Generator().manual_seed(1)
    sd = {k: torch.rand(shape, generator=g) + 0.5 for k, shape in R18_KEYS.items()}
    result = model.load_state_dict(sd, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    own = model.state_dict()
    for key, t in sd.items():
        assert torch.equal(own[key], t), key


@pytest.mark.parametrize("with_counters", [False, True], ids=["v1-file", "v2-file"])
def test_wide_resnet50_2_keys_and_strict_load(wrn: ResNet, with_counters: bool) -> None:
    """Spot-checked names and shapes; strict load with and without num_batches_tracked."""
    assert len(wrn.state_dict()) == 320 and len(_nbt_free_keys(wrn)) == 267
    assert sum(p.numel() for p in wrn.parameters()) == 68_883_240  # torchvision's count
    sd = _official_like(wrn, WRN_KEYS, seed=2, with_counters=with_counters)
    wrn.load_state_dict(sd, strict=True)
    own = wrn.state_dict()
    assert torch.equal(own["layer3.5.conv3.weight"], sd["layer3.5.conv3.weight"])
    if with_counters:
        assert int(own["layer1.0.bn1.num_batches_tracked"]) == 7


def test_strict_load_rejects_a_wrong_key(r18: ResNet) -> None:
    """A renamed key fails the strict load, so the key checks above have teeth."""
    sd = {k: v.clone() for k, v in r18.state_dict().items()}
    sd["layer1.0.conv_1.weight"] = sd.pop("layer1.0.conv1.weight")
    with pytest.raises(RuntimeError, match="layer1.0.conv1.weight"):
        resnet18().load_state_dict(sd, strict=True)


@pytest.mark.parametrize("hw", SIZES)
def test_resnet18_feature_sizes_and_channels(r18: ResNet, hw: tuple[int, int]) -> None:
    """stem and layer1 at 1/4, layer2 1/8, layer3 1/16, layer4 1/32; channels per table."""
    h, w = hw
    with torch.no_grad():
        feats = r18.forward_features(
            torch.randn(2, 3, h, w), layers=("stem", "layer1", "layer2", "layer3", "layer4")
        )
    assert list(feats) == ["stem", "layer1", "layer2", "layer3", "layer4"]
    assert feats["stem"].shape == (2, 64, h // 4, w // 4)
    for name, stride in (("layer1", 4), ("layer2", 8), ("layer3", 16), ("layer4", 32)):
        assert feats[name].shape == (2, RESNET_CHANNELS["resnet18"][name], h // stride, w // stride)
        assert feats[name].dtype == torch.float32


def test_wide_resnet50_2_feature_sizes_and_channels(wrn: ResNet) -> None:
    """Default layers 1-3 of Wide-ResNet-50-2 at 224 and 256 pixels."""
    with torch.no_grad():
        for h, w in SIZES:
            feats = wrn.forward_features(torch.randn(1, 3, h, w))
            assert list(feats) == ["layer1", "layer2", "layer3"]
            for name, stride in (("layer1", 4), ("layer2", 8), ("layer3", 16)):
                c = RESNET_CHANNELS["wide_resnet50_2"][name]
                assert feats[name].shape == (1, c, h // stride, w // stride)


def test_non_multiple_sizes_round_up(r18: ResNet) -> None:
    """An input of 100 x 60 pixels gives ceil(size / stride) cells per stage."""
    with torch.no_grad():
        feats = r18.forward_features(torch.randn(1, 3, 100, 60), layers=("layer2", "layer4"))
    assert feats["layer2"].shape[-2:] == (13, 8)
    assert feats["layer4"].shape[-2:] == (4, 2)


def test_forward_features_stops_after_last_requested_layer(r18: ResNet) -> None:
    """Asking for layer1 runs no later stage, and no classifier."""
    ran: list[str] = []
    hooks = [
        getattr(r18, name).register_forward_hook(lambda *_, n=name: ran.append(n))
        for name in ("layer1", "layer2", "layer3", "layer4", "fc")
    ]
    try:
        with torch.no_grad():
            r18.forward_features(torch.randn(1, 3, 64, 64), layers=("layer1",))
            assert ran == ["layer1"]
            ran.clear()
            r18.forward_features(torch.randn(1, 3, 64, 64), layers=("layer2", "stem"))
            assert ran == ["layer1", "layer2"]
            ran.clear()
            r18(torch.randn(1, 3, 64, 64))
            assert ran == ["layer1", "layer2", "layer3", "layer4", "fc"]
    finally:
        for h in hooks:
            h.remove()


def test_forward_features_rejects_unknown_or_no_layers(r18: ResNet) -> None:
    """Unknown stage names and an empty request raise ValueError naming the problem."""
    x = torch.randn(1, 3, 32, 32)
    with pytest.raises(ValueError, match="layer5"):
        r18.forward_features(x, layers=("layer5",))
    with pytest.raises(ValueError, match="at least one"):
        r18.forward_features(x, layers=())


def test_forward_gives_logits_consistent_with_features(r18: ResNet) -> None:
    """forward = fc(global average of layer4), shape (B, 1000); num_classes configurable."""
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        logits = r18(x)
        l4 = r18.forward_features(x, layers=("layer4",))["layer4"]
        expected = r18.fc(l4.mean(dim=(2, 3)))
    assert logits.shape == (2, 1000)
    torch.testing.assert_close(logits, expected)
    assert resnet18(num_classes=5).fc.weight.shape == (5, 512)


def test_eval_mode_is_deterministic_and_leaves_stats_alone(r18: ResNet) -> None:
    """In eval mode the same input gives the same bytes and running statistics do not move."""
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    before = r18.state_dict()["bn1.running_mean"].clone()
    with torch.no_grad():
        a = r18.forward_features(x)
        b = r18.forward_features(x.clone())
    for name in a:
        assert torch.equal(a[name], b[name])
    assert torch.equal(r18.state_dict()["bn1.running_mean"], before)
    # One image alone gives the same features as inside a batch (no batch statistics in eval).
    with torch.no_grad():
        single = r18.forward_features(x[:1], layers=("layer3",))["layer3"]
    torch.testing.assert_close(single, a["layer3"][:1])


def test_random_init_repeats_under_the_same_seed() -> None:
    """torch.manual_seed fixes the random weights (the `weights: random` case)."""
    torch.manual_seed(5)
    a = resnet18().state_dict()
    torch.manual_seed(5)
    b = resnet18().state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_normalize_matches_imagenet_formula() -> None:
    """(B, H, W, 3) uint8 -> (B, 3, H, W) float32 (x / 255 - mean) / std, numpy or torch."""
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, size=(2, 5, 7, 3), dtype=np.uint8)
    out = normalize(imgs)
    assert out.shape == (2, 3, 5, 7) and out.dtype == torch.float32
    expected = (imgs / 255.0 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    np.testing.assert_allclose(out.numpy(), expected.transpose(0, 3, 1, 2), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(normalize(torch.from_numpy(imgs)), out)
    # A mid-grey equal to the mean maps to ~0; channel order is RGB.
    mean_px = np.round(np.array(IMAGENET_MEAN) * 255).astype(np.uint8)
    grey = normalize(np.broadcast_to(mean_px, (1, 2, 2, 3)).copy())
    assert grey.abs().max() < 0.01
    assert len(IMAGENET_MEAN) == len(IMAGENET_STD) == 3


def test_normalize_rejects_bad_input() -> None:
    """Non-uint8 input, a missing batch axis and channels-first input are refused."""
    with pytest.raises(TypeError, match="uint8"):
        normalize(np.zeros((1, 4, 4, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="B, H, W, 3"):
        normalize(np.zeros((4, 4, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="B, H, W, 3"):
        normalize(torch.zeros((1, 3, 4, 4), dtype=torch.uint8))


def test_resnet18_compact_is_three_half_width_stages() -> None:
    from detectors.backbones.resnet import resnet18_compact

    torch.manual_seed(0)
    m = resnet18_compact().eval()
    keys = set(m.state_dict())
    assert "layer3.1.bn2.running_var" in keys and "conv1.weight" in keys
    assert not any(k.startswith(("layer4.", "fc.")) for k in keys)
    assert m.state_dict()["conv1.weight"].shape == (32, 3, 7, 7)
    with torch.no_grad():
        f = m.forward_features(torch.zeros(1, 3, 224, 224), ("layer1", "layer2", "layer3"))
    assert {k: tuple(v.shape[1:]) for k, v in f.items()} == {
        "layer1": (RESNET_CHANNELS["resnet18_compact"]["layer1"], 56, 56),
        "layer2": (64, 28, 28),
        "layer3": (128, 14, 14),
    }
    with pytest.raises(ValueError, match="no layer4"):
        m.forward_features(torch.zeros(1, 3, 64, 64), ("layer4",))
    with pytest.raises(ValueError, match="no classifier"):
        m(torch.zeros(1, 3, 64, 64))
