"""A learned temporal distance between latent frames: about how many steps lie between two states.

DINO-WM's planning cost is the latent MSE to the goal, a straight-line distance in the latent. In a
maze that is the wrong measure: a short plan that lowers it heads for the wall between the agent
and the goal and stays there. Progress along the way is the number of steps still to go, and
goal-free exploration data record it: frames ``i`` and ``j`` of one episode lie ``|i - j|`` steps
apart along that episode's path, and the shortest way between the two states is no longer.

:class:`TemporalDistance` maps a latent frame ``(N, D)`` to a point of ``R^k``, and the Euclidean
distance between two points estimates the steps between the frames. The Euclidean form is the one of
Park et al.'s Hilbert representations (HILP, 2024): the triangle inequality lets gaps recorded in
separate episodes compose into a route that no single episode took. HILP fits its distance by
temporal-difference learning; here the recorded gaps are regressed directly, with a low expectile
``tau``: a distance above the gap costs ``1 - tau``, one below it ``tau``, so the fit settles near the
short end of the gaps recorded between two places (a detour or a pause counts for less than a
direct path). The map reads the world model's own latent, so a distance is as cheap as a token MSE
and applies to predicted frames.

Planning with it: ``make_objective("last", distance=<file or TemporalDistance>)``
(:mod:`mpc.objectives`) costs a predicted frame by its squared estimated steps to the goal frame,
in place of the token MSE (``wmpc eval ... distance=<file>``; rows labelled ``temporal-distance``).
It is trained on the exploration data alone, with no goal, reward or state: plans still come from
the goal image alone.

Files: :func:`train_temporal_distance` writes ``distance.safetensors`` (weights and a JSON header
with the encoder fingerprint it reads, atomically) and ``distance.json`` (validation figures on
held-out episodes: rank correlation of distance and recorded gap, and the expectile loss against
the best constant); :meth:`TemporalDistance.load` reads it back with a clear error for a missing,
damaged or foreign file.
"""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from mpc._io import load_module, save_module, write_json

__all__ = ["TemporalDistance", "fit_temporal_distance", "train_temporal_distance", "expectile_loss", "DISTANCE_FILE", "frame_pairs"]

log = logging.getLogger(__name__)

DISTANCE_FILE = "distance.safetensors"
META_KEY = "wmpc_temporal_distance"  # safetensors metadata key of the JSON header
FORMAT = 1
MAX_FEATURES = 1024  # features entering the MLP: N tokens x per-token features, at most this many


def _token_features(num_tokens: int, token_dim: int) -> int:
    """Per-token features after the shared projection: the whole token while N x D is small, fewer
    for many patch tokens (196 DINOv2 patches of 384 -> 5 each) so the MLP's input stays ~1k wide."""
    return int(max(1, min(token_dim, MAX_FEATURES // max(1, num_tokens))))


class TemporalDistance(nn.Module):
    """Latent frames ``(..., N, D)`` -> points ``(..., dim)`` whose distances estimate steps apart.

    Args:
        num_tokens, token_dim: N and D of the latent it reads (the world model's).
        fingerprint: the encoder fingerprint of that latent (checked against a world model's).
        mean, std: ``(N, D)`` normalisation of the tokens (the training data's statistics).
        dim: k, the embedding size.
        hidden: the MLP's width.
        token_features: features per token after a projection shared by all tokens (default: see
            :data:`MAX_FEATURES`).
    """

    def __init__(self, num_tokens: int, token_dim: int, fingerprint: str = "", mean=None, std=None,
                 dim: int = 32, hidden: int = 256, token_features: int | None = None):
        super().__init__()
        self.num_tokens, self.token_dim, self.fingerprint = int(num_tokens), int(token_dim), str(fingerprint)
        if self.num_tokens < 1 or self.token_dim < 1 or int(dim) < 1 or int(hidden) < 1:
            raise ValueError(f"num_tokens, token_dim, dim and hidden must be >= 1, got {num_tokens}, {token_dim}, "
                             f"{dim}, {hidden}")
        tf = _token_features(self.num_tokens, self.token_dim) if token_features is None else int(token_features)
        self.arch = {"dim": int(dim), "hidden": int(hidden), "token_features": tf}
        self.proj = nn.Linear(self.token_dim, tf)
        self.net = nn.Sequential(nn.Linear(self.num_tokens * tf, int(hidden)), nn.GELU(),
                                 nn.Linear(int(hidden), int(hidden)), nn.GELU(), nn.Linear(int(hidden), int(dim)))
        shape = (self.num_tokens, self.token_dim)
        mean = torch.zeros(shape) if mean is None else torch.as_tensor(mean, dtype=torch.float32)
        std = torch.ones(shape) if std is None else torch.as_tensor(std, dtype=torch.float32)
        self.register_buffer("mean", mean.reshape(shape).clone())
        self.register_buffer("std", std.reshape(shape).clamp_min(1e-6).clone())

    def embed(self, z: torch.Tensor) -> torch.Tensor:
        """``z (..., N, D)`` -> ``(..., dim)`` in float32.

        Raises:
            ValueError: tokens of another shape than the latent it was trained on.
        """
        if z.ndim < 2 or tuple(z.shape[-2:]) != (self.num_tokens, self.token_dim):
            raise ValueError(f"this temporal distance reads latents of {self.num_tokens} x {self.token_dim} tokens, "
                             f"got shape {tuple(z.shape)}; train one on the world model's own latent")
        x = (z.to(self.mean.device, torch.float32) - self.mean) / self.std
        return self.net(self.proj(x).flatten(-2))

    def forward(self, z: torch.Tensor, z_goal: torch.Tensor) -> torch.Tensor:
        """Estimated steps between frames ``z (..., N, D)`` and ``z_goal`` (broadcastable): ``(...)``."""
        return (self.embed(z) - self.embed(z_goal)).norm(dim=-1)

    def check_latent(self, fingerprint: str | None, num_tokens: int, token_dim: int) -> None:
        """Raise a clear ValueError unless a world model's latent is the one this distance reads."""
        if (num_tokens, token_dim) != (self.num_tokens, self.token_dim) or (
                fingerprint and self.fingerprint and fingerprint != self.fingerprint):
            raise ValueError(f"this temporal distance was trained on the latent of encoder {self.fingerprint!r} "
                             f"({self.num_tokens} x {self.token_dim} tokens); the world model's is {fingerprint!r} "
                             f"({num_tokens} x {token_dim}); train one with `wmpc train-distance "
                             "checkpoint=<the world model> data=<its dataset>`")

    # --- files --------------------------------------------------------------------------------
    def header(self) -> dict:
        return {"format": FORMAT, "num_tokens": self.num_tokens, "token_dim": self.token_dim,
                "fingerprint": self.fingerprint, **self.arch}

    def save(self, path: str | os.PathLike, **extra) -> Path:
        """Weights and header (plus ``extra`` JSON-able fields) to one safetensors file, atomically."""
        return save_module(path, self, META_KEY, {**self.header(), **extra})

    @classmethod
    def load(cls, path: str | os.PathLike, device=None) -> "TemporalDistance":
        """Read a file written by :meth:`save` (or :func:`train_temporal_distance`).

        Raises:
            FileNotFoundError: no file at ``path`` (train one with ``wmpc train-distance``).
            ValueError: not a readable safetensors file, no temporal-distance header, or weights
                that do not fit the header.
        """
        net, head = load_module(path, META_KEY, FORMAT, "temporal distance",
                                "train one with `wmpc train-distance checkpoint=<world model> data=<its dataset> "
                                "out=<folder>`",
                                lambda h: cls(h["num_tokens"], h["token_dim"], h.get("fingerprint", ""), dim=h["dim"],
                                              hidden=h["hidden"], token_features=h["token_features"]))
        net.info = head
        return net.eval().requires_grad_(False).to(device or "cpu")


def expectile_loss(pred: torch.Tensor, target: torch.Tensor, tau: float) -> torch.Tensor:
    """Mean of ``|tau - 1(target < pred)| * (target - pred)^2``: a low ``tau`` fits the short end."""
    r = target - pred
    return (torch.where(r > 0, tau, 1.0 - tau) * r ** 2).mean()


def _fingerprint_of(encoder) -> str:
    """The latent's encoder fingerprint from a string, an encoder or a world model."""
    if isinstance(encoder, str):
        return encoder
    for attr in ("encoder_fingerprint", "fingerprint"):
        fp = getattr(encoder, attr, None)
        if isinstance(fp, str) and fp:
            return fp
    raise ValueError("encoder must be an encoder fingerprint, an encoder or a world model with one; got "
                     f"{type(encoder).__name__}")


def frame_pairs(offsets: np.ndarray, lengths: np.ndarray, eps: np.ndarray, n: int, rng: np.random.Generator):
    """``n`` random frame pairs of the same episode (episodes drawn by frame count): flat indices
    ``a, b`` into the concatenated frames and their gap in steps. ``offsets``: each episode's first
    frame; ``lengths``: its steps (frames - 1); ``eps``: the episodes to draw from."""
    w = (lengths[eps] + 1).astype(np.float64)
    e = eps[rng.choice(len(eps), size=n, p=w / w.sum())]
    i = rng.integers(0, lengths[e] + 1)
    j = rng.integers(0, lengths[e] + 1)
    return offsets[e] + i, offsets[e] + j, np.abs(i - j).astype(np.float32)


def fit_temporal_distance(tokens, lengths, train_episodes, val_episodes=(), fingerprint: str = "",
                          steps: int = 3000, batch_size: int = 512, lr: float = 1e-3, tau: float = 0.1,
                          seed: int = 0, device=None, progress: bool = True, **arch) -> tuple[TemporalDistance, dict]:
    """Fit a :class:`TemporalDistance` to frame pairs of episodes laid end to end.

    Args:
        tokens: ``(F, N, D)`` frames of all episodes, episode ``e`` holding ``lengths[e] + 1`` of them.
        lengths: ``(E,)`` steps per episode.
        train_episodes, val_episodes: episode indices to fit on, and to report figures on.
        fingerprint: the encoder fingerprint of the latent (stored with the weights).
        tau: the expectile (0 < tau < 1; low: the short end of the recorded gaps).
        **arch: ``dim``, ``hidden``, ``token_features`` of the net.

    Returns:
        the net (CPU, eval mode) and its figures: training time and loss, and on validation pairs the
        Spearman rank correlation of distance and recorded gap and the expectile loss next to the best
        constant's.

    Raises:
        ValueError: bad tau or steps, frames that do not add up to the lengths, no training episode.
    """
    from tqdm import tqdm

    from mpc._config import resolve_device

    if not 0.0 < float(tau) < 1.0:
        raise ValueError(f"tau must lie in (0, 1), got {tau!r}")
    if int(steps) < 1:
        raise ValueError(f"steps must be >= 1, got {steps!r}")
    lengths = np.asarray(lengths, np.int64)
    train_ep, val_ep = np.asarray(train_episodes, np.int64), np.asarray(val_episodes, np.int64)
    if len(train_ep) == 0:
        raise ValueError("fit_temporal_distance needs at least one training episode")
    if len(tokens) != int((lengths + 1).sum()) or np.ndim(tokens) != 3:
        raise ValueError(f"tokens must be (F, N, D) with F = sum(lengths + 1) = {int((lengths + 1).sum())}, "
                         f"got shape {tuple(np.shape(tokens))}")
    offsets = np.concatenate([[0], np.cumsum(lengths + 1)[:-1]])
    dev = torch.device(resolve_device(device))
    z = torch.as_tensor(np.asarray(tokens, np.float32)).to(dev)  # (F, N, D)
    tr_frames = torch.from_numpy(np.concatenate([np.arange(offsets[e], offsets[e] + lengths[e] + 1)
                                                 for e in train_ep])).to(dev)
    torch.manual_seed(seed)
    net = TemporalDistance(z.shape[1], z.shape[2], fingerprint, z[tr_frames].mean(0), z[tr_frames].std(0),
                           **arch).to(dev)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=int(steps), pct_start=0.05)
    rng = np.random.default_rng([seed, 11])
    t0, losses = time.perf_counter(), []
    net.train()
    for _ in tqdm(range(int(steps)), desc="temporal distance", disable=not progress):
        a, b, gap = frame_pairs(offsets, lengths, train_ep, int(batch_size), rng)
        pred = net(z[torch.from_numpy(a).to(dev)], z[torch.from_numpy(b).to(dev)])
        loss = expectile_loss(pred, torch.from_numpy(gap).to(dev), float(tau))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
    net.eval().requires_grad_(False)
    metrics = {"steps": int(steps), "tau": float(tau), "seconds": time.perf_counter() - t0,
               "final_loss": float(np.mean(losses[-50:])), "train_episodes": int(len(train_ep)),
               "val_episodes": int(len(val_ep))}
    if len(val_ep):
        metrics.update(_validate(net, z, offsets, lengths, train_ep, val_ep, float(tau), seed))
    return net.cpu(), metrics


def train_temporal_distance(data: str | os.PathLike, encoder, out: str | os.PathLike, steps: int = 3000,
                            batch_size: int = 512, lr: float = 1e-3, tau: float = 0.1, seed: int = 0,
                            val_fraction: float = 0.1, device=None, progress: bool = True,
                            **arch) -> TemporalDistance:
    """Fit a :class:`TemporalDistance` (:func:`fit_temporal_distance`) to a dataset's latent cache and
    write ``out/distance.safetensors`` and ``out/distance.json`` (its figures; validation on the
    held-out ``val_fraction`` of the episodes).

    Args:
        data: a dataset folder written by ``wmpc collect``, encoded by the world model's encoder
            (``wmpc encode``, or the cache ``wmpc train`` fills).
        encoder: the latent to read: an encoder fingerprint, an encoder or a world model.
        out: output folder.
        steps, batch_size, lr, tau, seed, device, progress, **arch: see :func:`fit_temporal_distance`.

    Raises:
        mpc.data.DatasetError: not a dataset, a damaged one, or no latent cache of that encoder.
        ValueError: bad tau or steps, or a dataset of fewer than 2 episodes.
    """
    from mpc.data import load_dataset
    from mpc.data.latents import read_tokens
    from mpc.data.windows import split_episodes

    fingerprint = _fingerprint_of(encoder)
    ds = load_dataset(data)
    lengths = np.asarray(ds.lengths, np.int64)
    if len(lengths) < 2:
        raise ValueError(f"{data} holds {len(lengths)} episode(s); a temporal distance needs at least 2 "
                         "(training and validation episodes)")
    tokens, _, _ = read_tokens(Path(data), fingerprint, lengths, np.arange(len(lengths)))
    train_ep, val_ep = split_episodes(len(lengths), val_fraction, seed)
    net, metrics = fit_temporal_distance(tokens, lengths, train_ep, val_ep, fingerprint, steps=steps,
                                         batch_size=batch_size, lr=lr, tau=tau, seed=seed, device=device,
                                         progress=progress, **arch)
    net.save(Path(out) / DISTANCE_FILE, dataset=str(data), env=str(ds.meta.get("env", "")), tau=float(tau))
    write_json(Path(out) / "distance.json", metrics)
    log.info("trained the temporal distance in %.1fs: validation rank correlation %.3f, expectile loss %.3f "
             "(best constant %.3f)", metrics["seconds"], metrics.get("val_spearman", float("nan")),
             metrics.get("val_loss", float("nan")), metrics.get("val_loss_constant", float("nan")))
    return net


def _validate(net, z, offsets, lengths, train_ep, val_ep, tau: float, seed: int, n: int = 20000) -> dict:
    """Validation figures on ``n`` pairs of held-out episodes (see :func:`train_temporal_distance`)."""
    rng = np.random.default_rng([seed, 12])
    _, _, gap_tr = frame_pairs(offsets, lengths, train_ep, n, rng)
    a, b, gap = frame_pairs(offsets, lengths, val_ep, n, rng)
    with torch.no_grad():
        pred = torch.cat([net(z[torch.from_numpy(a[s:s + 4096]).to(z.device)],
                              z[torch.from_numpy(b[s:s + 4096]).to(z.device)]).cpu()
                          for s in range(0, n, 4096)])
    g = torch.from_numpy(gap)
    const = _expectile(gap_tr, tau)  # the best constant, fit on training pairs
    from scipy.stats import spearmanr

    rho = float(spearmanr(pred.numpy(), gap).statistic)
    return {"val_spearman": rho, "val_loss": float(expectile_loss(pred, g, tau)),
            "val_loss_constant": float(expectile_loss(torch.full_like(g, const), g, tau)),
            "val_pairs": int(n), "constant": float(const)}


def _expectile(x: np.ndarray, tau: float, iters: int = 100) -> float:
    """The ``tau``-expectile of ``x`` (the constant that minimises the expectile loss)."""
    m = float(np.mean(x))
    for _ in range(iters):  # fixed point of the weighted mean
        w = np.where(x > m, tau, 1.0 - tau)
        m = float((w * x).sum() / w.sum())
    return m
