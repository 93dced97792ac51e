"""The run directory contract: atomic writers, and a reader that replays a run as Samples.

Layout (README, "The run directory"): manifest.json, samples.jsonl, samples/<id>/...,
meshes/<part_id>.ply, predictions/<detector>/{scores.csv,<id>.npy}, metrics.json,
report.md, report.html. Every file is written to a temporary name in the same directory
and renamed into place, so an interrupted run never leaves a half-written file; a sample
directory appears only once all its files are in it.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from scenarios.interfaces import DefectRecord, Observation, RunDirError, Sample

SAMPLE_FILES = (
    "real.png",
    "twin.png",
    "real_mask.png",
    "twin_mask.png",
    "gt_mask.png",
    "real_depth.npy",
)


def _atomic(path: Path, write: Callable[[Path], None]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path: Path, text: str) -> None:
    """Write a text file atomically."""

    def _w(p: Path) -> None:
        p.write_text(text)

    _atomic(path, _w)


def write_json(path: Path, obj: Any) -> None:
    """Write JSON (indented, keys in insertion order) atomically."""
    write_text(path, json.dumps(obj, indent=2) + "\n")


def write_bytes(path: Path, data: bytes) -> None:
    """Write a binary file atomically."""

    def _w(p: Path) -> None:
        p.write_bytes(data)

    _atomic(path, _w)


def read_json_if(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``, or None when the file does not exist."""
    if not path.is_file():
        return None
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def write_npy(path: Path, array: np.ndarray) -> None:
    """Write a .npy array atomically."""

    def _w(p: Path) -> None:
        with open(p, "wb") as f:
            np.save(f, array)

    _atomic(path, _w)


def _png(path: Path, image: np.ndarray) -> None:
    Image.fromarray(image).save(path, format="PNG")


def mask_to_png(mask: np.ndarray) -> np.ndarray:
    """(H, W) bool -> (H, W) uint8 with 0 / 255."""
    return (np.asarray(mask, dtype=bool) * np.uint8(255)).astype(np.uint8)


@contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Yield a temporary sibling directory that is renamed to ``final`` on success."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}."))
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
    real_mask: np.ndarray,
    twin_mask: np.ndarray,
    gt_mask: np.ndarray,
    real_depth: np.ndarray,
) -> None:
    """Write one sample's images, masks, depth and record as one atomic directory."""
    with atomic_dir(final) as d:
        _png(d / "real.png", real_rgb)
        _png(d / "twin.png", twin_rgb)
        _png(d / "real_mask.png", mask_to_png(real_mask))
        _png(d / "twin_mask.png", mask_to_png(twin_mask))
        _png(d / "gt_mask.png", mask_to_png(gt_mask))
        with open(d / "real_depth.npy", "wb") as f:
            np.save(f, np.asarray(real_depth, dtype=np.float32))
        (d / "record.json").write_text(json.dumps(record) + "\n")


def read_sample_record(sample_dir: Path) -> dict[str, Any] | None:
    """The record of a complete sample directory, or None if it is missing or incomplete."""
    rec = sample_dir / "record.json"
    if not rec.is_file() or not all((sample_dir / f).is_file() for f in SAMPLE_FILES):
        return None
    data: dict[str, Any] = json.loads(rec.read_text())
    return data


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """All records of a JSON-lines file."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> None:
    """Write JSON-lines atomically, one compact object per line."""
    write_text(path, "".join(json.dumps(r) + "\n" for r in records))


def load_png(path: Path) -> np.ndarray:
    """An image file as an array: (H, W, 3) uint8 for RGB, (H, W) uint8 for masks."""
    with Image.open(path) as im:
        return np.asarray(im)


def load_sample(run_dir: Path, record: dict[str, Any]) -> Sample:
    """Rebuild a Sample from its record and files (the replay path: no simulator needed)."""
    d = Path(run_dir) / "samples" / record["id"]
    if not d.is_dir():
        raise RunDirError(f"{d}: sample directory missing")
    K = np.asarray(record["K"], dtype=np.float64)
    dist = None if record.get("dist") is None else np.asarray(record["dist"], dtype=np.float64)
    real = Observation(
        load_png(d / "real.png"),
        K,
        np.asarray(record["T_base_cam"], dtype=np.float64),
        depth=np.load(d / "real_depth.npy"),
        dist=dist,
    )
    twin = Observation(
        load_png(d / "twin.png"),
        K,
        np.asarray(record["T_base_cam_twin"], dtype=np.float64),
        dist=dist,
    )
    defects = tuple(
        DefectRecord(
            r["kind"],
            float(r["size_mm"]),
            {k: v for k, v in r.items() if k not in ("kind", "size_mm")},
        )
        for r in record.get("defects", [])
    )
    return Sample(
        id=record["id"],
        real=real,
        twin=twin,
        fg_mask=load_png(d / "twin_mask.png") > 127,
        gt_mask=load_png(d / "gt_mask.png") > 127,
        label=int(record["label"]),
        part_id=record["part_id"],
        category=record["category"],
        view_id=int(record["view_id"]),
        defects=defects,
    )


def load_samples(run_dir: Path, split: str | None = None) -> list[Sample]:
    """All samples of a run (optionally one split), in samples.jsonl order."""
    path = Path(run_dir) / "samples.jsonl"
    if not path.is_file():
        raise RunDirError(f"{run_dir}: no samples.jsonl; is this a twincell run directory?")
    return [load_sample(run_dir, r) for r in read_jsonl(path) if split in (None, r["split"])]
