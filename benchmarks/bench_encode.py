"""Encoding throughput (images/s) of the frozen DINOv2 encoder.

Run: ``python -m pytest benchmarks/bench_encode.py --benchmark-only``. Weights are random
(seeded; pretrained weights run at the same speed), marked ``random`` in each test id and in
``extra_info["weights"]``. Each round encodes one batch of uint8 frames (preprocessing included);
``extra_info["images_per_s"]`` holds the throughput from the mean round time. Variants, sizes and
batch come from the parameters below; CUDA cases (float32 and bf16 autocast) run when a GPU is present.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmarks._timing import sync
from encoders import make_encoder

SIZES = [224, 56]  # image side: DINO-WM's 224 and a small 56 (4x4 patches)
BATCH = {"cpu": {224: 8, 56: 32}, "cuda": {224: 128, 56: 512}}  # images per encode call
DEVICES = [("cpu", False)] + ([("cuda", False), ("cuda", True)] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device, bf16", DEVICES, ids=lambda v: {False: "fp32", True: "bf16"}.get(v, v))
@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"random-{s}px")
@pytest.mark.parametrize("name", ["dinov2-vits14"])
def test_encode_throughput(benchmark, name, size, device, bf16):
    batch = BATCH[device][size]
    enc = make_encoder(name, weights="random", image_size=size, device=device, autocast_bf16=bf16,
                       chunk_size=batch)
    frames = np.random.default_rng(0).integers(0, 256, (batch, size, size, 3), dtype=np.uint8)
    def run():
        z = enc.encode(frames)
        sync(device)
        return z

    z = benchmark.pedantic(run, rounds=3 if device == "cpu" else 20, iterations=1, warmup_rounds=1)
    assert z.shape == (batch, enc.num_tokens, enc.dim)
    benchmark.extra_info.update(weights="random", encoder=name, image_size=size, batch=batch,
                                device=device, bf16=bf16, threads=torch.get_num_threads(),
                                images_per_s=round(batch / benchmark.stats.stats.mean, 1))
