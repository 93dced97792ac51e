"""Export a run directory into the layouts the field's tools read: MVTec AD, BOP, COCO.

``export_run(run, fmt, out)`` checks everything it can before writing anything (the format,
that ``run`` is a twincell run directory, that ``out`` is new or empty, what the format
itself needs), then writes the whole export into a temporary sibling of ``out`` and renames
it into place at the end: an interrupted export leaves nothing at ``out`` (a SIGKILL can
leave the hidden temporary sibling, named with ``TEMP_PREFIX``, to delete by hand).

Each format is one module (``mvtec``, ``bop``, ``coco``) with two functions: ``check(run,
records)`` raises before anything is written, ``write(run, records, out, progress)`` writes
into ``out`` (the temporary directory) and returns its counts. docs/exports.md describes the
layouts and how each tool loads them.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from scenarios.interfaces import RunDirError, SpecError, allowed
from scenarios.rundir import atomic_dir, read_manifest, sample_records

log = logging.getLogger(__name__)

FORMATS = ("mvtec", "bop", "coco")

T = TypeVar("T")


def export_run(run: Path, fmt: str, out: Path, progress: bool = True) -> dict[str, Any]:
    """Export the run directory ``run`` as ``fmt`` (one of ``FORMATS``) into the new
    directory ``out``; returns a summary: ``format``, ``out`` and the counts written.

    Raises SpecError for an unknown format (or a missing package the format needs) and
    RunDirError when ``run`` is not a twincell run directory, ``out`` exists and is not an
    empty directory, or the run cannot be written in that format; all before writing.
    Failed samples (``rundir.is_failed``) are skipped.
    """
    run, out = Path(run), Path(out)
    if fmt not in FORMATS:
        raise SpecError(f"--format: unknown {fmt!r}; {allowed(fmt, FORMATS)}")
    _check_run(run)
    _check_out(out)
    records = list(sample_records(run / "samples.jsonl"))
    if not records:
        raise RunDirError(f"RUN {run}: the run has no samples with images to export")
    writer: Any = importlib.import_module(f"scenarios.export.{fmt}")
    writer.check(run, records)
    with atomic_dir(out) as tmp:
        counts = writer.write(run, records, tmp, progress)
    log.info("exported %s as %s into %s: %s", run, fmt, out, counts)
    return {"format": fmt, "out": str(out), **counts}


def _check_run(run: Path) -> None:
    """RunDirError unless ``run`` holds a twincell run (a manifest and samples.jsonl)."""
    if not run.is_dir():
        raise RunDirError(f"RUN {run}: not a directory; pass the --out directory of a twincell run")
    try:
        manifest = read_manifest(run)
    except RunDirError:  # its message speaks of resuming a run into --out: not the case here
        raise RunDirError(
            f"RUN {run}: manifest.json is damaged, so this is not a readable twincell run directory"
        ) from None
    if manifest is None:
        raise RunDirError(
            f"RUN {run}: not a twincell run directory (no manifest.json); "
            "pass the --out directory of `twincell run`"
        )
    if not (run / "samples.jsonl").is_file():
        raise RunDirError(f"RUN {run}: no samples.jsonl; the run has written no samples yet")
    status = manifest.get("status")
    if status not in ("complete", "unscored"):
        log.warning("RUN %s: the run's status is %r; exporting the samples it has", run, status)


def _check_out(out: Path) -> None:
    """RunDirError when ``out`` exists and is anything but an empty directory."""
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise RunDirError(f"--out {out}: exists and is not a directory; choose a new directory")
    if out.is_dir() and any(out.iterdir()):
        raise RunDirError(
            f"--out {out}: exists and is not empty; choose a new or an empty directory"
        )


def iter_progress(items: Iterable[T], total: int, desc: str, progress: bool) -> Iterator[T]:
    """``items`` with a tqdm bar over ``total`` (none when ``progress`` is False)."""
    from tqdm import tqdm

    yield from tqdm(items, total=total, desc=desc, unit="sample", disable=not progress)


def sample_dir(run: Path, record: dict[str, Any]) -> Path:
    """The directory of a sample's files in ``run`` (RunDirError when it is missing)."""
    d = run / "samples" / record["id"]
    if not d.is_dir():
        raise RunDirError(f"RUN {run}: sample directory samples/{record['id']} is missing")
    return d


def visible_kinds(record: dict[str, Any]) -> list[str]:
    """Sorted defect kinds of a sample that show in its image (``visible_px`` > 0; a defect
    record without ``visible_px`` counts as visible)."""
    return sorted(
        {
            d["kind"]
            for d in record.get("defects") or []
            if d.get("visible_px") is None or d["visible_px"] > 0
        }
    )


def run_kinds(records: Sequence[dict[str, Any]]) -> list[str]:
    """Sorted defect kinds of all the run's parts (visible or not): stable category names."""
    return sorted({d["kind"] for r in records for d in r.get("defects") or []})
