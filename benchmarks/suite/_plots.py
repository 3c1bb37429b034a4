"""Matplotlib plumbing shared by the report's plots: a headless pyplot and an atomic save."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from mpc._io import atomic_path

__all__ = ["pyplot", "save_figure", "success_with_ci"]


def success_with_ci(rows: list[dict]) -> tuple[np.ndarray, list[np.ndarray]]:
    """Success rates of ``rows`` and their 95% intervals as matplotlib's ``yerr`` (below, above)."""
    y = np.array([float(r["success_rate"]) for r in rows])
    return y, [y - np.array([float(r["ci_low"]) for r in rows]), np.array([float(r["ci_high"]) for r in rows]) - y]


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend (no display needed)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def save_figure(fig, path: Path, dpi: int = 120) -> Path:
    """Lay out ``fig``, write it to ``path`` atomically and close it. Returns ``path``."""
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi)
    pyplot().close(fig)
    return path
