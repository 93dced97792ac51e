"""The robot-less drivers: the manual turntable's reachable and unreachable viewpoints, and
the hand-held part's pose recovered from a synthetic checkerboard image."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from scenarios.drivers.base import Frame, Intrinsics
from scenarios.drivers.fixed import BoardPoseDriver, TurntableDriver, board_pose
from scenarios.interfaces import CaptureFailed, SpecError


class RecordingOperator:
    """An operator who does at once what is asked, and remembers it."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def ask(self, message: str) -> None:
        self.asked.append(message)


def rz(deg: float) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = Rotation.from_euler("z", deg, degrees=True).as_matrix()
    return T


def look_at(eye: tuple[float, float, float], target: tuple[float, float, float]) -> np.ndarray:
    """The OpenCV camera pose (z forward, y down) at ``eye`` looking at ``target``, z up."""
    z = np.subtract(target, eye, dtype=np.float64)
    z /= np.linalg.norm(z)
    x = np.cross(z, [0.0, 0.0, 1.0])
    x = x / np.linalg.norm(x) if np.linalg.norm(x) > 1e-9 else np.array([1.0, 0.0, 0.0])
    y = np.cross(z, x)
    T = np.eye(4)
    T[:3, :3] = np.stack([x, y, z], axis=1)
    T[:3, 3] = eye
    return T


def rot_deg(A: np.ndarray, B: np.ndarray) -> float:
    return float(np.degrees(Rotation.from_matrix(A[:3, :3].T @ B[:3, :3]).magnitude()))


# -- turntable -----------------------------------------------------------------------------

T_CAM0 = look_at((0.30, 0.0, 0.20), (0.0, 0.0, 0.02))


@pytest.mark.parametrize("theta", [37.5, 200.0, 359.0])
def test_turntable_reaches_a_turned_viewpoint_by_asking_the_operator(theta: float) -> None:
    op = RecordingOperator()
    tt = TurntableDriver(T_CAM0, op)
    target = rz(-theta) @ T_CAM0
    assert tt.move_to(target, 0.1) is True
    assert tt.last_failure == ""
    assert op.asked == [
        f"turn the turntable to {theta:.1f} deg (counter-clockwise seen from above, from its "
        "0 deg mark)"
    ]
    assert tt.angle_deg == pytest.approx(theta)
    np.testing.assert_allclose(tt.read_pose(), target, atol=1e-12)


def test_turntable_accepts_a_target_within_tolerance_and_skips_a_null_turn() -> None:
    op = RecordingOperator()
    tt = TurntableDriver(T_CAM0, op, tol_mm=2.0, tol_deg=2.0)
    near = rz(-90.0) @ T_CAM0
    near[:3, 3] += [0.001, 0.0, -0.001]  # 1.4 mm off
    assert tt.move_to(near, 0.1) is True
    assert tt.angle_deg == pytest.approx(90.0, abs=0.5)
    np.testing.assert_allclose(tt.read_pose(), rz(-tt.angle_deg) @ T_CAM0, atol=1e-12)
    assert tt.move_to(tt.read_pose(), 0.1) is True  # already there
    assert len(op.asked) == 1


def test_turntable_starts_at_zero() -> None:
    tt = TurntableDriver(T_CAM0, RecordingOperator())
    np.testing.assert_allclose(tt.read_pose(), T_CAM0)


@pytest.mark.parametrize(
    ("target", "reason"),
    [
        (look_at((0.30, 0.0, 0.35), (0.0, 0.0, 0.02)), "0.350 m above the platter"),  # elevation
        (look_at((0.0, 0.45, 0.20), (0.0, 0.0, 0.02)), "0.450 m from its axis"),  # distance
        (T_CAM0 @ rz(10.0), "leaves the camera 0.0 mm and 10.0 deg from the target"),  # roll
    ],
)
def test_turntable_refuses_what_a_turn_cannot_reach(target: np.ndarray, reason: str) -> None:
    op = RecordingOperator()
    tt = TurntableDriver(T_CAM0, op)
    tt.move_to(rz(-45.0) @ T_CAM0, 0.1)
    before = tt.read_pose()
    assert tt.move_to(target, 0.1) is False
    assert tt.last_failure.startswith("not reachable by turning the turntable")
    assert reason in tt.last_failure
    assert "\n" not in tt.last_failure
    assert len(op.asked) == 1  # not asked for the refused one
    np.testing.assert_array_equal(tt.read_pose(), before)


def test_turntable_with_the_camera_on_its_axis_turns_by_orientation() -> None:
    top = look_at((0.0, 0.0, 0.5), (0.0, 0.0, 0.0))
    tt = TurntableDriver(top, RecordingOperator())
    assert tt.move_to(rz(-120.0) @ top, 0.1) is True
    assert tt.angle_deg == pytest.approx(120.0)


# -- hand-held part with a checkerboard ----------------------------------------------------

COLS, ROWS, SQUARE_M = 9, 6, 0.025
WIDTH, HEIGHT = 640, 480
LENS = Intrinsics(WIDTH, HEIGHT, np.array([[620.0, 0, 321.3], [0, 615.0, 238.7], [0, 0, 1]]))
#: The part's pose in the board frame: 40 mm beyond the board's centre, turned about z.
T_BOARD_OBJ = np.eye(4)
T_BOARD_OBJ[:3, :3] = Rotation.from_euler("z", 30, degrees=True).as_matrix()
T_BOARD_OBJ[:3, 3] = [0.1, 0.0625, 0.04]


def render_board(T_cam_board: np.ndarray, ss: int = 4) -> np.ndarray:
    """An (H, W, 3) uint8 image of the board at ``T_cam_board`` on a grey background:
    a drawn board warped by the plane's homography at ``ss`` x the size, then averaged down
    (anti-aliased edges)."""
    P = 40  # texture pixels per square
    m = P  # white margin around the squares
    tex = np.full((2 * m + (ROWS + 1) * P, 2 * m + (COLS + 1) * P), 235, np.uint8)
    for q in range(ROWS + 1):
        for p in range(COLS + 1):
            if (p + q) % 2 == 0:  # the outer square at the first inner corner is black
                tex[m + q * P : m + (q + 1) * P, m + p * P : m + (p + 1) * P] = 25
    # Texture pixel (u, v) -> board point (X, Y) in metres: the first inner corner is the
    # boundary between squares 0 and 1, at texture coordinate m + P - 0.5.
    o = m + P - 0.5
    A = np.array(
        [[SQUARE_M / P, 0, -o * SQUARE_M / P], [0, SQUARE_M / P, -o * SQUARE_M / P], [0, 0, 1]]
    )
    # The supersampled image's pixel centre u' sits at (u' + 0.5) / ss - 0.5 in the image.
    K = LENS.K.copy()
    K[:2] *= ss
    K[:2, 2] += (ss - 1) / 2
    Hm = K @ T_cam_board[:3, [0, 1, 3]] @ A
    big = cv2.warpPerspective(
        tex, Hm, (WIDTH * ss, HEIGHT * ss), flags=cv2.INTER_LINEAR, borderValue=128
    )
    small = cv2.resize(big, (WIDTH, HEIGHT), interpolation=cv2.INTER_AREA)
    return np.repeat(small[:, :, None], 3, axis=2)


def board_in_view(distance: float, tilt_x: float, tilt_y: float, spin: float) -> np.ndarray:
    """``T_cam_board``: the board's centre ``distance`` m ahead, its printed side towards the
    camera, spun ``spin`` deg in its plane and tilted ``tilt_x``, ``tilt_y`` deg."""
    R = Rotation.from_euler("xyz", [tilt_x, tilt_y, spin], degrees=True).as_matrix()
    centre = np.array([(COLS - 1) * SQUARE_M / 2, (ROWS - 1) * SQUARE_M / 2, 0.0])
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = np.array([0.01, -0.015, distance]) - R @ centre
    return T


class FramesCamera:
    """A camera that delivers the given images in turn, counting its captures."""

    def __init__(self, images: list[np.ndarray]) -> None:
        self.images = list(images)
        self.captures = 0

    def configure(self) -> None: ...
    def activate(self) -> None: ...
    def deactivate(self) -> None: ...
    def cleanup(self) -> None: ...

    def intrinsics(self) -> Intrinsics:
        return LENS

    def capture(self) -> Frame:
        self.captures += 1
        return Frame(rgb=self.images.pop(0), timestamp=float(self.captures))


def _board_driver(
    images: list[np.ndarray],
) -> tuple[BoardPoseDriver, FramesCamera, RecordingOperator]:
    inner, op = FramesCamera(images), RecordingOperator()
    d = BoardPoseDriver(
        inner, cols=COLS, rows=ROWS, square_mm=SQUARE_M * 1000, T_board_obj=T_BOARD_OBJ, operator=op
    )
    for x in (d.camera, d):
        x.configure()
        x.activate()
    return d, inner, op


VIEWS = [
    (0.45, 0.0, 0.0, 0.0),
    (0.40, 25.0, -10.0, 15.0),
    (0.50, -20.0, 30.0, 90.0),
    (0.42, 10.0, 20.0, 180.0),  # upside down: the squares' colours tell the corner order
    (0.48, -30.0, -15.0, 250.0),
]


@pytest.mark.parametrize("view", VIEWS)
def test_board_pose_is_recovered_from_the_image(view: tuple[float, float, float, float]) -> None:
    T_cam_board = board_in_view(*view)
    d, inner, _ = _board_driver([render_board(T_cam_board)])
    frame = d.camera.capture()
    T_obj_cam = d.read_pose()
    truth = np.linalg.inv(T_BOARD_OBJ) @ np.linalg.inv(T_cam_board)
    # The part's pose in the camera (what the twin is rendered at): within 1 mm and 0.5 deg.
    # (The camera's position in the part frame carries the rotation error times the
    # distance: 0.15 deg at 0.45 m is 1.2 mm for a board facing the camera squarely.)
    T_cam_obj, truth_cam_obj = np.linalg.inv(T_obj_cam), np.linalg.inv(truth)
    assert np.linalg.norm(T_cam_obj[:3, 3] - truth_cam_obj[:3, 3]) < 1e-3
    assert rot_deg(T_obj_cam, truth) < 0.5
    T_est = board_pose(frame.rgb, LENS, COLS, ROWS, SQUARE_M)
    assert np.linalg.norm(T_est[:3, 3] - T_cam_board[:3, 3]) < 1e-3
    assert rot_deg(T_est, T_cam_board) < 0.5
    assert inner.captures == 1


@pytest.mark.parametrize(
    "reorder",
    [
        lambda g: g[::-1, ::-1],  # the board's 180 deg twin: told apart by the colours
        lambda g: g[:, ::-1],  # mirrored orders: told apart by the handedness
        lambda g: g[::-1, :],
    ],
    ids=["turned", "mirrored-x", "mirrored-y"],
)
def test_board_pose_does_not_depend_on_the_detectors_corner_order(
    monkeypatch: pytest.MonkeyPatch, reorder: object
) -> None:
    """OpenCV may list the corners from another end of the board; the pose is the same."""
    T_cam_board = board_in_view(0.42, 15.0, -10.0, 30.0)
    img = render_board(T_cam_board)
    detect = cv2.findChessboardCorners

    def reordered(gray: np.ndarray, size: tuple[int, int], **kw: int) -> tuple[bool, np.ndarray]:
        ok, corners = detect(gray, size, **kw)
        grid = reorder(corners.reshape(size[1], size[0], 2))  # type: ignore[operator]
        return ok, np.ascontiguousarray(grid.reshape(-1, 1, 2))

    monkeypatch.setattr(cv2, "findChessboardCorners", reordered)
    T_est = board_pose(img, LENS, COLS, ROWS, SQUARE_M)
    assert np.linalg.norm(T_est[:3, 3] - T_cam_board[:3, 3]) < 1e-3
    assert rot_deg(T_est, T_cam_board) < 0.5


def test_read_pose_before_capture_measures_the_frame_capture_then_delivers() -> None:
    img = render_board(board_in_view(0.45, 10.0, 5.0, 30.0))
    d, inner, _ = _board_driver([img, np.zeros_like(img)])
    T = d.read_pose()
    frame = d.camera.capture()
    assert inner.captures == 1  # the same frame: no second capture
    np.testing.assert_array_equal(frame.rgb, img)
    np.testing.assert_array_equal(d.read_pose(), T)


def test_a_move_asks_the_operator_and_forgets_the_old_frame() -> None:
    T1 = board_in_view(0.45, 0.0, 0.0, 0.0)
    T2 = board_in_view(0.40, 20.0, 0.0, 45.0)
    d, inner, op = _board_driver([render_board(T1), render_board(T2)])
    d.camera.capture()
    first = d.read_pose()
    target = np.eye(4)
    target[:3, 3] = [0.2, 0.2, 0.2 * math.sqrt(2)]  # azimuth 45, elevation 45, 0.4 m
    assert d.move_to(target, 0.1) is True
    assert op.asked == [
        "hold the part so the camera sees it from azimuth 45 deg, elevation 45 deg, 0.40 m "
        "away (about the part's z axis from its x axis, above its x-y plane), with the whole "
        "checkerboard in view"
    ]
    second = d.read_pose()  # measured in a new frame, not the one before the move
    assert inner.captures == 2
    truth = np.linalg.inv(T_BOARD_OBJ) @ np.linalg.inv(T2)
    assert np.linalg.norm(second[:3, 3] - truth[:3, 3]) < 1e-3
    assert np.linalg.norm(second[:3, 3] - first[:3, 3]) > 0.01


def test_no_board_in_view_fails_that_sample_and_the_next_one_works() -> None:
    blank = np.full((HEIGHT, WIDTH, 3), 128, np.uint8)
    d, _, _ = _board_driver([blank, render_board(board_in_view(0.45, 0.0, 0.0, 0.0))])
    d.camera.capture()
    with pytest.raises(CaptureFailed, match="the 9x6 checkerboard is not in view"):
        d.read_pose()
    d.move_to(look_at((0.0, -0.3, 0.3), (0.0, 0.0, 0.0)), 0.1)
    d.camera.capture()
    assert d.read_pose().shape == (4, 4)


def test_no_frame_to_measure_when_the_camera_is_not_active() -> None:
    d = BoardPoseDriver(
        FramesCamera([]), cols=COLS, rows=ROWS, square_mm=25, T_board_obj=np.eye(4),
        operator=RecordingOperator(),
    )  # fmt: skip
    with pytest.raises(CaptureFailed, match="the camera is not active"):
        d.read_pose()


@pytest.mark.parametrize(("cols", "rows"), [(8, 6), (7, 7), (2, 5)])
def test_a_board_whose_orientation_is_ambiguous_is_refused(cols: int, rows: int) -> None:
    with pytest.raises(SpecError, match="one of them odd, one even"):
        BoardPoseDriver(
            FramesCamera([]), cols=cols, rows=rows, square_mm=25, T_board_obj=np.eye(4),
            operator=RecordingOperator(),
        )  # fmt: skip


def test_the_turntable_meets_the_shared_robot_contract() -> None:
    from scenarios.checks import check_robot_driver

    def turned(deg: float) -> np.ndarray:
        c, s = np.cos(np.radians(-deg)), np.sin(np.radians(-deg))
        Rz = np.eye(4)
        Rz[:2, :2] = [[c, -s], [s, c]]
        return Rz @ T_CAM0

    check_robot_driver(
        TurntableDriver(T_CAM0, RecordingOperator()), [turned(a) for a in (0, 45, 200)]
    )
