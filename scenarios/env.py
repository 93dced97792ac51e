"""The gymnasium environment ``twincell/ActiveInspection-v0``: choose viewpoints, then decide.

An agent inspects one physical part per episode. It sees the real image at the viewpoint the
robot reached, chooses the next planned viewpoint (or a direction projected to one) and ends
the episode by declaring the part normal or defective. Every capture is the engine's own
pure sample function (``scenarios.engine.run_sample``): the same pair a run directory would
hold for (scenario, scenario seed, sample index), never a second simulation path.

Choices (docs/active-inspection.md says the same for users):

- **World.** The scenario (a bundled name, a YAML path or a ``Scenario``; default ``tiny``)
  and its own ``seed`` fix the parts, their defects and every capture. An episode inspects
  one of the scenario's *test* parts; ``reset(seed=)`` picks which part and the start view
  with ``self.np_random`` and nothing else is random. Same reset seed, same episode, byte
  for byte. ``reset(options={"part": "part002", "view": 5})`` picks them instead.
- **Detector.** A view-level detector of the registry (default ``ssim_residual``) is fitted
  once, at construction, on every captured view of the scenario's *train* parts (simulated
  through ``run_sample``; nothing is downloaded). ``score_threshold`` is the largest view
  score on that split (every normal training view is at or below it); observed scores are
  divided by it, so 1.0 means "as anomalous as the worst normal training view".
- **Captures** are cached in memory per (part, view), with the detector's prediction, so a
  revisit (in this or a later episode) costs no render and gives the same bytes.
- **Actions.** ``action_type="discrete"``: ``Discrete(n_views + 2)``; action ``i < n_views``
  moves to ``view_ids[i]``, ``n_views`` declares the part normal (``DECLARE_NORMAL``),
  ``n_views + 1`` declares it defective (``DECLARE_DEFECTIVE``). A view the robot cannot
  reach is not projected: the camera stays, the view is marked ``dropped``.
  ``action_type="continuous"``: ``Box(-1, 1, (3,))`` (normalised, as RL libraries expect):
  azimuth ``pi * a[0]`` rad and elevation ``pi / 2 * a[1]`` rad of the requested camera
  direction in the part's frame, and ``a[2]`` > ``DECIDE_AT`` declares defective, <
  ``-DECIDE_AT`` declares normal, in between moves. The direction is projected to the
  nearest (great-circle angle) planned view that the robot reaches: views are tried nearest
  first, unreachable ones are skipped (``info["skipped_views"]``), and the current view is
  always reachable, so a move always lands; ``info["projection_rad"]`` is the angle between
  the request and the view reached.
- **Viewpoint directions** are the planned camera positions in the part's frame
  (``Cell.plan_viewpoints``, ``T_obj_cam``), unit vectors; they differ between parts by the
  part's placement (yaw), so they are part of the state (``view_directions``).
- **Reward** (``info["reward_terms"]``, which sum to the step's reward):
  ``motion`` = ``-motion_cost`` x the angle (rad) between the view directions left and
  reached (0 when the camera stays, e.g. at an unreachable view);
  ``evidence`` = ``rewards.evidence`` x the rise of the episode's best *view evidence*, where a
  view's evidence is ``max(0, 2 AUROC - 1)`` of its anomaly map separating the view's
  ground-truth defect pixels from its other part pixels (0 on a view without defect pixels,
  so 0 throughout on a normal part). It rewards reaching a view where the detector sees the
  defect, once per episode at most ``rewards.evidence`` in total; the start view's evidence
  is not rewarded (the agent did not choose it). The agent never observes ground truth;
  only the reward uses it.
  ``decision`` = ``rewards.correct`` for a right declaration, ``rewards.false_alarm`` for
  declaring a normal part defective, ``rewards.miss`` for declaring a defective part normal,
  ``rewards.undecided`` when the budget runs out.
- **Ground truth** of a part is whether defects were injected into it (``PartPlan.kinds``),
  whether or not a planned view shows them: a part whose defect no view can see is still
  defective.
- **Termination.** A declaration terminates. ``budget`` counts steps (moves and the
  declaration; default the number of planned views, enough to see every view and decide);
  the step that uses the last one without declaring *terminates* with the ``undecided``
  reward (``info["budget_exhausted"]``). It terminates rather than truncates because the
  budget is part of the task and observed (``budget_left``), so the state is Markov;
  nothing is ever truncated, and the registration sets no ``max_episode_steps``.
- **Observation** ``spaces.Dict``: ``rgb`` (H, W, 3) uint8 real image; optional (``observe``)
  ``depth`` (H, W) float32 metres of the real sensor (0 where nothing was hit, clipped to
  ``DEPTH_MAX_M``) and ``twin`` (H, W, 3) uint8 twin render; ``visited`` (n,) int8 views
  captured this episode; ``dropped`` (n,) int8 views found unreachable (or failed to render);
  ``scores`` (n,) float32 each captured view's detector score / ``score_threshold`` (0 where
  not captured, clipped to ``SCORE_CAP``); ``view`` the current view's index; ``budget_left``
  (1,) float32 fraction of the budget left.
- **info** (reset and step alike) carries ``label`` (ground truth, 0/1), ``part_id``,
  ``view_id`` where the camera is, ``requested_view_id`` / ``reachable`` / ``reason`` (why
  the requested view was not reached, "" when it was), ``skipped_views`` (views found
  unreachable on the way: a continuous projection's, or the start's at reset),
  ``projection_rad``, ``score`` (raw) and ``score_norm`` of the current view, its
  ``evidence`` and the episode's ``best_evidence``, ``motion_rad``, ``reward_terms``,
  ``decision`` ("normal", "defective" or "none"), ``correct`` (True only for a right
  declaration), ``budget_exhausted`` and ``steps``. Each key keeps one type in every step
  (``requested_view_id`` is -1 when the step declared), so vector environments can stack
  the infos.
- **Registration**: importing this module registers ``ENV_ID``; ``gymnasium.make(ENV_ID)``
  works after ``import scenarios.env``, and ``gymnasium.make("scenarios.env:" + ENV_ID)``
  imports it first. ``close()`` closes this process's render workers
  (``engine.close_worker``; another environment in the process reopens them when it next
  captures).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, SupportsFloat

import gymnasium
import numpy as np
from gymnasium import spaces
from numpy.typing import NDArray

import detectors
from scenarios import engine
from scenarios.interfaces import (
    BoolArray,
    CaptureFailed,
    Detector,
    FloatArray,
    PartPlan,
    Prediction,
    Sample,
    SpecError,
    allowed,
    excerpt,
)
from scenarios.metrics import auroc
from scenarios.rundir import sample_from_arrays
from scenarios.spec import Scenario, load_scenario

log = logging.getLogger(__name__)

#: The registered id (namespace ``twincell``, version 0).
ENV_ID = "twincell/ActiveInspection-v0"
ACTION_TYPES = ("discrete", "continuous")
#: What ``observe`` may add to the real ``rgb``.
OBSERVE = ("depth", "twin")
RENDER_MODES = ("rgb_array",)
DECISIONS = ("normal", "defective")
#: Continuous action: ``a[2]`` beyond +-this declares (defective above, normal below).
DECIDE_AT = 0.5
#: Depth observations are clipped here (m): the bound of the ``depth`` space (pyrender's
#: far plane is 10 m; a finite bound keeps the space checkable).
DEPTH_MAX_M = 100.0
#: Normalised detector scores are clipped here (a finite bound of the ``scores`` space).
SCORE_CAP = 1000.0


@dataclass(frozen=True)
class Rewards:
    """The reward of each outcome (motion is ``motion_cost``, an argument of its own).

    ``correct``: a right declaration; ``false_alarm``: a normal part declared defective;
    ``miss``: a defective part declared normal; ``undecided``: the budget ran out;
    ``evidence``: the weight of the rise in the episode's best view evidence (in [0, 1]).
    """

    correct: float = 1.0
    false_alarm: float = -1.0
    miss: float = -1.0
    undecided: float = -1.0
    evidence: float = 0.5


@dataclass(frozen=True)
class Capture:
    """One (part, view) as the cell gave it: the sample, the detector's prediction and the
    view's evidence (``view_evidence``), or ``reason`` (non-empty) why there is none."""

    sample: Sample | None
    prediction: Prediction | None
    evidence: float
    reason: str = ""


def view_evidence(
    anomaly_map: NDArray[np.floating], gt_mask: BoolArray, part_mask: BoolArray
) -> float:
    """How well one view's anomaly map shows its defect, in [0, 1]: ``max(0, 2 AUROC - 1)``.

    ``anomaly_map`` (H, W) float; ``gt_mask`` (H, W) bool defect pixels; ``part_mask`` (H, W)
    bool the part's pixels (real or twin foreground). The AUROC ranks the defect pixels
    against the other part pixels (background is left out: a residual map is 0 there, which
    would make any defect look separable). 0 without defect pixels or at chance; 1 when every
    defect pixel scores above every other part pixel.
    """
    region = np.asarray(part_mask, dtype=bool) | np.asarray(gt_mask, dtype=bool)
    y = np.asarray(gt_mask, dtype=bool)[region]
    if not y.any() or y.all():
        return 0.0
    a = auroc(y.astype(np.int64), np.asarray(anomaly_map, dtype=np.float64)[region])
    return max(0.0, 2.0 * a - 1.0) if math.isfinite(a) else 0.0


def direction_from_angles(azimuth_rad: float, elevation_rad: float) -> FloatArray:
    """(3,) unit vector of a direction given by azimuth ``atan2(y, x)`` and elevation above
    the xy plane (rad), the convention of ``sim.viewpoints``."""
    ce = math.cos(elevation_rad)
    return np.array(
        [ce * math.cos(azimuth_rad), ce * math.sin(azimuth_rad), math.sin(elevation_rad)]
    )


def angle_between(a: FloatArray, b: FloatArray) -> float:
    """Great-circle angle (rad) between unit vectors ``a`` and ``b`` (3,)."""
    # atan2(|a x b|, a . b) rather than arccos(a . b): arccos loses half the digits near 0
    # (two equal directions would be 1.5e-8 rad apart) and is NaN past 1 by an ulp.
    return float(np.arctan2(np.linalg.norm(np.cross(a, b)), float(np.dot(a, b))))


def _scenario(scenario: str | Path | Scenario) -> Scenario:
    if isinstance(scenario, Scenario):
        return scenario
    if isinstance(scenario, str | Path):
        return load_scenario(str(scenario))
    raise SpecError(
        f"scenario: expected a bundled name, a YAML path or a Scenario, got "
        f"{type(scenario).__name__}"
    )


def _rewards(rewards: Rewards | Mapping[str, float] | None) -> Rewards:
    if rewards is None:
        return Rewards()
    names = [f.name for f in fields(Rewards)]
    if isinstance(rewards, Rewards):
        values = {n: getattr(rewards, n) for n in names}
    elif isinstance(rewards, Mapping):
        for key in rewards:
            if key not in names:
                raise SpecError(f"rewards: unknown {excerpt(key)}; {allowed(key, names)}")
        values = {**{n: getattr(Rewards(), n) for n in names}, **rewards}
    else:
        raise SpecError(f"rewards: expected a Rewards or a mapping, got {type(rewards).__name__}")
    for key, value in values.items():
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise SpecError(f"rewards.{key}: expected a finite number, got {excerpt(value)}")
    return replace(Rewards(), **{k: float(v) for k, v in values.items()})


class ActiveInspectionEnv(gymnasium.Env[dict[str, Any], Any]):
    """Active inspection of one test part per episode (module docstring: every choice).

    Arguments (each checked before anything is simulated; a bad one raises ``SpecError``
    naming it and what is allowed): ``scenario`` a bundled name, YAML path or ``Scenario``;
    ``detector`` a registered view-level detector and ``detector_params`` its parameters;
    ``budget`` steps per episode (>= 1; default the number of planned views);
    ``motion_cost`` reward per radian the camera travels on the viewing sphere (>= 0);
    ``rewards`` the outcome rewards (``Rewards`` or a mapping of its fields);
    ``action_type`` ``"discrete"`` or ``"continuous"``; ``observe`` any of ``"depth"``,
    ``"twin"``; ``render_mode`` None or ``"rgb_array"`` (real | twin | anomaly map).
    """

    metadata = {"render_modes": list(RENDER_MODES), "render_fps": 2}

    def __init__(
        self,
        scenario: str | Path | Scenario = "tiny",
        detector: str = "ssim_residual",
        detector_params: Mapping[str, Any] | None = None,
        budget: int | None = None,
        motion_cost: float = 0.1,
        rewards: Rewards | Mapping[str, float] | None = None,
        action_type: str = "discrete",
        observe: Sequence[str] = (),
        render_mode: str | None = None,
    ) -> None:
        # Cheap checks first: a typo costs no simulation.
        if action_type not in ACTION_TYPES:
            raise SpecError(
                f"action_type: unknown {excerpt(action_type)}; {allowed(action_type, ACTION_TYPES)}"
            )
        if render_mode is not None and render_mode not in RENDER_MODES:
            raise SpecError(
                f"render_mode: unknown {excerpt(render_mode)}; allowed: None, "
                + ", ".join(RENDER_MODES)
            )
        observe = (observe,) if isinstance(observe, str) else tuple(observe)
        for name in observe:
            if name not in OBSERVE:
                raise SpecError(f"observe: unknown {excerpt(name)}; {allowed(name, OBSERVE)}")
        if budget is not None and (
            isinstance(budget, bool) or not isinstance(budget, int | np.integer) or budget < 1
        ):
            raise SpecError(f"budget: expected an integer >= 1 (or None), got {excerpt(budget)}")
        if (
            isinstance(motion_cost, bool)
            or not isinstance(motion_cost, int | float)
            or not math.isfinite(motion_cost)
            or motion_cost < 0
        ):
            raise SpecError(
                f"motion_cost: expected a finite number >= 0 (reward per radian), "
                f"got {excerpt(motion_cost)}"
            )
        self.rewards = _rewards(rewards)
        if not isinstance(detector, str) or detector not in detectors.available():
            raise SpecError(
                f"detector: unknown {excerpt(detector)}; "
                + allowed(
                    detector, [n for n in detectors.available() if detectors.level(n) == "view"]
                )
            )
        if detectors.level(detector) != "view":
            views = [n for n in detectors.available() if detectors.level(n) == "view"]
            raise SpecError(
                f"detector: {detector} is a part-level (3D) detector; the environment decides "
                f"view by view; allowed: {', '.join(views)}"
            )
        params = detectors.validate_params(detector, dict(detector_params or {}), "detector_params")
        sc = _scenario(scenario)
        if sc.cell.kind == "replay" or (
            sc.cell.hardware is not None and sc.cell.hardware.robot.driver != "sim"
        ):
            # An episode moves the cell and rewards a right call: it needs a simulated
            # cell (one it may move freely, with ground truth to reward against).
            raise SpecError(
                f"scenario: cell.kind {sc.cell.kind} "
                f"({'a recording' if sc.cell.kind == 'replay' else 'real hardware'}); the "
                "environment needs a simulated cell (eye_in_hand, part_in_hand, or hardware "
                "with sim drivers)"
            )

        self.scenario = sc
        self.detector_name = detector
        self.action_type = action_type
        self.observe = observe
        self.render_mode = render_mode
        self.motion_cost = float(motion_cost)
        self._seed = int(sc.seed)  # the world's seed; episodes are drawn by reset(seed=)
        self.view_ids: list[int] = engine.planned_view_ids(sc)
        n = len(self.view_ids)
        if n == 0:
            raise SpecError("scenario: plans no viewpoint; widen viewpoints.elevation_*_deg")
        self.budget = int(budget) if budget is not None else n
        table = engine.sample_table(sc)
        self._index = {(p.index, v): i for i, (p, v) in enumerate(table)}
        self._n_samples = len(table)
        plans = engine.plan_parts(sc)
        self.test_parts: list[PartPlan] = [p for p in plans if p.split == "test"]
        if not self.test_parts:
            raise SpecError("scenario: has no test part to inspect; set split.test_*")
        self._cache: dict[tuple[int, int], Capture] = {}
        self._directions: dict[int, FloatArray] = {}

        self._detector: Detector = detectors.create(detector, **params)
        self.score_threshold, image_hw = self._fit([p for p in plans if p.split == "train"])
        # Normalise by a constant learnt on the train split (never by test statistics).
        self._score_scale = self.score_threshold if self.score_threshold > 0 else 1.0

        h, w = image_hw
        obs: dict[str, spaces.Space[Any]] = {
            "rgb": spaces.Box(0, 255, (h, w, 3), np.uint8),
        }
        if "depth" in observe:
            obs["depth"] = spaces.Box(0.0, DEPTH_MAX_M, (h, w), np.float32)
        if "twin" in observe:
            obs["twin"] = spaces.Box(0, 255, (h, w, 3), np.uint8)
        obs["visited"] = spaces.MultiBinary(n)
        obs["dropped"] = spaces.MultiBinary(n)
        obs["scores"] = spaces.Box(0.0, SCORE_CAP, (n,), np.float32)
        obs["view"] = spaces.Discrete(n)
        obs["budget_left"] = spaces.Box(0.0, 1.0, (1,), np.float32)
        self.observation_space = spaces.Dict(obs)
        self.action_space: spaces.Space[Any]
        if action_type == "discrete":
            self.action_space = spaces.Discrete(n + 2)
        else:
            self.action_space = spaces.Box(-1.0, 1.0, (3,), np.float32)
        #: Discrete actions that declare the part normal / defective.
        self.DECLARE_NORMAL = n
        self.DECLARE_DEFECTIVE = n + 1

        self._part: PartPlan | None = None
        self._done = True

    # -- set-up ---------------------------------------------------------------------------

    def _fit(self, train_parts: Sequence[PartPlan]) -> tuple[float, tuple[int, int]]:
        """Fit the detector on every captured train view; (score threshold, (H, W))."""
        samples = []
        for plan in train_parts:
            for v in self.view_ids:
                s = engine.run_sample(self.scenario, self._seed, self._index[(plan.index, v)])
                if s.arrays is not None:
                    samples.append(sample_from_arrays(s.record, s.arrays))
        if not samples:
            raise CaptureFailed(
                f"scenario {self.scenario.name}: no training view could be captured "
                "(every one unreachable or failed); the detector cannot be fitted"
            )
        log.info("fitting %s on %d training views", self.detector_name, len(samples))
        self._detector.fit(samples)
        threshold = max(float(self._detector.predict(s).score) for s in samples)
        return threshold, (int(samples[0].real.rgb.shape[0]), int(samples[0].real.rgb.shape[1]))

    def _part_directions(self, plan: PartPlan) -> FloatArray:
        """(n_views, 3) unit directions of the planned camera positions in the part's frame."""
        if plan.index not in self._directions:
            i = self._index[(plan.index, self.view_ids[0])]
            # The engine's own progress for this sample index, so the cell is the one
            # run_sample builds (the cell source caches it for the captures that follow).
            cell = engine.cells_for(self.scenario, self._seed).cell(
                plan, self.view_ids[0], i / max(1, self._n_samples - 1)
            )
            planned = cell.plan_viewpoints()
            p = np.array([np.asarray(planned[v])[:3, 3] for v in self.view_ids], dtype=np.float64)
            self._directions[plan.index] = p / np.linalg.norm(p, axis=1, keepdims=True)
        return self._directions[plan.index]

    def _capture(self, plan: PartPlan, view_id: int) -> Capture:
        """The (cached) capture of ``view_id`` of part ``plan``, with its prediction."""
        key = (plan.index, view_id)
        if key not in self._cache:
            s = engine.run_sample(self.scenario, self._seed, self._index[key])
            if s.dropped:
                cap = Capture(None, None, 0.0, s.dropped)
            elif s.failed or s.arrays is None:
                cap = Capture(None, None, 0.0, f"failed: {s.failed}")
            else:
                sample = sample_from_arrays(s.record, s.arrays)
                pred = self._detector.predict(sample)
                assert sample.gt_mask is not None  # simulated samples carry ground truth
                part_mask = np.asarray(s.arrays["real_mask"], dtype=bool) | sample.fg_mask
                assert pred.anomaly_map is not None  # a view-level detector gives a map
                ev = view_evidence(pred.anomaly_map, sample.gt_mask, part_mask)
                cap = Capture(sample, pred, ev)
            self._cache[key] = cap
        return self._cache[key]

    # -- episode --------------------------------------------------------------------------

    @property
    def cached_captures(self) -> int:
        """How many (part, view) captures are held in memory (each rendered once)."""
        return len(self._cache)

    @property
    def view_directions(self) -> FloatArray:
        """(n_views, 3) unit view directions of the current part, in its frame (a copy)."""
        if self._part is None:
            raise RuntimeError("no episode yet; call reset()")
        return self._part_directions(self._part).copy()

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Start an episode: a test part and a reachable start view drawn by ``np_random``
        (``options``: ``part`` a part id, ``view`` a view id, to choose them instead)."""
        super().reset(seed=seed)
        opts = dict(options or {})
        for key in opts:
            if key not in ("part", "view"):
                raise SpecError(f"options: unknown {excerpt(key)}; allowed: part, view")
        ids = [p.part_id for p in self.test_parts]
        if "part" in opts:
            if opts["part"] not in ids:
                raise SpecError(
                    f"options.part: unknown {excerpt(opts['part'])}; {allowed(opts['part'], ids)}"
                )
            parts = [self.test_parts[ids.index(opts["part"])]]
        else:
            parts = [self.test_parts[int(i)] for i in self.np_random.permutation(len(ids))]
        if "view" in opts and opts["view"] not in self.view_ids:
            names = [str(v) for v in self.view_ids]
            given = opts["view"]
            raise SpecError(f"options.view: unknown {excerpt(given)}; {allowed(str(given), names)}")
        n = len(self.view_ids)
        reasons: list[str] = []
        for plan in parts:
            try:
                self._part_directions(plan)
            except CaptureFailed as exc:  # the part's acquisition failed: try another
                reasons.append(f"{plan.part_id}: {exc}")
                continue
            if "view" in opts:
                order = [self.view_ids.index(int(opts["view"]))]
            else:
                order = [int(i) for i in self.np_random.permutation(n)]
            self._visited = np.zeros(n, dtype=np.int8)
            self._dropped = np.zeros(n, dtype=np.int8)
            self._scores = np.zeros(n, dtype=np.float32)
            skipped: list[int] = []
            for pos in order:
                cap = self._capture(plan, self.view_ids[pos])
                if cap.sample is not None:
                    self._part, self._pos, self._steps, self._done = plan, pos, 0, False
                    self._best_evidence = cap.evidence
                    self._see(pos, cap)
                    zero = {"motion": 0.0, "evidence": 0.0, "decision": 0.0}
                    info = self._info(self.view_ids[pos], True, "", 0.0, zero, None)
                    info.update(
                        {"budget_exhausted": False, "projection_rad": 0.0, "skipped_views": skipped}
                    )
                    return self._observation(), info
                self._dropped[pos] = 1
                skipped.append(self.view_ids[pos])
                reasons.append(f"{plan.part_id} view {self.view_ids[pos]}: {cap.reason}")
        raise CaptureFailed(
            "reset: no start view could be captured ("
            + "; ".join(excerpt(r, 80) for r in reasons[:3])
            + (f"; +{len(reasons) - 3} more" if len(reasons) > 3 else "")
            + ")"
        )

    def _see(self, pos: int, cap: Capture) -> None:
        assert cap.prediction is not None
        self._visited[pos] = 1
        self._scores[pos] = min(SCORE_CAP, max(0.0, cap.prediction.score / self._score_scale))

    def step(self, action: Any) -> tuple[dict[str, Any], SupportsFloat, bool, bool, dict[str, Any]]:
        """Move to a view or declare; (observation, reward, terminated, truncated=False, info)."""
        if self._part is None or self._done:
            raise RuntimeError("the episode is over (or never began); call reset()")
        plan = self._part
        label = int(bool(plan.kinds))
        decision, target, requested = self._parse(action)  # a bad action costs no step
        self._steps += 1
        terms = {"motion": 0.0, "evidence": 0.0, "decision": 0.0}
        reachable, reason, projection, skipped = True, "", 0.0, []
        motion_rad = 0.0
        if decision is None:
            dirs = self._part_directions(plan)
            if target is None:  # continuous: nearest reachable planned view
                assert requested is not None
                angles = np.array([angle_between(requested, d) for d in dirs])
                for p in np.argsort(angles, kind="stable"):
                    pos = int(p)
                    if self._dropped[pos]:
                        continue
                    cap = self._capture(plan, self.view_ids[pos])
                    if cap.sample is not None:
                        target, projection = pos, float(angles[pos])
                        break
                    self._dropped[pos] = 1
                    skipped.append(self.view_ids[pos])
                # The current view is reachable (the camera is there), so the loop found one.
                assert target is not None
            cap = self._capture(plan, self.view_ids[target])
            if cap.sample is None:
                reachable, reason = False, cap.reason
                self._dropped[target] = 1
            else:
                # Staying put travels nothing (not the angle's rounding error).
                if target != self._pos:
                    motion_rad = angle_between(dirs[self._pos], dirs[target])
                terms["motion"] = -self.motion_cost * motion_rad
                gain = max(0.0, cap.evidence - self._best_evidence)
                terms["evidence"] = self.rewards.evidence * gain
                self._best_evidence = max(self._best_evidence, cap.evidence)
                self._pos = target
                self._see(target, cap)
        else:
            if decision == label:
                terms["decision"] = self.rewards.correct
            else:
                terms["decision"] = self.rewards.miss if label else self.rewards.false_alarm
        terminated = decision is not None
        exhausted = not terminated and self._steps >= self.budget
        if exhausted:
            terms["decision"] = self.rewards.undecided
            terminated = True
        self._done = terminated
        reward = float(sum(terms.values()))
        req_view = self.view_ids[target] if target is not None else -1
        info = self._info(req_view, reachable, reason, motion_rad, terms, decision)
        info.update(
            {
                "budget_exhausted": exhausted,
                "projection_rad": projection,
                "skipped_views": skipped,
            }
        )
        return self._observation(), reward, terminated, False, info

    def _parse(self, action: Any) -> tuple[int | None, int | None, FloatArray | None]:
        """(decision 0/1 or None, target view index or None, requested direction or None)."""
        if self.action_type == "discrete":
            # An integer (Python or numpy, a 0-d array of one), as Discrete samples it: a
            # float or a vector is a caller's bug, not a view to round to.
            a = np.asarray(action)
            if a.ndim != 0 or not np.issubdtype(a.dtype, np.integer):
                raise ValueError(
                    f"action must be an integer of Discrete({len(self.view_ids) + 2}), got "
                    f"{excerpt(action)}"
                )
            k = int(a)
            if not 0 <= k < len(self.view_ids) + 2:
                raise ValueError(f"action {k} outside Discrete({len(self.view_ids) + 2})")
            if k == self.DECLARE_NORMAL:
                return 0, None, None
            if k == self.DECLARE_DEFECTIVE:
                return 1, None, None
            return None, k, None
        a = np.asarray(action, dtype=np.float64).reshape(-1)
        if a.shape != (3,) or not np.all(np.isfinite(a)):
            raise ValueError(f"action must be 3 finite numbers, got {excerpt(action)}")
        a = np.clip(a, -1.0, 1.0)
        if a[2] > DECIDE_AT:
            return 1, None, None
        if a[2] < -DECIDE_AT:
            return 0, None, None
        return None, None, direction_from_angles(math.pi * a[0], 0.5 * math.pi * a[1])

    def _info(
        self,
        requested: int,
        reachable: bool,
        reason: str,
        motion_rad: float,
        terms: dict[str, float],
        decision: int | None,
    ) -> dict[str, Any]:
        assert self._part is not None
        cap = self._cache[(self._part.index, self.view_ids[self._pos])]
        assert cap.prediction is not None
        label = int(bool(self._part.kinds))
        return {
            "part_id": self._part.part_id,
            "label": label,
            "view_id": self.view_ids[self._pos],
            "requested_view_id": requested,
            "reachable": reachable,
            "reason": reason,
            "score": float(cap.prediction.score),
            "score_norm": float(self._scores[self._pos]),
            "evidence": float(cap.evidence),
            "best_evidence": float(self._best_evidence),
            "motion_rad": float(motion_rad),
            "reward_terms": dict(terms),
            "decision": DECISIONS[decision] if decision is not None else "none",
            "correct": decision is not None and decision == label,
            "steps": int(self._steps),
        }

    def _observation(self) -> dict[str, Any]:
        assert self._part is not None
        cap = self._cache[(self._part.index, self.view_ids[self._pos])]
        assert cap.sample is not None
        # Copies: a caller may keep or modify what it gets; the cache must not change.
        obs: dict[str, Any] = {"rgb": cap.sample.real.rgb.copy()}
        if "depth" in self.observe:
            depth = cap.sample.real.depth
            assert depth is not None
            obs["depth"] = np.clip(depth, 0.0, DEPTH_MAX_M).astype(np.float32)
        if "twin" in self.observe:
            obs["twin"] = cap.sample.twin.rgb.copy()
        obs["visited"] = self._visited.copy()
        obs["dropped"] = self._dropped.copy()
        obs["scores"] = self._scores.copy()
        obs["view"] = np.int64(self._pos)
        left = max(0, self.budget - self._steps) / self.budget
        obs["budget_left"] = np.array([left], dtype=np.float32)
        return obs

    def render(self) -> NDArray[np.uint8] | None:
        """``rgb_array``: (H, 3W, 3) uint8 real | twin | anomaly map (grey, 1.0 = threshold
        and above white) of the current view; None without a render mode."""
        if self.render_mode is None or self._part is None:
            return None
        cap = self._cache[(self._part.index, self.view_ids[self._pos])]
        assert cap.sample is not None and cap.prediction is not None
        amap = np.asarray(cap.prediction.anomaly_map, dtype=np.float64) / self._score_scale
        grey = (np.clip(amap, 0.0, 1.0) * 255.0).astype(np.uint8)
        heat = np.repeat(grey[:, :, None], 3, axis=2)
        return np.concatenate([cap.sample.real.rgb, cap.sample.twin.rgb, heat], axis=1)

    def close(self) -> None:
        """Close this process's render workers and drop the cached captures (idempotent)."""
        engine.close_worker()
        self._cache.clear()
        self._directions.clear()
        self._part, self._done = None, True


if ENV_ID not in gymnasium.registry:
    gymnasium.register(
        id=ENV_ID,
        entry_point="scenarios.env:ActiveInspectionEnv",
        # The env ends its own episodes (budget); a TimeLimit would only duplicate that.
        max_episode_steps=None,
        nondeterministic=False,
    )
