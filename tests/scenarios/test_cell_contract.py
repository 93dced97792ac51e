"""The public Cell checker runs over every Cell implementation (today: the simulated cell)."""

from __future__ import annotations

import numpy as np
import pytest

from scenarios.checks import check_cell
from scenarios.engine import plan_parts
from scenarios.spec import load_scenario
from sim.cell import SimCell
from sim.factory import STREAM_CAPTURE, build_placement, cell_setup, rng_for
from sim.render.pyrender_backend import PyrenderRenderer
from sim.robot_scene import RobotScene


@pytest.fixture(scope="module")
def sim_cell():  # type: ignore[no-untyped-def]
    sc = load_scenario("tiny")
    plan = plan_parts(sc)[-1]  # a defective test part
    placement = build_placement(sc, sc.seed, plan)
    renderer = PyrenderRenderer()
    with RobotScene(sc.cell.robot, placement.T_base_obj, placement.part.nominal.bounds) as scene:
        yield SimCell(
            cell_setup(sc, sc.seed),
            placement,
            scene,
            renderer,
            rng_for(sc.seed, STREAM_CAPTURE, plan.index, 0),
        )
    renderer.close()


def test_sim_cell_passes_the_cell_checker(sim_cell: SimCell) -> None:
    check_cell(sim_cell)


def test_checker_catches_a_bad_cell(sim_cell: SimCell) -> None:
    class Broken:
        def plan_viewpoints(self) -> dict[int, np.ndarray]:
            return {0: np.eye(4)[:3]}

        def move_to(self, T: np.ndarray) -> bool:
            return True

    with pytest.raises(AssertionError, match="viewpoint 0"):
        check_cell(Broken())  # type: ignore[arg-type]
