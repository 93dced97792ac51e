"""End to end on the bundled `tiny` scenario: the run directory contract, resume, determinism."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import trimesh
from PIL import Image

from scenarios.engine import run_scenario
from scenarios.metrics import METRIC_NAMES
from scenarios.report import write_report
from scenarios.spec import load_scenario

pytestmark = pytest.mark.slow

SAMPLE_KEYS = {
    "id",
    "part_id",
    "category",
    "split",
    "view_id",
    "label",
    "defects",
    "K",
    "image_size",
    "T_base_cam",
    "T_base_cam_twin",
    "T_base_obj",
    "T_base_obj_twin",
}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "tiny"
    run_scenario(load_scenario("tiny"), out, workers=1, progress=False, report=write_report)
    return out


def _png(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im)


def _is_pose(T: object) -> bool:
    a = np.asarray(T, dtype=np.float64)
    return (
        a.shape == (4, 4)
        and np.allclose(a[3], [0, 0, 0, 1])
        and np.allclose(a[:3, :3] @ a[:3, :3].T, np.eye(3), atol=1e-9)
    )


def test_manifest(tiny_run: Path) -> None:
    m = json.loads((tiny_run / "manifest.json").read_text())
    assert m["status"] == "complete"
    assert m["scenario"]["name"] == "tiny" and m["seed"] == 0
    assert {"numpy", "pybullet", "pyrender", "trimesh", "manifold3d"} <= set(m["versions"])
    assert m["timings_s"]["simulate"] > 0 and m["timings_s"]["total"] > 0
    phases = ("prepare", "simulate", "detect", "report")
    assert sum(m["timings_s"][p] for p in phases) == pytest.approx(
        m["timings_s"]["total"], rel=0.05
    )
    for det in ("rgb_residual", "ssim_residual"):
        assert set(m["timings_s"]["detectors"][det]) == {"fit", "predict", "metrics"}
    dropped = m["dropped_viewpoints"]
    assert dropped["count"] == len(dropped["items"])
    for d in dropped["items"]:
        assert {"part_id", "view_id", "reason"} <= set(d) and d["reason"]


def test_samples_contract(tiny_run: Path) -> None:
    records = [json.loads(x) for x in (tiny_run / "samples.jsonl").read_text().splitlines()]
    m = json.loads((tiny_run / "manifest.json").read_text())
    assert records, "no samples"
    assert {r["split"] for r in records} == {"train", "test"}
    n_planned = (
        len({(r["part_id"], r["view_id"]) for r in records}) + m["dropped_viewpoints"]["count"]
    )
    assert n_planned == len({r["part_id"] for r in records}) * 4  # 4 views at subdivision 0
    for r in records:
        assert SAMPLE_KEYS <= set(r)
        W, H = r["image_size"]
        assert np.asarray(r["K"]).shape == (3, 3)
        for key in ("T_base_cam", "T_base_cam_twin", "T_base_obj", "T_base_obj_twin"):
            assert _is_pose(r[key]), key
        d = tiny_run / "samples" / r["id"]
        real, twin = _png(d / "real.png"), _png(d / "twin.png")
        assert real.shape == twin.shape == (H, W, 3) and real.dtype == np.uint8
        for name in ("real_mask.png", "twin_mask.png", "gt_mask.png"):
            mask = _png(d / name)
            assert mask.shape == (H, W) and set(np.unique(mask)) <= {0, 255}, name
        gt = _png(d / "gt_mask.png") > 0
        assert r["label"] == int(gt.any())
        depth = np.load(d / "real_depth.npy")
        assert depth.dtype == np.float32 and depth.shape == (H, W)
        assert 0.05 < float(np.median(depth[depth > 0])) < 1.0  # metres, not millimetres
        if r["split"] == "train":
            assert r["label"] == 0 and not r["defects"]
        for defect in r["defects"]:
            assert {"kind", "size_mm", "visible_px"} <= set(defect)
        if r["defects"] and not r["label"]:
            assert "no defect visible" in r["note"]
    assert any(r["label"] == 1 for r in records), "tiny should show a defect"


def test_meshes(tiny_run: Path) -> None:
    records = [json.loads(x) for x in (tiny_run / "samples.jsonl").read_text().splitlines()]
    for part_id in {r["part_id"] for r in records}:
        mesh = trimesh.load(tiny_run / "meshes" / f"{part_id}.ply", force="mesh")
        assert mesh.is_watertight
        assert 0.05 < float(mesh.extents.max()) < 0.2  # metres, object frame


def test_predictions_and_metrics(tiny_run: Path) -> None:
    records = [json.loads(x) for x in (tiny_run / "samples.jsonl").read_text().splitlines()]
    test_ids = [r["id"] for r in records if r["split"] == "test"]
    size = {r["id"]: tuple(r["image_size"]) for r in records}
    metrics = json.loads((tiny_run / "metrics.json").read_text())["detectors"]
    assert set(metrics) == {"rgb_residual", "ssim_residual"}
    for det, values in metrics.items():
        assert list(values) == list(METRIC_NAMES)
        with open(tiny_run / "predictions" / det / "scores.csv") as f:
            rows = list(csv.DictReader(f))
        assert [row["id"] for row in rows] == test_ids
        for row in rows:
            amap = np.load(tiny_run / "predictions" / det / f"{row['id']}.npy")
            W, H = size[row["id"]]
            assert amap.dtype == np.float32 and amap.shape == (H, W)
            assert np.isfinite(amap).all() and np.isfinite(float(row["score"]))


def test_report(tiny_run: Path) -> None:
    md = (tiny_run / "report.md").read_text()
    page = (tiny_run / "report.html").read_text()
    for name in METRIC_NAMES:
        assert name in md and name in page
    for fig in ("figures/gallery.png", "figures/viewpoints.png"):
        assert fig in md and fig in page
        assert (tiny_run / fig).stat().st_size > 1000


def test_rerun_resumes_without_rewriting(tiny_run: Path) -> None:
    sample_dir = next((tiny_run / "samples").iterdir())
    before = {p.name: p.stat().st_mtime_ns for p in sample_dir.iterdir()}
    metrics_before = (tiny_run / "metrics.json").read_text()
    run_scenario(load_scenario("tiny"), tiny_run, workers=1, progress=False)
    after = {p.name: p.stat().st_mtime_ns for p in sample_dir.iterdir()}
    assert before == after
    assert (tiny_run / "metrics.json").read_text() == metrics_before


def test_interrupted_sample_is_redone(tiny_run: Path, tmp_path: Path) -> None:
    # A sample directory that lost a file counts as not done and is simulated again.
    import shutil

    copy = tmp_path / "tiny"
    shutil.copytree(tiny_run, copy)
    victim = next((copy / "samples").iterdir())
    (victim / "gt_mask.png").unlink()
    run_scenario(load_scenario("tiny"), copy, workers=1, progress=False)
    assert (victim / "gt_mask.png").is_file()
    assert (victim / "gt_mask.png").read_bytes() == (
        tiny_run / "samples" / victim.name / "gt_mask.png"
    ).read_bytes()


def test_same_seed_same_bytes_across_workers(tiny_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "tiny2"
    run_scenario(load_scenario("tiny"), out, workers=2, progress=False)
    for d in (tiny_run / "samples").iterdir():
        for name in ("real.png", "twin.png", "gt_mask.png"):
            assert (d / name).read_bytes() == (out / "samples" / d.name / name).read_bytes()
    assert (out / "samples.jsonl").read_text() == (tiny_run / "samples.jsonl").read_text()


def test_other_seed_refuses_same_out(tiny_run: Path) -> None:
    from scenarios.interfaces import RunDirError

    with pytest.raises(RunDirError, match="another scenario or seed"):
        run_scenario(load_scenario("tiny", seed=1), tiny_run, workers=1, progress=False)


def test_files_follow_the_umask(tiny_run: Path) -> None:
    import os

    umask = os.umask(0)
    os.umask(umask)
    for p in [tiny_run, *tiny_run.rglob("*")]:
        want = (0o777 if p.is_dir() else 0o666) & ~umask
        assert p.stat().st_mode & 0o777 == want, (p, oct(p.stat().st_mode))


def test_streamed_metrics_equal_the_all_in_memory_ones(tiny_run: Path) -> None:
    """metrics.json (streamed, bounded memory) equals compute_metrics over every pixel at once."""
    from scenarios.metrics import compute_metrics
    from scenarios.rundir import load_samples

    test = load_samples(tiny_run, split="test")
    metrics = json.loads((tiny_run / "metrics.json").read_text())["detectors"]
    for det, values in metrics.items():
        with open(tiny_run / "predictions" / det / "scores.csv") as f:
            scores = {row["id"]: float(row["score"]) for row in csv.DictReader(f)}
        maps = [np.load(tiny_run / "predictions" / det / f"{s.id}.npy") for s in test]
        ref = compute_metrics(
            [s.label for s in test], [scores[s.id] for s in test], [s.gt_mask for s in test], maps
        )
        for k, v in values.items():
            if v is None:
                assert np.isnan(ref[k]), (det, k)
            else:
                assert v == pytest.approx(ref[k], rel=1e-9, abs=1e-12), (det, k)


def _damage(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize(
    "victim", ["real.png", "gt_mask.png", "real_depth.npy", "record.json"], ids=str
)
def test_damaged_sample_file_is_redone_on_resume(
    tiny_run: Path, tmp_path: Path, victim: str
) -> None:
    import shutil

    copy = tmp_path / "tiny"
    shutil.copytree(tiny_run, copy)
    sample = sorted((copy / "samples").iterdir())[1]
    _damage(sample / victim)
    run_scenario(load_scenario("tiny"), copy, workers=1, progress=False)
    original = tiny_run / "samples" / sample.name
    for name in ("real.png", "twin.png", "gt_mask.png", "real_depth.npy", "record.json"):
        assert (sample / name).read_bytes() == (original / name).read_bytes(), name
    assert (copy / "metrics.json").read_text() == (tiny_run / "metrics.json").read_text()


def test_damaged_prediction_is_redone_on_resume(tiny_run: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "tiny"
    shutil.copytree(tiny_run, copy)
    pred = sorted((copy / "predictions" / "ssim_residual").glob("*.npy"))[0]
    original = (tiny_run / "predictions" / "ssim_residual" / pred.name).read_bytes()
    _damage(pred)
    run_scenario(load_scenario("tiny"), copy, workers=1, progress=False)
    assert pred.read_bytes() == original
    assert (copy / "metrics.json").read_text() == (tiny_run / "metrics.json").read_text()


def test_leftover_temporaries_are_removed_on_resume(tiny_run: Path, tmp_path: Path) -> None:
    """What SIGKILL can leave (hidden temp files and sample directories) is gone after a rerun."""
    import shutil

    from scenarios.rundir import TEMP_PREFIX

    copy = tmp_path / "tiny"
    shutil.copytree(tiny_run, copy)
    leftovers = [
        copy / f"{TEMP_PREFIX}manifest.json.1a2b",
        copy / "samples" / f"{TEMP_PREFIX}part001_v002.1a2b",
        copy / "predictions" / "rgb_residual" / f"{TEMP_PREFIX}x.npy.1a2b",
        copy / "meshes" / f"{TEMP_PREFIX}part000.ply.1a2b",
        copy / "features" / f"{TEMP_PREFIX}avatar-0123.pt.77",  # AVATAR's token cache
    ]
    leftovers[1].mkdir()
    (leftovers[1] / "real.png").write_bytes(b"half")
    leftovers[4].parent.mkdir()
    for p in (leftovers[0], leftovers[2], leftovers[3], leftovers[4]):
        p.write_bytes(b"half")
    (copy / "notes.txt").write_text("a user's own file stays")
    run_scenario(load_scenario("tiny"), copy, workers=1, progress=False)
    assert not any(p.exists() for p in leftovers)
    assert not [p for p in copy.rglob(f"{TEMP_PREFIX}*")]
    assert (copy / "notes.txt").read_text() == "a user's own file stays"


def test_a_run_that_crashes_is_never_marked_complete(tmp_path: Path) -> None:
    def broken_report(out: Path) -> None:
        raise RuntimeError("figure failed")

    out = tmp_path / "run"
    with pytest.raises(RuntimeError, match="figure failed"):
        run_scenario(load_scenario("tiny"), out, workers=1, progress=False, report=broken_report)
    m = json.loads((out / "manifest.json").read_text())
    assert m["status"] == "failed"
    assert m["error"] == "RuntimeError: figure failed"


def test_damaged_mesh_is_rewritten_on_resume(tiny_run: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "tiny"
    shutil.copytree(tiny_run, copy)
    mesh = copy / "meshes" / "part000.ply"
    _damage(mesh)
    (copy / "meshes" / "part001.ply.sha256").unlink()  # killed between mesh and checksum
    run_scenario(load_scenario("tiny"), copy, workers=1, progress=False)
    for name in ("part000.ply", "part001.ply", "part000.ply.sha256", "part001.ply.sha256"):
        assert (copy / "meshes" / name).read_bytes() == (tiny_run / "meshes" / name).read_bytes()
