"""Object pose from one overview image: depth segmentation, silhouette templates, refinement.

What a real eye-in-hand cell does before it inspects a part (AVATAR, "Pose-Grounded
Real-Render Pair Construction"): from one overview observation I0 it extracts the part's
foreground mask S(I0), finds a coarse pose by template matching against CAD renders, and
refines it by minimising the mask discrepancy ``1 - IoU(S(I0), Pi(C; R, t, K))``. The pose
found is ``T_cam_obj``; the cell maps it to the base frame with the believed camera pose
(``T_base_obj = T_base_cam @ T_cam_obj``).

Segmentation (``segment_from_depth``). An RGB-D cell sees the part as what stands above the
table: depth is back-projected to the base frame with the believed camera pose and pixels
more than ``min_height_m`` above the plane z = 0 are foreground. Pixels without a return
(depth 0: holes and speckle of a structured-light sensor) are unknown, not background: a
closing fills the unknown pixels it reaches, an opening removes specks, one connected
component is kept (the one at ``expected_px``, the image point where the part is expected,
or nearest to it, so clutter on the bench is not taken for the part; without that point
the largest), and the holes enclosed by it are filled when most of their
pixels are unknown. A hole in which the sensor sees the table (a through bore) stays open,
as it does in a render of the CAD model.

Templates (``PoseEstimator.__init__``). The CAD mesh is rendered once per estimator, depth
only, from ``icosphere_directions(subdivisions)`` (42 directions at 1, 162 at 2, about 17
degrees apart at 2) at a canonical distance ``d0`` = ``TEMPLATE_DISTANCE_RADII`` x the mesh's
bounding radius, each camera looking at the anchor ``c`` (the centre of the mesh's bounding
box) with the object's +z up. In-plane rolls are not re-rendered: a camera rolled about its
optical axis sees the same image rotated about the principal point (exactly, for square
pixels), so each of the ``rolls`` roll angles is an affine warp of the direction's render
(linear interpolation of the 0/1 mask, thresholded at 1/2). Each template is cropped to its
bounding box, padded to a square about the box centre (aspect kept) and resized to
``template_px`` (area interpolation, thresholded at 1/2); it keeps its box size, the
anchor's offset from the box centre (canonical pixels) and the median range of its visible
surface behind the anchor. The templates are bit-packed (``template_px``^2 / 8 bytes each).

Coarse match (``PoseEstimator.estimate``). The observed mask is normalised the same way and
scored against every template by IoU (packed bits, a popcount table; vectorised in numpy).
Candidates are the ``candidates`` (3) best templates whose rotations differ pairwise by
more than ``CANDIDATE_SEPARATION_DEG`` (so near-copies of one template, e.g. neighbouring
rolls, do not crowd out a second interpretation). Each gives a pose: the anchor's pixel is
the observed box centre plus the template's offset scaled by the size ratio ``s`` =
observed size / template size; its range is ``d0 (f / f0) / s`` from the box size, or, when
a depth map is given, the median range of the masked pixels plus the template's median
range offset; the template's rotation is turned by the rotation taking the optical axis
onto the anchor's ray (the template was seen on the axis).

Refinement. Each candidate is refined over 6 DoF by Nelder-Mead (``scipy.optimize``,
derivative free: the objective is a rasterised IoU, piecewise constant at pixel scale, so
gradients are useless and a simplex method's finite steps are what works). The parameters
are a rotation vector applied in the camera frame and the anchor's position in the camera
frame (so turning the part does not move it), scaled so that one unit is
``REFINE_ROT_STEP_RAD`` of rotation, ``REFINE_LATERAL_STEP_PX`` pixels across the image and
``REFINE_DEPTH_STEP`` of the range along the axis; the initial simplex is one unit along each
axis. Every candidate gets ``refine_evals`` (90) renders. Refined candidates whose IoU is
within ``IOU_TIE`` of the best, less near-copies (rotations within ``SAME_POSE_DEG``), are
each polished by Nelder-Mead restarts with a simplex of ``POLISH_SIMPLEX`` units (a simplex
collapses on the flat steps of a rasterised objective; a fresh one steps over them) until a
restart gains less than ``FATOL`` or ``polish_evals`` (150) renders are spent; a lone best
is polished alone. Each run stops early once its simplex spans less than ``XATOL`` units and
its values less than ``FATOL`` in 1 - IoU. Polishing every tied candidate, not only the
one chosen, matters: a correct candidate left a few degrees off fits silhouette and depth
worse than a wrong one refined to its optimum (scenario r2t-flange-j6, seed 0, part004: a
joint housing chosen turned by 179.8 degrees over the correct candidate 3.4 degrees off).
A render covers only a window about the observed mask's box (``WINDOW_MARGIN`` of its size
each side, clipped to the image), by shifting K's principal point: the same pixels, fewer
of them. With ``supersample`` k > 1 the refinement scores a soft IoU of k x k coverage
(smoother, k^2 the pixels; off by default: on the test parts it was slower and no more
accurate); the reported IoU is always the plain one at image resolution. When a depth map
is given, polished candidates still within ``IOU_TIE`` of the best are told apart by the
median difference between their rendered depth and the observed one: a silhouette cannot
tell a flange from its mirror image or a housing from its half turn, depth can.

Turns about the table normal (``table_turns_deg``, off by default). A part resting on the
bench is most often mistaken for itself turned about the vertical. With ``T_base_cam``
given, the best refined candidate turned by each of these angles about the base z axis
through its anchor (so it stays on the table) joins the candidates and is refined like
them, 90 renders each. Measured on r2t-flange-j6 seeds 0 and 1 (26 parts): the coarse
stage already offered the half-turn interpretation for every part, so (180,) fixed no
estimate, turned one correct but poorly refined housing estimate (7 degrees off) into its
half turn, and cost 90 renders per turn plus the polish of the extra tied candidate
(421-721 renders per estimate became 511-961; (90, 180, 270): 691-1291). Worth turning on
where the templates are coarse (``subdivisions`` 1, few ``rolls``), so the coarse stage
may miss the turned interpretation.
Last, the part is moved along its viewing ray by the median difference between observed
and rendered depth (``DEPTH_ALIGN_STEPS`` times): a silhouette fixes the range only weakly,
since its size goes as 1 / range, while depth measures it directly.

Like with like. A depth segmentation drops the part's lowest ``min_height_m`` (the pixels it
cannot tell from the table). Given the same ``T_base_cam`` and ``min_height_m``,
``estimate`` drops them from its renders too (each rendered pixel's height is computed from
its depth); without this, the silhouette's missing bottom rim biases the pose by several
millimetres along the view.

What a silhouette cannot fix: rotations under which the part's outline is unchanged (a
flange's yaw by its bolt pattern's symmetry; a housing's side gland hidden behind its body
looks the same turned by a half turn). ADD-S (``pose_errors``) is the measure for those.

Determinism: no randomness; pyrender's depth pass and scipy's Nelder-Mead are deterministic,
so the same inputs give the same estimate.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import cv2
import numpy as np
import trimesh
from numpy.typing import NDArray
from scipy import ndimage
from scipy.optimize import minimize
from scipy.spatial import cKDTree

from scenarios.interfaces import RenderOutput
from sim.appearance import twin_look
from sim.geometry import (
    invert_pose,
    look_at,
    make_pose,
    pose_error,
    rotation_matrix,
    transform_points,
    undistort_normalized,
)
from sim.render import MeshItem, Renderer, RenderScene
from sim.viewpoints import icosphere_directions

logger = logging.getLogger(__name__)

__all__ = ["PoseEstimate", "PoseEstimator", "pose_errors", "segment_from_depth"]

BoolArray = NDArray[np.bool_]
FloatArray = NDArray[np.float64]

#: Canonical template distance d0 in bounding radii of the mesh (about 0.3 m for an 80 mm
#: flange: the perspective of a cell's overview shot).
TEMPLATE_DISTANCE_RADII = 5.0
#: The mesh's projection fills at most this fraction of the canonical render's half side,
#: so no roll pushes it off the image.
TEMPLATE_FILL = 0.47
#: Canonical render side in template sizes (the render is area-resized down to the template).
TEMPLATE_RENDER_SCALE = 2
#: Coarse candidates refined and their least angle between viewing directions (degrees).
CANDIDATES = 3
CANDIDATE_SEPARATION_DEG = 25.0
#: Refinement parameter units and the Nelder-Mead stopping rules (in those units / 1 - IoU).
REFINE_ROT_STEP_RAD = 0.08
REFINE_LATERAL_STEP_PX = 3.0
REFINE_DEPTH_STEP = 0.02
POLISH_SIMPLEX = 0.25
XATOL = 0.02
FATOL = 1e-4
#: Refined candidates whose silhouette IoU is within this of the best are told apart by
#: depth (``_SilhouetteObjective.depth_residual``) when a depth map is given.
IOU_TIE = 0.02
#: Turns (degrees) about the table normal through the anchor that add candidates, when the
#: camera pose is known (e.g. (180.0,)): a part resting on the bench is most often mistaken
#: for itself turned about the vertical. Off by default (see the module docstring).
TABLE_TURNS_DEG: tuple[float, ...] = ()
#: Refined candidates whose rotations differ by less than this (degrees) are one pose.
SAME_POSE_DEG = 10.0
#: Range corrections from the median depth offset after refinement (with a depth map).
DEPTH_ALIGN_STEPS = 2
#: Render window margin about the observed mask's box, as a fraction of its size per side.
WINDOW_MARGIN = 0.3
#: Foreground cleaning: structuring element side (px); a hole is filled when at least this
#: fraction of its pixels has no depth return.
MORPH_PX = 3
HOLE_UNKNOWN_FRACTION = 0.5

# Set-bit count of every byte value, for IoU on packed masks (numpy 1.26 has no popcount).
_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint16)


def segment_from_depth(
    depth: np.ndarray,
    K: np.ndarray,
    T_base_cam: np.ndarray,
    dist: np.ndarray | None = None,
    min_height_m: float = 0.002,
    expected_px: tuple[float, float] | None = None,
) -> BoolArray:
    """The part's foreground mask S(I0) (H, W) bool from a z-depth map, as an RGB-D cell gets it.

    ``depth`` (H, W) float metres, 0 (or non-finite) where the sensor has no return; ``K``
    (3, 3) and ``dist`` (k1, k2, p1, p2[, k3]) the depth camera's intrinsics; ``T_base_cam``
    (4, 4) the believed camera pose, whose base frame has the table top at z = 0. Foreground
    is what stands more than ``min_height_m`` above the table, cleaned as described in the
    module docstring (unknown pixels filled, specks removed, one component kept).
    ``expected_px`` (u, v) px, the image point where the part is expected (e.g. the
    projection of its nominal placement), picks the component: the one containing that
    pixel, else the one with a pixel nearest to it; without it the largest is kept (on a
    bench with clutter in view, the largest may be the clutter). An empty array comes back
    when nothing stands on the table.
    """
    D = np.asarray(depth, dtype=np.float64)
    H, W = D.shape
    valid = np.isfinite(D) & (D > 0.0)
    v, u = np.nonzero(valid)
    xy = undistort_normalized(np.column_stack([u, v]).astype(np.float64), K, dist)
    T = np.asarray(T_base_cam, dtype=np.float64)
    z = D[valid]
    # Only the height is needed: z_base = row 2 of R applied to the camera point, plus t_z.
    height = (T[2, 0] * xy[:, 0] + T[2, 1] * xy[:, 1] + T[2, 2]) * z + T[2, 3]
    fg = np.zeros((H, W), dtype=np.uint8)
    fg[v, u] = height > min_height_m
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (MORPH_PX, MORPH_PX))
    # A pixel without a return takes the class of its nearest measured pixel: dropouts come
    # in blobs wider than any small closing, and this never bridges onto seen table.
    if (~valid).any() and valid.any():
        iy, ix = ndimage.distance_transform_edt(~valid, return_distances=False, return_indices=True)
        fg = fg[iy, ix]
    opened = cv2.morphologyEx(fg, cv2.MORPH_OPEN, kernel)
    n, cc_labels, stats, _ = cv2.connectedComponentsWithStats(opened, connectivity=8)
    if n <= 1:
        return np.zeros((H, W), dtype=bool)
    labels: NDArray[np.int32] = np.asarray(cc_labels, dtype=np.int32)
    part = np.asarray(labels == _pick_component(labels, n, np.asarray(stats), expected_px))
    # Holes: background components (4-connected, the dual of 8-connected foreground) that do
    # not touch the image border.
    n_bg, bg_labels = cv2.connectedComponents((~part).astype(np.uint8), connectivity=4)
    border = np.unique(
        np.concatenate([bg_labels[0], bg_labels[-1], bg_labels[:, 0], bg_labels[:, -1]])
    )
    unknown = np.bincount(bg_labels[~valid & ~part], minlength=n_bg)
    size = np.bincount(bg_labels.ravel(), minlength=n_bg)
    fill = unknown >= HOLE_UNKNOWN_FRACTION * np.maximum(size, 1)
    fill[border] = False  # the outer background
    fill[0] = False  # label 0: the part's own pixels
    return np.asarray(part | (fill[bg_labels] & ~part), dtype=bool)


def _pick_component(
    labels: NDArray[np.integer],
    n: int,
    stats: NDArray[np.generic],
    expected_px: tuple[float, float] | None,
) -> int:
    """The label (1 .. n - 1) of the component to keep: the one containing ``expected_px``
    (u, v), else the one with a pixel nearest to it, else (no point given) the largest."""
    if expected_px is None:
        return 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    u, v = float(expected_px[0]), float(expected_px[1])
    H, W = labels.shape
    # Pixel (u, v) covers [u - 1/2, u + 1/2) x [v - 1/2, v + 1/2) (OpenCV: centres at integers).
    iu, iv = int(np.floor(u + 0.5)), int(np.floor(v + 0.5))
    if 0 <= iu < W and 0 <= iv < H and labels[iv, iu] > 0:
        return int(labels[iv, iu])
    vv, uu = np.nonzero(labels)
    d2 = (uu - u) ** 2 + (vv - v) ** 2
    nearest = np.full(n, np.inf)
    np.minimum.at(nearest, labels[vv, uu], d2)
    return int(np.argmin(nearest))  # label 0 (background) stays at inf


@dataclass(frozen=True)
class PoseEstimate:
    """One object pose estimate.

    ``T_cam_obj`` (4, 4) float64, metres; ``coarse_iou`` the best template's IoU (template
    resolution); ``iou`` the final silhouette IoU at image resolution; ``evaluations`` the
    silhouette renders made by the refinement; ``seconds`` the wall time of ``estimate``.
    """

    T_cam_obj: np.ndarray
    coarse_iou: float
    iou: float
    evaluations: int
    seconds: float


@dataclass(frozen=True)
class _Box:
    """A mask's bounding box: centre (u, v) px and size (max side) px."""

    center: FloatArray
    size: float
    u0: int
    v0: int
    u1: int
    v1: int


def _bbox(mask: BoolArray) -> _Box | None:
    """The bounding box of a mask's pixels (inclusive pixel indices), None when empty."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if len(rows) == 0:
        return None
    v0, v1, u0, u1 = int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1])
    size = float(max(v1 - v0 + 1, u1 - u0 + 1))
    return _Box(np.array([0.5 * (u0 + u1), 0.5 * (v0 + v1)]), size, u0, v0, u1, v1)


def _normalise(mask: BoolArray, box: _Box, px: int) -> BoolArray:
    """Crop ``mask`` to ``box``, pad it to a square about the box centre, resize to px x px."""
    crop = mask[box.v0 : box.v1 + 1, box.u0 : box.u1 + 1]
    h, w = crop.shape
    side = max(h, w)
    square = np.zeros((side, side), dtype=np.float32)
    r0, c0 = (side - h) // 2, (side - w) // 2
    square[r0 : r0 + h, c0 : c0 + w] = crop
    small = cv2.resize(square, (px, px), interpolation=cv2.INTER_AREA)
    return np.asarray(small >= 0.5)


def _ray_rotation(ray: FloatArray) -> FloatArray:
    """The smallest rotation (3, 3) taking the optical axis (0, 0, 1) onto unit ``ray``."""
    z = np.array([0.0, 0.0, 1.0])
    axis = np.cross(z, ray)
    s = float(np.linalg.norm(axis))
    if s < 1e-12:
        return np.eye(3)
    return rotation_matrix(axis / s * np.arctan2(s, float(ray @ z)))


def _distinct(results: list[tuple[FloatArray, float]]) -> list[tuple[FloatArray, float]]:
    """``results`` (pose, IoU) less those within ``SAME_POSE_DEG`` of a better one's rotation
    (two candidates refined into one pose need one polish, not two)."""
    max_trace = 1.0 + 2.0 * np.cos(np.radians(SAME_POSE_DEG))
    kept: list[tuple[FloatArray, float]] = []
    for r in sorted(results, key=lambda r: -r[1]):
        if all(np.sum(r[0][:3, :3] * k[0][:3, :3]) < max_trace for k in kept):
            kept.append(r)
    return kept


def _turned(
    T_cam_obj: FloatArray, anchor_obj: FloatArray, axis: FloatArray, angle: float
) -> FloatArray:
    """``T_cam_obj`` (4, 4) turned by ``angle`` rad about unit ``axis`` (camera frame)
    through the object's anchor point (so the anchor does not move)."""
    a = transform_points(T_cam_obj, anchor_obj[None])[0]
    R = rotation_matrix(np.asarray(axis, dtype=np.float64) * angle)
    return make_pose(R @ T_cam_obj[:3, :3], a + R @ (T_cam_obj[:3, 3] - a))


class PoseEstimator:
    """Estimates ``T_cam_obj`` of one CAD part from its foreground mask (and optional depth).

    ``mesh`` is the part in metres, object frame; ``key`` its render cache key (equal keys
    must mean equal meshes, see ``MeshItem``); ``K`` (3, 3) and ``image_size`` (W, H) the
    camera the masks come from; ``renderer`` draws the silhouettes (depth only). Templates
    are rendered in the constructor over ``subdivisions`` icosphere directions x ``rolls``
    in-plane rolls at ``template_px`` square. ``candidates`` coarse candidates are refined
    with ``refine_evals`` renders each, those tied with the best polished with up to
    ``polish_evals`` more each. ``table_turns_deg`` (degrees) add the best refined
    candidate turned about the table normal when ``estimate`` gets ``T_base_cam``.
    ``template_seconds`` is the constructor's wall time.
    """

    def __init__(
        self,
        mesh: trimesh.Trimesh,
        key: str,
        K: np.ndarray,
        image_size: tuple[int, int],
        renderer: Renderer,
        subdivisions: int = 2,
        rolls: int = 24,
        template_px: int = 64,
        candidates: int = CANDIDATES,
        refine_evals: int = 90,
        polish_evals: int = 150,
        supersample: int = 1,
        table_turns_deg: tuple[float, ...] = TABLE_TURNS_DEG,
    ) -> None:
        start = time.perf_counter()
        self.mesh = mesh
        self.key = key
        self.K = np.asarray(K, dtype=np.float64)
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.renderer = renderer
        self.template_px = int(template_px)
        self.candidates = int(candidates)
        self.refine_evals = int(refine_evals)
        self.polish_evals = int(polish_evals)
        self.supersample = int(supersample)
        self.table_turns_deg = tuple(float(a) for a in table_turns_deg)
        self._material = {0: twin_look(np.zeros(3)).part}
        bounds = np.asarray(mesh.bounds, dtype=np.float64)
        self.anchor_obj = 0.5 * (bounds[0] + bounds[1])
        radius = float(np.linalg.norm(np.asarray(mesh.vertices) - self.anchor_obj, axis=1).max())
        self.d0 = TEMPLATE_DISTANCE_RADII * radius
        side = TEMPLATE_RENDER_SCALE * self.template_px
        # Projected radius of the bounding sphere: f r / sqrt(d0^2 - r^2) <= TEMPLATE_FILL side/2.
        self.f0 = TEMPLATE_FILL * 0.5 * side * np.sqrt(self.d0**2 - radius**2) / radius
        c = 0.5 * (side - 1)
        K0 = np.array([[self.f0, 0.0, c], [0.0, self.f0, c], [0.0, 0.0, 1.0]])
        self._build_templates(K0, side, subdivisions, rolls)
        self.template_seconds = time.perf_counter() - start

    def _build_templates(self, K0: FloatArray, side: int, subdivisions: int, rolls: int) -> None:
        """Render the canonical views, roll them by warping and normalise every template."""
        directions = icosphere_directions(subdivisions)
        c = K0[0, 2]
        angles = 2.0 * np.pi * np.arange(rolls) / rolls
        rot: list[FloatArray] = []
        view: list[FloatArray] = []
        size: list[float] = []
        offset: list[FloatArray] = []
        range_offset: list[float] = []
        packed: list[NDArray[np.uint8]] = []
        for d in directions:
            T_obj_cam = look_at(self.anchor_obj + self.d0 * d, self.anchor_obj, (0.0, 0.0, 1.0))
            T_cam_obj = invert_pose(T_obj_cam)
            out = self._render(T_cam_obj, K0, (side, side))
            hit = out.depth > 0
            # Range (distance from the camera centre) of the visible surface behind the
            # anchor: a roll does not change it.
            vv, uu = np.nonzero(hit)
            rays = np.column_stack([(uu - c) / self.f0, (vv - c) / self.f0, np.ones(len(uu))])
            ranges = out.depth[hit] * np.linalg.norm(rays, axis=1)
            dr = float(np.median(ranges)) - self.d0 if len(ranges) else 0.0
            src = hit.astype(np.float32)
            for a in angles:
                # Rolling the camera by +a about its z axis maps a camera point p to
                # Rz(-a) p, so pixel offsets q from the principal point turn by -a.
                ca, sa = np.cos(a), np.sin(a)
                M = np.array([[ca, sa, c - ca * c - sa * c], [-sa, ca, c + sa * c - ca * c]])
                warped = cv2.warpAffine(src, M, (side, side), flags=cv2.INTER_LINEAR) >= 0.5
                box = _bbox(warped)
                if box is None:
                    continue
                Rz = rotation_matrix(np.array([0.0, 0.0, -a]))
                rot.append(Rz @ T_cam_obj[:3, :3])
                view.append(d)
                size.append(box.size)
                offset.append(np.array([c, c]) - box.center)
                range_offset.append(dr)
                packed.append(np.packbits(_normalise(warped, box, self.template_px)))
        self._rot = np.stack(rot)
        self._view = np.stack(view)
        self._size = np.asarray(size)
        self._offset = np.stack(offset)
        self._range_offset = np.asarray(range_offset)
        self._packed = np.stack(packed)
        self._area = _POPCOUNT[self._packed].sum(axis=1, dtype=np.int64)

    @property
    def n_templates(self) -> int:
        """How many templates the coarse stage scores."""
        return len(self._rot)

    def _render(self, T_cam_obj: FloatArray, K: FloatArray, size: tuple[int, int]) -> RenderOutput:
        """Render the mesh at ``T_cam_obj`` with a camera at the base origin (depth only)."""
        item = MeshItem(self.key, self.mesh, T_cam_obj, self._material)
        return self.renderer.render(RenderScene((item,), ()), K, size, np.eye(4), depth_only=True)

    def template_ious(self, mask: np.ndarray) -> FloatArray:
        """IoU (N,) of the normalised ``mask`` (H, W) bool with every template."""
        box = _bbox(np.asarray(mask, dtype=bool))
        if box is None:
            return np.zeros(self.n_templates)
        return self._ious(np.asarray(mask, dtype=bool), box)

    def _ious(self, mask: BoolArray, box: _Box) -> FloatArray:
        obs = np.packbits(_normalise(mask, box, self.template_px))
        inter = _POPCOUNT[self._packed & obs].sum(axis=1, dtype=np.int64)
        union = self._area + int(_POPCOUNT[obs].sum()) - inter
        return np.asarray(inter / np.maximum(union, 1), dtype=np.float64)

    def _coarse_pose(
        self, i: int, box: _Box, mask: BoolArray, depth: np.ndarray | None
    ) -> FloatArray:
        """The pose ``T_cam_obj`` (4, 4) that template ``i`` implies for the observed box."""
        s = box.size / self._size[i]  # observed px per canonical px
        anchor_px = box.center + s * self._offset[i]
        xy = (anchor_px - self.K[:2, 2]) / np.diag(self.K)[:2]
        ray = np.array([xy[0], xy[1], 1.0])
        ray /= np.linalg.norm(ray)
        f = 0.5 * (self.K[0, 0] + self.K[1, 1])
        rng = self.d0 * (f / self.f0) / s
        if depth is not None:
            D = np.asarray(depth, dtype=np.float64)
            hit = mask & np.isfinite(D) & (D > 0)
            if hit.sum() > 0:
                v, u = np.nonzero(hit)
                pix = np.column_stack([u, v]).astype(np.float64)
                n = (pix - self.K[:2, 2]) / np.diag(self.K)[:2]
                ranges = D[hit] * np.sqrt(1.0 + (n**2).sum(axis=1))
                rng = float(np.median(ranges)) - self._range_offset[i]
        R = _ray_rotation(ray) @ self._rot[i]
        return make_pose(R, rng * ray - R @ self.anchor_obj)

    def _select(self, ious: FloatArray) -> list[int]:
        """The best templates whose rotations are pairwise apart (see the module docstring)."""
        # Two rotations are apart by more than a when trace(Ri^T Rj) < 1 + 2 cos a.
        max_trace = 1.0 + 2.0 * np.cos(np.radians(CANDIDATE_SEPARATION_DEG))
        chosen: list[int] = []
        for i in np.argsort(-ious, kind="stable"):
            if all(np.sum(self._rot[i] * self._rot[j]) < max_trace for j in chosen):
                chosen.append(int(i))
                if len(chosen) == self.candidates:
                    break
        return chosen

    def estimate(
        self,
        mask: np.ndarray,
        depth: np.ndarray | None = None,
        T_base_cam: np.ndarray | None = None,
        min_height_m: float = 0.0,
    ) -> PoseEstimate:
        """Estimate ``T_cam_obj`` from the part's foreground ``mask`` (H, W) bool.

        ``depth`` (H, W) float metres (0 = no return), when given, sets the coarse range
        from the masked pixels' median instead of the box size. ``T_base_cam`` (4, 4) and
        ``min_height_m``, when the mask came from ``segment_from_depth`` with them, make
        the refinement's renders drop what that segmentation drops (the part's surface
        less than ``min_height_m`` above the table plane z = 0), so the silhouettes compare
        like with like. Raises ValueError on an empty mask or one of the wrong size.
        """
        start = time.perf_counter()
        obs = np.asarray(mask, dtype=bool)
        W, H = self.image_size
        if obs.shape != (H, W):
            raise ValueError(f"mask must have shape {(H, W)}, got {obs.shape}")
        box = _bbox(obs)
        if box is None:
            raise ValueError("estimate: the mask is empty")
        ious = self._ious(obs, box)
        picks = self._select(ious)
        table = None if T_base_cam is None else (np.asarray(T_base_cam, np.float64), min_height_m)
        window = self._window(box)
        objective = _SilhouetteObjective(self, obs, window, table, self.supersample)
        results = []
        for i in picks:
            T0 = self._coarse_pose(i, box, obs, depth)
            results.append(objective.minimise(T0, 1.0, self.refine_evals))
        if table is not None and self.table_turns_deg:
            # The part rests on the bench: its likeliest confusions are turns about the
            # table normal. Turn the best refined pose about the vertical through its anchor
            # (the part stays on the table) and refine each turn like a coarse candidate.
            up_cam = table[0][2, :3]  # base z in the camera frame: row 2 of R_base_cam
            T_ref = max(results, key=lambda r: r[1])[0]
            for a in self.table_turns_deg:
                T0 = _turned(T_ref, self.anchor_obj, up_cam, np.radians(a))
                results.append(objective.minimise(T0, 1.0, self.refine_evals))
        T_best, iou = max(results, key=lambda r: r[1])
        tied = _distinct([r for r in results if r[1] >= iou - IOU_TIE])
        if len(tied) > 1:
            # Silhouettes that explain the mask about equally well (a flange upside down, a
            # housing turned half-way) are all polished before one is chosen: a pose a few
            # degrees off fits both silhouette and depth worse than a wrong one polished.
            tied = [self._polish(objective, T, i, self.polish_evals) for T, i in tied]
            T_best, iou = max(tied, key=lambda r: r[1])
            tied = [r for r in tied if r[1] >= iou - IOU_TIE]
            if depth is not None and len(tied) > 1:
                # Still tied: they differ in depth, which decides.
                T_best, iou = min(tied, key=lambda r: objective.depth_residual(r[0], depth))
        else:
            T_best, iou = self._polish(objective, T_best, iou, self.polish_evals)
        if depth is not None:
            # A silhouette fixes the range only weakly (it scales by 1 / range): move the part
            # along its viewing ray by the median depth offset, which fixes it directly.
            for _ in range(DEPTH_ALIGN_STEPS):
                r = objective.depth_offset(T_best, depth)
                anchor = transform_points(T_best, self.anchor_obj[None])[0]
                T_best = T_best.copy()
                T_best[:3, 3] += (r / anchor[2]) * anchor
            iou = objective.iou(T_best)
        if self.supersample > 1:
            iou = _SilhouetteObjective(self, obs, window, table).iou(T_best)
        seconds = time.perf_counter() - start
        logger.debug(
            "pose estimate: coarse IoU %.3f, IoU %.4f, %d renders, %.2f s",
            ious[picks[0]],
            iou,
            objective.evaluations,
            seconds,
        )
        return PoseEstimate(T_best, float(ious[picks[0]]), iou, objective.evaluations, seconds)

    @staticmethod
    def _polish(
        objective: _SilhouetteObjective, T: FloatArray, iou: float, evals: int
    ) -> tuple[FloatArray, float]:
        """Restart Nelder-Mead from ``T`` while it still gains (a simplex on a rasterised
        objective collapses on flat steps; a fresh one steps over them), within ``evals``."""
        budget = objective.evaluations + evals
        while objective.evaluations < budget:
            T_new, iou_new = objective.minimise(T, POLISH_SIMPLEX, budget - objective.evaluations)
            gain = iou_new - iou
            if gain > 0:
                T, iou = T_new, iou_new
            if gain < FATOL:
                break
        return T, iou

    def _window(self, box: _Box) -> tuple[int, int, int, int]:
        """The render window (u0, v0, u1, v1), exclusive ends, about the mask's box."""
        W, H = self.image_size
        m = int(np.ceil(WINDOW_MARGIN * box.size)) + 2
        return (
            max(box.u0 - m, 0),
            max(box.v0 - m, 0),
            min(box.u1 + 1 + m, W),
            min(box.v1 + 1 + m, H),
        )


class _SilhouetteObjective:
    """The silhouette IoU of the mesh with the observed mask, over a render window.

    With ``supersample`` k > 1 the window is rendered at k x k samples per pixel and the
    IoU is the soft one of the coverage c in [0, 1] with the 0/1 mask o: sum min(c, o) /
    sum max(c, o) (k = 1: the plain IoU).
    """

    def __init__(
        self,
        est: PoseEstimator,
        mask: BoolArray,
        window: tuple[int, int, int, int],
        table: tuple[FloatArray, float] | None,
        supersample: int = 1,
    ) -> None:
        u0, v0, u1, v1 = window
        self.window = window
        self.est = est
        self.obs = mask[v0:v1, u0:u1]
        self.obs_area = int(self.obs.sum())
        self.k = int(supersample)
        k = self.k
        # Window pixel (u, v) -> sample pixels k u .. k u + k - 1: with OpenCV's centres at
        # integers, u_k = k (u - u0) + (k - 1) / 2 for the same ray.
        self.K = est.K.copy()
        self.K[:2] *= k
        self.K[0, 2] = k * (est.K[0, 2] - u0) + 0.5 * (k - 1)
        self.K[1, 2] = k * (est.K[1, 2] - v0) + 0.5 * (k - 1)
        self.shape = (v1 - v0, u1 - u0)
        self.size = (k * (u1 - u0), k * (v1 - v0))
        self.evaluations = 0
        self.height_per_m: FloatArray | None = None
        if table is not None:
            # A sample's height above the table is h = a . (x, y, 1) z + b for its
            # normalised ray (x, y, 1) and z-depth z, with (a, b) the pose's third row.
            T_base_cam, self.min_height_m = table
            v, u = np.mgrid[0 : self.size[1], 0 : self.size[0]].astype(np.float64)
            y = (v - self.K[1, 2]) / self.K[1, 1]
            x = (u - self.K[0, 2] - self.K[0, 1] * y) / self.K[0, 0]
            self.height_per_m = T_base_cam[2, 0] * x + T_base_cam[2, 1] * y + T_base_cam[2, 2]
            self.height_offset_m = float(T_base_cam[2, 3])

    def iou(self, T_cam_obj: FloatArray) -> float:
        """The (soft, when supersampled) silhouette IoU of the mesh at ``T_cam_obj``."""
        self.evaluations += 1
        if T_cam_obj[2, 3] <= 0:
            return 0.0
        out = self.est._render(T_cam_obj, self.K, self.size)
        sil = out.mask
        if self.height_per_m is not None:
            height = self.height_per_m * out.depth + self.height_offset_m
            sil = sil & (height > self.min_height_m)
        h, w = self.shape
        k = self.k
        cover = sil.reshape(h, k, w, k).mean(axis=(1, 3)) if k > 1 else sil.astype(np.float64)
        inter = float(cover[self.obs].sum())
        union = self.obs_area + float(cover[~self.obs].sum())
        return inter / union if union else 0.0

    def depth_residual(self, T_cam_obj: FloatArray, depth: np.ndarray) -> float:
        """Median |rendered - observed| z-depth (m) where both see the part in the window
        (inf where they share no pixel): how well a pose explains the observed depth."""
        diff = self._depth_diff(T_cam_obj, depth)
        return float(np.median(np.abs(diff))) if len(diff) else float("inf")

    def depth_offset(self, T_cam_obj: FloatArray, depth: np.ndarray) -> float:
        """Median observed - rendered z-depth (m) where both see the part (0 if none)."""
        diff = self._depth_diff(T_cam_obj, depth)
        return float(np.median(diff)) if len(diff) else 0.0

    def _depth_diff(self, T_cam_obj: FloatArray, depth: np.ndarray) -> FloatArray:
        """Observed - rendered z-depth (m) at the window pixels where both see the part."""
        u0, v0 = self.window[:2]
        h, w = self.shape
        obs_d = np.asarray(depth, dtype=np.float64)[v0 : v0 + h, u0 : u0 + w]
        out = self.est._render(T_cam_obj, self.K, self.size)
        d = out.depth
        if self.k > 1:
            d = d[:: self.k, :: self.k]
        both = self.obs & (d > 0) & (obs_d > 0)
        return np.asarray(obs_d[both] - d[both], dtype=np.float64)

    def minimise(self, T0: FloatArray, simplex: float, max_evals: int) -> tuple[FloatArray, float]:
        """Nelder-Mead from ``T0`` (simplex edge ``simplex`` units); returns (pose, IoU)."""
        est = self.est
        anchor0 = transform_points(T0, est.anchor_obj[None])[0]
        R0 = T0[:3, :3]
        depth = float(np.linalg.norm(anchor0))
        f = 0.5 * (est.K[0, 0] + est.K[1, 1])
        lateral = REFINE_LATERAL_STEP_PX * depth / f
        scale = np.array([REFINE_ROT_STEP_RAD] * 3 + [lateral, lateral, REFINE_DEPTH_STEP * depth])

        def pose(x: FloatArray) -> FloatArray:
            p = x * scale
            R = rotation_matrix(p[:3]) @ R0
            return make_pose(R, anchor0 + p[3:] - R @ est.anchor_obj)

        def cost(x: FloatArray) -> float:
            return 1.0 - self.iou(pose(x))

        x0 = np.zeros(6)
        res = minimize(
            cost,
            x0,
            method="Nelder-Mead",
            options={
                "initial_simplex": np.vstack([x0, simplex * np.eye(6)]),
                "maxfev": max_evals,
                "xatol": XATOL,
                "fatol": FATOL,
            },
        )
        return pose(np.asarray(res.x)), 1.0 - float(res.fun)


def pose_errors(
    T_est: np.ndarray,
    T_true: np.ndarray,
    points_obj: np.ndarray,
    surface_obj: np.ndarray | None = None,
) -> dict[str, float]:
    """Translation (mm), rotation (degrees), ADD and ADD-S (mm) of an estimated pose.

    ``T_est``, ``T_true`` (4, 4) map the object frame into the same frame; ``points_obj``
    (N, 3) float64 metres, model points in the object frame. ``translation_mm`` is the
    distance between the two object origins, ``rotation_deg`` the angle of the relative
    rotation. ``add_mm`` (ADD) is the mean distance between each model point under the
    estimate and the same point under the true pose; ``add_s_mm`` (ADD-S) the mean distance
    from each model point under the estimate to the closest model point under the true pose.

    Which to read: ADD for a part without symmetry (a joint housing: its half turn is wrong,
    and ADD says so by tens of mm, while ADD-S sees two nearly coincident point sets and
    reports a few mm). ADD-S for a part with symmetries (a flange's bolt pattern): it counts
    a symmetric equivalent of the true pose as correct, which ADD does not. Translation and
    rotation are raw; a symmetric part's rotation can be large for a correct estimate.

    ``surface_obj`` (M, 3), a much denser sampling of the same surface, is what ADD-S looks
    for the closest point in (default ``points_obj``): with sparse samples, an exact
    symmetric turn maps samples between samples, and ADD-S cannot fall below about half
    their spacing (about 1.5 mm for 2000 samples of a flange).
    """
    P = np.asarray(points_obj, dtype=np.float64)
    S = P if surface_obj is None else np.asarray(surface_obj, dtype=np.float64)
    _, r_rad = pose_error(T_true, T_est)
    est_pts = transform_points(T_est, P)
    true_pts = transform_points(T_true, P)
    d, _ = cKDTree(transform_points(T_true, S)).query(est_pts)
    return {
        "translation_mm": float(np.linalg.norm(T_est[:3, 3] - T_true[:3, 3]) * 1e3),
        "rotation_deg": float(np.degrees(r_rad)),
        "add_mm": float(np.mean(np.linalg.norm(est_pts - true_pts, axis=1)) * 1e3),
        "add_s_mm": float(np.mean(d) * 1e3),
    }
