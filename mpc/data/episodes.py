"""Reading a dataset: :func:`load_dataset` opens and checks a folder written by ``collect``.

The result, an :class:`EpisodeDataset`, gives one episode at a time as numpy arrays (``ds[i]``)
or only some of its arrays (``ds.read(i, keys)``); training windows are built on top of it in
:mod:`mpc.data.windows`.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from mpc.data.format import (EPISODE_FILE, EPISODES_DIR, FORMAT_VERSION, META_FILE, REDO_COLLECT,
                             STATS_FILE, DatasetError, check_episode, read_h5, write_stats)

__all__ = ["EpisodeDataset", "load_dataset"]


# keys every dataset.json has (see mpc.data); anything without them was not written by wmpc collect
_REQUIRED_META = ("format_version", "env")


def read_meta(root: Path) -> dict:
    """``<root>/dataset.json``, checked for this wmpc's format version.

    Raises:
        DatasetError: no ``dataset.json`` (not a dataset), a damaged or foreign one, or another
            format version.
    """
    meta_path = root / META_FILE
    if not meta_path.exists():
        raise DatasetError(f"{root} is not a wmpc dataset (no dataset.json); create one with "
                           "`wmpc collect env=<name> out=<dir>`")
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DatasetError(f"{meta_path} is not valid JSON ({e}); it was damaged or written by another "
                           "tool. Re-create the dataset with `wmpc collect`") from e
    missing = [k for k in _REQUIRED_META if not isinstance(meta, dict) or k not in meta]
    if missing:
        raise DatasetError(f"{meta_path} is not a wmpc dataset.json (missing {', '.join(missing)}); "
                           "re-create the dataset with `wmpc collect`")
    if meta.get("format_version") != FORMAT_VERSION:
        raise DatasetError(f"{meta_path} has format_version {meta.get('format_version')}, this wmpc reads "
                           f"version {FORMAT_VERSION}; re-collect the dataset with this version")
    return meta


class EpisodeDataset:
    """The episodes of a dataset directory; ``ds[i]`` -> dict of numpy arrays (see :mod:`mpc.data`).

    Open one with :func:`load_dataset`, which documents the checks made on opening.

    Attributes:
        root: the dataset directory. meta: ``dataset.json``. stats: ``stats.json`` (per env action).
        paths: the E episode files. lengths: (E,) int steps per episode. shapes: dict of per-frame
        shapes (``pixels`` (H,W,3), ``proprio`` (P,), ``actions`` (A,), ``states`` (state_dim,) if present).
    """

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.meta = read_meta(self.root)
        n = int(self.meta["episodes"])
        self.paths = [self.root / EPISODES_DIR / EPISODE_FILE.format(i) for i in range(n)]
        missing = [p.name for p in self.paths if not p.exists()]
        if missing:
            raise DatasetError(f"{self.root} is incomplete: {len(missing)} of {n} episodes missing "
                               f"(first: {missing[0]}). Re-run the same `wmpc collect` command to finish it.")
        lengths, ref = [], None
        for p in self.paths:
            info = check_episode(p)
            frame = {k: v[1:] for k, v in info.items() if k != "length"}
            if ref is None:
                ref = frame
            elif frame != ref:
                raise DatasetError(f"{p} has per-frame shapes {frame}, other episodes have {ref}; "
                                   f"delete it and {REDO_COLLECT} to redo it")
            lengths.append(info["length"])
        self.lengths = np.asarray(lengths, np.int64)
        self.shapes = ref
        stats_path = self.root / STATS_FILE
        if not stats_path.exists():  # killed right after the last episode
            write_stats(self.root, n)
        self.stats = json.loads(stats_path.read_text())

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        if not -len(self) <= i < len(self):
            raise IndexError(f"episode {i} out of range for {len(self)} episodes")
        return read_h5(self.paths[i])

    def read(self, i: int, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
        """Only the arrays ``keys`` of episode ``i`` (e.g. ``("actions", "proprio")``)."""
        return read_h5(self.paths[i], keys)

    def __repr__(self) -> str:
        return (f"EpisodeDataset({str(self.root)!r}, env={self.meta['env']!r}, episodes={len(self)}, "
                f"frames={int(self.lengths.sum() + len(self))})")


def load_dataset(root: str | os.PathLike) -> EpisodeDataset:
    """Open and validate a dataset directory written by :func:`mpc.data.collect`.

    Every episode file is opened and its layout checked (not its pixels: checksums catch damaged
    bytes when an array is read); a missing ``stats.json`` (a run killed after its last episode) is
    written.

    Args:
        root: the dataset directory.

    Returns:
        the :class:`EpisodeDataset` of ``root``.

    Raises:
        DatasetError: not a dataset, another format version, incomplete, or an episode file damaged
            or shaped unlike the others (the message names it and says how to redo it).
    """
    return EpisodeDataset(root)
