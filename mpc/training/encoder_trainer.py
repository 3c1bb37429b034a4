"""Encoder training: fit a trainable encoder (``vae``, ``diffusion``, ``jepa``, ``transporter``) on a dataset's frames.

All frames of the dataset are read into memory once (64 px frames are small). ``vae`` and
``diffusion`` train on single frames; ``jepa`` trains on transitions (frame t, action, frame t+k);
``transporter`` on pairs of frames of one episode.
The output folder receives ``encoder.safetensors`` (written atomically every ``save_every`` steps
and at the end; load it with ``make_encoder(name, checkpoint=...)``), ``train_log.json`` (loss
history), ``loss.png`` and, for backends with a decoder, ``samples.png`` (the preview grid; top
row: frames; bottom row: reconstructions or samples). A run killed midway is run again with the same
command: it starts over from step 0 and clears the temporary files the killed one left.

:func:`train_encoder` trains any backend; :func:`train_jepa` is what ``wmpc train`` calls when
``encoder=jepa`` has no checkpoint yet.
"""
from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from mpc._config import resolve_device
from mpc._io import atomic_write, folder_lock, remove_temp_files, write_json
from mpc.training.run_log import plot_loss_curve
from mpc.training.schedule import warmup_cosine_to_tenth

__all__ = ["load_frames", "load_episode_frames", "episode_pairs", "load_transitions", "load_state_targets", "train_encoder", "train_jepa", "CHECKPOINT_NAME",
           "TRAINABLE"]

log = logging.getLogger(__name__)

CHECKPOINT_NAME = "encoder.safetensors"
TRAINABLE = ("vae", "diffusion", "jepa", "transporter")


# --- data ------------------------------------------------------------------------------------------
def load_frames(data: str | os.PathLike) -> np.ndarray:
    """Every frame of every episode of a dataset: uint8 ``(F, H, W, 3)``.

    Raises:
        mpc.data.DatasetError: not a dataset, incomplete or damaged (the message says how to fix it).
    """
    return load_episode_frames(data)[0]


def load_episode_frames(data: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Every frame of a dataset and where each episode starts: ``(pixels (F, H, W, 3) uint8, starts (E + 1,))``.

    Episode ``i``'s frames are ``pixels[starts[i]:starts[i + 1]]``.
    """
    from mpc.data import load_dataset

    ds = load_dataset(data)
    pixels = [ds.read(i, ("pixels",))["pixels"] for i in range(len(ds))]
    return np.concatenate(pixels), np.cumsum([0] + [len(p) for p in pixels])


def episode_pairs(starts: np.ndarray, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``n`` pairs of frames of one episode, any two times (episodes drawn by frame count): flat indices.
    :func:`mpc.temporal_distance.frame_pairs` over every episode, without the gaps."""
    from mpc.temporal_distance import frame_pairs

    frames = np.diff(starts)
    a, b, _ = frame_pairs(starts[:-1], frames - 1, np.arange(len(frames)), n, rng)
    return a, b


def load_transitions(data: str | os.PathLike, frameskip: int = 1
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Frames and (t, t+k) transitions of a dataset, k = ``frameskip``.

    The transitions are the two-frame windows of :class:`mpc.data.WindowDataset` (``num_hist =
    num_pred = 1``, every episode), in its order.

    Returns:
        ``(pixels (F, H, W, 3) uint8, first (M,) int, second (M,) int, actions (M, k*A) float32)``:
        transition m goes from frame ``pixels[first[m]]`` to ``pixels[second[m]]`` under the k env
        actions between them, concatenated and normalised with the dataset's ``stats.json``.

    Raises:
        ValueError: no episode has more than ``frameskip`` steps.
    """
    from mpc.data import WindowDataset, load_dataset

    k = int(frameskip)
    if k < 1:
        raise ValueError(f"frameskip must be >= 1, got {frameskip}")
    windows = WindowDataset(data, num_hist=1, num_pred=1, frameskip=k, split="all", source="pixels")
    index = np.array([windows.window_index(j) for j in range(len(windows))], np.int64)  # (M, 2): episode, start
    ds = load_dataset(data)
    # window starts of each episode (windows come sorted by episode)
    starts = np.split(index[:, 1], np.searchsorted(index[:, 0], np.arange(1, len(ds))))
    mean = np.asarray(ds.stats["action_mean"], np.float32)
    std = np.maximum(np.asarray(ds.stats["action_std"], np.float32), 1e-6)
    pixels, first, acts, offset = [], [], [], 0
    for i in range(len(ds)):
        ep = ds.read(i, ("pixels", "actions"))
        a = (ep["actions"] - mean) / std  # (T, A)
        steps = starts[i][:, None] + np.arange(k)  # (M_i, k) env steps of each transition
        pixels.append(ep["pixels"])
        first.append(offset + starts[i])
        acts.append(a[steps].reshape(len(steps), k * a.shape[1]))  # (M_i, k*A)
        offset += len(ep["pixels"])
    first_idx = np.concatenate(first)
    return np.concatenate(pixels), first_idx, first_idx + k, np.concatenate(acts).astype(np.float32)


def load_state_targets(data: str | os.PathLike, entries=None) -> np.ndarray:
    """The state-supervision targets of every frame of a dataset, in :func:`load_frames`' order.

    Each episode's recorded ``states`` (only the indices ``entries`` when given, in that order), with
    the angle of an :data:`mpc.data.format.OBJECT_POSE` object replaced by its cos and sin (so the
    target does not jump at the wrap), then standardised per entry over the whole dataset (a constant
    entry stays 0).

    Returns:
        float32 ``(F, K)``.

    Raises:
        mpc.data.DatasetError: unreadable dataset, or one whose episodes record no ``states`` (collect
            it again with a current ``wmpc collect``; state supervision needs them).
        ValueError: ``entries`` not a list of distinct indices of the recorded state.
    """
    from encoders.jepa import check_state_entries
    from mpc.data import DatasetError, load_dataset
    from mpc.data.format import OBJECT_POSE

    ds = load_dataset(data)
    try:
        states = np.concatenate([ds.read(i, ("states",))["states"] for i in range(len(ds))]).astype(np.float64)
    except KeyError as e:
        raise DatasetError(f"{data} records no states; state supervision (state_weight > 0) needs the "
                           "simulator states recorded with each frame: collect the data again with "
                           "`wmpc collect`") from e
    pose = OBJECT_POSE.get(ds.meta.get("env"))
    angle_at = None if pose is None else pose[2]
    entries = check_state_entries(entries)
    if entries is not None:
        if max(entries) >= states.shape[1]:
            raise ValueError(f"state_entries {entries} name entries past the {states.shape[1]} of {data}'s recorded "
                             f"states (indices 0..{states.shape[1] - 1})")
        states = states[:, entries]
        angle_at = entries.index(angle_at) if angle_at in entries else None
    if angle_at is not None:
        angle = states[:, angle_at]
        states = np.concatenate([np.delete(states, angle_at, axis=1), np.cos(angle)[:, None],
                                 np.sin(angle)[:, None]], axis=1)
    std = states.std(0)
    return ((states - states.mean(0)) / np.where(std > 1e-8, std, 1.0)).astype(np.float32)


# --- preview grid ----------------------------------------------------------------------------------
def _save_png(path: Path, image: np.ndarray) -> None:
    import imageio.v3 as iio

    atomic_write(path, lambda tmp: iio.imwrite(tmp, image))


def _pick_preview(pixels: np.ndarray, n: int = 8) -> np.ndarray:
    """``n`` evenly spaced frames of ``pixels`` for the preview grid."""
    idx = np.linspace(0, len(pixels) - 1, min(n, len(pixels))).round().astype(int)
    return pixels[idx]


def _sample_grid(enc, frames: np.ndarray, seed: int) -> np.ndarray | None:
    """Top row: ``frames``; bottom row: their reconstructions/samples. uint8 ``(2S, n*S, 3)``."""
    if not hasattr(enc, "decode"):
        return None
    was_trainable = enc.trainable
    enc.freeze()
    x = enc.from_normalized(enc.preprocess(frames))  # (n, 3, S, S) resized originals
    z = enc.encode(frames)
    if enc.backend == "diffusion":
        rec = enc.decode(z, steps=8, generator=torch.Generator().manual_seed(seed))
    else:
        rec = enc.decode(z)
    if was_trainable:
        enc.unfreeze()
    rows = [torch.cat(list(t.cpu()), dim=2) for t in (x, rec)]  # each (3, S, n*S)
    return (torch.cat(rows, dim=1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


# --- the loop ----------------------------------------------------------------------------------------
def _set_token_stats(enc, batch_fn: Callable[[np.random.Generator], tuple], seed: int, batches: int = 16) -> None:
    """Standardise the encoder's tokens with ``batches`` training batches (first item: frames)."""
    rng = np.random.default_rng(seed + 1)
    with torch.no_grad():
        z = torch.cat([enc.forward_tokens(batch_fn(rng)[0]) for _ in range(batches)])  # (M, N, D)
    enc.set_token_stats(z)


def _fit(enc, batch_fn: Callable[[np.random.Generator], tuple], out: Path, steps: int, lr: float,
         save_every: int, seed: int, progress: bool, preview: np.ndarray | None, info: dict) -> Path:
    """Optimise ``enc.training_loss(*batch_fn(rng))`` for ``steps`` steps; write checkpoints and logs.

    Holds ``out``'s lock and first clears what an interrupted run left there: a run killed midway
    starts again from step 0 (its last checkpoint stays readable until the new one replaces it).
    """
    if int(steps) < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    with folder_lock(out, "wmpc train-encoder"):
        remove_temp_files(out)
        return _optimise(enc, batch_fn, out, steps, lr, save_every, seed, progress, preview, info)


def _optimise(enc, batch_fn: Callable[[np.random.Generator], tuple], out: Path, steps: int, lr: float,
              save_every: int, seed: int, progress: bool, preview: np.ndarray | None, info: dict) -> Path:
    """The optimisation loop of :func:`_fit` (``out`` exists and is locked)."""
    from tqdm.auto import tqdm

    ckpt = out / CHECKPOINT_NAME
    rng = np.random.default_rng(seed)
    gen = torch.Generator(device=enc.device).manual_seed(seed)
    enc.unfreeze()
    opt = torch.optim.AdamW(enc.parameters(), lr=lr, weight_decay=1e-4)
    warmup = max(1, min(100, steps // 20))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: warmup_cosine_to_tenth(s, warmup, steps))
    losses, metrics_log = [], []
    t0 = time.perf_counter()
    bar = tqdm(range(1, steps + 1), desc=f"train-encoder {enc.backend}", disable=not progress, dynamic_ncols=True)

    def write_outputs(step: int) -> None:
        enc.save(ckpt)
        write_json(out / "train_log.json", {
            **info, "step": step, "seconds": round(time.perf_counter() - t0, 2),
            "fingerprint": enc.fingerprint, "loss": losses, "metrics": metrics_log}, indent=1)

    for step in bar:
        loss, metrics = enc.training_loss(*batch_fn(rng), generator=gen)
        if not math.isfinite(metrics["loss"]):
            raise FloatingPointError(f"training loss became {metrics['loss']} at step {step}; lower lr "
                                     f"(now {lr}) or check the data")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(enc.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(round(metrics["loss"], 6))
        if step % max(1, steps // 100) == 0 or step == steps:
            metrics_log.append({"step": step, **{k: round(v, 6) for k, v in metrics.items()}})
            bar.set_postfix({k: f"{v:.4g}" for k, v in metrics.items()})
        if step % save_every == 0 and step != steps:
            write_outputs(step)
    _set_token_stats(enc, batch_fn, seed)
    write_outputs(steps)
    plot_loss_curve(out / "loss.png", losses)
    if preview is not None:
        grid = _sample_grid(enc, preview, seed)
        if grid is not None:
            _save_png(out / "samples.png", grid)
    enc.freeze()
    log.info("trained %s for %d steps in %.1fs (final loss %.4g); checkpoint %s", enc.backend, steps,
             time.perf_counter() - t0, losses[-1], ckpt)
    return ckpt


# --- public entry points ------------------------------------------------------------------------------
def train_jepa(dataset_dir: str | os.PathLike, out: str | os.PathLike, steps: int = 2000, batch_size: int = 64,
               lr: float = 1e-3, encoder_options: dict | None = None, frameskip: int = 1, save_every: int = 500,
               seed: int = 0, device: str | None = None, progress: bool = True) -> Path:
    """Train a ``jepa`` encoder + latent predictor on a dataset's transitions.

    Args:
        dataset_dir: dataset written by ``wmpc collect``.
        out: output folder (created): ``encoder.safetensors``, ``train_log.json``, ``loss.png``.
        steps, batch_size, lr: optimisation (AdamW, warmup then cosine decay to lr/10).
        encoder_options: :class:`encoders.jepa.JEPAEncoder` options (``dim``, ``num_tokens``, ``reg``,
            ``reg_weight``, ...); ``action_dim`` is set from the data (frameskip * env action dim), and
            with ``state_weight > 0`` ``state_dim`` from its recorded states (``state_entries`` of
            them, :func:`load_state_targets`: privileged, the rows of such an encoder say so).
        frameskip: env steps between the two frames of a training transition.
        save_every: checkpoint period in steps (the last step always writes one).
        seed: seeds batch sampling and SIGReg directions (weight init: ``encoder_options["seed"]``).
        device: ``None``/"auto" (cuda if available), "cpu", "cuda", ...
        progress: show a tqdm bar.

    Returns:
        path of the checkpoint; load it with ``make_encoder("jepa", checkpoint=path)``.

    Raises:
        ValueError: ``encoder_options["action_dim"]`` contradicts the data, or bad sizes.
        mpc.data.DatasetError: unreadable dataset.
    """
    from encoders.jepa import JEPAEncoder

    pixels, first, second, actions = load_transitions(dataset_dir, frameskip)
    opts = dict(encoder_options or {})
    if opts.get("action_dim") not in (None, actions.shape[1]):
        raise ValueError(f"encoder_options action_dim={opts['action_dim']} but the data gives frameskip "
                         f"{frameskip} x env action dim = {actions.shape[1]}; drop action_dim")
    opts["action_dim"] = int(actions.shape[1])
    targets = None
    if float(opts.get("state_weight") or 0.0) > 0:
        targets = torch.from_numpy(load_state_targets(dataset_dir, opts.get("state_entries")))  # (F, K), frames in pixels' order
        if opts.get("state_dim") not in (None, 0, targets.shape[1]):
            raise ValueError(f"encoder_options state_dim={opts['state_dim']} but the data's state targets have "
                             f"{targets.shape[1]} entries; drop state_dim")
        opts["state_dim"] = int(targets.shape[1])
    else:
        opts["state_dim"] = 0  # no state supervision, no head (a state_dim alone would only ask for states)
    enc = JEPAEncoder(**opts).to(resolve_device(device))
    acts = torch.from_numpy(actions)

    def batch(rng):
        m = rng.integers(0, len(first), size=batch_size)
        out = (enc.preprocess(pixels[first[m]]), acts[m].to(enc.device), enc.preprocess(pixels[second[m]]))
        return out if targets is None else (*out, targets[first[m]].to(enc.device))

    info = {"encoder": "jepa", "data": str(dataset_dir), "steps": steps, "batch_size": batch_size, "lr": lr,
            "frameskip": frameskip, "seed": seed, "config": enc.config, "transitions": int(len(first))}
    return _fit(enc, batch, Path(out), steps, lr, save_every, seed, progress, None, info)


def train_encoder(encoder: str, data: str | os.PathLike, out: str | os.PathLike, steps: int = 2000,
                  batch_size: int = 64, lr: float = 1e-3, encoder_options: dict | None = None,
                  save_every: int = 500, seed: int = 0, device: str | None = None, progress: bool = True,
                  frameskip: int = 1) -> Path:
    """Train a ``vae``, ``diffusion``, ``jepa`` or ``transporter`` encoder on the frames of a dataset.

    Args:
        encoder: ``"vae"``, ``"diffusion"``, ``"jepa"`` (jepa goes to :func:`train_jepa`) or
            ``"transporter"`` (trains on pairs of frames of one episode).
        data: dataset directory written by ``wmpc collect``.
        out: output folder (created): ``encoder.safetensors``, ``train_log.json``, ``loss.png``,
            ``samples.png`` (vae, diffusion).
        steps, batch_size, lr: optimisation (AdamW, warmup then cosine decay to lr/10).
        encoder_options: constructor options of the backend (``image_size``, ``tokens``, ``dim``, ...).
        save_every: checkpoint period in steps (the last step always writes one).
        seed: seeds batch sampling and training noise (weight init: ``encoder_options["seed"]``).
        device: ``None``/"auto" (cuda if available), "cpu", "cuda", ...
        progress: show a tqdm bar.
        frameskip: jepa only, see :func:`train_jepa`.

    Returns:
        path of the checkpoint; load it with ``make_encoder(encoder, checkpoint=path)``.

    Raises:
        ValueError: an encoder that is not trainable, or bad options.
        mpc.data.DatasetError: unreadable dataset.
    """
    if encoder not in TRAINABLE:
        raise ValueError(f"train-encoder trains one of {TRAINABLE}, got {encoder!r}; frozen encoders "
                         "such as dinov2 need no training")
    if int(save_every) < 1:
        raise ValueError(f"save_every must be >= 1, got {save_every}")
    if encoder == "jepa":
        return train_jepa(data, out, steps=steps, batch_size=batch_size, lr=lr, encoder_options=encoder_options,
                          frameskip=frameskip, save_every=save_every, seed=seed, device=device, progress=progress)
    import encoders

    enc = encoders.make_encoder(encoder, weights="random", **dict(encoder_options or {}))
    enc = enc.to(resolve_device(device))
    if encoder == "transporter":  # pairs of frames of one episode (the masks cover what moved between them)
        pixels, starts = load_episode_frames(data)

        def batch(rng):
            src, tgt = episode_pairs(starts, batch_size, rng)
            return enc.preprocess(pixels[src]), enc.preprocess(pixels[tgt])
    else:
        pixels = load_frames(data)

        def batch(rng):
            return (enc.preprocess(pixels[rng.integers(0, len(pixels), size=batch_size)]),)

    info = {"encoder": encoder, "data": str(data), "steps": steps, "batch_size": batch_size, "lr": lr,
            "seed": seed, "config": enc.config, "frames": int(len(pixels))}
    return _fit(enc, batch, Path(out), steps, lr, save_every, seed, progress, _pick_preview(pixels), info)
