"""Where a backbone's weights come from, and loading them: nothing is ever downloaded.

A detector asks for a backbone with ``weights``:

- ``"auto"`` (the default): the backbone's official checkpoint file, found by its official
  name (``detectors.backbones.BACKBONES``) in, in turn, the directory named by
  ``$TWINCELL_WEIGHTS``, then torch's hub cache (``$TORCH_HOME/hub/checkpoints``, by
  default ``~/.cache/torch/hub/checkpoints``), where ``torch.hub`` puts official downloads,
  then the checkpoints that ship with twincell (``assets/weights/``: the self-supervised
  ``resnet18_compact``, made by ``twincell pretrain``; see ``assets/weights/README.md``).
  Missing, it is refused before any work, in one line saying which file to put where
  (``MissingWeights``, exit 2).
- a path to a checkpoint (a state_dict saved by ``torch.save``, official or trained by
  twincell itself), loaded with ``strict=True``: a file whose keys or shapes do not match
  the architecture is refused, naming the first mismatch.
- ``"random"``: the architecture's own initialisation under ``torch.manual_seed(seed)``, for
  tests and as the floor a pretrained backbone must beat.

``load_backbone`` returns the model in eval mode with its parameters frozen, and a
``WeightsInfo`` saying which weights it used (source, path, SHA-256 of the file): every run
records it.
"""

from __future__ import annotations

import hashlib
import importlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from detectors.backbones import BACKBONES
from scenarios.interfaces import SpecError, allowed

#: Environment variable naming a directory of checkpoints, searched first.
WEIGHTS_ENV = "TWINCELL_WEIGHTS"


class MissingWeights(SpecError):
    """A backbone's weights are not where they were looked for; the message says which file
    to put where (exit 2: the scenario or the machine needs changing, not the code)."""


@dataclass(frozen=True)
class WeightsInfo:
    """Which weights a backbone was built with: ``source`` is "file" or "random"; ``path``
    and ``sha256`` for a file, ``seed`` for random weights."""

    backbone: str
    source: str
    path: str = ""
    sha256: str = ""
    seed: int = 0

    def to_json(self) -> dict[str, Any]:
        """The record a run keeps: {backbone, source, path, sha256} or {..., seed}."""
        out: dict[str, Any] = {"backbone": self.backbone, "source": self.source}
        if self.source == "file":
            out.update(path=self.path, sha256=self.sha256)
        else:
            out["seed"] = self.seed
        return out


def shipped_dir() -> Path:
    """The directory of the checkpoints that ship with twincell (``assets/weights``)."""
    import assets

    return Path(assets.__file__).resolve().parent / "weights"


def search_dirs() -> list[Path]:
    """The directories searched for checkpoints by file name, in order (the shipped ones
    last, so a user's own file of the same name wins)."""
    dirs = []
    if os.environ.get(WEIGHTS_ENV):
        dirs.append(Path(os.environ[WEIGHTS_ENV]).expanduser())
    torch_home = os.environ.get("TORCH_HOME")
    if torch_home:
        dirs.append(Path(torch_home).expanduser() / "hub" / "checkpoints")
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        cache = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
        dirs.append(cache / "torch" / "hub" / "checkpoints")
    dirs.append(shipped_dir())
    return dirs


def _spec(backbone: str) -> Any:
    if backbone not in BACKBONES:
        raise SpecError(f"backbone {backbone!r}: unknown; {allowed(backbone, list(BACKBONES))}")
    return BACKBONES[backbone]


def resolve_weights(backbone: str, weights: str, where: str = "weights") -> Path | None:
    """The checkpoint file ``weights`` names for ``backbone`` (None for "random"); raises
    ``MissingWeights`` with what to do when it is not there. ``where`` is the field path
    used in messages (e.g. ``detectors.0.params.weights``)."""
    spec = _spec(backbone)
    if weights == "random":
        return None
    if weights == "auto":
        for d in search_dirs():
            for name in spec.files:
                if (d / name).is_file():
                    return d / name
        if spec.shipped:
            raise MissingWeights(
                f"{where}: the checkpoint {spec.files[0]} that ships with twincell is missing "
                f"from {shipped_dir()}: reinstall twincell, or make one with `twincell "
                f"pretrain --out my.pth` and give its path (or weights: random)"
            )
        dirs = " or ".join(str(d) for d in search_dirs()[:-1])
        raise MissingWeights(
            f"{where}: no weights for {backbone}: put {spec.files[0]} in {dirs} (or give "
            f"a checkpoint path, weights: random, or backbone: resnet18_compact, whose "
            f"self-supervised weights ship with twincell)"
        )
    path = Path(weights).expanduser()
    if not path.is_file():
        raise MissingWeights(f"{where}: {path}: no such checkpoint file for {backbone}")
    return path


def check_weights(backbone: str, weights: str) -> None:
    """For a detector's parameter model: raise ValueError (which pydantic reports under the
    detector's field path) when ``weights`` cannot be found, so a run stops at load."""
    try:
        resolve_weights(backbone, weights, where="weights")
    except MissingWeights as exc:
        raise ValueError(str(exc)) from None


def describe_weights(backbone: str, weights: str, seed: int = 0) -> dict[str, Any]:
    """The ``WeightsInfo`` record ``load_backbone`` would give, without building the model
    (a run compares it with the one its earlier predictions were made with)."""
    path = resolve_weights(backbone, weights)
    if path is None:
        return WeightsInfo(backbone, "random", seed=seed).to_json()
    return WeightsInfo(backbone, "file", str(path), file_sha256(path)).to_json()


def file_sha256(path: Path) -> str:
    """SHA-256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def build_backbone(backbone: str) -> Any:
    """A fresh, randomly initialised instance of ``backbone`` (imports torch)."""
    module, func = _spec(backbone).builder.split(":")
    return getattr(importlib.import_module(module), func)()


def load_backbone(
    backbone: str, weights: str = "auto", seed: int = 0, where: str = "weights"
) -> tuple[Any, WeightsInfo]:
    """``backbone`` with ``weights`` ("auto", "random" or a path), in eval mode and frozen,
    and the record of which weights it has. Raises ``MissingWeights`` or ``SpecError``."""
    import torch

    path = resolve_weights(backbone, weights, where)
    if path is None:
        torch.manual_seed(seed)
        model = build_backbone(backbone)
        info = WeightsInfo(backbone, "random", seed=seed)
    else:
        model = build_backbone(backbone)
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # a file torch cannot read as a checkpoint
            raise SpecError(
                f"{where}: {path}: not a torch checkpoint ({type(exc).__name__})"
            ) from None
        if isinstance(state, dict) and "state_dict" in state and len(state) < 8:
            state = state["state_dict"]  # a training checkpoint wrapping the weights
        mismatch = _first_mismatch(model.state_dict(), state)
        if mismatch:
            raise SpecError(f"{where}: {path} does not fit {backbone}: {mismatch}")
        model.load_state_dict(state, strict=True)
        info = WeightsInfo(backbone, "file", str(path), file_sha256(path))
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, info


def _first_mismatch(expected: dict[str, Any], given: Any) -> str:
    """The first key missing, unexpected or of the wrong shape, or ''."""
    if not isinstance(given, dict):
        return f"holds a {type(given).__name__}, not a state_dict"
    for k, v in expected.items():
        if k not in given:
            return f"missing key {k}"
        shape = tuple(getattr(given[k], "shape", ()))
        if shape != tuple(v.shape):
            return f"{k} has shape {shape}, want {tuple(v.shape)}"
    for k in given:
        if k not in expected:
            return f"unexpected key {k}"
    return ""
