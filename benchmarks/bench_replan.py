"""One full replan (encode the observation and the goal + plan) for each planner.

Run: ``python -m pytest benchmarks/bench_replan.py --benchmark-only``. A ``tiny`` world model
(randomly initialised) sits on a randomly initialised DINOv2 ViT-S/14 at 56 px (16 patch tokens x
384; labelled ``random`` in ``extra_info``: only the cost of the computation is measured, not
the quality of the plan). Each round builds a fresh :class:`mpc.MPCController` and calls ``act``
once for ``B`` envs, i.e. one replan with the planner's default options (CEM: 300 x 30).

Environment variables: ``WMPC_BENCH_DEVICE`` (default cuda when available, else cpu),
``WMPC_BENCH_B`` (envs planned at once, default 1).
"""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from gymnasium import spaces

import encoders
from benchmarks._timing import bench_device, timed
from mpc.controller import MPCController
from mpc.planners import list_planners
from mpc.world_model import WorldModel, config_from_preset

DEVICE = bench_device()
B = int(os.environ.get("WMPC_BENCH_B", 1))
A, P, IMG = 2, 4, 64


@pytest.fixture(scope="module")
def model():
    enc = encoders.make_encoder("dinov2", weights="random", image_size=56, tokens="patch").to(DEVICE)
    cfg = config_from_preset("tiny", num_tokens=enc.num_tokens, token_dim=enc.dim, env_action_dim=A,
                             proprio_dim=P, encoder="dinov2")
    torch.manual_seed(0)
    return WorldModel(cfg, encoder=enc).to(DEVICE).eval()


@pytest.mark.parametrize("planner", list_planners())
def test_replan(benchmark, model, planner):
    rng = np.random.default_rng(0)
    obs = {"pixels": rng.integers(0, 256, (B, IMG, IMG, 3), dtype=np.uint8),
           "proprio": rng.standard_normal((B, P)).astype(np.float32)}
    goal = rng.integers(0, 256, (B, IMG, IMG, 3), dtype=np.uint8)
    box = spaces.Box(-1.0, 1.0, (A,), np.float32)
    times = []

    def replan():
        ctrl = MPCController(model, planner, horizon=5, action_space=box, device=DEVICE)
        seconds, action = timed(lambda: ctrl.act(obs, goal), DEVICE)
        times.append(seconds)
        return action, ctrl

    (action, ctrl) = benchmark.pedantic(replan, rounds=2, iterations=1, warmup_rounds=1)
    assert action.shape == (B, A) and np.all(np.abs(action) <= 1.0)
    benchmark.extra_info.update({
        "planner": planner, "encoder": "dinov2-vits14 (random weights)", "model": "tiny (random weights)",
        "device": str(DEVICE), "B": B, "rollouts": int(ctrl.last_plan_info.get("rollouts", 0)),
        "replan_s": min(times[1:] or times),
    })
