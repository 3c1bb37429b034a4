"""Training windows: short clips of frames cut from the episodes of a dataset.

:func:`split_episodes` splits episodes (never windows) into train and val; :class:`WindowDataset`
serves windows of cached tokens (or raw pixels, for trainable encoders), proprio and the actions
between the sampled frames.
"""
from __future__ import annotations

import os

import numpy as np

from mpc.data.episodes import EpisodeDataset, load_dataset
from mpc.data.format import open_h5
from mpc.data.latents import read_tokens

__all__ = ["split_episodes", "WindowDataset"]


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
        root: dataset directory, or its :class:`mpc.data.EpisodeDataset` already opened (its episode
            files are then not checked again).
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
        self.episodes = root if isinstance(root, EpisodeDataset) else load_dataset(root)
        self.root, self.meta = self.episodes.root, self.episodes.meta
        self.num_hist, self.num_pred, self.frameskip = int(num_hist), int(num_pred), int(frameskip)
        self.window = self.num_hist + self.num_pred
        self.source = source
        train_ids, val_ids = split_episodes(len(self.episodes), val_fraction, seed)
        self.episode_ids = ids = {"train": train_ids, "val": val_ids, "all": np.arange(len(self.episodes))}[split]
        self._index_windows(ids)
        self._read_arrays(ids)

        self.fingerprint, self._tokens = None, None
        if source == "latents":
            if encoder is None:
                raise ValueError("source='latents' needs the encoder fingerprint, an Encoder or a cache folder")
            self._tokens, info, self.cache_dir = read_tokens(self.root, encoder, self.episodes.lengths, ids)
            self.fingerprint = info["fingerprint"]
            self.num_tokens, self.token_dim = int(info["num_tokens"]), int(info["dim"])
        else:
            self.num_tokens = self.token_dim = None

        stats = dict(self.episodes.stats)
        stats["env_action_mean"], stats["env_action_std"] = stats["action_mean"], stats["action_std"]
        stats["action_mean"] = list(np.tile(stats["action_mean"], self.frameskip))
        stats["action_std"] = list(np.tile(stats["action_std"], self.frameskip))
        self.stats = stats

    def _index_windows(self, ids: np.ndarray) -> None:
        """Window ``j`` -> (position in ``ids``, start step): ``_win_local`` and ``_win_start`` (W,)."""
        L = self.window
        span = (L - 1) * self.frameskip  # env steps covered by a window
        counts = np.maximum(self.episodes.lengths[ids] - span + 1, 0)  # windows per episode
        if len(ids) and counts.sum() == 0:
            raise ValueError(f"no episode of {self.root} is long enough for a window of {L} frames "
                             f"{self.frameskip} steps apart ({span} steps; longest episode has "
                             f"{int(self.episodes.lengths.max())}); lower num_hist/num_pred/frameskip")
        self._win_local = np.repeat(np.arange(len(ids)), counts)                      # (W,)
        first = np.repeat(np.cumsum(counts) - counts, counts)
        self._win_start = np.arange(int(counts.sum())) - first                        # (W,)

    def _read_arrays(self, ids: np.ndarray) -> None:
        """Proprio (F, P) and actions (F - len(ids), A) of episodes ``ids``, concatenated, with offsets."""
        frames = self.episodes.lengths[ids] + 1
        self._frame_offset = np.concatenate([[0], np.cumsum(frames)[:-1]]).astype(np.int64)
        self._action_offset = self._frame_offset - np.arange(len(ids))
        parts = [self.episodes.read(int(e), ("proprio", "actions")) for e in ids]
        P, A = self.episodes.shapes["proprio"][0], self.episodes.shapes["actions"][0]
        self._proprio = np.concatenate([p["proprio"] for p in parts]) if parts else np.zeros((0, P), np.float32)
        self._actions = np.concatenate([p["actions"] for p in parts]) if parts else np.zeros((0, A), np.float32)
        self.proprio_dim, self.env_action_dim = int(P), int(A)
        self.action_dim = self.frameskip * int(A)

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
            path = self.episodes.paths[int(self.episode_ids[local])]
            with open_h5(path) as f:
                item["pixels"] = torch.from_numpy(f["pixels"][steps])   # (L, H, W, 3) uint8
        return item

    def get_batch(self, indices) -> dict:
        """Windows ``indices`` at once: the items of ``__getitem__`` stacked along a new first axis.

        The same values as ``default_collate([self[j] for j in indices])``, gathered with one numpy
        index per array instead of one Python call per window (the trainer's data path).
        """
        import torch

        j = np.asarray(indices, dtype=np.int64).reshape(-1)
        if len(j) and not (0 <= j.min() and j.max() < len(self)):
            raise IndexError(f"window index out of range for {len(self)} windows")
        if self._tokens is None:  # raw pixels: one h5 read per window
            return torch.utils.data.default_collate([self[int(i)] for i in j])
        local, s = self._win_local[j], self._win_start[j]
        k, L = self.frameskip, self.window
        frames = (self._frame_offset[local] + s)[:, None] + k * np.arange(L)             # (B, L)
        acts = (self._action_offset[local] + s)[:, None] + np.arange(k * (L - 1))       # (B, k(L-1))
        return {"proprio": torch.from_numpy(self._proprio[frames].astype(np.float32)),
                "actions": torch.from_numpy(self._actions[acts].astype(np.float32)
                                            .reshape(len(j), L - 1, k * self.env_action_dim)),
                "z": torch.from_numpy(self._tokens[frames].astype(np.float32))}

    def __repr__(self) -> str:
        return (f"WindowDataset({str(self.root)!r}, windows={len(self)}, episodes={len(self.episode_ids)}, "
                f"L={self.window}, frameskip={self.frameskip}, source={self.source!r})")
