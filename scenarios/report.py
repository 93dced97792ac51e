"""The human report of a run: metrics table, run summary and figures, as Markdown and HTML.

Figures are PNGs under ``<out>/figures/``: a gallery with one row per shown test sample
(real | twin | ground truth | one anomaly map per detector) and the viewpoint set.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display: always render to files
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from detectors.decisions import PartCurve  # noqa: E402
from scenarios.engine import NO_TRUTH  # noqa: E402
from scenarios.metrics import METRIC_NAMES, PART_METRIC_NAMES  # noqa: E402
from scenarios.rundir import (  # noqa: E402
    load_mask,
    load_part,
    load_png,
    part_records,
    sample_records,
    summary,
    write_bytes,
    write_text,
)

GALLERY_ROWS = 8
#: Test parts shown in the 3D figure, and the points drawn of each cloud.
POINT_ROWS = 4
POINT_SHOWN = 12_000


def _fmt(v: float) -> str:
    return "n/a" if v is None or not np.isfinite(v) else f"{100 * v:.1f}"


def _pick_gallery(records: list[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    """Anomalous test samples covering every visible defect kind first, then normals."""
    test = [r for r in records if r["split"] == "test"]
    chosen: list[dict[str, Any]] = []
    seen: set[str] = set()
    for r in sorted(test, key=lambda r: -sum(d["visible_px"] for d in r["defects"])):
        kinds = {d["kind"] for d in r["defects"] if d["visible_px"] > 0}
        if r["label"] and not kinds <= seen:
            chosen.append(r)
            seen |= kinds
    for r in test:
        if len(chosen) >= n - 2:
            break
        if r["label"] and r not in chosen:
            chosen.append(r)
    chosen += [r for r in test if not r["label"]][: max(0, n - len(chosen))]
    return chosen[:n]


def save_figure(fig: Any, path: Path) -> None:
    """Write ``fig`` to ``path`` as a PNG (80 dpi, atomically) and close it."""
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
    plt.close(fig)
    write_bytes(path, buf.getvalue())


def gallery_figure(out: Path, records: list[dict[str, Any]], detectors: list[str]) -> Path:
    """Save the sample gallery; each detector's maps share one colour scale."""
    rows = _pick_gallery(records, GALLERY_ROWS)
    maps = {
        d: [np.load(out / "predictions" / d / f"{r['id']}.npy") for r in rows] for d in detectors
    }
    # One scale per detector: its 99.5th percentile over the shown maps (display only).
    vmax = {
        d: float(np.percentile(np.concatenate([m.ravel() for m in ms]), 99.5)) or 1.0
        for d, ms in maps.items()
    }
    ncol = 3 + len(detectors)
    fig, axes = plt.subplots(len(rows), ncol, figsize=(2.2 * ncol, 2.3 * len(rows)), squeeze=False)
    for i, r in enumerate(rows):
        d = out / "samples" / r["id"]
        real = load_png(d / "real.png")
        overlay = real.copy()
        if (d / "gt_mask.png").exists():
            gt = load_mask(d / "gt_mask.png")
            overlay[gt] = (0.4 * overlay[gt] + 0.6 * np.array([255, 0, 0])).astype(np.uint8)
            visible = {x["kind"] for x in r["defects"] if x.get("visible_px", 0) > 0}
            named = ",".join(sorted(visible)) or ("defect" if r["label"] else "normal")
            truth = f"ground truth\n{named}"
        else:  # a hardware recording
            truth = "no ground truth\n(recorded)"
        panels = [
            (real, f"{r['id']}\nreal"),
            (load_png(d / "twin.png"), "twin"),
            (overlay, truth),
        ]
        for j, (img, title) in enumerate(panels):
            axes[i, j].imshow(img)
            axes[i, j].set_title(title, fontsize=7)
        for j, det in enumerate(detectors):
            axes[i, 3 + j].imshow(maps[det][i], cmap="inferno", vmin=0.0, vmax=vmax[det])
            axes[i, 3 + j].set_title(det, fontsize=7)
    for ax in axes.ravel():
        ax.axis("off")
    path = out / "figures" / "gallery.png"
    save_figure(fig, path)
    return path


def viewpoint_figure(out: Path, captured: np.ndarray, dropped: list[dict[str, Any]]) -> Path:
    """Camera positions relative to each part, captured (blue) and dropped (red), top view.

    ``captured`` is (N, 3) float64 camera positions in each part's object frame (metres).
    """
    fig, ax = plt.subplots(figsize=(4.2, 4.2))
    ok = np.asarray(captured, dtype=np.float64).reshape(-1, 3)
    bad = np.asarray(
        [np.asarray(d["T_obj_cam_planned"])[:3, 3] for d in dropped], dtype=np.float64
    ).reshape(-1, 3)
    ax.scatter(ok[:, 0], ok[:, 1], s=10, c="tab:blue", label=f"captured ({len(ok)})")
    ax.scatter(bad[:, 0], bad[:, 1], s=30, c="tab:red", marker="x", label=f"dropped ({len(bad)})")
    ax.set_aspect("equal")
    ax.set_xlabel("x (m, object frame)")
    ax.set_ylabel("y (m, object frame)")
    ax.legend(fontsize=7, loc="upper right")
    ax.set_title("camera positions around each part", fontsize=9)
    path = out / "figures" / "viewpoints.png"
    save_figure(fig, path)
    return path


def polar_views(
    ax: Any, rows: Sequence[Mapping[str, Any]], metric: str, title: str, vmin: float = 0.5
) -> Any:
    """Draw per-viewpoint ``metric`` values on polar axes ``ax``: the angle is the view's
    azimuth (in the frame of its row's ``frame``, see ``engine.view_metrics``), the radius
    its angle from the zenith (90 deg - elevation: the centre looks straight down), the
    colour the metric from ``vmin`` (red; chance for an AUROC, and anything below) to 1
    (green); grey where it is undefined (the view lacks a class). Returns the scatter (for
    a colour bar)."""
    az = np.radians([float(r["azimuth_deg"]) for r in rows])
    zen = [90.0 - float(r["elevation_deg"]) for r in rows]
    vals = np.array(
        [np.nan if r.get(metric) is None else float(r[metric]) for r in rows], dtype=np.float64
    )
    ok = np.isfinite(vals)
    ax.scatter(az[~ok], np.asarray(zen)[~ok], s=40, c="lightgrey", edgecolors="grey")
    sc = ax.scatter(
        az[ok],
        np.asarray(zen)[ok],
        s=60,
        c=vals[ok],
        cmap="RdYlGn",
        vmin=vmin,
        vmax=1.0,
        edgecolors="black",
        linewidths=0.4,
    )
    ax.set_ylim(0, 90)
    ax.set_yticks([30, 60, 90])
    ax.set_yticklabels(["60°", "30°", ""], fontsize=6)  # elevation at those radii
    ax.set_rlabel_position(250)  # clear of the azimuth labels
    ax.tick_params(axis="x", labelsize=6, pad=0)
    ax.set_title(title, fontsize=8, pad=14)
    return sc


def view_metric_figure(
    rows_by_detector: Mapping[str, Sequence[Mapping[str, Any]]], metric: str, path: Path
) -> Path:
    """One polar panel per detector of its per-viewpoint ``metric`` (``polar_views``)."""
    dets = list(rows_by_detector)
    fig, axes = plt.subplots(
        1,
        len(dets),
        figsize=(3.0 * len(dets), 3.3),
        squeeze=False,
        subplot_kw={"projection": "polar"},
    )
    sc = None
    for ax, d in zip(axes[0], dets, strict=True):
        sc = polar_views(ax, rows_by_detector[d], metric, d)
    if sc is not None:
        fig.colorbar(sc, ax=axes[0].tolist(), shrink=0.7, label=metric)
    save_figure(fig, path)
    return path


def plot_part_curves(curves: Mapping[str, PartCurve], path: str | Path) -> None:
    """Save a PNG of TPR (full) and TNR (dashed) against the threshold, one panel per
    decision rule, like the paper's Figure 6; ``t_max`` is a dotted vertical line and
    ``dt`` is given in the panel title. Written atomically (temporary file + rename).

    curves : rule name -> its ``PartCurve``, in panel order. The -inf threshold is drawn
    just left of the lowest finite one.
    """
    if not curves:
        raise ValueError("no curves to plot")
    import io

    from matplotlib.figure import Figure

    n = len(curves)
    fig = Figure(figsize=(4.0 * n, 3.2), layout="constrained")
    axes = fig.subplots(1, n, sharey=True, squeeze=False)[0]
    for ax, (name, c) in zip(axes, curves.items(), strict=True):
        finite = c.thresholds[np.isfinite(c.thresholds)]
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        pad = 0.05 * (hi - lo) if hi > lo else 1.0
        x = np.clip(c.thresholds, lo - pad, hi + pad)
        # Step plots hold each rate from its threshold up to the next (score > T is
        # constant on [t_i, t_i+1)); one extra point draws the last step.
        xs = np.append(x, hi + pad)
        ax.step(xs, np.append(c.tpr, c.tpr[-1]), where="post", color="C0", label="TPR")
        ax.step(xs, np.append(c.tnr, c.tnr[-1]), where="post", color="C1", ls="--", label="TNR")
        if math.isfinite(c.t_max):
            ax.axvline(c.t_max, color="k", ls=":", lw=1, label="$T_{max}$")
        elif c.t_max == -math.inf:
            ax.axvline(lo - pad, color="k", ls=":", lw=1, label="$T_{max}$")
        ax.set_title(f"{name}: $T_{{max}}$ = {c.t_max:.3g}, $D_T$ = {c.dt:.2f}", fontsize=9)
        ax.set_xlabel("threshold")
        ax.set_ylim(-0.03, 1.03)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("rate")
    axes[0].legend(loc="lower left", fontsize=8)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    write_bytes(Path(path), buf.getvalue())


def _relative(T_base_obj: Any, T_base_cam: Any) -> np.ndarray:
    """(3,) camera position in the object frame, from two 4 x 4 poses (nested lists)."""
    return np.asarray((np.linalg.inv(np.asarray(T_base_obj)) @ np.asarray(T_base_cam))[:3, 3])


def _read_index(
    out: Path,
) -> tuple[list[dict[str, Any]], np.ndarray, dict[str, dict[str, Any]]]:
    """Sample summaries, (N, 3) camera positions in the object frame and each part's
    acquisition record, read line by line from samples.jsonl so a large run's records
    never sit in memory together."""
    summaries, positions = [], []
    parts: dict[str, dict[str, Any]] = {}
    for r in sample_records(out / "samples.jsonl"):
        summaries.append(summary(r))
        if r.get("T_base_obj") is not None:  # unknown where a cell cannot know it
            positions.append(_relative(r["T_base_obj"], r["T_base_cam"]))
        parts.setdefault(r["part_id"], {**r.get("acquisition", {}), "category": r["category"]})
    return summaries, np.asarray(positions, dtype=np.float64).reshape(-1, 3), parts


def _curve(entry: dict[str, Any]) -> PartCurve:
    """A part curve back from metrics.json (None stands for an infinite threshold)."""
    t = np.array([-np.inf if x is None else x for x in entry["thresholds"]], dtype=np.float64)
    tpr = np.array([np.nan if x is None else x for x in entry["tpr"]], dtype=np.float64)
    tnr = np.array([np.nan if x is None else x for x in entry["tnr"]], dtype=np.float64)
    t_max = -np.inf if entry["t_max"] is None else float(entry["t_max"])
    dt = np.nan if entry["dt"] is None else float(entry["dt"])
    return PartCurve(t, tpr, tnr, dt=dt, t_max=t_max)


def _part_section(out: Path, parts: dict[str, dict[str, Any]]) -> tuple[list[str], str]:
    """Markdown lines and HTML of the whole-part decisions: DT per detector and rule, and
    each detector's TPR/TNR curves (``figures/parts_<detector>.png``)."""
    dets = [d for d, rules in parts.items() if rules]
    if not dets:
        return [], ""
    rules = list(next(iter(parts[d] for d in dets)))
    first = parts[dets[0]][rules[0]]
    intro = (
        f"{first['n_parts']} test parts ({first['n_anomalous']} anomalous). A part fires when "
        "at least k of its views do; D_T is the part TNR at the highest threshold that still "
        "finds every anomalous part (the PaDiM paper's metric)."
    )
    header = ["detector", *[f"D_T {r}" for r in rules]]
    rows = [
        [d, *[_fmt(parts[d][r]["dt"]) if r in parts[d] else "n/a" for r in rules]] for d in dets
    ]
    md = ["## Part decisions", "", intro, ""]
    md += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    md += ["| " + " | ".join(r) + " |" for r in rows]
    md.append("")
    html_figs = ""
    for d in dets:
        path = out / "figures" / f"parts_{d}.png"
        plot_part_curves({r: _curve(parts[d][r]) for r in parts[d]}, path)
        rel = path.relative_to(out).as_posix()
        md += [f"![{d} part decisions]({rel})", ""]
        html_figs += f'<p>{html.escape(d)}</p><img src="{rel}" alt="{html.escape(d)}">'
    head = "".join(f"<th>{html.escape(c)}</th>" for c in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows
    )
    page = (
        f"<h2>Part decisions</h2><p>{html.escape(intro)}</p>"
        f"<table><tr>{head}</tr>{body}</table>{html_figs}"
    )
    return md, page


def _pick_parts(parts: list[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    """Test parts for the 3D figure: anomalous ones of different families and defect kinds
    first (most defect points first), then one normal."""
    test = [p for p in parts if p["split"] == "test"]
    chosen: list[dict[str, Any]] = []
    seen: set[tuple[str, str]] = set()
    for p in sorted(test, key=lambda p: -(p.get("n_defect_points") or 0)):
        key = (p["category"], ",".join(sorted(d["kind"] for d in p.get("defects", []))))
        if p["label"] and key not in seen and len(chosen) < n - 1:
            chosen.append(p)
            seen.add(key)
    chosen += [p for p in test if not p["label"]][:1]
    chosen += [p for p in test if p["label"] and p not in chosen]
    return chosen[:n]


def point_figure(out: Path, parts: list[dict[str, Any]], detectors: list[str]) -> Path | None:
    """3D scatter of a few test parts' fused clouds: ground truth (defect points red), then
    each part-level detector's point scores (one colour scale per detector: its 99.5th
    percentile over the shown parts). None when no test part has a cloud."""
    rows = _pick_parts(parts, POINT_ROWS)
    if not rows:
        return None
    clouds = [load_part(out, p) for p in rows]
    scores = {
        d: [np.load(out / "predictions" / d / f"{p['id']}.npy") for p in rows] for d in detectors
    }
    vmax = {d: float(np.percentile(np.concatenate(v), 99.5)) or 1.0 for d, v in scores.items()}
    ncol = 1 + len(detectors)
    fig = plt.figure(figsize=(3.0 * ncol, 2.9 * len(rows)))
    for i, (p, cloud) in enumerate(zip(rows, clouds, strict=True)):
        P = cloud.points
        # The same seeded subset in every panel of a row; defect points always drawn.
        rng = np.random.default_rng(i)
        labels = np.zeros(len(P), bool) if cloud.gt_point_labels is None else cloud.gt_point_labels
        keep = rng.permutation(len(P))[:POINT_SHOWN]
        keep = np.union1d(keep, np.flatnonzero(labels))
        Q = (P[keep] - P.mean(axis=0)) * 1000.0
        kinds = ",".join(sorted(d["kind"] for d in p.get("defects", []))) or "normal"
        truth = f"ground truth: {kinds}" if p["label"] is not None else "no ground truth"
        panels: list[tuple[str, Any, Any]] = [
            (f"{p['id']} {p['category']}\n{truth}", labels[keep], None)
        ]
        panels += [(d, scores[d][i][keep], vmax[d]) for d in detectors]
        for j, (title, values, vm) in enumerate(panels):
            ax = fig.add_subplot(len(rows), ncol, i * ncol + j + 1, projection="3d")
            if vm is None:
                colors = np.where(values[:, None], [[0.85, 0.1, 0.1]], [[0.55, 0.65, 0.8]])
                order = np.argsort(values)  # defect points drawn last, on top
                ax.scatter(*Q[order].T, c=colors[order], s=0.3, depthshade=False)
            else:
                order = np.argsort(values)
                ax.scatter(
                    *Q[order].T,
                    c=values[order],
                    cmap="inferno",
                    vmin=0.0,
                    vmax=vm,
                    s=0.3,
                    depthshade=False,
                )
            ax.view_init(elev=55, azim=-60)
            ax.set_box_aspect(np.ptp(Q, axis=0) + 1e-9)
            ax.set_axis_off()
            ax.set_title(title, fontsize=7)
    path = out / "figures" / "points.png"
    save_figure(fig, path)
    return path


def _points_section(
    out: Path,
    metrics: dict[str, Any],
    families: dict[str, Any],
    parts: list[dict[str, Any]],
) -> tuple[list[str], str]:
    """Markdown lines and HTML of the part-level (3D) detectors: the metric table, the
    per-family table and the point-score figure; nothing when the run has none."""
    dets = list(metrics)
    if not dets:
        return [], ""
    test = [p for p in parts if p["split"] == "test"]
    n_anom = sum(int(p["label"] or 0) for p in test)
    intro = (
        f"Part-level detectors score each part's fused point cloud: {len(test)} test parts "
        f"({n_anom} anomalous: a point of the fused cloud lies on a defect). o_auroc, o_ap "
        "over the parts; p_auroc, p_ap over every point of every test part (%)."
    )
    header = ["detector", *PART_METRIC_NAMES]
    table = [[d] + [_fmt(metrics[d].get(m)) for m in PART_METRIC_NAMES] for d in dets]
    fams = sorted({f for d in dets for f in families.get(d, {})})
    fam_header = ["family", *[f"{d} O / P-AUROC" for d in dets]]
    fam_rows = [
        [f]
        + [
            f"{_fmt(families[d][f]['o_auroc'])} / {_fmt(families[d][f]['p_auroc'])}"
            if f in families.get(d, {})
            else "n/a"
            for d in dets
        ]
        for f in fams
    ]
    figure = point_figure(out, parts, dets) if test else None
    md = ["## 3D: part-level detectors", "", intro, ""]
    md += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    md += ["| " + " | ".join(r) + " |" for r in table]
    if fam_rows:
        md += ["", "Per family (O-ROC / P-ROC, %):", ""]
        md += ["| " + " | ".join(fam_header) + " |", "|" + "---|" * len(fam_header)]
        md += ["| " + " | ".join(r) + " |" for r in fam_rows]
    if figure is not None:
        rel = figure.relative_to(out).as_posix()
        md += ["", "ground truth (defect points red) | point scores per detector", ""]
        md += [f"![point scores]({rel})"]
    md.append("")

    def html_table(head: list[str], rows: list[list[str]]) -> str:
        h = "".join(f"<th>{html.escape(c)}</th>" for c in head)
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows
        )
        return f"<table><tr>{h}</tr>{body}</table>"

    page = f"<h2>3D: part-level detectors</h2><p>{html.escape(intro)}</p>"
    page += html_table(header, table)
    if fam_rows:
        page += "<p>Per family (O-ROC / P-ROC, %):</p>" + html_table(fam_header, fam_rows)
    if figure is not None:
        rel = figure.relative_to(out).as_posix()
        page += (
            "<p>ground truth (defect points red) | point scores per detector</p>"
            f'<img src="{rel}" alt="point scores">'
        )
    return md, page


def _weights_text(w: dict[str, Any]) -> str:
    """One detector's weights in a few words: none, seeded random, or file and checksum."""
    if not w:
        return "none (no learned weights)"
    if w.get("source") == "random":
        return f"{w['backbone']}, random (seed {w['seed']})"
    return f"{w['backbone']}, {Path(w['path']).name} (sha256 {w['sha256'][:12]})"


def _spread(values: list[float], unit: str, nd: int = 2) -> str:
    """``median m unit (p95 q, max x)`` of ``values`` (errors: large is bad)."""
    a = np.asarray(values, dtype=np.float64)
    q = np.percentile(a, [50, 95])
    return f"median {q[0]:.{nd}f} {unit} (p95 {q[1]:.{nd}f}, max {a.max():.{nd}f})"


def acquisition_lines(
    cell: dict[str, Any], parts: dict[str, dict[str, Any]]
) -> list[tuple[str, str]]:
    """What the cell's acquisition measured, as (label, text) lines: the hand-eye
    calibration's error and, per part family, the object pose estimates' errors."""
    lines = []
    he = cell.get("hand_eye")
    if he:
        lines.append(
            (
                "hand-eye calibration",
                f"{he['method']}, {he['poses']} poses ({he['rejected']} rejected), "
                f"reprojection {he['reprojection_px']:.2f} px: error "
                f"{he['translation_error_mm']:.3f} mm, {he['rotation_error_deg']:.3f} deg",
            )
        )
    by_family: dict[str, list[dict[str, Any]]] = {}
    for p in parts.values():
        if "pose_estimate" in p:
            by_family.setdefault(p["category"], []).append(p["pose_estimate"])
    for family, ests in sorted(by_family.items()):
        lines.append(
            (
                f"pose estimate, {family} ({len(ests)} parts)",
                f"ADD-S {_spread([e['add_s_mm'] for e in ests], 'mm')}; "
                f"ADD {_spread([e.get('add_mm', float('nan')) for e in ests], 'mm')}; translation "
                f"{_spread([e['translation_mm'] for e in ests], 'mm')}; rotation "
                f"{_spread([e['rotation_deg'] for e in ests], 'deg', 1)}; silhouette IoU "
                f"median {np.median([e['iou'] for e in ests]):.3f} "
                f"(min {min(e['iou'] for e in ests):.3f})",
            )
        )
    return lines


def _test_pairs(counts: dict[str, Any]) -> str:
    """'N (A anomalous)', with the pairs recorded without ground truth said apart."""
    labelled = counts.get("test_normal", 0) + counts.get("test_anomalous", 0)
    text = f"{labelled} ({counts.get('test_anomalous', 0)} anomalous)"
    unlabelled = counts.get("test_unlabelled", 0)
    if unlabelled and not labelled:
        return f"{unlabelled}, recorded without ground truth"
    return f"{text} and {unlabelled} without ground truth" if unlabelled else text


def write_report(out: Path) -> None:
    """Write ``report.md`` and ``report.html`` (with figures) for a finished run."""
    manifest = json.loads((out / "manifest.json").read_text())
    all_metrics = json.loads((out / "metrics.json").read_text())
    levels = all_metrics.get("levels", {})
    metrics = {d: m for d, m in all_metrics["detectors"].items() if levels.get(d, "view") == "view"}
    point_metrics = {
        d: m for d, m in all_metrics["detectors"].items() if levels.get(d, "view") == "part"
    }
    records, positions, parts = _read_index(out)
    part_metrics = all_metrics.get("parts", {})
    part_md, part_html = _part_section(out, part_metrics)
    points_md, points_html = _points_section(
        out, point_metrics, all_metrics.get("families", {}), part_records(out)
    )
    acquisition = acquisition_lines(manifest.get("cell", {}), parts)
    dets = list(metrics)
    dropped = manifest.get("dropped_viewpoints", {}).get("items", [])
    failed = manifest.get("failed_samples", {}).get("items", [])
    has_test = any(r["split"] == "test" for r in records)
    gallery = gallery_figure(out, records, dets) if has_test else None
    views = viewpoint_figure(out, positions, dropped)
    by_view = {d: rows for d, rows in all_metrics.get("views", {}).items() if rows}
    polar = (
        view_metric_figure(by_view, "p_auroc", out / "figures" / "by_view.png") if by_view else None
    )
    polar_intro = (
        "Pixel AUROC of each detector at each viewpoint on its own. The angle is the "
        "azimuth of the direction from the part to the camera, in the frame the cell fixes "
        "its views in (the robot base's axes for the eye-in-hand cell, the part's own for "
        "part-in-hand); the distance from the centre is the angle from straight above "
        "(rings at 60 and 30 deg elevation, the rim at 0). Red views are where a detector "
        "fails (at or below chance, 0.5), grey ones have no anomalous pixel. "
        "metrics.json (`views`) has the values, with image AUROC and AUPRO."
    )
    unscored = manifest.get("unscored_reason", "")
    why = (
        f"This run is not scored: {unscored}. Metrics that need the missing class are n/a; "
        "change the split, the viewpoints or the placement so the test split holds both "
        "normal and anomalous pairs."
        if unscored
        else ""
    )
    if unscored == NO_TRUTH:
        why = (
            "This run is not scored: it was recorded without ground truth (hardware), so "
            "every metric that needs labels is n/a. The score statistics below need none. "
            "To score it, draw defect masks (<sample id>.png, non-zero = defect) and replay "
            "the run with cell.replay.masks (docs/hardware.md)."
        )
    sc = manifest["scenario"]
    counts = manifest.get("counts", {})

    header = ["detector", *METRIC_NAMES]
    table = [header] + [[d] + [_fmt(metrics[d][m]) for m in METRIC_NAMES] for d in dets]
    summary = [
        ("scenario", f"{sc['name']} (seed {manifest['seed']}, digest {manifest['digest']})"),
        ("training pairs", str(counts.get("train", "?"))),
        ("test pairs", _test_pairs(counts)),
        (
            "visible defect kinds (test)",
            ", ".join(f"{k}: {v}" for k, v in counts.get("visible_defect_kinds", {}).items())
            or "none",
        ),
        (
            "detector weights",
            "; ".join(
                f"{name}: {_weights_text(w)}"
                for name, w in manifest.get("detector_weights", {}).items()
            )
            or "n/a",
        ),
        ("dropped viewpoints", str(len(dropped))),
        ("failed samples (render)", str(len(failed))),
    ]
    if unscored == NO_TRUTH:  # what needs no ground truth: each detector's score spread
        summary += [
            (
                f"scores of {k} (no ground truth needed)",
                f"n {v.get('n', 0)}"
                + "".join(f"; {m} {v[m]:.4g}" for m in ("mean", "median", "p95", "max") if m in v),
            )
            for k, v in all_metrics.get("scores", {}).items()
        ]
    md = [f"# twincell run: {sc['name']}", "", sc.get("description", ""), ""]
    if why:
        md += [f"> **Not scored.** {why}", ""]
    md += [f"- **{k}**: {v}" for k, v in summary]
    md += [
        "",
        "## Metrics (%)",
        "",
        "Image level: i_auroc, i_ap, i_f1max; pixel level over all pixels of all test "
        "images: p_auroc, p_ap, p_f1max; aupro integrated to FPR 0.3.",
        "",
    ]
    if dets:
        md += ["| " + " | ".join(table[0]) + " |", "|" + "---|" * len(header)]
        md += ["| " + " | ".join(row) + " |" for row in table[1:]]
    else:
        md += ["No view-level detector in this run (the 3D section below has the others)."]
    md += ["", "## Samples", ""]
    if gallery is not None:
        md += [
            "real | twin | ground truth (red) | anomaly maps (one colour scale per detector)",
            "",
            f"![gallery]({gallery.relative_to(out).as_posix()})",
        ]
    else:
        md += ["No test pair was captured: there is nothing to show."]
    md += [
        "",
        "## Viewpoints",
        "",
        f"![viewpoints]({views.relative_to(out).as_posix()})",
        "",
    ]
    if polar is not None:
        md += [
            "## By viewpoint",
            "",
            polar_intro,
            "",
            f"![by viewpoint]({polar.relative_to(out).as_posix()})",
            "",
        ]
    md += part_md
    md += points_md
    if acquisition:
        md += ["## Acquisition", ""]
        md += [
            "Errors of what the cell measured against the simulator's truth. ADD is the mean "
            "distance between the model's points under the true and the estimated pose; "
            "ADD-S, to the nearest model point, counts a symmetric part's equivalent turns "
            "as right (read it for symmetric parts, ADD for the others); rotation counts "
            "them as wrong.",
            "",
        ]
        md += [f"- **{k}**: {v}" for k, v in acquisition]
        md.append("")
    if dropped:
        md += ["Dropped viewpoints:", ""]
        md += [f"- {d['part_id']} view {d['view_id']}: {d['reason']}" for d in dropped]
        md.append("")
    if failed:
        md += ["## Failed samples", ""]
        md += ["The render of these pairs failed; they are left out of every metric.", ""]
        md += [f"- {f['id']} ({f['split']}): {f['reason']}" for f in failed]
        md.append("")
    write_text(out / "report.md", "\n".join(md))

    rows_html = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in table[1:]
    )
    head_html = "".join(f"<th>{html.escape(c)}</th>" for c in header)
    summary_html = "".join(
        f"<li><b>{html.escape(k)}</b>: {html.escape(v)}</li>" for k, v in summary
    )
    dropped_html = "".join(
        f"<li>{html.escape(d['part_id'])} view {d['view_id']}: {html.escape(d['reason'])}</li>"
        for d in dropped
    )
    failed_html = (
        "<h2>Failed samples</h2><p>The render of these pairs failed; they are left out of "
        "every metric.</p><ul>"
        + "".join(
            f"<li>{html.escape(f['id'])} ({html.escape(f['split'])}): "
            f"{html.escape(f['reason'])}</li>"
            for f in failed
        )
        + "</ul>"
        if failed
        else ""
    )
    gallery_html = (
        "<p>real | twin | ground truth (red) | anomaly maps</p>"
        f'<img src="{gallery.relative_to(out).as_posix()}" alt="gallery">'
        if gallery is not None
        else "<p>No test pair was captured: there is nothing to show.</p>"
    )
    why_html = f'<p class="warn"><b>Not scored.</b> {html.escape(why)}</p>' if why else ""
    acquisition_html = (
        "<h2>Acquisition</h2><p>Errors of what the cell measured against the simulator's "
        "truth. ADD: mean distance between the model's points under the true and the "
        "estimated pose; ADD-S: to the nearest model point (a symmetric part's equivalent "
        "turns count as right: read it for symmetric parts, ADD for the others).</p><ul>"
        + "".join(f"<li><b>{html.escape(k)}</b>: {html.escape(v)}</li>" for k, v in acquisition)
        + "</ul>"
        if acquisition
        else ""
    )
    polar_html = (
        f"<h2>By viewpoint</h2><p>{html.escape(polar_intro)}</p>"
        f'<img src="{polar.relative_to(out).as_posix()}" alt="metrics by viewpoint">'
        if polar is not None
        else ""
    )
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>twincell run: {html.escape(sc["name"])}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}
td:first-child{{text-align:left}}img{{max-width:100%}}
.warn{{background:#fff3cd;border:1px solid #e0c36a;padding:8px}}</style></head><body>
<h1>twincell run: {html.escape(sc["name"])}</h1><p>{html.escape(sc.get("description", ""))}</p>
{why_html}<ul>{summary_html}</ul>
<h2>Metrics (%)</h2><table><tr>{head_html}</tr>{rows_html}</table>
<h2>Samples</h2>{gallery_html}
{part_html}
{points_html}
<h2>Viewpoints</h2><img src="{views.relative_to(out).as_posix()}" alt="viewpoints">
<ul>{dropped_html}</ul>
{polar_html}
{acquisition_html}
{failed_html}
</body></html>
"""
    write_text(out / "report.html", page)
