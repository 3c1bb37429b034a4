"""Turn suite results into ``report.md``, ``results.csv``/``results.json`` and plots.

Every number in the report comes from the cells and probes of one suite run folder:
:func:`write_suite_report` gathers them, :func:`write_report` writes the files.
"""
from __future__ import annotations

import csv
import os
import platform
import time
from pathlib import Path

import numpy as np

from mpc._io import atomic_path, read_json, write_json

from benchmarks.suite._plots import pyplot, save_figure, success_with_ci
from benchmarks.suite.budget import budget_rows, budget_tables, plot_budget
from benchmarks.suite.explain import explain_tables
from benchmarks.suite.generalization import has_shifts, plot_generalization, shift_tables
from benchmarks.suite.probe import binned_means
from benchmarks.suite.settings import BASELINES, SuiteSettings
from benchmarks.suite.training_budget import budget_studies, plot_training_budget, training_budget_tables

__all__ = ["COLUMNS", "write_report", "write_suite_report", "plot_latent_vs_true", "plot_success_vs_time",
           "plot_gap_vs_success", "plot_risk"]

COLUMNS = ["env", "encoder", "planner", "policy", "shift", "labels", "success_rate", "ci_low", "ci_high",
           "episodes", "plan_time_ms", "train_time_s", "encoder_params", "predictor_params",
           "num_tokens", "token_dim", "risk", "ensemble", "gap_mean", "gap_median", "gap_correlation",
           "rollouts_per_plan", "status"]


def plot_success_vs_time(rows: list[dict], path: Path) -> Path:
    """Success rate against planning time per replan, one marker per (env, encoder, planner)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for r in rows:
        if r.get("status") != "ok" or r.get("plan_time_ms") in (None, ""):
            continue
        y, err = success_with_ci([r])
        ax.errorbar(float(r["plan_time_ms"]), y[0], yerr=err,
                    fmt="o", capsize=3, label=f"{r['env']}/{r['encoder']}/{r['planner']}")
    for k, r in enumerate(x for x in rows if x.get("status") == "ok" and x.get("policy") in ("random", "oracle")):
        ax.axhline(float(r["success_rate"]), ls=":" if r["policy"] == "random" else "--", lw=0.8,
                   color="grey", label=f"{r['env']} {r['policy']}" + (" actions" if r["policy"] == "random" else ""))
    ax.set_xscale("log")
    ax.set_xlabel("planning time per replan (ms, log)")
    ax.set_ylabel("success rate (95% CI)")
    ax.set_ylim(-0.05, 1.05)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    return save_figure(fig, path)


def plot_gap_vs_success(rows: list[dict], path: Path) -> Path:
    """Success rate against the mean imagination gap (realised - predicted latent cost per executed
    plan), one marker per planner cell; colour per env, the bar spans the gap's 5-95% quantiles."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    envs = list(dict.fromkeys(r["env"] for r in rows))
    for r in rows:
        if r.get("status") != "ok" or r.get("gap_mean") in (None, ""):
            continue
        g = float(r["gap_mean"])
        xerr = None
        if r.get("gap_q05") not in (None, "") and r.get("gap_q95") not in (None, ""):
            xerr = [[max(g - float(r["gap_q05"]), 0.0)], [max(float(r["gap_q95"]) - g, 0.0)]]
        label = f"{r['env']}/{r['encoder']}/{r['planner']}"
        ax.errorbar(g, float(r["success_rate"]), xerr=xerr, fmt="o", capsize=2, lw=0.8,
                    color=f"C{envs.index(r['env']) % 10}", alpha=0.8)
        ax.annotate(label, (g, float(r["success_rate"])), fontsize=5, alpha=0.7,
                    xytext=(3, 3), textcoords="offset points")
    ax.axvline(0.0, color="grey", lw=0.8, ls=":")
    ax.set_xlabel("imagination gap: realised - predicted latent cost (mean, 5-95%)")
    ax.set_ylabel("success rate")
    ax.set_ylim(-0.05, 1.05)
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def _risk_lines(rows: list[dict]) -> dict[tuple[str, str, str], list[dict]]:
    """``(env, encoder, risk mode) -> rows by beta``: each mode's rows with beta > 0 after the pair's
    beta = 0 row (shared by every mode); only pairs evaluated at several betas."""
    ok = [r for r in rows if r.get("status") == "ok" and r.get("policy") == "planner"
          and r.get("risk") not in (None, "")]
    lines: dict[tuple[str, str, str], list[dict]] = {}
    for r in sorted(ok, key=lambda r: float(r["risk"])):
        if float(r["risk"]) > 0:
            lines.setdefault((r["env"], r["encoder"], r.get("risk_mode") or "disagreement"), []).append(r)
    out = {}
    for (env, enc, mode), rs in lines.items():
        zero = [r for r in ok if (r["env"], r["encoder"]) == (env, enc) and float(r["risk"]) == 0]
        out[env, enc, mode] = zero[:1] + rs
    return out


def plot_risk(rows: list[dict], path: Path) -> Path:
    """Success rate (95% CI) and mean imagination gap against the risk weight beta, one line per
    (env, encoder, risk mode) evaluated at several betas."""
    plt = pyplot()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.6))
    for i, ((env, enc, mode), rs) in enumerate(_risk_lines(rows).items()):
        b = [float(r["risk"]) for r in rs]
        y, err = success_with_ci(rs)
        style = "o-" if mode == "disagreement" else "s--"
        a1.errorbar(b, y, yerr=err, fmt=style, capsize=3, color=f"C{i}", label=f"{env}/{enc} ({mode})")
        a2.plot(b, [float(r["gap_mean"]) if r.get("gap_mean") not in (None, "") else np.nan for r in rs],
                style, color=f"C{i}", label=f"{env}/{enc} ({mode})")
    a1.set_xlabel("risk weight beta")
    a1.set_ylabel("success rate (95% CI)")
    a1.set_ylim(-0.05, 1.05)
    a2.set_xlabel("risk weight beta")
    a2.set_ylabel("imagination gap (mean)")
    a2.axhline(0.0, color="grey", lw=0.8, ls=":")
    for a in (a1, a2):
        a.grid(alpha=0.3)
    a1.legend(fontsize=6)
    return save_figure(fig, path)


def _risk_table(rows: list[dict]) -> list[str]:
    """Markdown lines: success and imagination gap per beta of each (env, encoder, risk mode)."""
    groups = _risk_lines(rows)
    if not groups:
        return []
    lines = ["", "## Risk-aware planning", "",
             "The same planner budget with the objective's risk weight beta: `disagreement` adds beta x the "
             "ensemble members' disagreement to the cost of their mean; `standardized` rescales the "
             "disagreement per replan so one standard deviation of it across the candidates weighs as much as "
             "one of the cost. Gap: realised - predicted latent cost per executed plan (mean; median; r = "
             "correlation of predicted and realised).", "",
             "| env | encoder | members | mode | beta | success (95% CI) | gap mean | gap median | r |",
             "|---|---|---|---|---|---|---|---|---|"]
    for (env, enc, mode), rs in groups.items():
        for r in rs:
            corr = r.get("gap_correlation")
            lines.append(f"| {env} | {enc} | {r.get('ensemble', '')} | {mode if float(r['risk']) else '-'} | "
                         f"{float(r['risk']):g} | {float(r['success_rate']):.2f} ({float(r['ci_low']):.2f}-"
                         f"{float(r['ci_high']):.2f}) | {_fmt(r.get('gap_mean'), '+.4f')} | "
                         f"{_fmt(r.get('gap_median'), '+.4f')} | {_fmt(corr, '.2f')} |")
    return lines


def _estimator_table(run: Path) -> list[str]:
    """Markdown lines: how well each proprio estimator reads proprio from an image (validation episodes
    of its dataset), next to always predicting the training mean."""
    found = [(p.parent.name, read_json(p)) for p in sorted((run / "estimators").glob("*/estimator.json"))]
    found = [(name, m) for name, m in found if m and m.get("val_mae")]
    if not found:
        return []
    lines = ["", "Proprio read from the goal image (rows labelled `proprio-from-goal-image`): the estimator's "
             "mean absolute error per proprio value on held-out episodes of its dataset (around the circle for "
             "values that wrap), against always predicting the training mean:", "",
             "| dataset | error per value | mean predictor | train time |", "|---|---|---|---|"]
    for name, m in found:
        fmt = lambda v: ", ".join(f"{x:.3f}" for x in v)  # noqa: E731
        lines.append(f"| {name.rsplit('-', 1)[0]} | {fmt(m['val_mae'])} | {fmt(m['val_mae_baseline'])} | "
                     f"{float(m['seconds']):.0f} s |")
    return lines


def _distance_table(run: Path) -> list[str]:
    """Markdown lines: each temporal distance's figures on held-out episodes of its dataset
    (:mod:`mpc.temporal_distance`), next to the best constant."""
    found = [(p.parent.name, read_json(p)) for p in sorted((run / "distances").glob("*/distance.json"))]
    found = [(name, m) for name, m in found if m and "val_loss" in m]
    if not found:
        return []
    lines = ["", "Learnt steps to the goal (rows labelled `temporal-distance`: each predicted frame costs its squared "
             "estimated steps to the goal frame, learnt from the exploration data alone, instead of the token MSE). "
             "On frame pairs of held-out episodes: the rank correlation of the distance with the steps recorded "
             "between them, and the expectile loss against the best constant:", "",
             "| entry and encoder | rank correlation | loss | best constant | train time |", "|---|---|---|---|---|"]
    for name, m in found:
        lines.append(f"| {name.rsplit('-', 1)[0]} | {float(m['val_spearman']):.2f} | {float(m['val_loss']):.2f} | "
                     f"{float(m['val_loss_constant']):.2f} | {float(m['seconds']):.0f} s |")
    return lines


def _ensemble_table(probes: list[dict]) -> list[str]:
    """Markdown lines: each ensemble's disagreement next to the cost spread a planner ranks
    (:func:`benchmarks.suite.probe.ensemble_probe`)."""
    if not probes:
        return []
    lines = ["", "Ensemble disagreement next to the cost differences a planner ranks (64 random action "
             "sequences from each of the first evaluation starts; std across candidates, mean over starts):", "",
             "| env | encoder | members | cost std | disagreement mean | disagreement std | ratio |",
             "|---|---|---|---|---|---|---|"]
    for p in probes:
        lines.append(f"| {p['env']} | {p['encoder']} | {p['members']} | {p['cost_std']:.4f} | "
                     f"{p['disagreement_mean']:.5f} | {p['disagreement_std']:.5f} | {p['ratio']:.4f} |")
    return lines


def plot_latent_vs_true(curves: dict[str, dict], path: Path, title: str = "", bins: int = 12) -> Path:
    """Latent distance to the goal against true distance, one colour per encoder.

    ``curves[encoder] = {"true": [...], "latent": [...], "spearman": optional float}``. Latent
    distances are divided by each encoder's largest one, so encoders of different scales share an
    axis; faint dots are the individual (state, goal) pairs, the line the mean per bin of true distance.
    """
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for i, (name, c) in enumerate(curves.items()):
        t, l = np.asarray(c["true"], float), np.asarray(c["latent"], float)
        l = l / max(l.max(), 1e-12)
        colour = f"C{i}"
        ax.scatter(t, l, s=4, alpha=0.15, color=colour, linewidths=0)
        centres, means = binned_means(t, l, bins)
        label = name if c.get("spearman") is None else f"{name} (Spearman {c['spearman']:.2f})"
        ax.plot(centres, means, "o-", ms=3, color=colour, label=label)
    ax.set_xlabel("true distance to goal")
    ax.set_ylabel("latent distance to goal (normalised)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def _fmt(v, spec):
    return "" if v in (None, "") else format(float(v), spec)


def write_report(run_dir: Path, rows: list[dict], meta: dict, monotonicity: dict | None = None,
                 figures: dict[str, str] | None = None, gifs: list[str] | None = None,
                 sections: list[str] | None = None) -> Path:
    """Write ``report.md``, ``results.csv`` and ``results.json`` into ``run_dir``.

    The main table shows the rows of the training condition (rows with a ``shift`` go to the CSV,
    the JSON and ``sections``); ``sections`` are markdown lines placed before the figures.
    """
    run_dir = Path(run_dir)
    with atomic_path(run_dir / "results.csv") as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: r.get(k, "") for k in COLUMNS})
    write_json(run_dir / "results.json", {"meta": meta, "rows": rows, "monotonicity": monotonicity or {}})
    lines = [f"# wmpc benchmark: suite `{meta.get('suite')}`", "",
             f"Machine: {meta.get('machine')}; torch {meta.get('torch')}; device {meta.get('device')}; "
             f"wall time of this invocation {meta.get('total_time_s', 0):.0f} s (models and cells already in "
             "the run folder were reused, not counted).",
             "Evaluation goals come from held-out seeds; training data is goal-free random exploration. "
             "Plans use the goal image only (rows labelled `goal-proprio` also use the goal's proprioception; "
             "rows labelled `proprio-from-goal-image` weigh proprio too, but read the goal's from the goal image "
             "with a proprio estimator trained on the same exploration data, so they still plan from the image "
             "alone; rows labelled `temporal-distance` plan with steps to the goal learnt from the same data "
             "instead of the token MSE).", "",
             "The imagination gap is the realised minus the predicted latent cost of each executed plan "
             "(> 0: the model promised more than the env delivered), mean over plans, with the Pearson "
             "correlation r of predicted and realised cost.", "",
             "| env | encoder | planner | success (95% CI) | episodes | plan time / replan | train time | "
             "params (enc + pred) | tokens | imagination gap (r) | status |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in (r for r in rows if not r.get("shift")):
        label = f" [{r['labels']}]" if r.get("labels") else ""
        if r.get("status") == "ok":
            succ = f"{float(r['success_rate']):.2f} ({float(r['ci_low']):.2f}-{float(r['ci_high']):.2f})"
        else:
            succ = "-"
        params = ""
        if r.get("encoder_params") not in (None, "") or r.get("predictor_params") not in (None, ""):
            params = f"{int(r.get('encoder_params') or 0):,} + {int(r.get('predictor_params') or 0):,}"
        tokens = f"{r['num_tokens']}x{r['token_dim']}" if r.get("num_tokens") not in (None, "") else ""
        pt = f"{_fmt(r.get('plan_time_ms'), '.1f')} ms" if r.get("plan_time_ms") not in (None, "") else ""
        tt = f"{_fmt(r.get('train_time_s'), '.0f')} s" if r.get("train_time_s") not in (None, "") else ""
        gap = ""
        if r.get("gap_mean") not in (None, ""):
            corr = r.get("gap_correlation")
            gap = f"{float(r['gap_mean']):+.4f}" + ("" if corr in (None, "") else f" ({float(corr):.2f})")
        lines.append(f"| {r['env']} | {r['encoder']}{label} | {r['planner']} | {succ} | {r.get('episodes', '')} | "
                     f"{pt} | {tt} | {params} | {tokens} | {gap} | {r.get('status', '')} |")
    if monotonicity:
        lines += ["", "## Latent distance against true distance", "",
                  "Planning succeeds when latent distance to the goal keeps growing with true distance across "
                  "the arena. Spearman rank correlation and the fraction of the range where the curve still rises:", "",
                  "| env | encoder | spearman | rising fraction |", "|---|---|---|---|"]
        for key, m in monotonicity.items():
            env, enc = key.split("/", 1)
            lines.append(f"| {env} | {enc} | {m['spearman']:.3f} | {m['rising_fraction']:.2f} |")
    lines += sections or []
    for name, rel in (figures or {}).items():
        lines += ["", f"![{name}]({rel})"]
    if gifs:
        lines += ["", "## Episodes", ""] + [f"![{Path(g).stem}]({g})" for g in gifs]
    text = "\n".join(lines) + "\n"
    with atomic_path(run_dir / "report.md") as tmp:
        tmp.write_text(text)
    return run_dir / "report.md"


# --- a suite run folder -> the report -----------------------------------------------------------
def _machine() -> str:
    import torch

    cpu = f"{os.cpu_count()} CPU cores ({platform.processor() or platform.machine()})"
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)}, {cpu}"
    return cpu


def _row_order(suite: SuiteSettings):
    """Sort key of report rows: env, then baselines before planner cells, in the suite's order."""
    envs, encs, plans = suite.env_order, suite.encoder_order, suite.planner_order

    def shift(r):
        shifts = ["", *suite.envs[r["env"]].shifts] if r["env"] in suite.envs else [""]
        return shifts.index(r.get("shift") or "") if (r.get("shift") or "") in shifts else len(shifts)

    def key(r):
        e = envs.index(r["env"]) if r["env"] in envs else len(envs)
        if r.get("policy") in BASELINES:
            return (e, 0, BASELINES.index(r["policy"]), 0, shift(r))
        c = encs.index(r["encoder"]) if r["encoder"] in encs else len(encs)
        p = plans.index(r["planner"]) if r["planner"] in plans else len(plans)
        return (e, 1, c, p, shift(r))
    return key


def _rows(run: Path, suite: SuiteSettings) -> list[dict]:
    """Every cell row of ``run`` in report order (baselines named by their policy)."""
    rows = []
    for path in sorted((run / "cells").glob("*.json")):
        row = read_json(path)
        if row is not None:
            if row.get("policy") in BASELINES:
                row["encoder"] = f"({row['policy']} actions)" if row["policy"] == "random" else "(oracle)"
            rows.append(row)
    rows.sort(key=_row_order(suite))
    return rows


def write_suite_report(suite: SuiteSettings, seconds: float) -> Path:
    """Gather every cell and probe of the suite's run folder into the report files and plots.

    Returns:
        the path of ``report.md``.
    """
    import torch

    run = suite.out
    rows = _rows(run, suite)
    base = [r for r in rows if not r.get("shift")]
    monot, curves_by_env, probes = {}, {}, []
    ensembles, full = [], {}
    for path in sorted((run / "probes").glob("*.json")):
        p = read_json(path)
        if p is None:
            continue
        if path.name.endswith(".ensemble.json"):
            ensembles.append(p)
            continue
        probes.append({"env": p["env"], "encoder": p["encoder"], "shift": p.get("shift", ""),
                       "spearman": p["spearman"]})
        if p.get("shift"):
            continue
        full[f"{p['env']}/{p['encoder']}"] = p
        monot[f"{p['env']}/{p['encoder']}"] = {"spearman": p["spearman"], "rising_fraction": p["rising_fraction"]}
        curves_by_env.setdefault(p["env"], {})[p["encoder"]] = {"true": p["true"], "latent": p["latent"],
                                                                 "spearman": p["spearman"]}
    figures = {}
    if any(r.get("status") == "ok" and r.get("plan_time_ms") not in (None, "") for r in base):
        plot_success_vs_time(base, run / "success_vs_time.png")
        figures["success rate against planning time per replan"] = "success_vs_time.png"
    if any(r.get("status") == "ok" and r.get("gap_mean") not in (None, "") for r in base):
        plot_gap_vs_success(base, run / "gap_vs_success.png")
        figures["success rate against the imagination gap"] = "gap_vs_success.png"
    if _risk_lines(base):
        plot_risk(base, run / "risk.png")
        figures["success and imagination gap against the risk weight beta"] = "risk.png"
    for env, curves in curves_by_env.items():
        name = f"latent_vs_true_{env}.png"
        plot_latent_vs_true(curves, run / name, title=f"{env}: latent vs true distance to the goal")
        figures[f"{env}: latent distance against true distance"] = name
    if budget_rows(rows, suite.reference_planner):
        plot_budget(rows, suite.reference_planner, run / "budget.png")
        figures["success against rollouts per replan"] = "budget.png"
    studies = budget_studies(suite, rows)
    if studies:  # its section links the figure
        plot_training_budget(studies, run / "training_budget.png", suite.budget_target)
    if has_shifts(rows):
        plot_generalization(rows, probes, run / "generalization.png")
        figures["success drop and probe under each distribution shift"] = "generalization.png"
    gifs = [r["gifs"][0] for r in base if r.get("status") == "ok" and r.get("policy") == "planner" and r.get("gifs")]
    meta = {"suite": suite.name, "machine": _machine(), "torch": torch.__version__, "device": suite.device,
            "total_time_s": seconds, "run": str(run), "select": suite.select,
            "eval_seconds_all_cells": sum(float(r.get("eval_time_s") or 0) for r in rows),
            "finished": time.strftime("%Y-%m-%d %H:%M:%S")}
    return write_report(run, rows, meta, monotonicity=monot, figures=figures, gifs=gifs[: suite.gifs],
                        sections=_risk_table(base) + explain_tables(run, base, full) + _estimator_table(run)
                        + _distance_table(run)
                        + _ensemble_table(ensembles)
                        + budget_tables(rows, suite.reference_planner)
                        + training_budget_tables(studies, suite.budget_target)
                        + shift_tables(rows, probes))
