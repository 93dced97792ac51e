"""The acquisition a real eye-in-hand cell runs before it inspects (AVATAR section II).

Two steps, each with the errors its method really makes, correlated as on a real cell:

- **Hand-eye calibration** (once per run, ``calibrate_hand_eye``): a checkerboard lies on
  the bench where parts will stand; the robot moves the wrist camera to ``poses`` seeded
  poses (``sim.cells.hand_eye.calibration_poses``), planned with the mount's drawing value
  (the scenario's ``cell.hand_eye``, which is also the true mount). Each capture is the
  real renderer's image through the camera model (noise, distortion) at the pose the arm
  really reached (its reported flange pose times a fresh repeatability error); the board
  is detected with OpenCV and ``cv2.calibrateHandEye`` solves ``T_ee_cam`` from the
  *reported* flange poses. The twin uses the result; the real camera the true mount.
- **Object pose estimation** (once per part, ``estimate_object_pose``): the robot takes one
  overview RGB-D capture above the nominal placement. The part's silhouette is segmented
  from the sensor's noisy depth (points above the bench plane), then matched against CAD
  templates and refined by minimising the silhouette discrepancy
  (``sim.cells.pose_estimation``). The estimate in the camera frame goes into the base
  frame through the reported flange pose and the *calibrated* hand-eye transform (AVATAR
  eq. 2): ``T_base_obj_twin = T_base_ee @ T_ee_cam_calibrated @ T_cam_obj``. So the
  calibration error, the robot's error at the overview and the estimator's error all land
  in the believed pose, and partly cancel in views near the overview, as on a real cell.

What each step measured (calibration error, per-part pose error) is recorded: the
calibration in the run manifest, the pose estimate with every sample of the part.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import cv2
import numpy as np

from scenarios.interfaces import CaptureFailed
from sim.cells.eye_in_hand import CellSetup, EyeInHandCell, PartPlacement
from sim.geometry import invert_pose, look_at, pose_error, transform_points
from sim.render import Renderer
from sim.robot_scene import RobotScene


class AcquisitionFailed(CaptureFailed):
    """A part's acquisition (its pose estimate) failed: its samples are recorded as failed
    with this one-line reason and the run goes on."""


#: Overview azimuths tried in turn (degrees from the direction towards the robot base):
#: the first the arm reaches without collision takes the overview image.
OVERVIEW_AZIMUTHS_DEG = (0.0, 45.0, -45.0, 90.0, -90.0, 135.0, -135.0, 180.0)

#: Depth points this high above the bench plane (m) count as the part's silhouette.
SEGMENT_HEIGHT_M = 0.002

#: Model points (object frame) used for the ADD and ADD-S errors of an estimate, and the
#: denser surface sampling ADD-S finds closest points in (its floor: about 0.2 mm).
ADD_S_POINTS = 2000
ADD_S_SURFACE_POINTS = 100_000


def _round(x: float, nd: int = 4) -> float:
    return float(round(float(x), nd))


def calibrate_hand_eye(
    sc: Any, setup: CellSetup, renderer: Renderer, rng: np.random.Generator
) -> CellSetup:
    """``setup`` with the believed hand-eye transform a checkerboard calibration finds, and
    the calibration's figures in ``setup.info["hand_eye"]``.

    Raises ``sim.cells.hand_eye.CalibrationFailed`` when too few captures see the board.
    """
    from sim.appearance import TWIN_PART, twin_look
    from sim.cells.hand_eye import Board, board_scene, calibrate, calibration_poses
    from sim.render.camera_model import apply_camera, draw_capture

    cal = sc.cell.calibration
    board = Board(cal.board.cols, cal.board.rows, cal.board.square_mm * 1e-3)
    mesh, _ = board.mesh()
    x, y = sc.part.placement.position_m
    # The board lies on the bench where the parts will stand, its pattern centred there.
    T_base_board = board.on_table((x, y))
    center = np.array([x, y, 0.0])
    cam = setup.camera
    look = setup.station.look(TWIN_PART, center, 0.0) if setup.station else twin_look(center)
    scene = board_scene(board, T_base_board, look)
    poses = calibration_poses(T_base_board, board, cal.poses, rng)
    with RobotScene(sc.cell.robot, T_base_board, np.asarray(mesh.bounds)) as robot:
        # Poses are planned with the mount's drawing value; the arm really carries the
        # camera on the true mount (here the same: the calibration measures it).

        def capture(T_base_cam: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
            target = RobotScene.flange_target(T_base_cam, setup.T_ee_cam_believed)
            res = robot.reach(target, setup.T_ee_cam)
            if not res.ok:
                return None
            T_cam = res.T_base_ee @ setup.robot_error.sample(rng) @ setup.T_ee_cam
            # Each capture has its own render seed (a path tracer's noise), from the stream.
            frame = dataclasses.replace(scene, seed=int(rng.integers(0, 2**31 - 1)))
            out = renderer.render(frame, cam.K, cam.image_size, T_cam, dist=cam.dist)
            rgb = out.rgb
            if setup.sensor is not None:
                rgb = apply_camera(rgb, setup.sensor, draw_capture(setup.sensor, rng), rng)
            return rgb, res.T_base_ee

        result = calibrate(capture, poses, cam.K, cam.dist, board, method=cal.method)
    dt, dr = result.error_to(setup.T_ee_cam)
    info = {
        **setup.info,
        "hand_eye": {
            "method": result.method,
            "poses": int(result.n_poses),
            "rejected": int(result.n_rejected),
            "reprojection_px": _round(result.reprojection_px),
            "translation_error_mm": _round(dt * 1e3),
            "rotation_error_deg": _round(np.degrees(dr)),
            "T_ee_cam": np.asarray(result.T_ee_cam).tolist(),
        },
    }
    return dataclasses.replace(setup, T_ee_cam_believed=result.T_ee_cam, info=info)


def overview_poses(sc: Any) -> list[np.ndarray]:
    """Candidate overview camera poses ``T_base_cam`` over the nominal placement, looking at
    it from ``overview_elevation_deg`` at ``overview_distance_m``, best azimuth first."""
    pe = sc.cell.pose_estimation
    x, y = sc.part.placement.position_m
    center = np.array([x, y, 0.0])
    toward_base = np.arctan2(-y, -x)
    el = np.radians(pe.overview_elevation_deg)
    out = []
    for az_deg in OVERVIEW_AZIMUTHS_DEG:
        az = toward_base + np.radians(az_deg)
        d = np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])
        out.append(look_at(center + pe.overview_distance_m * d, center))
    return out


def estimate_object_pose(
    sc: Any,
    setup: CellSetup,
    placement: PartPlacement,
    robot: RobotScene,
    renderer: Renderer,
    mask_renderer: Renderer,
    rng: np.random.Generator,
) -> PartPlacement:
    """``placement`` with its believed pose ``T_base_obj_twin`` estimated from one overview
    capture, and the estimate's figures in ``placement.info["pose_estimate"]``.

    The overview is taken like any capture (real look, camera model, the D435-like depth
    sensor); ``mask_renderer`` draws the CAD silhouettes. Raises ``AcquisitionFailed``
    (a ``CaptureFailed``: the part's samples fail with the reason, the run goes on) when
    no overview pose is reachable or nothing stands on the bench in the overview.
    """
    from sim.cells.factory import depth_sensor
    from sim.cells.pose_estimation import PoseEstimator, pose_errors, segment_from_depth

    pe = sc.cell.pose_estimation
    setup_d = dataclasses.replace(setup, depth_sensor=depth_sensor(sc))
    cell = EyeInHandCell(setup_d, placement, robot, renderer, rng, twin_renderer=mask_renderer)
    reached = None
    for T in overview_poses(sc):
        if cell.move_camera(T):
            reached = T
            break
    if reached is None:
        raise AcquisitionFailed(
            f"{placement.part.part_id}: pose estimation: no overview pose reachable "
            f"({cell.last_failure}); change cell.pose_estimation or part.placement"
        )
    cap = cell.capture_pair()
    cam = setup.camera
    T_base_cam_believed = cap.twin.T_base_cam  # reported flange pose @ calibrated hand-eye
    depth = cap.real.depth
    assert depth is not None
    if cam.dist is not None:  # the estimator renders pinhole silhouettes: undistort first
        depth = _undistort_nearest(depth, cam.K, cam.dist)
    # The part is looked for where it was put down (the nominal placement's image point),
    # so clutter at the edge of the overview is not taken for it.
    x, y = sc.part.placement.position_m
    p_cam = transform_points(invert_pose(T_base_cam_believed), np.array([[x, y, 0.0]]))[0]
    expected = (cam.K @ (p_cam / p_cam[2]))[:2]
    mask = segment_from_depth(
        depth,
        cam.K,
        T_base_cam_believed,
        min_height_m=SEGMENT_HEIGHT_M,
        expected_px=(float(expected[0]), float(expected[1])),
    )
    nominal = placement.part.nominal
    estimator = PoseEstimator(
        nominal,
        f"{placement.part.part_id}/{placement.part.content_key}/estimate",
        cam.K,
        cam.image_size,
        mask_renderer,
        subdivisions=pe.subdivisions,
        rolls=pe.rolls,
    )
    # The silhouettes it compares lose the same bottom SEGMENT_HEIGHT_M the segmentation
    # cannot tell from the bench (seen from the believed camera).
    if not mask.any():
        raise AcquisitionFailed(
            f"{placement.part.part_id}: pose estimation: nothing stands on the bench in "
            "the overview image"
        )
    est = estimator.estimate(mask, depth, T_base_cam_believed, SEGMENT_HEIGHT_M)
    T_base_obj_twin = T_base_cam_believed @ est.T_cam_obj
    pts = np.asarray(nominal.sample(ADD_S_POINTS, seed=0), dtype=np.float64)
    surface = np.asarray(nominal.sample(ADD_S_SURFACE_POINTS, seed=1), dtype=np.float64)
    err = pose_errors(T_base_obj_twin, placement.T_base_obj, pts, surface)
    dt, dr = pose_error(T_base_cam_believed, cap.real.T_base_cam)
    info = {
        **placement.info,
        "pose_estimate": {
            "translation_mm": _round(err["translation_mm"]),
            "rotation_deg": _round(err["rotation_deg"]),
            "add_s_mm": _round(err["add_s_mm"]),
            "add_mm": _round(err["add_mm"]),
            "iou": _round(est.iou),
            "coarse_iou": _round(est.coarse_iou),
            "overview_camera_error_mm": _round(dt * 1e3),
            "overview_camera_error_deg": _round(np.degrees(dr)),
        },
    }
    return dataclasses.replace(placement, T_base_obj_twin=T_base_obj_twin, info=info)


def _undistort_nearest(depth: np.ndarray, K: np.ndarray, dist: np.ndarray) -> np.ndarray:
    """A depth image resampled onto the pinhole grid (nearest neighbour: no mixed depths)."""
    h, w = depth.shape
    m1, m2 = cv2.initUndistortRectifyMap(K, dist, np.eye(3), K, (w, h), cv2.CV_32FC1)
    return np.asarray(cv2.remap(depth, m1, m2, cv2.INTER_NEAREST), dtype=np.float32)
