"""``twincell pretrain``: simulate a pretraining scenario, then train a backbone on its pairs.

The renders are an ordinary run directory of the pretraining scenario (by default
``assets/pretrain/sim-ssl.yaml``: normal parts of five families, none of them a bundled
evaluation's test family), written by the engine's one run-directory writer, so an
interrupted pretraining resumes its simulation and the pairs can be looked at like any run.
The training itself is ``detectors.pretrain`` (dense VICReg across real/twin pairs).
"""

from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from scenarios.interfaces import SpecError

#: The scenario whose renders the shipped checkpoint was trained on.
DEFAULT_SCENARIO = Path(__file__).resolve().parents[1] / "assets" / "pretrain" / "sim-ssl.yaml"


def check_checkpoint_path(out: Path) -> None:
    """Refuse an ``--out`` that is not a new ``.pth`` file in a usable place, before work."""
    if out.suffix != ".pth":
        raise SpecError(f"--out: must name a .pth file, got {out.name!r}")
    if out.exists():
        raise SpecError(f"--out {out}: exists; choose another file or delete it")
    parent = out.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise SpecError(f"--out {out}: {parent} is not a directory")


def load_pairs(renders: Path) -> tuple[np.ndarray, np.ndarray]:
    """(N, H, W, 3) uint8 real and twin images of every captured pair in a run directory."""
    from scenarios.rundir import load_samples

    samples = load_samples(renders)
    if not samples:
        raise SpecError(f"{renders}: no captured pairs to pretrain on")
    real = np.stack([s.real.rgb for s in samples])
    twin = np.stack([s.twin.rgb for s in samples])
    return real, twin


def pretrain(
    scenario: str | Path,
    out: Path,
    renders: Path,
    params: Any,
    workers: int = 1,
    progress: bool = True,
) -> dict[str, Any]:
    """Simulate ``scenario`` into ``renders`` (resuming), train on its pairs with ``params``
    (``detectors.pretrain.PretrainParams``), save the trunk to ``out``; returns the meta
    record saved with it."""
    from tqdm import tqdm

    from detectors.pretrain import embedding_spread, save_checkpoint, train
    from scenarios.engine import run_scenario
    from scenarios.spec import load_scenario

    check_checkpoint_path(out)
    sc = load_scenario(str(scenario))
    t0 = time.perf_counter()
    run_scenario(sc, renders, workers=workers, progress=progress)
    real, twin = load_pairs(renders)
    t_sim = time.perf_counter() - t0
    t0 = time.perf_counter()
    steps = tqdm(total=1, desc="pretrain", unit="step", disable=not progress)

    def tick(step: int, total: int, losses: dict[str, float]) -> None:
        steps.total = total
        steps.update(1)
        steps.set_postfix(loss=f"{losses['loss']:.3f}", inv=f"{losses['invariance']:.3f}")

    try:
        state, history = train(real, twin, params, progress=tick)
    finally:
        steps.close()
    t_train = time.perf_counter() - t0
    rng = np.random.default_rng(0)
    probe = [real[i] for i in rng.choice(len(real), size=min(16, len(real)), replace=False)]
    meta = {
        "made_by": "twincell pretrain",
        "command": shlex.join(["twincell", *sys.argv[1:]]) if sys.argv else "",
        "method": "dense VICReg across pose-matched real/twin pairs (detectors/pretrain.py)",
        "params": params.model_dump(mode="json"),
        "scenario": {"name": sc.name, "seed": sc.seed, "digest": sc.digest()},
        "pairs": int(len(real)),
        "image_shape": list(real.shape[1:]),
        "history": history,
        "seconds": {"simulate": round(t_sim, 1), "train": round(t_train, 1)},
        "layer3_feature_std": embedding_spread(state, params.backbone, probe),
    }
    save_checkpoint(out, state, meta)
    return meta
