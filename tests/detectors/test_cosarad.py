"""COSARAD: registration, Cohen's d, location-specific vs global banks, the detector contract."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import detectors
from detectors.checker import check_detector
from detectors.cosarad.banks import (
    GlobalBank,
    LocationBanks,
    aggregate,
    cohens_d,
    pairwise_bank_distances,
    point_scores,
)
from detectors.cosarad.fpfh import fpfh_patch_features
from detectors.cosarad.patches import farthest_point_sample, patch_members, resample
from detectors.cosarad.registration import register, transform
from detectors.testing import make_synthetic_parts, synthetic_part_points

pytest.importorskip("open3d")

#: Fast settings for the synthetic plate (6000 points over 80 x 60 mm: sparser than a
#: simulated scan, so registration uses a finer coarse voxel than the default 4 mm).
FAST = {"patches": 48, "radius_mm": 6.0, "register_voxel_mm": 2.0, "feature_voxel_mm": 1.5}


def _rotation(axis: np.ndarray, angle: float) -> np.ndarray:
    a = axis / np.linalg.norm(axis)
    K = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return np.eye(3) + np.sin(angle) * K + (1 - np.cos(angle)) * K @ K


def test_registration_recovers_a_known_rigid_transform() -> None:
    """A part moved by a known 4x4 transform (a 70 degree turn about a tilted axis and a
    0.2 m shift), with fresh sensor noise, is registered back to within 0.5 degrees and
    0.5 mm (the template's own sampling and noise are 0.9 mm and 0.05 mm)."""
    target, _ = synthetic_part_points(seed=0)
    source, _ = synthetic_part_points(seed=1)  # another sampling of the same part
    T_true = np.eye(4)
    T_true[:3, :3] = _rotation(np.array([0.3, -0.2, 1.0]), np.deg2rad(70.0))
    T_true[:3, 3] = [0.2, -0.1, 0.05]
    moved = transform(source, T_true)
    reg = register(moved, target, voxel_m=0.002, fine_voxel_m=0.0015)
    # reg.T maps the moved cloud back: reg.T @ T_true should be the identity.
    E = reg.T @ T_true
    angle = np.rad2deg(np.arccos(np.clip((np.trace(E[:3, :3]) - 1) / 2, -1, 1)))
    assert angle < 0.5, f"rotation error {angle:.3f} deg"
    assert np.linalg.norm(E[:3, 3]) < 0.0005, f"translation error {E[:3, 3]} m"
    assert np.sqrt(reg.chamfer_m2) < 0.0015


def test_registration_keeps_the_best_of_its_tries_and_is_repeatable() -> None:
    """The same input gives the same bytes (the transform is rounded), and an accepted
    first try stops the retries."""
    target, _ = synthetic_part_points(seed=0)
    source, _ = synthetic_part_points(seed=1)
    a = register(source, target, voxel_m=0.002, tries=5)
    b = register(source, target, voxel_m=0.002, tries=5)
    assert np.array_equal(a.T, b.T) and a.chamfer_m2 == b.chamfer_m2
    assert a.tries == 1 and a.best_try == 0
    # Never accepted: every try is made and the best of them kept (the first try is a's).
    never = register(source, target, voxel_m=0.002, tries=3, accept_m=0.0)
    assert never.tries == 3 and 0 <= never.best_try < 3
    each = [register(source, target, voxel_m=0.002, tries=1, seed=k).chamfer_m2 for k in range(3)]
    assert never.chamfer_m2 == min(each)


def test_cohens_d_matches_a_hand_computation() -> None:
    """Eq. 2 with the pooled standard deviation of unbiased variances."""
    d_test = np.array([3.0, 4.0, 5.0, 4.0])  # mean 4, var (1+0+1+0)/3 = 2/3
    d_bank = np.array([1.0, 2.0, 1.0, 2.0, 1.5, 1.5])  # mean 1.5, var (4*0.25)/5 = 0.2
    pooled = np.sqrt((5 * 0.2 + 3 * (2.0 / 3.0)) / (6 + 4 - 2))  # sqrt(3/8)
    assert cohens_d(d_test, d_bank) == pytest.approx(2.5 / pooled, rel=1e-12)
    # The absolute value: a test patch closer than the templates are to each other scores too.
    assert cohens_d(np.array([0.5, 0.5, 0.5, 0.5]), d_bank) == pytest.approx(
        1.0 / np.sqrt(5 * 0.2 / 8)
    )
    assert len(pairwise_bank_distances(np.eye(4))) == 12  # G (G - 1), both orders


def test_aggregation_and_point_scores() -> None:
    """Top-k operators skip unscored patches; eq. 3 gives a point at an isolated centre
    that centre's score and blends in between."""
    s = np.array([1.0, np.nan, 5.0, 3.0, 4.0])
    assert aggregate(s, "max") == 5.0
    assert aggregate(s, "sum", 3) == 12.0
    assert aggregate(s, "mean", 3) == pytest.approx(4.0)
    assert aggregate(np.array([np.nan]), "max") == 0.0
    centres = np.array([[0.0, 0, 0], [1.0, 0, 0]])
    pts = np.array([[0.0, 0, 0], [1.0, 0, 0], [0.5, 0, 0]])
    ps = point_scores(pts, centres, np.array([2.0, 6.0]), radius_m=0.01)
    assert ps[0] == pytest.approx(2.0) and ps[1] == pytest.approx(6.0)
    mid = point_scores(pts, centres, np.array([2.0, 6.0]), radius_m=10.0)
    assert mid[2] == pytest.approx(4.0)
    assert ps.dtype == np.float32


def test_fps_and_patch_resampling() -> None:
    """FPS spreads the centres (the first is the start point); resampling keeps the size."""
    rng = np.random.default_rng(0)
    P = rng.uniform(size=(500, 3))
    ix = farthest_point_sample(P, 20)
    assert ix[0] == 0 and len(set(ix.tolist())) == 20
    members = patch_members(P, P[ix[:3]], 0.2)
    for m in members:
        r = resample(m, 64, np.random.default_rng(1))
        assert len(r) == 64 and set(r.tolist()) <= set(m.tolist())


def test_location_specific_bank_flags_a_bump_the_global_bank_misses() -> None:
    """The paper's motivating case: the test part has a second copy of the boss, a bump
    that is normal geometry at the boss. Each location's bank sees only flat plate at the
    new bump and flags it; the global bank finds the boss's patches and calls it normal."""
    R = 0.006
    templates = [synthetic_part_points(seed=s)[0] for s in range(4)]
    test, labels = synthetic_part_points(seed=10, bump_at_mm=(20.0, -10.0))
    centres = templates[0][farthest_point_sample(templates[0], 96)]

    def feats(P: np.ndarray) -> np.ndarray:
        return fpfh_patch_features(P, centres, R)

    F = np.stack([feats(P) for P in templates])
    valid = np.ones(F.shape[:2], dtype=bool)
    ft = feats(test)
    ok = np.ones(len(centres), dtype=bool)
    local = LocationBanks(F, valid).score(ft, ok)
    glob = GlobalBank(F, valid).score(ft, ok)
    # Patches that reach the bump (its flanks rise within ~7 mm of its top).
    bump = np.linalg.norm(centres[:, :2] - [0.020, -0.010], axis=1) < 0.007
    assert bump.any() and labels.any()
    # Local: the most anomalous patch of the part is at the bump, far above the rest.
    assert local[bump].max() == local.max()
    assert local[bump].max() > 10 * np.median(local)
    # Global: the bump's patches match the boss's; a patch of the normal plate scores higher.
    assert glob[bump].max() < glob[~bump].max()


def test_detector_scores_the_bump_and_spreads_it_to_its_points() -> None:
    """End to end on posed synthetic parts: registration, banks, object and point scores."""
    det = detectors.create("cosarad", **FAST)
    det.fit(make_synthetic_parts(4, seed=1))
    normal = [det.predict(p) for p in make_synthetic_parts(3, seed=2)]
    anomalous_parts = make_synthetic_parts(3, seed=3, anomalous=True)
    anomalous = [det.predict(p) for p in anomalous_parts]
    assert min(p.score for p in anomalous) > max(p.score for p in normal)
    for part, pred in zip(anomalous_parts, anomalous, strict=True):
        assert pred.point_scores is not None and pred.anomaly_map is None
        labels = np.asarray(part.gt_point_labels)
        assert pred.point_scores[labels].mean() > 2 * pred.point_scores[~labels].mean()


def test_cosarad_passes_the_detector_contract() -> None:
    """The shared checker, on whole parts: shapes, finiteness, determinism, no mutation."""
    det = detectors.create("cosarad", **FAST)
    assert detectors.level("cosarad") == "part"
    check_detector(
        det,
        make_synthetic_parts(3, seed=1),
        make_synthetic_parts(1, seed=2) + make_synthetic_parts(1, seed=3, anomalous=True),
    )


def test_cosarad_refuses_bad_input() -> None:
    """Views instead of parts, an unknown family, too few templates, broken points."""
    from detectors.testing import make_synthetic_samples

    det = detectors.create("cosarad", **FAST)
    with pytest.raises(TypeError, match="PartSample"):
        det.fit(make_synthetic_samples(2))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least 2 normal template"):
        det.fit(make_synthetic_parts(1, seed=1))
    det.fit(make_synthetic_parts(2, seed=1))
    other = dataclasses.replace(make_synthetic_parts(1, seed=2)[0], category="gear")
    with pytest.raises(ValueError, match="no templates of family 'gear'"):
        det.predict(other)
    broken = dataclasses.replace(other, category="synthetic_plate", points=np.zeros((2, 3)))
    with pytest.raises(ValueError, match="N >= 3"):
        det.predict(broken)


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"features": "contrastive"}, "extractor"),
        ({"extractor": "x.pth"}, "only used with features: contrastive"),
        ({"features": "contrastive", "extractor": "/nonexistent/x.pth"}, "no checkpoint"),
        ({"templates": 1}, "templates"),
        ({"bank": "nearest"}, "bank"),
    ],
)
def test_bad_parameters_are_named(params: dict[str, object], match: str) -> None:
    """Parameter errors name the field (a SpecError, exit 2, when a scenario is loaded)."""
    from scenarios.interfaces import SpecError

    with pytest.raises(SpecError, match=match):
        detectors.validate_params("cosarad", params)


@pytest.fixture(scope="module")
def plate_extractor(tmp_path_factory: pytest.TempPathFactory) -> object:
    """A tiny contrastive extractor trained here on triplets of synthetic plates (its meta
    says it saw family 'synthetic_plate'), saved as a checkpoint file."""
    pytest.importorskip("torch")
    from detectors.cosarad.contrastive import TripletParams, save_extractor, train_extractor
    from detectors.cosarad.triplets import make_triplets

    parts = make_synthetic_parts(3, seed=1) + make_synthetic_parts(2, seed=3, anomalous=True)
    ts = make_triplets(parts, radius_m=0.006, patch_points=128, centres=8, register_voxel_m=0.002)
    params = TripletParams(epochs=2, batch_size=8)
    model, history = train_extractor(ts.patches, params, progress=False)
    path = tmp_path_factory.mktemp("extractor") / "fold0.pth"
    meta = {"families": ["synthetic_plate"], "radius_mm": 6.0, "patch_points": 128}
    save_extractor(path, model, params, meta)
    assert len(history) == 2
    return path


def test_contrastive_features_run_and_keep_the_protocol_category_disjoint(
    plate_extractor: object,
) -> None:
    """A checkpoint trained on a family is refused for that family (the paper's protocol)
    unless allowed; allowed, the contrastive detector passes the contract and records which
    checkpoint scored the family."""
    from scenarios.interfaces import SpecError

    params = {**FAST, "features": "contrastive", "extractor": str(plate_extractor)}
    det = detectors.create("cosarad", **params, patch_points=128)
    with pytest.raises(SpecError, match="category-disjoint"):
        det.fit(make_synthetic_parts(2, seed=1))
    det = detectors.create("cosarad", **params, patch_points=128, allow_seen_families=True)
    check_detector(
        det,
        make_synthetic_parts(2, seed=1),
        make_synthetic_parts(1, seed=2) + make_synthetic_parts(1, seed=3, anomalous=True),
    )
    info = det.weights_info
    assert info["backbone"] == "pointnet2_msg" and len(info["sha256"]) == 64
    assert info["extractors"]["synthetic_plate"]["trained_on"] == ["synthetic_plate"]
    # Its patches must be the size it was trained on: refused when the scenario loads.
    with pytest.raises(SpecError, match="patch_points: 128"):
        detectors.validate_params("cosarad", params)
