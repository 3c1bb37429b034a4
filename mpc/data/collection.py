"""Collection: exploration episodes played in an env and written as a dataset folder.

:func:`collect` is the entry point. While it holds the folder's lock it
1. checks that an existing ``dataset.json`` was written with the same settings (:func:`_open_folder`),
2. lists the episodes still to do, keeping whole finished ones (:func:`_missing_episodes`),
3. plays them in this process (:func:`_run_serial`) or in a pool of worker processes
   (:func:`_run_pool`, where SIGTERM stops the workers like Ctrl-C does),
4. writes ``stats.json`` once every episode exists (:func:`_update_stats`).
Episode ``i`` depends on ``seed + i`` alone, so workers and interruptions never change the data.
"""
from __future__ import annotations

import concurrent.futures as cf
import contextlib
import datetime
import json
import logging
import multiprocessing
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from mpc._config import to_plain
from mpc._io import package_version, read_json, remove_temp_files, write_json
from mpc.data.exploration import check_policy, make_policy
from mpc.data.format import (EPISODE_FILE, EPISODES_DIR, FORMAT_VERSION, META_FILE, STATS_FILE,
                             DatasetError, check_episode, dataset_lock, files_to_redo, write_h5,
                             write_stats)

__all__ = ["rollout_episode", "collect"]

log = logging.getLogger(__name__)

# keys of dataset.json that must agree when collecting into an existing directory
_IDENTITY_KEYS = ("format_version", "env", "env_options", "steps", "policy", "policy_options", "seed")


def _make_env(env: str, env_options: dict):
    import envs

    return envs.make_env(env, **env_options)


def rollout_episode(env, actions, seed: int, steps: int | None = None) -> dict[str, np.ndarray]:
    """Reset ``env`` with ``seed`` and play ``actions``; returns the arrays of one episode file.

    Args:
        env: a gymnasium env following the contract of :mod:`envs.base`.
        actions: (T, A) actions, or a per-step policy ``act(env) -> (A,)`` (see
            :func:`mpc.data.exploration.make_policy`) called after the reset and after each step.
        seed: passed to ``env.reset(seed=seed)``.
        steps: T; required with a policy, ignored with an array.

    Returns:
        dict with ``pixels`` (T+1,H,W,3) uint8, ``proprio`` (T+1,P) float32, ``actions`` (T,A)
        float32 (those played) and, if the env reports ``info["state"]``, ``states``
        (T+1, state_dim) float64.

    Raises:
        ValueError: an observation that is not ``{"pixels": uint8 (H,W,3), "proprio": (P,)}``, or a
            policy without ``steps``.
    """
    if callable(actions):
        if steps is None:
            raise ValueError("rollout_episode needs steps= with a per-step policy")
        act, T = actions, int(steps)
    else:
        table = np.asarray(actions, np.float32)
        act, T = None, len(table)
    obs, info = env.reset(seed=int(seed))
    if not (isinstance(obs, dict) and "pixels" in obs and "proprio" in obs):
        raise ValueError(f"env observations must be dicts with 'pixels' uint8 (H, W, 3) and 'proprio' "
                         f"(P,) (see envs/base.py); got {type(obs).__name__}"
                         f"{' with keys ' + str(list(obs)) if isinstance(obs, dict) else ''}")
    pix0 = np.asarray(obs["pixels"])
    if pix0.dtype != np.uint8 or pix0.ndim != 3 or pix0.shape[-1] != 3:
        raise ValueError(f"obs['pixels'] must be uint8 (H, W, 3), got {pix0.dtype} {pix0.shape}")
    has_state = info.get("state") is not None
    pixels = np.empty((T + 1, *pix0.shape), np.uint8)
    proprio = np.empty((T + 1, np.asarray(obs["proprio"]).size), np.float32)
    states = np.empty((T + 1, np.asarray(info["state"]).size), np.float64) if has_state else None
    played = np.empty((T, *env.action_space.shape), np.float32)
    for t in range(T + 1):
        pixels[t] = obs["pixels"]
        proprio[t] = np.asarray(obs["proprio"], np.float32).ravel()
        if has_state:
            states[t] = np.asarray(info["state"], np.float64).ravel()
        if t < T:
            played[t] = table[t] if act is None else act(env)
            obs, _, _, _, info = env.step(played[t])
    out = {"pixels": pixels, "proprio": proprio, "actions": played}
    if has_state:
        out["states"] = states
    return out


# --------------------------------------------------------------------------------------------
# One episode, in this process or in a worker
# --------------------------------------------------------------------------------------------
_WORKER: dict[str, Any] = {}  # "spec" (what to collect) and "env" of this process


def _exit_with_parent(parent: int) -> None:
    """Worker-side watchdog: leave when the collecting process is gone (e.g. killed with -9)."""
    while True:
        time.sleep(0.5)
        if os.getppid() != parent:
            os._exit(1)


def _init_worker(spec: dict, env=None, parent: int | None = None) -> None:
    """Pool initializer: build the env once per worker process (or use ``env``)."""
    if parent is not None:
        threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()
    _WORKER["spec"] = spec
    _WORKER["env"] = env if env is not None else _make_env(spec["env"], spec["env_options"])


def _collect_one(index: int) -> tuple[int, int]:
    """Collect episode ``index`` with the worker's env and write it atomically. Returns (index, frames)."""
    spec, env = _WORKER["spec"], _WORKER["env"]
    seed = spec["seed"] + index
    act = make_policy(spec["policy"], spec["low"], spec["high"], spec["steps"], seed, **spec["policy_options"])
    arrays = rollout_episode(env, act, seed, steps=spec["steps"])
    path = Path(spec["episodes_dir"]) / EPISODE_FILE.format(index)
    write_h5(path, arrays, {"seed": seed, "length": spec["steps"], "format_version": FORMAT_VERSION},
             compression=spec["compression"])
    return index, spec["steps"] + 1


# --------------------------------------------------------------------------------------------
# Runners: every episode of ``todo``, calling ``done(frames)`` after each
# --------------------------------------------------------------------------------------------
def _run_serial(spec: dict, env, todo: list[int], done: Callable[[int], None]) -> None:
    """Collect ``todo`` in this process with ``env`` (closed at the end)."""
    _init_worker(spec, env=env)
    try:
        for i in todo:
            done(_collect_one(i)[1])
    finally:
        _WORKER.pop("env").close()


class _Terminated(KeyboardInterrupt):
    """SIGTERM during collection, handled like Ctrl-C."""


def _raise_terminated(signum, frame):
    raise _Terminated(f"received signal {signum}")


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM into :class:`_Terminated` (a ``KeyboardInterrupt``) inside the block.

    Only the main thread can set signal handlers; elsewhere the block runs unchanged.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _stop_pool(pool: cf.ProcessPoolExecutor) -> None:
    """Cancel pending episodes and stop the workers now (their temp files are cleaned on resume)."""
    terminate = getattr(pool, "terminate_workers", None)  # python >= 3.14
    if terminate is not None:
        terminate()
        return
    for proc in list((getattr(pool, "_processes", None) or {}).values()):
        proc.terminate()
    pool.shutdown(wait=True, cancel_futures=True)


def _run_pool(spec: dict, todo: list[int], workers: int, done: Callable[[int], None]) -> None:
    """Collect ``todo`` in up to ``workers`` spawned processes, each with its own env.

    On any error, Ctrl-C or SIGTERM the workers are stopped at once; finished episodes stay.
    """
    ctx = multiprocessing.get_context("spawn")
    pool = cf.ProcessPoolExecutor(min(workers, len(todo)), mp_context=ctx,
                                  initializer=_init_worker, initargs=(spec, None, os.getpid()))
    with _sigterm_as_interrupt():
        try:
            futures = [pool.submit(_collect_one, i) for i in todo]
            for fut in cf.as_completed(futures):
                done(fut.result()[1])
            pool.shutdown(wait=True)
        except BaseException:
            _stop_pool(pool)
            raise


# --------------------------------------------------------------------------------------------
# The dataset folder
# --------------------------------------------------------------------------------------------
def _dataset_meta(env: str, env_options: dict, low: np.ndarray, high: np.ndarray, episodes: int,
                  steps: int, policy: str, policy_options: dict, seed: int,
                  compression: str | None) -> dict:
    """The ``dataset.json`` of a collection with these settings (``created``: now)."""
    return {"format_version": FORMAT_VERSION, "env": env, "env_options": env_options,
            "action_low": low.tolist(), "action_high": high.tolist(), "episodes": episodes,
            "steps": steps, "policy": policy, "policy_options": policy_options, "seed": seed,
            "compression": compression, "wmpc_version": package_version(),
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


def _open_folder(out: Path, meta: dict) -> None:
    """Check ``out`` against ``meta``, clear leftovers of interrupted writes, write ``dataset.json``.

    An existing dataset keeps its ``created`` time.

    Raises:
        DatasetError: ``out`` holds a dataset collected with other settings.
    """
    meta_path = out / META_FILE
    if meta_path.exists():
        old = json.loads(meta_path.read_text())
        diff = {k: (old.get(k), meta[k]) for k in _IDENTITY_KEYS if to_plain(old.get(k)) != meta[k]}
        if diff:
            lines = "; ".join(f"{k}: existing {a!r} vs requested {b!r}" for k, (a, b) in diff.items())
            raise DatasetError(f"{out} already holds a dataset collected with other settings ({lines}). "
                               "Choose another `out` directory, or delete this one to start over.")
        meta["created"] = old.get("created", meta["created"])
    (out / EPISODES_DIR).mkdir(parents=True, exist_ok=True)
    remove_temp_files(out / EPISODES_DIR)
    remove_temp_files(out)
    write_json(meta_path, meta, sort_keys=True)


def _missing_episodes(episodes_dir: Path, episodes: int) -> list[int]:
    """The resume scan: episodes not yet written, or damaged (those are collected again)."""
    return files_to_redo(episodes_dir, episodes, lambda path, i: check_episode(path),
                         "re-collecting a damaged episode")


def _update_stats(out: Path, episodes: int, changed: bool) -> None:
    """(Re)write ``stats.json`` when episodes were added or it does not cover ``episodes`` episodes."""
    if changed or (read_json(out / STATS_FILE) or {}).get("num_episodes") != episodes:
        write_stats(out, episodes)


# --------------------------------------------------------------------------------------------
# collect
# --------------------------------------------------------------------------------------------
def collect(env: str, out: str | os.PathLike, episodes: int, steps: int, policy: str = "uniform",
            seed: int = 0, workers: int = 1, env_options: dict | None = None, *, image_size: int | None = None,
            action_repeat: int | None = None, policy_options: dict | None = None, compression: str | None = "lzf",
            progress: bool = True, frameskip: int | None = None) -> Path:
    """Collect ``episodes`` random-exploration episodes of ``steps`` steps into ``out``.

    Episode ``i`` resets the env with seed ``seed + i`` and plays :func:`make_policy` of that seed
    (an open-loop sequence, or a closed-loop policy that reads the env each step), so the data do not depend on ``workers`` or on interruptions. Collecting into a directory that
    already holds a dataset with the same settings skips the finished episodes (resume) and may add
    episodes (a larger ``episodes``).

    Args:
        env: a wmpc env name (``envs.list_envs()``) or a gymnasium id ``"pkg.mod:Name-v0"``.
        out: dataset directory (created).
        episodes, steps: number of episodes and steps T per episode.
        policy: exploration policy name (:data:`POLICIES` or :data:`CLOSED_LOOP`); ``policy_options``
            its options (closed-loop ones also take ``mix``: the fraction of colored-noise episodes).
            Both are recorded in ``dataset.json``.
        seed: base seed.
        workers: processes (1 = collect in this process).
        env_options: extra keyword arguments of the env.
        image_size, action_repeat: merged into ``env_options`` when given (``action_repeat``
            repeats each action inside the env); ``None`` keeps the env's own default. A gymnasium env whose
            constructor does not take them gets them through wrappers (see :func:`envs.make_env`).
        frameskip: wmpc 0.1's name of ``action_repeat`` (works until wmpc 0.3, with a FutureWarning).
        compression: HDF5 filter for the arrays (``"lzf"``, ``"gzip"`` or ``None``).
        progress: show a tqdm bar.

    Returns:
        the dataset directory.

    Raises:
        DatasetError: ``out`` holds a dataset collected with different settings, or another
            process is collecting into it.
        ValueError: bad arguments, unknown env or policy.
    """
    if int(episodes) < 1 or int(steps) < 1 or int(workers) < 1:
        raise ValueError(f"episodes, steps and workers must be >= 1, got {episodes}, {steps}, {workers}")
    check_policy(policy)
    out = Path(out)
    if frameskip is not None:
        from envs.base import warn_frameskip_renamed

        warn_frameskip_renamed()
        action_repeat = frameskip if action_repeat is None else action_repeat
    given = {k: int(v) for k, v in (("image_size", image_size), ("action_repeat", action_repeat))
             if v is not None}
    env_options = to_plain({**(env_options or {}), **given})
    policy_options = to_plain(dict(policy_options or {}))
    out.mkdir(parents=True, exist_ok=True)
    with dataset_lock(out, "wmpc collect"):
        return _collect_locked(env, out, int(episodes), int(steps), policy, int(seed), int(workers), env_options,
                               policy_options, compression, progress)


def _collect_locked(env: str, out: Path, episodes: int, steps: int, policy: str, seed: int, workers: int,
                    env_options: dict, policy_options: dict, compression: str | None, progress: bool) -> Path:
    """The body of :func:`collect`, run while holding the dataset folder's lock."""
    from tqdm.auto import tqdm

    episodes_dir = out / EPISODES_DIR
    probe = _make_env(env, env_options)  # the serial runner's env; in a pool only the action Box
    try:
        space = probe.action_space
        low, high = np.asarray(space.low, np.float64), np.asarray(space.high, np.float64)
        make_policy(policy, low, high, 2, seed, **policy_options)  # check policy options early
        meta = _dataset_meta(env, env_options, low, high, episodes, steps, policy, policy_options, seed,
                             compression)
        pixels = getattr(probe.observation_space, "spaces", {}).get("pixels")
        if pixels is not None and len(pixels.shape) == 3:
            meta["image_size"] = int(pixels.shape[0])  # the frames' side, whoever chose it
        spec = getattr(probe.unwrapped, "variation_spec", None)
        if "variation" in env_options and spec is not None:
            meta["variation"] = to_plain(spec())  # split and {factor: {kind, range}} (envs.variation)
        _open_folder(out, meta)
        todo = _missing_episodes(episodes_dir, episodes)
        if todo:
            (out / STATS_FILE).unlink(missing_ok=True)
        bar = tqdm(total=episodes, initial=episodes - len(todo), desc=f"collect {env}", unit="ep",
                   disable=not progress)
    except BaseException:
        probe.close()
        raise
    spec = {"env": env, "env_options": env_options, "policy": policy, "policy_options": policy_options,
            "low": low, "high": high, "steps": steps, "seed": seed,
            "episodes_dir": str(episodes_dir), "compression": compression}
    t0, frames = time.perf_counter(), 0

    def done(n: int) -> None:
        nonlocal frames
        frames += n
        bar.update(1)
        bar.set_postfix(fps=f"{frames / (time.perf_counter() - t0):.0f}")

    try:
        if workers == 1 or len(todo) <= 1:
            _run_serial(spec, probe, todo, done)
        else:
            probe.close()
            _run_pool(spec, todo, workers, done)
    finally:
        bar.close()
    _update_stats(out, episodes, changed=bool(todo))
    log.info("collected %d episode(s) (%d frames) into %s in %.1fs", len(todo), frames, out,
             time.perf_counter() - t0)
    return out
