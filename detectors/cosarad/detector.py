"""COSARAD as a part-level ``Detector``: a whole part's fused cloud in, a score per point out.

Fit (Algorithm 2, lines 1-11), per part family (``PartSample.category``):
1. the first ``templates`` normal parts (by id) are the templates ``Y_1 .. Y_G``; each of
   ``Y_2 .. Y_G`` is registered into ``Y_1``'s frame (``registration.register``);
2. ``patches`` centres by farthest point sampling on ``Y_1`` (on its ``feature_voxel_mm``
   downsampling, from its first point);
3. each template's patch at each centre (every point within ``radius_mm``) gets a feature
   (FPFH, or the contrastive extractor on the patch resampled to ``patch_points``);
   ``|P|_min`` is ``min_points`` times the mean patch size of ``Y_1`` (the paper's
   heuristic for partial scans: 0.5);
4. one memory bank per centre (``bank: local``) or one for all (``bank: global``, the
   paper's PatchCore ablation).

Predict: register the part into ``Y_1``'s frame, take its patches at the same centres,
score each against its bank (Cohen's d, eq. 2), aggregate the top ``top_k`` patch scores
into the object score (``aggregate``), and spread the patch scores to the points (eq. 3).

The contrastive extractor must not have been trained on the family it scores (the paper's
category-disjoint protocol): ``extractor`` is a checkpoint of ``twincell train cosarad``,
or a directory of them (one per fold), and for each family the first checkpoint (by name)
whose training families leave it out is used; a family every checkpoint saw is refused
unless ``allow_seen_families`` is set.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, Strict, model_validator

from detectors.backbones.weights import file_sha256
from detectors.cosarad.banks import GlobalBank, LocationBanks, aggregate, point_scores
from detectors.cosarad.patches import farthest_point_sample, normalised_patches, patch_members
from detectors.cosarad.registration import Prepared, prepare, register, to_pcd, transform
from scenarios.interfaces import PartSample, Prediction, SpecError

log = logging.getLogger(__name__)

#: The extractors twincell ships (``extractor: shipped``), one per fold of families.
SHIPPED_EXTRACTORS = Path(__file__).resolve().parents[2] / "assets" / "weights" / "cosarad"


class COSARADParams(BaseModel):
    """COSARAD's parameters (the paper's where it gives them; sizes for ~10 cm parts)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    #: Patch features: Open3D's FPFH (handcrafted) or the contrastive PointNet++ extractor.
    features: Literal["fpfh", "contrastive"] = "fpfh"
    #: A ``twincell train cosarad`` checkpoint, a directory of them (folds), or
    #: ``shipped`` (``assets/weights/cosarad/``).
    extractor: Annotated[str, Strict()] | None = None
    #: Score a family the extractor was trained on (breaks the category-disjoint protocol).
    allow_seen_families: Annotated[bool, Strict()] = False
    #: One memory bank per patch location (COSARAD) or one for the whole part (ablation).
    bank: Literal["local", "global"] = "local"
    #: Templates per family, G (Real3D-AD: 4); the first G normal training parts by id.
    templates: Annotated[int, Strict()] = Field(4, ge=2, le=64)
    #: Patch centres per family, L (farthest point sampling on the first template).
    patches: Annotated[int, Strict()] = Field(256, ge=1, le=4096)
    #: Patch radius R, mm.
    radius_mm: Annotated[float, Strict()] = Field(6.0, gt=0.0, le=200.0)
    #: Points a patch is resampled to for the network (the paper: 512).
    patch_points: Annotated[int, Strict()] = Field(512, ge=16, le=4096)
    #: |P|_min as a fraction of the first template's mean patch size (the paper: 0.5).
    min_points: Annotated[float, Strict()] = Field(0.5, ge=0.0, le=1.0)
    #: Object score: max of the top patch (paper baseline), or sum / mean of the top k.
    aggregate: Literal["max", "sum", "mean"] = "max"
    top_k: Annotated[int, Strict()] = Field(1, ge=1, le=64)
    #: Registration: coarse voxel (mm) for its FPFH, RANSAC and first ICP (the fine ICP
    #: and the Chamfer use ``feature_voxel_mm``); tries; the Chamfer RMS that stops them.
    register_voxel_mm: Annotated[float, Strict()] = Field(4.0, gt=0.0, le=50.0)
    register_tries: Annotated[int, Strict()] = Field(5, ge=1, le=20)
    register_accept_mm: Annotated[float, Strict()] = Field(1.5, ge=0.0, le=50.0)
    #: Voxel (mm) of the clouds the centres, the FPFH features and the fine ICP use.
    feature_voxel_mm: Annotated[float, Strict()] = Field(1.5, gt=0.0, le=50.0)
    seed: Annotated[int, Strict()] = Field(0, ge=0, le=2**31 - 1)

    @model_validator(mode="after")
    def _checked(self) -> COSARADParams:
        if self.features == "contrastive" and not self.extractor:
            raise ValueError(
                "extractor: the contrastive features need a checkpoint of "
                "`twincell train cosarad` (a file or a directory of folds)"
            )
        if self.features == "fpfh" and self.extractor:
            raise ValueError("extractor: only used with features: contrastive")
        if self.extractor:
            # Missing, unreadable or mismatched checkpoints are refused when the scenario
            # loads, not after its simulation.
            for f in COSARAD.extractor_files(self.extractor):
                meta = checkpoint_meta(f)
                for key, mine in (
                    ("radius_mm", self.radius_mm),
                    ("patch_points", self.patch_points),
                ):
                    theirs = meta.get(key)
                    if theirs is not None and abs(float(theirs) - float(mine)) > 1e-9:
                        raise ValueError(
                            f"extractor: {f.name} was trained with {key} {theirs:g}; set "
                            f"{key}: {theirs:g}"
                        )
        return self


def checkpoint_meta(path: Path) -> dict[str, Any]:
    """The meta of a ``twincell train cosarad`` checkpoint (ValueError, one line, for a file
    that is not one)."""
    from detectors.cosarad.contrastive import load_extractor

    _, info = load_extractor(path)
    return dict(info["meta"])


class _Family:
    """What COSARAD keeps per part family: the first template prepared for registration
    (its frame is the family's), centres, |P|_min, bank."""

    def __init__(
        self, ref: Prepared, centres: np.ndarray, p_min: float, bank: Any, extractor: Any
    ) -> None:
        self.ref = ref
        self.centres = centres
        self.p_min = p_min
        self.bank = bank
        self.extractor = extractor


class COSARAD:
    """COSARAD (contrastive spatially-aware anomaly detection) on whole-part clouds."""

    name = "cosarad"
    level = "part"

    def __init__(self, **params: Any) -> None:
        self.params = COSARADParams(**params)
        self.families: dict[str, _Family] = {}
        self.weights_info: dict[str, Any] = self.describe_weights(self.params.model_dump())
        #: Registration result of the last predicted part (Chamfer, tries), and its patch
        #: scores (L,) (NaN: not scored), for diagnosis and the aggregation ablation.
        self.last_registration: dict[str, Any] = {}
        self.last_patch_scores = np.zeros(0)

    # -- weights -------------------------------------------------------------------------
    @staticmethod
    def extractor_files(extractor: str) -> list[Path]:
        """The checkpoint files ``extractor`` names (a file, the ``*.pth`` of a directory,
        or ``shipped``: those twincell ships in ``assets/weights/cosarad/``)."""
        path = SHIPPED_EXTRACTORS if extractor == "shipped" else Path(extractor).expanduser()
        files = sorted(path.glob("*.pth")) if path.is_dir() else [path]
        if not files or not all(f.is_file() for f in files):
            raise ValueError(
                f"extractor: no checkpoint at {excerpt_path(path)}; make one with "
                "`twincell train cosarad --scenario ... --out <file or directory>`"
            )
        return files

    @classmethod
    def describe_weights(cls, params: dict[str, Any]) -> dict[str, Any]:
        """Which weights a detector with ``params`` uses ({} for FPFH: nothing learned):
        the extractor path and the SHA-256 of each checkpoint it names."""
        if params.get("features", "fpfh") != "contrastive":
            return {}
        files = cls.extractor_files(str(params["extractor"]))
        shas = {f.name: file_sha256(f) for f in files}
        joint = hashlib.sha256(json.dumps(sorted(shas.items())).encode()).hexdigest()
        return {
            "backbone": "pointnet2_msg",
            "source": "file",
            "path": str(files[0].parent if len(files) > 1 else files[0]),
            "sha256": joint,
            "files": shas,
        }

    def _extractor_for(self, family: str) -> Any:
        """The (model, info) of the first checkpoint not trained on ``family``."""
        from detectors.cosarad.contrastive import load_extractor

        assert self.params.extractor is not None  # the params check guarantees it
        seen: list[str] = []
        files = self.extractor_files(self.params.extractor)
        for f in files:
            model, info = load_extractor(f)
            trained = set(info["meta"].get("families", []))
            radius = info["meta"].get("radius_mm")
            if radius is not None and abs(float(radius) - self.params.radius_mm) > 1e-9:
                raise SpecError(
                    f"extractor: {f.name} was trained on patches of radius {radius:g} mm; set "
                    f"radius_mm: {radius:g} (patches are normalised by their radius)"
                )
            size = info["meta"].get("patch_points")
            if size is not None and int(size) != self.params.patch_points:
                raise SpecError(
                    f"extractor: {f.name} was trained on patches of {size} points; set "
                    f"patch_points: {size}"
                )
            if family not in trained or self.params.allow_seen_families:
                return model, {"path": str(f), "trained_on": sorted(trained)}
            seen.append(f.name)
        raise SpecError(
            f"extractor: every checkpoint ({', '.join(seen)}) was trained on family "
            f"{family!r}; the protocol is category-disjoint (train a fold without it, or set "
            "allow_seen_families: true)"
        )

    # -- features ------------------------------------------------------------------------
    def _features(
        self, points: np.ndarray, centres: np.ndarray, members: list[np.ndarray], fam: Any
    ) -> np.ndarray:
        """(L, d) patch features of ``points`` (already in the template frame)."""
        p = self.params
        R = p.radius_mm / 1000.0
        if p.features == "fpfh":
            from detectors.cosarad.fpfh import fpfh_patch_features

            v = p.feature_voxel_mm / 1000.0
            return fpfh_patch_features(points, centres, R, voxel_m=v, normal_radius_m=2.5 * v)
        from detectors.cosarad.pointnet2 import embed

        patches = normalised_patches(points, centres, members, R, p.patch_points, p.seed)
        ok = np.array([len(m) > 0 for m in members])
        model = fam[0]
        feats = embed(model, patches[ok])
        out = np.zeros((len(centres), feats.shape[1]))
        out[ok] = feats
        return out

    def _patches(self, points: np.ndarray, centres: np.ndarray) -> list[np.ndarray]:
        return patch_members(points, centres, self.params.radius_mm / 1000.0)

    # -- Detector ------------------------------------------------------------------------
    def fit(self, samples: Sequence[PartSample]) -> None:
        """Build each family's templates, patch centres and memory banks from normal parts."""
        p = self.params
        by_family: dict[str, list[PartSample]] = {}
        for s in sorted(samples, key=lambda s: s.id):
            if not isinstance(s, PartSample):
                raise TypeError(
                    f"cosarad works on whole parts (PartSample), got {type(s).__name__}"
                )
            if s.label == 1 or s.defects:
                continue  # templates are normal parts (not one whose defect no view saw)
            by_family.setdefault(s.category, []).append(s)
        self.families = {}
        for family, parts in sorted(by_family.items()):
            templates = parts[: p.templates]
            if len(templates) < 2:
                raise ValueError(
                    f"cosarad needs at least 2 normal template parts of family {family!r} "
                    f"(Cohen's d compares the templates with each other), got {len(templates)}"
                )
            ref = np.asarray(templates[0].points, dtype=np.float64)
            target = prepare(ref, p.register_voxel_mm / 1000.0, p.feature_voxel_mm / 1000.0)
            clouds = [ref] + [self._registered(t.points, target) for t in templates[1:]]
            coarse = np.asarray(to_pcd(ref).voxel_down_sample(p.feature_voxel_mm / 1000).points)
            centres = coarse[farthest_point_sample(coarse, p.patches)]
            extractor = self._extractor_for(family) if p.features == "contrastive" else None
            feats, counts = [], []
            for cloud in clouds:
                members = self._patches(cloud, centres)
                counts.append([len(m) for m in members])
                feats.append(self._features(cloud, centres, members, extractor))
            C = np.asarray(counts, dtype=np.float64)
            p_min = p.min_points * float(C[0].mean())
            valid = (C >= max(p_min, 1.0)) & (C > 0)
            F = np.stack(feats)
            bank = LocationBanks(F, valid) if p.bank == "local" else GlobalBank(F, valid)
            self.families[family] = _Family(target, centres, p_min, bank, extractor)
        if not self.families:
            raise ValueError("cosarad was fitted on no normal part")
        if p.features == "contrastive":
            self.weights_info = {
                **self.describe_weights(p.model_dump()),
                "extractors": {f: v.extractor[1] for f, v in self.families.items()},
            }

    def _registered(self, points: np.ndarray, ref: Prepared) -> np.ndarray:
        p = self.params
        reg = register(
            np.asarray(points, dtype=np.float64),
            ref,
            voxel_m=p.register_voxel_mm / 1000.0,
            fine_voxel_m=p.feature_voxel_mm / 1000.0,
            tries=p.register_tries,
            accept_m=p.register_accept_mm / 1000.0,
            seed=p.seed,
        )
        self.last_registration = {
            "chamfer_rms_mm": float(np.sqrt(reg.chamfer_m2) * 1000.0),
            "tries": reg.tries,
        }
        if reg.chamfer_m2 > (p.register_accept_mm / 1000.0) ** 2:
            log.warning(
                "cosarad: registration of %d points kept a Chamfer RMS of %.2f mm after %d "
                "tries (accepted: %.2f mm); its patches may be compared at wrong places",
                len(points),
                self.last_registration["chamfer_rms_mm"],
                reg.tries,
                p.register_accept_mm,
            )
        return transform(points, reg.T)

    def predict(self, sample: PartSample) -> Prediction:
        """Score one whole part: object score and one score per point of its cloud."""
        if not isinstance(sample, PartSample):
            raise TypeError(
                f"cosarad works on whole parts (PartSample), got {type(sample).__name__}"
            )
        fam = self.families.get(sample.category)
        if fam is None:
            raise ValueError(
                f"cosarad has no templates of family {sample.category!r} "
                f"(fitted: {', '.join(self.families) or 'none'})"
            )
        pts = np.asarray(sample.points, dtype=np.float64)
        if pts.ndim != 2 or pts.shape[1] != 3 or len(pts) < 3 or not np.isfinite(pts).all():
            raise ValueError(
                f"part {sample.id!r}: points must be finite (N, 3) with N >= 3, got {pts.shape}"
            )
        moved = self._registered(pts, fam.ref)
        members = self._patches(moved, fam.centres)
        counts = np.array([len(m) for m in members])
        valid = (counts >= max(fam.p_min, 1.0)) & (counts > 0)
        feats = self._features(moved, fam.centres, members, fam.extractor)
        scores = fam.bank.score(feats, valid)
        self.last_patch_scores = scores
        R = self.params.radius_mm / 1000.0
        return Prediction(
            score=aggregate(scores, self.params.aggregate, self.params.top_k),
            anomaly_map=None,
            point_scores=point_scores(moved, fam.centres, scores, R),
        )


def excerpt_path(path: Path) -> str:
    """A path for an error line, cut to its last 60 characters."""
    text = str(path)
    return text if len(text) <= 60 else "..." + text[-57:]
