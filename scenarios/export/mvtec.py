"""MVTec AD layout: the real images as anomalib's ``MVTecAD`` and ``Folder`` datamodules read them.

```
out/<category>/train/good/000.png            train split (all good)
out/<category>/test/good/000.png             test split, label 0
out/<category>/test/<kind>/000.png           test split, label 1, one visible defect kind
out/<category>/test/combined/000.png         test split, label 1, several visible kinds
out/<category>/ground_truth/<kind>/000_mask.png   0/255 mask of each anomalous test image
out/unlabelled/<category>/000.png            test samples without ground truth (label null)
out/mapping.csv                              every written image back to its sample id
```

``<category>`` is the sample's ``category`` (the part family); images are the real RGB
captures (``real.png``) byte for byte; names are running numbers per folder in samples.jsonl
order, zero-padded to three digits (more when a folder holds over 1000). A sample without
ground truth cannot be filed under good or a defect kind, and a PNG anywhere under
``<category>/`` is read as a sample by anomalib, so those go to ``unlabelled/`` beside the
categories (for prediction only). A defective image with no defect record that shows goes to
``test/unspecified``.
"""

from __future__ import annotations

import csv
import io
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from scenarios.export import iter_progress, sample_dir, visible_kinds
from scenarios.interfaces import RunDirError
from scenarios.rundir import load_mask, mask_to_png

GOOD = "good"
COMBINED = "combined"
UNSPECIFIED = "unspecified"
UNLABELLED = "unlabelled"
MAPPING = "mapping.csv"


@dataclass(frozen=True)
class _Item:
    """Where one sample goes: its image folder and, for an anomalous test image, its mask
    folder (paths relative to the export root)."""

    record: dict[str, Any]
    folder: tuple[str, ...]
    mask_folder: tuple[str, ...] | None


def _name_ok(name: object) -> bool:
    """Whether ``name`` can be one folder name (no separator, not hidden, not empty)."""
    return isinstance(name, str) and bool(name) and "/" not in name and not name.startswith(".")


def _plan(run: Path, records: list[dict[str, Any]]) -> list[_Item]:
    """Each sample's folder; RunDirError for a sample MVTec AD cannot hold."""
    items = []
    for r in records:
        sid, cat = r["id"], r.get("category")
        if not isinstance(cat, str) or not _name_ok(cat) or cat == UNLABELLED:
            raise RunDirError(f"sample {sid}: category {cat!r} cannot be an MVTec AD folder name")
        d = sample_dir(run, r)
        mask_folder: tuple[str, ...] | None = None
        if r["split"] == "train":
            if r["label"] == 1:
                raise RunDirError(
                    f"sample {sid}: a train sample labelled anomalous; MVTec AD's train/ "
                    "holds good images only"
                )
            folder: tuple[str, ...] = (cat, "train", GOOD)
        elif r["label"] is None:
            folder = (UNLABELLED, cat)
        elif r["label"] == 0:
            folder = (cat, "test", GOOD)
        else:
            kinds = visible_kinds(r)
            kind = kinds[0] if len(kinds) == 1 else (COMBINED if kinds else UNSPECIFIED)
            if not _name_ok(kind) or kind == GOOD:
                raise RunDirError(f"sample {sid}: defect kind {kind!r} cannot be a folder name")
            if not (d / "gt_mask.png").is_file():
                raise RunDirError(
                    f"sample {sid}: labelled anomalous but has no gt_mask.png; MVTec AD "
                    "needs a mask for every anomalous test image"
                )
            folder, mask_folder = (cat, "test", kind), (cat, "ground_truth", kind)
        items.append(_Item(r, folder, mask_folder))
    return items


def check(run: Path, records: list[dict[str, Any]]) -> None:
    """RunDirError when a sample cannot be exported as MVTec AD (before anything is written)."""
    _plan(run, records)


def write(run: Path, records: list[dict[str, Any]], out: Path, progress: bool) -> dict[str, Any]:
    """Write the MVTec AD layout of ``records`` into ``out``; returns the counts written."""
    items = _plan(run, records)
    sizes = Counter(it.folder for it in items)
    width = {f: max(3, len(str(n - 1))) for f, n in sizes.items()}
    taken: Counter[tuple[str, ...]] = Counter()
    rows = []
    counts = Counter[str]()
    for it in iter_progress(items, len(items), "export mvtec", progress):
        r = it.record
        stem = f"{taken[it.folder]:0{width[it.folder]}d}"
        taken[it.folder] += 1
        folder = out.joinpath(*it.folder)
        folder.mkdir(parents=True, exist_ok=True)
        d = sample_dir(run, r)
        shutil.copyfile(d / "real.png", folder / f"{stem}.png")
        image_rel = "/".join((*it.folder, f"{stem}.png"))
        mask_rel = ""
        if it.mask_folder is not None:
            mfolder = out.joinpath(*it.mask_folder)
            mfolder.mkdir(parents=True, exist_ok=True)
            # Re-encoded rather than copied: anomalib reads a mask as L / 255 in uint8, so
            # it must hold exactly 0 and 255.
            mask = mask_to_png(load_mask(d / "gt_mask.png"))
            buf = io.BytesIO()
            Image.fromarray(mask).save(buf, format="PNG")
            (mfolder / f"{stem}_mask.png").write_bytes(buf.getvalue())
            mask_rel = "/".join((*it.mask_folder, f"{stem}_mask.png"))
            counts["masks"] += 1
        key = (
            "unlabelled"
            if it.folder[0] == UNLABELLED
            else ("train_good" if it.folder[1] == "train" else "test_" + it.folder[2])
        )
        counts[key] += 1
        counts["images"] += 1
        rows.append(
            {
                "image": image_rel,
                "mask": mask_rel,
                "sample_id": r["id"],
                "part_id": r["part_id"],
                "view_id": r["view_id"],
                "split": r["split"],
                "label": "" if r["label"] is None else r["label"],
                "visible_kinds": ";".join(visible_kinds(r)),
            }
        )
    buf_csv = io.StringIO()
    writer = csv.DictWriter(buf_csv, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    (out / MAPPING).write_text(buf_csv.getvalue())
    categories = sorted({it.folder[0] for it in items if it.folder[0] != UNLABELLED})
    return {"categories": categories, **{k: v for k, v in sorted(counts.items()) if v}}
