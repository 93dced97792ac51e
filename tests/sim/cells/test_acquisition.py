"""Tests of the acquisition an eye-in-hand cell runs (hand-eye calibration, object pose
estimation), of physics placement, of the twin's bench, and of the cell's point clouds.

The acquisition scenario is small (160 x 160 camera, 10 calibration poses, one flange with
a hole, a coarse template set) and built the way the engine builds it
(``sim.cells.factory.open_cells``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import trimesh

from scenarios.engine import PartPlan, plan_parts
from scenarios.spec import Scenario, parse_scenario
from sim.appearance import TWIN_PART, table_mesh, twin_look
from sim.cells.eye_in_hand import Capture, EyeInHandCell, PartPlacement, bench_z
from sim.cells.factory import build_placement, cell_setup, open_cells
from sim.geometry import invert_pose, look_at, pose_error, transform_points
from sim.render import MeshItem, RenderScene
from sim.render.pyrender_backend import PyrenderRenderer
from sim.robot_scene import RobotScene

ZERO = {"translation_mm": 0.0, "rotation_deg": 0.0}


def _scenario(mode: str, seed: int = 0, size: int = 160) -> Scenario:
    """An eye-in-hand scenario with one flange (a hole in it), in ``errors.mode`` ``mode``
    (model mode: every pose error zero)."""
    errors: dict[str, Any] = {"mode": mode}
    if mode == "model":
        errors.update(robot=ZERO, hand_eye=ZERO, object_pose=ZERO)
    return parse_scenario(
        {
            "name": "acquisition-test",
            "seed": seed,
            "cell": {
                "camera": {"width": size, "height": size, "hfov_deg": 40},
                "calibration": {"poses": 10},
                "pose_estimation": {"subdivisions": 1},
                "depth": {"points": True},
            },
            "part": {
                "families": [
                    {"family": "flange_bearing_seat", "test_defective": 1, "kinds": ["hole"]}
                ]
            },
            "viewpoints": {"subdivisions": 0},
            "errors": errors,
            "appearance": {"clutter": 0},
            "detectors": ["rgb_residual"],
        },
        "test",
    )


@dataclass
class Acquired:
    """What one source measured: the set-up, the part's placement, captures by view."""

    setup: Any
    placement: PartPlacement
    captures: dict[int, Capture]


def _acquire(sc: Scenario, seed: int, n_views: int) -> Acquired:
    source = open_cells(sc, seed)
    try:
        plan = plan_parts(sc)[0]
        setup = source.setup()
        placement, _ = source.part(plan)
        captures: dict[int, Capture] = {}
        for vid in sorted(source.cell(plan, 0, 0.0).plan_viewpoints()):
            if len(captures) == n_views:
                break
            cell = source.cell(plan, vid, 0.0)
            if cell.move_to(vid):
                captures[vid] = cell.capture_pair()
        return Acquired(setup, placement, captures)
    finally:
        source.close()


@pytest.fixture(scope="module")
def acquired() -> Acquired:
    return _acquire(_scenario("acquisition"), 0, n_views=3)


# ---------------------------------------------------------------------------------------
# Hand-eye calibration and object pose estimation.


@pytest.mark.slow
def test_hand_eye_is_calibrated_not_copied(acquired: Acquired) -> None:
    setup = acquired.setup
    he = setup.info["hand_eye"]
    # Measured (seed 0): 0.99 mm, 0.138 deg, 9 of 10 poses used (1 rejected).
    assert he["translation_error_mm"] < 3.0
    assert he["rotation_error_deg"] < 0.5
    assert he["poses"] >= 6 and he["poses"] + he["rejected"] <= 10
    np.testing.assert_allclose(he["T_ee_cam"], setup.T_ee_cam_believed)
    # The believed mount is the measured one: it differs from the true mount, by what the
    # record says.
    dt, dr = pose_error(setup.T_ee_cam, setup.T_ee_cam_believed)
    assert dt > 1e-5
    assert dt * 1e3 == pytest.approx(he["translation_error_mm"], abs=1e-3)
    assert np.degrees(dr) == pytest.approx(he["rotation_error_deg"], abs=1e-3)


@pytest.mark.slow
def test_object_pose_is_estimated_not_copied(acquired: Acquired) -> None:
    pl = acquired.placement
    est = pl.info["pose_estimate"]
    assert isinstance(est, dict)
    # Measured (seed 0): ADD-S 2.41 mm, translation 1.32 mm, silhouette IoU 0.913.
    # (The rotation error reads ~90 deg: the flange's bolt pattern is symmetric, which
    # ADD-S accounts for.)
    assert est["add_s_mm"] < 5.0
    assert est["iou"] > 0.8
    dt, _ = pose_error(pl.T_base_obj, pl.T_base_obj_twin)
    assert not np.allclose(pl.T_base_obj, pl.T_base_obj_twin)
    assert dt * 1e3 == pytest.approx(est["translation_mm"], abs=1e-3)
    placed = pl.info["placement"]
    assert isinstance(placed, dict) and placed["method"] == "drop"


@pytest.mark.slow
def test_acquisition_is_deterministic(acquired: Acquired) -> None:
    again = _acquire(_scenario("acquisition"), 0, n_views=1)
    np.testing.assert_array_equal(again.setup.T_ee_cam_believed, acquired.setup.T_ee_cam_believed)
    assert again.setup.info == acquired.setup.info
    np.testing.assert_array_equal(
        again.placement.T_base_obj_twin, acquired.placement.T_base_obj_twin
    )
    np.testing.assert_array_equal(again.placement.T_base_obj, acquired.placement.T_base_obj)
    assert again.placement.info == acquired.placement.info
    vid = min(again.captures)
    np.testing.assert_array_equal(again.captures[vid].real.rgb, acquired.captures[vid].real.rgb)


# ---------------------------------------------------------------------------------------
# The cell's point clouds (acquisition mode: believed poses differ from the true ones).


@pytest.mark.slow
def test_points_are_cropped_around_the_part_and_labelled_by_the_pixel_truth(
    acquired: Acquired,
) -> None:
    pl = acquired.placement
    assert len(acquired.captures) >= 2
    lo, hi = np.asarray(pl.part.nominal.bounds)
    for vid, cap in acquired.captures.items():
        real = cap.real
        assert real.points is not None and real.point_pixels is not None
        assert cap.point_labels is not None and len(real.points) > 500, vid
        # Base frame, around the part where it truly lies: the crop box is the believed
        # part's box plus 5 mm, and the believed pose is a few mm off (measured: at most
        # 5.4 mm outside the true box).
        P = transform_points(invert_pose(pl.T_base_obj), real.points)
        assert (P >= lo - 0.01).all() and (P <= hi + 0.01).all(), vid
        assert real.points[:, 2].min() > 0.001  # the bench plane is removed
        np.testing.assert_array_equal(cap.point_labels, cap.gt_mask.ravel()[real.point_pixels])
        # Most points are on the real part (sensor noise, flying pixels and dropouts
        # aside; measured: 98.1-98.6% within 3 mm, median 0.15 mm).
        _, d, _ = trimesh.proximity.closest_point(pl.part.mesh, P)
        assert np.mean(d < 3e-3) > 0.95, vid
        assert np.median(d) < 1e-3, vid
        # The twin's points are ideal and lie on the nominal part at the believed pose
        # (measured: at most 0.033 mm).
        twin = cap.twin
        assert twin.points is not None and len(twin.points) > 500
        Pt = transform_points(invert_pose(pl.T_base_obj_twin), twin.points)
        _, dt, _ = trimesh.proximity.closest_point(pl.part.nominal, Pt)
        assert dt.max() < 5e-4, vid


# ---------------------------------------------------------------------------------------
# Physics placement.


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_dropped_part_rests_on_the_table(seed: int) -> None:
    sc = _scenario("model", seed=seed)
    plan = plan_parts(sc)[0]
    pl = build_placement(sc, seed, plan)
    placed = pl.info["placement"]
    assert isinstance(placed, dict) and placed["method"] == "drop"
    z = transform_points(pl.T_base_obj, np.asarray(pl.part.mesh.vertices))[:, 2]
    # Measured: the lowest vertex within 1e-18 m of the bench top.
    assert abs(float(z.min())) < 5e-5
    # It lands where the scenario puts it (within the placement jitter, 5 mm).
    xy = pl.T_base_obj[:2, 3]
    assert np.linalg.norm(xy - np.asarray(sc.part.placement.position_m)) < 0.006 + 0.01


# ---------------------------------------------------------------------------------------
# The twin's bench.


@pytest.fixture
def renderer(renderer_for: Callable[[int, int], PyrenderRenderer]) -> PyrenderRenderer:
    return renderer_for(160, 160)


def _mask(
    renderer: PyrenderRenderer,
    sc: Scenario,
    pl: PartPlacement,
    T_base_obj: np.ndarray,
    T_base_cam: np.ndarray,
    table_z: float | None,
) -> np.ndarray:
    """The nominal part's mask at ``T_base_obj``, on a bench at ``table_z`` (None: no
    bench)."""
    look = twin_look(np.zeros(3))
    items = [MeshItem("test_acquisition/nominal", pl.part.nominal, T_base_obj, {0: TWIN_PART})]
    if table_z is not None:
        T_table = np.eye(4)
        T_table[2, 3] = table_z
        items.append(MeshItem("table", table_mesh(), T_table, {0: look.table}, is_part=False))
    setup = cell_setup(sc, sc.seed)
    cam = setup.camera
    out = renderer.render(
        RenderScene(tuple(items), look.lights), cam.K, cam.image_size, T_base_cam, dist=cam.dist
    )
    return out.mask


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


@pytest.fixture
def lowered() -> Iterator[tuple[Scenario, PartPlacement, np.ndarray]]:
    """A model-mode placement whose believed pose is the true pose 4.5 mm into the table."""
    sc = _scenario("model")
    pl = build_placement(sc, sc.seed, PartPlan(0, "acq-lowered", "test", ()))
    T_low = pl.T_base_obj.copy()
    T_low[2, 3] -= 0.0045
    yield sc, dataclasses.replace(pl, T_base_obj_twin=T_low), T_low


@pytest.mark.slow
def test_the_table_does_not_hide_a_believed_pose_below_it(
    renderer: PyrenderRenderer, lowered: tuple[Scenario, PartPlacement, np.ndarray]
) -> None:
    sc, pl, T_low = lowered
    z_min = transform_points(T_low, np.asarray(pl.part.nominal.vertices))[:, 2].min()
    assert bench_z(pl, T_low) == pytest.approx(float(z_min), abs=1e-9)
    assert bench_z(pl, T_low) == pytest.approx(-0.0045, abs=5e-5)
    assert bench_z(pl, pl.T_base_obj) == pytest.approx(0.0, abs=5e-5)
    # A low oblique view, where a bench at z = 0 would hide the part's lowered foot.
    centre = T_low[:3, 3] + np.array([0.0, 0.0, 0.01])
    el, az = np.radians(12.0), np.radians(200.0)
    eye = centre + 0.3 * np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])
    T_base_cam = look_at(eye, centre)
    with RobotScene(sc.cell.robot, pl.T_base_obj, pl.part.nominal.bounds) as scene:
        cell = EyeInHandCell(cell_setup(sc, sc.seed), pl, scene, renderer, np.random.default_rng(0))
        cell.place_camera(T_base_cam)
        cap = cell.capture_pair()
    np.testing.assert_allclose(cap.twin.T_base_cam, T_base_cam, atol=1e-12)
    np.testing.assert_array_equal(cap.twin.meta["T_base_obj"], T_low)
    bare = _mask(renderer, sc, pl, T_low, T_base_cam, None)
    assert _iou(cap.twin_mask, bare) > 0.99  # measured: 1.0
    # The check can fail: a bench left at z = 0 hides a visible band of the part.
    hidden = _mask(renderer, sc, pl, T_low, T_base_cam, 0.0)
    assert _iou(hidden, bare) < 0.97  # measured: 0.862
    # The twin's points are cropped at its own bench: the believed foot below z = 0 stays.
    assert cap.twin.points is not None
    z = cap.twin.points[:, 2]
    assert z.min() < -0.002 and z.min() > bench_z(pl, T_low)


def test_a_measured_set_up_is_reused_not_measured_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pool workers and resumed runs get the run's cell.json: its calibration is used as
    it stands, and no calibration runs."""
    import sim.cells.acquisition as acquisition

    def no(*args: object, **kwargs: object) -> None:
        raise AssertionError("calibrated again")

    monkeypatch.setattr(acquisition, "calibrate_hand_eye", no)
    T = np.eye(4)
    T[:3, 3] = (0.051, -0.001, 0.0305)
    prior = {"hand_eye": {"T_ee_cam": T.tolist(), "translation_error_mm": 1.2}}
    source = open_cells(_scenario("acquisition"), 0, prior=prior)
    try:
        setup = source.setup()
        np.testing.assert_array_equal(setup.T_ee_cam_believed, T)
        assert source.run_info() == prior
    finally:
        source.close()
