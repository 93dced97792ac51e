"""``twincell train cosarad``: simulate labelled parts, then train COSARAD's extractors.

The simulator is what the COSARAD paper lacked: an unlimited source of labelled defective
parts. A training scenario (by default ``assets/cosarad/train.yaml``: seven families, normal
and defective parts with geometric defects, their clouds fused from the eye-in-hand cell's
depth sensor) is simulated into an ordinary run directory (so an interrupted training
resumes its simulation, and the parts can be looked at like any run). Its families are
split into ``folds`` folds (sorted by name, family i in fold i mod folds); fold k's
checkpoint ``fold<k>.pth`` is trained on the triplets of every family *not* in fold k, so
COSARAD can score each family with an extractor that never saw it (the paper's
category-disjoint cross-validation). ``folds: 1`` trains one checkpoint on every family.
"""

from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from scenarios.interfaces import SpecError

_ASSETS = Path(__file__).resolve().parents[1] / "assets"
#: Points per patch (COSARAD's default ``patch_points``, the paper's 512).
PATCH_POINTS = 512
#: The training scenario of the shipped extractors.
DEFAULT_SCENARIO = _ASSETS / "cosarad" / "train.yaml"


def check_out_directory(out: Path) -> None:
    """Refuse an ``--out`` that exists as a file or holds checkpoints, before any work."""
    if out.suffix == ".pth":
        raise SpecError(f"--out: names a directory for the fold checkpoints, got {out.name!r}")
    if out.exists() and (not out.is_dir() or any(out.glob("*.pth"))):
        raise SpecError(f"--out {out}: exists with checkpoints; choose another or delete it")


def fold_families(families: list[str], folds: int) -> list[list[str]]:
    """The families held out by each fold: sorted, family i in fold i mod ``folds``."""
    names = sorted(families)
    if folds > len(names):
        raise SpecError(f"--folds: {folds} folds but the scenario has {len(names)} families")
    return [names[k::folds] for k in range(folds)]


def train_cosarad(
    scenario: str | Path,
    out: Path,
    renders: Path,
    params: Any,
    folds: int = 2,
    radius_mm: float = 6.0,
    pairs: int = 6,
    centres: int = 16,
    workers: int = 1,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Simulate ``scenario`` into ``renders/<name>-seed<seed>`` (resuming), make triplets
    of its parts, train one extractor per fold (``detectors.cosarad.contrastive``) and save
    ``out/fold<k>.pth``; returns the metas saved. ``pairs`` pairs of normal parts and
    ``centres`` patch centres per defective part make its triplets."""
    from detectors.cosarad.contrastive import save_extractor, train_extractor
    from detectors.cosarad.triplets import make_triplets
    from scenarios.engine import check_out_dir, run_scenario
    from scenarios.rundir import load_part, part_records
    from scenarios.spec import load_scenario

    check_out_directory(out)
    sc = load_scenario(str(scenario))
    if not sc.cell.depth.points:
        raise SpecError("--scenario: its cell has no depth sensor (cell.depth.points: false)")
    run_dir = renders / f"{sc.name}-seed{sc.seed}"
    check_out_dir(run_dir, sc)
    if folds > len(sc.part.families):
        raise SpecError(
            f"--folds: {folds} folds but the scenario has {len(sc.part.families)} families"
        )
    t0 = time.perf_counter()
    run_scenario(sc, run_dir, workers=workers, progress=progress)
    t_sim = time.perf_counter() - t0
    t0 = time.perf_counter()
    parts = [load_part(run_dir, r) for r in part_records(run_dir)]
    families = sorted({p.category for p in parts})
    held_out = fold_families(families, folds)
    try:
        triplets = make_triplets(
            parts,
            radius_m=radius_mm / 1000.0,
            patch_points=PATCH_POINTS,
            centres=centres,
            pairs=pairs,
            seed=params.seed,
            progress=progress,
        )
    except ValueError as exc:  # no defect points, or too few normal parts of a family
        raise SpecError(f"--scenario {sc.name}: {exc}") from None
    t_trip = time.perf_counter() - t0
    metas = []
    out.mkdir(parents=True, exist_ok=True)
    for k, fold in enumerate(held_out):
        trained = [f for f in families if f not in fold] if folds > 1 else families
        keep = np.isin(triplets.families, trained)
        if not keep.any():
            raise SpecError(f"fold {k}: no triplets of the families {trained}")
        t0 = time.perf_counter()
        model, history = train_extractor(triplets.patches[keep], params, progress=progress)
        meta = {
            "made_by": "twincell train cosarad",
            "command": shlex.join(["twincell", *sys.argv[1:]]) if sys.argv else "",
            "method": "COSARAD triplet loss with the EMA miner (detectors/cosarad/contrastive.py)",
            "families": trained,
            "held_out": fold if folds > 1 else [],
            "fold": k,
            "folds": folds,
            "radius_mm": radius_mm,
            "patch_points": PATCH_POINTS,
            "triplet_pairs": pairs,
            "triplet_centres": centres,
            "scenario": {"name": sc.name, "seed": sc.seed, "digest": sc.digest()},
            "triplets": int(keep.sum()),
            "history": history,
            "seconds": {
                "simulate": round(t_sim, 1),
                "triplets": round(t_trip, 1),
                "train": round(time.perf_counter() - t0, 1),
            },
        }
        save_extractor(out / f"fold{k}.pth", model, params, meta)
        metas.append(meta)
    return metas
