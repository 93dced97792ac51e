"""Rigid registration of part clouds into a template's frame (COSARAD, section III and IV.2).

A coarse global alignment by FPFH features and RANSAC, refined by point-to-plane ICP, tried
up to ``tries`` times with different RANSAC seeds; the kept result is the one with the
smallest one-sided Chamfer distance from the template to the moved cloud (paper eq. 4):

    Chamfer(Y_t -> Y_1) = 1 / |Y_1| * sum_{x in Y_1} min_{y in R Y_t + t} ||x - y||^2

The paper retries 5 times because ICP on a nearly symmetric part can settle in a wrong
pose; here the retries stop early once the Chamfer RMS is below ``accept_m`` (a choice:
the paper always makes all 5), which keeps an easy registration to one try.

Open3D computes the FPFH features and runs ICP (it is imported here only); the RANSAC is
twincell's own, seeded (``ransac``), because Open3D's is multi-threaded and does not repeat
for a seed. ICP's multi-threaded sums may still differ in the last bits between runs, so the
kept transform is rounded to ``ROUND_DECIMALS`` (a nanometre / nanoradian): the same input
gives the same bytes, as every detector must.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.spatial import cKDTree

#: Decimals the kept transform is rounded to (1e-9 m, 1e-9 of a rotation entry).
ROUND_DECIMALS = 9


def open3d() -> Any:
    """The ``open3d`` module, or ImportError saying how to install it."""
    try:
        import open3d as o3d
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise ImportError(
            "COSARAD needs open3d: run `bash scripts/setup.sh` (it installs it), or "
            "`pip install 'open3d>=0.18'` and, on Debian, `apt-get install libusb-1.0-0`"
        ) from exc
    o3d.utility.set_verbosity_level(o3d.utility.VerbosityLevel.Error)
    return o3d


@dataclass(frozen=True)
class Registration:
    """A rigid transform ``T`` (4, 4) float64 mapping the source cloud into the target's
    frame, its one-sided Chamfer distance (m², target -> moved source), and the try (0-based)
    it came from, of ``tries`` made."""

    T: np.ndarray
    chamfer_m2: float
    best_try: int
    tries: int


def to_pcd(points: np.ndarray) -> Any:
    """An Open3D point cloud of ``points`` (N, 3) float64."""
    o3d = open3d()
    return o3d.geometry.PointCloud(o3d.utility.Vector3dVector(np.asarray(points, np.float64)))


def _prepared(points: np.ndarray, voxel_m: float) -> tuple[Any, Any]:
    """(voxel-downsampled cloud with normals, its FPFH features) for RANSAC and ICP."""
    o3d = open3d()
    pcd = to_pcd(points).voxel_down_sample(voxel_m)
    pcd.estimate_normals(o3d.geometry.KDTreeSearchParamHybrid(radius=2.5 * voxel_m, max_nn=30))
    fpfh = o3d.pipelines.registration.compute_fpfh_feature(
        pcd, o3d.geometry.KDTreeSearchParamHybrid(radius=5.0 * voxel_m, max_nn=100)
    )
    return pcd, fpfh


@dataclass(frozen=True)
class Prepared:
    """A cloud made ready for ``register``: its ``voxel_m`` downsampling with normals and
    FPFH features (coarse), and its ``fine_voxel_m`` downsampling with normals (fine ICP,
    Chamfer). A template registered against many times is prepared once."""

    coarse: Any
    fpfh: Any
    fine: Any
    voxel_m: float
    fine_voxel_m: float


def prepare(points: np.ndarray, voxel_m: float = 0.004, fine_voxel_m: float = 0.0015) -> Prepared:
    """``points`` (N, 3) m prepared for ``register`` with these voxels."""
    coarse, fpfh = _prepared(points, voxel_m)
    return Prepared(coarse, fpfh, _with_normals(points, fine_voxel_m), voxel_m, fine_voxel_m)


def transform(points: np.ndarray, T: np.ndarray) -> np.ndarray:
    """(N, 3) ``points`` moved by the 4 x 4 rigid transform ``T``."""
    P = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    return P @ T[:3, :3].T + T[:3, 3]


def chamfer_one_sided(target: np.ndarray, moved: np.ndarray) -> float:
    """Mean over ``target`` points of the squared distance to the nearest ``moved`` point
    (m²; paper eq. 4)."""
    d, _ = cKDTree(moved).query(target, k=1)
    return float(np.mean(np.square(d)))


def register(
    source: np.ndarray,
    target: np.ndarray | Prepared,
    voxel_m: float = 0.004,
    fine_voxel_m: float = 0.0015,
    tries: int = 5,
    accept_m: float = 0.0015,
    seed: int = 0,
) -> Registration:
    """Register ``source`` (N, 3) m onto ``target`` (M, 3) m, or onto a ``prepare``d target
    (with the same voxels): FPFH + RANSAC, then ICP.

    Coarse: both clouds downsampled on ``voxel_m``, FPFH over 5 voxels (normals over 2.5),
    RANSAC on mutual feature matches accepting correspondences within 1.5 voxels, then
    point-to-plane ICP within 1 voxel. Fine: point-to-plane ICP on the ``fine_voxel_m``
    downsampling within 2 fine voxels. Up to ``tries`` attempts with RANSAC seeds ``seed``,
    ``seed + 1``, ...; the one with the smallest Chamfer distance (target -> moved source,
    on the fine clouds) is kept, and the attempts stop once its RMS is below ``accept_m``.
    """
    o3d = open3d()
    reg = o3d.pipelines.registration
    if not isinstance(target, Prepared):
        target = prepare(target, voxel_m, fine_voxel_m)
    elif (target.voxel_m, target.fine_voxel_m) != (voxel_m, fine_voxel_m):
        raise ValueError(
            f"the target was prepared with voxels {target.voxel_m} / {target.fine_voxel_m} m, "
            f"not {voxel_m} / {fine_voxel_m} m"
        )
    src, f_src = _prepared(source, voxel_m)
    tgt, f_tgt = target.coarse, target.fpfh
    if len(src.points) < 3 or len(tgt.points) < 3:
        raise ValueError(
            f"registration needs at least 3 points after {voxel_m * 1e3:g} mm voxels "
            f"(source {len(src.points)}, target {len(tgt.points)})"
        )
    fine_src = _with_normals(source, fine_voxel_m)
    fine_tgt = target.fine
    tgt_pts = np.asarray(fine_tgt.points)
    src_pts = np.asarray(fine_src.points)
    plane = reg.TransformationEstimationPointToPlane()
    src_c, tgt_c = mutual_matches(np.asarray(f_src.data).T, np.asarray(f_tgt.data).T)
    src_xyz, tgt_xyz = np.asarray(src.points)[src_c], np.asarray(tgt.points)[tgt_c]
    best: Registration | None = None
    for k in range(tries):
        T0 = ransac(src_xyz, tgt_xyz, 1.5 * voxel_m, np.random.default_rng(seed + k))
        mid = reg.registration_icp(src, tgt, voxel_m, T0, plane)
        fine = reg.registration_icp(
            fine_src, fine_tgt, 2.0 * fine_voxel_m, mid.transformation, plane
        )
        T = np.round(np.asarray(fine.transformation, dtype=np.float64), ROUND_DECIMALS)
        ch = chamfer_one_sided(tgt_pts, transform(src_pts, T))
        if best is None or ch < best.chamfer_m2:
            best = Registration(T=T, chamfer_m2=ch, best_try=k, tries=k + 1)
        if best.chamfer_m2 <= accept_m**2:
            break
    assert best is not None  # tries >= 1
    return Registration(T=best.T, chamfer_m2=best.chamfer_m2, best_try=best.best_try, tries=k + 1)


def mutual_matches(f_src: np.ndarray, f_tgt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs (i, j) of mutual nearest neighbours between feature sets (N, d), (M, d)."""
    j = cKDTree(f_tgt).query(f_src, k=1)[1]
    i = cKDTree(f_src).query(f_tgt, k=1)[1]
    keep = i[j] == np.arange(len(f_src))
    return np.flatnonzero(keep), j[keep]


def kabsch(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """Rigid transforms (H, 4, 4) best mapping point sets A (H, n, 3) onto B (H, n, 3)."""
    ca, cb = A.mean(axis=1, keepdims=True), B.mean(axis=1, keepdims=True)
    U, _, Vt = np.linalg.svd(np.swapaxes(A - ca, 1, 2) @ (B - cb))
    d = np.sign(np.linalg.det(np.swapaxes(Vt, 1, 2) @ np.swapaxes(U, 1, 2)))
    D = np.tile(np.eye(3), (len(A), 1, 1))
    D[:, 2, 2] = d
    R = np.swapaxes(Vt, 1, 2) @ D @ np.swapaxes(U, 1, 2)
    T = np.tile(np.eye(4), (len(A), 1, 1))
    T[:, :3, :3] = R
    T[:, :3, 3] = cb[:, 0] - np.einsum("hij,hj->hi", R, ca[:, 0])
    return T


def ransac(
    src: np.ndarray,
    tgt: np.ndarray,
    inlier_m: float,
    rng: np.random.Generator,
    max_hypotheses: int = 20_000,
    confidence: float = 0.999,
    batch: int = 500,
) -> np.ndarray:
    """RANSAC over putative correspondences ``src[i] <-> tgt[i]`` (N, 3): the 4 x 4 transform
    with the most correspondences within ``inlier_m``, from seeded 3-point samples whose
    edge lengths agree within 10 % (Open3D's edge-length checker at 0.9), refitted to its
    inliers. Written here rather than Open3D's because that one is multi-threaded and
    not repeatable for a seed; this one is a function of ``rng``. Stops at ``confidence``."""
    n = len(src)
    if n < 3:
        return np.eye(4)
    best_T, best_count, drawn, needed = np.eye(4), 0, 0, float(max_hypotheses)
    while drawn < min(needed, max_hypotheses):
        ix = rng.integers(0, n, size=(batch, 3))  # repeated indices fail the edge check
        drawn += batch
        A, B = src[ix], tgt[ix]
        la = np.linalg.norm(A - np.roll(A, 1, axis=1), axis=2)
        lb = np.linalg.norm(B - np.roll(B, 1, axis=1), axis=2)
        ok = np.all((la > 0) & (lb > 0), axis=1)
        ok &= np.all(np.minimum(la, lb) >= 0.9 * np.maximum(la, lb), axis=1)
        if not ok.any():
            continue
        T = kabsch(A[ok], B[ok])
        moved = np.einsum("hij,nj->hni", T[:, :3, :3], src) + T[:, None, :3, 3]
        counts = (np.sum((moved - tgt) ** 2, axis=2) < inlier_m**2).sum(axis=1)
        h = int(np.argmax(counts))
        if counts[h] > best_count:
            best_count, best_T = int(counts[h]), T[h]
            w = best_count / n
            needed = np.log(1 - confidence) / np.log(max(1 - w**3, 1e-12))
    if best_count >= 3:  # refit on the inliers of the best hypothesis
        inl = np.sum((transform(src, best_T) - tgt) ** 2, axis=1) < inlier_m**2
        best_T = kabsch(src[inl][None], tgt[inl][None])[0]
    return best_T


def _with_normals(points: np.ndarray, voxel_m: float) -> Any:
    """``points`` downsampled on ``voxel_m``, with normals over 2.5 voxels (for ICP)."""
    o3d = open3d()
    pcd = to_pcd(points).voxel_down_sample(voxel_m)
    pcd.estimate_normals(o3d.geometry.KDTreeSearchParamHybrid(radius=2.5 * voxel_m, max_nn=30))
    return pcd
