"""COSARAD's contrastive extractor: PointNet++ MSG sampling and grouping against brute force,
the encoder against a direct transcription of the reference's channels-first forward, the
reference's state_dict names, the paper's head, Algorithm 1's mining, the adaptive margin,
the augmentation, and a short training run that learns, repeats by seed and survives a
save/load round trip."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path
from typing import cast

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from detectors.cosarad.contrastive import (
    TripletParams,
    augment_triplets,
    edge_crop,
    euler_rotations,
    evaluate,
    load_extractor,
    mine,
    save_extractor,
    train_extractor,
    triplet_loss,
    update_margin,
)
from detectors.cosarad.pointnet2 import (
    ContrastiveHead,
    PatchEncoder,
    ball_query,
    embed,
    farthest_point_sample,
    index_points,
    preset,
)
from scenarios.interfaces import TEMP_PREFIX

REPO_ROOT = Path(__file__).resolve().parents[2]


# --- synthetic patches ----------------------------------------------------------------------


def _disc(rng: np.random.Generator, n: int, p: int, bump: float) -> np.ndarray:
    """(n, p, 3) points uniform on the unit disc z = 0, raised by a Gaussian bump of height
    ``bump`` (sigma 0.25) in the middle, with 0.01 noise: flat (normal) or bumped (defect)
    patches in units of the patch radius."""
    r = np.sqrt(rng.random((n, p)))
    th = rng.random((n, p)) * 2.0 * np.pi
    x, y = r * np.cos(th), r * np.sin(th)
    z = bump * np.exp(-(x**2 + y**2) / (2 * 0.25**2))
    return np.stack([x, y, z], axis=-1) + rng.normal(0.0, 0.01, (n, p, 3))


def _triplets(t: int, p: int, seed: int = 0, bump: float = 0.4) -> np.ndarray:
    """(t, 3, p, 3) float32 [flat, flat, bumped] triplets, each patch sampled anew."""
    rng = np.random.default_rng(seed)
    parts = [_disc(rng, t, p, 0.0), _disc(rng, t, p, 0.0), _disc(rng, t, p, bump)]
    return np.stack(parts, axis=1).astype(np.float32)


#: A run long enough for the batch-norm running statistics to forget their initial values
#: (~120 steps) on a task the network learns in a few epochs; margin held fixed (yield
#: bounds [0, 1]) so that validation losses of different epochs compare.
LEARN = TripletParams(
    epochs=10,
    batch_size=6,
    lr=2e-3,
    miner_momentum=0.9,
    augment=False,
    yield_min=0.0,
    yield_max=1.0,
    seed=3,
)
TINY = TripletParams(epochs=2, batch_size=8, lr=1e-3, seed=5)


@pytest.fixture(scope="module")
def tiny_run() -> tuple[PatchEncoder, list[dict[str, float]], np.ndarray]:
    """A two-epoch run (with augmentation) on 24 triplets of 128 points, and its data."""
    data = _triplets(24, 128, seed=1)
    model, history = train_extractor(data, TINY, progress=False)
    return model, history, data


# --- sampling and grouping -------------------------------------------------------------------


def _fps_bruteforce(xyz: np.ndarray, npoint: int) -> np.ndarray:
    """Farthest point sampling of one (N, 3) cloud from index 0, the plain definition."""
    chosen = [0]
    for _ in range(npoint - 1):
        d = np.min(np.linalg.norm(xyz[:, None] - xyz[chosen][None], axis=-1), axis=1)
        chosen.append(int(np.argmax(d)))
    return np.array(chosen)


def test_fps_matches_bruteforce() -> None:
    rng = np.random.default_rng(0)
    xyz = rng.normal(size=(3, 200, 3))
    got = farthest_point_sample(torch.from_numpy(xyz), 40).numpy()
    assert got.shape == (3, 40) and got.dtype == np.int64
    for b in range(3):
        np.testing.assert_array_equal(got[b], _fps_bruteforce(xyz[b], 40))
    assert len(set(got[0])) == 40  # distinct samples
    with pytest.raises(ValueError, match="npoint"):
        farthest_point_sample(torch.from_numpy(xyz), 201)


def test_ball_query_order_padding_and_radius() -> None:
    # Points on the x axis; the ball of radius 0.5 around 0 holds indices 0, 2, 4, 5
    # (4 at exactly 0.5: the boundary is inside), in index order, padded with the first.
    xs = [0.0, 0.9, 0.1, 2.0, 0.5, -0.25, 0.75]
    xyz = torch.tensor([[[x, 0.0, 0.0] for x in xs]])
    centre = torch.zeros(1, 1, 3)
    assert ball_query(0.5, 6, xyz, centre).tolist() == [[[0, 2, 4, 5, 0, 0]]]
    assert ball_query(0.5, 3, xyz, centre).tolist() == [[[0, 2, 4]]]  # the first 3 only
    assert ball_query(0.2, 3, xyz, centre).tolist() == [[[0, 2, 0]]]
    # Around x = 1.95 only index 3 (2.0) is within 0.1: padded with it.
    far = torch.tensor([[[1.95, 0.0, 0.0]]])
    assert ball_query(0.1, 4, xyz, far).tolist() == [[[3, 3, 3, 3]]]
    # No point in the ball: the nearest one fills the group (the reference would index N).
    empty = torch.tensor([[[1.4, 0.0, 0.0]]])
    assert ball_query(0.05, 2, xyz, empty).tolist() == [[[1, 1]]]  # 0.9 is 0.5 away
    # More samples than points: still padded to nsample.
    assert ball_query(5.0, 9, xyz, centre).tolist() == [[[0, 1, 2, 3, 4, 5, 6, 0, 0]]]


def test_ball_query_matches_reference_on_random_clouds() -> None:
    rng = np.random.default_rng(1)
    xyz = rng.uniform(-1, 1, (2, 300, 3))
    centres = xyz[:, rng.choice(300, 20, replace=False)]
    got = ball_query(0.4, 16, torch.from_numpy(xyz), torch.from_numpy(centres)).numpy()
    for b in range(2):
        for s in range(20):
            inside = np.flatnonzero(np.linalg.norm(xyz[b] - centres[b, s], axis=1) <= 0.4)
            want = np.full(16, inside[0])
            want[: min(16, inside.size)] = inside[:16]
            np.testing.assert_array_equal(got[b, s], want)


def test_index_points_gathers_per_cloud() -> None:
    pts = torch.arange(2 * 4 * 2.0).view(2, 4, 2)
    idx = torch.tensor([[[3, 0]], [[1, 1]]])
    out = index_points(pts, idx)
    assert out.shape == (2, 1, 2, 2)
    assert out[0, 0].tolist() == [pts[0, 3].tolist(), pts[0, 0].tolist()]
    assert out[1, 0].tolist() == [pts[1, 1].tolist(), pts[1, 1].tolist()]


# --- network ---------------------------------------------------------------------------------


def _reference_features(model: PatchEncoder, x: torch.Tensor) -> torch.Tensor:
    """yanx27's forward transcribed directly (channels first, Conv2d and BatchNorm2d modules
    called as such, features grouped before the first convolution), on ``model``'s own
    modules, with this package's FPS and ball query."""
    xyz, feats = x, None
    for sa in model.msg_levels():
        b, _, c = xyz.shape
        centroids = index_points(xyz, farthest_point_sample(xyz, sa.npoint))
        outs = []
        for i, radius in enumerate(sa.radius_list):
            idx = ball_query(radius, sa.nsample_list[i], xyz, centroids)
            g_xyz = index_points(xyz, idx) - centroids.view(b, sa.npoint, 1, c)
            g = g_xyz if feats is None else torch.cat([index_points(feats, idx), g_xyz], -1)
            g = g.permute(0, 3, 2, 1)  # (B, C, K, S)
            convs, bns = (
                cast(nn.ModuleList, sa.conv_blocks[i]),
                cast(nn.ModuleList, sa.bn_blocks[i]),
            )
            for conv, bn in zip(convs, bns, strict=True):
                g = F.relu(bn(conv(g)))
            outs.append(torch.max(g, 2)[0])
        xyz, feats = centroids, torch.cat(outs, 1).permute(0, 2, 1)
    assert feats is not None
    sa3 = model.global_level()
    b, n, c = xyz.shape
    g = torch.cat([xyz.view(b, 1, n, c), feats.view(b, 1, n, -1)], -1).permute(0, 3, 2, 1)
    for conv, bn in zip(sa3.mlp_convs, sa3.mlp_bns, strict=True):
        g = F.relu(bn(conv(g)))
    return torch.max(g, 2)[0].view(b, -1)


@pytest.mark.parametrize("train", [True, False])
def test_encoder_equals_reference_transcription(train: bool) -> None:
    """The channels-last layout, the first layer applied before grouping and batch norm
    folded in eval mode give the reference's numbers (and running-statistics updates)."""
    torch.manual_seed(0)
    model = PatchEncoder(preset("compact"), 16).double()
    for mod in model.modules():  # non-trivial statistics, so that folding is exercised
        if isinstance(mod, nn.BatchNorm2d):
            for buf, lo, hi in (
                (mod.running_mean, -0.5, 0.5),
                (mod.running_var, 0.1, 2.0),
                (mod.weight, 0.5, 1.5),
                (mod.bias, -0.5, 0.5),
            ):
                assert buf is not None
                with torch.no_grad():
                    buf.uniform_(lo, hi)
    ref = copy.deepcopy(model)
    model.train(train)
    ref.train(train)
    x = torch.from_numpy(_triplets(2, 128)[:, :2].reshape(4, 128, 3)).double()
    torch.testing.assert_close(model.features(x), _reference_features(ref, x))
    for key, value in ref.state_dict().items():
        torch.testing.assert_close(model.state_dict()[key], value)


def test_paper_preset_has_reference_state_dict_names() -> None:
    """Encoder keys and shapes of yanx27's pointnet2_cls_msg (normal_channel=False: the
    first level sees 3 relative coordinates, in_channel 0 + 3)."""
    state = PatchEncoder(preset("paper"), 64).state_dict()
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    assert shapes["sa1.conv_blocks.0.0.weight"] == (32, 3, 1, 1)
    assert shapes["sa1.conv_blocks.2.1.weight"] == (96, 64, 1, 1)
    assert shapes["sa1.bn_blocks.1.2.running_var"] == (128,)
    assert shapes["sa2.conv_blocks.0.0.weight"] == (64, 320 + 3, 1, 1)
    assert shapes["sa2.conv_blocks.2.2.bias"] == (256,)
    assert shapes["sa3.mlp_convs.0.weight"] == (256, 640 + 3, 1, 1)
    assert shapes["sa3.mlp_convs.2.weight"] == (1024, 512, 1, 1)
    assert shapes["sa3.mlp_bns.2.running_mean"] == (1024,)
    assert shapes["head.fc1.weight"] == (256, 1024) and shapes["head.fc2.weight"] == (64, 256)
    # Exactly the reference's encoder keys, nothing else besides the head.
    expected = set()
    bn_keys = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    for level, widths in (
        ("sa1", [[32, 32, 64], [64, 64, 128], [64, 96, 128]]),
        ("sa2", [[64, 64, 128], [128, 128, 256], [128, 128, 256]]),
    ):
        for i, mlp in enumerate(widths):
            for j in range(len(mlp)):
                expected |= {f"{level}.conv_blocks.{i}.{j}.{k}" for k in ("weight", "bias")}
                expected |= {f"{level}.bn_blocks.{i}.{j}.{k}" for k in bn_keys}
    for j in range(3):
        expected |= {f"sa3.mlp_convs.{j}.{k}" for k in ("weight", "bias")}
        expected |= {f"sa3.mlp_bns.{j}.{k}" for k in bn_keys}
    assert {k for k in state if not k.startswith("head.")} == expected


def test_head_output_is_unit_norm() -> None:
    torch.manual_seed(0)
    head = ContrastiveHead(16)
    h = torch.randn(5, 1024) * 3.0
    for train in (True, False):
        head.train(train)
        m = head(h)
        assert m.shape == (5, 16)
        torch.testing.assert_close(m.norm(dim=1), torch.ones(5))
    assert head.dropout.p == pytest.approx(0.4)
    assert head.bn1.num_features == 1024 and head.bn2.num_features == 256


def test_encoder_and_embed_give_unit_norm_features() -> None:
    torch.manual_seed(0)
    model = PatchEncoder(preset("compact"), 8)
    patches = _triplets(3, 128).reshape(9, 128, 3)
    model.train()
    out = embed(model, patches, batch_size=4)
    assert model.training  # mode restored
    assert out.shape == (9, 8) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(out, embed(model, patches, batch_size=9), atol=1e-6)
    with torch.no_grad():
        assert model(torch.from_numpy(patches)).shape == (9, 8)
    with pytest.raises(ValueError, match="at least 64"):
        embed(model, patches[:, :32])


# --- loss, mining, margin --------------------------------------------------------------------


def test_triplet_loss_is_eq1() -> None:
    mg = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    mp = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    mb = torch.tensor([[0.0, 1.0], [0.0, 0.9]])
    # Row 0: 0 - 2 + 0.5 < 0 -> 0; row 1: 0 - 0.01 + 0.5 = 0.49.
    assert float(triplet_loss(mg, mp, mb, 0.5)) == pytest.approx(0.49 / 2)


def _dists(r: list[float]) -> tuple[np.ndarray, np.ndarray]:
    """Distances with d_neg - d_pos = r."""
    d_pos = np.full(len(r), 1.0)
    return d_pos, d_pos + np.array(r)


def test_mine_takes_semi_hard_then_hardest() -> None:
    # margin 0.5: semi-hard 0 < r <= 0.5 (indices 1, 4, 9: r = margin is semi-hard),
    # hard r <= 0 (2, 5, 6, 8: r = 0 is hard), easy r > 0.5 (0, 3, 7).
    r = [0.9, 0.1, -0.2, 0.7, 0.3, -0.5, 0.0, 0.8, -0.1, 0.5]
    idx, y = mine(*_dists(r), margin=0.5, gamma=0.5, rng=np.random.default_rng(0))
    # floor(0.5 * 10) = 5: the 3 semi-hard, then the 2 hardest (r = -0.5, -0.2).
    assert idx.tolist() == [1, 4, 9, 5, 2]
    assert y == pytest.approx(0.5)


def test_mine_tops_up_with_easy_and_reports_informative_yield() -> None:
    r = [0.9, 0.1, 0.7, 0.3, -0.5, 0.8, 0.6, 0.95, 1.2, 0.75]  # 2 semi, 1 hard, 7 easy
    easy = {0, 2, 5, 6, 7, 8, 9}
    idx, y = mine(*_dists(r), margin=0.5, gamma=0.5, rng=np.random.default_rng(0))
    assert idx[:3].tolist() == [1, 3, 4]
    assert len(idx) == 5 and set(idx[3:]) <= easy and len(set(idx)) == 5
    assert y == pytest.approx(0.3)  # the easy top-up does not count (Algorithm 1, line 10)
    again, _ = mine(*_dists(r), margin=0.5, gamma=0.5, rng=np.random.default_rng(0))
    assert again.tolist() == idx.tolist()  # seeded


def test_mine_keeps_only_semi_hard_above_gamma() -> None:
    r = [0.1, 0.2, 0.3, -1.0, 2.0]
    idx, y = mine(*_dists(r), margin=0.5, gamma=0.5, rng=np.random.default_rng(0))
    assert idx.tolist() == [0, 1, 2] and y == pytest.approx(0.6)
    # gamma 0: nothing but the semi-hard ones, even if there are none.
    idx, y = mine(*_dists([1.0, -1.0]), margin=0.5, gamma=0.0, rng=np.random.default_rng(0))
    assert idx.size == 0 and y == 0.0
    with pytest.raises(ValueError):
        mine(np.zeros(0), np.zeros(0), 0.5, 0.5, np.random.default_rng(0))


def test_margin_rises_on_low_yield_and_falls_on_high() -> None:
    p = TripletParams()  # yield bounds [0.5, 0.75], factor 1.1
    assert update_margin(0.6, 0.3, p) == pytest.approx(0.66)
    assert update_margin(0.6, 0.9, p) == pytest.approx(0.6 / 1.1)
    assert update_margin(0.6, 0.6, p) == 0.6
    assert update_margin(0.6, 0.5, p) == 0.6 and update_margin(0.6, 0.75, p) == 0.6
    assert update_margin(1.95, 0.0, p) == p.margin_max
    assert update_margin(0.051, 1.0, p) == p.margin_min


def test_params_are_validated() -> None:
    with pytest.raises(ValueError, match="yield_min"):
        TripletParams(yield_min=0.8, yield_max=0.7)
    with pytest.raises(ValueError, match="extra"):
        TripletParams(momentum=0.9)  # type: ignore[call-arg]
    p = TripletParams()
    assert (p.d, p.batch_size, p.lr, p.margin) == (64, 84, 5e-4, 0.6)
    assert (p.miner_momentum, p.critical_yield, p.yield_min, p.yield_max) == (
        0.99,
        0.5,
        0.5,
        0.75,
    )
    assert (p.translate, p.noise_sigma, p.val_fraction) == (0.015, 0.0025, 0.25)


# --- augmentation ----------------------------------------------------------------------------


def test_euler_rotations_are_rotations() -> None:
    rng = np.random.default_rng(0)
    r = euler_rotations(rng.uniform(-np.pi, np.pi, (20, 3)))
    np.testing.assert_allclose(
        r @ r.transpose(0, 2, 1), np.broadcast_to(np.eye(3), r.shape), atol=1e-12
    )
    np.testing.assert_allclose(np.linalg.det(r), 1.0)
    z90 = euler_rotations(np.array([0.0, 0.0, np.pi / 2]))
    np.testing.assert_allclose(z90 @ [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], atol=1e-12)


def test_global_rotation_is_shared_by_a_triplet() -> None:
    data = _triplets(8, 64)
    data[:, 1] = data[:, 0]  # anchor == positive
    only_global = TripletParams(local_rot_deg=0.0, translate=0.0, noise_sigma=0.0, crop_spheres=0)
    out = augment_triplets(data, only_global, np.random.default_rng(0))
    assert out.shape == data.shape and out.dtype == np.float32
    np.testing.assert_array_equal(out[:, 0], out[:, 1])
    np.testing.assert_allclose(
        np.linalg.norm(out, axis=-1), np.linalg.norm(data, axis=-1), rtol=1e-5, atol=1e-6
    )
    assert np.abs(out - data).max() > 0.1  # rotated
    full = augment_triplets(data, TripletParams(), np.random.default_rng(0))
    assert np.abs(full[:, 0] - full[:, 1]).max() > 0.0  # individual parts differ


def test_edge_crop_resamples_from_the_patch_near_its_edge() -> None:
    rng = np.random.default_rng(2)
    patches = _disc(rng, 40, 256, 0.0).astype(np.float32)
    params = TripletParams(crop_spheres=3)
    out = edge_crop(patches, params, np.random.default_rng(0))
    assert out.shape == patches.shape and out.dtype == np.float32
    changed = 0
    for a, b in zip(patches, out, strict=True):
        rows_a = {tuple(r) for r in a}
        assert {tuple(r) for r in b} <= rows_a  # every point is one of the patch's own
        gone = np.array(sorted(rows_a - {tuple(r) for r in b}))
        if gone.size:
            changed += 1
            limit = params.crop_edge * np.linalg.norm(a, axis=1).max() - params.crop_radius_max
            assert np.linalg.norm(gone, axis=1).min() >= limit - 1e-6  # cut near the edge
    assert 15 <= changed < 40  # 0..3 spheres per patch: about 3/4 of the patches are cut


# --- training, determinism, checkpoints ----------------------------------------------------


def test_short_training_separates_bumps_from_flat_patches() -> None:
    _, history = train_extractor(_triplets(96, 128, seed=0), LEARN, progress=False)
    assert len(history) == LEARN.epochs
    assert {r["margin"] for r in history} == {LEARN.margin}
    first, last = history[0], history[-1]
    assert last["val_loss"] < first["val_loss"] - 0.2
    assert last["val_accuracy"] > 0.9
    for key in ("train_loss", "val_loss", "val_accuracy", "margin", "yield", "seconds"):
        assert np.isfinite(last[key])


def test_same_seed_gives_identical_weights(
    tiny_run: tuple[PatchEncoder, list[dict[str, float]], np.ndarray],
) -> None:
    model, history, data = tiny_run
    again, history2 = train_extractor(data, TINY, progress=False)
    for key, value in model.state_dict().items():
        assert torch.equal(value, again.state_dict()[key]), key
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in history]
    assert strip == [{k: v for k, v in r.items() if k != "seconds"} for r in history2]
    other, _ = train_extractor(data, TINY.model_copy(update={"seed": 6}), progress=False)
    key = "sa1.conv_blocks.0.0.weight"
    assert not torch.equal(model.state_dict()[key], other.state_dict()[key])


def test_save_load_round_trip(
    tiny_run: tuple[PatchEncoder, list[dict[str, float]], np.ndarray], tmp_path: Path
) -> None:
    model, history, data = tiny_run
    path = tmp_path / "ckpt" / "extractor.pt"
    save_extractor(path, model, TINY, {"history": history, "source": "test"})
    assert sorted(p.name for p in path.parent.iterdir()) == ["extractor.pt"]  # no temp left
    raw = torch.load(path, weights_only=True)
    assert set(raw) == {"state_dict", "config", "params", "meta"}
    loaded, info = load_extractor(path)
    assert not loaded.training
    assert info["params"] == TINY and info["d"] == TINY.d
    assert info["config"] == preset("compact") and info["meta"]["source"] == "test"
    patches = data[:4].reshape(12, 128, 3)
    np.testing.assert_array_equal(embed(model, patches), embed(loaded, patches))
    val = data[:6]
    assert evaluate(model, val, 0.6) == evaluate(loaded, val, 0.6)


def test_load_rejects_missing_and_foreign_files(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not found"):
        load_extractor(tmp_path / "none.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}, "meta": {}}, foreign)
    for bad in (garbage, foreign):
        with pytest.raises(ValueError, match="not a COSARAD extractor checkpoint") as info:
            load_extractor(bad)
        assert "\n" not in str(info.value)
    with pytest.raises(TypeError, match="JSON"):
        save_extractor(tmp_path / "x.pt", PatchEncoder(preset("compact"), 4), TINY, {"a": object()})
    assert not list(tmp_path.glob(f"{TEMP_PREFIX}*"))


def test_train_extractor_checks_its_input() -> None:
    with pytest.raises(ValueError, match=r"\(T, 3, P, 3\)"):
        train_extractor(np.zeros((4, 2, 64, 3), np.float32), TINY, progress=False)
    with pytest.raises(TypeError, match="float32"):
        train_extractor(np.zeros((4, 3, 64, 3)), TINY, progress=False)
    with pytest.raises(ValueError, match="split"):
        train_extractor(np.zeros((1, 3, 64, 3), np.float32), TINY, progress=False)


def test_contrastive_imports_without_torch() -> None:
    code = "import sys, detectors.cosarad.contrastive\nprint('torch' in sys.modules)\n"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False"
