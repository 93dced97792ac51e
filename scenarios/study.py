"""Robustness studies: one scenario swept over a grid of its own fields and seeds.

A study spec (YAML, validated like a scenario, with the same one-line errors) names a base
scenario, optional fixed changes to it (``set``), the ``axes`` to sweep, each a scenario
field by its dotted path with a list of values (``errors.hand_eye.rotation_deg: [0, 0.5,
1]``; a list element by its index, ``detectors.0.params.sigma_px``), and the ``seeds``. Its
``design`` says how the axes combine: ``grid`` (every combination) or ``one_at_a_time``
(each axis swept alone, the others at the base scenario's value: a sensitivity study at a
fraction of a grid's cost).

Each cell, a (point of the design, seed), is an ordinary run directory
(``<study>/cells/<digest>``, named by its scenario's digest: cells of one scenario share
it), run by ``scenarios.engine.run_scenario``: a cell is a pure
function of its scenario and seed, so cells run in any order, in any process, on any
machine that sees the study directory. A finished cell (its manifest ``complete`` or
``unscored`` with the cell's digest) is never run again, so a rerun resumes a study and
runs only the cells that are missing, interrupted or failed; a failed cell is reported, not
fatal. Then ``scenarios.study_report`` collects one table of all metrics (CSV and Parquet)
and the plots.

Executors (``EXECUTORS``): ``pool``, a local process pool (in this process with one
worker); ``ray``, one Ray task per cell on a Ray cluster (``ray.init(address=...)``) or a
local Ray instance, the run directories on storage every node sees. Neither schedules
anything itself: the pool and Ray do.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import multiprocessing
import os
import signal
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from tqdm import tqdm

from scenarios.interfaces import (
    RunDirError,
    SpecError,
    excerpt,
    validation_error_line,
)
from scenarios.rundir import held_lock
from scenarios.spec import (
    MAX_SEED,
    Count,
    Scenario,
    Strict,
    Text,
    load_scenario_data,
    parse_scenario,
)

log = logging.getLogger(__name__)

BUNDLED_STUDIES = "scenarios.studies"
#: How the axes combine into the points of a study.
DESIGNS = ("grid", "one_at_a_time")
EXECUTORS = ("pool", "ray")
MAX_AXES = 6
MAX_WORKERS = 64
MAX_VALUES = 100
MAX_SEEDS = 100
#: Most cells in one study (points x seeds); a larger one is several studies.
MAX_CELLS = 100_000
#: Fields a study may not sweep: the seed is ``seeds``; the name names every cell's run.
FIXED_FIELDS = ("seed", "name")
#: The study's own file in its directory (the spec, its digest, the cells).
STUDY_FILE = "study.json"
#: The study directory's lock (one study runs in a directory at a time).
LOCK_NAME = ".twincell-study-lock"
#: How a finished cell's manifest may end: it is not run again.
DONE = ("complete", "unscored")


class StudySpec(Strict):
    """A study: a base scenario, fixed changes, axes to sweep, seeds and the design."""

    name: Text = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    description: Text = Field("", max_length=500)
    scenario: Text = Field(min_length=1, max_length=500)
    set: dict[str, Any] = Field(default_factory=dict)
    axes: dict[str, list[Any]] = Field(min_length=1, max_length=MAX_AXES)
    design: Literal["grid", "one_at_a_time"] = "grid"
    seeds: list[Count] = Field(default_factory=lambda: [0], min_length=1, max_length=MAX_SEEDS)

    @field_validator("axes")
    @classmethod
    def _axes(cls, v: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for path, values in v.items():
            _check_path(path, f"axes.{path}")
            if not 1 <= len(values) <= MAX_VALUES:
                raise ValueError(f"{path}: give 1 to {MAX_VALUES} values, got {len(values)}")
            keys = [json.dumps(x, sort_keys=True) for x in values]
            if len(set(keys)) != len(keys):
                raise ValueError(f"{path}: a value is given twice")
        return v

    @field_validator("set")
    @classmethod
    def _set(cls, v: dict[str, Any]) -> dict[str, Any]:
        for path in v:
            _check_path(path, f"set.{path}")
        return v

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v: list[int]) -> list[int]:
        if len(set(v)) != len(v):
            raise ValueError("a seed is given twice")
        for s in v:
            if not 0 <= s <= MAX_SEED:
                raise ValueError(f"each seed must be >= 0 and <= {MAX_SEED}, got {s}")
        return v

    @model_validator(mode="after")
    def _disjoint(self) -> StudySpec:
        both = sorted(set(self.set) & set(self.axes))
        if both:
            raise ValueError(f"set: {both[0]} is also an axis; give it in one place")
        return self


def _check_path(path: str, where: str) -> None:
    parts = path.split(".")
    if not path or any(not p for p in parts):
        raise SpecError(f"{where}: a dotted path of scenario fields, e.g. viewpoints.radius_m")
    if parts[0] in FIXED_FIELDS:
        raise SpecError(
            f"{where}: {parts[0]} cannot be swept"
            + (" (list the seeds under `seeds`)" if parts[0] == "seed" else "")
        )
    if parts[0] not in Scenario.model_fields:
        raise SpecError(
            f"{where}: {excerpt(parts[0])} is not a scenario field; allowed: "
            + ", ".join(f for f in Scenario.model_fields if f not in FIXED_FIELDS)
        )


def set_path(data: dict[str, Any], path: str, value: Any, where: str) -> None:
    """Set ``path`` (dotted; a list element by its index) in the scenario data ``data`` in
    place, creating missing mappings on the way; SpecError naming ``where`` when the path
    runs into something that is not a mapping or a list."""
    parts = path.split(".")
    node: Any = data
    for i, key in enumerate(parts):
        last = i == len(parts) - 1
        here = ".".join(parts[: i + 1])
        if isinstance(node, dict):
            if last:
                node[key] = value
                return
            child = node.get(key)
            if child is None:
                child = node[key] = {}
            elif isinstance(child, str) and parts[0] == "detectors":
                # The short form `detectors: [ssim_residual]` names a detector only.
                child = node[key] = {"name": child}
            node = child
        elif isinstance(node, list):
            if not key.isdigit() or int(key) >= len(node):
                raise SpecError(
                    f"{where}: {here}: {excerpt(key)} is not an index of a list of "
                    f"{len(node)} (0 to {len(node) - 1})"
                )
            if last:
                node[int(key)] = value
                return
            if isinstance(node[int(key)], str) and parts[0] == "detectors":
                node[int(key)] = {"name": node[int(key)]}
            node = node[int(key)]
        else:
            raise SpecError(f"{where}: {'.'.join(parts[:i])} is a value, not a group of fields")


def get_path(data: Any, path: str) -> Any:
    """The value at dotted ``path`` of a scenario's JSON dump (None where it is absent)."""
    node = data
    for key in path.split("."):
        if isinstance(node, dict):
            node = node.get(key)
        elif isinstance(node, list) and key.isdigit() and int(key) < len(node):
            node = node[int(key)]
        else:
            return None
    return node


@dataclass(frozen=True)
class Cell:
    """One cell of a study: its index, seed, the swept values (every axis's value in this
    cell, read back from the resolved scenario), which axis the point varies (the design
    ``one_at_a_time``; "" in a grid) and the resolved scenario."""

    index: int
    seed: int
    values: dict[str, Any]
    varied: str
    scenario: Scenario = field(repr=False)

    @property
    def dirname(self) -> str:
        """Its run directory's name: the scenario's digest. Cells of one scenario share a
        run (a one-at-a-time axis through the base value), and a study that gains seeds or
        values keeps the runs it has."""
        return self.scenario.digest()

    @property
    def label(self) -> str:
        """For people: ``cell 3 (errors.hand_eye.rotation_deg=1.0, seed 0)``."""
        values = ", ".join(f"{k}={v}" for k, v in self.values.items())
        return f"cell {self.index} ({values}, seed {self.seed})"

    def row(self) -> dict[str, Any]:
        """The cell's identity for ``study.json`` and the tables."""
        return {
            "cell": self.index,
            "run": f"cells/{self.dirname}",
            "seed": self.seed,
            "varied": self.varied,
            "digest": self.scenario.digest(),
            "values": self.values,
        }


@dataclass(frozen=True)
class Study:
    """A validated study: its spec, cells and digest (equal digests: the same cells)."""

    spec: StudySpec
    cells: tuple[Cell, ...]
    source: str

    def digest(self) -> str:
        blob = json.dumps(
            {"name": self.spec.name, "cells": [c.row() for c in self.cells]}, sort_keys=True
        )
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def bundled_studies() -> dict[str, Path]:
    """Bundled study names and their YAML paths."""
    root = resources.files(BUNDLED_STUDIES)
    return {
        Path(str(p)).stem: Path(str(p))
        for p in sorted(root.iterdir(), key=lambda p: p.name)
        if p.name.endswith(".yaml")
    }


def load_study(name_or_path: str) -> Study:
    """Load and validate a study (a bundled name or a YAML file) and every cell's scenario;
    SpecError (one line, naming the field) on any problem, before anything runs."""
    data, where, base_dir = load_scenario_data(name_or_path, bundled_studies(), kind="study")
    return parse_study(data, where, base_dir)


def design_points(spec: StudySpec) -> list[tuple[dict[str, Any], str]]:
    """The design's points: (the axis values it sets, the axis it varies or "")."""
    if spec.design == "grid":
        names = list(spec.axes)
        return [
            (dict(zip(names, combo, strict=True)), "")
            for combo in itertools.product(*(spec.axes[n] for n in names))
        ]
    return [({name: v}, name) for name, values in spec.axes.items() for v in values]


def parse_study(data: Any, where: str = "study", base_dir: Path | None = None) -> Study:
    """Validate study data into a ``Study`` (see ``load_study``)."""
    base_dir = base_dir or Path(".")
    if not isinstance(data, dict):
        raise SpecError(f"{where}: expected a mapping of fields, got {type(data).__name__}")
    try:
        spec = StudySpec.model_validate(data)
    except ValidationError as err:
        # A whole-study check has no field path: its message names the fields itself.
        line = validation_error_line(err, StudySpec).removeprefix("scenario: ")
        raise SpecError(f"{where}: {line}") from None
    except SpecError as err:
        raise SpecError(f"{where}: {err}") from None
    points = design_points(spec)
    if len(points) * len(spec.seeds) > MAX_CELLS:
        raise SpecError(
            f"{where}: {len(points)} points x {len(spec.seeds)} seeds = "
            f"{len(points) * len(spec.seeds)} cells; at most {MAX_CELLS}"
        )
    # The base scenario is found beside the study file (or among the bundled ones).
    path = base_dir / spec.scenario
    name = str(path) if path.is_file() else spec.scenario
    try:
        base, base_where, scenario_dir = load_scenario_data(name)
    except SpecError as err:
        raise SpecError(f"{where}: scenario: {err}") from None
    if not isinstance(base, dict):
        raise SpecError(f"{where}: scenario: {base_where} holds no mapping of fields")
    for p, value in spec.set.items():
        set_path(base, p, value, f"{where}: set.{p}")
    # The base with its fixed changes, checked once: an error there is the `set`'s, not
    # the first cell's.
    parse_scenario(base, f"{where}: scenario {spec.scenario} with set", scenario_dir)
    cells: list[Cell] = []
    resolved: dict[str, Scenario] = {}  # one validation per point and seed, cached by data
    for point, varied in points:
        data_point = json.loads(json.dumps(base))
        for p, value in point.items():
            set_path(data_point, p, value, f"{where}: axes.{p}")
        for seed in spec.seeds:
            data_cell = {**data_point, "seed": seed}
            key = json.dumps(data_cell, sort_keys=True)
            sc = resolved.get(key)
            if sc is None:
                what = ", ".join(f"{p} = {excerpt(v, 40)}" for p, v in point.items())
                try:
                    sc = parse_scenario(data_cell, f"{where}: the cell {what}", scenario_dir)
                except SpecError as err:
                    raise SpecError(str(err)) from None
                hw = sc.cell.hardware
                if hw is not None and hw.robot.driver != "sim":
                    # A study runs its cells in parallel, each a run with its own drivers:
                    # they would all command the one real robot.
                    raise SpecError(
                        f"{where}: scenario: a study cannot drive real hardware "
                        f"(cell.hardware.robot.driver {hw.robot.driver}); record one run and "
                        "study its replays (cell.kind: replay) instead"
                    )
                resolved[key] = sc
            dump = sc.model_dump(mode="json")
            values = {p: get_path(dump, p) for p in spec.axes}
            cells.append(Cell(len(cells), seed, values, varied, sc))
    # Cells of one scenario share a run; they must then agree on every axis, or the table
    # would show one run's metrics under several values: a field that does not change a
    # run (render.timeout_s, expect) or values that are equal once validated (1 and 1.0).
    seen: dict[str, Cell] = {}
    for c in cells:
        other = seen.setdefault(c.dirname, c)
        if other is not c and other.values == c.values and other.varied == c.varied:
            what = (
                f"axes.{c.varied}: a value is given twice (equal once validated: "
                f"{excerpt(c.values[c.varied], 30)})"
                if c.varied
                else f"axes: a value is given twice (equal once validated: {excerpt(c.values)})"
            )
            raise SpecError(f"{where}: {what}")
        if other.values != c.values:
            axis = next(a for a in spec.axes if other.values[a] != c.values[a])
            raise SpecError(
                f"{where}: axes.{axis}: the values {excerpt(other.values[axis], 30)} and "
                f"{excerpt(c.values[axis], 30)} make the same run (equal once validated, or "
                "a field that does not change a run); sweep another field or drop one"
            )
    return Study(spec, tuple(cells), where)


# ---------------------------------------------------------------------------------------
# Running the cells


@dataclass(frozen=True)
class CellTask:
    """What a worker needs to run one cell: picklable, no open handles."""

    index: int
    scenario: Scenario
    out: str
    threads: int


@dataclass
class CellOutcome:
    """How a cell ended: ``status`` is the run's manifest status (``complete``,
    ``unscored``) or ``failed`` (``error`` says why); ``seconds`` of wall time here,
    ``pairs`` simulated (train and test), ``reused`` when it had finished before."""

    index: int
    status: str
    seconds: float = 0.0
    pairs: int = 0
    error: str = ""
    reused: bool = False


def _limit_threads(threads: int) -> None:
    """Give this process ``threads`` cores: BLAS/OpenMP pools and the path tracer."""
    from threadpoolctl import threadpool_limits

    import scenarios.engine as engine

    threadpool_limits(threads)
    engine._RENDER_THREADS = threads


def run_cell(task: CellTask) -> CellOutcome:
    """Run one cell into its run directory (resuming it); never raises but for Ctrl-C.

    Top-level and picklable: the pool's workers and Ray's tasks call it alike.
    """
    from scenarios.engine import close_worker, run_scenario
    from scenarios.report import write_report

    t0 = time.perf_counter()
    _limit_threads(task.threads)
    out = Path(task.out)
    # A cell's warnings (dropped viewpoints...) are in its manifest and report; printed
    # from every cell they would bury the study's progress.
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.ERROR))
    try:
        manifest = run_scenario(task.scenario, out, workers=1, progress=False, report=write_report)
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # noqa: BLE001 - a failed cell is reported, not fatal
        close_worker()
        return CellOutcome(
            task.index,
            "failed",
            time.perf_counter() - t0,
            error=f"{type(exc).__name__}: {exc}"[:500],
        )
    finally:
        root.setLevel(level)
    return CellOutcome(task.index, manifest["status"], time.perf_counter() - t0, _pairs(manifest))


def _pairs(manifest: dict[str, Any]) -> int:
    """The pairs a run captured (train and test), from its manifest."""
    c = manifest.get("counts", {})
    return int(c.get("train", 0) + c.get("test_normal", 0) + c.get("test_anomalous", 0))


def cell_done(out: Path, cell: Cell) -> CellOutcome | None:
    """The outcome of a cell that finished before (its manifest ``complete`` or
    ``unscored``, of this very scenario), or None: it has to run."""
    try:
        manifest = json.loads((out / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    if manifest.get("status") not in DONE or manifest.get("digest") != cell.scenario.digest():
        return None
    seconds = float(manifest.get("timings_s", {}).get("total", 0.0))
    return CellOutcome(cell.index, manifest["status"], seconds, _pairs(manifest), reused=True)


def _pool_init() -> None:
    # Ctrl-C goes to the parent, which terminates the pool; a worker that saw it too would
    # print a traceback of its own.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


#: Why a cell failed when the process running it died (or the pool broke under it).
WORKER_DIED = (
    "the worker process died (killed, out of memory or crashed); the pool's other "
    "unfinished cells failed with it; rerun to retry"
)


def run_pool(
    tasks: Sequence[CellTask],
    workers: int,
    on_done: Callable[[CellOutcome], None],
    fn: Callable[[CellTask], CellOutcome] = run_cell,
) -> None:
    """Run ``tasks`` (with ``fn``, ``run_cell``) on a local process pool of ``workers``
    (in this process when 1); each outcome goes to ``on_done`` as it finishes.

    A worker process that dies (killed, out of memory, a crashed renderer) breaks the pool:
    every cell not finished by then is reported failed (``WORKER_DIED``) instead of waiting
    for a result that never comes, and a rerun retries them. On Ctrl-C the workers are
    terminated at once (their cells are left to resume)."""
    if workers <= 1 or len(tasks) <= 1:
        from scenarios.engine import check_stop

        for t in tasks:
            check_stop()  # a stop flagged between cells (its interrupt swallowed)
            on_done(fn(t))
        return
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    # spawn, not fork: a forked child would inherit this process's GL/EGL state.
    ex = ProcessPoolExecutor(
        min(workers, len(tasks)),
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_pool_init,
    )
    try:
        pending = {ex.submit(fn, t): t for t in tasks}
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                task = pending.pop(fut)
                try:
                    on_done(fut.result())
                except BrokenProcessPool:
                    on_done(CellOutcome(task.index, "failed", error=WORKER_DIED))
    except BaseException:
        # Python 3.11's executor cannot stop a running task: end its processes.
        for proc in list(getattr(ex, "_processes", {}).values()):
            proc.terminate()
        ex.shutdown(wait=True, cancel_futures=True)
        raise
    ex.shutdown(wait=True)


def check_ray(address: str | None) -> None:
    """Refuse ``--executor ray`` without ray installed (SpecError: what to install)."""
    try:
        import ray  # noqa: F401
    except ImportError:
        raise SpecError(
            "--executor ray: needs ray, which is not installed; run `bash scripts/setup.sh` "
            "(or `pip install 'ray>=2.9'`)"
        ) from None


def run_ray(
    tasks: Sequence[CellTask],
    workers: int,
    on_done: Callable[[CellOutcome], None],
    address: str | None = None,
    fn: Callable[[CellTask], CellOutcome] = run_cell,
) -> None:
    """Run ``tasks`` as Ray tasks, one per cell (``fn``, ``run_cell``; each asks for one
    CPU): on the cluster at ``address`` (``ray.init(address=...)``: "auto",
    "ray://host:10001", ...), or on a local Ray instance of ``workers`` CPUs. The study
    directory must be on storage every node sees. A task Ray loses (its worker or node
    died) is a failed cell, not a failed study. On Ctrl-C the tasks are cancelled. A Ray
    already initialised in this process (a caller's) is used as it is."""
    check_ray(address)
    import ray
    from ray.exceptions import RayError

    started = not ray.is_initialized()
    if started:
        kwargs: dict[str, Any] = {
            "include_dashboard": False,
            "logging_level": logging.WARNING,
            "log_to_driver": False,
        }
        if address is None:
            kwargs["num_cpus"] = workers
        else:
            kwargs["address"] = address
        try:
            ray.init(**kwargs)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            where = f"cannot connect to Ray at {address}" if address else "cannot start Ray"
            raise SpecError(f"--executor ray: {where}: {exc}") from None
    elif address is not None:
        log.warning("Ray is already initialised in this process: --ray-address is not used")
    try:
        remote = ray.remote(num_cpus=1, max_retries=0)(fn)
        pending = {remote.remote(t): t for t in tasks}
        try:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    task = pending.pop(ref)
                    try:
                        outcome = ray.get(ref)
                    except RayError as exc:  # the task's worker or node died, an object lost
                        outcome = CellOutcome(
                            task.index,
                            "failed",
                            error=f"Ray lost the task: {type(exc).__name__}: {exc}"[:500],
                        )
                    on_done(outcome)
        except BaseException:
            for ref in pending:
                ray.cancel(ref, force=True)
            raise
    finally:
        if started:
            ray.shutdown()


@contextmanager
def _study_dir(out: Path, study: Study) -> Iterator[None]:
    """Open (or resume) the study directory ``out``: refuse one of another study (another
    name), or one that holds something else, before anything is written. The same study
    with other axes or seeds may go on there: the cells it shares are kept."""
    record = out / STUDY_FILE
    if out.exists() and not out.is_dir():
        raise RunDirError(f"--out: {out} exists and is not a directory")
    if record.is_file():
        try:
            prior = json.loads(record.read_text())
        except (OSError, ValueError):
            prior = {}
        if prior.get("name") != study.spec.name:
            raise RunDirError(
                f"--out: {out} holds another study ({excerpt(prior.get('name', '?'))}; this "
                f"one is {study.spec.name}); choose another directory or remove it"
            )
    elif out.is_dir() and any(out.iterdir()):
        raise RunDirError(f"--out: {out} is not empty and holds no study; choose another")
    try:
        out.mkdir(parents=True, exist_ok=True)
        lock = os.open(out / LOCK_NAME, os.O_WRONLY | os.O_CREAT, 0o666)
    except OSError as exc:
        raise RunDirError(
            f"--out: cannot write to {out} ({exc.strerror or type(exc).__name__})"
        ) from None
    busy = (
        f"--out: another twincell study is running in {out}; wait for it to end or choose "
        "another directory"
    )
    with held_lock(lock, busy):
        yield


def write_study_record(
    out: Path, study: Study, outcomes: dict[int, CellOutcome], status: str, extra: dict[str, Any]
) -> None:
    """Write ``study.json``: the spec, digest, status, and every cell with its outcome."""
    from scenarios.rundir import write_json

    write_json(
        out / STUDY_FILE,
        {
            "twincell_study": 1,
            "name": study.spec.name,
            "digest": study.digest(),
            "status": status,
            "spec": study.spec.model_dump(mode="json"),
            "cells": [
                {
                    **c.row(),
                    **(
                        {k: v for k, v in asdict(outcomes[c.index]).items() if k != "index"}
                        if c.index in outcomes
                        else {"status": "pending"}
                    ),
                }
                for c in study.cells
            ],
            **extra,
        },
    )


@dataclass
class StudyResult:
    """What ``run_study`` did: each cell's outcome, the wall time, the executor."""

    outcomes: dict[int, CellOutcome]
    seconds: float
    executor: str
    workers: int

    @property
    def failed(self) -> list[CellOutcome]:
        return [o for o in self.outcomes.values() if o.status == "failed"]


def run_study(
    study: Study,
    out: Path,
    executor: str = "pool",
    workers: int = 1,
    ray_address: str | None = None,
    progress: bool = True,
    report: bool = True,
) -> StudyResult:
    """Run every cell of ``study`` that has not finished into ``out/cells/<digest>``, then
    collect the tables and the report (``scenarios.study_report``). Everything that can be
    refused (arguments, a missing backend or Ray, ``out``) is, before anything is written.
    """
    if executor not in EXECUTORS:
        raise SpecError(f"--executor: {excerpt(executor)}; allowed: {', '.join(EXECUTORS)}")
    from scenarios.engine import check_backends, check_out_dir, stopping

    if not 1 <= workers <= MAX_WORKERS:
        raise SpecError(f"--workers: must be >= 1 and <= {MAX_WORKERS}, got {workers}")
    for sc in {c.dirname: c.scenario for c in study.cells}.values():
        check_backends(sc)  # an axis may switch the renderer or add a 3D detector
    if executor == "ray":
        check_ray(ray_address)
    # Ray's workers (on other nodes too) get absolute paths on the shared storage.
    out = out.absolute()
    # Each local worker gets its share of the cores (BLAS, OpenMP, the path tracer); a
    # task on a cluster asks Ray for one CPU and takes one.
    cores = os.cpu_count() or 1
    threads = 1 if ray_address else max(1, cores // min(workers, max(1, len(study.cells))))
    t0 = time.perf_counter()
    with _study_dir(out, study):
        outcomes: dict[int, CellOutcome] = {}
        todo: list[CellTask] = []
        # Cells of one scenario (one run directory) run once; the others take its outcome.
        first: dict[str, int] = {}
        same: dict[int, list[int]] = {}
        for c in study.cells:
            if c.dirname in first:
                same.setdefault(first[c.dirname], []).append(c.index)
                continue
            first[c.dirname] = c.index
            cell_out = out / "cells" / c.dirname
            prior = cell_done(cell_out, c)
            if prior is not None:
                outcomes[c.index] = prior
                continue
            if cell_out.exists():
                check_out_dir(cell_out, c.scenario)  # refuse a foreign run, before any work
            todo.append(CellTask(c.index, c.scenario, str(cell_out), threads))
        for i, copies in same.items():
            if i in outcomes:
                for j in copies:
                    outcomes[j] = replace(outcomes[i], index=j)
        extra = {"executor": executor, "workers": workers}
        write_study_record(out, study, outcomes, "running", extra)
        bar = tqdm(
            total=len(study.cells),
            initial=len(outcomes),
            desc=f"study {study.spec.name}",
            unit="cell",
            disable=not progress,
        )

        def on_done(o: CellOutcome) -> None:
            outcomes[o.index] = o
            for j in same.get(o.index, []):
                outcomes[j] = replace(o, index=j)
            if o.status == "failed":
                bar.write(f"twincell: {study.cells[o.index].label} failed: {o.error}")
            bar.update(1 + len(same.get(o.index, [])))
            write_study_record(out, study, outcomes, "running", extra)

        try:
            with bar:
                if executor == "ray":
                    run_ray(todo, workers, on_done, ray_address)
                else:
                    run_pool(todo, workers, on_done)
        except BaseException as exc:
            if stopping(exc):
                write_study_record(out, study, outcomes, "interrupted", extra)
                if isinstance(exc, KeyboardInterrupt):
                    raise
                raise KeyboardInterrupt from exc
            extra["error"] = f"{type(exc).__name__}: {exc}"[:500]
            write_study_record(out, study, outcomes, "failed", extra)
            raise
        seconds = time.perf_counter() - t0
        failed = any(o.status == "failed" for o in outcomes.values())
        result = StudyResult(outcomes, seconds, executor, workers)
        extra["seconds"] = round(seconds, 3)
        write_study_record(out, study, outcomes, "failed_cells" if failed else "complete", extra)
        if report:
            from scenarios.study_report import write_study_report

            write_study_report(out, study)
    return result


def cells_by_status(outcomes: Iterable[CellOutcome]) -> dict[str, int]:
    """How many cells ended each way."""
    counts: dict[str, int] = {}
    for o in outcomes:
        counts[o.status] = counts.get(o.status, 0) + 1
    return dict(sorted(counts.items()))
