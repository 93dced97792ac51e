"""The ``twincell`` command line: parses arguments and calls library functions, nothing else."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from scenarios.interfaces import SpecError, TwincellError


def _cmd_list(args: argparse.Namespace) -> int:
    from scenarios.spec import bundled_scenarios, load_scenario

    for name in bundled_scenarios():
        sc = load_scenario(name)
        print(f"{name:<14} {sc.description}")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from scenarios.engine import run_scenario
    from scenarios.report import write_report
    from scenarios.spec import load_scenario

    if args.workers < 1:
        raise SpecError(f"--workers: must be >= 1, got {args.workers}")
    sc = load_scenario(args.scenario, seed=args.seed)
    out = Path(args.out) if args.out else Path("runs") / f"{sc.name}-seed{sc.seed}"
    manifest = run_scenario(
        sc, out, workers=args.workers, progress=not args.quiet, report=write_report
    )
    metrics_path = out / "metrics.json"
    metrics = json.loads(metrics_path.read_text())["detectors"]
    c = manifest["counts"]
    print(
        f"run: {out}  ({c['train']} train pairs, {c['test_normal'] + c['test_anomalous']} "
        f"test pairs, {c['test_anomalous']} anomalous, "
        f"{manifest['dropped_viewpoints']['count']} viewpoints dropped, "
        f"{manifest['timings_s']['total']:.1f} s)"
    )
    for name, m in metrics.items():
        # A metric is undefined (null) when the test split lacks one class.
        cells = (f"{k} n/a" if v is None else f"{k} {v:.3f}" for k, v in m.items())
        print(f"  {name:<18} " + "  ".join(cells))
    print(f"report: {out / 'report.html'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``twincell`` command."""
    p = argparse.ArgumentParser(prog="twincell", description=__doc__)
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list bundled scenarios").set_defaults(func=_cmd_list)
    r = sub.add_parser("run", help="run a scenario (bundled name or YAML path)")
    r.add_argument("scenario", help="bundled scenario name (see `twincell list`) or YAML path")
    r.add_argument(
        "--out", help="run directory (default runs/<name>-seed<seed>); rerunning into it resumes"
    )
    r.add_argument("--seed", type=int, default=None, help="override the scenario's seed")
    r.add_argument("--workers", type=int, default=1, help="simulation processes (default 1)")
    r.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    r.set_defaults(func=_cmd_run)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code (2 for bad input, 1 for other twincell errors)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        code: int = args.func(args)
    except TwincellError as exc:
        print(f"twincell: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("twincell: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
