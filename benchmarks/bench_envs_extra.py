"""Step + render throughput (frames/s) of the PushT and PointMaze envs.

Run: ``MUJOCO_GL=egl python -m pytest benchmarks/bench_envs_extra.py --benchmark-only``. One round is
``STEPS`` calls of ``env.step`` with uniform random actions (each renders the observation) at
frameskip 1; ``extra_info`` holds ``frames_per_s`` and ``ms_per_frame``, plus the render-only
``render_ms`` for the same image size, so simulation and rendering cost can be told apart.
"""
from __future__ import annotations

import numpy as np
import pytest

from benchmarks._timing import timed
from envs import make_env

STEPS = 100
CASES = {
    "pusht": ("pusht", {}),
    "pointmaze-umaze": ("pointmaze", {"maze": "umaze"}),
    "pointmaze-medium": ("pointmaze", {"maze": "medium"}),
}


@pytest.mark.parametrize("image_size", [64, 224])
@pytest.mark.parametrize("case", list(CASES))
def test_step_render_throughput(benchmark, case, image_size):
    name, options = CASES[case]
    env = make_env(name, image_size=image_size, **options)
    env.reset(seed=0)
    actions = np.random.default_rng(0).uniform(-1, 1, (STEPS, 2)).astype(np.float32)

    def run():
        for a in actions:
            env.step(a)

    try:
        benchmark.pedantic(run, rounds=3, iterations=1, warmup_rounds=1)
        render_s, _ = timed(lambda: [env.render() for _ in range(STEPS)], "cpu")
        render_ms = render_s / STEPS * 1e3
    finally:
        env.close()
    seconds = benchmark.stats.stats.mean
    benchmark.extra_info.update(frames_per_s=STEPS / seconds, ms_per_frame=seconds / STEPS * 1e3,
                                render_ms=render_ms)
