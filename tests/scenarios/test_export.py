"""Exports of a run (scenarios.export) read back the way each field's tool reads them.

anomalib (torch, lightning, torchvision) and bop_toolkit (not on PyPI) are too heavy or not
installable here, so the tests re-state, in plain Python, exactly what their loaders read
and check the export against that; each re-statement names the upstream file and function
it follows. pycocotools is small: the COCO export is read with pycocotools itself.
"""

from __future__ import annotations

import csv
import json
import shutil
import struct
from pathlib import Path
from typing import Any

import imageio.v2 as iio
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from scipy import ndimage
from scipy.spatial.distance import pdist

from scenarios.engine import run_scenario
from scenarios.export import FORMATS, export_run
from scenarios.export.bop import fill_triangles, undistort, undistort_maps
from scenarios.interfaces import TEMP_PREFIX, RenderOutput, RunDirError, SpecError
from scenarios.rundir import iter_jsonl, load_mask, load_png, sample_records
from scenarios.spec import load_scenario

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled ``tiny`` scenario, run once for the module (no report: not needed)."""
    out = tmp_path_factory.mktemp("runs") / "tiny"
    run_scenario(load_scenario("tiny"), out, workers=1, progress=False)
    return out


@pytest.fixture(scope="module")
def exports(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The tiny run exported in every format: {format: export directory}."""
    root = tmp_path_factory.mktemp("exports")
    return {f: Path(export_run(tiny_run, f, root / f, progress=False)["out"]) for f in FORMATS}


@pytest.fixture(scope="module")
def hardware_run(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny run as a hardware cell records it: its test samples have no ground truth
    (label null, no real_mask.png / gt_mask.png, no defect records) and no true part pose
    (``T_base_obj`` null); plus one failed sample, which every export skips."""
    copy = tmp_path_factory.mktemp("runs") / "hardware"
    shutil.copytree(tiny_run, copy)
    lines = []
    for r in iter_jsonl(copy / "samples.jsonl"):
        if r["split"] == "test":
            r = {**r, "label": None, "defects": [], "T_base_obj": None, "T_base_obj_twin": None}
            for name in ("gt_mask.png", "real_mask.png"):
                (copy / "samples" / r["id"] / name).unlink()
        lines.append(json.dumps(r))
    failed = {"id": "part009_v000", "part_id": "part009", "view_id": 0, "split": "test"}
    lines.append(json.dumps({**failed, "status": "failed", "reason": "render worker crashed"}))
    (copy / "samples.jsonl").write_text("\n".join(lines) + "\n")
    return copy


def _records(run: Path) -> dict[str, dict[str, Any]]:
    return {r["id"]: r for r in sample_records(run / "samples.jsonl")}


def _leftovers(parent: Path) -> list[Path]:
    return [p for p in parent.iterdir() if p.name.startswith(TEMP_PREFIX)]


# ---------------------------------------------------------------------------------------
# MVTec AD, as anomalib reads it
# ---------------------------------------------------------------------------------------

#: anomalib src/anomalib/data/datasets/image/mvtecad.py, ``IMG_EXTENSIONS``.
MVTEC_EXTENSIONS = (".png", ".PNG")
#: torchvision.datasets.folder.IMG_EXTENSIONS, the Folder dataset's default.
FOLDER_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def make_mvtec_ad_dataset(root: Path) -> list[dict[str, Any]]:
    """anomalib's ``make_mvtec_ad_dataset`` (v2.x, src/anomalib/data/datasets/image/
    mvtecad.py), re-stated without polars/pandas: every file under ``root`` (the category
    folder) with a suffix in ``IMG_EXTENSIONS`` is a sample whose last three path parts are
    (split, label, file); label ``good`` is normal, any other abnormal; ``ground_truth`` rows
    are the masks, sorted by path and handed, in that order, to the abnormal test rows
    sorted by path; then every abnormal row's image stem must be in its mask's stem
    (else MisMatchError)."""
    found = [(str(root), *f.parts[-3:]) for f in root.glob("**/*") if f.suffix in MVTEC_EXTENSIONS]
    if not found:
        raise RuntimeError(f"Found 0 images in {root}")
    rows = [
        {
            "split": split,
            "label": label,
            "image_path": f"{path}/{split}/{label}/{name}",
            "label_index": 0 if label == "good" else 1,
            "mask_path": "",
        }
        for path, split, label, name in found
    ]
    masks = sorted((r for r in rows if r["split"] == "ground_truth"), key=lambda r: r["image_path"])
    samples = sorted(
        (r for r in rows if r["split"] != "ground_truth"), key=lambda r: r["image_path"]
    )
    abnormal_test = [r for r in samples if r["split"] == "test" and r["label_index"] == 1]
    if abnormal_test and masks:
        for r, m in zip(abnormal_test, masks[: len(abnormal_test)], strict=False):
            r["mask_path"] = m["image_path"]
    for r in samples:
        if r["label_index"] == 1 and r["mask_path"]:
            if Path(r["image_path"]).stem not in Path(r["mask_path"]).stem:
                raise AssertionError("MisMatchError: anomalous images and masks do not match")
    return samples


def read_mask(path: str | Path) -> np.ndarray:
    """anomalib's ``read_mask(path, as_tensor=True)`` (src/anomalib/data/utils/image.py):
    ``Image.open(path).convert("L")``, divided by 255, as uint8 (so only 255 is 1)."""
    image = np.asarray(Image.open(path).convert("L"))
    return (image / 255).astype(np.uint8)


def folder_files(path: Path) -> list[Path]:
    """anomalib's ``_prepare_files_labels`` (src/anomalib/data/utils/path.py): the files
    under ``path`` (recursively) with an image suffix, hidden parts excluded."""
    return [
        f
        for f in path.glob("**/*")
        if f.suffix in FOLDER_EXTENSIONS
        and not f.is_dir()
        and not any(part.startswith(".") for part in f.parts)
    ]


def _mapping(export: Path) -> dict[str, dict[str, str]]:
    with open(export / "mapping.csv", newline="") as f:
        return {row["sample_id"]: row for row in csv.DictReader(f)}


def test_mvtec_reads_as_anomalib_mvtec_ad(tiny_run: Path, exports: dict[str, Path]) -> None:
    """Every category reads through anomalib's MVTec AD parser with the right labels, each
    anomalous test image gets its own mask (``ground_truth/<label>/<stem>_mask.png``) and
    the images and masks are the run's."""
    export, records = exports["mvtec"], _records(tiny_run)
    mapping = _mapping(export)
    assert set(mapping) == set(records)
    categories = {r["category"] for r in records.values()}
    assert {p.name for p in export.iterdir() if p.is_dir()} == categories
    for cat in categories:
        samples = make_mvtec_ad_dataset(export / cat)
        assert {s["split"] for s in samples} <= {"train", "test"}
        by_path = {s["image_path"]: s for s in samples}
        mine = [r for r in records.values() if r["category"] == cat]
        assert len(samples) == len(mine)
        for r in mine:
            row = mapping[r["id"]]
            s = by_path[f"{export / cat}/{row['image'].split('/', 1)[1]}"]
            assert s["split"] == r["split"]
            assert s["label_index"] == r["label"]
            image = Path(s["image_path"])
            assert image.read_bytes() == (tiny_run / "samples" / r["id"] / "real.png").read_bytes()
            if r["label"] == 1:
                visible = {d["kind"] for d in r["defects"] if d["visible_px"] > 0}
                assert s["label"] == (visible.pop() if len(visible) == 1 else "combined")
                want = export / cat / "ground_truth" / s["label"] / f"{image.stem}_mask.png"
                assert Path(s["mask_path"]) == want
                mask = read_mask(s["mask_path"])
                gt = load_mask(tiny_run / "samples" / r["id"] / "gt_mask.png")
                assert np.array_equal(mask, gt.astype(np.uint8))
                assert set(np.unique(np.asarray(Image.open(want)))) <= {0, 255}
                assert mask.shape == load_png(image).shape[:2]
            else:
                assert s["label"] == "good" and s["mask_path"] == ""
    # Running numbers per folder, zero-padded like MVTec AD.
    for folder in {p.parent for p in export.glob("*/*/*/*.png")}:
        stems = sorted(p.stem.removesuffix("_mask") for p in folder.glob("*.png"))
        assert stems == [f"{i:03d}" for i in range(len(stems))]


def test_mvtec_reads_as_anomalib_folder(tiny_run: Path, exports: dict[str, Path]) -> None:
    """The same tree through anomalib's Folder dataset (src/anomalib/data/datasets/image/
    folder.py, ``make_folder_dataset``): normal_dir train/good, normal_test_dir test/good,
    abnormal_dir and mask_dir the defect folders; masks sorted by path are handed to the
    abnormal images sorted by path, and each image stem must be in its mask's stem."""
    export = exports["mvtec"]
    for cat_dir in (p for p in export.iterdir() if p.is_dir()):
        kinds = sorted(p.name for p in (cat_dir / "test").iterdir() if p.name != "good")
        abnormal = sorted(str(f) for k in kinds for f in folder_files(cat_dir / "test" / k))
        masks = sorted(str(f) for k in kinds for f in folder_files(cat_dir / "ground_truth" / k))
        assert len(abnormal) == len(masks) > 0
        for image, mask in zip(abnormal, masks, strict=True):
            assert Path(image).stem in Path(mask).stem
            assert Path(image).parent.name == Path(mask).parent.name
        assert folder_files(cat_dir / "train" / "good") and folder_files(cat_dir / "test" / "good")


def test_mvtec_without_ground_truth(hardware_run: Path, tmp_path: Path) -> None:
    """Test samples without ground truth go to unlabelled/<category>/, outside the category
    tree anomalib parses, which then holds only the train images; failed samples are
    skipped."""
    summary = export_run(hardware_run, "mvtec", tmp_path / "mvtec", progress=False)
    records = _records(hardware_run)
    tests = [r for r in records.values() if r["split"] == "test"]
    assert summary["unlabelled"] == len(tests) and summary["images"] == len(records)
    mapping = _mapping(tmp_path / "mvtec")
    for r in tests:
        assert mapping[r["id"]]["image"].startswith(f"unlabelled/{r['category']}/")
        assert mapping[r["id"]]["label"] == ""
    for cat in {r["category"] for r in records.values()}:
        samples = make_mvtec_ad_dataset(tmp_path / "mvtec" / cat)
        assert {s["split"] for s in samples} == {"train"}


def test_mvtec_refuses_an_anomalous_train_sample(tiny_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("predictions", "figures"))
    lines = [json.loads(x) for x in (run / "samples.jsonl").read_text().splitlines()]
    first_train = next(r for r in lines if r["split"] == "train")
    first_train["label"] = 1
    (run / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    with pytest.raises(RunDirError, match="train sample labelled anomalous"):
        export_run(run, "mvtec", tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists() and not _leftovers(tmp_path)


# ---------------------------------------------------------------------------------------
# BOP, as bop_toolkit reads it
# ---------------------------------------------------------------------------------------


def load_json(path: Path, keys_to_int: bool = False) -> Any:
    """bop_toolkit_lib/inout.py ``load_json``: JSON, digit keys turned into ints."""

    def to_int(x: dict[str, Any]) -> dict[Any, Any]:
        return {int(k) if k.lstrip("-").isdigit() else k: v for k, v in x.items()}

    with open(path) as f:
        return json.load(f, object_hook=to_int) if keys_to_int else json.load(f)


def load_scene_camera(path: Path) -> dict[int, dict[str, Any]]:
    """inout.py ``load_scene_camera`` (``_camera_as_numpy``): cam_K (3, 3), cam_R_w2c (3, 3),
    cam_t_w2c (3, 1) float64."""
    cams = load_json(path, keys_to_int=True)
    for cam in cams.values():
        cam["cam_K"] = np.array(cam["cam_K"], np.float64).reshape((3, 3))
        cam["cam_R_w2c"] = np.array(cam["cam_R_w2c"], np.float64).reshape((3, 3))
        cam["cam_t_w2c"] = np.array(cam["cam_t_w2c"], np.float64).reshape((3, 1))
    return dict(cams)


def load_scene_gt(path: Path) -> dict[int, list[dict[str, Any]]]:
    """inout.py ``load_scene_gt``: per image a list of {obj_id, cam_R_m2c (3, 3), cam_t_m2c
    (3, 1)}."""
    scene_gt = load_json(path, keys_to_int=True)
    for gts in scene_gt.values():
        for gt in gts:
            gt["cam_R_m2c"] = np.array(gt["cam_R_m2c"], np.float64).reshape((3, 3))
            gt["cam_t_m2c"] = np.array(gt["cam_t_m2c"], np.float64).reshape((3, 1))
    return dict(scene_gt)


def load_depth(path: Path) -> np.ndarray:
    """inout.py ``load_depth``: ``imageio.v2.imread(path).astype(np.float32)``."""
    return np.asarray(iio.imread(path)).astype(np.float32)


#: inout.py ``load_ply``'s binary property types; any other raises KeyError there.
PLY_FORMATS = {"float": ("f", 4), "double": ("d", 8), "int": ("i", 4), "uint": ("I", 4)}
PLY_FORMATS["uchar"] = ("B", 1)


def load_ply(path: Path) -> dict[str, np.ndarray]:
    """inout.py ``load_ply``, re-stated: the header's vertex properties and the face
    ``property list <count> <index> vertex_indices`` (other face properties are not read,
    so a binary file with them would be misread: none may be there), triangles only, each
    value read with ``struct`` in the file's order."""
    with open(path, "rb") as f:
        n_pts = n_faces = 0
        pt_props: list[tuple[str, str]] = []
        face_props: list[tuple[str, str]] = []
        section = ""
        binary = False
        while True:
            line = f.readline().decode("utf8").rstrip("\n").rstrip("\r")
            if line.startswith("element vertex"):
                n_pts, section = int(line.split()[-1]), "vertex"
            elif line.startswith("element face"):
                n_faces, section = int(line.split()[-1]), "face"
            elif line.startswith("element"):
                section = ""
            elif line.startswith("property") and section == "vertex":
                pt_props.append((line.split()[-1], line.split()[-2]))
            elif line.startswith("property") and section == "face":
                elems = line.split()
                assert elems[1] == "list" and elems[-1] in ("vertex_indices", "vertex_index"), (
                    f"face property load_ply cannot read: {line}"
                )
                face_props.append(("n_corners", elems[2]))
                face_props += [(f"ind_{i}", elems[3]) for i in range(3)]
            elif line.startswith("format"):
                binary = "binary" in line
            elif line.startswith("end_header"):
                break
        assert binary, "twincell writes binary PLY"
        pts = np.zeros((n_pts, 3), np.float64)
        for i in range(n_pts):
            vals = {}
            for name, kind in pt_props:
                fmt, size = PLY_FORMATS[kind]
                vals[name] = struct.unpack(fmt, f.read(size))[0]
            pts[i] = vals["x"], vals["y"], vals["z"]
        faces = np.zeros((n_faces, 3), np.float64)
        for i in range(n_faces):
            vals = {}
            for name, kind in face_props:
                fmt, size = PLY_FORMATS[kind]
                vals[name] = struct.unpack(fmt, f.read(size))[0]
            assert vals["n_corners"] == 3, "Only triangular faces are supported."
            faces[i] = vals["ind_0"], vals["ind_1"], vals["ind_2"]
        assert f.read() == b"", "bytes left after the faces"
    return {"pts": pts, "faces": faces}


def _bbox(xs: np.ndarray, ys: np.ndarray) -> list[int]:
    """bop_toolkit_lib/misc.py ``calc_2d_bbox`` without clipping."""
    return [int(xs.min()), int(ys.min()), int(xs.max() - xs.min()), int(ys.max() - ys.min())]


def test_bop_reads_as_bop_toolkit(tiny_run: Path, exports: dict[str, Path]) -> None:
    """camera.json (``load_cam_params``), models (``load_ply``, ``models_info.json`` as
    ``scripts/calc_model_info.py`` computes it), the scene folders
    (``dataset_params.get_split_params`` path templates, ``get_present_scene_ids``) and the
    scene files (``load_scene_camera``, ``load_scene_gt``, ``load_depth``, ``load_im``)."""
    export, records = exports["bop"], _records(tiny_run)
    cam = load_json(export / "camera.json")
    K0 = np.asarray(next(iter(records.values()))["K"])
    assert (cam["fx"], cam["fy"], cam["cx"], cam["cy"]) == (
        K0[0, 0],
        K0[1, 1],
        K0[0, 2],
        K0[1, 2],
    )
    assert (cam["width"], cam["height"]) == tuple(next(iter(records.values()))["image_size"])
    assert float(cam["depth_scale"]) == 0.1

    mapping = load_json(export / "mapping.json")
    parts = sorted({r["part_id"] for r in records.values()})
    assert mapping["objects"] == {str(i + 1): p for i, p in enumerate(parts)}
    info = load_json(export / "models" / "models_info.json", keys_to_int=True)
    assert sorted(info) == list(range(1, len(parts) + 1))
    import trimesh

    for obj_id, part_id in mapping["objects"].items():
        model = load_ply(export / "models" / f"obj_{int(obj_id):06d}.ply")
        mesh = trimesh.load(tiny_run / "meshes" / f"{part_id}.ply", process=False)
        assert np.allclose(model["pts"], mesh.vertices * 1000.0, atol=1e-3)  # mm, float32
        assert np.array_equal(model["faces"], mesh.faces)
        pts = model["pts"]
        lo, size = pts.min(axis=0), pts.max(axis=0) - pts.min(axis=0)
        entry = info[int(obj_id)]
        assert [entry[k] for k in ("min_x", "min_y", "min_z")] == pytest.approx(lo, abs=1e-3)
        assert [entry[k] for k in ("size_x", "size_y", "size_z")] == pytest.approx(size, abs=1e-3)
        assert entry["diameter"] == pytest.approx(pdist(pts).max(), abs=1e-3)  # calc_pts_diameter

    for split in {r["split"] for r in records.values()}:
        # get_present_scene_ids: every folder of a split is a scene id.
        for scene_dir in (export / split).iterdir():
            assert scene_dir.is_dir() and int(scene_dir.name) >= 1
    for entry in mapping["images"]:
        r = records[entry["sample_id"]]
        scene = export / entry["split"] / f"{entry['scene_id']:06d}"
        im_id = entry["im_id"]
        assert entry["split"] == r["split"]
        assert entry["scene_id"] == int(
            next(k for k, v in mapping["objects"].items() if v == r["part_id"])
        )
        assert np.array_equal(
            iio.imread(scene / "rgb" / f"{im_id:06d}.png"),
            load_png(tiny_run / "samples" / r["id"] / "real.png"),
        )
        cams = load_scene_camera(scene / "scene_camera.json")
        assert np.allclose(cams[im_id]["cam_K"], r["K"])
        T_cam_base = np.linalg.inv(np.asarray(r["T_base_cam"]))
        assert np.allclose(cams[im_id]["cam_R_w2c"], T_cam_base[:3, :3])
        assert np.allclose(cams[im_id]["cam_t_w2c"].ravel(), T_cam_base[:3, 3] * 1000.0)
        # Depth round trip: depth * depth_scale is mm; within half a quantisation step.
        scale = float(cams[im_id]["depth_scale"])
        depth_m = load_depth(scene / "depth" / f"{im_id:06d}.png") * scale / 1000.0
        run_depth = np.load(tiny_run / "samples" / r["id"] / "real_depth.npy")
        assert np.array_equal(depth_m == 0, run_depth == 0)
        assert np.abs(depth_m - run_depth).max() <= scale / 2 / 1000.0 + 1e-6
        assert np.asarray(iio.imread(scene / "depth" / f"{im_id:06d}.png")).dtype == np.uint16


def test_bop_poses_and_masks_round_trip(tiny_run: Path, exports: dict[str, Path]) -> None:
    """Each pose puts the model where the masks are: every model vertex projected with
    cam_K and (cam_R_m2c, cam_t_m2c) lands in the silhouette (within a pixel; most of them
    inside), the visible mask is the run's real_mask.png, and scene_gt_info's fields are
    those calc_gt_info computes from the masks and the depth."""
    export, records = exports["bop"], _records(tiny_run)
    mapping = load_json(export / "mapping.json")
    for entry in mapping["images"]:
        r = records[entry["sample_id"]]
        scene = export / entry["split"] / f"{entry['scene_id']:06d}"
        im_id = entry["im_id"]
        gts = load_scene_gt(scene / "scene_gt.json")[im_id]
        infos = load_json(scene / "scene_gt_info.json", keys_to_int=True)[im_id]
        cam = load_scene_camera(scene / "scene_camera.json")[im_id]
        assert len(gts) == len(infos) == 1
        gt, info = gts[0], infos[0]
        assert gt["obj_id"] == entry["scene_id"]
        T_cam_obj = np.linalg.inv(np.asarray(r["T_base_cam"])) @ np.asarray(r["T_base_obj"])
        assert np.allclose(gt["cam_R_m2c"], T_cam_obj[:3, :3])
        assert np.allclose(gt["cam_t_m2c"].ravel(), T_cam_obj[:3, 3] * 1000.0)
        # The same pose from the world (base) frame: R_w2c @ R_base_obj.
        R_base_obj = np.asarray(r["T_base_obj"])[:3, :3]
        assert np.allclose(gt["cam_R_m2c"], cam["cam_R_w2c"] @ R_base_obj)

        name = f"{im_id:06d}_{0:06d}.png"
        mask = np.asarray(iio.imread(scene / "mask" / name)) > 0
        visib = np.asarray(iio.imread(scene / "mask_visib" / name)) > 0
        real_mask = load_mask(tiny_run / "samples" / r["id"] / "real_mask.png")
        assert np.array_equal(visib, real_mask)
        assert not (visib & ~mask).any()
        assert visib.sum() / mask.sum() > 0.98  # nothing occludes the part in tiny

        pts = load_ply(export / "models" / f"obj_{gt['obj_id']:06d}.ply")["pts"]
        p = pts @ gt["cam_R_m2c"].T + gt["cam_t_m2c"].ravel()
        uv = p[:, :2] / p[:, 2:] @ cam["cam_K"][:2, :2].T + cam["cam_K"][:2, 2]
        px = np.round(uv).astype(int)
        H, W = mask.shape
        inside = (px[:, 0] >= 0) & (px[:, 0] < W) & (px[:, 1] >= 0) & (px[:, 1] < H)
        assert inside.mean() > 0.9
        u, v = px[inside, 0], px[inside, 1]
        assert ndimage.binary_dilation(mask, np.ones((3, 3), bool))[v, u].all()
        assert mask[v, u].mean() > 0.8

        depth = load_depth(scene / "depth" / f"{im_id:06d}.png")
        ys, xs = visib.nonzero()
        assert info["px_count_visib"] == int(visib.sum())
        assert info["px_count_valid"] == int((depth[mask] > 0).sum())
        assert info["px_count_all"] >= int(mask.sum())
        assert info["visib_fract"] == pytest.approx(visib.sum() / info["px_count_all"])
        assert info["bbox_visib"] == _bbox(xs, ys)
        ys, xs = mask.nonzero()
        if info["px_count_all"] == mask.sum():  # not truncated by the image border
            assert info["bbox_obj"] == _bbox(xs, ys)


def test_bop_without_true_pose(hardware_run: Path, tmp_path: Path) -> None:
    """A sample without ``T_base_obj`` keeps its images and camera but gets no pose, no
    gt info and no masks; the failed sample is skipped."""
    summary = export_run(hardware_run, "bop", tmp_path / "bop", progress=False)
    records = _records(hardware_run)
    tests = {i for i, r in records.items() if r["split"] == "test"}
    assert summary["images"] == len(records)
    assert summary["images_without_pose"] == len(tests)
    for entry in load_json(tmp_path / "bop" / "mapping.json")["images"]:
        scene = tmp_path / "bop" / entry["split"] / f"{entry['scene_id']:06d}"
        im_id = entry["im_id"]
        gts = load_scene_gt(scene / "scene_gt.json")[im_id]
        infos = load_json(scene / "scene_gt_info.json", keys_to_int=True)[im_id]
        assert im_id in load_scene_camera(scene / "scene_camera.json")
        assert (scene / "depth" / f"{im_id:06d}.png").is_file()
        if entry["sample_id"] in tests:
            assert gts == [] and infos == []
            assert not (scene / "mask" / f"{im_id:06d}_000000.png").exists()
        else:
            assert len(gts) == len(infos) == 1


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        # Eighths of a pixel: exact in floating point, so "on an edge" is well defined.
        st.tuples(*[st.integers(-64, 320).map(lambda k: k / 8) for _ in range(6)]),
        min_size=1,
        max_size=12,
    ),
    st.booleans(),
)
def test_bop_silhouette_fills_pixel_centres(
    corners: list[tuple[float, ...]], on_grid: bool
) -> None:
    """The silhouette rasteriser takes the pixels whose centre is in a triangle, as
    skimage.draw.polygon does (and a GPU): triangles of any shape and winding, partly
    outside the image, with vertices on the pixel grid (edges through pixel centres) or
    not; a zero-area triangle covers nothing."""
    from skimage.draw import polygon

    tri = np.asarray(corners, dtype=np.float64).reshape(-1, 3, 2)
    if on_grid:
        tri = np.round(tri)
    want = np.zeros((24, 32), dtype=bool)
    for t in tri:
        (ax, ay), (bx, by), (cx, cy) = t
        if (bx - ax) * (cy - ay) == (by - ay) * (cx - ax):
            continue  # zero area: no pixel (skimage would draw the segment)
        rr, cc = polygon(t[:, 1], t[:, 0], shape=want.shape)
        want[rr, cc] = True
    assert np.array_equal(fill_triangles(tri, want.shape), want)


def test_bop_undistortion_inverts_the_renderers_lens() -> None:
    """A distorted run's images are resampled into the pinhole camera of the same K: the
    renderers' lens (sim.render.distortion.distort_passes) followed by ``undistort`` gives
    back the pinhole image, away from the border the lens pushes out of view."""
    from sim.render.distortion import distort_passes

    W, H = 120, 90
    K = np.array([[100.0, 0.0, (W - 1) / 2], [0.0, 100.0, (H - 1) / 2], [0.0, 0.0, 1.0]])
    dist = np.array([-0.25, 0.08, 0.001, -0.002, 0.0])
    v, u = np.mgrid[0:H, 0:W]
    disc = (u - 80.0) ** 2 + (v - 30.0) ** 2 < 15.0**2
    depth = np.where(disc, 0.3, 0.0).astype(np.float32)
    pinhole = RenderOutput(np.zeros((H, W, 3), np.uint8), depth, disc, disc.astype(np.int32))
    distorted = distort_passes(pinhole, K, dist, (0.0, 0.0, 0.0))
    assert (distorted.mask != disc).sum() > 50  # the lens does move the disc
    maps = undistort_maps(K, dist, (W, H))
    back = undistort(distorted.mask.astype(np.uint8), maps, nearest=True).astype(bool)
    assert (back != disc).sum() <= 0.05 * disc.sum()
    back_depth = undistort(distorted.depth, maps, nearest=True)
    assert np.allclose(back_depth[back & disc], 0.3)


# ---------------------------------------------------------------------------------------
# COCO, read with pycocotools
# ---------------------------------------------------------------------------------------


def test_coco_reads_with_pycocotools(tiny_run: Path, exports: dict[str, Path]) -> None:
    """``COCO(annotations.json)`` loads; categories are the run's sorted defect kinds; each
    test image's annotations are the 8-connected regions of its ground-truth mask (their
    union is the mask), RLE with str counts, area and bbox from the mask, iscrowd 0."""
    pytest.importorskip("pycocotools")
    from pycocotools.coco import COCO

    export, records = exports["coco"], _records(tiny_run)
    coco = COCO(str(export / "annotations.json"))
    kinds = sorted({d["kind"] for r in records.values() for d in r["defects"]})
    cats = coco.loadCats(coco.getCatIds())
    assert [(c["id"], c["name"]) for c in cats] == [(i + 1, k) for i, k in enumerate(kinds)]
    tests = {i: r for i, r in records.items() if r["split"] == "test"}
    images = coco.loadImgs(coco.getImgIds())
    assert {im["twincell_id"] for im in images} == set(tests)
    for im in images:
        r = tests[im["twincell_id"]]
        path = export / "images" / im["file_name"]
        assert path.read_bytes() == (tiny_run / "samples" / r["id"] / "real.png").read_bytes()
        gt = load_mask(tiny_run / "samples" / r["id"] / "gt_mask.png")
        assert (im["height"], im["width"]) == gt.shape
        anns = coco.loadAnns(coco.getAnnIds(imgIds=im["id"]))
        union = np.zeros(gt.shape, bool)
        for a in anns:
            m = coco.annToMask(a).astype(bool)
            assert ndimage.label(m, structure=np.ones((3, 3)))[1] == 1  # one region each
            assert not (union & m).any()
            union |= m
            assert isinstance(a["segmentation"]["counts"], str) and a["iscrowd"] == 0
            assert a["area"] == m.sum()
            ys, xs = m.nonzero()
            assert a["bbox"] == [
                xs.min(),
                ys.min(),
                xs.max() - xs.min() + 1,
                ys.max() - ys.min() + 1,
            ]
        assert np.array_equal(union, gt)
        assert bool(anns) == bool(r["label"])
        # Attribution: per kind, the regions' areas add up to the defects' visible pixels
        # where no pixel belongs to two defects (the tiny run's images).
        visible = {}
        for d in r["defects"]:
            visible[d["kind"]] = visible.get(d["kind"], 0) + d["visible_px"]
        if sum(visible.values()) == gt.sum():
            area: dict[str, float] = {}
            for a in anns:
                name = coco.loadCats(a["category_id"])[0]["name"]
                area[name] = area.get(name, 0) + a["area"]
            assert area == {k: v for k, v in visible.items() if v}
    assert any(a["attributed_by"] == "nearest_defect_site" for a in coco.dataset["annotations"])


def test_coco_evaluates_ground_truth_as_perfect(exports: dict[str, Path]) -> None:
    """COCOeval (segm) scores the ground truth, given back as detections, AP 1."""
    pytest.importorskip("pycocotools")
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    coco = COCO(str(exports["coco"] / "annotations.json"))
    dets = [
        {k: a[k] for k in ("image_id", "category_id", "segmentation")} | {"score": 1.0}
        for a in coco.dataset["annotations"]
    ]
    ev = COCOeval(coco, coco.loadRes(dets), "segm")
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    assert ev.stats[0] == pytest.approx(1.0)


def test_coco_without_ground_truth(hardware_run: Path, tmp_path: Path) -> None:
    """A recording without ground truth has no defect instance to export: refused, with
    what to do, before anything is written."""
    pytest.importorskip("pycocotools")
    with pytest.raises(SpecError, match="no test sample with ground truth"):
        export_run(hardware_run, "coco", tmp_path / "coco", progress=False)
    assert not (tmp_path / "coco").exists()


# ---------------------------------------------------------------------------------------
# Refusals and atomicity
# ---------------------------------------------------------------------------------------


def test_unknown_format_is_refused(tiny_run: Path, tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"--format: unknown 'yolo'; allowed: .*mvtec.*bop.*coco"):
        export_run(tiny_run, "yolo", tmp_path / "out", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_not_a_run_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "notarun").mkdir()
    (tmp_path / "notarun" / "samples.jsonl").write_text("")
    (tmp_path / "damaged").mkdir()
    (tmp_path / "damaged" / "manifest.json").write_text("{")
    for run in (tmp_path / "notarun", tmp_path / "missing", tmp_path / "damaged"):
        with pytest.raises(RunDirError, match=f"RUN {run}: .*not a"):
            export_run(run, "mvtec", tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists() and not _leftovers(tmp_path)


def test_non_empty_out_is_refused_and_an_empty_one_used(tiny_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(RunDirError, match="exists and is not empty"):
        export_run(tiny_run, "mvtec", out, progress=False)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(RunDirError, match="not a directory"):
        export_run(tiny_run, "mvtec", tmp_path / "file", progress=False)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert export_run(tiny_run, "mvtec", empty, progress=False)["images"] > 0
    assert not _leftovers(tmp_path)


def test_an_interrupted_export_leaves_nothing(
    tiny_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from scenarios.export import bop

    calls = {"n": 0}
    real = bop.gt_info

    def dies_on_the_third(*args: Any, **kwargs: Any) -> dict[str, Any]:
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(bop, "gt_info", dies_on_the_third)
    with pytest.raises(KeyboardInterrupt):
        export_run(tiny_run, "bop", tmp_path / "out", progress=False)
    assert list(tmp_path.iterdir()) == []
