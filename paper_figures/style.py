"""One look for every figure: sizes, fonts, a colour-blind-safe palette, and saving as PNG + PDF."""

from __future__ import annotations

import contextlib
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from dyntheory.probes.history import seed_columns  # noqa: E402

# Okabe & Ito (2008) colour-blind-safe palette.
PALETTE = {
    "black": "#000000",
    "orange": "#E69F00",
    "sky": "#56B4E9",
    "green": "#009E73",
    "yellow": "#F0E442",
    "blue": "#0072B2",
    "vermillion": "#D55E00",
    "purple": "#CC79A7",
}
# Fixed roles so the same thing has the same colour in every figure.
COLORS = {
    "adamw": PALETTE["blue"],
    "prm": PALETTE["vermillion"],
    "train": PALETTE["blue"],
    "test": PALETTE["vermillion"],
    "channel": PALETTE["green"],
    "reservoir": PALETTE["purple"],
    "signal": PALETTE["sky"],
    "noise": PALETTE["orange"],
    "fit": PALETTE["black"],
    # the four cells of the channel/reservoir split (signal = clean targets, noise = label noise)
    "clean_channel": PALETTE["blue"],
    "clean_reservoir": PALETTE["sky"],
    "noise_channel": PALETTE["vermillion"],
    "noise_reservoir": PALETTE["orange"],
}
LABELS = {"adamw": "AdamW", "prm": "PRM"}
CYCLE = [PALETTE[k] for k in ("blue", "vermillion", "green", "orange", "purple", "sky", "yellow")]

WIDTH_ONE = 5.0  # inches, single panel
WIDTH_TWO = 9.0  # inches, two panels side by side


def apply() -> None:
    """Set the shared rcParams (call once per figure script)."""
    plt.rcParams.update(
        {
            "figure.dpi": 110,
            "savefig.dpi": 150,
            "font.size": 9,
            "axes.titlesize": 10,
            "axes.labelsize": 9,
            "legend.fontsize": 8,
            "xtick.labelsize": 8,
            "ytick.labelsize": 8,
            "axes.grid": True,
            "grid.alpha": 0.3,
            "axes.spines.top": False,
            "axes.spines.right": False,
            "axes.prop_cycle": matplotlib.cycler(color=CYCLE),
            "figure.constrained_layout.use": True,
        }
    )


_STAMP: list[str] = []  # the provenance line of the figure being drawn (see provenance)


@contextlib.contextmanager
def provenance(text: str | None):
    """While active, :func:`save` writes ``text`` across the bottom of the figure (in red): how
    the run it was drawn from differs from the figure's own preset. ``None``: nothing."""
    _STAMP.append(text or "")
    try:
        yield
    finally:
        _STAMP.pop()


def save(fig, out_dir: Path, name: str, dpi: int | None = None) -> list[Path]:
    """Write ``name``.png and ``name``.pdf into ``out_dir``; return both paths.

    ``dpi`` overrides ``savefig.dpi`` for the PNG (the PDF is vector graphics either way). Inside
    :func:`provenance`, the figure first gets its provenance line.
    """
    kw = {}
    if _STAMP and _STAMP[-1]:  # below the axes' labels; the saved area grows to hold it
        fig.text(0.5, -0.01, _STAMP[-1], ha="center", va="top", fontsize=7, color="#D55E00")
        kw["bbox_inches"] = "tight"
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{name}.png", out_dir / f"{name}.pdf"]
    for p in paths:
        fig.savefig(p, **kw, **({"dpi": dpi} if dpi and p.suffix == ".png" else {}))
    plt.close(fig)
    return paths


def band(
    ax,
    x,
    values,
    color,
    label: str | None = None,
    ls: str = "-",
    lw: float = 1.6,
    alpha: float = 0.18,
    where=None,
) -> bool:
    """Median over seeds (columns of ``values``) with a min–max band, on the rows where every seed
    is measured (and ``where``, a boolean row mask); returns whether anything was drawn."""
    x = np.asarray(x, dtype=float)
    v = seed_columns(values)
    ok = np.isfinite(v).all(axis=1) & np.isfinite(x)
    if where is not None:
        ok &= np.asarray(where, dtype=bool)
    if not ok.any():
        return False
    x, v = x[ok], v[ok]
    ax.plot(x, np.median(v, axis=1), ls=ls, color=color, lw=lw, label=label)
    if v.shape[1] > 1:
        ax.fill_between(x, v.min(axis=1), v.max(axis=1), color=color, alpha=alpha, lw=0)
    return True


def note(ax, text: str, loc: str = "lower right") -> None:
    """A small boxed annotation in a corner of ``ax`` (the measured numbers of a panel)."""
    xs = {"left": (0.02, "left"), "right": (0.98, "right"), "center": (0.5, "center")}
    ys = {"lower": (0.03, "bottom"), "upper": (0.97, "top"), "center": (0.5, "center")}
    v, h = loc.split() if " " in loc else ("center", loc)
    (x, ha), (y, va) = xs[h], ys[v]
    ax.text(
        x,
        y,
        text,
        transform=ax.transAxes,
        ha=ha,
        va=va,
        fontsize=7.5,
        bbox={"boxstyle": "round,pad=0.3", "fc": "white", "ec": "0.7", "alpha": 0.9},
    )


def plain_log_ticks(ax, axis: str = "x") -> None:
    """Plain-number ticks at 1, 2, 5 × 10^k (0.25 → 0.2, 0.5, 1, 2, ...) on a log axis."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    target = ax.xaxis if axis == "x" else ax.yaxis
    target.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    target.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    target.set_minor_formatter(NullFormatter())
