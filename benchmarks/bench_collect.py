"""Collection throughput (frames/s) of ``mpc.data.collect`` per wmpc env.

Run: ``MUJOCO_GL=egl python -m pytest benchmarks/bench_collect.py --benchmark-only``. Each round
collects a fresh dataset (2 episodes x 100 steps, 64x64 frames, one process) and writes it to disk,
so the figure includes rendering, simulation and HDF5 writing. ``extra_info["frames_per_s"]`` holds
the throughput; envs whose module or simulator is not installed are skipped.
"""
from __future__ import annotations

import importlib
import itertools

import pytest

import envs
from benchmarks._timing import timed
from mpc.data import collect

EPISODES, STEPS = 2, 100


@pytest.mark.parametrize("name", envs.list_envs())
@pytest.mark.parametrize("workers", [1])
def test_collect_throughput(benchmark, tmp_path, name, workers):
    module = envs.ENVS[name][0].split(":")[0]
    try:
        importlib.import_module(module)
        envs.make_env(name).close()
    except Exception as e:  # an env whose file or simulator is not available here
        pytest.skip(f"{name} not available: {type(e).__name__}: {e}")
    counter = itertools.count()
    times = []

    def run():
        seconds, _ = timed(lambda: collect(name, tmp_path / f"run{next(counter)}", episodes=EPISODES, steps=STEPS,
                                           policy="uniform", workers=workers, progress=False), "cpu")
        times.append(seconds)

    benchmark.pedantic(run, rounds=3, iterations=1, warmup_rounds=1)
    frames = EPISODES * (STEPS + 1)
    benchmark.extra_info["frames_per_s"] = round(frames / min(times), 1)
    benchmark.extra_info["frames"] = frames
