"""The latent cache: every frame of a dataset encoded once by a frozen encoder.

``<root>/latents/<cache_key(fingerprint)>/`` holds ``cache.json`` and one ``episode_%06d.h5`` of
``tokens (T+1, N, D)`` per episode (layout in :mod:`mpc.data`). :func:`encode_dataset` fills it
(resumable, under the folder's lock); :func:`read_tokens` checks it against the dataset and the
encoder and reads it for :class:`mpc.data.WindowDataset`.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from mpc._io import remove_temp_files, write_json
from mpc.data.episodes import load_dataset
from mpc.data.format import (EPISODE_FILE, FORMAT_VERSION, DatasetError, dataset_lock, files_to_redo,
                             open_h5, read_h5, write_h5)

__all__ = ["cache_key", "cache_path", "encode_dataset"]

CACHE_INFO = "cache.json"  # <cache folder>/cache.json: fingerprint, num_tokens, dim, dtype


def cache_key(fingerprint: str) -> str:
    """Folder name of the cache of an encoder fingerprint: 16 hex digits of its SHA-256."""
    return hashlib.sha256(fingerprint.encode()).hexdigest()[:16]


def cache_path(root: str | os.PathLike, fingerprint: str) -> Path:
    """``<root>/latents/<cache_key(fingerprint)>``."""
    return Path(root) / "latents" / cache_key(fingerprint)


def _redo_encode(root: Path) -> str:
    return f"re-run `wmpc encode data={root}` with the same encoder"


def _check_cache_episode(path: Path, fingerprint: str, length: int, root: Path) -> None:
    """Check that a cache file is complete and holds ``length + 1`` frames of ``fingerprint``.

    Raises:
        DatasetError: unreadable, incomplete, or written for another episode or encoder.
    """
    with open_h5(path, _redo_encode(root)) as f:
        ok = (bool(f.attrs.get("complete", False)) and f.attrs.get("fingerprint") == fingerprint
              and int(f.attrs.get("length", -1)) == length and "tokens" in f
              and f["tokens"].shape[0] == length + 1)
    if not ok:
        raise DatasetError(f"{path} does not match its dataset episode or encoder fingerprint; "
                           f"delete it and {_redo_encode(root)} to redo it")


def _encode_frames(encoder, pixels: np.ndarray, batch_size: int, dtype: np.dtype) -> np.ndarray:
    """Tokens of uint8 frames ``pixels`` (F, H, W, 3), ``batch_size`` at a time. Returns (F, N, D)."""
    import torch

    chunks = [encoder.encode(torch.from_numpy(pixels[s:s + batch_size])).float().cpu().numpy()
              for s in range(0, len(pixels), int(batch_size))]
    return np.concatenate(chunks).astype(dtype)


def encode_dataset(root: str | os.PathLike, encoder, dtype: str = "float16", batch_size: int = 256,
                   progress: bool = True, wait: bool = False) -> Path:
    """Encode every frame of a dataset once with a frozen encoder into the latent cache.

    Resumable: episodes already in the cache are skipped; each file is written atomically.

    Args:
        root: dataset directory.
        encoder: an :class:`encoders.Encoder` (frozen; runs on its own device).
        dtype: ``"float16"`` or ``"float32"`` storage.
        batch_size: frames per ``encoder.encode`` call.
        progress: show a tqdm bar.
        wait: when another process is encoding into the same cache, wait for it (then encode only
            what it left) instead of failing.

    Returns:
        the cache folder ``cache_path(root, encoder.fingerprint)``.

    Raises:
        ValueError: a trainable encoder or a bad dtype.
        DatasetError: the folder holds a cache of another fingerprint or dtype, or another process
            is encoding into it and ``wait`` is false.
    """
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
    with dataset_lock(folder, "wmpc encode", wait=wait):
        info_path = folder / CACHE_INFO
        if info_path.exists():
            old = json.loads(info_path.read_text())
            if old.get("fingerprint") != fingerprint:
                raise DatasetError(f"{folder} holds tokens of encoder {old.get('fingerprint')!r}, not "
                                   f"{fingerprint!r} (a hash collision or a hand-edited folder); delete it")
            if old.get("dtype") != dtype:
                raise DatasetError(f"{folder} already holds this encoder's tokens as {old.get('dtype')}; "
                                   f"use dtype={old.get('dtype')} or delete the folder to re-encode as {dtype}")
        remove_temp_files(folder)
        write_json(info_path, info, sort_keys=True)
        todo = files_to_redo(folder, len(ds), lambda path, i: _check_cache_episode(
            path, fingerprint, int(ds.lengths[i]), ds.root), "re-encoding a damaged cache file")
        was_training = encoder.training
        encoder.eval()
        try:
            for i in tqdm(todo, desc="encode", unit="ep", disable=not progress):
                pixels = ds.read(i, ("pixels",))["pixels"]  # (T+1, H, W, 3)
                tokens = _encode_frames(encoder, pixels, batch_size, np.dtype(dtype))  # (T+1, N, D)
                write_h5(folder / EPISODE_FILE.format(i), {"tokens": tokens},
                         {"fingerprint": fingerprint, "length": int(ds.lengths[i])}, compression=None)
        finally:
            encoder.train(was_training)
    return folder


def _open_cache(root: Path, encoder_or_cache, num_episodes: int) -> tuple[Path, dict]:
    """Resolve a fingerprint / Encoder / cache folder to a checked cache folder and its cache.json."""
    if isinstance(encoder_or_cache, os.PathLike) or (
            isinstance(encoder_or_cache, str) and (Path(encoder_or_cache) / CACHE_INFO).exists()):
        folder = Path(encoder_or_cache)
        fingerprint = None
    else:
        fingerprint = getattr(encoder_or_cache, "fingerprint", encoder_or_cache)
        if not isinstance(fingerprint, str):
            raise ValueError("pass the encoder fingerprint (str), an Encoder or a cache folder; got "
                             f"{type(encoder_or_cache).__name__}")
        folder = cache_path(root, fingerprint)
    info_path = folder / CACHE_INFO
    if not info_path.exists():
        have = sorted(p.name for p in (root / "latents").glob("*") if (p / CACHE_INFO).exists())
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


def read_tokens(root: Path, encoder_or_cache, lengths: np.ndarray,
                ids: np.ndarray) -> tuple[np.ndarray, dict, Path]:
    """The cached tokens of episodes ``ids``, checked and concatenated along frames.

    Args:
        root: dataset directory.
        encoder_or_cache: encoder fingerprint (str), an Encoder, or a cache folder.
        lengths: (E,) steps of every episode of the dataset.
        ids: the episodes to read, in order.

    Returns:
        ``tokens`` (F, N, D) in the cache's dtype with F = ``sum(lengths[ids] + 1)``, ``cache.json``
        and the cache folder.

    Raises:
        DatasetError: no cache for this encoder (run ``wmpc encode``), incomplete, or a damaged or
            mismatched file.
    """
    folder, info = _open_cache(root, encoder_or_cache, len(lengths))
    N, D = int(info["num_tokens"]), int(info["dim"])
    tokens = np.empty((int((lengths[ids] + 1).sum()), N, D), np.dtype(info["dtype"]))  # (F, N, D)
    start = 0
    for e in ids:
        path = folder / EPISODE_FILE.format(int(e))
        _check_cache_episode(path, info["fingerprint"], int(lengths[e]), root)
        tok = read_h5(path, ("tokens",), _redo_encode(root))["tokens"]
        if tok.shape[1:] != (N, D):
            raise DatasetError(f"{path} has tokens {tok.shape}, cache.json says N={N} D={D}; "
                               f"delete it and {_redo_encode(root)}")
        tokens[start:start + len(tok)] = tok
        start += int(lengths[e]) + 1
    return tokens, info, folder
