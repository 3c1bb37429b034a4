"""Planner overhead and rollouts-to-a-cost on the tiny world model's latent cost (used by hot_path).

For each registered sampling/gradient planner on the ``tiny`` preset (16 tokens, random weights, 4 envs):

* planner-only time per iteration (cost ``actions.sum``, no model) against the time per iteration
  with the world-model rollout + latent MSE as the cost: the planner's own share of an iteration;
* rollouts per env needed until the best cost falls below a target: the goal tokens are the
  model's own prediction for a random action sequence (so cost 0 is reachable), the target is
  ``TARGET_FRACTION`` of the median cost of random candidates. Rollouts are counted at iteration
  ends (``info["rollouts"] / info["iterations"]`` per iteration).

``benchmarks/bench_planners.py`` measures the same overhead on synthetic costs; this module
measures it against the world model itself and needs no gymnasium.
"""
from __future__ import annotations

import torch

from benchmarks._timing import timed
from mpc.objectives import make_objective

__all__ = ["report", "PLANNERS"]

TARGET_FRACTION = 0.05
TOKENS = 16  # the tiny preset on 16 tokens (4 x 4 grid) keeps this table quick on a CPU
PLANNERS = {  # name -> options (budgets kept equal-ish: about 1000 rollouts per env)
    "cem": {"samples": 100, "iterations": 10, "elites": 10},
    "icem": {"samples": 100, "iterations": 10, "elites": 10, "min_samples": 20},
    "mppi": {"samples": 100, "iterations": 10, "elites": 10},
    "cem_gd": {"samples": 100, "iterations": 8, "elites": 10, "refine": 4, "steps": 5},
    "gd": {"restarts": 8, "steps": 100},
}
QUICK = {"cem": {"samples": 32, "iterations": 3, "elites": 4},
         "icem": {"samples": 32, "iterations": 3, "elites": 4, "min_samples": 8},
         "mppi": {"samples": 32, "iterations": 3, "elites": 4},
         "cem_gd": {"samples": 32, "iterations": 2, "elites": 4, "refine": 2, "steps": 3},
         "gd": {"restarts": 2, "steps": 5}}


def report(device, quick: bool = False, envs: int = 4) -> dict:
    """Measure and print the planner table; returns the numbers per planner."""
    from benchmarks.hot_path import H, _box, build_model, make_inputs
    from mpc.planners import make_planner

    device = torch.device(device)
    model = build_model("tiny", device, tokens=TOKENS)
    B = envs
    x = make_inputs(model, B, 1, seed=1)
    objective = make_objective("last")
    with torch.no_grad():
        g = torch.Generator().manual_seed(2)
        target_plan = (torch.rand(B, 1, H, model.action_dim, generator=g) * 2 - 1).to(device)
        goal = model.rollout(x["zc"], x["pc"], target_plan, x["pa"])[0][:, 0, -1]  # (B, N, D)
        rand = (torch.rand(B, 256, H, model.action_dim, generator=g) * 2 - 1).to(device)
        rand_cost = objective(model.rollout(x["zc"], x["pc"], rand, x["pa"])[0], goal)
    target = TARGET_FRACTION * float(rand_cost.median())

    def model_cost(actions):
        z, _ = model.rollout(x["zc"], x["pc"], actions, x["pa"])
        return objective(z, goal)

    def trivial_cost(actions):
        return actions.sum((-1, -2))

    table = QUICK if quick else PLANNERS
    print(f"\n## Planners on the tiny model's latent cost ({TOKENS} tokens, {B} envs, H = {H}); target cost "
          f"{target:.4g} = {TARGET_FRACTION:g} x median random cost")
    print(f"  {'planner':8s} {'iters':>5s} {'rollouts':>8s} {'planner-only':>13s} {'with model':>11s} "
          f"{'overhead':>8s} {'rollouts to target':>19s} {'final cost':>10s}")
    out = {}
    for name, opts in table.items():
        make = lambda: make_planner(name, action_space=_box(model), horizon=H, seed=0, device=device,  # noqa: E731
                                    **opts)
        planner_only, with_model = make(), make()
        t_plan, res_t = timed(lambda: planner_only.optimize(trivial_cost, batch=B), device)
        t_full, res = timed(lambda: with_model.optimize(model_cost, batch=B), device)
        iters = max(int(res.info["iterations"]), 1)
        per_iter = res.info["rollouts"] / iters
        hist = res.info["cost_history"]  # (iterations, B)
        reached = []
        for b in range(hist.shape[1]):
            hit = (hist[:, b] <= target).nonzero()
            reached.append(float((int(hit[0]) + 1) * per_iter) if len(hit) else float("nan"))
        done = [r for r in reached if r == r]
        mean_reach = sum(done) / len(done) if done else float("nan")
        it_only = t_plan / max(int(res_t.info["iterations"]), 1)
        it_full = t_full / iters
        out[name] = {"options": opts, "iterations": iters, "rollouts": int(res.info["rollouts"]),
                     "planner_ms_per_iter": 1e3 * it_only, "ms_per_iter": 1e3 * it_full,
                     "overhead_fraction": it_only / it_full, "rollouts_to_target": mean_reach,
                     "reached": f"{len(done)}/{len(reached)}", "final_cost": float(res.cost.mean())}
        reach = f"{mean_reach:8.0f} ({len(done)}/{len(reached)})" if done else f"  never (0/{len(reached)})"
        print(f"  {name:8s} {iters:5d} {int(res.info['rollouts']):8d} {1e3 * it_only:10.2f} ms "
              f"{1e3 * it_full:8.1f} ms {100 * it_only / it_full:7.1f}% {reach:>19s} "
              f"{float(res.cost.mean()):10.4g}")
    return out
