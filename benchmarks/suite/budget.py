"""The planning-budget part of a suite report: success against rollouts per replan.

A suite with ``reference_planner: <entry>`` (``configs/bench/budget.yaml``: CEM 300 x 30, DINO-WM's
setting) compares every other planner cell of an ``(env, encoder)`` with that entry's cell on the
same goals. A cell *matches* the reference when their 95% Wilson intervals overlap, and beats it
when its interval lies above; the section names, per ``(env, encoder)``, the cheapest cell that
matches or beats it (fewest candidate rollouts per env per
replan, the planner's own count: samples x iterations for CEM, the decaying population for iCEM,
restarts x steps for gradient planners, each of which also runs a backward pass) and plots success
against rollouts (``budget.png``).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmarks.suite._plots import pyplot, save_figure, success_with_ci

__all__ = ["budget_rows", "budget_tables", "plot_budget"]


def _overlap(a: dict, b: dict) -> bool:
    return float(a["ci_low"]) <= float(b["ci_high"]) and float(b["ci_low"]) <= float(a["ci_high"])


def _matches(cell: dict, ref: dict) -> str:
    """``"yes"`` (95% intervals overlap), ``"better"`` (the cell's interval lies above the
    reference's) or ``"no"`` (below it)."""
    if _overlap(cell, ref):
        return "yes"
    return "better" if float(cell["ci_low"]) > float(ref["ci_high"]) else "no"


def budget_rows(rows: list[dict], reference: str | None) -> dict[tuple[str, str], tuple[dict, list[dict]]]:
    """``(env, encoder) -> (reference row, other planner rows sorted by rollouts)`` for the pairs
    whose reference cell finished (training condition only)."""
    if not reference:
        return {}
    ok = [r for r in rows if r.get("status") == "ok" and r.get("policy") == "planner" and not r.get("shift")
          and r.get("rollouts_per_plan") not in (None, "")]
    out = {}
    for ref in (r for r in ok if r["planner"] == reference):
        others = sorted((r for r in ok if (r["env"], r["encoder"]) == (ref["env"], ref["encoder"])
                         and r["planner"] != reference), key=lambda r: float(r["rollouts_per_plan"]))
        out[ref["env"], ref["encoder"]] = (ref, others)
    return out


def budget_tables(rows: list[dict], reference: str | None) -> list[str]:
    """Markdown lines of the budget section (empty without a finished reference cell)."""
    pairs = budget_rows(rows, reference)
    if not pairs:
        return []
    lines = ["", "## Planning budget", "",
             f"Every planner cell against the reference `{reference}` on the same goals. Rollouts: candidate "
             "action sequences rolled out per env per replan (mean over replans). A cell matches when its 95% "
             "interval overlaps the reference's (`better`: it lies above). Cheapest cell that matches or beats "
             "the reference, per env and encoder:", "",
             "| env | encoder | reference success (rollouts) | cheapest match | its success | rollouts | "
             "share of the reference's |", "|---|---|---|---|---|---|---|"]
    for (env, enc), (ref, others) in pairs.items():
        match = next((r for r in others if _matches(r, ref) != "no"), None)
        ref_text = (f"{float(ref['success_rate']):.2f} ({float(ref['ci_low']):.2f}-{float(ref['ci_high']):.2f}; "
                    f"{float(ref['rollouts_per_plan']):,.0f})")
        if match is None:
            lines.append(f"| {env} | {enc} | {ref_text} | none | | | |")
            continue
        share = float(match["rollouts_per_plan"]) / float(ref["rollouts_per_plan"])
        lines.append(f"| {env} | {enc} | {ref_text} | {match['planner']} | "
                     f"{float(match['success_rate']):.2f} ({float(match['ci_low']):.2f}-{float(match['ci_high']):.2f}) | "
                     f"{float(match['rollouts_per_plan']):,.0f} | 1/{1 / share:.0f} |")
    lines += ["", "Every cell:", "", "| env | encoder | planner | rollouts / replan | success (95% CI) | matches | "
              "plan time / replan |", "|---|---|---|---|---|---|---|"]
    for (env, enc), (ref, others) in pairs.items():
        for r in [ref, *others]:
            same = "reference" if r is ref else _matches(r, ref)
            pt = "" if r.get("plan_time_ms") in (None, "") else f"{float(r['plan_time_ms']):.0f} ms"
            lines.append(f"| {env} | {enc} | {r['planner']} | {float(r['rollouts_per_plan']):,.0f} | "
                         f"{float(r['success_rate']):.2f} ({float(r['ci_low']):.2f}-{float(r['ci_high']):.2f}) | "
                         f"{same} | {pt} |")
    return lines


def plot_budget(rows: list[dict], reference: str | None, path: Path) -> Path:
    """Success (95% CI) against rollouts per replan (log), one panel per (env, encoder), one line per
    planner (registered name), the reference as a star with its interval shaded."""
    plt = pyplot()

    pairs = budget_rows(rows, reference)
    n = max(len(pairs), 1)
    cols = min(n, 3)
    fig, axes = plt.subplots(int(np.ceil(n / cols)), cols, figsize=(4.2 * cols, 3.4 * int(np.ceil(n / cols))),
                             squeeze=False)
    names = sorted({r.get("planner_name") or r["planner"] for _, others in pairs.values() for r in others})
    for ax, ((env, enc), (ref, others)) in zip(axes.flat, pairs.items()):
        ax.axhspan(float(ref["ci_low"]), float(ref["ci_high"]), color="grey", alpha=0.15)
        ax.plot(float(ref["rollouts_per_plan"]), float(ref["success_rate"]), "*", ms=12, color="black",
                label=f"{ref['planner']} (reference)")
        for i, name in enumerate(names):
            rs = [r for r in others if (r.get("planner_name") or r["planner"]) == name]
            if not rs:
                continue
            x = [float(r["rollouts_per_plan"]) for r in rs]
            y, err = success_with_ci(rs)
            ax.errorbar(x, y, yerr=err, fmt="o-", capsize=2, color=f"C{i}", label=name, lw=1)
        ax.set_xscale("log")
        ax.set_ylim(-0.05, 1.05)
        ax.set_title(f"{env} / {enc}", fontsize=9)
        ax.set_xlabel("rollouts per replan (log)")
        ax.set_ylabel("success rate")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(pairs):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=6)
    return save_figure(fig, path, dpi=110)
