"""The GPU probe's smoke run on the CPU: every figure measured or its failure reported."""
from __future__ import annotations

import pytest
import torch

from benchmarks import gpu_probe


def test_quick_probe_measures_matmuls_and_every_attention_kernel_or_says_why_not():
    """At 16 tokens a frame (``--tokens 16``), not dino_wm's 196: the same figures, ~12x less work."""
    torch.manual_seed(0)
    res = gpu_probe.probe("cpu", quick=True, tokens=16)
    assert res["machine"] == "cpu" and res["peak_tflops"] is None and res["tokens"] == 16
    assert res["matmul_256^3"]["tflops"] > 0
    rows = 4 * 16  # S x N: the rollout's rows at S = 4
    assert res[f"matmul_{rows}x384x384"]["tflops"] > 0 and res[f"matmul_{rows}x384x2048"]["tflops"] > 0
    kernels = [k for k in res if k.startswith("rollout_") and k.endswith("_S4")]
    assert len(kernels) == 5  # auto, flash, efficient, cudnn, math
    assert res["rollout_auto_S4"]["seconds"] > 0 and res["rollout_math_S4"]["tflops"] > 0
    for k in kernels:  # a kernel the CPU lacks is an error row, not a crash
        assert ("seconds" in res[k]) != ("error" in res[k])
    assert res["rollout_auto_S8"]["S"] == 8


def test_cuda_asked_without_a_gpu_says_what_to_do(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit, match="--device cpu --quick"):
        gpu_probe.main(["--device", "cuda"])
