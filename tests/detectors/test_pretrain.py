"""Self-supervised pretraining (dense VICReg on real/twin pairs): its loss terms, its aligned
augmentation, a tiny training run that saves a checkpoint the detectors load strictly, and
its determinism by seed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from detectors.backbones.weights import load_backbone
from detectors.pretrain import (
    PretrainParams,
    embedding_spread,
    make_batch,
    overlap,
    save_checkpoint,
    train,
    vicreg_terms,
)

TINY = PretrainParams(epochs=2, batch_size=4, image_size=48, expander_dim=16, shift_cells=1)


def _pairs(n: int = 8, size: int = 48, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Real/twin pairs that share structure (blocks) and differ in brightness and noise."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (n, size // 8, size // 8, 3)).repeat(8, 1).repeat(8, 2)
    real = np.clip(base * 0.8 + rng.normal(0, 8, base.shape), 0, 255).astype(np.uint8)
    return real, base.astype(np.uint8)


def test_vicreg_terms_reward_agreement_and_punish_collapse() -> None:
    g = torch.Generator().manual_seed(0)
    z = torch.randn(256, 8, generator=g) * 2.0
    inv, var, cov = vicreg_terms(z, z.clone())
    assert float(inv) == 0.0 and float(var) == pytest.approx(0.0, abs=1e-6)
    collapsed = torch.ones(256, 8)
    _, var_c, _ = vicreg_terms(collapsed, collapsed)
    assert float(var_c) == pytest.approx(1.0, abs=0.02)  # std 0 -> hinge 1 per dimension
    correlated = torch.randn(256, 1, generator=g).repeat(1, 8)
    assert float(vicreg_terms(correlated, correlated)[2]) > float(cov) * 5


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_shifted_crops_match_where_the_loss_says(seed: int) -> None:
    real, _ = _pairs(n=6, size=160)
    rng = np.random.default_rng(seed)
    g = torch.Generator().manual_seed(seed)
    params = PretrainParams(image_size=64, shift_cells=1)
    a, b, shift = make_batch(real, real.copy(), params, rng, g)
    assert a.shape == b.shape == (6, 3, 64, 64)
    # Same image both sides: only the photometric jitter differs, so the cells the loss
    # pairs (4 px cells, layer 1's grid) see the same pixels and correlate strongly, far
    # more than the same cells of another image.
    pool = torch.nn.functional.avg_pool2d
    fa, fb = pool(a.mean(1, keepdim=True), 4), pool(b.mean(1, keepdim=True), 4)
    ra, rb = overlap(fa, fb, (shift[0] * 4, shift[1] * 4))
    ra, rb = ra.view(6, -1).numpy(), rb.view(6, -1).numpy()
    same = [np.corrcoef(ra[i], rb[i])[0, 1] for i in range(6)]
    other = [np.corrcoef(ra[i], rb[(i + 1) % 6])[0, 1] for i in range(6)]
    assert min(same) > 0.8, same
    assert np.mean(same) > np.mean(np.abs(other)) + 0.4


def test_overlap_pairs_cells_by_the_shift() -> None:
    za = torch.arange(16.0).view(1, 1, 4, 4)
    zb = za.roll(shifts=(-1, -1), dims=(2, 3))  # b's (i, j) holds a's (i + 1, j + 1)
    ra, rb = overlap(za, zb, (1, 1))
    assert ra.shape == rb.shape == (9, 1)
    assert torch.equal(ra, rb)
    assert overlap(za, za, (0, 0))[0].shape == (16, 1)
    assert overlap(za, za, (-2, 1))[0].shape == (6, 1)


def test_tiny_training_saves_a_checkpoint_detectors_load(tmp_path: Path) -> None:
    real, twin = _pairs()
    state, history = train(real, twin, TINY)
    assert len(history) == 2 and all(np.isfinite(h["loss"]) for h in history)
    path = tmp_path / "ssl.pth"
    save_checkpoint(path, state, {"made_by": "test", "history": history})
    model, info = load_backbone("resnet18_compact", str(path))
    assert info.source == "file" and info.sha256
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k
    assert embedding_spread(state, "resnet18_compact", list(real[:4])) > 0.0


def test_training_repeats_under_its_seed_and_differs_across_seeds() -> None:
    real, twin = _pairs()
    torch.use_deterministic_algorithms(True)
    try:
        s1, h1 = train(real, twin, TINY)
        s2, h2 = train(real, twin, TINY)
        s3, _ = train(real, twin, TINY.model_copy(update={"seed": 1}))
    finally:
        torch.use_deterministic_algorithms(False)
    assert [h["loss"] for h in h1] == [h["loss"] for h in h2]
    assert all(torch.equal(s1[k], s2[k]) for k in s1)
    assert not torch.equal(s1["conv1.weight"], s3["conv1.weight"])


def test_bad_training_input_is_refused() -> None:
    real, twin = _pairs()
    with pytest.raises(ValueError, match="equal"):
        train(real, twin[:, :40], TINY)
    with pytest.raises(TypeError, match="uint8"):
        train(real.astype(np.float32), twin.astype(np.float32), TINY)
    with pytest.raises(ValueError, match="fewer than one batch"):
        train(real[:2], twin[:2], TINY)


def test_the_shift_stride_is_layer3s() -> None:
    from detectors.backbones.resnet import STAGE_STRIDES
    from detectors.pretrain import STRIDE_PX

    assert STRIDE_PX == STAGE_STRIDES["layer3"]
