"""Learning-rate schedules and random state: what makes a run reproducible and resumable.

- :func:`cosine_schedule`: the world-model trainer's LR multiplier (warm-up, then cosine to a floor).
- :func:`warmup_cosine_to_tenth`: the encoder trainer's LR multiplier.
- :func:`rng_state` / :func:`set_rng_state`: every RNG a training step draws from (python, numpy,
  torch CPU and CUDA), saved in ``train_state.pt`` and restored on resume.
- :func:`seed_everything`: seed those RNGs from one integer.
"""
from __future__ import annotations

import math
import random

import numpy as np
import torch

__all__ = ["cosine_schedule", "warmup_cosine_to_tenth", "rng_state", "set_rng_state", "seed_everything"]


def cosine_schedule(step: int, warmup_steps: int, total_steps: int, min_ratio: float) -> float:
    """LR multiplier: linear warm-up to 1 over ``warmup_steps``, then cosine decay to ``min_ratio``.

    ``step`` counts optimizer steps already taken (0 for the first one).
    """
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def warmup_cosine_to_tenth(step: int, warmup_steps: int, total_steps: int) -> float:
    """LR multiplier of encoder training: a linear warm-up ramp times a cosine from 1 to 0.1.

    Unlike :func:`cosine_schedule` the cosine spans all ``total_steps`` (warm-up included) and the
    ramp multiplies it.
    """
    ramp = min(1.0, (step + 1) / warmup_steps)
    return ramp * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(step, total_steps) / total_steps)))


def rng_state() -> dict:
    """The states of the python, numpy, torch (and initialised CUDA) generators."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what :func:`rng_state` returned."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def seed_everything(seed: int) -> None:
    """Seed python, numpy (modulo 2**32) and torch from ``seed``."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
