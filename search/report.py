"""The files a search writes: the front as JSON and CSV, the chosen assignment, a plot."""

from __future__ import annotations

import csv
import json
from pathlib import Path

__all__ = ["plot_fronts", "write_front"]


def write_front(data: dict, out: Path) -> list[Path]:
    """`front.json`, `front.csv` and `assignment.json` (the lowest-energy point within the
    accuracy budget, ready for `--assign`) in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "front.json", out / "front.csv"]
    paths[0].write_text(json.dumps(data, indent=2) + "\n")
    with paths[1].open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["delta", "energy_ratio", "pe_energy_ratio", "area_ratio", "val_metric",
                    "test_metric", "test_delta", "assignment"])
        for p in data["pareto"]:
            w.writerow([p["delta"], p["energy_ratio"], p.get("pe_energy_ratio"),
                        p.get("area_ratio"), _only(p["metric"]["val"]),
                        _only(p["metric"].get("test", {})), p["metric"].get("test_delta"),
                        json.dumps(p["assignment"], sort_keys=True)])
    if data.get("chosen") is not None:
        paths.append(out / "assignment.json")
        paths[-1].write_text(json.dumps(data["chosen"]["assignment"], indent=2) + "\n")
    return paths


def _only(d: dict):
    return next(iter(d.values()), None)


def plot_fronts(runs: dict, accuracy_budget: float, path: Path, title: str) -> Path:
    """Accuracy loss vs energy ratio: every point the main run evaluated, and each run's
    front (`runs`: method -> list of (delta, energy_ratio) evaluated, first is the main
    run)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .pareto import pareto_front

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, (method, pts) in enumerate(runs.items()):
        if not pts:
            continue
        if i == 0:
            ax.scatter([100 * d for d, _ in pts], [e for _, e in pts], s=10, alpha=0.35,
                       color="grey", label=f"{method}: every evaluation")
        front = [pts[j] for j in pareto_front(pts)]
        ax.step([100 * d for d, _ in front], [e for _, e in front], where="post",
                marker="o", ms=3, lw=1.5 if i == 0 else 1, label=f"{method}: front")
    ax.axvline(100 * accuracy_budget, color="red", ls="--", lw=1,
               label=f"accuracy budget {100 * accuracy_budget:g}%")
    ax.set_xlabel("accuracy loss vs all-exact, validation (%)")
    ax.set_ylabel("multiplier energy per inference / all-exact")
    lo = min((d for pts in runs.values() for d, _ in pts), default=0.0)
    ax.set_xlim(min(0.0, 100 * lo) - 0.2, max(4 * 100 * accuracy_budget, 1.0))
    ax.set_ylim(0, 1.1)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
