"""Rollout throughput of ``WorldModel.rollout`` (the planner's hot path), cached vs uncached.

Run: ``python -m pytest benchmarks/bench_rollout.py --benchmark-only``. Each round rolls S = 300
candidate action sequences H = 5 steps forward from a context of ``num_hist`` frames of 196 x 384
tokens (DINOv2 ViT-S/14 at 224 px) with randomly initialised weights, for the ``tiny`` and
``dino_wm`` presets. ``cached`` uses the KV cache with the context computed once (prefix sharing);
``uncached`` recomputes the whole history every step (the reference semantics).
``extra_info["cand_steps_per_s"]`` holds candidates x steps per second.

Environment variables: ``WMPC_BENCH_DEVICE`` (default: cuda when available, else cpu),
``WMPC_BENCH_S`` (candidates, default 300), ``WMPC_BENCH_H`` (horizon, default 5),
``WMPC_BENCH_BF16=1`` (bf16 autocast on CUDA). On CPU the dino_wm rounds take minutes: one round each.
"""
from __future__ import annotations

import os

import pytest
import torch

from benchmarks._timing import bench_device, rollout_runner
from mpc.world_model import WorldModel, config_from_preset

N, D, A, P = 196, 384, 2, 4
S = int(os.environ.get("WMPC_BENCH_S", 300))
H = int(os.environ.get("WMPC_BENCH_H", 5))
DEVICE = bench_device()
BF16 = os.environ.get("WMPC_BENCH_BF16", "0") == "1"


@pytest.mark.parametrize("use_cache", [True, False], ids=["cached", "uncached"])
@pytest.mark.parametrize("preset", ["tiny", "dino_wm"])
def test_rollout_throughput(benchmark, preset, use_cache):
    cfg = config_from_preset(preset, num_tokens=N, token_dim=D, env_action_dim=A, proprio_dim=P)
    cfg.predictor.autocast_bf16 = BF16
    torch.manual_seed(0)
    model = WorldModel(cfg).to(DEVICE).eval()
    run, times = rollout_runner(model, S, H, DEVICE, use_cache=use_cache)

    heavy = DEVICE.type == "cpu" and preset == "dino_wm"
    rounds, warmup = (1, 0) if heavy else ((3, 1) if DEVICE.type == "cpu" else (10, 2))
    z_pred, _ = benchmark.pedantic(run, rounds=rounds, iterations=1, warmup_rounds=warmup)
    assert z_pred.shape == (S, H, N, D) and torch.isfinite(z_pred).all()
    best = min(times[warmup:] or times)
    benchmark.extra_info.update({
        "preset": preset, "cached": use_cache, "device": str(DEVICE), "S": S, "H": H, "N": N, "D": D,
        "bf16": BF16 and DEVICE.type == "cuda", "threads": torch.get_num_threads(),
        "cand_steps_per_s": S * H / best, "rollout_s": best,
    })


def _model(preset: str, tokens: int, token_dim: int = D, **predictor) -> WorldModel:
    """A randomly initialised ``preset`` world model at ``tokens`` x ``token_dim`` latents."""
    from mpc.world_model import load_preset

    pre = load_preset(preset)
    pre.update(num_tokens=None, token_dim=None)  # the preset's own token check: this size's tokens
    pre["predictor"].update(predictor)
    cfg = config_from_preset(pre, num_tokens=tokens, token_dim=token_dim, env_action_dim=A, proprio_dim=P)
    torch.manual_seed(0)
    return WorldModel(cfg).to(DEVICE).eval()


@pytest.mark.parametrize("chunk_rows", [512, 10 ** 9], ids=["mlp_chunks", "mlp_one_pass"])
def test_mlp_chunks_dino_wm16(benchmark, monkeypatch, chunk_rows):
    """The ``dino_wm`` predictor at 16 x 384 tokens (DINOv2 at 56 px, the ``dino_wm16`` plan's size), S
    candidates from num_hist context frames: each block's MLP in 512-row chunks (the CPU default) or in one
    pass over all S x 16 rows. The same values either way (tests/mpc/test_world_model.py)."""
    import mpc.attention

    monkeypatch.setattr(mpc.attention, "MLP_CHUNK_ROWS", chunk_rows)
    model = _model("dino_wm", 16)
    run, times = rollout_runner(model, S, H, DEVICE, use_cache=True)
    z_pred, _ = benchmark.pedantic(run, rounds=5, iterations=1, warmup_rounds=1)
    assert z_pred.shape == (S, H, 16, D) and torch.isfinite(z_pred).all()
    benchmark.extra_info.update({"chunk_rows": chunk_rows, "device": str(DEVICE), "S": S, "H": H,
                                 "threads": torch.get_num_threads(), "rollout_s": min(times[1:] or times)})


SUITE_MODEL = {"preset": "tiny", "tokens": 1, "token_dim": 32, "dim": 64, "mlp_dim": 128}  # the suites' model


@pytest.mark.parametrize("tile", [4096, 0], ids=["small_tile_matmuls", "sdpa"])
@pytest.mark.parametrize("size", ["dino_wm16", "suite"])
def test_small_tile_attention(benchmark, monkeypatch, size, tile):
    """CPU inference attention on small score tiles: two matmuls and an in-place softmax (the default,
    ``mpc.attention.SMALL_TILE`` entries per head) or torch's SDPA kernel (``tile = 0``), in a cached
    rollout of S candidates at the ``dino_wm16`` size (16 x 384 tokens, 16 x 48 score tiles) and at the
    suites' 1-token model (``tiny`` at width 64, 1 x 3 tiles). The same values either way
    (tests/mpc/test_predictor.py)."""
    import mpc.attention

    monkeypatch.setattr(mpc.attention, "SMALL_TILE", tile)
    model = _model("dino_wm", 16) if size == "dino_wm16" else _model(
        SUITE_MODEL["preset"], SUITE_MODEL["tokens"], SUITE_MODEL["token_dim"], dim=SUITE_MODEL["dim"],
        mlp_dim=SUITE_MODEL["mlp_dim"])
    run, times = rollout_runner(model, S, H, DEVICE, use_cache=True)
    rounds = 5 if size == "dino_wm16" else 50
    z_pred, _ = benchmark.pedantic(run, rounds=rounds, iterations=1, warmup_rounds=1)
    assert torch.isfinite(z_pred).all()
    benchmark.extra_info.update({"tile": tile, "size": size, "device": str(DEVICE), "S": S, "H": H,
                                 "threads": torch.get_num_threads(), "rollout_s": min(times[1:] or times)})
