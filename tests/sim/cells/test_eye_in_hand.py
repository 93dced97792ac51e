"""Tests of the simulated cell: exact ground truth, reproducibility, pose errors, reachability.

The cells are built the way the engine builds them (``scenarios.engine``), from the bundled
"tiny" scenario (96 x 96 images). Every distinct mesh gets its own part id: the renderer
caches uploads by a key the cell derives from the part id.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import pytest

from scenarios import engine
from scenarios.interfaces import DefectRecord
from scenarios.spec import Scenario, load_scenario, parse_scenario
from sim.cells import factory
from sim.cells.eye_in_hand import Capture, EyeInHandCell, PartPlacement
from sim.defects import Defect, Step, build_part_instance, cylinder
from sim.geometry import (
    invert_pose,
    look_at,
    make_pose,
    pose_from_xyz_rpy,
    project_points,
    transform_points,
)
from sim.parts import MM, build_model, make_params
from sim.render.pyrender_backend import PyrenderRenderer
from sim.robot_scene import RobotScene

TINY = load_scenario("tiny")
SIZE = (TINY.cell.camera.width, TINY.cell.camera.height)
ZERO = {"translation_mm": 0.0, "rotation_deg": 0.0}


def _exact(sc: Scenario) -> Scenario:
    """``sc`` with every pose error source set to zero."""
    data = sc.model_dump(mode="json")
    data["errors"] = {"mode": "model", "robot": ZERO, "hand_eye": ZERO, "object_pose": ZERO}
    return parse_scenario(data, "test")


EXACT = _exact(TINY)


@pytest.fixture
def renderer(renderer_for: Callable[[int, int], PyrenderRenderer]) -> PyrenderRenderer:
    """The session renderer for the tiny scenario's image size."""
    return renderer_for(*SIZE)


def _placement(
    sc: Scenario, part_id: str, kinds: tuple[str, ...], index: int = 2, seed: int | None = None
) -> PartPlacement:
    """The engine's placement of part ``index`` (its seeds), under a test-unique part id."""
    plan = engine.PartPlan(index, part_id, "test", kinds)
    placement: PartPlacement = factory.build_placement(sc, sc.seed if seed is None else seed, plan)
    return placement


@contextmanager
def _cell(
    sc: Scenario, placement: PartPlacement, renderer: PyrenderRenderer, capture_seed: int = 0
) -> Iterator[EyeInHandCell]:
    with RobotScene(sc.cell.robot, placement.T_base_obj, placement.part.nominal.bounds) as scene:
        yield EyeInHandCell(
            factory.cell_setup(sc, sc.seed),
            placement,
            scene,
            renderer,
            np.random.default_rng(capture_seed),
        )


def _captures(
    sc: Scenario, placement: PartPlacement, renderer: PyrenderRenderer, capture_seed: int = 0
) -> dict[int, Capture]:
    """Captures at every reachable planned viewpoint, in view order."""
    out = {}
    with _cell(sc, placement, renderer, capture_seed) as cell:
        for vid in cell.plan_viewpoints():
            if cell.move_to(vid):
                out[vid] = cell.capture_pair()
    assert len(out) >= 2, "the tiny scenario should reach most of its viewpoints"
    return out


def _through_hole_placement() -> tuple[PartPlacement, np.ndarray]:
    """The default part with one 6 mm hole drilled through the 10 mm flange plate, between
    the hub and the edge; returns the placement and the hole's top centre (object frame)."""
    top = np.array([0.032, 0.0, 0.010])
    T_tool = make_pose(np.diag([1.0, -1.0, -1.0]), top + np.array([0.0, 0.0, 1.0 * MM]))
    tool = cylinder(T_tool, 3.0 * MM, 14.0 * MM)
    record = DefectRecord("hole", 6.0, {"diameter_mm": 6.0})
    hole = Defect("hole", (Step("remove", tool),), record)
    family = "flange_bearing_seat"
    model = build_model(family, make_params(family))
    part = build_part_instance("through-hole", family, model, [hole])
    T_obj = pose_from_xyz_rpy((0.5, 0.02, 0.0), (0.0, 0.0, np.radians(30.0)))
    return PartPlacement(part, T_obj, T_obj.copy()), top


def _assert_capture_shapes(cap: Capture) -> None:
    W, H = SIZE
    for m in (cap.gt_mask, cap.real_mask, cap.twin_mask):
        assert m.shape == (H, W) and m.dtype == bool
    for obs in (cap.real, cap.twin):
        assert obs.rgb.shape == (H, W, 3) and obs.rgb.dtype == np.uint8
    assert cap.defect_px.shape == (len(cap.defect_px),)


def test_nominal_part_has_no_ground_truth_in_any_view(renderer: PyrenderRenderer) -> None:
    """A defect-free part (with the scenario's robot error) is normal in every view."""
    caps = _captures(TINY, _placement(TINY, "cell-nominal", ()), renderer)
    for vid, cap in caps.items():
        _assert_capture_shapes(cap)
        assert not cap.gt_mask.any(), vid
        assert cap.defect_px.shape == (0,)
        assert cap.real_mask.sum() > 500 and cap.twin_mask.sum() > 500  # the part is in view


def test_through_hole_ground_truth_includes_missing_material(
    renderer: PyrenderRenderer,
) -> None:
    """Looking down a hole drilled through the flange, the real image shows the table
    through it (not part), yet those pixels are anomalous: the nominal twin shows flange
    material there (docs/architecture.md, Ground truth). gt stays within real | twin."""
    placement, top = _through_hole_placement()
    top_base = transform_points(placement.T_base_obj, top[None])[0]
    with _cell(EXACT, placement, renderer) as cell:
        assert cell.move_camera(look_at(top_base + np.array([0.0, 0.0, 0.2]), top_base)), (
            cell.last_failure
        )
        cap = cell.capture_pair()
    _assert_capture_shapes(cap)
    see_through = cap.gt_mask & ~cap.real_mask
    assert see_through.sum() >= 8  # ~5 px wide hole at 1.2 mm/px
    assert (see_through <= cap.twin_mask).all()
    assert (cap.gt_mask <= (cap.real_mask | cap.twin_mask)).all()
    # The twin differs from the real silhouette exactly by the hole.
    np.testing.assert_array_equal(cap.real_mask ^ cap.twin_mask, see_through)
    assert cap.defect_px.tolist() == [int(cap.gt_mask.sum())]
    # The hole's axis projects into the anomalous region, and gt is local to the hole.
    uv = project_points(
        transform_points(invert_pose(cap.real.T_base_cam), top_base[None]), cap.real.K
    )[0]
    u, v = np.rint(uv).astype(int)
    assert cap.gt_mask[v, u]
    vv, uu = np.nonzero(cap.gt_mask)
    assert np.hypot(uu - uv[0], vv - uv[1]).max() < 5.0


def test_scenario_defective_part_ground_truth(renderer: PyrenderRenderer) -> None:
    """The tiny scenario's hole + scratch part: some view shows a defect; in every view gt
    lies within real | twin masks and agrees with the per-defect pixel counts."""
    kinds = engine.plan_parts(TINY)[2].kinds
    assert set(kinds) == {"hole", "scratch"}
    caps = _captures(TINY, _placement(TINY, "cell-hole-scratch", kinds), renderer)
    shown = 0
    for vid, cap in caps.items():
        _assert_capture_shapes(cap)
        gt = cap.gt_mask
        assert (gt <= (cap.real_mask | cap.twin_mask)).all(), vid
        assert cap.defect_px.shape == (2,)
        assert cap.defect_px.max() <= gt.sum() <= cap.defect_px.sum()
        shown += bool(gt.any())
    assert shown >= 1


def test_same_seeds_reproduce_identical_captures(renderer: PyrenderRenderer) -> None:
    """Rebuilding the part (booleans included) and the cell from the same seeds gives the
    same bytes; another capture seed changes the real image (look, noise) but not the twin
    or the ground truth."""
    kinds = ("hole", "sink")
    a = _captures(TINY, _placement(TINY, "repro-a", kinds), renderer, capture_seed=3)
    b = _captures(TINY, _placement(TINY, "repro-b", kinds), renderer, capture_seed=3)
    assert a.keys() == b.keys()
    for vid in a:
        for name in ("gt_mask", "real_mask", "twin_mask", "defect_px"):
            assert getattr(a[vid], name).tobytes() == getattr(b[vid], name).tobytes(), name
        for side in ("real", "twin"):
            oa, ob = getattr(a[vid], side), getattr(b[vid], side)
            assert oa.rgb.tobytes() == ob.rgb.tobytes(), side
            assert oa.depth.tobytes() == ob.depth.tobytes(), side
            assert oa.T_base_cam.tobytes() == ob.T_base_cam.tobytes(), side
    assert any(a[v].gt_mask.any() for v in a)

    c = _captures(TINY, _placement(TINY, "repro-a", kinds), renderer, capture_seed=4)
    assert c.keys() == a.keys()
    assert any(c[v].real.rgb.tobytes() != a[v].real.rgb.tobytes() for v in a)
    for vid in a:
        # The tiny scenario has only robot error; it moves the real camera by ~0.2 mm.
        assert c[vid].twin.rgb.tobytes() == a[vid].twin.rgb.tobytes()


def test_zero_pose_errors_make_twin_and_real_silhouettes_agree(
    renderer: PyrenderRenderer,
) -> None:
    """With every error source at 0 the twin camera is the real camera, and for a nominal
    part the twin mask equals the real mask up to 1 % of the silhouette."""
    caps = _captures(EXACT, _placement(EXACT, "cell-exact", ()), renderer)
    for vid, cap in caps.items():
        np.testing.assert_array_equal(cap.real.T_base_cam, cap.twin.T_base_cam)
        assert (cap.real_mask ^ cap.twin_mask).sum() <= 0.01 * cap.real_mask.sum(), vid
        assert not cap.gt_mask.any()


def test_unreachable_viewpoint_is_refused(renderer: PyrenderRenderer) -> None:
    """A camera pose 2 m away is refused with a reason; capturing then is an error."""
    placement = _placement(TINY, "cell-reach", ())
    with _cell(TINY, placement, renderer) as cell:
        good = next(iter(cell.plan_viewpoints()))
        assert cell.move_to(good), cell.last_failure
        assert cell.last_failure == ""
        center = transform_points(placement.T_base_obj, placement.center_obj[None])[0]
        far = look_at(center + np.array([2.0, 0.0, 0.3]), center)
        assert not cell.move_camera(far)
        assert "unreachable" in cell.last_failure
        assert not cell.move_to(9999)
        assert "no planned view" in cell.last_failure
        with pytest.raises(RuntimeError):
            cell.capture_pair()


def test_renders_do_not_depend_on_previous_parts_with_the_same_id(
    renderer: PyrenderRenderer,
) -> None:
    """The same placement captured under two part ids gives the same images, even when a
    different part carrying the first id was rendered just before."""
    kinds = ("hole", "scratch")
    other = _placement(TINY, "shared-id", kinds, seed=0)
    _captures(TINY, other, renderer)
    fresh = _captures(TINY, _placement(TINY, "unique-id", kinds, seed=1), renderer)
    reused = _captures(TINY, _placement(TINY, "shared-id", kinds, seed=1), renderer)
    assert fresh.keys() == reused.keys()
    for vid in fresh:
        assert fresh[vid].real.rgb.tobytes() == reused[vid].real.rgb.tobytes()
        assert fresh[vid].gt_mask.tobytes() == reused[vid].gt_mask.tobytes()


def test_colliding_viewpoint_is_refused(renderer: PyrenderRenderer) -> None:
    """A planned direction at 4 cm instead of 20 cm: IK reaches it, but the hand, whose
    fingers reach past the camera, hits the part or the table. Refused, and it says so."""
    placement = _placement(TINY, "cell-collide", ())
    with _cell(TINY, placement, renderer) as cell:
        center = transform_points(placement.T_base_obj, placement.center_obj[None])[0]
        T_far = placement.T_base_obj_twin @ next(iter(cell.plan_viewpoints().values()))
        direction = (T_far[:3, 3] - center) / np.linalg.norm(T_far[:3, 3] - center)
        close = look_at(center + 0.04 * direction, center)
        assert not cell.move_camera(close)
        assert cell.last_failure.startswith("collision (")
        assert "table" in cell.last_failure or "part" in cell.last_failure
