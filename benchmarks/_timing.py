"""Timing plumbing shared by the benchmarks: the device they run on, synchronisation, timed calls.

GPU work is asynchronous, so every wall-clock measurement here synchronises the device before the
clock starts and before it stops; on CPU :func:`sync` does nothing.
"""
from __future__ import annotations

import os
import time
from typing import Any, Callable

import torch

from mpc._config import resolve_device

__all__ = ["bench_device", "sync", "timed", "mean_time", "rollout_inputs", "rollout_runner"]


def bench_device() -> torch.device:
    """The device of the pytest-benchmark files: ``WMPC_BENCH_DEVICE``, else cuda when present, else cpu.

    Raises:
        ValueError: ``WMPC_BENCH_DEVICE`` names no device, or CUDA is asked for and absent.
    """
    return resolve_device(os.environ.get("WMPC_BENCH_DEVICE") or None)


def sync(device) -> None:
    """Wait for the work queued on ``device`` (a CUDA device); nothing on CPU."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device) -> tuple[float, Any]:
    """Call ``fn()`` once. Returns ``(seconds, its result)``, the device synchronised around the call."""
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - t0, out


def mean_time(fn: Callable[[], Any], device, repeats: int = 3) -> float:
    """Seconds per call of ``fn()`` over ``repeats`` calls after one warm-up call."""
    fn()
    seconds, _ = timed(lambda: [fn() for _ in range(repeats)], device)
    return seconds / repeats


def rollout_inputs(model, samples: int, horizon: int, device, seed: int = 0):
    """Random unbatched rollout inputs for ``model``: ``z (T, N, D)``, ``proprio (T, P)``,
    ``actions (S, H, Am)``, ``past (T-1, Am)`` with T = ``model.num_hist``, on ``device``."""
    T, N, D = model.num_hist, model.num_tokens, model.token_dim
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(T, N, D, generator=g).to(device)
    proprio = torch.randn(T, model.config.proprio_dim, generator=g).to(device)
    actions = torch.randn(samples, horizon, model.action_dim, generator=g).to(device)
    past = torch.randn(T - 1, model.action_dim, generator=g).to(device)
    return z, proprio, actions, past


def rollout_runner(model, samples: int, horizon: int, device, **options):
    """A benchmark callable over random inputs (:func:`rollout_inputs`): ``run()`` does one
    inference-mode ``model.rollout(..., **options)`` and appends its synced wall time to ``times``.

    Returns:
        ``(run, times)``.
    """
    z, proprio, actions, past = rollout_inputs(model, samples, horizon, device)
    times: list[float] = []

    def run():
        with torch.inference_mode():
            seconds, out = timed(lambda: model.rollout(z, proprio, actions, past, **options), device)
        times.append(seconds)
        return out

    return run, times

