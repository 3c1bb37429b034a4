"""Datasets: collection, storage, loading, training windows and the latent cache.

A dataset is a directory of HDF5 files, readable with ``h5py`` alone::

    <dir>/dataset.json                 metadata (see below)
    <dir>/stats.json                   action/proprio (and state) mean & std over all episodes
    <dir>/episodes/episode_000000.h5   one file per episode
    <dir>/latents/<key>/               latent cache of one frozen encoder (``wmpc encode``)

``dataset.json`` keys: ``format_version``, ``env`` (a wmpc env name or a gymnasium id),
``env_options`` (including ``image_size`` and ``action_repeat``: each stored step repeats its
action ``action_repeat`` simulator steps), ``action_low``/``action_high`` (the env's action Box), ``episodes``,
``steps``, ``policy`` and ``policy_options``, ``seed`` (episode ``i`` uses seed ``seed + i``),
``compression``, ``wmpc_version``, ``created``.

Each ``episode_%06d.h5`` holds, for an episode of ``T`` steps:

    pixels   (T+1, H, W, 3)    uint8     frame t is the observation before action t
    proprio  (T+1, P)          float32
    actions  (T, A)            float32   the action applied between frame t and frame t+1
    states   (T+1, state_dim)  float64   only if the env reports ``info["state"]``
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

One module per stage, everything public re-exported here:

    format.py        layout constants, DatasetError, episode file write/read/check, the folder lock
    exploration.py   exploration policies (POLICIES, make_actions)
    collection.py    collect, rollout_episode (resume, worker pool, SIGTERM, stats)
    episodes.py      load_dataset -> EpisodeDataset
    latents.py       the latent cache (cache_key, cache_path, encode_dataset)
    windows.py       split_episodes, WindowDataset

The commands ``wmpc collect`` and ``wmpc encode`` are :mod:`mpc.commands.collect` and
:mod:`mpc.commands.encode`.
"""
from __future__ import annotations

from mpc.data.collection import collect, rollout_episode
from mpc.data.episodes import EpisodeDataset, load_dataset
from mpc.data.exploration import POLICIES, make_actions
from mpc.data.format import FORMAT_VERSION, DatasetError, compute_stats
from mpc.data.latents import cache_key, cache_path, encode_dataset
from mpc.data.windows import WindowDataset, split_episodes

__all__ = [
    "FORMAT_VERSION", "DatasetError", "POLICIES", "make_actions", "rollout_episode", "collect",
    "compute_stats", "EpisodeDataset", "load_dataset", "cache_key", "cache_path", "encode_dataset",
    "split_episodes", "WindowDataset",
]
