"""Env throughput: one ``step`` (simulation + rendering of the new frame) per benchmark round.

Run: ``MUJOCO_GL=egl python -m pytest benchmarks/bench_envs.py --benchmark-columns=mean,ops``
(``ops`` is frames per second at frameskip 1).
"""
from __future__ import annotations

import numpy as np
import pytest

from envs import make_env

ENVS = ["pointmass", "reacher", "wall"]


@pytest.mark.parametrize("image_size", [64, 224])
@pytest.mark.parametrize("name", ENVS + ["pointmass-noaa", "reacher-noaa"])
def test_step_and_render(benchmark, name, image_size):
    """``<name>-noaa``: MuJoCo antialiasing off (faster with software rendering)."""
    options = {"antialias": False} if name.endswith("-noaa") else {}
    env = make_env(name.removesuffix("-noaa"), image_size=image_size, **options)
    env.reset(seed=0)
    actions = np.random.default_rng(0).uniform(-1, 1, (1000, *env.action_space.shape)).astype(np.float32)
    i = iter(range(10**9))

    def step():
        return env.step(actions[next(i) % len(actions)])

    obs = benchmark(step)[0]
    assert obs["pixels"].shape == (image_size, image_size, 3)
    benchmark.extra_info["frames_per_s"] = 1.0 / benchmark.stats.stats.mean
    env.close()


@pytest.mark.parametrize("name", ENVS)
def test_render_goal_state(benchmark, name):
    env = make_env(name)
    _, info = env.reset(seed=0)
    image = benchmark(env.unwrapped.render_state, info["goal_state"])
    assert np.array_equal(image, info["goal_image"])
    env.close()
