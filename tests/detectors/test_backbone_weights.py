"""Backbone weights: found by their official names in the cache directories, loaded from a
path, or seeded random; refused in one line (exit 2) when missing or not fitting."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from detectors.backbones.weights import (
    WEIGHTS_ENV,
    MissingWeights,
    build_backbone,
    load_backbone,
    resolve_weights,
    search_dirs,
)
from scenarios.interfaces import EXIT_INPUT, SpecError


@pytest.fixture
def no_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Empty cache directories: nothing of the machine's own leaks into a test."""
    monkeypatch.delenv(WEIGHTS_ENV, raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    return tmp_path


def _checkpoint(path: Path, seed: int = 3) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    state = build_backbone("resnet18").state_dict()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return state


def test_missing_weights_say_which_file_to_put_where(no_cache: Path) -> None:
    with pytest.raises(MissingWeights) as err:
        resolve_weights("resnet18", "auto", where="detectors.3.params.weights")
    msg = str(err.value)
    assert msg.startswith("detectors.3.params.weights: no weights for resnet18")
    assert "resnet18-f37072fd.pth" in msg and str(search_dirs()[-2]) in msg
    assert "resnet18_compact" in msg  # the offline alternative
    assert "\n" not in msg and err.value.exit_code == EXIT_INPUT


def test_official_name_is_found_in_torch_hub_cache_and_in_twincell_weights(
    no_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub = no_cache / "torch-home" / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    state = _checkpoint(hub)
    model, info = load_backbone("resnet18")
    assert info.source == "file" and info.path == str(hub) and len(info.sha256) == 64
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    # $TWINCELL_WEIGHTS is searched first.
    mine = no_cache / "mine" / "resnet18-f37072fd.pth"
    _checkpoint(mine, seed=4)
    monkeypatch.setenv(WEIGHTS_ENV, str(mine.parent))
    assert resolve_weights("resnet18", "auto") == mine
    # The wide ResNet's V2 release is accepted under its own name.
    v2 = no_cache / "torch-home" / "hub" / "checkpoints" / "wide_resnet50_2-9ba9bcbe.pth"
    v2.write_bytes(b"")
    assert resolve_weights("wide_resnet50_2", "auto") == v2


def test_a_checkpoint_path_that_does_not_fit_is_refused_naming_the_key(no_cache: Path) -> None:
    path = no_cache / "bad.pth"
    state = _checkpoint(path)
    state["fc.weight"] = torch.zeros(10, 512)
    torch.save(state, path)
    with pytest.raises(SpecError, match=r"fc.weight has shape \(10, 512\), want \(1000, 512\)"):
        load_backbone("resnet18", str(path))
    del state["fc.weight"]
    torch.save(state, path)
    with pytest.raises(SpecError, match="missing key fc.weight"):
        load_backbone("resnet18", str(path))
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(SpecError, match="not a torch checkpoint"):
        load_backbone("resnet18", str(path))
    with pytest.raises(MissingWeights, match="no such checkpoint file"):
        load_backbone("resnet18", str(no_cache / "absent.pth"))


def test_random_weights_are_seeded(no_cache: Path) -> None:
    a, info = load_backbone("resnet18", "random", seed=1)
    b, _ = load_backbone("resnet18", "random", seed=1)
    c, _ = load_backbone("resnet18", "random", seed=2)
    assert info.to_json() == {"backbone": "resnet18", "source": "random", "seed": 1}
    w = "layer1.0.conv1.weight"
    assert torch.equal(a.state_dict()[w], b.state_dict()[w])
    assert not torch.equal(a.state_dict()[w], c.state_dict()[w])


def test_an_unknown_backbone_lists_the_known_ones() -> None:
    with pytest.raises(SpecError, match="allowed: resnet18"):
        resolve_weights("resnet81", "random")


def test_shipped_checkpoints_are_searched_last(
    no_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import detectors.backbones.weights as weights

    shipped = no_cache / "shipped"
    monkeypatch.setattr(weights, "shipped_dir", lambda: shipped)
    assert search_dirs()[-1] == shipped
    torch.manual_seed(5)
    state = build_backbone("resnet18_compact").state_dict()
    shipped.mkdir()
    torch.save(
        {"state_dict": state, "meta": {"made_by": "test"}},
        shipped / "resnet18_compact-twincell-ssl.pth",
    )
    model, info = load_backbone("resnet18_compact")
    assert info.source == "file" and info.path == str(shipped / "resnet18_compact-twincell-ssl.pth")
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    # A user's file of the same name in the cache wins over the shipped one.
    mine = no_cache / "torch-home" / "hub" / "checkpoints" / "resnet18_compact-twincell-ssl.pth"
    mine.parent.mkdir(parents=True)
    torch.save(state, mine)
    assert resolve_weights("resnet18_compact", "auto") == mine
