"""Datasets: collection, storage, loading, training windows and the latent cache.

A dataset is a directory of HDF5 files, readable with ``h5py`` alone::

    <dir>/dataset.json                 metadata (see below)
    <dir>/stats.json                   action/proprio (and state) mean & std over all episodes
    <dir>/episodes/episode_000000.h5   one file per episode
    <dir>/latents/<key>/               latent cache of one frozen encoder (``wmpc encode``)

``dataset.json`` keys: ``format_version``, ``env`` (a wmpc env name or a gymnasium id),
``env_options`` (including ``image_size`` and ``frameskip``: each stored step repeats its action
``frameskip`` simulator steps), ``action_low``/``action_high`` (the env's action Box), ``episodes``,
``steps``, ``policy`` and ``policy_options``, ``seed`` (episode ``i`` uses seed ``seed + i``),
``compression``, ``wmpc_version``, ``created``.

Each ``episode_%06d.h5`` holds, for an episode of ``T`` steps:

    pixels   (T+1, H, W, 3) uint8     frame t is the observation before action t
    proprio  (T+1, P)       float32
    actions  (T, A)         float32   the action applied between frame t and frame t+1
    states   (T+1, S)       float64   only if the env reports ``info["state"]``
    attrs:   seed (int), length (T), complete (True), format_version

Every dataset carries an HDF5 Fletcher-32 checksum, so damaged bytes fail on read instead of
returning wrong numbers. Files are written to a temporary name in the same folder and renamed into
place (``os.replace``), so an interrupted ``wmpc collect`` (Ctrl-C, ``kill -9``) leaves only whole
episodes; running the same command again collects the missing ones and gives the same result as an
uninterrupted run. A ``stats.json`` is written once all episodes exist. A ``.lock`` file (``flock``)
keeps a second ``collect``/``encode`` from writing into the same folder at the same time.

The latent cache ``<dir>/latents/<key>/`` (``key`` = the first 16 hex digits of the SHA-256 of the
encoder's fingerprint) holds ``cache.json`` (the full fingerprint, ``num_tokens``, ``dim``,
``dtype``) and one ``episode_%06d.h5`` per episode with ``tokens (T+1, N, D)`` (float16 or float32)
and attrs ``fingerprint``, ``length``, ``complete``. A change of encoder, weights, image size or
token mode changes the fingerprint and so the key: a stale cache is never reused.

Reading an episode with h5py alone::

    import h5py
    with h5py.File("data/wall/episodes/episode_000000.h5") as f:
        pixels, actions = f["pixels"][:], f["actions"][:]
"""
from __future__ import annotations

import concurrent.futures as cf
import contextlib
import datetime
import hashlib
import json
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

__all__ = [
    "FORMAT_VERSION", "DatasetError", "POLICIES", "make_actions", "rollout_episode", "collect",
    "compute_stats", "EpisodeDataset", "load_dataset", "cache_key", "cache_path", "encode_dataset",
    "split_episodes", "WindowDataset", "collect_command", "encode_command",
]

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
EPISODE_FILE = "episode_{:06d}.h5"
_TMP_SUFFIX = ".tmp"
# keys of dataset.json that must agree when collecting into an existing directory
_IDENTITY_KEYS = ("format_version", "env", "env_options", "steps", "policy", "policy_options", "seed")


class DatasetError(ValueError):
    """A dataset or latent cache that is missing, incomplete, damaged or does not match the request."""


# --------------------------------------------------------------------------------------------
# Exploration policies: seeded action sequences (T, A) inside the Box, independent of observations
# --------------------------------------------------------------------------------------------
def _uniform(rng: np.random.Generator, steps: int, dim: int) -> np.ndarray:
    """iid uniform in [-1, 1]. Returns (T, A)."""
    return rng.uniform(-1.0, 1.0, size=(steps, dim))


def _powerlaw_noise(rng: np.random.Generator, steps: int, dim: int, beta: float) -> np.ndarray:
    """Gaussian noise with power spectrum ~ 1/f**beta along time, unit variance. Returns (T, A).

    beta = 0 is white noise, 1 pink, 2 red (Brownian-like); Timmer & Koenig (1995).
    """
    f = np.fft.rfftfreq(steps)                                    # (F,)
    scale = np.maximum(f, 1.0 / steps) ** (-beta / 2.0)           # amplitude per frequency
    w = scale[1:].copy()
    w[-1] *= (1 + steps % 2) / 2.0
    sigma = 2.0 * np.sqrt(np.sum(w ** 2)) / steps                 # std of the raw series
    real = rng.normal(size=(dim, f.size)) * scale
    imag = rng.normal(size=(dim, f.size)) * scale
    if steps % 2 == 0:                                            # Nyquist term is real
        imag[:, -1] = 0.0
        real[:, -1] *= np.sqrt(2.0)
    imag[:, 0] = 0.0                                              # DC term is real
    real[:, 0] *= np.sqrt(2.0)
    return (np.fft.irfft(real + 1j * imag, n=steps, axis=-1) / sigma).T  # (T, A)


def _colored_noise(rng: np.random.Generator, steps: int, dim: int, beta: float = 1.0,
                   sigma: float = 0.6) -> np.ndarray:
    """Temporally correlated noise ``clip(sigma * powerlaw(beta), -1, 1)``. Returns (T, A)."""
    if steps < 2:
        return _uniform(rng, steps, dim)
    return np.clip(sigma * _powerlaw_noise(rng, steps, dim, float(beta)), -1.0, 1.0)


def _brownian(rng: np.random.Generator, steps: int, dim: int, sigma: float = 0.2) -> np.ndarray:
    """Random walk from a uniform start, increments N(0, sigma), clipped to [-1, 1]. Returns (T, A)."""
    out = np.empty((steps, dim))
    a = rng.uniform(-1.0, 1.0, size=dim)
    steps_noise = rng.normal(0.0, sigma, size=(steps, dim))
    for t in range(steps):
        out[t] = a
        a = np.clip(a + steps_noise[t], -1.0, 1.0)
    return out


def _repeat(rng: np.random.Generator, steps: int, dim: int, k: int = 5) -> np.ndarray:
    """A uniform random action held for ``k`` steps, then a new one. Returns (T, A)."""
    if int(k) < 1:
        raise ValueError(f"policy 'repeat' needs k >= 1, got {k}")
    blocks = rng.uniform(-1.0, 1.0, size=(-(-steps // int(k)), dim))
    return np.repeat(blocks, int(k), axis=0)[:steps]


POLICIES: dict[str, Callable[..., np.ndarray]] = {
    "uniform": _uniform,
    "colored-noise": _colored_noise,
    "brownian": _brownian,
    "repeat": _repeat,
}


def make_actions(policy: str, low: np.ndarray, high: np.ndarray, steps: int, seed: int,
                 **options) -> np.ndarray:
    """The exploration action sequence of one episode.

    The policy draws in [-1, 1] from ``numpy.random.default_rng([seed, 1])``; the result is mapped
    affinely onto the Box ``[low, high]``.

    Args:
        policy: one of :data:`POLICIES` (``uniform``, ``colored-noise`` (options ``beta``,
            ``sigma``), ``brownian`` (``sigma``), ``repeat`` (``k``)).
        low, high: (A,) finite action bounds.
        steps: T.
        seed: the episode's seed.

    Returns:
        float32 (T, A) actions inside ``[low, high]``.

    Raises:
        ValueError: unknown policy or options, or unbounded action space.
    """
    if policy not in POLICIES:
        raise ValueError(f"unknown policy {policy!r}; expected one of {', '.join(POLICIES)}")
    low, high = np.asarray(low, np.float64), np.asarray(high, np.float64)
    if not (np.all(np.isfinite(low)) and np.all(np.isfinite(high))):
        raise ValueError(f"random exploration needs a bounded action Box, got low={low} high={high}")
    rng = np.random.default_rng([int(seed), 1])
    try:
        unit = POLICIES[policy](rng, int(steps), low.size, **options)  # (T, A) in [-1, 1]
    except TypeError as e:
        raise ValueError(f"bad options {options} for policy {policy!r}: {e}") from e
    actions = low + (unit + 1.0) * 0.5 * (high - low)
    return np.clip(actions, low, high).astype(np.float32)


# --------------------------------------------------------------------------------------------
# Episode files
# --------------------------------------------------------------------------------------------
def _write_h5_atomic(path: Path, arrays: dict[str, np.ndarray], attrs: dict[str, Any],
                     compression: str | None = None, chunk_first: bool = True) -> None:
    """Write ``arrays`` to ``path`` via a temporary file in the same folder and ``os.replace``."""
    import h5py

    tmp = path.with_name(f".{path.name}.{os.getpid()}{_TMP_SUFFIX}")
    comp = None if compression in (None, "none", "None") else compression
    try:
        with h5py.File(tmp, "w", libver="latest") as f:
            for key, arr in arrays.items():
                chunks = (1, *arr.shape[1:]) if chunk_first and arr.ndim >= 2 and arr.shape[0] else True
                f.create_dataset(key, data=arr, chunks=chunks if arr.size else None,
                                 compression=comp if arr.size else None, fletcher32=bool(arr.size))
            for key, value in attrs.items():
                f.attrs[key] = value
            f.attrs["complete"] = True  # last thing written before close
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _remove_temp_files(folder: Path) -> int:
    """Delete leftovers of interrupted writes (``.<name>.<pid>.tmp``). Returns how many."""
    n = 0
    for p in folder.glob(f".*{_TMP_SUFFIX}"):
        p.unlink(missing_ok=True)
        n += 1
    if n:
        log.info("removed %d temporary file(s) left by an interrupted run in %s", n, folder)
    return n


@contextlib.contextmanager
def _folder_lock(folder: Path, what: str):
    """Hold an exclusive lock on ``folder/.lock`` (freed by the OS even after ``kill -9``).

    Raises:
        DatasetError: another process holds it.
    """
    import fcntl

    handle = open(folder / ".lock", "a")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DatasetError(f"another process is running {what} into {folder}; wait for it to finish "
                               "(or stop it) before starting a second one") from None
        yield
    finally:
        handle.close()


def _damaged(path: Path, err: BaseException, redo: str) -> DatasetError:
    return DatasetError(f"{path} is truncated or damaged ({type(err).__name__}: {err}). "
                        f"Delete it and {redo} to redo it.")


_REDO_COLLECT = "re-run the same `wmpc collect` command"


def _check_episode(path: Path) -> dict[str, tuple]:
    """Open an episode file and check its layout. Returns ``{name: shape}`` plus ``length``.

    Raises:
        DatasetError: unreadable file, missing dataset, incomplete flag, inconsistent shapes.
    """
    import h5py

    try:
        with h5py.File(path, "r") as f:
            if not bool(f.attrs.get("complete", False)):
                raise DatasetError(f"{path} is marked incomplete. Delete it and {_REDO_COLLECT} to redo it.")
            missing = [k for k in ("pixels", "proprio", "actions") if k not in f]
            if missing:
                raise DatasetError(f"{path} lacks dataset(s) {missing}. Delete it and {_REDO_COLLECT} "
                                   "to redo it.")
            shapes = {k: tuple(f[k].shape) for k in f.keys()}
            length = int(f.attrs["length"])
            dtypes = {k: f[k].dtype for k in f.keys()}
    except DatasetError:
        raise
    except (OSError, KeyError, ValueError, RuntimeError) as e:
        raise _damaged(path, e, _REDO_COLLECT) from e
    T = length
    px, pr, ac = shapes["pixels"], shapes["proprio"], shapes["actions"]
    ok = (len(px) == 4 and px[0] == T + 1 and px[3] == 3 and dtypes["pixels"] == np.uint8
          and len(pr) == 2 and pr[0] == T + 1 and len(ac) == 2 and ac[0] == T
          and ("states" not in shapes or (len(shapes["states"]) == 2 and shapes["states"][0] == T + 1)))
    if not ok:
        raise DatasetError(f"{path} has inconsistent shapes {shapes} for length={T}; expected pixels "
                           f"(T+1,H,W,3) uint8, proprio (T+1,P), actions (T,A), states (T+1,S). "
                           f"Delete it and {_REDO_COLLECT} to redo it.")
    return {**shapes, "length": T}


def _read_h5(path: Path, keys: tuple[str, ...] | None = None, redo: str = _REDO_COLLECT) -> dict[str, np.ndarray]:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            return {k: f[k][()] for k in (keys or tuple(f.keys())) if k in f}
    except (OSError, KeyError, ValueError, RuntimeError) as e:
        raise _damaged(path, e, redo) from e


# --------------------------------------------------------------------------------------------
# Collection
# --------------------------------------------------------------------------------------------
def _make_env(env: str, env_options: dict):
    import envs

    return envs.make_env(env, **env_options)


def rollout_episode(env, actions: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """Reset ``env`` with ``seed`` and play ``actions``; returns the arrays of one episode file.

    Args:
        env: a gymnasium env following the contract of :mod:`envs.base`.
        actions: (T, A) actions.
        seed: passed to ``env.reset(seed=seed)``.

    Returns:
        dict with ``pixels`` (T+1,H,W,3) uint8, ``proprio`` (T+1,P) float32, ``actions`` (T,A)
        float32 and, if the env reports ``info["state"]``, ``states`` (T+1,S) float64.

    Raises:
        ValueError: an observation that is not ``{"pixels": uint8 (H,W,3), "proprio": (P,)}``.
    """
    obs, info = env.reset(seed=int(seed))
    if not (isinstance(obs, dict) and "pixels" in obs and "proprio" in obs):
        raise ValueError(f"env observations must be dicts with 'pixels' uint8 (H, W, 3) and 'proprio' "
                         f"(P,) (see envs/base.py); got {type(obs).__name__}"
                         f"{' with keys ' + str(list(obs)) if isinstance(obs, dict) else ''}")
    pix0 = np.asarray(obs["pixels"])
    if pix0.dtype != np.uint8 or pix0.ndim != 3 or pix0.shape[-1] != 3:
        raise ValueError(f"obs['pixels'] must be uint8 (H, W, 3), got {pix0.dtype} {pix0.shape}")
    T = len(actions)
    has_state = info.get("state") is not None
    pixels = np.empty((T + 1, *pix0.shape), np.uint8)
    proprio = np.empty((T + 1, np.asarray(obs["proprio"]).size), np.float32)
    states = np.empty((T + 1, np.asarray(info["state"]).size), np.float64) if has_state else None
    for t in range(T + 1):
        pixels[t] = obs["pixels"]
        proprio[t] = np.asarray(obs["proprio"], np.float32).ravel()
        if has_state:
            states[t] = np.asarray(info["state"], np.float64).ravel()
        if t < T:
            obs, _, _, _, info = env.step(actions[t])
    out = {"pixels": pixels, "proprio": proprio, "actions": np.asarray(actions, np.float32)}
    if has_state:
        out["states"] = states
    return out


_WORKER: dict[str, Any] = {}


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


def _stop_pool(pool: cf.ProcessPoolExecutor) -> None:
    """Cancel pending episodes and stop the workers now (their temp files are cleaned on resume)."""
    terminate = getattr(pool, "terminate_workers", None)  # python >= 3.14
    if terminate is not None:
        terminate()
        return
    for proc in list((getattr(pool, "_processes", None) or {}).values()):
        proc.terminate()
    pool.shutdown(wait=True, cancel_futures=True)


class _Terminated(KeyboardInterrupt):
    """SIGTERM during collection, handled like Ctrl-C."""


def _raise_terminated(signum, frame):
    raise _Terminated(f"received signal {signum}")


def _collect_one(index: int) -> tuple[int, int]:
    """Collect episode ``index`` with the worker's env and write it atomically. Returns (index, frames)."""
    spec, env = _WORKER["spec"], _WORKER["env"]
    seed = spec["seed"] + index
    actions = make_actions(spec["policy"], spec["low"], spec["high"], spec["steps"], seed,
                           **spec["policy_options"])
    arrays = rollout_episode(env, actions, seed)
    path = Path(spec["episodes_dir"]) / EPISODE_FILE.format(index)
    _write_h5_atomic(path, arrays, {"seed": seed, "length": len(actions),
                                    "format_version": FORMAT_VERSION}, compression=spec["compression"])
    return index, len(actions) + 1


def _write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}{_TMP_SUFFIX}")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def _plain(x):
    """Hydra/OmegaConf containers and numpy scalars -> JSON-comparable python values."""
    try:
        from omegaconf import OmegaConf
        if OmegaConf.is_config(x):
            x = OmegaConf.to_container(x, resolve=True)
    except ImportError:  # pragma: no cover
        pass
    return json.loads(json.dumps(x, default=lambda o: o.item() if hasattr(o, "item") else str(o)))


def _wmpc_version() -> str:
    from importlib import metadata
    try:
        return metadata.version("wmpc")
    except metadata.PackageNotFoundError:  # pragma: no cover
        return "0+unknown"


def compute_stats(episodes_dir: Path, num_episodes: int) -> dict[str, Any]:
    """Mean and std (floored at 1e-6) of actions, proprio and states over all episodes.

    Returns:
        dict with ``action_mean``/``action_std`` (A,), ``proprio_mean``/``proprio_std`` (P,),
        ``state_mean``/``state_std`` (S,) when states exist, ``num_episodes``, ``num_frames``,
        ``num_transitions`` (all as lists/ints, JSON-ready).
    """
    sums: dict[str, list] = {}
    for i in range(num_episodes):
        ep = _read_h5(episodes_dir / EPISODE_FILE.format(i), ("actions", "proprio", "states"))
        for key, name in (("actions", "action"), ("proprio", "proprio"), ("states", "state")):
            if key in ep:
                x = ep[key].astype(np.float64)
                s = sums.setdefault(name, [0, 0.0, 0.0])
                s[0] += len(x)
                s[1] = s[1] + x.sum(0)
                s[2] = s[2] + (x ** 2).sum(0)
    stats: dict[str, Any] = {}
    for name, (n, s1, s2) in sums.items():
        mean = s1 / max(n, 1)
        std = np.sqrt(np.maximum(s2 / max(n, 1) - mean ** 2, 0.0))
        stats[f"{name}_mean"] = mean.tolist()
        stats[f"{name}_std"] = np.maximum(std, 1e-6).tolist()
    stats["num_episodes"] = num_episodes
    stats["num_transitions"] = int(sums["action"][0]) if "action" in sums else 0
    stats["num_frames"] = int(sums["proprio"][0]) if "proprio" in sums else 0
    return stats


def collect(env: str, out: str | os.PathLike, episodes: int, steps: int, policy: str = "uniform",
            seed: int = 0, workers: int = 1, env_options: dict | None = None, *, image_size: int = 64,
            frameskip: int = 1, policy_options: dict | None = None, compression: str | None = "lzf",
            progress: bool = True) -> Path:
    """Collect ``episodes`` random-exploration episodes of ``steps`` steps into ``out``.

    Episode ``i`` resets the env with seed ``seed + i`` and plays :func:`make_actions` of that seed,
    so the data do not depend on ``workers`` or on interruptions. Collecting into a directory that
    already holds a dataset with the same settings skips the finished episodes (resume) and may add
    episodes (a larger ``episodes``).

    Args:
        env: a wmpc env name (``envs.list_envs()``) or a gymnasium id ``"pkg.mod:Name-v0"``.
        out: dataset directory (created).
        episodes, steps: number of episodes and steps T per episode.
        policy: exploration policy name (see :data:`POLICIES`); ``policy_options`` its options.
        seed: base seed.
        workers: processes (1 = collect in this process).
        env_options: extra keyword arguments of the env; ``image_size`` and ``frameskip`` are
            merged in (``frameskip`` repeats each action inside the env).
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
    if policy not in POLICIES:
        raise ValueError(f"unknown policy {policy!r}; expected one of {', '.join(POLICIES)}")
    out = Path(out)
    env_options = _plain({**(env_options or {}), "image_size": int(image_size), "frameskip": int(frameskip)})
    policy_options = _plain(dict(policy_options or {}))
    out.mkdir(parents=True, exist_ok=True)
    with _folder_lock(out, "wmpc collect"):
        return _collect_locked(env, out, int(episodes), int(steps), policy, int(seed), int(workers), env_options,
                               policy_options, compression, progress)


def _collect_locked(env: str, out: Path, episodes: int, steps: int, policy: str, seed: int, workers: int,
                    env_options: dict, policy_options: dict, compression: str | None, progress: bool) -> Path:
    """The body of :func:`collect`, run while holding the dataset folder's lock."""
    from tqdm.auto import tqdm

    episodes_dir = out / "episodes"
    meta_path = out / "dataset.json"

    probe = _make_env(env, env_options)
    space = probe.action_space
    low, high = np.asarray(space.low, np.float64), np.asarray(space.high, np.float64)
    try:
        make_actions(policy, low, high, 2, seed, **policy_options)  # check policy options early
    except ValueError:
        probe.close()
        raise

    meta = {"format_version": FORMAT_VERSION, "env": env, "env_options": env_options,
            "action_low": low.tolist(), "action_high": high.tolist(), "episodes": int(episodes),
            "steps": int(steps), "policy": policy, "policy_options": policy_options, "seed": int(seed),
            "compression": compression, "wmpc_version": _wmpc_version(),
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    if meta_path.exists():
        old = json.loads(meta_path.read_text())
        diff = {k: (old.get(k), meta[k]) for k in _IDENTITY_KEYS if _plain(old.get(k)) != meta[k]}
        if diff:
            lines = "; ".join(f"{k}: existing {a!r} vs requested {b!r}" for k, (a, b) in diff.items())
            probe.close()
            raise DatasetError(f"{out} already holds a dataset collected with other settings ({lines}). "
                               "Choose another `out` directory, or delete this one to start over.")
        meta["created"] = old.get("created", meta["created"])
    episodes_dir.mkdir(parents=True, exist_ok=True)
    _remove_temp_files(episodes_dir)
    _remove_temp_files(out)
    _write_json_atomic(meta_path, meta)

    todo = []
    for i in range(int(episodes)):
        path = episodes_dir / EPISODE_FILE.format(i)
        if path.exists():
            try:
                _check_episode(path)
                continue
            except DatasetError as e:
                log.warning("re-collecting a damaged episode: %s", e)
        todo.append(i)
    if todo:
        (out / "stats.json").unlink(missing_ok=True)
    spec = {"env": env, "env_options": env_options, "policy": policy, "policy_options": policy_options,
            "low": low, "high": high, "steps": int(steps), "seed": int(seed),
            "episodes_dir": str(episodes_dir), "compression": compression}
    done = int(episodes) - len(todo)
    bar = tqdm(total=int(episodes), initial=done, desc=f"collect {env}", unit="ep", disable=not progress)
    t0, frames = time.perf_counter(), 0
    try:
        if int(workers) == 1 or len(todo) <= 1:
            _init_worker(spec, env=probe)
            probe = None
            try:
                for i in todo:
                    frames += _collect_one(i)[1]
                    bar.update(1)
                    bar.set_postfix(fps=f"{frames / (time.perf_counter() - t0):.0f}")
            finally:
                _WORKER.pop("env").close()
        else:
            probe.close()
            probe = None
            ctx = multiprocessing.get_context("spawn")
            pool = cf.ProcessPoolExecutor(min(int(workers), len(todo)), mp_context=ctx,
                                          initializer=_init_worker, initargs=(spec, None, os.getpid()))
            main_thread = threading.current_thread() is threading.main_thread()
            previous = signal.signal(signal.SIGTERM, _raise_terminated) if main_thread else None
            try:
                futures = [pool.submit(_collect_one, i) for i in todo]
                for fut in cf.as_completed(futures):
                    frames += fut.result()[1]
                    bar.update(1)
                    bar.set_postfix(fps=f"{frames / (time.perf_counter() - t0):.0f}")
                pool.shutdown(wait=True)
            except BaseException:
                _stop_pool(pool)
                raise
            finally:
                if main_thread:
                    signal.signal(signal.SIGTERM, previous)
    finally:
        bar.close()
        if probe is not None:
            probe.close()
    stats_path = out / "stats.json"
    if todo or not stats_path.exists() or json.loads(stats_path.read_text()).get("num_episodes") != int(episodes):
        _write_json_atomic(stats_path, compute_stats(episodes_dir, int(episodes)))
    log.info("collected %d episode(s) (%d frames) into %s in %.1fs", len(todo), frames, out,
             time.perf_counter() - t0)
    return out


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------
def _read_meta(root: Path) -> dict:
    meta_path = root / "dataset.json"
    if not meta_path.exists():
        raise DatasetError(f"{root} is not a wmpc dataset (no dataset.json); create one with "
                           "`wmpc collect env=<name> out=<dir>`")
    meta = json.loads(meta_path.read_text())
    if meta.get("format_version") != FORMAT_VERSION:
        raise DatasetError(f"{meta_path} has format_version {meta.get('format_version')}, this wmpc reads "
                           f"version {FORMAT_VERSION}; re-collect the dataset with this version")
    return meta


class EpisodeDataset:
    """The episodes of a dataset directory; ``ds[i]`` -> dict of numpy arrays (see module docstring).

    Attributes:
        root: the dataset directory. meta: ``dataset.json``. stats: ``stats.json`` (per env action).
        lengths: (E,) int steps per episode. shapes: dict of per-frame shapes
        (``pixels`` (H,W,3), ``proprio`` (P,), ``actions`` (A,), ``states`` (S,) if present).
    """

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.meta = _read_meta(self.root)
        n = int(self.meta["episodes"])
        self.paths = [self.root / "episodes" / EPISODE_FILE.format(i) for i in range(n)]
        missing = [p.name for p in self.paths if not p.exists()]
        if missing:
            raise DatasetError(f"{self.root} is incomplete: {len(missing)} of {n} episodes missing "
                               f"(first: {missing[0]}). Re-run the same `wmpc collect` command to finish it.")
        lengths, ref = [], None
        for p in self.paths:
            info = _check_episode(p)
            frame = {k: v[1:] for k, v in info.items() if k != "length"}
            if ref is None:
                ref = frame
            elif frame != ref:
                raise DatasetError(f"{p} has per-frame shapes {frame}, other episodes have {ref}; "
                                   f"delete it and {_REDO_COLLECT} to redo it")
            lengths.append(info["length"])
        self.lengths = np.asarray(lengths, np.int64)
        self.shapes = ref
        stats_path = self.root / "stats.json"
        if not stats_path.exists():  # killed right after the last episode
            _write_json_atomic(stats_path, compute_stats(self.root / "episodes", n))
        self.stats = json.loads(stats_path.read_text())

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        if not -len(self) <= i < len(self):
            raise IndexError(f"episode {i} out of range for {len(self)} episodes")
        return _read_h5(self.paths[i])

    def read(self, i: int, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
        """Only the arrays ``keys`` of episode ``i`` (e.g. ``("actions", "proprio")``)."""
        return _read_h5(self.paths[i], keys)

    def __repr__(self) -> str:
        return (f"EpisodeDataset({str(self.root)!r}, env={self.meta['env']!r}, episodes={len(self)}, "
                f"frames={int(self.lengths.sum() + len(self))})")


def load_dataset(root: str | os.PathLike) -> EpisodeDataset:
    """Open and validate a dataset directory written by :func:`collect`.

    Raises:
        DatasetError: not a dataset, incomplete, or an episode file damaged (the message names it).
    """
    return EpisodeDataset(root)


# --------------------------------------------------------------------------------------------
# Latent cache
# --------------------------------------------------------------------------------------------
def cache_key(fingerprint: str) -> str:
    """Folder name of the cache of an encoder fingerprint: 16 hex digits of its SHA-256."""
    return hashlib.sha256(fingerprint.encode()).hexdigest()[:16]


def cache_path(root: str | os.PathLike, fingerprint: str) -> Path:
    """``<root>/latents/<cache_key(fingerprint)>``."""
    return Path(root) / "latents" / cache_key(fingerprint)


def _redo_encode(root: Path) -> str:
    return f"re-run `wmpc encode data={root}` with the same encoder"


def encode_dataset(root: str | os.PathLike, encoder, dtype: str = "float16", batch_size: int = 256,
                   progress: bool = True) -> Path:
    """Encode every frame of a dataset once with a frozen encoder into the latent cache.

    Resumable: episodes already in the cache are skipped; each file is written atomically.

    Args:
        root: dataset directory.
        encoder: an :class:`encoders.Encoder` (frozen; runs on its own device).
        dtype: ``"float16"`` or ``"float32"`` storage.
        batch_size: frames per ``encoder.encode`` call.
        progress: show a tqdm bar.

    Returns:
        the cache folder ``cache_path(root, encoder.fingerprint)``.

    Raises:
        ValueError: a trainable encoder or a bad dtype.
        DatasetError: the folder holds a cache of another fingerprint or dtype.
    """
    import torch
    from tqdm.auto import tqdm

    if dtype not in ("float16", "float32"):
        raise ValueError(f"dtype must be 'float16' or 'float32', got {dtype!r}")
    if getattr(encoder, "trainable", False):
        raise ValueError("a trainable encoder changes during training, so its tokens cannot be cached; "
                         "load a trained checkpoint (make_encoder(name, checkpoint=PATH)) or use "
                         "WindowDataset(..., source='pixels')")
    ds = load_dataset(root)
    fingerprint = encoder.fingerprint
    folder = cache_path(ds.root, fingerprint)
    info = {"format_version": FORMAT_VERSION, "fingerprint": fingerprint, "num_tokens": int(encoder.num_tokens),
            "dim": int(encoder.dim), "dtype": dtype, "episodes": len(ds)}
    folder.mkdir(parents=True, exist_ok=True)
    with _folder_lock(folder, "wmpc encode"):
        info_path = folder / "cache.json"
        if info_path.exists():
            old = json.loads(info_path.read_text())
            if old.get("fingerprint") != fingerprint:
                raise DatasetError(f"{folder} holds tokens of encoder {old.get('fingerprint')!r}, not "
                                   f"{fingerprint!r} (a hash collision or a hand-edited folder); delete it")
            if old.get("dtype") != dtype:
                raise DatasetError(f"{folder} already holds this encoder's tokens as {old.get('dtype')}; "
                                   f"use dtype={old.get('dtype')} or delete the folder to re-encode as {dtype}")
        _remove_temp_files(folder)
        _write_json_atomic(info_path, info)
        todo = []
        for i in range(len(ds)):
            p = folder / EPISODE_FILE.format(i)
            if p.exists():
                try:
                    _check_cache_episode(p, fingerprint, int(ds.lengths[i]), ds.root)
                    continue
                except DatasetError as e:
                    log.warning("re-encoding a damaged cache file: %s", e)
            todo.append(i)
        np_dtype = np.dtype(dtype)
        was_training = encoder.training
        encoder.eval()
        try:
            for i in tqdm(todo, desc="encode", unit="ep", disable=not progress):
                pixels = ds.read(i, ("pixels",))["pixels"]  # (T+1, H, W, 3)
                chunks = [encoder.encode(torch.from_numpy(pixels[s:s + batch_size])).float().cpu().numpy()
                          for s in range(0, len(pixels), int(batch_size))]
                tokens = np.concatenate(chunks).astype(np_dtype)  # (T+1, N, D)
                _write_h5_atomic(folder / EPISODE_FILE.format(i), {"tokens": tokens},
                                 {"fingerprint": fingerprint, "length": int(ds.lengths[i])}, compression=None)
        finally:
            encoder.train(was_training)
    return folder


def _check_cache_episode(path: Path, fingerprint: str, length: int, root: Path) -> None:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            ok = (bool(f.attrs.get("complete", False)) and f.attrs.get("fingerprint") == fingerprint
                  and int(f.attrs.get("length", -1)) == length and "tokens" in f
                  and f["tokens"].shape[0] == length + 1)
    except (OSError, KeyError, ValueError, RuntimeError) as e:
        raise _damaged(path, e, _redo_encode(root)) from e
    if not ok:
        raise DatasetError(f"{path} does not match its dataset episode or encoder fingerprint; "
                           f"delete it and {_redo_encode(root)} to redo it")


def _open_cache(root: Path, encoder_or_cache, num_episodes: int) -> tuple[Path, dict]:
    """Resolve a fingerprint / Encoder / cache folder to a checked cache folder and its cache.json."""
    if isinstance(encoder_or_cache, os.PathLike) or (
            isinstance(encoder_or_cache, str) and (Path(encoder_or_cache) / "cache.json").exists()):
        folder = Path(encoder_or_cache)
        fingerprint = None
    else:
        fingerprint = getattr(encoder_or_cache, "fingerprint", encoder_or_cache)
        if not isinstance(fingerprint, str):
            raise ValueError("pass the encoder fingerprint (str), an Encoder or a cache folder; got "
                             f"{type(encoder_or_cache).__name__}")
        folder = cache_path(root, fingerprint)
    info_path = folder / "cache.json"
    if not info_path.exists():
        have = sorted(p.name for p in (root / "latents").glob("*") if (p / "cache.json").exists())
        raise DatasetError(f"no latent cache for encoder {fingerprint or folder!s} in {root / 'latents'} "
                           f"(existing caches: {have or 'none'}). Run `wmpc encode data={root} "
                           f"encoder=<name> ...` with this encoder first (or call mpc.data.encode_dataset).")
    info = json.loads(info_path.read_text())
    if fingerprint is not None and info.get("fingerprint") != fingerprint:
        raise DatasetError(f"{folder} holds tokens of encoder {info.get('fingerprint')!r}, not {fingerprint!r}; "
                           f"delete it and re-run `wmpc encode data={root}`")
    missing = [i for i in range(num_episodes) if not (folder / EPISODE_FILE.format(i)).exists()]
    if missing:
        raise DatasetError(f"the latent cache {folder} is incomplete ({len(missing)} of {num_episodes} episodes "
                           f"missing); re-run `wmpc encode data={root}` with the same encoder to finish it")
    return folder, info


# --------------------------------------------------------------------------------------------
# Training windows
# --------------------------------------------------------------------------------------------
def split_episodes(num_episodes: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic train/val split of episode indices. Returns sorted (train_ids, val_ids)."""
    if not 0.0 <= float(val_fraction) < 1.0:
        raise ValueError(f"val_fraction must lie in [0, 1), got {val_fraction}")
    perm = np.random.default_rng([int(seed), 2]).permutation(num_episodes)
    n_val = int(round(val_fraction * num_episodes))
    if val_fraction > 0 and num_episodes > 1:
        n_val = min(max(n_val, 1), num_episodes - 1)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


class WindowDataset:
    """Training windows of ``L = num_hist + num_pred`` frames, ``frameskip`` env steps apart.

    Item ``j`` (a window of episode ``e`` starting at step ``s``) is a dict of float32 tensors:
        ``z``        (L, N, D)   cached tokens of frames ``s, s+k, ..., s+(L-1)k`` (k = frameskip);
                                 in ``source="pixels"`` mode ``pixels`` (L, H, W, 3) uint8 instead
        ``proprio``  (L, P)      raw proprio of those frames
        ``actions``  (L-1, k*A)  raw env actions between consecutive sampled frames, concatenated
                                 (``actions[i] = concat(a[s+ik], ..., a[s+ik+k-1])``)
    Windows start at every step ``s`` with ``s + (L-1)k <= T``. Episodes are split into train and val
    by :func:`split_episodes`, so no episode feeds both. The cache is read into memory once (float16
    stays float16; items are converted).

    Args:
        root: dataset directory.
        encoder: encoder fingerprint (str), an Encoder, or a cache folder; unused for ``source="pixels"``.
        num_hist, num_pred: context and predicted frames.
        frameskip: env steps between sampled frames (k).
        split: ``"train"``, ``"val"`` or ``"all"``.
        val_fraction, seed: the episode split.
        source: ``"latents"`` (tokens from the cache) or ``"pixels"`` (raw frames, for trainable encoders).

    Attributes:
        stats: ``stats.json`` with ``action_mean``/``action_std`` tiled to (k*A,) to match ``actions``
            (``env_action_mean``/``env_action_std`` keep the per-env-action (A,) values).
        num_tokens (N), token_dim (D), action_dim (k*A), proprio_dim (P), episode_ids (this split's
        episodes), meta, fingerprint.

    Raises:
        DatasetError: missing latent cache (run ``wmpc encode``), incomplete or damaged files.
        ValueError: bad window sizes, or no episode long enough for one window.
    """

    def __init__(self, root: str | os.PathLike, encoder=None, num_hist: int = 3, num_pred: int = 1,
                 frameskip: int = 1, split: str = "train", val_fraction: float = 0.1, seed: int = 0,
                 source: str = "latents"):
        if int(num_hist) < 1 or int(num_pred) < 1 or int(frameskip) < 1:
            raise ValueError(f"num_hist, num_pred and frameskip must be >= 1, got {num_hist}, {num_pred}, "
                             f"{frameskip}")
        if split not in ("train", "val", "all"):
            raise ValueError(f"split must be 'train', 'val' or 'all', got {split!r}")
        if source not in ("latents", "pixels"):
            raise ValueError(f"source must be 'latents' or 'pixels', got {source!r}")
        self.episodes = load_dataset(root)
        self.root, self.meta = self.episodes.root, self.episodes.meta
        self.num_hist, self.num_pred, self.frameskip = int(num_hist), int(num_pred), int(frameskip)
        self.window = L = self.num_hist + self.num_pred
        self.source = source
        train_ids, val_ids = split_episodes(len(self.episodes), val_fraction, seed)
        ids = {"train": train_ids, "val": val_ids, "all": np.arange(len(self.episodes))}[split]
        self.episode_ids = ids

        span = (L - 1) * self.frameskip  # env steps covered by a window
        counts = np.maximum(self.episodes.lengths[ids] - span + 1, 0)  # windows per episode
        if len(ids) and counts.sum() == 0:
            raise ValueError(f"no episode of {self.root} is long enough for a window of {L} frames "
                             f"{self.frameskip} steps apart ({span} steps; longest episode has "
                             f"{int(self.episodes.lengths.max())}); lower num_hist/num_pred/frameskip")
        self._win_local = np.repeat(np.arange(len(ids)), counts)                      # (W,)
        first = np.repeat(np.cumsum(counts) - counts, counts)
        self._win_start = np.arange(int(counts.sum())) - first                        # (W,)

        # frames and actions of this split's episodes, concatenated
        frames = self.episodes.lengths[ids] + 1
        self._frame_offset = np.concatenate([[0], np.cumsum(frames)[:-1]]).astype(np.int64)
        self._action_offset = self._frame_offset - np.arange(len(ids))
        parts = [self.episodes.read(int(e), ("proprio", "actions")) for e in ids]
        P, A = self.episodes.shapes["proprio"][0], self.episodes.shapes["actions"][0]
        self._proprio = np.concatenate([p["proprio"] for p in parts]) if parts else np.zeros((0, P), np.float32)
        self._actions = np.concatenate([p["actions"] for p in parts]) if parts else np.zeros((0, A), np.float32)
        self.proprio_dim, self.env_action_dim = int(P), int(A)
        self.action_dim = self.frameskip * int(A)

        self.fingerprint, self._tokens = None, None
        if source == "latents":
            if encoder is None:
                raise ValueError("source='latents' needs the encoder fingerprint, an Encoder or a cache folder")
            folder, info = _open_cache(self.root, encoder, len(self.episodes))
            self.fingerprint, self.cache_dir = info["fingerprint"], folder
            self.num_tokens, self.token_dim = int(info["num_tokens"]), int(info["dim"])
            dt = np.dtype(info["dtype"])
            self._tokens = np.empty((int(frames.sum()), self.num_tokens, self.token_dim), dt)  # (F, N, D)
            for j, e in enumerate(ids):
                path = folder / EPISODE_FILE.format(int(e))
                _check_cache_episode(path, self.fingerprint, int(self.episodes.lengths[e]), self.root)
                tok = _read_h5(path, ("tokens",), _redo_encode(self.root))["tokens"]
                if tok.shape[1:] != (self.num_tokens, self.token_dim):
                    raise DatasetError(f"{path} has tokens {tok.shape}, cache.json says N={self.num_tokens} "
                                       f"D={self.token_dim}; delete it and {_redo_encode(self.root)}")
                self._tokens[self._frame_offset[j]:self._frame_offset[j] + len(tok)] = tok
        else:
            self.num_tokens = self.token_dim = None

        stats = dict(self.episodes.stats)
        stats["env_action_mean"], stats["env_action_std"] = stats["action_mean"], stats["action_std"]
        stats["action_mean"] = list(np.tile(stats["action_mean"], self.frameskip))
        stats["action_std"] = list(np.tile(stats["action_std"], self.frameskip))
        self.stats = stats

    def __len__(self) -> int:
        return len(self._win_start)

    def window_index(self, j: int) -> tuple[int, int]:
        """(episode id, start step) of window ``j``."""
        return int(self.episode_ids[self._win_local[j]]), int(self._win_start[j])

    def __getitem__(self, j: int) -> dict:
        import torch

        if not 0 <= j < len(self):
            raise IndexError(f"window {j} out of range for {len(self)} windows")
        local, s = int(self._win_local[j]), int(self._win_start[j])
        k, L = self.frameskip, self.window
        steps = s + k * np.arange(L)                                       # (L,) frame indices in episode
        frames = self._frame_offset[local] + steps
        acts = self._actions[self._action_offset[local] + s: self._action_offset[local] + s + k * (L - 1)]
        item = {"proprio": torch.from_numpy(self._proprio[frames].astype(np.float32)),
                "actions": torch.from_numpy(acts.reshape(L - 1, k * self.env_action_dim).astype(np.float32))}
        if self._tokens is not None:
            item["z"] = torch.from_numpy(self._tokens[frames].astype(np.float32))  # (L, N, D)
        else:
            import h5py
            path = self.episodes.paths[int(self.episode_ids[local])]
            try:
                with h5py.File(path, "r") as f:
                    item["pixels"] = torch.from_numpy(f["pixels"][steps])   # (L, H, W, 3) uint8
            except (OSError, KeyError, ValueError, RuntimeError) as e:
                raise _damaged(path, e, _REDO_COLLECT) from e
        return item

    def __repr__(self) -> str:
        return (f"WindowDataset({str(self.root)!r}, windows={len(self)}, episodes={len(self.episode_ids)}, "
                f"L={self.window}, frameskip={self.frameskip}, source={self.source!r})")


# --------------------------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------------------------
def _collect_task(cfg) -> Path:
    options = _plain(cfg.env)
    name = options.pop("name", None)
    if not name:
        raise ValueError("the env config needs a `name` (a wmpc env name or a gymnasium id)")
    options.pop("image_size", None)
    options.pop("frameskip", None)
    try:
        out = collect(env=name, out=cfg.out, episodes=cfg.episodes, steps=cfg.steps, policy=cfg.policy,
                      seed=cfg.seed, workers=cfg.workers, env_options=options, image_size=cfg.image_size,
                      frameskip=cfg.frameskip, policy_options=_plain(cfg.get("policy_options") or {}),
                      compression=cfg.compression, progress=cfg.progress)
    except KeyboardInterrupt:
        print(f"\ninterrupted: the finished episodes in {cfg.out} are kept; run the same command again "
              "to collect the rest", file=sys.stderr)
        raise SystemExit(130)
    ds = load_dataset(out)
    print(f"dataset: {out}  ({len(ds)} episodes, {int(ds.lengths.sum()) + len(ds)} frames, env={name})")
    return out


def collect_command(argv: list[str]) -> int:
    """``wmpc collect env=<name> episodes=N steps=T policy=uniform out=<dir> workers=K seed=S``."""
    from mpc.commands.cli import env_overrides, hydra_command

    return hydra_command("collect", _collect_task, env_overrides(argv), "wmpc collect")


def _encode_task(cfg) -> Path:
    import encoders
    import torch

    options = _plain(cfg.encoder)
    if not isinstance(options, dict) or "name" not in options:
        raise ValueError("the encoder config needs a `name` (e.g. encoder=dinov2, or +encoder.name=<registered>)")
    name = options.pop("name")
    enc = encoders.make_encoder(name, **options)
    device = cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    enc = enc.to(device)
    folder = encode_dataset(cfg.data, enc, dtype=cfg.dtype, batch_size=cfg.batch_size, progress=cfg.progress)
    print(f"latent cache: {folder}  (encoder {enc.fingerprint}, N={enc.num_tokens}, D={enc.dim}, {cfg.dtype})")
    return folder


def encode_command(argv: list[str]) -> int:
    """``wmpc encode data=<dir> encoder=<name> dtype=float16``: fill the latent cache."""
    from mpc.commands.cli import hydra_command

    return hydra_command("encode", _encode_task, argv, "wmpc encode")
