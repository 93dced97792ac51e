"""The public Cell checker runs over every Cell implementation, and the engine runs a cell
that is not the simulator's: it speaks ``Cell`` and ``CellSource`` only."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from scenarios import engine
from scenarios.checks import check_cell
from scenarios.engine import plan_parts, run_scenario
from scenarios.interfaces import (
    Cell,
    DefectRecord,
    GroundTruth,
    Observation,
    PartInfo,
    PartPlan,
)
from scenarios.report import write_report
from scenarios.rundir import load_samples
from scenarios.spec import load_scenario
from sim.cells.factory import open_cells


@pytest.fixture(scope="module")
def sim_cell():  # type: ignore[no-untyped-def]
    sc = load_scenario("tiny")
    plan = plan_parts(sc)[-1]  # a defective test part
    source = open_cells(sc, sc.seed)
    try:
        yield source.cell(plan, engine.planned_view_ids(sc)[0], 0.0)
    finally:
        source.close()


def test_sim_cell_passes_the_cell_checker(sim_cell: Cell) -> None:
    check_cell(sim_cell)


def test_checker_catches_a_bad_cell() -> None:
    class Broken:
        last_failure = ""

        def part(self) -> PartInfo:
            return PartInfo("p", "c")

        def plan_viewpoints(self) -> dict[int, np.ndarray]:
            return {0: np.eye(4)[:3]}

        def move_to(self, view_id: int) -> bool:
            return True

    with pytest.raises(AssertionError, match="viewpoint 0"):
        check_cell(Broken())  # type: ignore[arg-type]


class FakeCell:
    """A cell that is not the simulator: a flat grey 'part' disc on black, a bright blob
    where the part is defective, the twin the same disc without it. View 3 is unreachable."""

    SIZE = 48

    def __init__(self, plan: PartPlan, view_id: int) -> None:
        self.plan = plan
        self.view_id = view_id
        self.last_failure = ""
        self._moved = False

    def part(self) -> PartInfo:
        defects = tuple(DefectRecord(k, 2.0, {}) for k in self.plan.kinds)
        return PartInfo(self.plan.part_id, "fake", defects, {"fake": True})

    def plan_viewpoints(self) -> dict[int, np.ndarray]:
        out = {}
        for v in range(4):
            T = np.eye(4)
            T[:3, 3] = (0.0, 0.0, -0.2 - 0.01 * v)
            out[v] = T
        return out

    def move_to(self, view_id: int) -> bool:
        self._moved = view_id != 3
        self.last_failure = "" if self._moved else "unreachable (fake)"
        return self._moved

    def _disc(self) -> np.ndarray:
        yy, xx = np.mgrid[: self.SIZE, : self.SIZE]
        return (yy - 24) ** 2 + (xx - 24) ** 2 < 15**2

    def capture(self) -> Observation:
        assert self._moved
        rgb = np.zeros((self.SIZE, self.SIZE, 3), np.uint8)
        rgb[self._disc()] = 120
        if self.plan.kinds:
            rgb[20:26, 20:26] = 250
        return Observation(rgb, np.eye(3), np.eye(4), meta={"T_base_obj": np.eye(4)})

    def render_twin(self) -> Observation:
        rgb = np.zeros((self.SIZE, self.SIZE, 3), np.uint8)
        rgb[self._disc()] = 120
        # No part pose in the twin's meta: a cell need not know it.
        return Observation(rgb, np.eye(3), np.eye(4), mask=self._disc())

    def ground_truth(self) -> GroundTruth:
        gt = np.zeros((self.SIZE, self.SIZE), bool)
        if self.plan.kinds:
            gt[20:26, 20:26] = True
        return GroundTruth(self._disc(), gt, tuple(int(gt.sum()) for _ in self.plan.kinds))


class FakeSource:
    def cell(self, plan: PartPlan, view_id: int, progress: float) -> FakeCell:
        return FakeCell(plan, view_id)

    def part_files(self, plan: PartPlan) -> dict[str, bytes]:
        return {}

    def run_info(self) -> dict[str, Any]:
        return {"fake": "calibrated"}

    def close(self) -> None:
        pass


def test_the_engine_runs_a_cell_that_is_not_the_simulator(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = types.ModuleType("fake_cells")
    module.view_ids = lambda sc: [0, 1, 2, 3]  # type: ignore[attr-defined]
    module.open_cells = lambda sc, seed, threads=0, prior=None: FakeSource()  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "fake_cells", module)
    monkeypatch.setitem(engine.CELL_KINDS, "eye_in_hand", "fake_cells")
    sc = load_scenario("tiny")
    check_cell(FakeCell(plan_parts(sc)[-1], 0))
    out = tmp_path / "run"
    manifest = run_scenario(sc, out, workers=1, progress=False, report=write_report)
    assert manifest["status"] == "complete"
    assert manifest["cell"] == {"fake": "calibrated"}
    n_parts = len(plan_parts(sc))
    assert manifest["dropped_viewpoints"]["count"] == n_parts  # view 3 of every part
    samples = load_samples(out)
    assert len(samples) == 3 * n_parts
    assert {s.category for s in samples} == {"fake"}
    assert any(s.label == 1 for s in samples) and any(s.label == 0 for s in samples)
    metrics = json.loads((out / "metrics.json").read_text())["detectors"]
    # The blob is the only difference between real and twin: a residual finds it.
    assert metrics["rgb_residual"]["i_auroc"] == 1.0
    assert not (out / "meshes").exists()
    record = json.loads((out / "samples" / samples[0].id / "record.json").read_text())
    assert record["T_base_obj_twin"] is None and record["acquisition"] == {"fake": True}
