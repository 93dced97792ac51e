"""Training triplets for COSARAD's contrastive extractor, from labelled part clouds.

The paper's triplet generation (section III.A.1), with the simulator as its labelled source:
for each defective part ``X_b`` of a family, pairs of two other, normal parts ``X_g``,
``X_p`` of the same family are registered into ``X_b``'s frame; patch centres are farthest
point samples of ``X_b``'s defect points; the patches at one centre make a triplet
(anchor ``P_g``, positive ``P_p``, negative ``P_b``): two good patches that should agree,
and the defective one at the same place that should not.

Choices the paper leaves open: ``pairs`` (g, p) pairs are drawn per defective part (seeded),
``centres`` centres per part (FPS from its first defect point); a triplet is kept only when
each of its three patches has at least ``min_points`` points (a partial scan that missed
the place in one of the parts teaches nothing).
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from detectors.cosarad.patches import farthest_point_sample, normalised_patches, patch_members
from detectors.cosarad.registration import prepare, register, transform
from scenarios.interfaces import PartSample

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TripletSet:
    """Triplets (T, 3, P, 3) float32 [anchor, positive, negative] of normalised patches,
    and for each the family (T,) and the defective part it came from (T,)."""

    patches: np.ndarray
    families: np.ndarray
    parts: np.ndarray


def make_triplets(
    parts: Sequence[PartSample],
    radius_m: float,
    patch_points: int = 512,
    centres: int = 16,
    pairs: int = 2,
    min_points: int = 64,
    register_voxel_m: float = 0.004,
    fine_voxel_m: float = 0.0015,
    seed: int = 0,
    progress: bool = False,
) -> TripletSet:
    """Triplets from ``parts``: every defective part (with point labels) against ``pairs``
    pairs of normal parts of its family; see the module docstring."""
    from tqdm import tqdm

    normals: dict[str, list[PartSample]] = {}
    for p in sorted(parts, key=lambda p: p.id):
        if p.label == 0 and not p.defects:  # not a part whose defect no view saw
            normals.setdefault(p.category, []).append(p)
    defective = [
        p
        for p in sorted(parts, key=lambda p: p.id)
        if p.label == 1 and p.gt_point_labels is not None and p.gt_point_labels.any()
    ]
    out: list[np.ndarray] = []
    fams: list[str] = []
    ids: list[str] = []
    for b in tqdm(defective, desc="triplets", unit="part", disable=not progress):
        pool = normals.get(b.category, [])
        if len(pool) < 2:
            log.warning("%s: fewer than 2 normal parts of %s; no triplets", b.id, b.category)
            continue
        rng = np.random.default_rng([seed, zlib.crc32(b.id.encode())])
        Xb = np.asarray(b.points, dtype=np.float64)
        labels = np.asarray(b.gt_point_labels, dtype=bool)
        defect_pts = Xb[labels]
        C = defect_pts[farthest_point_sample(defect_pts, centres)]
        members_b = patch_members(Xb, C, radius_m)
        Pb = normalised_patches(Xb, C, members_b, radius_m, patch_points, seed)
        target = prepare(Xb, register_voxel_m, fine_voxel_m)  # once for all its normals
        moved: dict[str, tuple[np.ndarray, list[np.ndarray]]] = {}
        for _ in range(pairs):
            g, p = rng.choice(len(pool), size=2, replace=False)
            for k in (g, p):
                part = pool[int(k)]
                if part.id not in moved:
                    reg = register(
                        np.asarray(part.points, dtype=np.float64),
                        target,
                        voxel_m=register_voxel_m,
                        fine_voxel_m=fine_voxel_m,
                        seed=seed,
                    )
                    X = transform(part.points, reg.T)
                    moved[part.id] = (X, patch_members(X, C, radius_m))
            (Xg, mg), (Xp, mp) = moved[pool[int(g)].id], moved[pool[int(p)].id]
            Pg = normalised_patches(Xg, C, mg, radius_m, patch_points, seed + 1)
            Pp = normalised_patches(Xp, C, mp, radius_m, patch_points, seed + 2)
            for j in range(len(C)):
                if min(len(mg[j]), len(mp[j]), len(members_b[j])) < min_points:
                    continue
                out.append(np.stack([Pg[j], Pp[j], Pb[j]]))
                fams.append(b.category)
                ids.append(b.id)
    if not out:
        raise ValueError(
            "no triplet could be made: the parts need defect points and at least 2 normal "
            "parts of each defective part's family"
        )
    return TripletSet(np.stack(out).astype(np.float32), np.array(fams), np.array(ids))
