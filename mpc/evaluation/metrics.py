"""What an evaluation reports: the success rate with its Wilson interval, the result record, one line.

:func:`summarize` turns the per-episode rows of the closed loop into an :class:`EvalResult`;
:func:`format_result` prints it as one line.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

__all__ = ["wilson_interval", "EvalResult", "gap_statistics", "summarize", "format_result"]


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a success rate (``(0, 1)`` when ``n`` is 0)."""
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


@dataclass
class EvalResult:
    """One evaluation: settings, aggregate metrics and one row per episode."""

    env: str
    policy: str  # planner | random | oracle
    planner: str | None  # the planner's name (policy=planner only)
    episodes: int
    steps: int  # env steps per episode
    success_rate: float  # episodes that reached the goal at any step
    success_ci95: tuple[float, float]  # Wilson interval of success_rate
    final_success_rate: float  # episodes at the goal on their last step
    mean_plan_time_s: float | None  # seconds per replan (policy=planner only)
    mean_final_distance: float | None  # true-state distance to the goal at the end (None: the env reports none)
    mean_initial_distance: float | None
    mean_final_latent_distance: float | None  # token MSE to the goal at the end (with a world model)
    per_episode: list = field(default_factory=list)  # dicts: episode, seed, reached, distances
    labels: list = field(default_factory=list)  # notes such as "goal-proprio"
    imagination_gap: dict | None = None  # realised - predicted latent cost per plan (gap_statistics)
    mean_rollouts_per_plan: float | None = None  # candidate rollouts per env per replan (policy=planner)
    env_options: dict | None = None  # the make_env options every episode ran with


def _finite_mean(values: list[float]) -> float | None:
    """Mean of the finite values; None when there are none (an env that reports no distance)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    return float(v.mean()) if v.size else None


def _fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def gap_statistics(pairs: list[tuple[float, float]]) -> dict | None:
    """Summary of the imagination gap from ``(predicted, realised)`` latent costs, one per plan.

    Returns:
        None without pairs, else a dict: ``plans``, ``mean`` (of realised - predicted; > 0: the
        model promised more than it delivered), ``quantiles`` (of the gap at 0.05, 0.25, 0.5, 0.75,
        0.95, keyed by the level), ``mean_predicted``, ``mean_realised``, ``correlation`` (Pearson
        between predicted and realised; None when either is constant).
    """
    if not pairs:
        return None
    pred, real = np.asarray(pairs, np.float64).T  # (n,), (n,)
    gap = real - pred
    corr = (float(np.corrcoef(pred, real)[0, 1]) if len(pred) > 1 and pred.std() > 0 and real.std() > 0
            else None)
    levels = (0.05, 0.25, 0.5, 0.75, 0.95)
    return {"plans": int(len(gap)), "mean": float(gap.mean()),
            "quantiles": {str(q): float(v) for q, v in zip(levels, np.quantile(gap, levels))},
            "mean_predicted": float(pred.mean()), "mean_realised": float(real.mean()),
            "correlation": corr}


def summarize(rows: list[dict], *, env: str, policy: str, planner: str | None, steps: int,
              plan_times: list[float], latent_distances: list[float],
              labels: list[str], imagination: list[tuple[float, float]] | None = None,
              plan_rollouts: list[int] | None = None) -> EvalResult:
    """Aggregate per-episode rows (``reached``, ``final_success``, ``initial_distance``,
    ``final_distance``) into an :class:`EvalResult`; ``imagination``: ``(predicted, realised)``
    latent costs of the executed plans (see :func:`gap_statistics`)."""
    n = len(rows)
    k = sum(r["reached"] for r in rows)
    return EvalResult(
        env=env, policy=policy, planner=planner, episodes=n, steps=steps, success_rate=k / n,
        success_ci95=wilson_interval(k, n),
        final_success_rate=sum(r["final_success"] for r in rows) / n,
        mean_plan_time_s=float(np.mean(plan_times)) if plan_times else None,
        mean_final_distance=_finite_mean([r["final_distance"] for r in rows]),
        mean_initial_distance=_finite_mean([r["initial_distance"] for r in rows]),
        mean_final_latent_distance=float(np.mean(latent_distances)) if latent_distances else None,
        per_episode=rows, labels=list(labels),
        imagination_gap=gap_statistics(imagination or []),
        mean_rollouts_per_plan=float(np.mean(plan_rollouts)) if plan_rollouts else None)


def format_result(r: EvalResult) -> str:
    """One line: success rate with its interval, distances, and planning time when a planner ran."""
    lo, hi = r.success_ci95
    s = (f"{r.env} | {r.policy}{'/' + r.planner if r.planner else ''}: success {r.success_rate:.2f} "
         f"[95% CI {lo:.2f}-{hi:.2f}] over {r.episodes} episodes of {r.steps} steps "
         f"(final-step success {r.final_success_rate:.2f}); true distance {_fmt(r.mean_initial_distance, '.3f')} -> "
         f"{_fmt(r.mean_final_distance, '.3f')}")
    if r.mean_plan_time_s is not None:
        s += f"; {r.mean_plan_time_s * 1e3:.1f} ms per replan; final latent distance {_fmt(r.mean_final_latent_distance, '.4f')}"
    if r.imagination_gap is not None:
        g = r.imagination_gap
        s += f"; imagination gap {g['mean']:+.4f} over {g['plans']} plans"
    if r.labels:
        s += f" [{', '.join(r.labels)}]"
    return s
