"""Cost of an ensemble rollout (K = 5 members) against a single model's, for both ensemble kinds.

Run: ``python -m pytest benchmarks/bench_ensemble.py --benchmark-only``. Each round rolls S
candidates H = 5 steps forward with the ``tiny`` preset from a context of ``num_hist`` frames of
N x D tokens, for K = 1 and K = 5, returning every member's prediction: ``full`` (five whole
predictors in one vmapped call, each rolling out on its own predictions) and ``heads`` (one shared
trunk read by five heads, mpc.ensemble.HeadsEnsemble). The K = 5 rounds store
``extra_info["ratio_to_single"]`` (their best time over the K = 1 round's; the target is <= 2).

Environment variables: ``WMPC_BENCH_DEVICE`` (default: cuda when available, else cpu),
``WMPC_BENCH_S`` (candidates, default 64), ``WMPC_BENCH_N`` (tokens, default 16),
``WMPC_BENCH_D`` (token dim, default 32).
"""
from __future__ import annotations

import os

import pytest
import torch

from benchmarks._timing import bench_device, rollout_runner
from mpc.world_model import WorldModel, config_from_preset

S = int(os.environ.get("WMPC_BENCH_S", 64))
N = int(os.environ.get("WMPC_BENCH_N", 16))
D = int(os.environ.get("WMPC_BENCH_D", 32))
H, A, P = 5, 2, 4
DEVICE = bench_device()
_best: dict[tuple, float] = {}  # (K, kind) -> best seconds per rollout


@pytest.mark.parametrize("K,kind", [(1, "single"), (5, "full"), (5, "heads")])
def test_ensemble_rollout(benchmark, K, kind):
    cfg = config_from_preset("tiny", num_tokens=N, token_dim=D, env_action_dim=A, proprio_dim=P)
    cfg.ensemble = K
    cfg.ensemble_kind = "full" if kind == "single" else kind
    torch.manual_seed(0)
    model = WorldModel(cfg).to(DEVICE).eval()
    run, times = rollout_runner(model, S, H, DEVICE, members=True)

    rounds, warmup = (5, 1) if DEVICE.type == "cpu" else (20, 3)
    z_pred, _ = benchmark.pedantic(run, rounds=rounds, iterations=1, warmup_rounds=warmup)
    assert z_pred.shape == (S, K, H, N, D) and torch.isfinite(z_pred).all()
    _best[K, kind] = min(times[warmup:] or times)
    benchmark.extra_info.update({"K": K, "kind": kind, "S": S, "H": H, "N": N, "D": D, "device": str(DEVICE),
                                 "threads": torch.get_num_threads(), "rollout_s": _best[K, kind]})
    if K > 1 and (1, "single") in _best:
        benchmark.extra_info["ratio_to_single"] = _best[K, kind] / _best[1, "single"]
