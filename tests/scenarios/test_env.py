"""The active-inspection gymnasium environment on the ``tiny`` scenario (96 px, 4 views).

Tiny's facts these tests rely on: test parts part001 (normal) and part002 (hole + scratch);
planned views 4, 5, 9, 11, of which 9 is unreachable for every part.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from scenarios.env import ENV_ID, ActiveInspectionEnv, Rewards, angle_between
from scenarios.interfaces import SpecError

UNREACHABLE = 9


@pytest.fixture(scope="module")
def env() -> Iterator[ActiveInspectionEnv]:
    """One discrete environment for the module (its detector is fitted once)."""
    e = ActiveInspectionEnv("tiny", observe=("depth", "twin"), render_mode="rgb_array")
    yield e
    e.close()


def _gym_warnings(caught: list[warnings.WarningMessage]) -> list[str]:
    # gymnasium.logger.warn prefixes "WARN:" and points at the checker that warned.
    return [
        str(w.message)
        for w in caught
        if "WARN:" in str(w.message) or "gymnasium" in str(w.filename)
    ]


@pytest.mark.parametrize("action_type", ["discrete", "continuous"])
def test_check_env_passes_without_warnings(action_type: str) -> None:
    made = gymnasium.make(
        ENV_ID, action_type=action_type, observe=("depth",), render_mode="rgb_array"
    )
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            # With a spec (made by id) the checker also builds the env in every render mode
            # and checks that a second close() is allowed.
            check_env(made.unwrapped)
        assert _gym_warnings(caught) == []
    finally:
        made.close()


def test_make_by_module_spelling() -> None:
    made = gymnasium.make("scenarios.env:" + ENV_ID, budget=3)
    try:
        assert isinstance(made.unwrapped, ActiveInspectionEnv)
        assert made.unwrapped.budget == 3
        assert made.spec is not None and made.spec.id == ENV_ID
    finally:
        made.close()


def _rollout(env: ActiveInspectionEnv, seed: int, actions: list[int]) -> list[Any]:
    obs, info = env.reset(seed=seed)
    out: list[Any] = [obs, info]
    for a in actions:
        obs, reward, terminated, truncated, info = env.step(a)
        out += [obs, reward, terminated, truncated, info]
        if terminated:
            break
    return out


def _same(a: Any, b: Any) -> bool:
    from gymnasium.utils.env_checker import data_equivalence

    return bool(data_equivalence(a, b, exact=True))


def test_same_reset_seed_same_episode(env: ActiveInspectionEnv) -> None:
    actions = [0, 1, 3, env.DECLARE_DEFECTIVE]
    first = _rollout(env, 7, actions)
    assert _same(first, _rollout(env, 7, actions))  # replayed from the capture cache
    other = ActiveInspectionEnv("tiny", observe=("depth", "twin"))  # captured afresh
    try:
        assert _same(first, _rollout(other, 7, actions))
    finally:
        other.close()
    starts = {(env.reset(seed=s)[1]["part_id"], env.reset(seed=s)[1]["view_id"]) for s in range(8)}
    assert len(starts) > 1  # the seed does choose the part and the start view


def test_observation_contents(env: ActiveInspectionEnv) -> None:
    obs, info = env.reset(seed=0, options={"part": "part002", "view": 4})
    assert info["part_id"] == "part002" and info["label"] == 1 and info["view_id"] == 4
    assert obs["rgb"].shape == (96, 96, 3) and obs["rgb"].dtype == np.uint8
    assert obs["twin"].shape == (96, 96, 3)
    assert obs["depth"].dtype == np.float32 and obs["depth"].max() > 0.1
    i = env.view_ids.index(4)
    assert obs["visited"].tolist() == [int(k == i) for k in range(4)]
    assert obs["scores"][i] == pytest.approx(info["score"] / env.score_threshold)
    assert obs["budget_left"][0] == 1.0
    frame = env.render()
    assert frame is not None and frame.shape == (96, 3 * 96, 3)


def test_declaration_ends_the_episode(env: ActiveInspectionEnv) -> None:
    for part, label in (("part001", 0), ("part002", 1)):
        env.reset(seed=0, options={"part": part})
        _, reward, terminated, truncated, info = env.step(env.DECLARE_DEFECTIVE)
        assert terminated and not truncated
        assert info["decision"] == "defective" and info["correct"] == bool(label)
        assert reward == (env.rewards.correct if label else env.rewards.false_alarm)
        with pytest.raises(RuntimeError, match="reset"):
            env.step(0)


def test_budget_ends_the_episode() -> None:
    e = ActiveInspectionEnv("tiny", budget=2, rewards={"undecided": -3.0})
    try:
        e.reset(seed=0, options={"part": "part001", "view": 4})
        _, _, terminated, _, info = e.step(e.view_ids.index(5))
        assert not terminated and not info["budget_exhausted"]
        obs, reward, terminated, truncated, info = e.step(e.view_ids.index(11))
        assert terminated and not truncated and info["budget_exhausted"]
        assert info["decision"] == "none" and not info["correct"]
        assert info["reward_terms"]["decision"] == -3.0
        assert obs["budget_left"][0] == 0.0
        assert reward == pytest.approx(sum(info["reward_terms"].values()))
    finally:
        e.close()


def test_reward_includes_motion_cost(env: ActiveInspectionEnv) -> None:
    env.reset(seed=0, options={"part": "part001", "view": 4})
    dirs = env.view_directions
    a, b = env.view_ids.index(4), env.view_ids.index(5)
    _, reward, _, _, info = env.step(b)
    angle = angle_between(dirs[a], dirs[b])
    assert angle > 0.5  # tiny's views are far apart
    assert info["motion_rad"] == pytest.approx(angle)
    assert info["reward_terms"]["motion"] == pytest.approx(-env.motion_cost * angle)
    # A normal part has no defect pixels: no evidence; nothing decided: the motion alone.
    assert reward == pytest.approx(-env.motion_cost * angle)
    # Staying put costs nothing; an unreachable view leaves the camera where it was.
    _, reward, _, _, info = env.step(b)
    assert reward == 0.0 and info["motion_rad"] == 0.0
    obs, reward, _, _, info = env.step(env.view_ids.index(UNREACHABLE))
    assert not info["reachable"] and info["reason"].startswith("unreachable")
    assert info["view_id"] == 5 and reward == 0.0
    assert obs["dropped"][env.view_ids.index(UNREACHABLE)] == 1


def test_view_directions_are_the_planned_ones(env: ActiveInspectionEnv) -> None:
    env.reset(seed=0, options={"part": "part002", "view": 5})
    sample = env._cache[(env._part.index, 5)].sample  # type: ignore[union-attr]
    assert sample is not None
    # The pose the cell planned (recorded with the sample), seen from the part's frame.
    from scenarios import engine

    i = engine.sample_table(env.scenario).index((env._part, 5))  # type: ignore[arg-type]
    T_obj_cam = np.asarray(
        engine.run_sample(env.scenario, env.scenario.seed, i).record["T_obj_cam_planned"]
    )
    d = T_obj_cam[:3, 3] / np.linalg.norm(T_obj_cam[:3, 3])
    assert np.allclose(env.view_directions[env.view_ids.index(5)], d)


def test_evidence_on_a_defective_part_is_bounded(env: ActiveInspectionEnv) -> None:
    env.reset(seed=0, options={"part": "part002", "view": 11})
    total = 0.0
    for v in (4, 5, 4, 11):
        _, _, _, _, info = env.step(env.view_ids.index(v))
        total += info["reward_terms"]["evidence"]
        assert 0.0 <= info["evidence"] <= 1.0
    # Only rises of the best evidence pay: revisits add nothing, the total is capped.
    assert total <= env.rewards.evidence + 1e-12
    assert total == pytest.approx(env.rewards.evidence * info["best_evidence"])


def test_continuous_projects_to_a_reachable_view() -> None:
    e = ActiveInspectionEnv("tiny", action_type="continuous")
    try:
        e.reset(seed=0, options={"part": "part001", "view": 4})
        d = e.view_directions[e.view_ids.index(UNREACHABLE)]
        az, el = np.arctan2(d[1], d[0]), np.arcsin(d[2])
        action = np.array([az / np.pi, el / (np.pi / 2), 0.0], dtype=np.float32)
        obs, _, terminated, _, info = e.step(action)
        assert not terminated and info["reachable"]
        assert info["skipped_views"] == [UNREACHABLE]
        assert info["view_id"] != UNREACHABLE and info["projection_rad"] > 0.0
        assert obs["dropped"][e.view_ids.index(UNREACHABLE)] == 1
        _, reward, terminated, _, info = e.step(np.array([0.0, 0.0, -1.0], dtype=np.float32))
        assert terminated and info["decision"] == "normal" and reward == Rewards().correct
    finally:
        e.close()


@pytest.mark.parametrize(
    ("kwargs", "names"),
    [
        ({"detector": "nope"}, "detector: unknown"),
        ({"detector": "cosarad"}, "detector: cosarad is a part-level"),
        ({"detector_params": {"sigma": 1}}, "detector_params: unknown parameter"),
        ({"budget": 0}, "budget:"),
        ({"budget": 2.5}, "budget:"),
        ({"action_type": "grid"}, "action_type: unknown 'grid'; allowed: discrete, continuous"),
        ({"observe": ("heat",)}, "observe: unknown 'heat'; allowed: depth, twin"),
        ({"render_mode": "human"}, "render_mode: unknown 'human'"),
        ({"motion_cost": -1.0}, "motion_cost:"),
        ({"rewards": {"corect": 1.0}}, "rewards: unknown 'corect'; allowed: correct"),
        ({"rewards": {"miss": float("nan")}}, "rewards.miss:"),
        ({"scenario": "no-such-scenario"}, "scenario: no bundled scenario"),
    ],
)
def test_bad_arguments_raise_one_line(kwargs: dict[str, Any], names: str) -> None:
    with pytest.raises(SpecError) as err:
        ActiveInspectionEnv(**kwargs)
    assert str(err.value).startswith(names) and "\n" not in str(err.value)


def test_bad_reset_options(env: ActiveInspectionEnv) -> None:
    with pytest.raises(SpecError, match="options.part: unknown"):
        env.reset(options={"part": "part000"})  # a training part
    with pytest.raises(SpecError, match="options: unknown"):
        env.reset(options={"seed": 1})


def test_info_keys_keep_their_types(env: ActiveInspectionEnv) -> None:
    # Vector environments stack infos by key: a key must not change type between steps.
    _, first = env.reset(seed=0, options={"part": "part002", "view": 4})
    infos = [first]
    for action in (env.view_ids.index(UNREACHABLE), env.view_ids.index(5), env.DECLARE_NORMAL):
        infos.append(env.step(action)[4])
    for info in infos[1:]:
        assert info.keys() == first.keys()
        assert {k: type(v) for k, v in info.items()} == {k: type(v) for k, v in first.items()}
    assert infos[-1]["decision"] == "normal" and infos[-1]["requested_view_id"] == -1


def test_package_and_cli_do_not_import_gymnasium() -> None:
    import subprocess
    import sys

    code = "import sys, scenarios, scenarios.cli; sys.exit('gymnasium' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_a_discrete_action_must_be_an_integer(env: ActiveInspectionEnv) -> None:
    env.reset(seed=0)
    for bad in (2.7, np.array([1]), "1"):
        with pytest.raises(ValueError, match="must be an integer"):
            env.step(bad)
    env.step(np.int64(1))  # numpy integers, as Discrete.sample() gives, are fine
