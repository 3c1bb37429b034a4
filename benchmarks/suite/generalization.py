"""The generalization part of a suite report: success and probe under each distribution shift.

A suite whose envs list ``shifts`` (``shifts: held_out``, or ``custom_shifts``; see
:mod:`benchmarks.suite.settings`) evaluates every cell again under each shift: the data and the
models stay those of the training condition (the env's ``options``, e.g. ``variation: train``), only
the evaluation env (and the probe's renders) change. This module turns those rows into

- one table per env: success under the training condition, then under each shift with its drop;
- the probe's Spearman correlation under each shift;
- ``generalization.png``: heat maps of the success drop (top) and of the probe's Spearman
  correlation (bottom), one column of panels per env, one row per backend (and planner).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmarks.suite._plots import pyplot, save_figure

__all__ = ["has_shifts", "shift_tables", "plot_generalization"]

TRAINING = "train condition"  # column name of the training condition ("" in the rows)


def has_shifts(rows: list[dict]) -> bool:
    """Whether any row was evaluated under a shift."""
    return any(r.get("shift") for r in rows)


def _columns(rows: list[dict], env: str) -> list[str]:
    """The shifts of ``env`` in the order they first appear (the suite's order)."""
    return list(dict.fromkeys(r["shift"] for r in rows if r["env"] == env and r.get("shift")))


def _keyed(rows: list[dict]) -> dict[tuple, dict[str, dict]]:
    """``(env, encoder, planner) -> {shift: row}`` for rows that finished."""
    out: dict[tuple, dict[str, dict]] = {}
    for r in rows:
        if r.get("status") == "ok":
            out.setdefault((r["env"], r["encoder"], r["planner"]), {})[r.get("shift") or ""] = r
    return out


def _suite_order(rows: list[dict]):
    """Sort key of probes: envs and encoders in the order the (suite-ordered) rows first name them."""
    envs = list(dict.fromkeys(r["env"] for r in rows))
    encs = list(dict.fromkeys(r["encoder"] for r in rows))
    return lambda p: (envs.index(p["env"]) if p["env"] in envs else len(envs),
                      encs.index(p["encoder"]) if p["encoder"] in encs else len(encs))


def _spearman(rows: list[dict], probes: list[dict]) -> dict[str, dict[str, dict[str, float]]]:
    """``env -> encoder -> shift ("" : training condition) -> Spearman`` for the envs probed under
    some shift, envs and encoders in the suite's order."""
    shifted_envs = {p["env"] for p in probes if p.get("shift")}
    out: dict[str, dict[str, dict[str, float]]] = {}
    for p in sorted((p for p in probes if p["env"] in shifted_envs), key=_suite_order(rows)):
        out.setdefault(p["env"], {}).setdefault(p["encoder"], {})[p.get("shift") or ""] = p["spearman"]
    return out


def _probe_columns(rows: list[dict], env: str, encs: dict[str, dict[str, float]]) -> list[str]:
    """The shifts probed on ``env`` in the suite's order (those with no cell row last)."""
    found = list(dict.fromkeys(s for v in encs.values() for s in v if s))
    order = _columns(rows, env)
    return [c for c in order if c in found] + [c for c in found if c not in order]


def _drops(rows: list[dict]):
    """Per env: the shift columns and, per (encoder, planner) row label, the success under the
    training condition and ``{shift: (success, drop)}``."""
    keyed = _keyed(rows)
    table: dict[str, tuple[list[str], dict[str, tuple[float, dict]]]] = {}
    for (env, enc, plan), by_shift in keyed.items():
        if "" not in by_shift:
            continue
        base = float(by_shift[""]["success_rate"])
        label = enc if plan in ("-", None) else f"{enc} / {plan}"
        cols, entries = table.setdefault(env, (_columns(rows, env), {}))
        entries[label] = (base, {s: (float(r["success_rate"]), base - float(r["success_rate"]))
                                 for s, r in by_shift.items() if s})
    return table


def shift_tables(rows: list[dict], probes: list[dict]) -> list[str]:
    """Markdown lines of the generalization section (empty without shifted rows)."""
    if not has_shifts(rows):
        return []
    lines = ["", "## Generalization under distribution shifts", "",
             "Data and models come from the training condition (each env's `variation`, `train` here); "
             "every shift evaluates the same held-out goals with one group of factors drawn from its "
             "held-out test range (the others from train); `test` draws every factor from its test range. "
             "Each entry: success rate (drop from the training condition; > 0 is worse).", ""]
    for env, (cols, entries) in _drops(rows).items():
        lines += [f"### {env}", "", "| encoder / planner | " + " | ".join([TRAINING, *cols]) + " |",
                  "|---|" + "---|" * (len(cols) + 1)]
        for label, (base, by) in entries.items():
            cells = [f"{by[c][0]:.2f} ({by[c][1]:+.2f})" if c in by else "" for c in cols]
            lines.append(f"| {label} | {base:.2f} | " + " | ".join(cells) + " |")
        for r in rows:  # cells that did not run (a missing pretrained encoder, a failure)
            if r["env"] == env and not r.get("shift") and r.get("status") != "ok":
                lines.append(f"| {r['encoder']} / {r['planner']} | {r.get('status')} |" + " |" * len(cols))
        lines.append("")
    by_env = _spearman(rows, probes)
    if by_env:
        lines += ["Probe under each shift: Spearman correlation of latent and true distance to the goal "
                  "(block position on Push-T):", ""]
        for env, encs in by_env.items():
            cols = _probe_columns(rows, env, encs)
            lines += [f"| {env} encoder | " + " | ".join([TRAINING, *cols]) + " |", "|---|" + "---|" * (len(cols) + 1)]
            for enc, v in encs.items():
                lines.append(f"| {enc} | " + " | ".join(f"{v[c]:.2f}" if c in v else "" for c in ["", *cols]) + " |")
            lines.append("")
    return lines


def plot_generalization(rows: list[dict], probes: list[dict], path: Path) -> Path:
    """Heat maps: success drop per shift (top row, red = worse than the training condition, each
    cell annotated with the drop) and probe Spearman per shift (bottom row), one column per env."""
    plt = pyplot()

    drops = _drops(rows)
    spear = _spearman(rows, probes)
    envs = list(drops) or list(spear)
    fig, axes = plt.subplots(2, len(envs), figsize=(3.6 * len(envs), 6.4), squeeze=False)
    for j, env in enumerate(envs):
        cols, entries = drops.get(env, ([], {}))
        labels = [l for l in entries if l != "(random actions)"]  # the oracle row stays: goals stay reachable
        grid = np.array([[entries[l][1][c][1] if c in entries[l][1] else np.nan for c in cols] for l in labels]
                        ).reshape(len(labels), len(cols))
        _heat(axes[0, j], grid, labels, cols, cmap="RdBu_r", vmin=-1, vmax=1, fmt="{:+.2f}",
              title=f"{env}: success drop")
        encs = spear.get(env, {})
        pcols = ["", *_probe_columns(rows, env, encs)]
        pgrid = np.array([[encs[e].get(c, np.nan) for c in pcols] for e in encs]).reshape(len(encs), len(pcols))
        _heat(axes[1, j], pgrid, list(encs), [c or "train" for c in pcols], cmap="viridis", vmin=0, vmax=1,
              fmt="{:.2f}", title=f"{env}: probe Spearman")
    return save_figure(fig, path, dpi=110)


def _heat(ax, grid: np.ndarray, rows: list[str], cols: list[str], *, cmap: str, vmin: float, vmax: float,
          fmt: str, title: str) -> None:
    """One annotated heat map on ``ax`` (NaN cells blank)."""
    ax.set_title(title, fontsize=9)
    if grid.size == 0:
        ax.axis("off")
        return
    ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
    ax.set_xticks(range(len(cols)), cols, rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(len(rows)), rows, fontsize=7)
    for i in range(grid.shape[0]):
        for k in range(grid.shape[1]):
            if np.isfinite(grid[i, k]):
                dark = (grid[i, k] > 0.55 * vmax) if cmap == "viridis" else abs(grid[i, k]) < 0.5 * vmax
                ax.text(k, i, fmt.format(grid[i, k]), ha="center", va="center", fontsize=6,
                        color="black" if dark else "white")
