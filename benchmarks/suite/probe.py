"""How well latent distance follows true distance: the suite's probe of an encoder.

:func:`latent_probe` renders resting states along straight lines through an env's arena, encodes
them and pairs each state's true distance to a goal on the line with its latent distance;
:func:`monotonicity` scores the pairs (Spearman rank correlation and the rising fraction).

The true distance depends on the task (:data:`PROBE_KINDS`, chosen by env name):

| kind       | envs                       | lines are                 | true distance                        |
|------------|----------------------------|---------------------------|--------------------------------------|
| position   | pointmass, wall, reacher,  | agent positions (reacher: | the env's ``goal_distance`` (reacher:|
|            | any other                  | joint angles, rad)        | wrapped joint-space distance)        |
| path       | pointmaze                  | ball positions            | :func:`path_distance` through the    |
|            |                            |                           | maze (states inside walls dropped)   |
| pusht      | pusht                      | positions in px           | three parts, probed apart: block     |
|            |                            |                           | position, block angle, pusher        |
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from mpc.objectives import latent_distance

__all__ = ["PROBE_KINDS", "latent_probe", "monotonicity", "binned_means", "path_distance", "ensemble_probe"]

PROBE_KINDS = {"pointmaze": "path", "pusht": "pusht"}  # env name -> probe kind; others: "position"


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


def path_distance(maze_map: list[list], cell_of: Callable, cell_xy: Callable, a, b) -> float:
    """Distance from ``a`` to ``b`` along the maze's corridors: a breadth-first search over free cells.

    In one cell it is the straight-line distance. Otherwise it is ``L`` cell steps (``L``: the BFS
    path length in cells, each step the distance between the two cell centres) corrected by where
    ``a`` and ``b`` sit in their cells along the first and last step, so it is exact along a
    straight corridor and continuous across cell borders. ``inf`` when no path joins the cells.

    Args:
        maze_map: rows of cells, ``1`` for a wall (gymnasium-robotics' maze maps).
        cell_of: ``xy -> (row, col)``; cell_xy: ``(row, col) -> centre xy``.
        a, b: (2,) positions.
    """
    from envs.pointmaze import _bfs_next

    a, b = np.asarray(a, float), np.asarray(b, float)
    ca, cb = tuple(cell_of(a)), tuple(cell_of(b))
    if ca == cb:
        return float(np.linalg.norm(a - b))
    table = _bfs_next(maze_map, cb)
    if ca not in table:
        return float("inf")
    cells = [ca]
    while cells[-1] != cb:
        cells.append(table[cells[-1]][0])
    centres = [np.asarray(cell_xy(c), float) for c in cells]
    steps = np.diff(np.stack(centres), axis=0)  # (L, 2)
    first, last = steps[0] / np.linalg.norm(steps[0]), steps[-1] / np.linalg.norm(steps[-1])
    length = np.linalg.norm(steps, axis=1).sum()
    return float(length - (a - centres[0]) @ first + (b - centres[-1]) @ last)


def _encode(encoder, images: np.ndarray):
    import torch

    with torch.no_grad():
        return encoder.encode(images).float().cpu()  # (M, N, D)


def _pairs(z, true_fn: Callable[[int, int], float], goals) -> tuple[list, list]:
    """For each goal index ``g``: true distance ``true_fn(i, g)`` and latent MSE to ``z[g]`` of every ``i``."""
    true, latent = [], []
    for g in goals:
        true.append([true_fn(i, g) for i in range(len(z))])
        latent.append(latent_distance(z, z[g:g + 1]).numpy())
    return true, latent


def _scored(true: list, latent: list) -> dict:
    true, latent = np.concatenate(true), np.concatenate(latent)
    return {"true": true.tolist(), "latent": latent.tolist(), **monotonicity(true, latent)}


def _along(a, b, points: int) -> np.ndarray:
    a, b = np.asarray(a, float), np.asarray(b, float)
    return a[None] + np.linspace(0.0, 1.0, int(points))[:, None] * (b - a)[None]  # (M, 2)


def _position_probe(u, encoder, lines: list, points: int, path: bool) -> dict:
    """Agent states along each line; true distance: ``goal_distance``, or the maze path (``path``)."""
    true_all, latent_all, rates = [], [], []
    for a, b in lines:
        pos = _along(a, b, points)
        if path:  # drop states inside walls
            pos = np.stack([p for p in pos if u._maze_map[u._cell_of(p)[0]][u._cell_of(p)[1]] != 1])
        states = np.stack([_state_at(u, p) for p in pos])
        z = _encode(encoder, np.stack([u.render_state(s) for s in states]))
        if path:
            fn = lambda i, g: path_distance(u._maze_map, u._cell_of, u._cell_xy, states[i][:2], states[g][:2])  # noqa: E731
        else:
            fn = lambda i, g: u.goal_distance(states[i], states[g])  # noqa: E731
        t, lat = _pairs(z, fn, (0, len(states) // 2, len(states) - 1))
        true_all += t
        latent_all += lat
        rates.append(line_rate(t, lat))
    return {**_scored(true_all, latent_all), "line_rates": rates}


# Push-T probe poses (board pixels, radians): the block turns at the centre; while the pusher moves
# the block rests in a corner (so the pusher seldom hides it), and while the block moves or turns
# the pusher waits in the opposite corner.
_PUSHT_BLOCK = (256.0, 256.0, 0.0)
_PUSHT_BLOCK_PARK = (400.0, 360.0, 0.0)
_PUSHT_PARK = (40.0, 40.0)


def _pusht_probe(u, encoder, lines: list, points: int) -> dict:
    """Block position, block angle and pusher probed apart (the others held fixed).

    ``lines`` give the positions (px) the block and, in turn, the pusher travel; the block angle
    sweeps ``points`` angles over ``[-pi, pi)`` at the board centre. True distances: block position
    difference (px), wrapped angle difference (rad), pusher position difference (px).
    """
    def state(agent, block):
        return np.array([*agent, *block, 0.0, 0.0, 0.0, 0.0, 0.0])

    parts = {}
    for part in ("block_position", "agent"):
        true_all, latent_all = [], []
        for a, b in lines:
            pos = _along(a, b, points)
            if part == "agent":
                states = [state(p, _PUSHT_BLOCK_PARK) for p in pos]
            else:
                states = [state(_PUSHT_PARK, (*p, _PUSHT_BLOCK[2])) for p in pos]
            z = _encode(encoder, np.stack([u.render_state(s) for s in states]))
            t, lat = _pairs(z, lambda i, g: float(np.linalg.norm(pos[i] - pos[g])), (0, len(pos) // 2, len(pos) - 1))
            true_all += t
            latent_all += lat
        parts[part] = _scored(true_all, latent_all)
    angles = np.linspace(-np.pi, np.pi, int(points), endpoint=False)
    z = _encode(encoder, np.stack([u.render_state(state(_PUSHT_PARK, (*_PUSHT_BLOCK[:2], a))) for a in angles]))
    wrapped = lambda i, g: float(abs(np.angle(np.exp(1j * (angles[i] - angles[g])))))  # noqa: E731
    parts["block_angle"] = _scored(*_pairs(z, wrapped, range(0, len(angles), max(1, len(angles) // 4))))
    return {**parts["block_position"], "parts": {k: parts[k] for k in ("block_position", "block_angle", "agent")}}


def line_rate(true: list, latent: list) -> float | None:
    """Latent distance per unit of true distance over one probe line's pairs (``None`` if all true are 0);
    ``true`` and ``latent`` are the pairs' values, flat or in groups (one per goal).

    Compared across lines it shows which directions the latent underweights: on reacher a keypoint
    latent can move many times less per radian of the wrist than of the shoulder, and plans then
    leave the wrist where it is.
    """
    total = float(np.sum([np.sum(t) for t in true]))
    return float(np.sum([np.sum(v) for v in latent])) / total if total > 0 else None


def pusher_weight(parts: dict) -> float | None:
    """How much the latent weighs the pusher against the block, from a Push-T probe's ``parts``.

    Each part's latent distance per pixel of true distance (summed over its pairs); the result is the
    pusher's share ``agent / (agent + block_position)`` in [0, 1]. Spearman alone hides a latent that
    orders pusher positions correctly but at a scale too small for the planner to care (a share near 0:
    plans move the block and leave the pusher anywhere, while success needs both). ``None`` when a part
    is missing or both are flat.
    """
    if "agent" not in parts or "block_position" not in parts:
        return None
    rates = [line_rate(parts[k]["true"], parts[k]["latent"]) for k in ("agent", "block_position")]
    if None in rates or rates[0] + rates[1] <= 0:
        return None
    return rates[0] / (rates[0] + rates[1])


class _Embedded:
    """An encoder seen through a temporal distance: ``encode`` gives the embedding ``(M, 1, k)``, so the
    probe's mean squared difference is the squared learnt distance / k (the planner's cost, rescaled)."""

    def __init__(self, encoder, distance):
        self.encoder, self.distance = encoder, distance

    def encode(self, images):
        return self.distance.embed(self.encoder.encode(images).float())[:, None, :]


def latent_probe(env_name: str, env_options: dict, encoder, lines: list, points: int = 25,
                 kind: str | None = None, distance=None) -> dict:
    """Latent distance to the goal against true distance along straight lines through the arena.

    For each line (two end positions), ``points`` resting states are rendered along it
    (``env.unwrapped.render_state``); each end and the middle serve in turn as the goal, and every
    state of the line gives one pair (latent distance = mean squared token difference, as the
    planning objective measures it; true distance as the probe kind says, see the module docstring).

    Args:
        env_name, env_options: the env (``envs.make_env``).
        encoder: a frozen encoder with ``encode(images) -> (B, N, D)``.
        lines: ``[[[x0, y0], [x1, y1]], ...]`` positions in the env's units (reacher: joint angles).
        points: states per line.
        kind: ``position``, ``path`` or ``pusht``; ``None``: :data:`PROBE_KINDS` of ``env_name``.
        distance: a :class:`mpc.temporal_distance.TemporalDistance` of the encoder's latent: probe the
            learnt distance (what a ``temporal-distance`` planner minimises) instead of the token MSE.

    Returns:
        dict with ``true`` and ``latent`` lists and the :func:`monotonicity` numbers; the ``pusht``
        kind adds ``parts`` (``block_position``, ``block_angle``, ``agent``, each such a dict) and
        gives the block-position part at the top level.

    Raises:
        ValueError: an unknown kind.
    """
    import envs as envs_pkg

    kind = kind or PROBE_KINDS.get(env_name, "position")
    if distance is not None:
        encoder = _Embedded(encoder, distance)
    if kind not in ("position", "path", "pusht"):
        raise ValueError(f"unknown probe kind {kind!r}; expected position, path or pusht")
    env = envs_pkg.make_env(env_name, **env_options)
    try:
        env.reset(seed=0)
        u = env.unwrapped
        if kind == "pusht":
            return _pusht_probe(u, encoder, lines, points)
        return _position_probe(u, encoder, lines, points, path=kind == "path")
    finally:
        env.close()


def ensemble_probe(env_name: str, env_options: dict, model, seeds: list[int], samples: int = 64,
                   horizon: int = 5, seed: int = 0) -> dict:
    """How large an ensemble's disagreement is next to the cost differences a planner ranks.

    For each evaluation start (``reset(seed)``), ``samples`` uniform random action sequences of
    ``horizon`` model steps are rolled out by every member from the first frame; per start, the
    standard deviation across candidates of the last-frame cost (token MSE of the members' mean to
    the goal) and of the members' disagreement (:func:`mpc.ensemble.disagreement`) are taken.

    Returns:
        ``{"members", "cost_std", "disagreement_mean", "disagreement_std", "ratio"}`` (means over
        the starts; ``ratio`` = disagreement_std / cost_std: well below 1, a raw risk weight of order
        1 reorders almost no candidates).
    """
    import torch

    import envs as envs_pkg
    from mpc.ensemble import disagreement

    env = envs_pkg.make_env(env_name, **env_options)
    g = torch.Generator().manual_seed(seed)
    cost_std, dis_mean, dis_std = [], [], []
    try:
        for s in seeds:
            obs, info = env.reset(seed=int(s))
            with torch.no_grad():
                z = model.encode(obs["pixels"][None])[:, None]  # (1, 1, N, D)
                p = torch.as_tensor(np.asarray(obs["proprio"], np.float32))[None, None] if model.proprio_dim else None
                sp = env.action_space  # the model's action is frameskip env actions: (Am,) = tiled (A,)
                reps = model.action_dim // sp.shape[0]
                low, high = (torch.as_tensor(np.tile(x, reps), dtype=torch.float32) for x in (sp.low, sp.high))
                a = low + (high - low) * torch.rand(1, samples, horizon, low.shape[0], generator=g)
                zp, _ = model.rollout(z, p, a.to(model.device), members=True)  # (1, S, K, H, N, D)
                goal = model.encode(info["goal_image"][None])  # (1, N, D)
                cost = latent_distance(zp.mean(2)[:, :, -1], goal[:, None])[0]  # (S,)
                dis = disagreement(zp)[0, :, -1]  # (S,)
            cost_std.append(float(cost.std(unbiased=False)))
            dis_mean.append(float(dis.mean()))
            dis_std.append(float(dis.std(unbiased=False)))
    finally:
        env.close()
    out = {"members": int(model.ensemble), "cost_std": float(np.mean(cost_std)),
           "disagreement_mean": float(np.mean(dis_mean)), "disagreement_std": float(np.mean(dis_std))}
    out["ratio"] = out["disagreement_std"] / max(out["cost_std"], 1e-12)
    return out
