"""Plots of multiplier error (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

import numpy as np
from axsa.rtl.multipliers import exact_table


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def error_map(mult, table: np.ndarray, path, mode: int = 0) -> None:
    """Heat map of approx - exact over the operand grid (axes in operand values) and a
    histogram of the errors, side by side."""
    plt = _pyplot()
    err = table - exact_table(mult.fmt)
    a_vals, b_vals = mult.fmt.a_values(), mult.fmt.b_values()
    ia, ib = np.argsort(a_vals), np.argsort(b_vals)  # codes -> value order
    grid = err[np.ix_(ia, ib)]
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(11, 4.6))
    lim = max(abs(int(err.min())), abs(int(err.max())), 1)
    im = ax0.imshow(grid, origin="lower", cmap="RdBu_r", vmin=-lim, vmax=lim, aspect="auto",
                    extent=(b_vals.min() - .5, b_vals.max() + .5, a_vals.min() - .5,
                            a_vals.max() + .5))
    ax0.set_xlabel("operand b")
    ax0.set_ylabel("operand a")
    ax0.set_title("error (approx - exact)")
    fig.colorbar(im, ax=ax0)
    ax1.hist(err.ravel(), bins=min(101, max(10, len(np.unique(err)))), color="#4472c4")
    ax1.set_yscale("log")
    ax1.set_xlabel("error")
    ax1.set_ylabel("operand pairs")
    ax1.set_title(f"mean {err.mean():.3g}, mean |e| {np.abs(err).mean():.3g}")
    title = mult.spec + (f"  (mode {mode})" if mult.modes > 1 else "")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def pareto_front(rows: list[dict], x: str, y: str) -> list[dict]:
    """Rows not dominated in (x, y), both minimised, sorted by x."""
    front, best = [], float("inf")
    for r in sorted(rows, key=lambda r: (r[x], r[y])):
        if r[y] < best:
            front.append(r)
            best = r[y]
    return front


def library_chart(rows: list[dict], path, x: str = "mred", y: str = "transistors") -> None:
    """Scatter of one cost against one error metric over many designs, coloured by family,
    labelled by spec, with the Pareto front as a staircase."""
    from axsa.rtl.multipliers import parse_spec
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8.5, 5.5))
    designs = [parse_spec(r["spec"]) for r in rows]
    families = list(dict.fromkeys(m.family for m in designs))
    colours = plt.get_cmap("tab20")
    for n, fam in enumerate(families):
        pts = [r for r, m in zip(rows, designs) if m.family == fam]
        ax.scatter([r[x] for r in pts], [r[y] for r in pts], s=26, color=colours(n), label=fam)
    for r, m in zip(rows, designs):
        ax.annotate(m.spec.removesuffix(f"@{m.fmt}"), (r[x], r[y]), fontsize=7,
                    xytext=(3, 3), textcoords="offset points")
    front = pareto_front(rows, x, y)
    ax.step([r[x] for r in front], [r[y] for r in front], where="post", color="k", lw=.8,
            alpha=.6, label="Pareto front")
    ax.set_xscale("symlog", linthresh=1e-3)
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    ax.grid(alpha=.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
