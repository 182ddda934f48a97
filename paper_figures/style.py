"""One look for every figure: sizes, fonts, a colour-blind-safe palette, and saving as PNG + PDF."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

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
}
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


def save(fig, out_dir: Path, name: str) -> list[Path]:
    """Write ``name``.png and ``name``.pdf into ``out_dir``; return both paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{name}.png", out_dir / f"{name}.pdf"]
    for p in paths:
        fig.savefig(p)
    plt.close(fig)
    return paths
