"""The run directory contract: atomic writers, and a reader that replays a run as Samples.

Layout (README, "The run directory"): manifest.json, samples.jsonl, samples/<id>/...,
meshes/<part_id>.ply, predictions/<detector>/{scores.csv,<id>.npy}, metrics.json,
report.md, report.html. Every file is written to a temporary name in the same directory
and renamed into place, so an interrupted run never leaves a half-written file; a sample
directory appears only once all its files are in it.

Temporary names start with ``TEMP_PREFIX``; a process killed with SIGKILL can leave them
behind, and ``remove_temporaries`` deletes them when the run is resumed. Files and
directories are created with modes 0666 / 0777 less the umask, like any other program's.
A sample's ``record.json`` carries the SHA-256 of each of its files, so a resume redoes a
sample whose files were damaged instead of trusting that they exist.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import os
import secrets
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

import numpy as np
from PIL import Image

from scenarios.interfaces import (
    TEMP_PREFIX,  # re-exported: the run directory's temporary-name prefix
    DefectRecord,
    Observation,
    PartSample,
    RunDirError,
    Sample,
)

SAMPLE_FILES = (
    "real.png",
    "twin.png",
    "real_mask.png",
    "twin_mask.png",
    "gt_mask.png",
    "real_depth.npy",
)
#: The sample files only a cell with ground truth writes (a simulator; not hardware).
TRUTH_FILES = ("real_mask.png", "gt_mask.png")
#: Files a sample has when its cell has a depth sensor (``cell.depth.points``): the real
#: and twin points of the part's region (base frame, PLY) and the real points' labels.
POINT_FILES = ("real_points.ply", "twin_points.ply", "point_labels.npy")


def _temp_name(final: Path) -> Path:
    """A fresh hidden sibling name of ``final`` that ``remove_temporaries`` recognises."""
    return final.parent / f"{TEMP_PREFIX}{final.name}.{secrets.token_hex(4)}"


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _atomic(path: Path, write: Callable[[Path], None]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_name(path)
    try:
        # O_EXCL with mode 0o666: the umask applies, as for any file a program creates.
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def remove_temporaries(out: Path) -> int:
    """Delete what interrupted writers left under the run directory ``out``; returns the count.

    Looks in ``out`` and in the folders the run writes into (samples, meshes, figures,
    features, predictions and each detector's folder, parts and each part's folder); only
    names starting with ``TEMP_PREFIX``.
    """
    folders = [out, out / "samples", out / "meshes", out / "figures", out / "predictions"]
    folders.append(out / "features")
    folders.append(out / "parts")
    for sub in ("predictions", "parts"):
        if (out / sub).is_dir():
            folders += [p for p in (out / sub).iterdir() if p.is_dir()]
    n = 0
    for folder in folders:
        if not folder.is_dir():
            continue
        for entry in folder.iterdir():
            if entry.name.startswith(TEMP_PREFIX):
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)
                n += 1
    return n


@contextmanager
def held_lock(fd: int, busy: str) -> Iterator[None]:
    """Hold an exclusive ``flock`` on the open file ``fd`` for the block, then close it
    (which releases the lock); RunDirError(``busy``) at once when another process holds
    it. Keeps a second run or study out of a directory in use."""
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise RunDirError(busy) from None
        yield
    finally:
        os.close(fd)


def write_text(path: Path, text: str) -> None:
    """Write a text file atomically."""

    def _w(p: Path) -> None:
        p.write_text(text)

    _atomic(path, _w)


def write_json(path: Path, obj: Any) -> None:
    """Write JSON (indented, keys in insertion order) atomically."""
    write_text(path, json.dumps(obj, indent=2) + "\n")


def write_bytes(path: Path, data: bytes) -> str:
    """Write a binary file atomically; returns its hex SHA-256 (for the resume checks)."""

    def _w(p: Path) -> None:
        p.write_bytes(data)

    _atomic(path, _w)
    return hashlib.sha256(data).hexdigest()


def read_manifest(out: Path) -> dict[str, Any] | None:
    """The manifest of the run in ``out``, None when there is none; RunDirError if damaged."""
    path = out / "manifest.json"
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError) as exc:
        why = type(exc).__name__
        data = None
    else:
        why = "not a twincell manifest"
    if not isinstance(data, dict) or not isinstance(data.get("digest"), str):
        raise RunDirError(
            f"--out {out}: manifest.json is damaged ({why}), so the run cannot be checked "
            "and resumed; delete the directory or choose another --out"
        )
    return data


def write_npy(path: Path, array: np.ndarray) -> str:
    """Write a .npy array atomically; returns the file's hex SHA-256."""
    return write_bytes(path, _npy_bytes(array))


def read_npy_verified(path: Path, sha256: str) -> np.ndarray | None:
    """The array in ``path`` if the file's SHA-256 is ``sha256``; None if missing or damaged."""
    try:
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() != sha256:
            return None
        return np.asarray(np.load(io.BytesIO(data), allow_pickle=False))
    except (OSError, ValueError):
        return None


def png_bytes(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def _npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def mask_to_png(mask: np.ndarray) -> np.ndarray:
    """(H, W) bool -> (H, W) uint8 with 0 / 255."""
    return (np.asarray(mask, dtype=bool) * np.uint8(255)).astype(np.uint8)


@contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Yield a temporary sibling directory that is renamed to ``final`` on success."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_name(final)
    os.mkdir(tmp, 0o777)  # the umask applies
    try:
        yield tmp
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_sample_dir(
    final: Path,
    record: dict[str, Any],
    real_rgb: np.ndarray,
    twin_rgb: np.ndarray,
    real_mask: np.ndarray | None,
    twin_mask: np.ndarray,
    gt_mask: np.ndarray | None,
    real_depth: np.ndarray,
    points: dict[str, np.ndarray] | None = None,
) -> dict[str, Any]:
    """Write one sample's images, masks, depth, points and record as one atomic directory.

    ``points`` holds ``real_points`` and ``twin_points`` (N, 3) base-frame metres and
    ``point_labels`` (N,) bool (absent without ground truth), or is empty. A capture without
    ground truth (hardware) has no ``real_mask``/``gt_mask``: those files are not written.
    Returns the record as written: ``record`` plus ``sha256`` {file name: hex digest}.
    """
    blobs = {
        "real.png": png_bytes(real_rgb),
        "twin.png": png_bytes(twin_rgb),
        "twin_mask.png": png_bytes(mask_to_png(twin_mask)),
        "real_depth.npy": _npy_bytes(np.asarray(real_depth, dtype=np.float32)),
    }
    if real_mask is not None:
        blobs["real_mask.png"] = png_bytes(mask_to_png(real_mask))
    if gt_mask is not None:
        blobs["gt_mask.png"] = png_bytes(mask_to_png(gt_mask))
    if points:
        from sim.points import ply_bytes

        labels = points.get("point_labels")
        labels = None if labels is None else np.asarray(labels, dtype=bool)
        blobs["real_points.ply"] = ply_bytes(points["real_points"], labels)
        blobs["twin_points.ply"] = ply_bytes(points["twin_points"])
        if labels is not None:
            blobs["point_labels.npy"] = _npy_bytes(labels)
    record = {**record, "sha256": {k: hashlib.sha256(v).hexdigest() for k, v in blobs.items()}}
    with atomic_dir(final) as d:
        for name, data in blobs.items():
            (d / name).write_bytes(data)
        (d / "record.json").write_text(json.dumps(record) + "\n")
    return record


def read_sample_record(sample_dir: Path) -> dict[str, Any] | None:
    """The record of a complete, undamaged sample directory, or None (the sample is redone).

    Undamaged means: ``record.json`` parses and every sample file exists with the SHA-256
    the record lists for it.
    """
    try:
        data = json.loads((sample_dir / "record.json").read_bytes())
        sums = data["sha256"]
        # Every file the record lists must be there; every one except the ground truth
        # (``TRUTH_FILES``, absent on hardware) and the points must be listed.
        labelled = data["label"] is not None
        must = [f for f in SAMPLE_FILES if labelled or f not in TRUTH_FILES]
        files = must + [f for f in POINT_FILES if f in sums]
        ok = all(sha256_file(sample_dir / f) == sums[f] for f in files)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return data if ok and isinstance(data, dict) else None


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """All records of a JSON-lines file."""
    return list(iter_jsonl(path))


def iter_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """The records of a JSON-lines file, one at a time (a large run need not fit in memory)."""
    with open(path) as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


@contextmanager
def atomic_lines(path: Path) -> Iterator[TextIO]:
    """A text file to write line by line; it appears at ``path`` only when the block ends."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_name(path)
    try:
        with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), "w") as f:
            yield f
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def is_failed(record: dict[str, Any]) -> bool:
    """Whether a samples.jsonl line records a sample that failed to render (no files)."""
    return record.get("status") == "failed"


def sample_records(path: Path) -> Iterator[dict[str, Any]]:
    """The records of samples.jsonl that have images (failed samples skipped), streamed."""
    return (r for r in iter_jsonl(path) if not is_failed(r))


def summary(record: dict[str, Any]) -> dict[str, Any]:
    """What the engine and the report keep of a sample record in memory: ids, split, label,
    and each defect's kind and visible pixels (the poses and checksums stay on disk)."""
    return {
        "id": record["id"],
        "part_id": record["part_id"],
        "view_id": record["view_id"],
        "split": record["split"],
        "label": record["label"],
        "defects": [
            {"kind": d["kind"], "visible_px": d["visible_px"]} for d in record.get("defects", [])
        ],
    }


def load_png(path: Path) -> np.ndarray:
    """An image file as an array: (H, W, 3) uint8 for RGB, (H, W) uint8 for masks."""
    with Image.open(path) as im:
        return np.asarray(im)


def load_sample(run_dir: Path, record: dict[str, Any]) -> Sample:
    """Rebuild a Sample from its record and files (the replay path: no simulator needed)."""
    d = Path(run_dir) / "samples" / record["id"]
    if not d.is_dir():
        raise RunDirError(f"{d}: sample directory missing")
    arrays: dict[str, np.ndarray] = {
        "real_rgb": load_png(d / "real.png"),
        "twin_rgb": load_png(d / "twin.png"),
        "real_depth": np.load(d / "real_depth.npy"),
        "twin_mask": load_mask(d / "twin_mask.png"),
    }
    if (d / "gt_mask.png").exists():  # absent without ground truth (hardware)
        arrays["gt_mask"] = load_mask(d / "gt_mask.png")
    if (d / "real_points.ply").exists():
        from sim.points import read_ply

        arrays["real_points"] = read_ply(d / "real_points.ply")[0]
        arrays["twin_points"] = read_ply(d / "twin_points.ply")[0]
        if (d / "point_labels.npy").exists():
            arrays["point_labels"] = np.load(d / "point_labels.npy")
    return sample_from_arrays(record, arrays)


def sample_from_arrays(record: dict[str, Any], arrays: dict[str, np.ndarray]) -> Sample:
    """The ``Sample`` of a record and its arrays (``real_rgb``, ``twin_rgb``, ``real_depth``,
    ``twin_mask``, optionally ``gt_mask`` (None or absent without ground truth),
    ``real_points``, ``twin_points``, ``point_labels``): the one assembly for samples read
    from a run directory (``load_sample``) and simulated ones kept in memory (the gymnasium
    environment)."""
    K = np.asarray(record["K"], dtype=np.float64)
    dist = None if record.get("dist") is None else np.asarray(record["dist"], dtype=np.float64)
    real = Observation(
        arrays["real_rgb"],
        K,
        np.asarray(record["T_base_cam"], dtype=np.float64),
        depth=np.asarray(arrays["real_depth"], dtype=np.float32),
        dist=dist,
    )
    twin = Observation(
        arrays["twin_rgb"], K, np.asarray(record["T_base_cam_twin"], dtype=np.float64), dist=dist
    )
    defects = tuple(
        DefectRecord(
            r["kind"],
            float(r["size_mm"]),
            {k: v for k, v in r.items() if k not in ("kind", "size_mm")},
        )
        for r in record.get("defects", [])
    )
    points: dict[str, Any] = {}
    if "real_points" in arrays:
        points = {
            "real_points": arrays["real_points"],
            "twin_points": arrays["twin_points"],
            "gt_point_labels": arrays.get("point_labels"),
        }
    return Sample(
        id=record["id"],
        real=real,
        twin=twin,
        fg_mask=np.asarray(arrays["twin_mask"], dtype=bool),
        gt_mask=None
        if arrays.get("gt_mask") is None
        else np.asarray(arrays["gt_mask"], dtype=bool),
        label=None if record["label"] is None else int(record["label"]),
        part_id=record["part_id"],
        category=record["category"],
        view_id=int(record["view_id"]),
        defects=defects,
        **points,
    )


def load_sample_by_id(run_dir: Path, sample_id: str) -> Sample:
    """Rebuild a Sample from its directory alone (its ``record.json`` holds the record)."""
    d = Path(run_dir) / "samples" / sample_id
    try:
        record = json.loads((d / "record.json").read_bytes())
    except (OSError, ValueError) as exc:
        raise RunDirError(f"{d}: unreadable sample record ({type(exc).__name__})") from None
    return load_sample(run_dir, record)


#: A part's fused cloud and record (``parts/<part_id>/``), written after its views.
PART_CLOUD, PART_RECORD = "real_fused.ply", "record.json"


def part_records(run_dir: Path) -> list[dict[str, Any]]:
    """The records of the run's parts that have a fused cloud, sorted by part id."""
    found = []
    for f in sorted(Path(run_dir).glob(f"parts/*/{PART_RECORD}")):
        try:
            found.append(json.loads(f.read_bytes()))
        except (OSError, ValueError) as exc:
            raise RunDirError(f"{f}: unreadable part record ({type(exc).__name__})") from None
    return found


def load_part(run_dir: Path, record: dict[str, Any]) -> PartSample:
    """Rebuild a PartSample (a whole part's fused cloud and labels) from its record and file."""
    from sim.points import read_ply

    path = Path(run_dir) / "parts" / record["id"] / PART_CLOUD
    try:
        points, labels = read_ply(path)
    except (OSError, ValueError) as exc:
        raise RunDirError(f"{path}: unreadable fused cloud ({type(exc).__name__})") from None
    return PartSample(
        id=record["id"],
        category=record["category"],
        points=points,
        gt_point_labels=None if labels is None else np.asarray(labels, dtype=bool),
        label=record["label"],
        defects=tuple(
            DefectRecord(
                d["kind"],
                d["size_mm"],
                {k: v for k, v in d.items() if k not in ("kind", "size_mm")},
            )
            for d in record.get("defects", [])
        ),
    )


def load_mask(path: Path) -> np.ndarray:
    """A 0/255 mask PNG as (H, W) bool."""
    return np.asarray(load_png(path) > 127)


def load_samples(run_dir: Path, split: str | None = None) -> list[Sample]:
    """All samples of a run (optionally one split), in samples.jsonl order."""
    path = Path(run_dir) / "samples.jsonl"
    if not path.is_file():
        raise RunDirError(f"{run_dir}: no samples.jsonl; is this a twincell run directory?")
    return [load_sample(run_dir, r) for r in sample_records(path) if split in (None, r["split"])]
