"""FPFH patch features: COSARAD's handcrafted baseline (the paper's Table IV, "FPFH").

FPFH (Rusu et al. 2009) is a per-point descriptor (33 bins); a patch needs one vector, and
the paper does not say how it made one. The choice here: the cloud is downsampled on a
``voxel_m`` grid, normals are estimated over ``normal_radius_m`` and turned to point away
from the cloud's centroid (the parts are scanned from outside; a concave place gets the same
orientation on every instance, which is what a location-specific bank compares), FPFH is
computed over ``radius_m`` (the patch radius), and a patch's feature is the mean FPFH of the
downsampled points inside it, divided by 100 (each FPFH histogram sums to 100 per sub-feature)
so the features are of order one like the contrastive ones.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from detectors.cosarad.registration import open3d, to_pcd

#: FPFH's dimensionality (3 angle features x 11 bins).
FPFH_DIM = 33


def fpfh_patch_features(
    points: np.ndarray,
    centres: np.ndarray,
    radius_m: float,
    voxel_m: float = 0.0015,
    normal_radius_m: float = 0.00375,
) -> np.ndarray:
    """(L, 33) float64 mean FPFH of the downsampled points within ``radius_m`` of each of
    the L ``centres`` (zeros where a patch has none). ``points`` (N, 3) metres."""
    o3d = open3d()
    pcd = to_pcd(points).voxel_down_sample(voxel_m)
    pcd.estimate_normals(o3d.geometry.KDTreeSearchParamHybrid(radius=normal_radius_m, max_nn=30))
    P = np.asarray(pcd.points)
    N = np.asarray(pcd.normals)
    outward = np.sum(N * (P - P.mean(axis=0)), axis=1) < 0
    N[outward] *= -1.0
    pcd.normals = o3d.utility.Vector3dVector(N)
    F = np.asarray(
        o3d.pipelines.registration.compute_fpfh_feature(
            pcd, o3d.geometry.KDTreeSearchParamHybrid(radius=radius_m, max_nn=100)
        ).data
    ).T  # (M, 33)
    out = np.zeros((len(centres), FPFH_DIM))
    for j, ix in enumerate(cKDTree(P).query_ball_point(np.asarray(centres), r=radius_m)):
        if ix:
            out[j] = F[ix].mean(axis=0) / 100.0
    return out
