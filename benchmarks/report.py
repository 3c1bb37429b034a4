"""Turn suite results into ``report.md``, ``results.csv``/``results.json`` and plots.

Every number in the report comes from the cells of one suite run folder.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

__all__ = ["write_report", "plot_latent_vs_true", "plot_success_vs_time"]

COLUMNS = ["env", "encoder", "planner", "policy", "labels", "success_rate", "ci_low", "ci_high",
           "episodes", "plan_time_ms", "train_time_s", "encoder_params", "predictor_params",
           "num_tokens", "token_dim", "status"]


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def plot_success_vs_time(rows: list[dict], path: Path) -> Path:
    """Success rate against planning time per replan, one marker per (env, encoder, planner)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    for r in rows:
        if r.get("status") != "ok" or r.get("plan_time_ms") in (None, ""):
            continue
        ax.errorbar(float(r["plan_time_ms"]), float(r["success_rate"]),
                    yerr=[[float(r["success_rate"]) - float(r["ci_low"])], [float(r["ci_high"]) - float(r["success_rate"])]],
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
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_latent_vs_true(curves: dict[str, dict], path: Path, title: str = "", bins: int = 12) -> Path:
    """Latent distance to the goal against true distance, one colour per encoder.

    ``curves[encoder] = {"true": [...], "latent": [...], "spearman": optional float}``. Latent
    distances are divided by each encoder's largest one, so encoders of different scales share an
    axis; faint dots are the individual (state, goal) pairs, the line the mean per bin of true distance.
    """
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for i, (name, c) in enumerate(curves.items()):
        t, l = np.asarray(c["true"], float), np.asarray(c["latent"], float)
        l = l / max(l.max(), 1e-12)
        colour = f"C{i}"
        ax.scatter(t, l, s=4, alpha=0.15, color=colour, linewidths=0)
        edges = np.linspace(t.min(), t.max(), bins + 1)
        which = np.clip(np.digitize(t, edges[1:-1]), 0, bins - 1)
        centres = [t[which == b].mean() for b in range(bins) if np.any(which == b)]
        means = [l[which == b].mean() for b in range(bins) if np.any(which == b)]
        label = name if c.get("spearman") is None else f"{name} (Spearman {c['spearman']:.2f})"
        ax.plot(centres, means, "o-", ms=3, color=colour, label=label)
    ax.set_xlabel("true distance to goal")
    ax.set_ylabel("latent distance to goal (normalised)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _fmt(v, spec):
    return "" if v in (None, "") else format(float(v), spec)


def write_report(run_dir: Path, rows: list[dict], meta: dict, monotonicity: dict | None = None,
                 figures: dict[str, str] | None = None, gifs: list[str] | None = None) -> Path:
    """Write ``report.md``, ``results.csv`` and ``results.json`` into ``run_dir``."""
    run_dir = Path(run_dir)
    with open(run_dir / "results.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: r.get(k, "") for k in COLUMNS})
    (run_dir / "results.json").write_text(json.dumps({"meta": meta, "rows": rows,
                                                      "monotonicity": monotonicity or {}}, indent=2))
    lines = [f"# wmpc benchmark: suite `{meta.get('suite')}`", "",
             f"Machine: {meta.get('machine')}; torch {meta.get('torch')}; device {meta.get('device')}; "
             f"total time {meta.get('total_time_s', 0):.0f} s.",
             "Evaluation goals come from held-out seeds; training data is goal-free random exploration. "
             "Plans use the goal image only (rows labelled `goal-proprio` also use the goal's proprioception).", "",
             "| env | encoder | planner | success (95% CI) | episodes | plan time / replan | train time | "
             "params (enc + pred) | tokens | status |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
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
        lines.append(f"| {r['env']} | {r['encoder']}{label} | {r['planner']} | {succ} | {r.get('episodes', '')} | "
                     f"{pt} | {tt} | {params} | {tokens} | {r.get('status', '')} |")
    if monotonicity:
        lines += ["", "## Latent distance against true distance", "",
                  "Planning succeeds when latent distance to the goal keeps growing with true distance across "
                  "the arena. Spearman rank correlation and the fraction of the range where the curve still rises:", "",
                  "| env | encoder | spearman | rising fraction |", "|---|---|---|---|"]
        for key, m in monotonicity.items():
            env, enc = key.split("/", 1)
            lines.append(f"| {env} | {enc} | {m['spearman']:.3f} | {m['rising_fraction']:.2f} |")
    for name, rel in (figures or {}).items():
        lines += ["", f"![{name}]({rel})"]
    if gifs:
        lines += ["", "## Episodes", ""] + [f"![{Path(g).stem}]({g})" for g in gifs]
    (run_dir / "report.md").write_text("\n".join(lines) + "\n")
    return run_dir / "report.md"
