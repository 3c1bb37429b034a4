"""Planner overhead per iteration, and rollouts needed to reach a cost, for every registered planner.

Run: ``python -m pytest benchmarks/bench_planners.py --benchmark-only`` (device from
``WMPC_BENCH_DEVICE``, default cuda when present, else cpu), or ``python benchmarks/bench_planners.py``
for a markdown table. Two costs:

- trivial: ``cost = actions.sum((-1, -2))``, so the time is the planner's own work;
- mlp: a fixed 2-layer MLP on the flattened sequence (``H*A -> 512 -> 1``) of known FLOPs,
  ``2 * (H*A*512 + 512)`` per candidate, standing in for a world-model rollout.

``extra_info`` holds ``ms_per_iteration``, ``candidates_per_iteration``, ``overhead_ms_per_iteration``
(mlp time minus the cost function's own time on the same candidates) and ``cost_gflop_per_iteration``.
The table adds rollouts-to-reach: candidates evaluated per problem until the best cost of a
shifted quadratic falls below 1e-3 (mean over problems; "-" if never).
"""
from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from benchmarks._timing import bench_device, mean_time
from mpc.planners import list_planners, make_planner

B, H, A, HIDDEN = 8, 5, 4, 512
DEVICE = bench_device()
BOX = gym.spaces.Box(-1.0, 1.0, (A,), np.float32)


def trivial_cost(actions: torch.Tensor) -> torch.Tensor:
    """(B, S, H, A) -> (B, S); next to no work."""
    return actions.sum((-1, -2))


def mlp_cost():
    """A fixed MLP cost and its FLOPs per candidate."""
    g = torch.Generator().manual_seed(0)
    w1 = (torch.randn(H * A, HIDDEN, generator=g) / (H * A) ** 0.5).to(DEVICE)
    w2 = (torch.randn(HIDDEN, 1, generator=g) / HIDDEN ** 0.5).to(DEVICE)

    def cost(actions: torch.Tensor) -> torch.Tensor:
        x = actions.flatten(-2)                                              # (B, S, H*A)
        return (torch.relu(x @ w1) @ w2)[..., 0]                             # (B, S)
    return cost, 2 * (H * A * HIDDEN + HIDDEN)


@pytest.mark.parametrize("cost_name", ["trivial", "mlp"])
@pytest.mark.parametrize("name", list_planners())
def test_planner_iteration_time(benchmark, name, cost_name):
    cost_fn, flops = mlp_cost() if cost_name == "mlp" else (trivial_cost, 0)
    planner = make_planner(name, BOX, horizon=H, seed=0, device=DEVICE)
    res = benchmark.pedantic(lambda: planner.optimize(cost_fn, batch=B), rounds=3, warmup_rounds=1)
    iters = res.info["iterations"]
    per_iter_s = benchmark.stats.stats.mean / iters
    cands = res.info["rollouts"] / iters
    probe = torch.zeros(B, int(round(cands)), H, A, device=DEVICE)
    cost_s = mean_time(lambda: cost_fn(probe), DEVICE)
    benchmark.extra_info.update(
        device=str(DEVICE), ms_per_iteration=1e3 * per_iter_s, candidates_per_iteration=cands,
        overhead_ms_per_iteration=1e3 * (per_iter_s - cost_s),
        cost_gflop_per_iteration=flops * B * cands / 1e9)


def rollouts_to_reach(name: str, threshold: float = 1e-3) -> float | None:
    """Mean candidates evaluated per problem until the best cost of a shifted quadratic < ``threshold``."""
    target = (torch.rand(B, H, A, generator=torch.Generator().manual_seed(1)) * 1.6 - 0.8).to(DEVICE)
    rollouts: list[int] = []

    def cost_fn(a):
        return ((a - target[:, None]) ** 2).sum((-1, -2))
    res = make_planner(name, BOX, horizon=H, seed=0, device=DEVICE).optimize(
        cost_fn, batch=B, callback=lambda it, state: rollouts.append(state["rollouts"]))
    hit = res.info["cost_history"].cpu() < threshold                         # (iters, B)
    if not bool(hit.any(0).all()):
        return None
    first = hit.float().argmax(0)                                            # (B,) first iteration below
    return float(np.mean([rollouts[int(i)] for i in first]))


def main() -> None:
    rows = ["| planner | ms/iter (trivial) | ms/iter (mlp) | overhead ms/iter | cand/iter | iters | rollouts to cost<1e-3 |",
            "|---|---|---|---|---|---|---|"]
    mlp, _ = mlp_cost()
    for name in list_planners():
        planner = make_planner(name, BOX, horizon=H, seed=0, device=DEVICE)
        out = {}
        for key, fn in (("trivial", trivial_cost), ("mlp", mlp)):
            res = planner.optimize(fn, batch=B)
            out[key] = mean_time(lambda: planner.optimize(fn, batch=B), DEVICE) / res.info["iterations"]
        iters = res.info["iterations"]
        cands = res.info["rollouts"] / iters
        cost_s = mean_time(lambda: mlp(torch.zeros(B, int(round(cands)), H, A, device=DEVICE)), DEVICE)
        reach = rollouts_to_reach(name)
        rows.append(f"| {name} | {1e3 * out['trivial']:.2f} | {1e3 * out['mlp']:.2f} | "
                    f"{1e3 * (out['mlp'] - cost_s):.2f} | {cands:.0f} | {iters} | "
                    f"{'-' if reach is None else f'{reach:.0f}'} |")
    print(f"device: {DEVICE}, B={B}, H={H}, A={A}, box [-1, 1]")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
