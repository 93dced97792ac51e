"""The benign gap: each effect is drawn where it varies on a real cell, seeded."""

from __future__ import annotations

import numpy as np
import pytest

from scenarios.interfaces import PartPlan
from scenarios.spec import load_scenario
from sim.appearance import (
    MATERIAL_CLASSES,
    AppearanceGap,
    make_clutter,
    make_station,
    part_finish,
    scratch_finish,
)
from sim.cells import factory

SC = load_scenario("tiny")


def test_a_part_instance_owns_its_finish() -> None:
    """One part keeps one material in every view; another part differs; same seed, same."""
    a = factory.build_placement(SC, 0, PartPlan(0, "part000", "train", ()))
    again = factory.build_placement(SC, 0, PartPlan(0, "part000", "train", ()))
    b = factory.build_placement(SC, 0, PartPlan(1, "part001", "train", ()))
    assert a.finish == again.finish
    assert a.finish != b.finish
    assert a.finish.finish == b.finish.finish == "turned"
    assert a.finish.seed != b.finish.seed


def test_finish_stays_near_its_class() -> None:
    gap = AppearanceGap(material="machined_steel", finish_jitter=0.05)
    nominal = MATERIAL_CLASSES["machined_steel"]
    for s in range(20):
        m = part_finish(gap, np.random.default_rng(s))
        assert np.allclose(m.base_color, nominal.base_color, rtol=0.03)
        assert abs(m.roughness - nominal.roughness) <= 0.15 * nominal.roughness + 1e-9
        assert m.metallic == nominal.metallic


def test_the_station_is_fixed_per_run_and_drifts_only_when_asked() -> None:
    setup = factory.cell_setup(SC, 0)
    assert factory.cell_setup(SC, 0).station.key_power == setup.station.key_power
    assert factory.cell_setup(SC, 1).station.key_power != setup.station.key_power
    center = np.array([0.5, 0.0, 0.03])
    finish = MATERIAL_CLASSES["machined_aluminium"]
    st = setup.station
    assert st.drift_deg == 0.0
    first, last = st.look(finish, center, 0.0), st.look(finish, center, 1.0)
    assert np.array_equal(first.lights[0].T_base_light, last.lights[0].T_base_light)
    drifting = make_station(
        AppearanceGap(light_drift_deg=30.0), center, 0.05, 0.03, 20.0, np.random.default_rng(0)
    )
    a = drifting.look(finish, center, 0.0).lights[0].T_base_light[:3, 3] - center
    b = drifting.look(finish, center, 1.0).lights[0].T_base_light[:3, 3] - center
    yaw = np.degrees(np.arctan2(b[1], b[0]) - np.arctan2(a[1], a[0]))
    assert (yaw + 180) % 360 - 180 == pytest.approx(30.0, abs=1e-6)


@pytest.mark.parametrize("elev", [5.0, 20.0, 45.0])
def test_clutter_stays_clear_of_the_part_and_below_the_sight_lines(elev: float) -> None:
    center = np.array([0.5, 0.0, 0.0])
    inner = 0.08
    items = make_clutter(20, center, inner, elev, np.random.default_rng(7))
    assert len(items) == 20
    for it in items:
        assert not it.is_part
        verts = it.mesh.vertices @ it.T_base_obj[:3, :3].T + it.T_base_obj[:3, 3]
        d = np.linalg.norm(verts[:, :2] - center[:2], axis=1)
        assert d.min() > inner - 1e-9  # nothing stands on the part's footprint
        assert verts[:, 2].min() >= -1e-9  # on the bench, not in it
        # Every vertex stays below the sight line of a camera at the lowest elevation that
        # grazes the part's outer edge.
        assert np.all(verts[:, 2] <= (d - inner) * np.tan(np.radians(elev)) + 1e-9)


def test_scratch_finish_runs_along_the_scratch() -> None:
    base = MATERIAL_CLASSES["machined_aluminium"]
    s = scratch_finish(base, np.array([0.0, 2.0, 0.0]), 1.2)
    assert s.finish == "scratch"
    d = (s.param("dir_x", 9), s.param("dir_y", 9), s.param("dir_z", 9))
    assert d == pytest.approx((0.0, 1.0, 0.0))
    assert s.param("width_mm", 0) == 1.2
    assert s.roughness > base.roughness
