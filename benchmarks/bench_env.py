"""Print steps per second of ``twincell/ActiveInspection-v0``, cold (rendering) and warm (cached).

Usage:
    PYOPENGL_PLATFORM=egl OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_env.py \\
        [--scenario quickstart] [--detector ssim_residual] [--passes 3]

One process, the discrete action space. Each pass visits every test part: ``reset`` on it,
a move to each planned view in order, then a declaration. The first pass is *cold*: every
view of every part is a first visit, so a move renders a real/twin pair through the engine
(``run_sample``: IK, both renders, ground truth) and runs the detector; the later passes
are *warm* (each repeated ``--repeats`` times): the same moves are served from the
environment's capture cache. Unreachable
views are part of both (the robot's IK is tried once, then remembered). Construction
(fitting the detector on the train split) is timed on its own.
"""

from __future__ import annotations

import argparse
import time

from scenarios.env import ActiveInspectionEnv


def one_pass(env: ActiveInspectionEnv) -> tuple[int, float, int, float]:
    """(moves, seconds in moves, resets, seconds in resets) of one pass over the test parts."""
    moves = resets = 0
    t_moves = t_resets = 0.0
    for part in env.test_parts:
        t0 = time.perf_counter()
        env.reset(seed=0, options={"part": part.part_id})
        t_resets += time.perf_counter() - t0
        resets += 1
        for i in range(len(env.view_ids)):
            t0 = time.perf_counter()
            env.step(i)
            t_moves += time.perf_counter() - t0
            moves += 1
        env.step(env.DECLARE_NORMAL)
    return moves, t_moves, resets, t_resets


def main() -> None:
    """Construct the environment, run the passes, print the figures."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenario", default="quickstart")
    ap.add_argument("--detector", default="ssim_residual")
    ap.add_argument("--passes", type=int, default=3, help="1 cold + (passes - 1) warm")
    ap.add_argument("--repeats", type=int, default=20, help="times a warm pass is repeated")
    args = ap.parse_args()
    t0 = time.perf_counter()
    env = ActiveInspectionEnv(args.scenario, detector=args.detector, budget=10_000)
    built = time.perf_counter() - t0
    h, w = env.observation_space["rgb"].shape[:2]
    print(
        f"scenario {env.scenario.name} ({w}x{h} px, {len(env.view_ids)} views, "
        f"{len(env.test_parts)} test parts), detector {args.detector}"
    )
    print(f"construct (fit on the train split): {built:.2f} s")
    try:
        for k in range(max(1, args.passes)):
            before = env.cached_captures
            moves = resets = 0
            t_moves = t_resets = 0.0
            # A warm pass takes milliseconds: repeat it so the clock measures something.
            for _ in range(1 if k == 0 else max(1, args.repeats)):
                m, tm, r, tr = one_pass(env)
                moves, t_moves, resets, t_resets = (
                    moves + m,
                    t_moves + tm,
                    resets + r,
                    t_resets + tr,
                )
            kind = "cold" if k == 0 else "warm"
            print(
                f"pass {k + 1} ({kind}): {moves / t_moves:9.1f} steps/s over {moves} moves "
                f"({env.cached_captures - before} captures rendered, resets included), "
                f"{resets / t_resets:9.1f} resets/s"
            )
    finally:
        env.close()


if __name__ == "__main__":
    main()
