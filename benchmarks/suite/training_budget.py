"""The training-budget part of a suite report: success against training minutes and data size.

Env entries of one task (the same registered env with the same env options apart from the rendered
``image_size``, e.g. ``pusht_d300_s1500`` and ``pusht_d1200_s6000`` of ``configs/bench/pusht_budget.yaml``)
that differ in their exploration data (``data.episodes``), their world-model schedule (the entry's
``train: {steps: ...}``), their model or their image size form a training-budget study. For each task the section lists every setting by training minutes (the
encoder's and the world model's training time on this machine, from the rows), its success per
planner, and, when the suite sets ``budget_target`` (a success rate), the cheapest setting that
reaches it or that none does; ``training_budget.png`` plots success against training minutes, one
line per (encoder, planner, data size).
"""
from __future__ import annotations

import json
from pathlib import Path

from benchmarks.suite._plots import pyplot, save_figure, success_with_ci
from benchmarks.suite.settings import SuiteSettings

__all__ = ["budget_studies", "training_budget_tables", "plot_training_budget"]


def budget_studies(suite: SuiteSettings, rows: list[dict]) -> dict[str, list[dict]]:
    """``task label -> planner rows`` (training condition, finished) of every task with two or more env
    entries that have such rows; rows sorted by training time, each a copy with its entry's ``image_size``."""
    groups: dict[tuple, list[str]] = {}
    for name, es in suite.envs.items():
        task = {k: v for k, v in es.options.items() if k != "image_size"}  # the image is the model's input
        groups.setdefault((es.env, json.dumps(task, sort_keys=True, default=str)), []).append(name)
    out = {}
    for (env, _), names in groups.items():
        ok = [{**r, "image_size": suite.envs[r["env"]].options.get("image_size", "")} for r in rows
              if r.get("env") in names and r.get("policy") == "planner" and not r.get("shift")
              and r.get("status") == "ok" and r.get("train_time_s") not in (None, "")]
        if len(names) >= 2 and len({r["env"] for r in ok}) >= 2:
            out[f"{env} ({', '.join(names)})"] = sorted(ok, key=lambda r: float(r["train_time_s"]))
    return out


def _minutes(r: dict) -> float:
    return float(r["train_time_s"]) / 60.0


def training_budget_tables(studies: dict[str, list[dict]], target: float | None = None) -> list[str]:
    """Markdown lines of the training-budget section for :func:`budget_studies` (empty without a study)."""
    if not studies:
        return []
    lines = ["", "## Training budget", "",
             "Entries of one task that differ in exploration data or world-model training steps. Training "
             "minutes: the encoder's and the world model's training time on this machine (data collection "
             "and evaluation not included). Success over the held-out goals, 95% interval.", ""]
    for task, trs in studies.items():
        lines += [f"**{task}**", "", "| entry | encoder | planner | data episodes | world-model steps | image px | "
                  "training minutes | success (95% CI) |", "|---|---|---|---|---|---|---|---|"]
        for r in trs:
            lines.append(f"| {r['env']} | {r['encoder']} | {r['planner']} | {r.get('data_episodes', '')} | "
                         f"{r.get('train_steps', '')} | {r.get('image_size', '')} | {_minutes(r):.1f} | "
                         f"{float(r['success_rate']):.2f} ({float(r['ci_low']):.2f}-{float(r['ci_high']):.2f}) |")
        best = max(trs, key=lambda r: float(r["success_rate"]))
        lines += ["", f"Highest success: {float(best['success_rate']):.2f} ({best['env']}, {best['encoder']} / "
                  f"{best['planner']}, {_minutes(best):.1f} training minutes)."]
        if target is not None:
            hit = [r for r in trs if float(r["success_rate"]) >= target]
            lines.append(f"Cheapest setting reaching {target:.2f}: {hit[0]['env']} ({hit[0]['encoder']} / "
                         f"{hit[0]['planner']}, {_minutes(hit[0]):.1f} training minutes)." if hit else
                         f"No setting reached {target:.2f}; the largest budget here was "
                         f"{max(_minutes(r) for r in trs):.1f} training minutes.")
        lines.append("")
    lines.append("![Success against training minutes](training_budget.png)")
    return lines


def plot_training_budget(studies: dict[str, list[dict]], path: Path, target: float | None = None) -> Path:
    """Success against training minutes per study of :func:`budget_studies` (one panel each), a line per
    (encoder, planner, data size, image size)."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(studies), figsize=(5.5 * len(studies), 4), squeeze=False)
    for ax, (task, trs) in zip(axes[0], studies.items()):
        lines: dict[tuple, list[dict]] = {}
        for r in trs:
            lines.setdefault((r["encoder"], r["planner"], r.get("data_episodes"), r.get("image_size")), []).append(r)
        for (enc, planner, episodes, px), rs in lines.items():
            y, err = success_with_ci(rs)
            ax.errorbar([_minutes(r) for r in rs], y, yerr=err, fmt="o-", capsize=3,
                        label=f"{enc} / {planner}, {episodes} episodes, {px} px")
        if target is not None:
            ax.axhline(target, color="grey", ls="--", lw=0.8, label=f"target {target:.2f}")
        ax.set_xscale("log")
        ax.set_xlabel("training minutes (encoder + world model, log)")
        ax.set_ylabel("success rate (95% CI)")
        ax.set_ylim(-0.05, 1.05)
        ax.set_title(task.split(" (")[0])
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    return save_figure(fig, path)
