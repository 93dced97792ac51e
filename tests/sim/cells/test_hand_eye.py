"""Eye-in-hand calibration: board rendering, corner detection, board pose, AX = XB solvers."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from scenarios.interfaces import TwincellError
from sim.cells.hand_eye import (
    HAND_EYE_METHODS,
    Board,
    CalibrationFailed,
    HandEyeResult,
    board_scene,
    calibrate,
    calibration_poses,
    detect_board,
    find_corners,
    solve_hand_eye,
)
from sim.geometry import (
    intrinsics_from_fov,
    invert_pose,
    look_at,
    make_pose,
    pose_error,
    project_points,
    rotation_matrix,
    transform_points,
)
from sim.render.pyrender_backend import PyrenderRenderer

# The camera: 1280 x 960, 45 degrees across, an ideal lens unless a test says otherwise.
W, H = 1280, 960
K = intrinsics_from_fov(W, H, np.radians(45.0))
BOARD = Board()  # 9 x 6 inner corners, 12 mm squares
T_BASE_BOARD = BOARD.on_table((0.45, 0.05), yaw_rad=0.4)
CENTRE = transform_points(T_BASE_BOARD, BOARD.center[None])[0]
# The true mount: 5.4 cm from the flange, turned 5.4 degrees; the nominal (CAD) mount the
# robot is driven with is 3.5 mm and 5.4 degrees off it.
T_EE_CAM_TRUE = make_pose(rotation_matrix(np.radians([2.0, -3.0, 4.0])), [0.03, -0.02, 0.04])
T_EE_CAM_NOMINAL = make_pose(np.eye(3), [0.032, -0.018, 0.042])
N_POSES = 16
SEED = 0


def _truth_T_cam_board(T_base_cam: np.ndarray) -> np.ndarray:
    return invert_pose(T_base_cam) @ T_BASE_BOARD


class SimCapture:
    """A noise-free cell: drives the flange with the nominal mount, renders the board from
    where the real camera then is, and reports the flange pose exactly. Frames are cached
    by target so that several solvers can run on the same captures."""

    def __init__(self, renderer: PyrenderRenderer, reachable: Callable[[int], bool] | None = None):
        self.renderer = renderer
        self.scene = board_scene(BOARD, T_BASE_BOARD)
        self.frames: dict[bytes, tuple[np.ndarray, np.ndarray]] = {}
        self.reachable = reachable or (lambda i: True)
        self.calls = 0

    def __call__(self, T_base_cam_target: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        self.calls += 1
        if not self.reachable(self.calls - 1):
            return None
        key = T_base_cam_target.tobytes()
        if key not in self.frames:
            T_base_ee = T_base_cam_target @ invert_pose(T_EE_CAM_NOMINAL)
            T_base_cam = T_base_ee @ T_EE_CAM_TRUE
            rgb = self.renderer.render(self.scene, K, (W, H), T_base_cam).rgb
            self.frames[key] = (rgb, T_base_ee)
        return self.frames[key]


@pytest.fixture(scope="module")
def renderer(renderer_for: Callable[[int, int], PyrenderRenderer]) -> PyrenderRenderer:
    return renderer_for(W, H)


@pytest.fixture(scope="module")
def sim_capture(renderer: PyrenderRenderer) -> SimCapture:
    return SimCapture(renderer)


@pytest.fixture(scope="module")
def poses() -> list[np.ndarray]:
    return calibration_poses(T_BASE_BOARD, BOARD, N_POSES, np.random.default_rng(SEED))


# ------------------------------------------------------------------------------------------
# Board and poses (no rendering)
# ------------------------------------------------------------------------------------------


def test_board_mesh_geometry_and_labels() -> None:
    mesh, labels = BOARD.mesh()
    assert labels.shape == (len(mesh.faces),) and labels.dtype == np.int32
    assert set(np.unique(labels)) == {0, 1}
    # Black area: half of the (cols + 1) x (rows + 1) squares, the origin square black.
    n_black = ((BOARD.cols + 1) * (BOARD.rows + 1) + 1) // 2
    assert mesh.area_faces[labels == 1].sum() == pytest.approx(n_black * BOARD.square_m**2)
    assert np.all(mesh.face_normals[labels == 1][:, 2] > 0.999)  # black squares face up
    assert mesh.bounds[1, 2] == pytest.approx(0.0) and mesh.bounds[0, 2] == pytest.approx(
        -BOARD.thickness_m
    )
    # Lying on the table: bottom on z = 0, top (and the corners) at the thickness.
    corners_base = transform_points(T_BASE_BOARD, BOARD.object_points())
    assert np.allclose(corners_base[:, 2], BOARD.thickness_m)
    assert transform_points(T_BASE_BOARD, mesh.vertices)[:, 2].min() == pytest.approx(0.0)
    assert np.allclose(CENTRE[:2], (0.45, 0.05))


def test_board_rejects_symmetric_pattern() -> None:
    with pytest.raises(ValueError, match="odd"):
        Board(cols=8, rows=6)


def test_object_points_row_major_from_origin() -> None:
    pts = BOARD.object_points()
    assert pts.shape == (BOARD.cols * BOARD.rows, 3)
    s = BOARD.square_m
    assert np.allclose(pts[0], (s, s, 0)) and np.allclose(pts[1], (2 * s, s, 0))
    assert np.allclose(pts[BOARD.cols], (s, 2 * s, 0))


def test_calibration_poses_deterministic_and_aimed() -> None:
    a = calibration_poses(T_BASE_BOARD, BOARD, 10, np.random.default_rng(3))
    b = calibration_poses(T_BASE_BOARD, BOARD, 10, np.random.default_rng(3))
    c = calibration_poses(T_BASE_BOARD, BOARD, 10, np.random.default_rng(4))
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not np.allclose(a[0], c[0])
    tilts, rolls = [], []
    for T in a:
        assert T.shape == (4, 4) and T.dtype == np.float64
        assert np.allclose(T[:3, :3].T @ T[:3, :3], np.eye(3), atol=1e-12)
        centre_cam = transform_points(invert_pose(T), CENTRE[None])[0]
        assert np.allclose(centre_cam[:2], 0.0, atol=1e-9)  # on the optical axis
        assert 0.25 <= centre_cam[2] <= 0.40
        tilt = np.degrees(np.arccos(-T[2, 2]))  # camera z vs straight down
        assert tilt <= 35.0 + 1e-9
        tilts.append(tilt)
        # Roll about the optical axis, from the unrolled view (image up = board +y).
        D = invert_pose(look_at(T[:3, 3], CENTRE, up=T_BASE_BOARD[:3, 1])) @ T
        assert np.allclose(D[:3, 2], (0, 0, 1), atol=1e-9)
        rolls.append(np.degrees(np.arctan2(D[1, 0], D[0, 0])))
    # Rotation diversity: tilts and rolls both spread out; the azimuth goes round.
    assert np.ptp(tilts) > 10.0 and np.ptp(rolls) > 45.0 and max(np.abs(rolls)) <= 45.0
    headings = sorted(np.arctan2(T[1, 3] - CENTRE[1], T[0, 3] - CENTRE[0]) for T in a)
    gaps = np.diff([*headings, headings[0] + 2 * np.pi])
    assert gaps.max() < np.radians(90.0)


def test_solve_hand_eye_exact_poses() -> None:
    poses = calibration_poses(T_BASE_BOARD, BOARD, 8, np.random.default_rng(1))
    ees = [T @ invert_pose(T_EE_CAM_TRUE) for T in poses]
    boards = [_truth_T_cam_board(T) for T in poses]
    for method in HAND_EYE_METHODS:
        dt, dr = pose_error(T_EE_CAM_TRUE, solve_hand_eye(ees, boards, method))
        assert dt < 1e-7 and dr < 1e-7, method


def test_unknown_method_lists_allowed() -> None:
    with pytest.raises(ValueError, match="tsai, park, horaud, andreff, daniilidis"):
        solve_hand_eye([np.eye(4)] * 3, [np.eye(4)] * 3, "nope")
    with pytest.raises(ValueError, match="allowed"):
        calibrate(lambda T: None, [np.eye(4)] * 4, K, None, BOARD, method="nope")


def test_too_few_captures_raise() -> None:
    poses = calibration_poses(T_BASE_BOARD, BOARD, 6, np.random.default_rng(2))
    blank = np.full((H, W, 3), 128, np.uint8)
    answers = iter([None, None, None, (blank, np.eye(4)), (blank, np.eye(4)), None])

    def capture(T: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        return next(answers)

    with pytest.raises(CalibrationFailed, match=r"0 usable captures of 6.*4 unreachable.*in 2"):
        calibrate(capture, poses, K, None, BOARD)
    assert issubclass(CalibrationFailed, TwincellError)


def test_result_error_to() -> None:
    T = T_EE_CAM_TRUE @ make_pose(rotation_matrix([0.0, 0.0, 0.01]), [0.001, 0.0, 0.0])
    res = HandEyeResult(T, "park", 5, 0, 0.05)
    dt, dr = res.error_to(T_EE_CAM_TRUE)
    assert dt == pytest.approx(0.001) and dr == pytest.approx(0.01)


# ------------------------------------------------------------------------------------------
# Detection on renders
# ------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("roll_deg", [0.0, 90.0, 180.0, 270.0])
def test_corner_order_matches_object_points(renderer: PyrenderRenderer, roll_deg: float) -> None:
    """Whatever corner OpenCV starts from, the returned order is object_points' order."""
    eye = CENTRE + np.array([0.08, -0.05, 0.30])
    roll = make_pose(rotation_matrix([0.0, 0.0, np.radians(roll_deg)]), np.zeros(3))
    T_base_cam = look_at(eye, CENTRE) @ roll
    rgb = renderer.render(board_scene(BOARD, T_BASE_BOARD), K, (W, H), T_base_cam).rgb
    corners = find_corners(rgb, BOARD)
    assert corners is not None
    corners_cam = transform_points(_truth_T_cam_board(T_base_cam), BOARD.object_points())
    truth = project_points(corners_cam, K)
    assert np.abs(corners - truth).max() < 0.3


@pytest.mark.slow
@pytest.mark.parametrize(
    "dist", [None, np.array([-0.08, 0.03, 0.0005, -0.0003, 0.0])], ids=["ideal", "distorted"]
)
def test_detect_board_pose(renderer: PyrenderRenderer, dist: np.ndarray | None) -> None:
    T_base_cam = calibration_poses(T_BASE_BOARD, BOARD, 1, np.random.default_rng(7))[0]
    out = renderer.render(board_scene(BOARD, T_BASE_BOARD), K, (W, H), T_base_cam, dist=dist)
    found = detect_board(out.rgb, K, dist, BOARD)
    assert found is not None
    T_cam_board, rms = found
    dt, dr = pose_error(_truth_T_cam_board(T_base_cam), T_cam_board)
    assert dt < 0.5e-3 and dr < np.radians(0.05)
    assert rms < 0.2


@pytest.mark.slow
def test_detect_board_out_of_view(renderer: PyrenderRenderer) -> None:
    T_base_cam = look_at(CENTRE + np.array([0.0, 0.0, 0.3]), CENTRE + np.array([0.3, 0.0, 0.0]))
    rgb = renderer.render(board_scene(BOARD, T_BASE_BOARD), K, (W, H), T_base_cam).rgb
    assert detect_board(rgb, K, None, BOARD) is None
    assert detect_board(np.zeros((H, W, 3), np.uint8), K, None, BOARD) is None


# ------------------------------------------------------------------------------------------
# Calibration end to end
# ------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_calibrate_recovers_T_ee_cam(sim_capture: SimCapture, poses: list[np.ndarray]) -> None:
    """Noise-free robot, rendered images: T_ee_cam to 0.1 mm and 0.05 degrees."""
    res = calibrate(sim_capture, poses, K, None, BOARD, method="park")
    dt, dr = res.error_to(T_EE_CAM_TRUE)
    assert dt < 0.1e-3, f"{dt * 1e3:.3f} mm"
    assert dr < np.radians(0.05), f"{np.degrees(dr):.4f} deg"
    assert res.method == "park"
    assert res.n_poses + res.n_rejected == N_POSES and res.n_poses >= N_POSES - 2
    assert res.reprojection_px < 0.1


@pytest.mark.slow
@pytest.mark.parametrize("method", list(HAND_EYE_METHODS))
def test_every_method_close(sim_capture: SimCapture, poses: list[np.ndarray], method: str) -> None:
    res = calibrate(sim_capture, poses, K, None, BOARD, method=method)
    dt, dr = res.error_to(T_EE_CAM_TRUE)
    assert dt < 0.25e-3 and dr < np.radians(0.1), (method, dt, np.degrees(dr))


@pytest.mark.slow
def test_unreachable_poses_are_counted(sim_capture: SimCapture, poses: list[np.ndarray]) -> None:
    capture = SimCapture(sim_capture.renderer, reachable=lambda i: i % 4 != 0)
    capture.frames = sim_capture.frames  # the same cell: reuse its frames
    res = calibrate(capture, poses[:8], K, None, BOARD)
    assert res.n_poses == 6 and res.n_rejected == 2
    dt, dr = res.error_to(T_EE_CAM_TRUE)
    assert dt < 0.5e-3 and dr < np.radians(0.1)
