"""Does a pretrained backbone beat ``weights: random``? PaDiM and AVATAR on one set of pairs.

Usage: .venv/bin/python benchmarks/bench_pretrained.py [--scenario S] [--weights A.pth B.pth]
       [--out runs/bench-pretrained] [--seeds 0 1 2]

The scenario (default ``benchmarks/scenarios/ssl-validation.yaml``: families of the
pretraining scenario, whose normal parts only the backbone saw, tested with defects) is
simulated once into ``<out>/<scenario>-seed<seed>`` (rerunning resumes); then PaDiM and
AVATAR on ``resnet18_compact`` are fitted and scored once per weights: ``random`` and each
checkpoint given (default: the shipped one, ``auto``). A bundled scenario name works too
(``r2t-zero-shot``: the held-out evaluation). Prints the seven metrics per detector and
weights, and the mean over seeds when several are given.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

os.environ.setdefault("PYOPENGL_PLATFORM", "egl")

from scenarios.engine import detect, run_scenario  # noqa: E402
from scenarios.metrics import METRIC_NAMES  # noqa: E402
from scenarios.rundir import sample_records  # noqa: E402
from scenarios.spec import DetectorSpec, load_scenario  # noqa: E402

DEFAULT_SCENARIO = Path(__file__).resolve().parent / "scenarios" / "ssl-validation.yaml"


def _label(weights: str) -> str:
    return (
        "random"
        if weights == "random"
        else ("shipped" if weights == "auto" else Path(weights).stem)
    )


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--scenario", default=str(DEFAULT_SCENARIO))
    ap.add_argument("--weights", nargs="+", default=["auto"], help="checkpoints ('auto': shipped)")
    ap.add_argument("--out", default="runs/bench-pretrained")
    ap.add_argument("--seeds", type=int, nargs="+", default=[None])
    ap.add_argument("--workers", type=int, default=1)
    args = ap.parse_args()

    weights = ["random", *args.weights]
    rows: dict[tuple[str, str], list[dict[str, float]]] = {}
    for seed in args.seeds:
        sc = load_scenario(args.scenario, seed=seed)
        sim_dir = Path(args.out) / f"{sc.name}-seed{sc.seed}"
        run_scenario(sc, sim_dir, workers=args.workers, progress=True)
        records = list(sample_records(sim_dir / "samples.jsonl"))
        specs = []
        for i, w in enumerate(weights):
            for det in ("padim", "avatar"):
                label = f"{det}-w{i}-{_label(w)}"
                specs.append(
                    DetectorSpec(
                        name=det,
                        label=label,
                        params={"backbone": "resnet18_compact", "weights": w},
                    )
                )
        det_sc = sc.model_copy(update={"detectors": tuple(specs)})
        metrics = detect(det_sc, sim_dir, records, progress=False).metrics
        for spec in specs:
            key = (spec.name, _label(spec.params["weights"]))
            rows.setdefault(key, []).append(metrics[spec.key])
        print(
            f"\n{sc.name} seed {sc.seed}: {sum(r['split'] == 'test' for r in records)} test pairs"
        )
        _table({k: [v[-1]] for k, v in rows.items()})
    if len(args.seeds) > 1:
        print(f"\nmean over seeds {args.seeds}")
        _table(rows)


def _table(rows: dict[tuple[str, str], list[dict[str, float]]]) -> None:
    print(f"{'detector':<8} {'weights':<24} " + " ".join(f"{m:>8}" for m in METRIC_NAMES))
    for (det, w), ms in rows.items():
        cells = [100 * float(np.nanmean([m[k] for m in ms])) for k in METRIC_NAMES]
        print(f"{det:<8} {w:<24} " + " ".join(f"{c:8.1f}" for c in cells))


if __name__ == "__main__":
    main()
