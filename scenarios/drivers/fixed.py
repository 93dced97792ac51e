"""Robot-less cells: a fixed camera, and a person who changes the camera-to-part pose.

Convention for both: the cell's base frame is the part's support (the turntable's platter,
or the part itself when it is held by hand) and the "flange" is the camera itself
(hand-eye = identity), so ``T_base_ee`` is the camera's pose (OpenCV camera frame)
relative to the part's support, 4x4 metres.

- ``TurntableDriver``: the part sits on a manual turntable under a fixed camera; a
  viewpoint is a turn of the platter, which the operator makes.
- ``BoardPoseDriver``: the part is held by hand with a checkerboard fixed to it; the
  operator holds it roughly as asked and the pose actually reached is measured from the
  board in the image the camera takes.
"""

from __future__ import annotations

import logging
import math

import cv2
import numpy as np
from numpy.typing import ArrayLike

from scenarios.drivers.base import CameraDriver, Frame, Intrinsics, Operator
from scenarios.interfaces import CaptureFailed, FloatArray, SpecError
from sim.geometry import invert_pose, pose_error, pose_from_xyz_rpy

logger = logging.getLogger(__name__)


def _pose(T: ArrayLike, what: str) -> FloatArray:
    """``T`` as a checked 4x4 float64 rigid transform (``SpecError`` naming ``what``)."""
    M = np.asarray(T, dtype=np.float64)
    if M.shape != (4, 4) or not np.all(np.isfinite(M)):
        raise SpecError(f"{what} must be a finite 4x4 pose, got shape {M.shape}")
    R = M[:3, :3]
    if not np.allclose(R.T @ R, np.eye(3), atol=1e-6) or np.linalg.det(R) < 0:
        raise SpecError(f"{what} must hold a rotation (orthonormal, det +1) in its 3x3 block")
    if not np.allclose(M[3], [0.0, 0.0, 0.0, 1.0]):
        raise SpecError(f"{what} must end in the row [0, 0, 0, 1]")
    return M.copy()


def _rz(theta_rad: float) -> FloatArray:
    """The 4x4 rotation by ``theta_rad`` about z."""
    return pose_from_xyz_rpy((0.0, 0.0, 0.0), (0.0, 0.0, theta_rad))


class TurntableDriver:
    """A manual turntable under a fixed camera, as a ``RobotDriver`` whose flange is the
    camera and whose base is the platter.

    ``T_base_cam0`` is the camera's pose in the platter frame (z up, the turntable's axis)
    with the platter at its 0 deg mark; turning the platter by theta (counter-clockwise
    seen from above) moves the camera, in the platter frame, by Rz(-theta). A viewpoint is
    reachable when some theta brings the camera within ``tol_mm`` and ``tol_deg`` of it.
    The run starts with the platter at 0 deg.
    """

    def __init__(
        self,
        T_base_cam0: ArrayLike,
        operator: Operator,
        *,
        tol_deg: float = 2.0,
        tol_mm: float = 2.0,
    ) -> None:
        if not (tol_deg > 0 and tol_mm > 0):
            raise SpecError(
                f"turntable: tol_deg and tol_mm must be positive, got {tol_deg}, {tol_mm}"
            )
        self.T_base_cam0 = _pose(T_base_cam0, "turntable: T_base_cam0")
        self.operator = operator
        self.tol_deg = float(tol_deg)
        self.tol_mm = float(tol_mm)
        self.last_failure = ""
        self._theta_deg = 0.0
        self._confirmed = False  # whether the operator has set the platter since activate

    @property
    def angle_deg(self) -> float:
        """The platter's angle now (deg, in [0, 360), counter-clockwise seen from above)."""
        return self._theta_deg

    def configure(self) -> None:
        """Nothing to connect."""

    def activate(self) -> None:
        """Nothing to enable; the next move asks for its angle whatever it is."""
        self._confirmed = False

    def deactivate(self) -> None:
        """Nothing to stop."""

    def cleanup(self) -> None:
        """Nothing to disconnect."""

    def read_pose(self) -> FloatArray:
        """The camera's pose in the platter frame at the angle last asked for:
        Rz(-theta) @ ``T_base_cam0`` (4x4, metres)."""
        return _rz(-math.radians(self._theta_deg)) @ self.T_base_cam0

    def best_angle_deg(self, T_base_cam: ArrayLike) -> float:
        """The platter angle (deg, in [0, 360)) that brings the camera closest to
        ``T_base_cam``: the one that turns the camera's azimuth about the axis onto the
        target's, or, for a camera on the axis, its axes best onto the target's."""
        T = np.asarray(T_base_cam, dtype=np.float64)
        a_xy, b_xy = T[:2, 3], self.T_base_cam0[:2, 3]
        if min(np.linalg.norm(a_xy), np.linalg.norm(b_xy)) * 1000.0 > self.tol_mm:
            # The camera moves by Rz(-theta): theta = azimuth(start) - azimuth(target).
            phi = math.atan2(a_xy[1], a_xy[0]) - math.atan2(b_xy[1], b_xy[0])
        else:
            # Maximise sum_k a_k . Rz(phi) b_k over the axes a_k, b_k (phi = -theta): for a
            # rotation about z that is cos(phi) C + sin(phi) S + const, so phi = atan2(S, C).
            A, B = T[:3, :3], self.T_base_cam0[:3, :3]
            C = float(np.sum(A[0] * B[0] + A[1] * B[1]))
            S = float(np.sum(A[1] * B[0] - A[0] * B[1]))
            phi = math.atan2(S, C)
        return float(np.degrees(-phi)) % 360.0

    def move_to(self, T_base_ee: FloatArray, speed_m_s: float) -> bool:
        """Ask the operator to turn the platter so the camera sees the part as from
        ``T_base_ee`` (the camera's pose in the platter frame; ``speed_m_s`` is unused).

        False with ``last_failure`` when no turn brings the camera within the tolerance
        (another height, distance from the axis, or a tilt a turn cannot give).
        """
        T = np.asarray(T_base_ee, dtype=np.float64)
        theta = self.best_angle_deg(T)
        reached = _rz(-math.radians(theta)) @ self.T_base_cam0
        d_m, d_rad = pose_error(reached, T)
        d_mm, d_deg = d_m * 1000.0, float(np.degrees(d_rad))
        if d_mm > self.tol_mm or d_deg > self.tol_deg:
            self.last_failure = self._refusal(T, theta, d_mm, d_deg)
            return False
        self.last_failure = ""
        # Within a twentieth of a degree of where it is: no need to bother the operator;
        # but the first move after ``activate`` always asks (a resumed run does not know
        # where the platter was left).
        if not self._confirmed or abs((theta - self._theta_deg + 180.0) % 360.0 - 180.0) > 0.05:
            self.operator.ask(
                f"turn the turntable to {theta:.1f} deg (counter-clockwise seen from above, "
                "from its 0 deg mark)"
            )
        self._theta_deg = theta
        self._confirmed = True
        return True

    def _refusal(self, T: FloatArray, theta: float, d_mm: float, d_deg: float) -> str:
        """One line: why no turn reaches ``T``."""
        p0, pt = self.T_base_cam0[:3, 3], T[:3, 3]
        r0, rt = float(np.hypot(*p0[:2])), float(np.hypot(*pt[:2]))
        if abs(p0[2] - pt[2]) * 1000 > self.tol_mm or abs(r0 - rt) * 1000 > self.tol_mm:
            return (
                f"not reachable by turning the turntable: the camera would have to be "
                f"{pt[2]:.3f} m above the platter and {rt:.3f} m from its axis, but it is "
                f"{p0[2]:.3f} m above and {r0:.3f} m from the axis (a turn keeps both)"
            )
        return (
            f"not reachable by turning the turntable: the closest turn ({theta:.1f} deg) "
            f"leaves the camera {d_mm:.1f} mm and {d_deg:.1f} deg from the target "
            f"(tolerance {self.tol_mm:g} mm, {self.tol_deg:g} deg)"
        )


def board_pose(
    rgb: np.ndarray, lens: Intrinsics, cols: int, rows: int, square_m: float
) -> FloatArray:
    """``T_cam_board`` (4x4, metres) of a checkerboard with ``cols`` x ``rows`` inner
    corners and squares of ``square_m`` seen in ``rgb`` (H, W, 3) uint8 through ``lens``.

    The board's frame: origin at the first inner corner, x along the ``cols`` corners, y
    along the ``rows`` corners, z into the board (OpenCV's convention; right-handed seen
    from the printed side). The first corner is the one at a *black* outer corner square
    (OpenCV's pattern.png: top left). With ``cols + rows`` odd the two orientations a
    checkerboard allows have opposite square colours, which is how the corner order is
    made unique. ``CaptureFailed`` when the board is not (fully) in view or the fit is bad.
    """
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    found, corners = cv2.findChessboardCorners(
        gray, (cols, rows), flags=cv2.CALIB_CB_ADAPTIVE_THRESH | cv2.CALIB_CB_NORMALIZE_IMAGE
    )
    if not found:
        raise CaptureFailed(
            f"the {cols}x{rows} checkerboard is not in view (or not all of it); hold the part "
            "so the whole board is visible, sharp and evenly lit"
        )
    grid = corners.reshape(rows, cols, 2)
    # The refinement window must stay inside one square: at most ~40% of its side in pixels.
    side_px = min(
        float(np.linalg.norm(np.diff(grid, axis=1), axis=2).min()),
        float(np.linalg.norm(np.diff(grid, axis=0), axis=2).min()),
    )
    win = int(np.clip(side_px * 0.4, 2, 11))
    criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 50, 1e-3)
    corners = cv2.cornerSubPix(gray, corners, (win, win), (-1, -1), criteria)
    grid = corners.reshape(rows, cols, 2).astype(np.float64)

    # 1) Handedness: seen from the printed side, the board's x and y turn the same way as
    #    the image's (x right, y down); a mirrored order reverses every row.
    dx, dy = grid[0, -1] - grid[0, 0], grid[-1, 0] - grid[0, 0]
    if dx[0] * dy[1] - dx[1] * dy[0] < 0:
        grid = grid[:, ::-1]
    # 2) The remaining 180 deg ambiguity, by the squares' colours: the inner square between
    #    corners (i, j) and (i + 1, j + 1) is black when i + j is even.
    ij = np.stack(np.meshgrid(np.arange(cols), np.arange(rows)), axis=-1).reshape(-1, 2)
    H, _ = cv2.findHomography(ij.astype(np.float64), grid.reshape(-1, 2))
    if H is None:
        raise CaptureFailed("the checkerboard's corners do not form a plane grid; retake")
    ci, cj = np.meshgrid(np.arange(cols - 1), np.arange(rows - 1))
    offsets = np.array([[0.5, 0.5], [0.3, 0.3], [0.7, 0.3], [0.3, 0.7], [0.7, 0.7]])
    centres = np.stack([ci, cj], axis=-1).reshape(-1, 1, 2) + offsets[None]
    px = cv2.perspectiveTransform(centres.reshape(-1, 1, 2), H).reshape(-1, len(offsets), 2)
    u = np.clip(np.rint(px[..., 0]).astype(int), 0, gray.shape[1] - 1)
    v = np.clip(np.rint(px[..., 1]).astype(int), 0, gray.shape[0] - 1)
    level = gray[v, u].astype(np.float64).mean(axis=1)
    black = ((ci + cj) % 2 == 0).reshape(-1)
    contrast = float(level[~black].mean() - level[black].mean())
    if abs(contrast) < 10.0:
        raise CaptureFailed(
            "cannot tell the checkerboard's orientation (its squares show no contrast); "
            "light the board evenly and retake"
        )
    if contrast < 0:
        grid = grid[::-1, ::-1]

    obj = np.zeros((rows * cols, 3))
    obj[:, :2] = ij * square_m
    img = np.ascontiguousarray(grid.reshape(-1, 1, 2))
    dist = np.zeros(5) if lens.dist is None else lens.dist
    ok, rvec, tvec = cv2.solvePnP(obj, img, lens.K, dist, flags=cv2.SOLVEPNP_IPPE)
    if not ok:
        raise CaptureFailed("the checkerboard's pose could not be solved; retake")
    rvec, tvec = cv2.solvePnPRefineLM(obj, img, lens.K, dist, rvec, tvec)
    proj, _ = cv2.projectPoints(obj, rvec, tvec, lens.K, dist)
    rms = float(np.sqrt(np.mean(np.sum((proj - img) ** 2, axis=2))))
    if rms > 2.0:
        raise CaptureFailed(
            f"the checkerboard does not fit its pose (reprojection {rms:.1f} px); check the "
            "board's cols/rows/square size and the camera's calibration"
        )
    T = np.eye(4)
    T[:3, :3] = cv2.Rodrigues(rvec)[0]
    T[:3, 3] = tvec.reshape(3)
    return T


class LastFrameCamera:
    """A ``CameraDriver`` passing through to ``camera`` that keeps the last frame, so the
    pose (``BoardPoseDriver.read_pose``) and the image come from the same frame.

    Whichever the cell asks first after a move: ``capture`` takes a frame that
    ``read_pose`` then measures, or ``read_pose`` takes one (``frame_for_pose``) that the
    next ``capture`` delivers instead of taking another.
    """

    def __init__(self, camera: CameraDriver) -> None:
        self.inner = camera
        self._last: Frame | None = None
        self._pending = False
        self._active = False

    def configure(self) -> None:
        """Configure the camera."""
        self.inner.configure()

    def activate(self) -> None:
        """Activate the camera."""
        self.inner.activate()
        self._active = True

    def deactivate(self) -> None:
        """Deactivate the camera and forget the last frame; safe in any state, and twice."""
        self._active = False
        self.forget()
        self.inner.deactivate()

    def cleanup(self) -> None:
        """Clean the camera up; safe in any state, and twice."""
        self._active = False
        self.forget()
        self.inner.cleanup()

    def intrinsics(self) -> Intrinsics:
        """The camera's lens."""
        return self.inner.intrinsics()

    def capture(self) -> Frame:
        """The frame ``read_pose`` took since the last move, or the camera's next one."""
        if self._pending and self._last is not None:
            self._pending = False
            return self._last
        frame = self.inner.capture()
        self._last, self._pending = frame, False
        return frame

    def forget(self) -> None:
        """Drop the last frame (the part has moved)."""
        self._last, self._pending = None, False

    def frame_for_pose(self) -> Frame:
        """The last frame since the move, or a new one, which the next ``capture`` then
        delivers (``CaptureFailed`` when the camera is not streaming)."""
        if self._last is None:
            if not self._active:
                raise CaptureFailed(
                    "no camera frame to measure the board in: the camera is not active"
                )
            self._last, self._pending = self.inner.capture(), True
        return self._last


class BoardPoseDriver:
    """A hand-held part with a checkerboard fixed to it, as a ``RobotDriver``: the base
    frame is the part's frame, the "flange" is the camera; the operator holds the part
    and the pose reached is measured from the board in the camera's image.

    ``camera`` is the cell's camera; the cell must use ``.camera`` (a ``LastFrameCamera``
    around it) so the pose comes from the very frame the cell captures. The board has
    ``cols`` x ``rows`` inner corners (``cols + rows`` odd, e.g. 9 x 6) and squares of
    ``square_mm``; ``T_board_obj`` is the part's pose in the board's frame (see
    ``board_pose`` for that frame).
    """

    def __init__(
        self,
        camera: CameraDriver,
        *,
        cols: int,
        rows: int,
        square_mm: float,
        T_board_obj: ArrayLike,
        operator: Operator,
    ) -> None:
        if cols < 3 or rows < 3 or (cols + rows) % 2 == 0:
            raise SpecError(
                f"checkerboard: cols and rows (inner corners) must be at least 3 and one of "
                f"them odd, one even (e.g. 9 x 6), so the board's orientation is unique; got "
                f"{cols} x {rows}"
            )
        if not (np.isfinite(square_mm) and square_mm > 0):
            raise SpecError(f"checkerboard: square_mm must be positive, got {square_mm!r}")
        self.camera = LastFrameCamera(camera)
        self.cols, self.rows = int(cols), int(rows)
        self.square_m = float(square_mm) / 1000.0
        self.T_board_obj = _pose(T_board_obj, "checkerboard: T_board_obj")
        self.operator = operator
        self.last_failure = ""
        self._measured: tuple[Frame, FloatArray] | None = None

    def configure(self) -> None:
        """Nothing to connect (the cell configures ``.camera``)."""

    def activate(self) -> None:
        """Nothing to enable."""

    def deactivate(self) -> None:
        """Forget the last measurement; safe in any state, and twice."""
        self._measured = None

    def cleanup(self) -> None:
        """Forget the last measurement; safe in any state, and twice."""
        self._measured = None

    def move_to(self, T_base_ee: FloatArray, speed_m_s: float) -> bool:
        """Ask the operator to hold the part so the camera sees it roughly as from
        ``T_base_ee`` (the camera's pose in the part frame; ``speed_m_s`` is unused);
        always True: the pose reached is what ``read_pose`` measures."""
        p = np.asarray(T_base_ee, dtype=np.float64)[:3, 3]
        dist_m = float(np.linalg.norm(p))
        azimuth = math.degrees(math.atan2(p[1], p[0]))
        elevation = math.degrees(math.atan2(p[2], math.hypot(p[0], p[1])))
        self.camera.forget()
        self._measured = None
        self.operator.ask(
            f"hold the part so the camera sees it from azimuth {azimuth:.0f} deg, elevation "
            f"{elevation:.0f} deg, {dist_m:.2f} m away (about the part's z axis from its x "
            "axis, above its x-y plane), with the whole checkerboard in view"
        )
        return True

    def read_pose(self) -> FloatArray:
        """The camera's pose in the part frame (4x4, metres), measured from the board in
        the frame the cell captures: inv(T_board_obj) @ inv(T_cam_board).

        ``CaptureFailed`` (this sample fails, the run goes on) when there is no frame or
        the board is not found in it.
        """
        frame = self.camera.frame_for_pose()
        if self._measured is not None and self._measured[0] is frame:
            return self._measured[1].copy()
        T_cam_board = board_pose(
            frame.rgb, self.camera.intrinsics(), self.cols, self.rows, self.square_m
        )
        T_obj_cam = invert_pose(self.T_board_obj) @ invert_pose(T_cam_board)
        self._measured = (frame, T_obj_cam)
        return T_obj_cam.copy()
