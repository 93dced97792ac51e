"""AVATAR: the detector contract, training, the masked local loss, the Table II ablations,
save/reload, determinism, anomalies scored above normals and the feature cache; then the
same for the ``resnet18_compact`` backbone (its token grid, channels and size rule).

Small and fast: random (seeded) DINOv2 weights at 56 px (4 x 4 tokens) or 112 px (8 x 8);
random compact-ResNet weights at 64 px (4 x 4 tokens).
"""

from __future__ import annotations

import functools
import typing
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from detectors.avatar import AVATAR, TOKEN_SPECS, AVATARParams, Backbone, reassemble
from detectors.backbones import weights
from detectors.backbones.resnet import RESNET_CHANNELS, STAGE_STRIDES, normalize
from detectors.checker import check_detector
from detectors.registry import check_params_model
from detectors.testing import make_synthetic_samples
from scenarios.interfaces import SpecError

LOAD_BACKBONE = weights.load_backbone

#: A short schedule at a higher learning rate than the paper's 1e-4, so a few epochs train.
SMALL = {"weights": "random", "image_size": 56, "epochs": 6, "lr": 1e-3, "sigma_px": 1.0}
#: The compact ResNet at 64 px (4 x 4 tokens of 192 channels), two epochs.
RESNET = {**SMALL, "backbone": "resnet18_compact", "image_size": 64, "epochs": 2}


@pytest.fixture(autouse=True)
def _shared_backbones(monkeypatch: pytest.MonkeyPatch) -> None:
    """One frozen backbone per (name, weights, seed) for the whole module: building a random
    ViT-S takes about 1.5 s and is the same every time (``test_backbone_weights`` covers it)."""
    monkeypatch.setattr(weights, "load_backbone", _memo_load_backbone)


@functools.cache
def _memo_load_backbone(backbone: str, rule: str = "auto", seed: int = 0) -> tuple[Any, Any]:
    return LOAD_BACKBONE(backbone, rule, seed=seed)


def _state(det: AVATAR) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in det.head.state_dict().items()}


def test_avatar_obeys_the_detector_contract() -> None:
    train = make_synthetic_samples(4, seed=1)
    test = make_synthetic_samples(2, seed=2) + make_synthetic_samples(2, seed=3, anomalous=True)
    check_detector(AVATAR(**SMALL), train, test)


def test_fit_refuses_anomalous_pairs_and_predict_before_fit() -> None:
    det = AVATAR(**SMALL)
    with pytest.raises(RuntimeError, match="before fit"):
        det.predict(make_synthetic_samples(1, seed=2)[0])
    with pytest.raises(ValueError, match="normal ones only"):
        det.fit(make_synthetic_samples(1, seed=2, anomalous=True))


def test_training_reduces_the_loss() -> None:
    det = AVATAR(**{**SMALL, "epochs": 8})
    det.fit(make_synthetic_samples(8, seed=1))
    assert [h["epoch"] for h in det.history] == list(range(8))
    losses = [h["loss"] for h in det.history]
    assert losses[-1] < 0.5 * losses[0]
    for h in det.history:  # the total is the sum of the two terms at lambda = 1
        assert h["loss"] == pytest.approx(h["local"] + h["global"], rel=1e-5)


def test_local_loss_sees_only_foreground_tokens() -> None:
    """Changing real tokens outside ``W`` leaves the local loss unchanged (the global one,
    through the attention's GAP, may move); changing one inside ``W`` changes it.

    Tested on tokens, not pixels: the ViT's own attention mixes every patch into every
    token, so a background pixel reaches foreground tokens before AVATAR sees them."""
    det = AVATAR(**SMALL)
    det._init_head()  # untrained: the masking is structural
    g = torch.Generator().manual_seed(0)
    real, twin = torch.randn(2, 16, 384, generator=g), torch.randn(2, 16, 384, generator=g)
    w = torch.zeros(2, 16)
    w[:, 5:11] = 1.0
    with torch.no_grad():
        base = det.loss_terms(real, twin, w)
        outside = real.clone()
        outside[w == 0] = torch.randn(int((w == 0).sum()), 384, generator=g)
        moved = det.loss_terms(outside, twin, w)
        inside = real.clone()
        inside[0, 7] = torch.randn(384, generator=g)
        touched = det.loss_terms(inside, twin, w)
    torch.testing.assert_close(moved["local"], base["local"], rtol=1e-6, atol=1e-7)
    assert not torch.allclose(moved["global"], base["global"])
    assert not torch.allclose(touched["local"], base["local"])


def test_the_token_mask_is_the_twin_foreground() -> None:
    det = AVATAR(**SMALL)
    mask = np.zeros((64, 64), dtype=bool)
    mask[:32, :32] = True  # the top-left quarter: 2 x 2 of the 4 x 4 tokens
    w = det.token_mask([mask])[0].reshape(4, 4)
    expected = torch.zeros(4, 4)
    expected[:2, :2] = 1.0
    torch.testing.assert_close(w, expected)


def test_ablation_switches_remove_the_projectors_and_the_local_loss() -> None:
    train = make_synthetic_samples(4, seed=1)
    full = AVATAR(**SMALL)
    full.fit(train)
    assert any(k.startswith("phi_r.") for k in full.head.state_dict())
    assert any(k.startswith("phi_s.") for k in full.head.state_dict())

    bare = AVATAR(**{**SMALL, "real_projector": False, "render_projector": False})
    bare.fit(train)
    assert isinstance(bare.head["phi_r"], torch.nn.Identity)
    assert isinstance(bare.head["phi_s"], torch.nn.Identity)
    assert not any(k.startswith(("phi_r.", "phi_s.")) for k in bare.head.state_dict())
    tokens = torch.randn(1, 16, 384)
    with torch.no_grad():
        z_r, _, z_s = reassemble(bare.head, tokens, tokens + 1.0)
    torch.testing.assert_close(z_r, tokens, rtol=0, atol=0)
    torch.testing.assert_close(z_s, tokens + 1.0, rtol=0, atol=0)

    no_local = AVATAR(**{**SMALL, "local_loss": False})
    no_local.fit(train)
    for h in no_local.history:
        assert h["loss"] == pytest.approx(h["global"], rel=1e-6)
        assert h["local"] > 0.0  # still recorded, not trained on
    # Trained on the global term alone, the local discrepancy stays far above the full model's.
    assert no_local.history[-1]["local"] > 2.0 * full.history[-1]["local"]


def test_params_are_checked_when_the_scenario_loads() -> None:
    with pytest.raises(SpecError, match=r"image_size: must be a multiple of 14 px"):
        check_params_model(AVATARParams, {"weights": "random", "image_size": 100}, "d.0.params")
    with pytest.raises(SpecError, match="proj_dim: must be 384"):
        check_params_model(
            AVATARParams, {"weights": "random", "proj_dim": 128, "real_projector": False}, "d"
        )
    with pytest.raises(SpecError, match="unknown field"):
        check_params_model(AVATARParams, {"weights": "random", "heads": 2}, "d")
    assert AVATARParams(weights="random", image_size=504).image_size == 504


def test_a_saved_model_reloads_and_gives_the_same_maps(tmp_path: Path) -> None:
    det = AVATAR(**SMALL)
    det.fit(make_synthetic_samples(4, seed=1))
    path = tmp_path / "avatar.pt"
    det.save(path)
    again = AVATAR.load(path)
    assert again.params == det.params
    assert again.history == det.history
    for s in make_synthetic_samples(2, seed=4, anomalous=True):
        a, b = det.predict(s), again.predict(s)
        np.testing.assert_array_equal(a.anomaly_map, b.anomaly_map)
        assert a.score == b.score


def test_training_is_deterministic_by_seed() -> None:
    train = make_synthetic_samples(6, seed=1)
    sample = make_synthetic_samples(1, seed=4, anomalous=True)[0]
    rng_before = torch.get_rng_state()
    a, b, c = AVATAR(**SMALL), AVATAR(**SMALL), AVATAR(**{**SMALL, "seed": 1})
    for det in (a, b, c):
        det.fit(train)
    assert torch.equal(torch.get_rng_state(), rng_before)  # the global RNG is left alone
    assert a.history == b.history
    for k, v in _state(a).items():
        torch.testing.assert_close(_state(b)[k], v, rtol=0, atol=0)
    np.testing.assert_array_equal(a.predict(sample).anomaly_map, b.predict(sample).anomaly_map)
    assert not np.array_equal(a.predict(sample).anomaly_map, c.predict(sample).anomaly_map)


def test_anomalous_images_score_above_normal_ones() -> None:
    """With random backbone weights at 112 px (8 x 8 tokens) a short training separates the
    synthetic blobs completely, and the map peaks on the blob."""
    det = AVATAR(**{**SMALL, "image_size": 112, "epochs": 15})
    det.fit(make_synthetic_samples(8, seed=1))
    normal = [det.predict(s).score for s in make_synthetic_samples(6, seed=5)]
    bad = make_synthetic_samples(6, seed=6, anomalous=True)
    preds = [det.predict(s) for s in bad]
    assert min(p.score for p in preds) > max(normal)
    from scipy import ndimage

    hits = 0
    for s, p in zip(bad, preds, strict=True):
        y, x = np.unravel_index(np.argmax(p.anomaly_map), p.anomaly_map.shape)
        hits += bool(ndimage.binary_dilation(s.gt_mask, iterations=3)[y, x])
    assert hits >= 5


def test_the_feature_cache_skips_the_backbone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    train = make_synthetic_samples(3, seed=1)  # three real images, one shared twin image
    sample = make_synthetic_samples(1, seed=4)[0]
    det = AVATAR(**SMALL)
    det.set_feature_cache(tmp_path / "features")
    det.fit(train)
    assert len(list((tmp_path / "features").glob("*.pt"))) == 4
    expected = det.predict(sample).anomaly_map

    again = AVATAR(**SMALL)
    again.set_feature_cache(tmp_path / "features")
    model = again._backbone()

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the backbone ran despite the cache")

    with monkeypatch.context() as m:
        m.setattr(model, "forward_tokens", refuse)
        again.fit(train)
    np.testing.assert_array_equal(again.predict(sample).anomaly_map, expected)


# -- the resnet18_compact backbone ---------------------------------------------------------


def test_resnet_token_spec_matches_the_backbone() -> None:
    assert set(typing.get_args(Backbone)) == set(TOKEN_SPECS)  # every accepted name has a row
    spec = TOKEN_SPECS["resnet18_compact"]
    channels = RESNET_CHANNELS["resnet18_compact"]
    assert spec.channels == channels["layer2"] + channels["layer3"] == 192
    assert spec.stride_px == STAGE_STRIDES["layer3"] == 2 * STAGE_STRIDES["layer2"] == 16


@pytest.mark.parametrize(("image_size", "grid"), [(224, 14), (256, 16)])
def test_resnet_tokens_are_layer2_pooled_onto_the_layer3_grid(image_size: int, grid: int) -> None:
    """Tokens (1, grid^2, 64 + 128): layer2 average-pooled 2 x 2, then layer3, row-major."""
    det = AVATAR(**{**RESNET, "image_size": image_size})
    sample = make_synthetic_samples(1, seed=2)[0]
    tokens = det.tokens([sample.real.rgb])
    assert tokens.shape == (1, grid * grid, 192)
    assert det.token_mask([sample.fg_mask]).shape == (1, grid * grid)

    x = normalize(sample.real.rgb[None])
    x = torch.nn.functional.interpolate(
        x, size=(image_size, image_size), mode="bilinear", antialias=True
    )
    with torch.no_grad():
        maps = det._backbone().forward_features(x, ("layer2", "layer3"))
    layer2, layer3 = maps["layer2"][0], maps["layer3"][0]
    assert layer3.shape == (128, grid, grid)
    row, col = 3, grid - 2  # one token, checked by hand: its 2 x 2 layer2 cell, then layer3
    fine = layer2[:, 2 * row : 2 * row + 2, 2 * col : 2 * col + 2].mean(dim=(1, 2))
    expected = torch.cat([fine, layer3[:, row, col]])
    torch.testing.assert_close(tokens[0, row * grid + col], expected)


def test_resnet_backbone_obeys_the_detector_contract() -> None:
    train = make_synthetic_samples(4, seed=1)
    test = make_synthetic_samples(1, seed=2) + make_synthetic_samples(1, seed=3, anomalous=True)
    det = AVATAR(**RESNET)
    check_detector(det, train, test)
    assert det.params.grid == 4
    assert det.token_map(test[1]).shape == (4, 4)
    assert len(det.history) == 2
    assert all(np.isfinite(list(h.values())).all() for h in det.history)


def test_resnet_proj_dim_defaults_to_its_channels() -> None:
    params = AVATARParams(weights="random", backbone="resnet18_compact")
    assert params.proj_dim is None and params.dim == 192
    det = AVATAR(**RESNET)
    det._init_head()
    assert det.head["phi_r"][0].in_features == 192
    assert det.head["q"].weight.shape == (192, 192)
    narrow = AVATAR(**{**RESNET, "proj_dim": 32})
    narrow._init_head()
    assert narrow.head["phi_s"][0].weight.shape == (32, 192)
    # An identity projector keeps the 192 channels: unset or 192 is accepted, 384 is not.
    bare = {"weights": "random", "backbone": "resnet18_compact", "render_projector": False}
    assert AVATARParams(**bare).dim == AVATARParams(**bare, proj_dim=192).dim == 192
    with pytest.raises(SpecError, match=r"proj_dim: must be 192 \(resnet18_compact's"):
        check_params_model(AVATARParams, {**bare, "proj_dim": 384}, "d")


def test_resnet_image_size_must_be_a_multiple_of_16() -> None:
    base = {"weights": "random", "backbone": "resnet18_compact"}
    with pytest.raises(
        SpecError, match=r"image_size: must be a multiple of 16 px .*nearest: 224 or 240"
    ):
        check_params_model(AVATARParams, {**base, "image_size": 230}, "d.0.params")
    with pytest.raises(SpecError, match=r"multiple of 16 px .*nearest: 48 or 64"):
        check_params_model(AVATARParams, {**base, "image_size": 56}, "d")  # fine for DINOv2
    assert AVATARParams(**base, image_size=224).grid == 14
    assert AVATARParams(weights="random", image_size=224).grid == 16  # DINOv2: stride 14


def test_a_saved_resnet_model_reloads_and_training_repeats(tmp_path: Path) -> None:
    train = make_synthetic_samples(4, seed=1)
    det, twin = AVATAR(**RESNET), AVATAR(**RESNET)
    det.fit(train)
    twin.fit(train)
    assert det.history == twin.history
    path = tmp_path / "avatar-resnet.pt"
    det.save(path)
    again = AVATAR.load(path)
    assert again.params == det.params and again.params.proj_dim is None
    assert again.history == det.history
    for s in make_synthetic_samples(2, seed=4, anomalous=True):
        a, b, c = det.predict(s), again.predict(s), twin.predict(s)
        assert a.anomaly_map.shape == s.real.rgb.shape[:2]
        np.testing.assert_array_equal(a.anomaly_map, b.anomaly_map)
        np.testing.assert_array_equal(a.anomaly_map, c.anomaly_map)
        assert a.score == b.score


def test_the_feature_cache_keeps_backbones_apart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At 112 px (a multiple of 14 and 16) both backbones share a cache directory: each
    keeps its own files and reads back only its own tokens."""
    train = make_synthetic_samples(2, seed=1)  # two real images, one shared twin image
    cache = tmp_path / "features"
    for backbone in ("dinov2_vits14", "resnet18_compact"):
        det = AVATAR(**{**SMALL, "backbone": backbone, "image_size": 112, "epochs": 1})
        det.set_feature_cache(cache)
        det.fit(train)
    assert len(list(cache.glob("*.pt"))) == 6

    again = AVATAR(**{**RESNET, "image_size": 112, "epochs": 1})
    again.set_feature_cache(cache)
    model = again._backbone()

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the backbone ran despite the cache")

    with monkeypatch.context() as m:
        m.setattr(model, "forward_features", refuse)
        tokens = again.tokens([s.real.rgb for s in train])
    assert tokens.shape == (2, 7 * 7, 192)
