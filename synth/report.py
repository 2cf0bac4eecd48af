"""Sweep reports: flat rows, CSV/JSON export, the cost-vs-error table, Pareto plots.

The table answers "what do I pay for what error": one row per design and target with
its area (transistors or LUTs), delay (logic depth or Fmax), energy and error metrics
side by side, plus area and energy relative to the exact multiplier of the same format on
the same target, sorted by format and error.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

#: columns of the exported rows, in order (others, e.g. cells_by_type, are left out)
COLUMNS = ("spec", "format", "target", "unit", "transistors", "cells", "depth", "luts",
           "carries", "dsps", "ffs", "fmax_mhz", "energy", "energy_dynamic",
           "energy_leakage", "energy_ratio", "area_ratio", "mae", "nmed", "mred", "wce",
           "wcre", "ep", "mse", "bias", "stream", "family")


def _design_fields(r: dict) -> dict:
    """``family`` and ``format`` of a result: its own fields, or its parsed spec."""
    if "family" in r and "format" in r:
        return {"family": r["family"], "format": r["format"]}
    from axsa.rtl.multipliers import parse_spec
    m = parse_spec(r["spec"])
    return {"family": m.family, "format": str(m.fmt)}


def rows(results: list[dict]) -> list[dict]:
    """Flat rows with ``format`` and ``area_ratio`` (transistors on generic, LUTs on FPGAs,
    over the exact multiplier of the same format, target and unit, when in `results`)."""
    from axsa.rtl.multipliers import exact_multiplier
    out = [{**r, **_design_fields(r)} for r in results]
    exact = {(r["format"], r["target"], r["unit"]): r for r in out
             if r["spec"] == exact_multiplier(r["format"]).spec}
    for r in out:
        ref = exact.get((r["format"], r["target"], r["unit"]))
        area = "transistors" if r["target"] == "generic" else "luts"
        if ref and ref.get(area):
            r["area_ratio"] = round(r.get(area, 0) / ref[area], 6)
    return [{c: r.get(c) for c in COLUMNS if c in r} for r in out]


def write_csv(table: list[dict], path: Path) -> None:
    cols = [c for c in COLUMNS if any(c in r for r in table)]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        for r in table:
            w.writerow({c: r.get(c, "") for c in cols})


def write_json(table: list[dict], path: Path) -> None:
    path.write_text(json.dumps(table, indent=1) + "\n")


def summary(table: list[dict]) -> list[dict]:
    """The cost-vs-error table: per row, cost columns then error columns, sorted by
    (format, target, mred)."""
    keep = ("spec", "target", "transistors", "luts", "depth", "fmax_mhz", "energy",
            "area_ratio", "energy_ratio", "mred", "mae", "wce", "bias")
    ordered = sorted(table, key=lambda r: (r["format"], r["target"], r.get("mred", 0),
                                           r.get("mae", 0), r["spec"]))
    return [{k: r.get(k) for k in keep if r.get(k) is not None} for r in ordered]


def _cell(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def summary_markdown(table: list[dict]) -> str:
    rows_ = summary(table)
    if not rows_:
        return ""
    cols = [c for c in ("spec", "target", "transistors", "luts", "area_ratio", "depth",
                        "fmax_mhz", "energy", "energy_ratio", "mred", "mae", "wce", "bias")
            if any(c in r for r in rows_)]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_cell(r.get(c)) for c in cols) + " |" for r in rows_]
    return "\n".join(lines) + "\n"


def pareto_mask(cost: np.ndarray, error: np.ndarray) -> np.ndarray:
    """True for points no other point beats (<= in both, < in one): minimise both."""
    cost = np.asarray(cost, float)
    error = np.asarray(error, float)
    le = (cost[None, :] <= cost[:, None]) & (error[None, :] <= error[:, None])
    lt = (cost[None, :] < cost[:, None]) | (error[None, :] < error[:, None])
    return ~(le & lt).any(axis=1)


#: (file name, x column, y column, targets the points come from)
PLOTS = (
    ("pareto_energy_mred.png", "mred", "energy", ("generic",)),
    ("pareto_transistors_mae.png", "mae", "transistors", ("generic",)),
    ("pareto_luts_mae.png", "mae", "luts", ("ice40", "ecp5")),
)


def pareto_plots(table: list[dict], folder: Path) -> list[Path]:
    """PNG scatter plots with their Pareto fronts, one colour per format (and target);
    a plot whose points are absent from the sweep is not written."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for name, xcol, ycol, targets in PLOTS:
        pts = [r for r in table if r["target"] in targets and r.get(xcol) is not None
               and r.get(ycol) is not None]
        if not pts:
            continue
        fig, ax = plt.subplots(figsize=(7.5, 5))
        groups = sorted({(r["format"], r["target"]) for r in pts})
        for fmt, target in groups:
            g = [r for r in pts if r["format"] == fmt and r["target"] == target]
            x = np.array([r[xcol] for r in g], float)
            y = np.array([r[ycol] for r in g], float)
            label = fmt if len(targets) == 1 else f"{fmt} {target}"
            sc = ax.scatter(x, y, s=18, alpha=0.6, label=label)
            front = pareto_mask(y, x)
            order = np.argsort(x[front])
            ax.plot(x[front][order], y[front][order], "-", color=sc.get_facecolor()[0],
                    alpha=0.9, drawstyle="steps-post")
            for r, on in zip(g, front):
                if on:
                    ax.annotate(r["spec"].removesuffix(f"@{r['format']}"), (r[xcol], r[ycol]),
                                fontsize=6,
                                xytext=(3, 3), textcoords="offset points")
        ax.set_xscale("symlog", linthresh=_linthresh([r[xcol] for r in pts]))
        ax.set_xlabel(f"{xcol} (error)")
        ax.set_ylabel({"energy": "energy (fJ / operation)",
                       "transistors": "transistors (estimate)",
                       "luts": "LUT4s"}[ycol])
        ax.set_title(f"{ycol} vs {xcol}: points on the line are Pareto-optimal")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = folder / name
        fig.savefig(path, dpi=120)
        plt.close(fig)
        written.append(path)
    return written


def _linthresh(values) -> float:
    pos = [v for v in values if v and v > 0]
    return min(pos) if pos else 1.0


def export(results: list[dict], folder: Path, plots: bool = True) -> dict:
    """Write results.csv, results.json, summary.md and the Pareto PNGs into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    table = rows(results)
    write_csv(table, folder / "results.csv")
    write_json(table, folder / "results.json")
    (folder / "summary.md").write_text(summary_markdown(table))
    files = [folder / "results.csv", folder / "results.json", folder / "summary.md"]
    if plots:
        files += pareto_plots(table, folder)
    return {"rows": table, "files": [str(f) for f in files]}
