"""Random and greedy baselines of ``twincell/ActiveInspection-v0``: return and detection rates.

    .venv/bin/python scripts/active_inspection.py                      # quickstart, 50 episodes
    .venv/bin/python scripts/active_inspection.py --scenario tiny --episodes 20 --seed 1

Both policies play the same episodes (reset seeds ``seed``, ``seed + 1``, ...: the same part
and start view each), on the discrete action space with the environment's defaults (budget =
number of planned views, motion cost 0.1 per radian, +-1 for a decision).

- random: ``action_space.sample()`` (seeded by ``--seed``) until the episode ends.
- greedy: declare defective as soon as ``--fire-views`` (default 1) seen views score above
  the detector's threshold fitted on the train split (a normalised score above 1.0: the
  largest view score of the normal training parts); otherwise move to the nearest
  (great-circle angle) view not yet visited nor found unreachable; declare normal when none
  is left or only the declaring step of the budget remains.

Printed per policy: mean return, detection rate (defective parts declared defective),
false alarm rate (normal parts declared defective), undecided rate (budget ran out), mean
steps and mean radians travelled.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass, field
from typing import Any

os.environ.setdefault("PYOPENGL_PLATFORM", "egl")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from scenarios.env import ActiveInspectionEnv, angle_between  # noqa: E402
from scenarios.interfaces import TwincellError  # noqa: E402


def random_policy(env: ActiveInspectionEnv, obs: dict[str, Any]) -> Any:
    """A uniformly random action (the action space is seeded by the caller)."""
    return env.action_space.sample()


def greedy_policy(env: ActiveInspectionEnv, obs: dict[str, Any], fire_views: int = 1) -> int:
    """Declare defective once ``fire_views`` seen views score above the train threshold,
    else go to the nearest unseen view (discrete actions)."""
    # 1.0 = the largest view score on the train split (scores are normalised by it).
    if int((obs["scores"] > 1.0).sum()) >= fire_views:
        return env.DECLARE_DEFECTIVE
    steps_left = round(float(obs["budget_left"][0]) * env.budget)
    left = np.flatnonzero((obs["visited"] == 0) & (obs["dropped"] == 0))
    if steps_left <= 1 or len(left) == 0:
        return env.DECLARE_NORMAL
    dirs = env.view_directions
    here = dirs[int(obs["view"])]
    return int(left[np.argmin([angle_between(here, dirs[i]) for i in left])])


@dataclass
class Tally:
    """Outcomes of one policy's episodes."""

    returns: list[float] = field(default_factory=list)
    steps: list[int] = field(default_factory=list)
    motion: list[float] = field(default_factory=list)
    detected: list[bool] = field(default_factory=list)  # defective parts
    false_alarm: list[bool] = field(default_factory=list)  # normal parts
    undecided: list[bool] = field(default_factory=list)

    def line(self, name: str) -> str:
        def rate(xs: list[bool]) -> str:
            return f"{np.mean(xs):.3f} ({sum(xs)}/{len(xs)})" if xs else "n/a"

        return (
            f"{name:<8} {np.mean(self.returns):+7.3f} {rate(self.detected):>16} "
            f"{rate(self.false_alarm):>16} {rate(self.undecided):>16} "
            f"{np.mean(self.steps):6.2f} {np.mean(self.motion):8.3f}"
        )


def play(env: ActiveInspectionEnv, policy: Any, episodes: int, seed: int) -> Tally:
    """Run ``episodes`` episodes of ``policy`` with reset seeds seed, seed + 1, ..."""
    env.action_space.seed(seed)
    tally = Tally()
    for k in range(episodes):
        obs, info = env.reset(seed=seed + k)
        total, steps, motion, done = 0.0, 0, 0.0, False
        while not done:
            obs, reward, done, truncated, info = env.step(policy(env, obs))
            total += float(reward)
            steps += 1
            motion += info["motion_rad"]
            done = done or truncated
        declared = info["decision"] == "defective"
        tally.returns.append(total)
        tally.steps.append(steps)
        tally.motion.append(motion)
        tally.undecided.append(info["decision"] == "none")
        (tally.detected if info["label"] else tally.false_alarm).append(declared)
    return tally


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments, play both policies, print one line each."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--episodes", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--scenario", default="quickstart", help="bundled name or YAML path")
    ap.add_argument("--detector", default="ssim_residual", help="a view-level detector")
    ap.add_argument(
        "--fire-views",
        type=int,
        default=1,
        help="greedy: views above the threshold that make it declare defective (PaDiM's k)",
    )
    args = ap.parse_args(argv)
    if args.episodes < 1:
        ap.error("--episodes: must be >= 1")
    if args.fire_views < 1:
        ap.error("--fire-views: must be >= 1")
    try:
        env = ActiveInspectionEnv(args.scenario, detector=args.detector)
    except TwincellError as exc:
        print(f"active_inspection: error: {exc}", file=sys.stderr)
        return 2
    try:
        defective = sum(bool(p.kinds) for p in env.test_parts)
        print(
            f"scenario {env.scenario.name}, detector {args.detector} (train threshold "
            f"{env.score_threshold:.4f}), {len(env.test_parts)} test parts ({defective} "
            f"defective), {len(env.view_ids)} planned views, budget {env.budget}, "
            f"{args.episodes} episodes, seed {args.seed}, greedy fires at {args.fire_views} "
            "view(s)"
        )
        print(
            f"{'policy':<8} {'return':>7} {'detection':>16} {'false alarm':>16} "
            f"{'undecided':>16} {'steps':>6} {'rad':>8}"
        )

        def greedy(e: ActiveInspectionEnv, obs: dict[str, Any]) -> int:
            return greedy_policy(e, obs, args.fire_views)

        for name, policy in (("random", random_policy), ("greedy", greedy)):
            print(play(env, policy, args.episodes, args.seed).line(name))
    finally:
        env.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
