"""The goal's proprio read from the goal image: a small CNN trained on a dataset's (pixels, proprio) pairs.

DINO-WM's planning objective adds ``alpha x ||proprio_pred - proprio_goal||^2`` to the latent cost,
with the goal's proprio taken from the simulator. A user who has only a goal image has no such
number. :class:`ProprioEstimator` supplies it from the image: trained on the same goal-free
exploration data as the world model (every frame comes with the proprio the robot measured), it
maps an image to the proprio an observation of that state would carry. The controller calls it on
the goal image (``MPCController(..., proprio_estimator=est)``) when the objective weighs proprio
and no ``goal_proprio`` is passed, so the plan still comes from the goal image alone.

What one image cannot show is estimated as the data's typical value: velocities come out near the
dataset mean (about 0), which is what a goal at rest has. Angles that wrap (a joint that turns
freely, like reacher's shoulder, declared by the env's ``PROPRIO_PERIODS``) are learned as (cos, sin)
and returned wrapped to one period around 0, the range an env reports for its goal.

The net is the keypoint trunk of the trainable encoders (:class:`encoders._conv.ImageToTokens`,
spatial-softmax keypoints: positions in the image are what proprio measures) and a two-layer head.

Files: :func:`train_proprio_estimator` writes ``estimator.safetensors`` (weights and a JSON header,
atomically) and ``estimator.json`` (validation error per proprio value against predicting the
training mean); :meth:`ProprioEstimator.load` reads the weights back with a clear error for a
missing, damaged or foreign file.
"""
from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from encoders._conv import ImageToTokens
from encoders.base import to_float_images
from mpc._io import load_module, save_module, write_json

__all__ = ["ProprioEstimator", "train_proprio_estimator", "ESTIMATOR_FILE", "wrapped_error"]

log = logging.getLogger(__name__)

ESTIMATOR_FILE = "estimator.safetensors"
META_KEY = "wmpc_proprio_estimator"  # safetensors metadata key of the JSON header
FORMAT = 1


def _periods(periods, proprio_dim: int) -> list[float | None]:
    """``periods`` as a list of P entries (None: not periodic).

    Raises:
        ValueError: wrong length, or a period that is not a positive number.
    """
    if periods is None:
        return [None] * proprio_dim
    out = [None if p is None else float(p) for p in periods]
    if len(out) != proprio_dim or any(p is not None and not (p > 0 and math.isfinite(p)) for p in out):
        raise ValueError(f"periods must list {proprio_dim} entries, each None or a positive period; got {periods!r}")
    return out


def wrapped_error(pred: np.ndarray, true: np.ndarray, periods: list[float | None]) -> np.ndarray:
    """``|pred - true|`` per value, taken around the circle for periodic values: ``(..., P)``."""
    err = np.abs(np.asarray(pred, np.float64) - np.asarray(true, np.float64))
    for j, p in enumerate(periods):
        if p is not None:
            err[..., j] = np.abs((err[..., j] + p / 2) % p - p / 2)
    return err


class ProprioEstimator(nn.Module):
    """Image -> proprio. ``forward(images)`` takes what encoders take (uint8 ``(B, H, W, 3)`` or
    float ``(B, 3, H, W)`` in [0, 1]) and returns float32 ``(B, P)`` in the env's units.

    Args:
        image_size: the square frame size it was trained on (other sizes are an error).
        proprio_dim: P.
        mean, std: per-value normalisation of the non-periodic targets (the dataset's statistics).
        periods: per value, None or the period of a value that wraps (e.g. ``2 pi`` for a free joint).
        width, num_keypoints, hidden: trunk width, spatial-softmax keypoints, head width.
    """

    def __init__(self, image_size: int, proprio_dim: int, mean=None, std=None, periods=None, width: int = 32,
                 num_keypoints: int = 32, hidden: int = 256):
        super().__init__()
        self.image_size, self.proprio_dim = int(image_size), int(proprio_dim)
        if self.proprio_dim < 1:
            raise ValueError(f"proprio_dim must be >= 1, got {proprio_dim}")
        self.periods = _periods(periods, self.proprio_dim)
        self.arch = {"width": int(width), "num_keypoints": int(num_keypoints), "hidden": int(hidden)}
        self.trunk = ImageToTokens(self.image_size, "keypoints", int(hidden), width=int(width),
                                   num_keypoints=int(num_keypoints))
        outputs = sum(2 if p is not None else 1 for p in self.periods)
        self.head = nn.Sequential(nn.SiLU(), nn.Linear(int(hidden), int(hidden)), nn.SiLU(),
                                  nn.Linear(int(hidden), outputs))
        mean = torch.zeros(self.proprio_dim) if mean is None else torch.as_tensor(mean, dtype=torch.float32)
        std = torch.ones(self.proprio_dim) if std is None else torch.as_tensor(std, dtype=torch.float32)
        self.register_buffer("mean", mean.reshape(self.proprio_dim).clone())
        self.register_buffer("std", std.reshape(self.proprio_dim).clamp_min(1e-6).clone())

    # --- the map ------------------------------------------------------------------------------
    def _images(self, images) -> torch.Tensor:
        x = to_float_images(images, device=self.mean.device)
        if x.shape[-2:] != (self.image_size, self.image_size):
            raise ValueError(f"this proprio estimator takes {self.image_size}x{self.image_size} images (the size "
                             f"of the data it was trained on), got {x.shape[-2]}x{x.shape[-1]}")
        return x

    def _raw(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(x).squeeze(1))  # (B, outputs)

    def forward(self, images) -> torch.Tensor:
        out, values, i = self._raw(self._images(images)), [], 0
        for j, p in enumerate(self.periods):
            if p is None:
                values.append(out[:, i] * self.std[j] + self.mean[j])
                i += 1
            else:  # the angle of (cos, sin), mapped to [-p/2, p/2)
                values.append(torch.atan2(out[:, i + 1], out[:, i]) * (p / (2 * math.pi)))
                i += 2
        return torch.stack(values, dim=-1)

    def align(self, proprio: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
        """``proprio (..., P)`` with each periodic value moved by whole periods to within half a period of
        ``goal`` (broadcastable to it): a difference to the goal is then the shorter way round (an arm a
        full turn past its goal angle is at its goal). Other values are returned as they are."""
        out = proprio.clone()
        for j, p in enumerate(self.periods):
            if p is not None:
                out[..., j] = proprio[..., j] - p * torch.round((proprio[..., j] - goal[..., j]) / p)
        return out

    def loss(self, images, proprio: torch.Tensor) -> torch.Tensor:
        """Mean squared error in normalised units: each non-periodic value standardised, each periodic
        one as the point ``(cos, sin)`` on the unit circle."""
        out = self._raw(self._images(images))
        targets = []
        for j, p in enumerate(self.periods):
            if p is None:
                targets.append(((proprio[:, j] - self.mean[j]) / self.std[j])[:, None])
            else:
                ang = proprio[:, j] * (2 * math.pi / p)
                targets.append(torch.stack([ang.cos(), ang.sin()], dim=-1))
        return ((out - torch.cat(targets, dim=-1)) ** 2).mean()

    # --- files --------------------------------------------------------------------------------
    def header(self) -> dict:
        return {"format": FORMAT, "image_size": self.image_size, "proprio_dim": self.proprio_dim,
                "periods": self.periods, **self.arch}

    def save(self, path: str | os.PathLike, **extra) -> Path:
        """Weights and header (plus ``extra`` JSON-able fields) to one safetensors file, atomically."""
        return save_module(path, self, META_KEY, {**self.header(), **extra})

    @classmethod
    def load(cls, path: str | os.PathLike, device=None) -> "ProprioEstimator":
        """Read a file written by :meth:`save` (or :func:`train_proprio_estimator`).

        Raises:
            FileNotFoundError: no file at ``path`` (train one with ``train_proprio_estimator``).
            ValueError: not a readable safetensors file, no proprio-estimator header, or weights that
                do not fit the header.
        """
        est, head = load_module(path, META_KEY, FORMAT, "proprio estimator",
                                "train one with mpc.proprio_estimator.train_proprio_estimator(<dataset>, <folder>)",
                                lambda h: cls(h["image_size"], h["proprio_dim"], periods=h["periods"], width=h["width"],
                                              num_keypoints=h["num_keypoints"], hidden=h["hidden"]))
        est.info = head
        return est.eval().to(device or "cpu")


def _read(data: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """Frames ``(F, H, W, 3)`` uint8, proprio ``(F, P)``, episode of each frame ``(F,)``, dataset.json."""
    from mpc.data import load_dataset

    ds = load_dataset(data)
    pix, prop, ep = [], [], []
    for i in range(len(ds)):
        d = ds.read(i, ("pixels", "proprio"))
        pix.append(d["pixels"])
        prop.append(d["proprio"])
        ep.append(np.full(len(d["pixels"]), i))
    return np.concatenate(pix), np.concatenate(prop).astype(np.float32), np.concatenate(ep), ds.meta


def _env_periods(meta: dict, proprio_dim: int):
    """The ``PROPRIO_PERIODS`` the dataset's env declares (None when it declares none)."""
    import envs

    try:
        return envs.proprio_periods(str(meta.get("env", "")), proprio_dim)
    except ValueError:  # an env this wmpc cannot resolve: nothing declared
        return None


def train_proprio_estimator(data: str | os.PathLike, out: str | os.PathLike, steps: int = 3000,
                            batch_size: int = 64, lr: float = 2e-3, seed: int = 0, periods="auto",
                            val_fraction: float = 0.1, device=None, progress: bool = True,
                            **arch) -> ProprioEstimator:
    """Fit a :class:`ProprioEstimator` to every (frame, proprio) pair of a dataset.

    Episodes are split into training and validation ones (``val_fraction``); ``out/estimator.json``
    records the mean absolute error per proprio value on the validation frames (around the circle
    for periodic values) next to that of always predicting the training mean (the trivial baseline).

    Args:
        data: a dataset folder written by ``wmpc collect``.
        out: output folder (``estimator.safetensors``, ``estimator.json``).
        periods: ``"auto"`` (the env's ``PROPRIO_PERIODS``), None (nothing wraps) or a list per value.
        **arch: ``width``, ``num_keypoints``, ``hidden`` of the net.

    Raises:
        mpc.data.DatasetError: not a dataset, or a damaged one.
        ValueError: a dataset without proprio, or bad ``periods``.
    """
    from tqdm import tqdm

    from mpc._config import resolve_device
    from mpc.data.windows import split_episodes

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    pixels, proprio, episode, meta = _read(Path(data))
    P = proprio.shape[1]
    if P == 0:
        raise ValueError(f"{data} records no proprio (P = 0): there is nothing to estimate")
    periods = _periods(_env_periods(meta, P) if periods == "auto" else periods, P)
    train_ep, val_ep = split_episodes(int(episode.max()) + 1, val_fraction, seed)
    tr, va = np.flatnonzero(np.isin(episode, train_ep)), np.flatnonzero(np.isin(episode, val_ep))
    dev = torch.device(resolve_device(device))
    torch.manual_seed(seed)
    est = ProprioEstimator(pixels.shape[1], P, proprio[tr].mean(0), proprio[tr].std(0), periods, **arch).to(dev)
    opt = torch.optim.AdamW(est.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=int(steps), pct_start=0.05)
    rng = np.random.default_rng([seed, 7])
    t0, losses = time.perf_counter(), []
    est.train()
    for _ in tqdm(range(int(steps)), desc="proprio estimator", disable=not progress):
        idx = np.sort(rng.choice(tr, size=min(batch_size, len(tr)), replace=False))
        loss = est.loss(torch.from_numpy(pixels[idx]).to(dev), torch.from_numpy(proprio[idx]).to(dev))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
    est.eval()
    metrics = {"steps": int(steps), "seconds": time.perf_counter() - t0, "final_loss": float(np.mean(losses[-50:])),
               "train_frames": int(len(tr)), "val_frames": int(len(va)), "periods": periods}
    if len(va):
        with torch.no_grad():
            pred = torch.cat([est(torch.from_numpy(pixels[va[i:i + 256]]).to(dev)).cpu()
                              for i in range(0, len(va), 256)]).numpy()
        baseline = np.broadcast_to(_typical(proprio[tr], periods), proprio[va].shape)
        metrics.update(val_mae=wrapped_error(pred, proprio[va], periods).mean(0).tolist(),
                       val_mae_baseline=wrapped_error(baseline, proprio[va], periods).mean(0).tolist())
    est.save(out / ESTIMATOR_FILE, dataset=str(data), env=str(meta.get("env", "")))
    write_json(out / "estimator.json", metrics)
    log.info("trained the proprio estimator in %.1fs: validation MAE %s (mean predictor %s)", metrics["seconds"],
             np.round(metrics.get("val_mae", []), 4).tolist(), np.round(metrics.get("val_mae_baseline", []), 4).tolist())
    return est.cpu()


def _typical(proprio: np.ndarray, periods: list[float | None]) -> np.ndarray:
    """The trivial prediction: the mean per value (the circular mean for periodic ones): ``(P,)``."""
    out = proprio.mean(0).astype(np.float64)
    for j, p in enumerate(periods):
        if p is not None:
            ang = proprio[:, j] * (2 * np.pi / p)
            out[j] = np.arctan2(np.sin(ang).mean(), np.cos(ang).mean()) * p / (2 * np.pi)
    return out
