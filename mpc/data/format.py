"""The on-disk format of a dataset: file layout, episode files, their checks and errors.

Everything that reads or writes an HDF5 file of a dataset or of its latent cache goes through
here: :func:`write_h5` (atomic, checksummed), :func:`open_h5` / :func:`read_h5` (read errors become
a :class:`DatasetError` that names the file and the fix), :func:`check_episode` (the layout of one
episode file) and :func:`files_to_redo` (the resume scan). The layout itself is described in the
docstring of :mod:`mpc.data`.
"""
from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from mpc._io import LockHeld, atomic_path, folder_lock, write_json

__all__ = ["FORMAT_VERSION", "DatasetError", "compute_stats", "OBJECT_POSE", "object_moving"]

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
META_FILE = "dataset.json"       # <root>/dataset.json: how the dataset was collected
STATS_FILE = "stats.json"        # <root>/stats.json: action/proprio/state mean and std, coverage
EPISODES_DIR = "episodes"        # <root>/episodes/episode_%06d.h5
EPISODE_FILE = "episode_{:06d}.h5"
REDO_COLLECT = "re-run the same `wmpc collect` command"


class DatasetError(ValueError):
    """A dataset or latent cache that is missing, incomplete, damaged or does not match the request."""


def damaged(path: Path, err: BaseException, redo: str) -> DatasetError:
    """The error for a file that cannot be read; ``redo`` says how to write it again."""
    return DatasetError(f"{path} is truncated or damaged ({type(err).__name__}: {err}). "
                        f"Delete it and {redo} to redo it.")


@contextlib.contextmanager
def dataset_lock(folder: Path, what: str, wait: bool = False) -> Iterator[None]:
    """Hold ``folder``'s lock while ``what`` (``"wmpc collect"``, ``"wmpc encode"``) writes into it.

    Args:
        wait: block until another holder is done instead of failing at once.

    Raises:
        DatasetError: another process holds it and ``wait`` is false.
    """
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(folder_lock(folder, what, wait=wait))
        except LockHeld:
            raise DatasetError(f"another process is running {what} into {folder}; wait for it to finish "
                               "(or stop it) before starting a second one") from None
        yield


def write_h5(path: Path, arrays: dict[str, np.ndarray], attrs: dict[str, Any],
             compression: str | None = None) -> None:
    """Write ``arrays`` (chunked one frame each, Fletcher-32 checksummed) and ``attrs`` atomically.

    The attribute ``complete=True`` is written last, so a file without it was never finished.
    """
    import h5py

    comp = None if compression in (None, "none", "None") else compression
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w", libver="latest") as f:
            for key, arr in arrays.items():
                chunks = (1, *arr.shape[1:]) if arr.ndim >= 2 and arr.shape[0] else True
                f.create_dataset(key, data=arr, chunks=chunks if arr.size else None,
                                 compression=comp if arr.size else None, fletcher32=bool(arr.size))
            for key, value in attrs.items():
                f.attrs[key] = value
            f.attrs["complete"] = True  # last thing written before close


@contextlib.contextmanager
def open_h5(path: Path, redo: str = REDO_COLLECT):
    """``h5py.File(path, "r")``; a read error inside the block becomes :func:`damaged`.

    Raises:
        DatasetError: the file (or something read in the block) is unreadable; ``DatasetError``\\ s
            raised in the block pass unchanged.
    """
    import h5py

    try:
        with h5py.File(path, "r") as f:
            yield f
    except DatasetError:
        raise
    except (OSError, KeyError, ValueError, RuntimeError) as e:
        raise damaged(path, e, redo) from e


def read_h5(path: Path, keys: tuple[str, ...] | None = None, redo: str = REDO_COLLECT) -> dict[str, np.ndarray]:
    """The arrays ``keys`` (all when ``None``; absent ones are skipped) of an HDF5 file."""
    with open_h5(path, redo) as f:
        return {k: f[k][()] for k in (keys or tuple(f.keys())) if k in f}


def check_episode(path: Path) -> dict[str, tuple]:
    """Open an episode file and check its layout. Returns ``{name: shape}`` plus ``length`` (T).

    Raises:
        DatasetError: unreadable file, missing dataset, incomplete flag, inconsistent shapes.
    """
    with open_h5(path) as f:
        if not bool(f.attrs.get("complete", False)):
            raise DatasetError(f"{path} is marked incomplete. Delete it and {REDO_COLLECT} to redo it.")
        missing = [k for k in ("pixels", "proprio", "actions") if k not in f]
        if missing:
            raise DatasetError(f"{path} lacks dataset(s) {missing}. Delete it and {REDO_COLLECT} "
                               "to redo it.")
        shapes = {k: tuple(f[k].shape) for k in f.keys()}
        T = int(f.attrs["length"])
        pixels_dtype = f["pixels"].dtype
    px, pr, ac = shapes["pixels"], shapes["proprio"], shapes["actions"]
    ok = (len(px) == 4 and px[0] == T + 1 and px[3] == 3 and pixels_dtype == np.uint8
          and len(pr) == 2 and pr[0] == T + 1 and len(ac) == 2 and ac[0] == T
          and ("states" not in shapes or (len(shapes["states"]) == 2 and shapes["states"][0] == T + 1)))
    if not ok:
        raise DatasetError(f"{path} has inconsistent shapes {shapes} for length={T}; expected pixels "
                           f"(T+1,H,W,3) uint8, proprio (T+1,P), actions (T,A), states (T+1,S). "
                           f"Delete it and {REDO_COLLECT} to redo it.")
    return {**shapes, "length": T}


def files_to_redo(folder: Path, count: int, check: Callable[[Path, int], Any], what: str) -> list[int]:
    """Indices ``i < count`` whose ``folder/episode_%06d.h5`` is missing or fails ``check(path, i)``.

    A file that fails its check is logged (``what``: e.g. ``"re-collecting a damaged episode"``) and
    will be written again. This is the resume scan of ``collect`` and ``encode_dataset``.
    """
    todo = []
    for i in range(count):
        path = folder / EPISODE_FILE.format(i)
        if path.exists():
            try:
                check(path, i)
                continue
            except DatasetError as e:
                log.warning("%s: %s", what, e)
        todo.append(i)
    return todo


# Envs whose state holds a movable object: env name -> indices of the object's (x, y, angle) in
# the state vector. Their coverage adds how often and how far the object moves.
OBJECT_POSE = {"pusht": (2, 3, 4)}  # Push-T: block_x, block_y, block_angle (envs/pusht.py)
MOVE_PX, MOVE_RAD = 1.0, 0.01  # a step moves the object when it shifts > 1 state unit or turns > 0.01 rad


def object_moving(states: np.ndarray, pose: tuple[int, int, int]) -> np.ndarray:
    """``(T,)`` bool: transition ``t`` of an episode's ``(T+1, state_dim)`` states moves the object
    (it shifts more than :data:`MOVE_PX` state units or turns more than :data:`MOVE_RAD`, wrapped)."""
    ix, iy, ia = pose
    steps = np.diff(np.asarray(states, dtype=np.float64)[:, [ix, iy, ia]], axis=0)  # (T, 3)
    turn = np.abs(np.angle(np.exp(1j * steps[:, 2])))  # wrapped
    return (np.linalg.norm(steps[:, :2], axis=1) > MOVE_PX) | (turn > MOVE_RAD)


def _object_coverage(states: list[np.ndarray], pose: tuple[int, int, int]) -> dict[str, Any]:
    """How much exploration moved an object, from each episode's ``(T+1, state_dim)`` states.

    Returns:
        ``object_moving_fraction`` (share of transitions whose object moves, :data:`MOVE_PX` /
        :data:`MOVE_RAD`), ``object_pose_std`` (std of x and y and circular std of the angle,
        over all frames) and ``object_displacement_mean`` (mean distance between an episode's first
        and last object position).
    """
    ix, iy, ia = pose
    moving = np.concatenate([object_moving(s, pose) for s in states])  # (sum T,)
    frames = np.concatenate(states)
    resultant = np.abs(np.mean(np.exp(1j * frames[:, ia])))
    angle_std = float(np.sqrt(-2.0 * np.log(max(resultant, 1e-12))))
    shift = [np.linalg.norm(s[-1, [ix, iy]] - s[0, [ix, iy]]) for s in states]
    return {"object_moving_fraction": float(moving.mean()) if len(moving) else 0.0,
            "object_pose_std": [float(frames[:, ix].std()), float(frames[:, iy].std()), angle_std],
            "object_displacement_mean": float(np.mean(shift))}


def compute_stats(episodes_dir: Path, num_episodes: int, env: str | None = None) -> dict[str, Any]:
    """Mean and std (floored at 1e-6) of actions, proprio and states over all episodes, and coverage.

    Args:
        episodes_dir: the dataset's ``episodes`` folder.
        num_episodes: episodes ``0 .. num_episodes - 1`` are read.
        env: the dataset's env name; one listed in :data:`OBJECT_POSE` adds object coverage.

    Returns:
        dict with ``action_mean``/``action_std`` (A,), ``proprio_mean``/``proprio_std`` (P,),
        ``state_mean``/``state_std`` (state_dim,) when states exist, ``num_episodes``, ``num_frames``,
        ``num_transitions`` (all as lists/ints, JSON-ready) and, with states, ``coverage``: the
        spread of the states (``state_std`` unfloored, ``state_min``, ``state_max``,
        ``state_range``) and for an :data:`OBJECT_POSE` env the keys of :func:`_object_coverage`.
    """
    sums: dict[str, list] = {}
    lo = hi = None
    pose = OBJECT_POSE.get(env) if env else None
    object_states = []
    for i in range(num_episodes):
        ep = read_h5(episodes_dir / EPISODE_FILE.format(i), ("actions", "proprio", "states"))
        for key, name in (("actions", "action"), ("proprio", "proprio"), ("states", "state")):
            if key in ep:
                x = ep[key].astype(np.float64)
                s = sums.setdefault(name, [0, 0.0, 0.0])
                s[0] += len(x)
                s[1] = s[1] + x.sum(0)
                s[2] = s[2] + (x ** 2).sum(0)
        if "states" in ep and len(ep["states"]):
            x = ep["states"].astype(np.float64)
            lo = x.min(0) if lo is None else np.minimum(lo, x.min(0))
            hi = x.max(0) if hi is None else np.maximum(hi, x.max(0))
            if pose is not None and x.shape[1] > max(pose):
                object_states.append(x)
    stats: dict[str, Any] = {}
    raw_std = {}
    for name, (n, s1, s2) in sums.items():
        mean = s1 / max(n, 1)
        std = np.sqrt(np.maximum(s2 / max(n, 1) - mean ** 2, 0.0))
        raw_std[name] = std
        stats[f"{name}_mean"] = mean.tolist()
        stats[f"{name}_std"] = np.maximum(std, 1e-6).tolist()
    stats["num_episodes"] = num_episodes
    stats["num_transitions"] = int(sums["action"][0]) if "action" in sums else 0
    stats["num_frames"] = int(sums["proprio"][0]) if "proprio" in sums else 0
    if lo is not None:
        coverage = {"state_std": raw_std["state"].tolist(), "state_min": lo.tolist(), "state_max": hi.tolist(),
                    "state_range": (hi - lo).tolist()}
        if object_states:
            coverage.update(_object_coverage(object_states, pose))
        stats["coverage"] = coverage
    return stats


def write_stats(root: Path, num_episodes: int) -> None:
    """Compute the stats of the first ``num_episodes`` episodes and write ``<root>/stats.json``
    (the env named in ``<root>/dataset.json`` chooses the coverage keys)."""
    import json

    meta_path = root / META_FILE
    env = json.loads(meta_path.read_text()).get("env") if meta_path.exists() else None
    write_json(root / STATS_FILE, compute_stats(root / EPISODES_DIR, num_episodes, env=env), sort_keys=True)

