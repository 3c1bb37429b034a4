"""How well latent distance follows true distance: the suite's probe of an encoder.

:func:`latent_probe` renders resting states along straight lines through an env's arena, encodes
them and pairs each state's true distance to a goal on the line with its latent distance;
:func:`monotonicity` scores the pairs (Spearman rank correlation and the rising fraction).
"""
from __future__ import annotations

import numpy as np

__all__ = ["latent_probe", "monotonicity", "binned_means"]


def _state_at(unwrapped, pos: np.ndarray) -> np.ndarray:
    """A resting state with the agent at ``pos``: the env's ``state_at`` when it has one, else a
    zero state whose first two entries are the position (pointmass: x, y, vx, vy; wall: x, y)."""
    fn = getattr(unwrapped, "state_at", None)
    if fn is not None:
        return np.asarray(fn(pos), np.float64)
    s = np.zeros_like(unwrapped.get_state())
    s[:2] = pos
    return s


def binned_means(true: np.ndarray, latent: np.ndarray, bins: int) -> tuple[list[float], list[float]]:
    """Mean true and mean latent distance per equal-width bin of true distance (empty bins left out).

    Args:
        true, latent: ``(M,)`` paired distances.
        bins: number of bins between the smallest and the largest true distance.

    Returns:
        ``(centres, means)``, one entry per non-empty bin, in order of true distance.
    """
    true, latent = np.asarray(true, float), np.asarray(latent, float)
    edges = np.linspace(true.min(), true.max(), bins + 1)
    which = np.clip(np.digitize(true, edges[1:-1]), 0, bins - 1)
    kept = [b for b in range(bins) if np.any(which == b)]
    return [true[which == b].mean() for b in kept], [latent[which == b].mean() for b in kept]


def monotonicity(true: np.ndarray, latent: np.ndarray, bins: int = 10) -> dict:
    """How well latent distance follows true distance.

    Args:
        true, latent: ``(M,)`` paired distances.
        bins: equal-width bins of true distance for the rising fraction.

    Returns:
        ``{"spearman": rank correlation, "rising_fraction": share of consecutive bins whose mean
        latent distance is larger than the previous bin's}``.
    """
    from scipy.stats import spearmanr

    true, latent = np.asarray(true, float), np.asarray(latent, float)
    rho = float(spearmanr(true, latent).statistic) if np.ptp(latent) > 0 else 0.0
    _, means = binned_means(true, latent, bins)
    rising = float(np.mean(np.diff(means) > 0)) if len(means) > 1 else 0.0
    return {"spearman": rho if np.isfinite(rho) else 0.0, "rising_fraction": rising}


def latent_probe(env_name: str, env_options: dict, encoder, lines: list, points: int = 25) -> dict:
    """Latent distance to the goal against true distance along straight lines through the arena.

    For each line (two end positions), ``points`` resting states are rendered along it
    (``env.unwrapped.render_state``); each end and the middle serve in turn as the goal, and every
    state of the line gives one pair (true distance = ``env.unwrapped.goal_distance``, latent
    distance = mean squared token difference, as the planning objective measures it).

    Args:
        env_name, env_options: the env (``envs.make_env``).
        encoder: a frozen encoder with ``encode(images) -> (B, N, D)``.
        lines: ``[[[x0, y0], [x1, y1]], ...]`` agent positions in the env's units.
        points: states per line.

    Returns:
        dict with ``true`` and ``latent`` lists and the :func:`monotonicity` numbers.
    """
    import envs as envs_pkg
    import torch

    env = envs_pkg.make_env(env_name, **env_options)
    try:
        env.reset(seed=0)
        u = env.unwrapped
        true_all, latent_all = [], []
        for a, b in lines:
            a, b = np.asarray(a, float), np.asarray(b, float)
            pos = a[None] + np.linspace(0.0, 1.0, int(points))[:, None] * (b - a)[None]  # (M, 2)
            states = np.stack([_state_at(u, p) for p in pos])
            images = np.stack([u.render_state(s) for s in states])
            with torch.no_grad():
                z = encoder.encode(images).float().cpu()  # (M, N, D)
            for g in (0, len(states) // 2, len(states) - 1):
                true_all.append([u.goal_distance(s, states[g]) for s in states])
                latent_all.append(((z - z[g:g + 1]) ** 2).mean(dim=(1, 2)).numpy())
    finally:
        env.close()
    true, latent = np.concatenate(true_all), np.concatenate(latent_all)
    return {"true": true.tolist(), "latent": latent.tolist(), **monotonicity(true, latent)}
