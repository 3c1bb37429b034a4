"""Hot-path equalities: chunked == unchunked, compiled == eager, the benchmark's variants == rollout.

Cached == uncached for every predictor preset is tested with the world model
(``tests/mpc/test_world_model.py::test_cached_rollout_equals_uncached``); reference == wmpc in
``tests/benchmarks/test_reference.py``.
"""
from __future__ import annotations

import pytest
import torch

from benchmarks.hot_path import build_model, cached_per_candidate, make_inputs, measure, rollout_flops
from mpc.memory import candidate_chunk, chunked_rollout, rollout_bytes_per_candidate
from mpc.world_model import config_from_preset


@pytest.fixture(scope="module")
def tiny():
    return build_model("tiny", "cpu", tokens=16)


def test_chunked_rollout_equals_unchunked(tiny):
    x = make_inputs(tiny, batch=2, samples=7)
    with torch.no_grad():
        z1, p1 = tiny.rollout(x["zc"], x["pc"], x["actions"], x["pa"])
        for chunk in (1, 3, 7, 50):
            z2, p2 = chunked_rollout(tiny.rollout, x["zc"], x["pc"], x["actions"], x["pa"], chunk=chunk)
            torch.testing.assert_close(z2, z1, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(p2, p1, atol=1e-5, rtol=1e-5)
        # unbatched layout (S, H, Am) splits along S too
        z3, _ = chunked_rollout(tiny.rollout, x["zc"][0], x["pc"][0], x["actions"][0], x["pa"][0], chunk=2)
        torch.testing.assert_close(z3, z1[0], atol=1e-5, rtol=1e-5)


def test_candidate_chunk_respects_budget_and_caps():
    cfg = config_from_preset("dino_wm", num_tokens=196, token_dim=384, env_action_dim=2, proprio_dim=4)
    per = rollout_bytes_per_candidate(cfg, context=3, horizon=5)
    assert 10 * 2**20 < per < 200 * 2**20  # tens of MiB per dino_wm candidate
    assert rollout_bytes_per_candidate(cfg, 3, 5, use_cache=False) > per  # recompute costs more
    chunk = candidate_chunk(cfg, batch=1, samples=300, context=3, horizon=5, memory_budget_mb=1024)
    assert 1 <= chunk < 300 and chunk * per <= 1024 * 2**20 < (chunk + 1) * per
    chunk4 = candidate_chunk(cfg, 4, 300, 3, 5, memory_budget_mb=1024)  # B envs share the budget
    assert chunk4 * 4 * per <= 1024 * 2**20 < (chunk4 + 1) * 4 * per
    assert candidate_chunk(cfg, 4, 300, 3, 5, max_batch=100) == 25
    assert candidate_chunk(cfg, 1, 300, 3, 5) == 300  # no budget, no cap
    assert candidate_chunk(cfg, 1, 300, 3, 5, memory_budget_mb=1e-3) == 1  # never below one
    with pytest.raises(ValueError, match="max_batch"):
        candidate_chunk(cfg, 1, 300, 3, 5, max_batch=0)
    with pytest.raises(ValueError, match="memory_budget_mb"):
        candidate_chunk(cfg, 1, 300, 3, 5, memory_budget_mb=-5)
    assert 1 <= candidate_chunk(cfg, 1, 300, 3, 5, memory_budget_mb="auto") <= 300


def test_no_prefix_sharing_variant_equals_rollout(tiny):
    x = make_inputs(tiny, batch=2, samples=5)
    with torch.no_grad():
        z1, p1 = tiny.rollout(x["zc"], x["pc"], x["actions"], x["pa"])
        z2, p2 = cached_per_candidate(tiny, x["zc"], x["pc"], x["pa"], x["actions"])
    torch.testing.assert_close(z2, z1, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(p2, p1, atol=1e-5, rtol=1e-5)


def test_analytic_flops_match_the_flop_counter(tiny, monkeypatch):
    from torch.utils.flop_counter import FlopCounterMode

    import mpc.attention
    x = make_inputs(tiny, batch=2, samples=3)

    def counted():
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            tiny.rollout(x["zc"], x["pc"], x["actions"], x["pa"])
        return counter.get_flop_counts()["Global"]

    # small score tiles run QK^T and AV as plain matmuls, which the counter counts as such
    total = sum(counted().values())
    # the counter also sees the tiny action/proprio embeddings the analytic count leaves out, and
    # the masked context prefill's hidden scores, computed there and left out of the analytic count
    assert 0.995 * total <= rollout_flops(tiny, batch=2, samples=3) <= total
    monkeypatch.setattr(mpc.attention, "SMALL_TILE", 0)  # SDPA: attention counted apart
    counts = counted()
    matmuls = sum(v for k, v in counts.items() if "attention" not in str(k))
    analytic = rollout_flops(tiny, batch=2, samples=3, attention=False)
    assert 0.999 * matmuls <= analytic <= matmuls
    assert rollout_flops(tiny, batch=2, samples=3) > analytic  # plus QK^T and AV


def test_measure_runs_each_kind():
    base = {"size": "tiny", "batch": 1, "samples": 4, "device": "cpu", "threads": 1}
    for kind in ("rollout", "ref_rollout", "rollout_no_sharing"):
        r = measure({**base, "kind": kind})
        assert r["seconds"] > 0 and r["peak_mb"] >= r["base_mb"] > 0
    for kind in ("plan", "ref_plan"):  # a plan's warm-up is one CEM iteration
        r = measure({**base, "kind": kind, "iterations": 2, "topk": 2, "context": 1, "warmup": 1})
        assert r["seconds"] > 0 and r["flops"] == rollout_flops(build_model("tiny", "cpu"), 1, 4, context=1)
    r = measure({**base, "kind": "rollout_budget", "budget_mb": 1e-3})
    assert r["chunk"] == 1
    r = measure({"kind": "matmul", "n": 64, "repeat": 2, "threads": 1})
    assert r["flops"] == 2 * 64 ** 3 and r["seconds"] > 0


def test_settings_and_summary():
    from benchmarks.hot_path import parser, settings, summary
    cfg = settings(parser().parse_args(["--quick", "--only", "plans"]))
    assert cfg["sections"] == ["plans"] and cfg["plans"]["dino_wm16"][0] == 1
    with pytest.raises(SystemExit, match="extrapolation"):
        settings(parser().parse_args(["--ref-dino-iters", "1"]))
    res = {"dino_wm_plan": {"S": 10, "I": 2, "wmpc": {"seconds": 1.0, "peak_mb": 5},
                            "ref": {"seconds": 4.0, "peak_mb": 9, "extrapolated_from_iterations": 2}},
           "dino_wm_rollout": {"wmpc": {"roofline_fraction": 0.5}}}
    line = summary(res)
    assert "dino_wm plan speed-up 4.0x extrapolated" in line and "50% of the roofline" in line


@pytest.mark.slow
def test_compiled_rollout_equals_eager():
    """torch.compile of the per-step function (one tiny model; inductor needs a C++ compiler)."""
    eager = build_model("tiny", "cpu")
    compiled = build_model("tiny", "cpu", compile=True)
    x = make_inputs(eager, batch=1, samples=4)
    with torch.no_grad():
        z1, p1 = eager.rollout(x["zc"], x["pc"], x["actions"], x["pa"])
        try:
            z2, p2 = compiled.rollout(x["zc"], x["pc"], x["actions"], x["pa"])
        except Exception as e:  # noqa: BLE001 - inductor toolchain problems are environment issues
            pytest.skip(f"torch.compile (inductor) cannot compile here: {type(e).__name__}: {e}")
    torch.testing.assert_close(z2, z1, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(p2, p1, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("use_cache", [True, False], ids=["cached", "uncached"])
def test_rollout_memory_bound_options_keep_results(tiny, use_cache):
    x = make_inputs(tiny, batch=2, samples=5)
    with torch.no_grad():
        z1, p1 = tiny.rollout(x["zc"], x["pc"], x["actions"], x["pa"], use_cache=use_cache,
                              memory_budget_mb=None)
        for opts in ({"max_batch": 2}, {"max_batch": 7}, {"memory_budget_mb": 1e-3}):
            z2, p2 = tiny.rollout(x["zc"], x["pc"], x["actions"], x["pa"], use_cache=use_cache, **opts)
            torch.testing.assert_close(z2, z1, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(p2, p1, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="max_batch"):
        tiny.rollout(x["zc"], x["pc"], x["actions"], x["pa"], max_batch=0)
