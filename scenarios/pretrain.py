"""``twincell pretrain``: simulate a pretraining scenario, then train a backbone on its pairs.

The renders are ordinary run directories of the pretraining scenarios (by default
``assets/pretrain/sim-ssl.yaml``, pyrender "real", and ``sim-ssl-blender.yaml``, Cycles
"real": normal parts of five families, none of them a bundled evaluation's test family),
written by the engine's one run-directory writer, so an interrupted pretraining resumes
its simulation and the pairs can be looked at like any run.
The training itself is ``detectors.pretrain`` (dense VICReg across real/twin pairs).
"""

from __future__ import annotations

import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from scenarios.interfaces import SpecError

_PRETRAIN_DIR = Path(__file__).resolve().parents[1] / "assets" / "pretrain"
#: The scenarios whose renders the shipped checkpoint was trained on.
DEFAULT_SCENARIOS: tuple[Path, ...] = (
    _PRETRAIN_DIR / "sim-ssl.yaml",
    _PRETRAIN_DIR / "sim-ssl-blender.yaml",
)


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


def load_pairs(renders: Sequence[Path]) -> tuple[np.ndarray, np.ndarray]:
    """(N, H, W, 3) uint8 real and twin images of every captured normal pair in run
    directories (a scenario with defective parts gives only its normal ones: the backbone
    never sees a defect)."""
    from scenarios.rundir import load_samples

    real, twin = [], []
    for d in renders:
        samples = [s for s in load_samples(d) if s.label == 0]
        if not samples:
            raise SpecError(f"{d}: no captured normal pairs to pretrain on")
        real += [s.real.rgb for s in samples]
        twin += [s.twin.rgb for s in samples]
    shapes = {r.shape for r in real}
    if len(shapes) > 1:
        raise SpecError(f"pretraining scenarios must share one camera size, got {sorted(shapes)}")
    return np.stack(real), np.stack(twin)


def pretrain(
    scenarios: Sequence[str | Path],
    out: Path,
    renders: Path,
    params: Any,
    workers: int = 1,
    progress: bool = True,
) -> dict[str, Any]:
    """Simulate each of ``scenarios`` into ``renders/<name>-seed<seed>`` (resuming), train on
    all their pairs with ``params`` (``detectors.pretrain.PretrainParams``), save the trunk
    to ``out``; returns the meta record saved with it."""
    from tqdm import tqdm

    from detectors.pretrain import embedding_spread, save_checkpoint, train
    from scenarios.engine import check_out_dir, run_scenario
    from scenarios.spec import load_scenario

    check_checkpoint_path(out)
    scs = [load_scenario(str(s)) for s in scenarios]  # all checked before any work
    names = [f"{sc.name}-seed{sc.seed}" for sc in scs]
    if len(set(names)) != len(names):
        raise SpecError(f"--scenario: each scenario may appear once, got {names}")
    for sc, name in zip(scs, names, strict=True):
        check_out_dir(renders / name, sc)  # every render directory usable before any work
    t0 = time.perf_counter()
    for sc, name in zip(scs, names, strict=True):
        run_scenario(sc, renders / name, workers=workers, progress=progress)
    real, twin = load_pairs([renders / name for name in names])
    if len(real) < params.batch_size:
        raise SpecError(
            f"--batch-size: {params.batch_size} is more than the {len(real)} normal pairs "
            "the scenarios gave; lower it or render more parts"
        )
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
        "scenarios": [{"name": sc.name, "seed": sc.seed, "digest": sc.digest()} for sc in scs],
        "pairs": int(len(real)),
        "image_shape": list(real.shape[1:]),
        "history": history,
        "seconds": {"simulate": round(t_sim, 1), "train": round(t_train, 1)},
        "layer3_feature_std": embedding_spread(state, params.backbone, probe),
    }
    save_checkpoint(out, state, meta)
    return meta
