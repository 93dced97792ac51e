"""A study's results: one table of every cell's metrics (CSV and Parquet), one of every
cell's per-viewpoint metrics, the plots, and ``report.html`` / ``report.md``.

The tables are long in cells and wide in metrics: one row per (cell, detector) with the
cell's seed, each axis's value, the detector's level, how the cell ended and every metric
(``METRIC_NAMES`` for a view-level detector, ``PART_METRIC_NAMES`` for a part-level one;
empty where undefined or the cell failed). ``views`` has one row per (cell, detector,
viewpoint). Both are read from the cells' ``metrics.json``: the run directories are the
truth, the tables a summary a rerun rebuilds.

Plots: for each axis, each metric against the axis's values, one line per detector (the
mean over seeds) and a band from the lowest to the highest seed's value (with few seeds a
standard deviation says little; the range shows every seed). In a grid, each combination
of the other axes' values is its own column of panels (up to ``MAX_PANEL_COLUMNS``, past
that the mean over them). For a view-level detector, a polar plot of its pixel AUROC at
each viewpoint at the lowest and the highest value of each axis (mean over seeds and, in a
grid, the other axes), so a user sees from where it fails as the axis grows.
"""

from __future__ import annotations

import csv
import html
import io
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display: always render to files
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from scenarios.engine import mean_direction_deg  # noqa: E402
from scenarios.metrics import METRIC_NAMES, PART_METRIC_NAMES  # noqa: E402
from scenarios.report import polar_views, save_figure  # noqa: E402
from scenarios.rundir import write_bytes, write_text  # noqa: E402
from scenarios.study import DONE, STUDY_FILE, Study  # noqa: E402

#: Metrics plotted against each axis, by detector level (all are in the tables).
PLOT_METRICS = {"view": ("i_auroc", "p_auroc", "aupro"), "part": ("o_auroc", "p_auroc")}
MAX_PANEL_COLUMNS = 4
#: Columns of the tables whose type does not depend on the values.
FLOAT_COLUMNS = frozenset(
    {*METRIC_NAMES, *PART_METRIC_NAMES, "seconds", "elevation_deg", "azimuth_deg"}
)
INT_COLUMNS = frozenset({"cell", "seed", "pairs", "view_id", "n_normal", "n_anomalous"})
RESULTS = "results"
VIEWS = "views"


def _column_value(v: Any) -> Any:
    """An axis value as a table cell: numbers and text as they are, anything else as JSON."""
    if v is None or isinstance(v, bool | int | float | str):
        return v
    return json.dumps(v, sort_keys=True)


def collect(out: Path, study: Study) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(results rows, views rows) of the study in ``out`` (see the module docstring)."""
    record = json.loads((out / STUDY_FILE).read_text())
    by_cell = {c["cell"]: c for c in record["cells"]}
    rows: list[dict[str, Any]] = []
    view_rows: list[dict[str, Any]] = []
    for cell in study.cells:
        info = by_cell.get(cell.index, {})
        status = info.get("status", "pending")
        base = {
            "cell": cell.index,
            "run": f"cells/{cell.dirname}",
            "seed": cell.seed,
            **{axis: _column_value(v) for axis, v in cell.values.items()},
            "varied": cell.varied,
            "status": status,
            "seconds": info.get("seconds"),
            "pairs": info.get("pairs"),
        }
        metrics: dict[str, Any] = {}
        if status in DONE:
            try:
                metrics = json.loads((out / base["run"] / "metrics.json").read_text())
            except (OSError, ValueError):
                metrics = {}
        levels = metrics.get("levels", {})
        for det in cell.scenario.detectors:
            import detectors

            level = levels.get(det.key) or detectors.level(det.name)
            values = metrics.get("detectors", {}).get(det.key, {})
            row = {**base, "detector": det.key, "level": level}
            for m in METRIC_NAMES if level == "view" else PART_METRIC_NAMES:
                row[m] = values.get(m)
            if status == "failed":
                row["error"] = info.get("error", "")
            rows.append(row)
            for v in metrics.get("views", {}).get(det.key, []):
                view_rows.append({**base, "detector": det.key, **v})
    return rows, view_rows


def _columns(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    cols: list[str] = []
    for r in rows:
        cols += [k for k in r if k not in cols]
    return cols


def write_table(path_stem: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    """Write ``rows`` as ``<stem>.csv`` and ``<stem>.parquet`` (atomically)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    cols = _columns(rows)
    buf = io.StringIO()
    wr = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    wr.writeheader()
    for r in rows:
        wr.writerow({k: "" if r.get(k) is None else r.get(k) for k in cols})
    write_text(path_stem.with_suffix(".csv"), buf.getvalue())
    data: dict[str, list[Any]] = {c: [r.get(c) for r in rows] for c in cols}
    arrays = {}
    for c, vals in data.items():
        present = [v for v in vals if v is not None]
        # Known columns keep their type whatever the values (a metric undefined in every
        # cell is still float64), so tables of different studies concatenate.
        if c in FLOAT_COLUMNS:
            arrays[c] = pa.array([None if v is None else float(v) for v in vals], pa.float64())
        elif c in INT_COLUMNS:
            arrays[c] = pa.array([None if v is None else int(v) for v in vals], pa.int64())
        elif present and all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in present
        ):
            if all(isinstance(v, int) for v in present):
                arrays[c] = pa.array(vals, type=pa.int64())
            else:
                arrays[c] = pa.array([None if v is None else float(v) for v in vals], pa.float64())
        elif present and all(isinstance(v, bool) for v in present):
            arrays[c] = pa.array(vals, type=pa.bool_())
        else:
            arrays[c] = pa.array([None if v is None else str(v) for v in vals], pa.string())
    sink = io.BytesIO()
    pq.write_table(pa.table(arrays) if arrays else pa.table({}), sink)
    write_bytes(path_stem.with_suffix(".parquet"), sink.getvalue())


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _axis_order(values: Sequence[Any]) -> list[Any]:
    uniq = list(dict.fromkeys(values))
    return sorted(uniq) if all(_is_number(v) for v in uniq) else uniq


def _slices(
    study: Study, axis: str, rows: Sequence[Mapping[str, Any]]
) -> list[tuple[str, list[Mapping[str, Any]]]]:
    """The rows that show ``axis``'s effect, in panels: (title, rows). One at a time: the
    cells that vary it. Grid: one panel per combination of the other axes' values (their
    mean, in one panel, past ``MAX_PANEL_COLUMNS``)."""
    if study.spec.design == "one_at_a_time":
        return [("", [r for r in rows if r["varied"] == axis])]
    others = [a for a in study.spec.axes if a != axis]
    combos = list(dict.fromkeys(tuple(r[a] for a in others) for r in rows))
    if not others or len(combos) > MAX_PANEL_COLUMNS:
        title = f"mean over {', '.join(others)}" if others else ""
        return [(title, list(rows))]
    return [
        (
            ", ".join(f"{a.split('.')[-1]}={v}" for a, v in zip(others, combo, strict=True)),
            [r for r in rows if tuple(r[a] for a in others) == combo],
        )
        for combo in combos
    ]


def _stats(
    rows: Sequence[Mapping[str, Any]], axis: str, metric: str, xs: Sequence[Any]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean, lowest and highest value of ``metric`` over the rows at each of ``xs``
    (averaging first over everything but the seed, then taking the seeds' range)."""
    mean, lo, hi = [], [], []
    for x in xs:
        per_seed: dict[int, list[float]] = {}
        for r in rows:
            v = r.get(metric)
            if r[axis] == x and v is not None and math.isfinite(v):
                per_seed.setdefault(int(r["seed"]), []).append(float(v))
        seeds = [float(np.mean(v)) for v in per_seed.values()]
        mean.append(np.mean(seeds) if seeds else np.nan)
        lo.append(np.min(seeds) if seeds else np.nan)
        hi.append(np.max(seeds) if seeds else np.nan)
    return np.array(mean), np.array(lo), np.array(hi)


def axis_figure(
    study: Study, axis: str, rows: Sequence[Mapping[str, Any]], level: str, path: Path
) -> Path | None:
    """Each metric of ``level``'s detectors against ``axis``: a line per detector (mean
    over seeds), a band over the seeds' range; None when no cell of this level finished."""
    rows = [r for r in rows if r["level"] == level and r["status"] in DONE]
    if not rows:
        return None
    metrics = PLOT_METRICS[level]
    panels = _slices(study, axis, rows)
    dets = list(dict.fromkeys(r["detector"] for r in rows))
    xs_all = _axis_order([r[axis] for r in rows])
    numeric = all(_is_number(x) for x in xs_all)
    fig, axes = plt.subplots(
        len(metrics),
        len(panels),
        figsize=(3.6 * len(panels) + 1.2, 2.4 * len(metrics)),
        squeeze=False,
        sharex=True,
        sharey="row",  # one metric, one scale across the panels
    )
    colours = plt.get_cmap("tab10")
    for j, (title, sub) in enumerate(panels):
        xs = _axis_order([r[axis] for r in sub])
        xpos = np.array(xs, dtype=float) if numeric else np.array([xs_all.index(x) for x in xs])
        for i, m in enumerate(metrics):
            ax = axes[i, j]
            for k, d in enumerate(dets):
                mean, lo, hi = _stats([r for r in sub if r["detector"] == d], axis, m, xs)
                ax.plot(xpos, mean, "o-", ms=3, lw=1.2, color=colours(k % 10), label=d)
                ax.fill_between(xpos, lo, hi, color=colours(k % 10), alpha=0.18, lw=0)
            ax.set_ylabel(m, fontsize=8)
            ax.grid(alpha=0.3)
            ax.tick_params(labelsize=7)
            if i == 0 and title:
                ax.set_title(title, fontsize=8)
            if not numeric:
                ax.set_xticks(range(len(xs_all)))
                ax.set_xticklabels([str(x) for x in xs_all], rotation=30, fontsize=7)
        axes[-1, j].set_xlabel(axis, fontsize=8)
    axes[0, -1].legend(fontsize=7, loc="best")
    n_seeds = len({r["seed"] for r in rows})
    fig.suptitle(
        f"{study.spec.name}: metrics vs {axis} (line: mean over {n_seeds} seeds; band: "
        "their range)",
        fontsize=9,
    )
    save_figure(fig, path)
    return path


def polar_figure(
    study: Study, axis: str, view_rows: Sequence[Mapping[str, Any]], path: Path
) -> Path | None:
    """Per-viewpoint pixel AUROC of each view-level detector at the two ends of ``axis``
    (the lowest and highest value of a numeric axis, the first and last listed of another;
    mean over seeds and other cells there); None without view rows."""
    if study.spec.design == "one_at_a_time":
        view_rows = [r for r in view_rows if r["varied"] == axis]
    if not view_rows:
        return None
    xs = _axis_order([r[axis] for r in view_rows])
    ends = [xs[0], xs[-1]] if len(xs) > 1 else xs[:1]
    dets = list(dict.fromkeys(r["detector"] for r in view_rows))
    fig, axes = plt.subplots(
        len(dets),
        len(ends),
        figsize=(3.0 * len(ends) + 1.0, 3.0 * len(dets)),
        squeeze=False,
        subplot_kw={"projection": "polar"},
    )
    sc = None
    for i, d in enumerate(dets):
        for j, x in enumerate(ends):
            at: dict[int, list[Mapping[str, Any]]] = {}
            for r in view_rows:
                if r["detector"] == d and r[axis] == x:
                    at.setdefault(int(r["view_id"]), []).append(r)
            merged = []
            for vid, rs in sorted(at.items()):
                vals = [r["p_auroc"] for r in rs if r.get("p_auroc") is not None]
                # A view's direction is the same in every cell (averaged, in case not quite).
                el, az = mean_direction_deg([(r["elevation_deg"], r["azimuth_deg"]) for r in rs])
                merged.append(
                    {
                        "view_id": vid,
                        "elevation_deg": el,
                        "azimuth_deg": az,
                        "p_auroc": float(np.mean(vals)) if vals else None,
                    }
                )
            sc = polar_views(axes[i, j], merged, "p_auroc", f"{d}\n{axis.split('.')[-1]} = {x}")
    fig.subplots_adjust(hspace=0.5, wspace=0.35)
    if sc is not None:
        fig.colorbar(sc, ax=axes.ravel().tolist(), shrink=0.6, label="p_auroc")
    save_figure(fig, path)
    return path


def _distinct(cells: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """One cell per run directory (cells of one scenario share a run)."""
    return list({c["run"]: c for c in cells}.values())


def _fmt_seconds(v: Any) -> str:
    return "" if v is None else f"{float(v):.0f}"


def _cell_label(c: Mapping[str, Any]) -> str:
    values = ", ".join(f"{k}={v}" for k, v in c.get("values", {}).items())
    return f"cell {c['cell']} ({values}, seed {c['seed']})"


def _fmt(v: Any) -> str:
    return "n/a" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.3f}"


def summary_table(
    study: Study, rows: Sequence[Mapping[str, Any]]
) -> tuple[list[str], list[list[str]]]:
    """The headline table: per axis value (its varied cells, or all cells there in a grid)
    and detector, the mean over seeds of each plotted metric, with the seeds' range."""
    header = ["axis", "value", "detector", "cells"]
    levels = [lv for lv in ("view", "part") if any(r["level"] == lv for r in rows)]
    metrics = list(dict.fromkeys(m for lv in levels for m in PLOT_METRICS[lv]))
    header += metrics
    body = []
    done = [r for r in rows if r["status"] in DONE]
    for axis in study.spec.axes:
        sub = done if study.spec.design == "grid" else [r for r in done if r["varied"] == axis]
        for x in _axis_order([r[axis] for r in sub]):
            for d in dict.fromkeys(r["detector"] for r in sub):
                at = [r for r in sub if r[axis] == x and r["detector"] == d]
                line = [axis, str(x), d, str(len(at))]
                for m in metrics:
                    if m not in PLOT_METRICS[at[0]["level"]] if at else True:
                        line.append("")
                        continue
                    mean, lo, hi = _stats(at, axis, m, [x])
                    line.append(
                        "n/a"
                        if not np.isfinite(mean[0])
                        else f"{mean[0]:.3f} [{lo[0]:.3f}, {hi[0]:.3f}]"
                    )
                body.append(line)
    return header, body


def write_study_report(out: Path, study: Study) -> None:
    """Collect the tables and write the plots and ``report.html`` / ``report.md``."""
    rows, view_rows = collect(out, study)
    write_table(out / RESULTS, rows)
    write_table(out / VIEWS, view_rows)
    record = json.loads((out / STUDY_FILE).read_text())
    figures: list[tuple[str, Path]] = []
    # A study that changed its axes leaves no figure of an axis it no longer has.
    for old in (out / "figures").glob("*.png"):
        old.unlink()
    for axis in study.spec.axes:
        for level in ("view", "part"):
            name = axis.replace(".", "_")
            p = axis_figure(study, axis, rows, level, out / "figures" / f"{name}_{level}.png")
            if p is not None:
                figures.append((f"{level}-level detectors vs {axis}", p))
        p = polar_figure(study, axis, view_rows, out / "figures" / f"{name}_by_view.png")
        if p is not None:
            figures.append(
                (
                    f"pixel AUROC by viewpoint at the ends of {axis} (red: at or below "
                    "chance; grey: no anomalous pixel there)",
                    p,
                )
            )
    header, body = summary_table(study, rows)
    statuses: dict[str, int] = {}
    for c in record["cells"]:
        statuses[c["status"]] = statuses.get(c["status"], 0) + 1
    failed = [c for c in record["cells"] if c["status"] == "failed"]
    spec = study.spec
    facts = [
        ("base scenario", spec.scenario),
        ("design", spec.design),
        ("axes", "; ".join(f"{a}: {', '.join(map(str, v))}" for a, v in spec.axes.items())),
        ("fixed changes", "; ".join(f"{k}: {v}" for k, v in spec.set.items()) or "none"),
        ("seeds", ", ".join(map(str, spec.seeds))),
        ("cells", ", ".join(f"{n} {s}" for s, n in sorted(statuses.items()))),
        (
            "time",
            f"this invocation {record.get('seconds', 0.0):.0f} s ({record.get('executor')}, "
            f"{record.get('workers')} workers); the runs' own "
            f"{sum(float(c.get('seconds') or 0.0) for c in _distinct(record['cells'])):.0f} s "
            "of worker time",
        ),
    ]
    md = [f"# twincell study: {spec.name}", ""] + (
        [spec.description, ""] if spec.description else []
    )
    md += [f"- **{k}**: {v}" for k, v in facts]
    md += [
        "",
        "Tables: `results.csv` / `results.parquet` (one row per cell and detector), "
        "`views.csv` / `views.parquet` (per viewpoint). Each cell is a run directory under "
        "`cells/` with its own report.",
        "",
        "## Mean over seeds [lowest, highest seed]",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    md += ["| " + " | ".join(line) + " |" for line in body]
    md.append("")
    for title, p in figures:
        md += [f"## {title}", "", f"![{title}]({p.relative_to(out).as_posix()})", ""]
    if failed:
        md += ["## Failed cells", "", "Rerun the same command to retry them.", ""]
        md += [f"- {_cell_label(c)}: {c.get('error', '')}" for c in failed]
    write_text(out / "report.md", "\n".join(md) + "\n")

    esc = html.escape
    facts_html = "".join(f"<li><b>{esc(k)}</b>: {esc(v)}</li>" for k, v in facts)
    table_html = (
        "<table><tr>"
        + "".join(f"<th>{esc(h)}</th>" for h in header)
        + "</tr>"
        + "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in line) + "</tr>" for line in body)
        + "</table>"
    )
    figs_html = "".join(
        f'<h2>{esc(t)}</h2><img src="{p.relative_to(out).as_posix()}" alt="{esc(t)}">'
        for t, p in figures
    )
    # Every cell, with a link to its run's own report (folded: a study may have many).
    cells_html = (
        f"<details><summary>All {len(record['cells'])} cells</summary><table><tr>"
        + "".join(
            f"<th>{esc(h)}</th>" for h in ["cell", "seed", *spec.axes, "status", "seconds", "run"]
        )
        + "</tr>"
        + "".join(
            "<tr>"
            + f"<td>{c['cell']}</td><td>{c['seed']}</td>"
            + "".join(f"<td>{esc(str(c['values'].get(a)))}</td>" for a in spec.axes)
            + f"<td>{esc(c['status'])}</td><td>{_fmt_seconds(c.get('seconds'))}</td>"
            + f'<td><a href="{esc(c["run"])}/report.html">{esc(c["run"])}</a></td></tr>'
            for c in record["cells"]
        )
        + "</table></details>"
    )
    failed_html = (
        "<h2>Failed cells</h2><p>Rerun the same command to retry them.</p><ul>"
        + "".join(
            f'<li><a href="{esc(c["run"])}/">{esc(_cell_label(c))}</a>: '
            f"{esc(c.get('error', ''))}</li>"
            for c in failed
        )
        + "</ul>"
        if failed
        else ""
    )
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>twincell study: {esc(spec.name)}</title>
<style>body{{font-family:sans-serif;max-width:1200px;margin:2em auto}}
table{{border-collapse:collapse;font-size:90%}}td,th{{border:1px solid #ccc;padding:3px 6px}}
img{{max-width:100%}}</style></head><body>
<h1>twincell study: {esc(spec.name)}</h1><p>{esc(spec.description)}</p>
<ul>{facts_html}</ul>
<p>Tables: <a href="results.csv">results.csv</a> / results.parquet (one row per cell and
detector), <a href="views.csv">views.csv</a> / views.parquet (per viewpoint). Each cell is a
run directory under <code>cells/</code> with its own report.</p>
<h2>Mean over seeds [lowest, highest seed]</h2>{table_html}
{cells_html}
{figs_html}
{failed_html}
</body></html>
"""
    write_text(out / "report.html", page)
