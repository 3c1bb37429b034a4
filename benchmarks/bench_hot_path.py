"""pytest-benchmark cases of the hot path: wmpc against the DINO-WM-style reference (small sizes).

Run: ``python -m pytest benchmarks/bench_hot_path.py --benchmark-only``. The same cases as
``python -m benchmarks.hot_path`` at sizes that finish in a couple of minutes on 2 CPU cores:
a CEM plan (S x I, horizon 5) and one rollout at the ``tiny`` size (4 envs) and the ``dino_wm`` size
(1 env), each for wmpc and for :mod:`benchmarks.reference`. ``extra_info`` holds S, I, B and the
analytic FLOPs of one rollout. Peak memory is reported by ``benchmarks/hot_path.py`` only (it needs a
process per measurement).

Environment variables: ``WMPC_BENCH_DEVICE`` (default: cuda when available, else cpu),
``WMPC_HOT_TINY`` (``SxI``, default 64x3), ``WMPC_HOT_DINO`` (``SxI``, default 8x1).
"""
from __future__ import annotations

import os

import pytest
import torch

from benchmarks._timing import bench_device, sync
from benchmarks.hot_path import H, _box, build_model, make_inputs, rollout_flops
from benchmarks.reference import ReferenceWorldModel, reference_cem_plan
from mpc.objectives import make_objective
from mpc.planners import make_planner

DEVICE = bench_device()
SIZES = {"tiny": (4, os.environ.get("WMPC_HOT_TINY", "64x3")),
         "dino_wm": (1, os.environ.get("WMPC_HOT_DINO", "8x1"))}


def _case(size):
    B, si = SIZES[size]
    S, I = (int(v) for v in si.lower().split("x"))
    model = build_model(size, DEVICE)
    return model, make_inputs(model, B, S), B, S, I


@pytest.mark.parametrize("impl", ["wmpc", "reference"])
@pytest.mark.parametrize("size", list(SIZES))
def test_plan(benchmark, size, impl):
    model, x, B, S, I = _case(size)
    topk = max(2, min(30, S // 10))
    if impl == "wmpc":
        objective = make_objective("last")
        planner = make_planner("cem", action_space=_box(model), horizon=H, device=DEVICE, samples=S,
                               iterations=I, elites=topk)

        def cost_fn(actions):
            return objective(model.rollout(x["zc"], x["pc"], actions, x["pa"])[0], x["goal"])

        def run():
            out = planner.optimize(cost_fn, batch=B).actions
            sync(DEVICE)
            return out
    else:
        ref = ReferenceWorldModel(model)
        ones = torch.ones(model.action_dim, device=DEVICE)

        def run():
            out = reference_cem_plan(ref, x["zc"], x["pc"], x["goal"], x["pa"], -ones, ones, horizon=H,
                                     samples=S, iterations=I, topk=topk)[0]
            sync(DEVICE)
            return out
    with torch.inference_mode():
        actions = benchmark.pedantic(run, rounds=1, iterations=1, warmup_rounds=0)
    assert actions.shape == (B, H, model.action_dim) and torch.isfinite(actions).all()
    assert actions.abs().max() <= 1.0
    benchmark.extra_info.update({"size": size, "impl": impl, "B": B, "S": S, "I": I, "device": str(DEVICE),
                                 "rollout_flops": rollout_flops(model, B, S)})


@pytest.mark.parametrize("impl", ["wmpc", "reference"])
@pytest.mark.parametrize("size", list(SIZES))
def test_rollout(benchmark, size, impl):
    model, x, B, S, _ = _case(size)
    fn = model.rollout if impl == "wmpc" else ReferenceWorldModel(model).rollout

    def run():
        out = fn(x["zc"], x["pc"], x["actions"], x["pa"])
        sync(DEVICE)
        return out
    with torch.inference_mode():
        z, _ = benchmark.pedantic(run, rounds=1 if size == "dino_wm" else 3, iterations=1, warmup_rounds=1)
    assert z.shape == (B, S, H, model.num_tokens, model.token_dim) and torch.isfinite(z).all()
    benchmark.extra_info.update({"size": size, "impl": impl, "B": B, "S": S, "device": str(DEVICE),
                                 "rollout_flops": rollout_flops(model, B, S)})
