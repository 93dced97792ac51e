"""The ``twincell`` command line: parses arguments and calls library functions, nothing else."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from importlib import metadata
from pathlib import Path
from typing import Any, NoReturn

from scenarios.interfaces import (
    EXIT_CELLS_FAILED,
    EXIT_ERROR,
    EXIT_EXPECTATION,
    EXIT_HARDWARE,
    EXIT_INPUT,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_UNSCORED,
    STOP,
    SpecError,
    TwincellError,
)

MAX_WORKERS = 64

DESCRIPTION = """\
twincell: simulate a robotic visual-inspection cell, run anomaly detectors on pose-matched
real/twin image pairs, and score them.

A scenario (a bundled name or a YAML file) describes the cell, the part and its defects,
the pose errors and the detectors. `twincell run` writes one run directory: images and
masks per sample, predictions, metrics.json and report.html."""

EPILOG = f"""\
examples:
  twincell list                              bundled scenarios
  twincell validate my.yaml                  check a scenario file, run nothing
  twincell run quickstart --out runs/qs      run; rerun the same command to resume
  twincell check tiny --expect "ssim_residual.p_auroc >= 0.8" --junit gate.xml
                                             CI gate: run, then judge the metrics
  twincell train cosarad --out my-extractors train COSARAD's 3D extractors (one per fold)
  twincell study jitter-sweep --workers 2   a robustness study: a grid of runs, a table, plots
  twincell run my-ur-cell.yaml --dry-run     a hardware cell: plan and render twins, no motion
  twincell export runs/qs --format mvtec --out qs-mvtec
                                             a run as an MVTec AD (or BOP, COCO) dataset

exit codes:
  {EXIT_OK}    success
  {EXIT_ERROR}    unexpected error inside twincell (please report it)
  {EXIT_INPUT}    bad input: scenario file, arguments or --out; nothing was written
  {EXIT_UNSCORED}    the run completed but cannot be scored (no test pair, one class only, or
       recorded without ground truth); the report says why
  {EXIT_EXPECTATION}    twincell check: an expectation did not hold (one line each says why)
  {EXIT_CELLS_FAILED}    twincell study: done, but some cells failed (listed); rerun to retry them
  {EXIT_HARDWARE}    the hardware stopped the run (link lost, protective stop); finished samples
       are kept, rerun to resume
  {EXIT_INTERRUPTED}  interrupted (Ctrl-C); finished samples are kept, rerun to resume"""


def _version() -> str:
    try:
        return metadata.version("twincell")
    except metadata.PackageNotFoundError:  # running from a source tree without install
        return "unknown"


def _cmd_list(args: argparse.Namespace) -> int:
    from scenarios.spec import bundled_scenarios, load_scenario

    names = list(bundled_scenarios())
    width = max(map(len, names), default=0)
    for name in names:
        sc = load_scenario(name)
        print(f"{name:<{width}}  {sc.description}")
    return EXIT_OK


def _cmd_validate(args: argparse.Namespace) -> int:
    from scenarios.engine import plan_parts, planned_view_ids
    from scenarios.spec import load_scenario

    sc = load_scenario(args.scenario, seed=args.seed)
    parts, views = len(plan_parts(sc)), len(planned_view_ids(sc))
    print(
        f"ok: {sc.name} (seed {sc.seed}, digest {sc.digest()}): {parts} parts x {views} "
        f"viewpoints = {parts * views} planned pairs; detectors: "
        + ", ".join(d.key for d in sc.detectors)
    )
    return EXIT_OK


def _cmd_run(args: argparse.Namespace) -> int:
    from scenarios.engine import run_scenario
    from scenarios.report import write_report
    from scenarios.spec import load_scenario

    if not 1 <= args.workers <= MAX_WORKERS:
        raise SpecError(f"--workers: must be >= 1 and <= {MAX_WORKERS}, got {args.workers}")
    sc = load_scenario(args.scenario, seed=args.seed)
    if args.dry_run:
        return _dry_run(sc, args)
    out = Path(args.out) if args.out is not None else Path("runs") / f"{sc.name}-seed{sc.seed}"
    manifest = run_scenario(
        sc, out, workers=args.workers, progress=not args.quiet, report=write_report
    )
    metrics = json.loads((out / "metrics.json").read_text())["detectors"]
    c = manifest["counts"]
    unlabelled = f"{c['test_unlabelled']} without ground truth, " if c["test_unlabelled"] else ""
    print(
        f"run: {out}  ({c['train']} train pairs, "
        f"{c['test_normal'] + c['test_anomalous'] + c['test_unlabelled']} "
        f"test pairs, {c['test_anomalous']} anomalous, {unlabelled}"
        f"{manifest['dropped_viewpoints']['count']} viewpoints dropped, "
        f"{manifest['failed_samples']['count']} failed, "
        f"{manifest['timings_s']['total']:.1f} s)"
    )
    for name, m in metrics.items():
        # A metric is undefined (null) when the test split lacks one class.
        cells = (f"{k} n/a" if v is None else f"{k} {v:.3f}" for k, v in m.items())
        print(f"  {name:<18} " + "  ".join(cells))
    print(f"report: {out / 'report.html'}")
    if manifest["status"] == "unscored":
        print(
            f"twincell: run complete but not scored: {manifest['unscored_reason']}; "
            f"see {out / 'report.html'}",
            file=sys.stderr,
        )
        return EXIT_UNSCORED
    return EXIT_OK


def _dry_run(sc: Any, args: argparse.Namespace) -> int:
    """``twincell run --dry-run``: plan a hardware scenario and render its twins, no motion."""
    if sc.cell.kind != "hardware":
        raise SpecError(
            f"--dry-run: plans a hardware cell without moving it; {sc.name} has cell.kind "
            f"{sc.cell.kind} (allowed: hardware)"
        )
    from scenarios.drivers.hardware import dry_run

    out = Path(args.out) if args.out is not None else Path("runs") / f"{sc.name}-dry-run"
    try:
        # An earlier dry run (its plan.json or twins/) is replaced; anything else is kept.
        ours = {"plan.json", "twins", "dry-run.png"}
        if out.exists() and (not out.is_dir() or any(p.name not in ours for p in out.iterdir())):
            raise SpecError(
                f"--out {out}: exists and holds something other than a dry run; choose "
                "another directory"
            )
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SpecError(f"--out {out}: cannot write there ({exc.strerror})") from None
    plan = dry_run(sc, out, progress=not args.quiet)
    n = len(plan["views"])
    print(f"dry run: {out}  ({n - plan['refused']} of {n} views planned, nothing moved)")
    for v in plan["views"]:
        if v["status"] == "refused":
            print(f"  {v['part_id']} view {v['view_id']}: refused: {v['reason']}")
    for reason in plan.get("home", {}).get("refused_on_the_way", []):
        print(f"  the way home: refused (a run would stop there): {reason}")
    print(f"twins: {out / 'dry-run.png'}")
    return EXIT_OK


def _cmd_export(args: argparse.Namespace) -> int:
    from scenarios.export import export_run

    summary = export_run(Path(args.run), args.format, Path(args.out), progress=not args.quiet)
    counts = ", ".join(
        f"{k.replace('_', ' ')} {v if not isinstance(v, list) else ' '.join(map(str, v))}"
        for k, v in summary.items()
        if k not in ("format", "out")
    )
    print(f"export: {args.out} ({args.format}): {counts}")
    return EXIT_OK


def _cmd_check(args: argparse.Namespace) -> int:
    import detectors
    from scenarios.engine import run_scenario
    from scenarios.gate import judge, parse_expectation, write_junit
    from scenarios.report import write_report
    from scenarios.spec import load_scenario

    if not 1 <= args.workers <= MAX_WORKERS:
        raise SpecError(f"--workers: must be >= 1 and <= {MAX_WORKERS}, got {args.workers}")
    sc = load_scenario(args.scenario, seed=args.seed)
    levels = {d.key: detectors.level(d.name) for d in sc.detectors}
    # The scenario's own expectations (checked when it was loaded), then --expect's.
    texts = [*sc.expect, *args.expect]
    if not texts:
        raise SpecError(
            "--expect: give at least one expectation, here or under `expect:` in the scenario "
            "(e.g. --expect 'ssim_residual.p_auroc >= 0.8')"
        )
    expectations = [parse_expectation(e, levels) for e in texts]  # before any work
    out = Path(args.out) if args.out is not None else Path("runs") / f"{sc.name}-seed{sc.seed}"
    manifest = run_scenario(
        sc, out, workers=args.workers, progress=not args.quiet, report=write_report
    )
    metrics = json.loads((out / "metrics.json").read_text())["detectors"]
    verdicts = judge(expectations, metrics)
    for v in verdicts:
        print(v.line())
    if args.junit:
        write_junit(Path(args.junit), verdicts, sc.name, manifest["timings_s"]["total"])
    failed = sum(not v.passed for v in verdicts)
    print(f"check: {len(verdicts) - failed} of {len(verdicts)} expectations hold ({out})")
    return EXIT_EXPECTATION if failed else EXIT_OK


def _cmd_study(args: argparse.Namespace) -> int:
    from scenarios.study import cells_by_status, load_study, run_study

    if args.ray_address is not None and args.executor != "ray":
        raise SpecError("--ray-address: only with --executor ray")
    study = load_study(args.study)
    out = Path(args.out) if args.out is not None else Path("runs") / study.spec.name
    n_points = len(study.cells) // len(study.spec.seeds)
    runs = len({c.dirname for c in study.cells})
    shared = f"; {runs} distinct runs" if runs != len(study.cells) else ""
    print(
        f"study {study.spec.name} (digest {study.digest()}): {len(study.cells)} cells "
        f"({study.spec.design}: {n_points} points x {len(study.spec.seeds)} seeds{shared}) on "
        f"{study.cells[0].scenario.name}"
    )
    if args.dry_run:
        for c in study.cells:
            values = "  ".join(f"{k}={v}" for k, v in c.values.items())
            print(f"  cell {c.index:<4} seed {c.seed:<3} {values}  (cells/{c.dirname})")
        return EXIT_OK
    result = run_study(
        study,
        out,
        executor=args.executor,
        workers=args.workers,
        ray_address=args.ray_address,
        progress=not args.quiet,
    )
    counts = cells_by_status(result.outcomes.values())
    pairs = sum(o.pairs for o in result.outcomes.values() if not o.reused)
    reused = sum(o.reused for o in result.outcomes.values())
    print(
        f"study: {out}  ({', '.join(f'{n} {s}' for s, n in counts.items())}; {reused} "
        f"finished before; {pairs} pairs in {result.seconds:.1f} s, {args.executor} x "
        f"{args.workers})"
    )
    print(f"table: {out / 'results.csv'} (and .parquet)\nreport: {out / 'report.html'}")
    if result.failed:
        for o in result.failed:
            print(f"twincell: {study.cells[o.index].label} failed: {o.error}", file=sys.stderr)
        return EXIT_CELLS_FAILED
    return EXIT_OK


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (and exit 2) like every other input error."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_INPUT, f"twincell: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``twincell`` command."""
    p = _Parser(
        prog="twincell",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"twincell {_version()}")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("list", help="list the bundled scenarios").set_defaults(func=_cmd_list)
    scenario_help = "bundled scenario name (see `twincell list`) or path to a scenario YAML"
    v = sub.add_parser(
        "validate",
        help="check a scenario file and print what it plans; runs nothing",
        description="Check a scenario file (every field, detector parameters included) and "
        "print what it plans. Exit 2 with one line naming the field on bad input.",
    )
    v.add_argument("scenario", help=scenario_help)
    v.add_argument("--seed", type=int, default=None, help="override the scenario's seed")
    v.set_defaults(func=_cmd_validate)
    r = sub.add_parser(
        "run",
        help="run a scenario: simulate, detect, score, report",
        description="Simulate the scenario's render pairs, run its detectors, score them and\n"
        "write a report into one run directory. Rerunning the same command resumes:\n"
        "finished, checksum-verified samples and predictions are kept.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    r.add_argument("scenario", help=scenario_help)
    r.add_argument(
        "--out", help="run directory (default runs/<name>-seed<seed>); rerunning into it resumes"
    )
    r.add_argument("--seed", type=int, default=None, help="override the scenario's seed")
    r.add_argument(
        "--workers",
        type=int,
        default=1,
        help=f"simulation processes, 1 to {MAX_WORKERS} (default 1); results are the same",
    )
    r.add_argument(
        "--dry-run",
        action="store_true",
        help="hardware cells: plan every view, check it against the workspace and render "
        "its twin, without connecting or moving (writes plan.json and dry-run.png)",
    )
    r.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    r.set_defaults(func=_cmd_run)
    x = sub.add_parser(
        "export",
        help="export a run directory as an MVTec AD, BOP or COCO dataset",
        description="Write a run's samples in a layout the field's tools read: mvtec\n"
        "(anomalib's MVTecAD/Folder), bop (bop_toolkit), coco (pycocotools instance masks\n"
        "of the defects). See docs/exports.md.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    x.add_argument("run", help="a twincell run directory")
    x.add_argument("--format", required=True, choices=["mvtec", "bop", "coco"])
    x.add_argument("--out", required=True, help="a new (or empty) directory")
    x.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    x.set_defaults(func=_cmd_export)
    g = sub.add_parser(
        "gallery",
        help="render a contact sheet of part families x defect kinds",
        description="Render one cell per part family and defect kind: the real capture, the\n"
        "twin and the ground-truth overlay (defect pixels red), with the scenario's camera,\n"
        "station and pose errors (default: the quickstart's).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    g.add_argument("--out", required=True, help="PNG file to write")
    g.add_argument(
        "--family", action="append", help="only this part family (repeatable; default all)"
    )
    g.add_argument("--defect", action="append", help="only this defect kind (repeatable)")
    g.add_argument(
        "--scenario", default="quickstart", help="scenario whose cell to use (default quickstart)"
    )
    g.add_argument("--seed", type=int, default=None, help="override the scenario's seed")
    g.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    g.set_defaults(func=_cmd_gallery)
    t = sub.add_parser(
        "pretrain",
        help="train a compact backbone self-supervised on the simulator's renders",
        description="Simulate pretraining scenarios (default: those of the shipped checkpoint,\n"
        "five part families, normal parts only) into run directories, then train\n"
        "resnet18_compact on their pose-matched normal real/twin pairs with dense VICReg on\n"
        "the CPU, and save the trunk as a checkpoint\n"
        "that detectors load with `weights: <path>` (or `auto`, from the cache directories).\n"
        "Rerunning with the same --renders resumes the simulation.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    t.add_argument("--out", required=True, help="checkpoint file to write (.pth, must not exist)")
    t.add_argument(
        "--scenario",
        action="append",
        help="pretraining scenario, repeatable (default: those of the shipped checkpoint, "
        "assets/pretrain/)",
    )
    t.add_argument(
        "--renders",
        default=None,
        help="directory for the renders, one run directory per scenario (default "
        "<out>.renders); rerunning into it resumes",
    )
    t.add_argument("--epochs", type=int, default=None, help="training epochs (default 20)")
    t.add_argument("--image-size", type=int, default=None, help="crop side in px (default 96)")
    t.add_argument("--batch-size", type=int, default=None, help="pairs per step (default 32)")
    t.add_argument("--seed", type=int, default=None, help="training seed (default 0)")
    t.add_argument(
        "--workers", type=int, default=1, help=f"simulation processes, 1 to {MAX_WORKERS}"
    )
    t.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    t.set_defaults(func=_cmd_pretrain)
    k = sub.add_parser(
        "check",
        help="CI gate: run a scenario and fail when a metric misses its expectation",
        description="Run a scenario (resuming, like `run`), then check each expectation\n"
        "`<detector>.<metric> <op> <value>` (op: >= > <= < ==; values are fractions, as in\n"
        "metrics.json) against its metrics. Exit 0 when all hold, 4 when one does not (one\n"
        "line each says why), 2 for a bad expectation (checked before anything runs).\n"
        "The same scenario and seed always give the same verdict.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    k.add_argument("scenario", help=scenario_help)
    k.add_argument(
        "--expect",
        action="append",
        default=[],
        help='expectation, repeatable, e.g. "ssim_residual.p_auroc >= 0.9"; added to the '
        "scenario's own `expect:` list",
    )
    k.add_argument("--junit", default=None, help="write the verdicts as JUnit XML to this file")
    k.add_argument("--out", help="run directory (default runs/<name>-seed<seed>)")
    k.add_argument("--seed", type=int, default=None, help="override the scenario's seed")
    k.add_argument(
        "--workers", type=int, default=1, help=f"simulation processes, 1 to {MAX_WORKERS}"
    )
    k.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    k.set_defaults(func=_cmd_check)
    st = sub.add_parser(
        "study",
        help="run a robustness study: a scenario over a grid of its fields and seeds",
        description="Run every cell of a study (a bundled name or a YAML file: a base "
        "scenario, the axes to sweep by dotted field path, the seeds) as an ordinary run "
        "directory under OUT/cells/, then write results.csv/.parquet (one row per cell and "
        "detector), views.csv/.parquet and report.html with metric-vs-axis plots. Rerun the "
        "same command to resume: finished cells are kept, failed ones retried. "
        "docs/studies.md has the spec format.",
    )
    st.add_argument("study", help="bundled study name (e.g. jitter-sweep) or YAML path")
    st.add_argument("--out", help="study directory (default runs/<name>)")
    st.add_argument(
        "--executor",
        choices=["pool", "ray"],
        default="pool",
        help="pool: local processes (default); ray: one Ray task per cell",
    )
    st.add_argument(
        "--workers", type=int, default=1, help="cells at once (pool processes, or local Ray CPUs)"
    )
    st.add_argument(
        "--ray-address",
        default=None,
        help="with --executor ray: the cluster to join (e.g. auto, ray://head:10001); "
        "default: start a local Ray",
    )
    st.add_argument(
        "--dry-run", action="store_true", help="validate the study and list its cells, run nothing"
    )
    st.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    st.set_defaults(func=_cmd_study)

    c = sub.add_parser(
        "train",
        help="train a detector's model on simulated labelled data (cosarad)",
        description="Train a detector's learned part on data the simulator labels.\n\n"
        "cosarad: simulate a training scenario (default assets/cosarad/train.yaml: seven\n"
        "families, normal and defective parts, clouds fused from the depth sensor), make\n"
        "triplets of patches (two normal parts and a defective one at the defect) and train\n"
        "the contrastive PointNet++ extractor with the triplet loss and the EMA miner, one\n"
        "checkpoint per fold of families (fold<k>.pth, trained on the families outside fold\n"
        "k), for `cosarad` with `features: contrastive, extractor: <out>`.\n"
        "Rerunning with the same --renders resumes the simulation.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    c.add_argument("model", choices=["cosarad"], help="what to train")
    c.add_argument("--out", required=True, help="directory for the fold checkpoints (new)")
    c.add_argument(
        "--scenario", default=None, help="training scenario (default assets/cosarad/train.yaml)"
    )
    c.add_argument(
        "--renders",
        default=None,
        help="directory for the simulated run (default <out>.renders); rerunning resumes",
    )
    c.add_argument("--folds", type=int, default=2, help="folds of families (default 2)")
    c.add_argument(
        "--pairs",
        type=int,
        default=6,
        help="pairs of normal parts per defective part (default 6: all pairs of 4)",
    )
    c.add_argument(
        "--centres", type=int, default=16, help="patch centres per defective part (default 16)"
    )
    c.add_argument("--epochs", type=int, default=None, help="training epochs")
    c.add_argument("--batch-size", type=int, default=None, help="triplets per step")
    c.add_argument("--seed", type=int, default=None, help="training seed (default 0)")
    c.add_argument(
        "--workers", type=int, default=1, help=f"simulation processes, 1 to {MAX_WORKERS}"
    )
    c.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    c.set_defaults(func=_cmd_train)
    return p


def _flags_checked(model: Any, given: dict[str, Any]) -> dict[str, Any]:
    """The command-line values ``given`` (None: not given) checked by pydantic ``model``;
    a bad one is a SpecError naming the flag the user typed, not the model's field."""
    from detectors.registry import check_params_model

    try:
        return check_params_model(model, {k: v for k, v in given.items() if v is not None}, "f")
    except SpecError as exc:
        msg = str(exc)
        for key in given:
            msg = msg.replace(f"f.{key}", "--" + key.replace("_", "-"))
        raise SpecError(msg) from None


def _cmd_train(args: argparse.Namespace) -> int:
    from detectors.cosarad.contrastive import TripletParams
    from scenarios.train_cosarad import DEFAULT_SCENARIO, train_cosarad

    if not 1 <= args.workers <= MAX_WORKERS:
        raise SpecError(f"--workers: must be >= 1 and <= {MAX_WORKERS}, got {args.workers}")
    if not 1 <= args.folds <= 16:
        raise SpecError(f"--folds: must be >= 1 and <= 16, got {args.folds}")
    if not 1 <= args.pairs <= 64:
        raise SpecError(f"--pairs: must be >= 1 and <= 64, got {args.pairs}")
    if not 1 <= args.centres <= 1024:
        raise SpecError(f"--centres: must be >= 1 and <= 1024, got {args.centres}")
    given = {"epochs": args.epochs, "batch_size": args.batch_size, "seed": args.seed}
    params = TripletParams(**_flags_checked(TripletParams, given))
    out = Path(args.out)  # train_cosarad() checks it before any work
    renders = Path(args.renders) if args.renders else out.with_name(out.name + ".renders")
    metas = train_cosarad(
        args.scenario or DEFAULT_SCENARIO,
        out,
        renders,
        params,
        folds=args.folds,
        pairs=args.pairs,
        centres=args.centres,
        workers=args.workers,
        progress=not args.quiet,
    )
    for k, meta in enumerate(metas):
        last = meta["history"][-1]
        print(
            f"fold{k}.pth: trained on {', '.join(meta['families'])} "
            f"({meta['triplets']} triplets, {len(meta['history'])} epochs, validation "
            f"accuracy {last.get('val_accuracy', float('nan')):.3f}, "
            f"train {meta['seconds']['train']:.0f} s)"
        )
    print(f"use it: cosarad with `features: contrastive, extractor: {out}`")
    return EXIT_OK


def _cmd_pretrain(args: argparse.Namespace) -> int:
    from detectors.pretrain import PretrainParams
    from scenarios.pretrain import DEFAULT_SCENARIOS, pretrain

    if not 1 <= args.workers <= MAX_WORKERS:
        raise SpecError(f"--workers: must be >= 1 and <= {MAX_WORKERS}, got {args.workers}")
    given = {
        "epochs": args.epochs,
        "image_size": args.image_size,
        "batch_size": args.batch_size,
        "seed": args.seed,
    }
    params = PretrainParams(**_flags_checked(PretrainParams, given))
    out = Path(args.out)  # pretrain() checks it before any work
    renders = Path(args.renders) if args.renders else out.with_name(out.name + ".renders")
    scenarios = args.scenario or DEFAULT_SCENARIOS
    meta = pretrain(scenarios, out, renders, params, workers=args.workers, progress=not args.quiet)
    last = meta["history"][-1]
    print(
        f"checkpoint: {out}  ({meta['pairs']} pairs, {params.epochs} epochs, "
        f"final loss {last['loss']:.3f}, simulate {meta['seconds']['simulate']:.0f} s, "
        f"train {meta['seconds']['train']:.0f} s)"
    )
    print(f"use it: `weights: {out}` with backbone: {params.backbone}")
    return EXIT_OK


def _cmd_gallery(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from scenarios.interfaces import allowed
    from scenarios.spec import load_scenario
    from sim.defects import DEFECT_KINDS
    from sim.gallery import make_gallery
    from sim.parts import PART_FAMILIES

    out = Path(args.out)
    if out.suffix.lower() != ".png":
        raise SpecError(f"--out: must name a .png file, got {out.name!r}")
    families = args.family or list(PART_FAMILIES)
    kinds = args.defect or list(DEFECT_KINDS)
    for f in families:
        if f not in PART_FAMILIES:
            raise SpecError(f"--family: unknown {f!r}; {allowed(f, list(PART_FAMILIES))}")
    for k in kinds:
        if k not in DEFECT_KINDS:
            raise SpecError(f"--defect: unknown {k!r}; {allowed(k, list(DEFECT_KINDS))}")
    sc = load_scenario(args.scenario, seed=args.seed)
    with tqdm(total=len(families) * len(kinds), unit="cell", disable=args.quiet) as bar:
        tiles = make_gallery(out, families, kinds, sc, sc.seed, progress=bar.update)
    shown = sum(t.real is not None for t in tiles)
    print(f"gallery: {out}  ({len(families)} families x {len(kinds)} kinds, {shown} shown)")
    return EXIT_OK


def _stop(signum: int, frame: object) -> None:
    # Ctrl-C, and SIGTERM (a CI job cancelled, `timeout`, `kill`), end a run: the pool is
    # terminated, finished samples are kept and the manifest says "interrupted". The flag
    # makes it stick: the engine checks it between samples, in case the exception landed in
    # a finalizer, where Python prints and swallows it.
    STOP.set()
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code (see ``EPILOG``)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s" if args.verbose else "twincell: %(message)s",
    )
    STOP.clear()  # set by _stop, for the length of this call
    previous = {}
    if args.command in ("run", "check", "pretrain", "train", "study"):
        for sig in (signal.SIGINT, signal.SIGTERM):
            # A SIGINT ignored by whoever started us (a background job) stays ignored.
            if signal.getsignal(sig) is not signal.SIG_IGN:
                previous[sig] = signal.signal(sig, _stop)
    try:
        code: int = args.func(args)
    except TwincellError as exc:
        print(f"twincell: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("twincell: interrupted; rerun the same command to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`twincell study x --dry-run | head`): not an error. Point
        # stdout at nothing so the interpreter's final flush does not raise again.
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_INTERRUPTED if previous and STOP.is_set() else EXIT_OK
    except Exception:
        # A Ctrl-C that lands inside a C call (an OpenGL call through ctypes) can surface as
        # another exception; the flag _stop set says what it was.
        if not (previous and STOP.is_set()):
            raise
        print("twincell: interrupted; rerun the same command to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        STOP.clear()
    return code


if __name__ == "__main__":
    sys.exit(main())
