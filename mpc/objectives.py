"""Planning objectives: distances between predicted latent tokens and the goal's tokens.

An objective is any callable::

    objective(z_pred (B, S, H, N, D), z_goal (B, N, D),
              proprio_pred (B, S, H, P) | None = None, proprio_goal (B, P) | None = None) -> cost (B, S)

:class:`LatentObjective` is the DINO-WM one (mean squared error over tokens of the last predicted
frame), optionally over all predicted frames with a discount, plus an optional proprio term. With
``distance`` (a learned :class:`mpc.temporal_distance.TemporalDistance` or its file) a frame costs its
squared estimated steps to the goal frame instead of the token MSE: a cost that follows the paths
the exploration data took (around a maze's walls) rather than the straight line in the latent.
Replace it with your own callable of the same signature wherever an objective is taken.

Risk (ensembles, :mod:`mpc.ensemble`): with ``risk > 0`` the objective asks the world model for every
member's prediction (its ``members`` attribute is True, and the controller then passes
``z_pred (B, S, K, H, N, D)``, ``proprio_pred (B, S, K, H, P)``) and adds ``risk`` x the members'
disagreement (``risk_mode="disagreement"``, on the same frames as the cost), or the disagreement
rescaled per problem so that one standard deviation of it across the S candidates weighs as much as
one standard deviation of the cost (``risk_mode="standardized"``: ``beta`` is then free of the token
scale; a trained ensemble's raw disagreement is often ~100x smaller than the cost's spread, so a raw
``beta`` of order 1 changes no choice), or plans against the worst member (``risk_mode="pessimistic"``:
``(1 - risk) x`` the mean member's cost ``+ risk x`` the worst member's cost, so ``risk=1`` is the
pure worst case). Planners only see the resulting ``(B, S)``.
The controller passes the world model's predicted proprio (raw units) and the goal's proprio given to
``plan(..., goal_proprio=...)`` / ``MPCController.act(..., goal_proprio=...)`` (None when not given).
"""
from __future__ import annotations

import os
from typing import Callable

import torch

__all__ = ["LatentObjective", "make_objective", "list_objectives", "Objective", "latent_distance"]

Objective = Callable[..., torch.Tensor]
_MODES = ("last", "all")
RISK_MODES = ("disagreement", "standardized", "pessimistic")


def latent_distance(z: torch.Tensor, z_goal: torch.Tensor) -> torch.Tensor:
    """Mean squared token difference over the last two dims (N, D): what the planners minimise.

    ``z (..., N, D)`` and ``z_goal`` broadcastable to it -> ``(...)``.
    """
    return ((z - z_goal) ** 2).mean(dim=(-1, -2))


class LatentObjective:
    """Latent MSE to the goal (DINO-WM), on the last frame or a discounted mean over all frames.

    ``cost = mse_tokens(z_pred, z_goal) + alpha * mse(proprio_pred, proprio_goal)`` where each MSE is
    the mean over token and feature dims (N, D) or (P,), taken on the last predicted frame
    (``mode="last"``) or as a weighted mean over the H frames with weights ``discount**h``
    (``mode="all"``; weights are normalised so the scale matches ``"last"``).

    Args:
        mode: ``"last"`` or ``"all"``.
        discount: per-step weight base for ``mode="all"`` (1 = plain mean).
        alpha: weight of the proprio term (0 = off; then proprio inputs are ignored).
        risk: weight beta of the ensemble's uncertainty (0 = off; see the module docstring).
        proprio_weights: per proprio value, the weight of its squared error in the proprio term (a
            weighted mean; default: the plain mean). E.g. ``[1, 1, 0, 0]`` compares Push-T's pusher
            position and leaves its velocity out (velocities in px/s would outweigh positions in px).
        distance: a :class:`~mpc.temporal_distance.TemporalDistance` (or the path of its file): each
            frame's latent term is then the squared estimated steps from the frame to the goal frame
            (in place of the token MSE; ``alpha`` weighs the proprio term against steps^2).
        risk_mode: ``"disagreement"`` (cost of the members' mean + beta x disagreement),
            ``"standardized"`` (the same with the disagreement rescaled by std_S(cost) / std_S(disagreement)
            per problem, a constant for gradients) or ``"pessimistic"`` (blend of the mean member's and
            the worst member's cost).

    Raises:
        ValueError: unknown mode or risk_mode, negative alpha or risk, non-positive discount.
    """

    def __init__(self, mode: str = "last", discount: float = 1.0, alpha: float = 0.0, risk: float = 0.0,
                 risk_mode: str = "disagreement", proprio_weights=None, distance=None):
        if mode not in _MODES:
            raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
        if float(discount) <= 0:
            raise ValueError(f"discount must be > 0, got {discount!r}")
        if float(alpha) < 0:
            raise ValueError(f"alpha must be >= 0, got {alpha!r}")
        if float(risk) < 0:
            raise ValueError(f"risk must be >= 0, got {risk!r}")
        if risk_mode not in RISK_MODES:
            raise ValueError(f"risk_mode must be one of {RISK_MODES}, got {risk_mode!r}")
        self.mode, self.discount, self.alpha = mode, float(discount), float(alpha)
        self.risk, self.risk_mode = float(risk), risk_mode
        self.proprio_weights = None
        if proprio_weights is not None:
            w = torch.as_tensor(proprio_weights, dtype=torch.float32).reshape(-1)
            if w.numel() == 0 or not torch.isfinite(w).all() or (w < 0).any() or float(w.sum()) <= 0:
                raise ValueError(f"proprio_weights must be finite, >= 0, not all 0; got {proprio_weights!r}")
            self.proprio_weights = w
        if isinstance(distance, (str, os.PathLike)):
            from mpc.temporal_distance import TemporalDistance

            distance = TemporalDistance.load(distance)
        if distance is not None and not callable(getattr(distance, "embed", None)):
            raise ValueError(f"distance must be a TemporalDistance or the path of its file, got "
                             f"{type(distance).__name__}")
        self.distance = distance

    @property
    def members(self) -> bool:
        """Whether this objective takes every ensemble member's prediction (``risk > 0``)."""
        return self.risk > 0

    def _over_time(self, err: torch.Tensor) -> torch.Tensor:
        """(B, S, H) per-frame errors -> (B, S)."""
        if self.mode == "last":
            return err[..., -1]
        H = err.shape[-1]
        w = self.discount ** torch.arange(H, device=err.device, dtype=err.dtype)  # (H,)
        return (err * w).sum(-1) / w.sum()

    def __call__(self, z_pred: torch.Tensor, z_goal: torch.Tensor, proprio_pred: torch.Tensor | None = None,
                 proprio_goal: torch.Tensor | None = None) -> torch.Tensor:
        """Cost (B, S) of predicted tokens (B, S, H, N, D) against goal tokens (B, N, D).

        With ``risk > 0``: member predictions ``z_pred (B, S, K, H, N, D)`` (and ``proprio_pred
        (B, S, K, H, P)``); a 5-D ``z_pred`` is taken as one member (no disagreement).

        Raises:
            ValueError: shapes that do not match the layout above, or ``alpha > 0`` without proprio.
        """
        if self.members:
            return self._risky(z_pred, z_goal, proprio_pred, proprio_goal)
        return self._plain(z_pred, z_goal, proprio_pred, proprio_goal)

    def _plain(self, z_pred, z_goal, proprio_pred, proprio_goal) -> torch.Tensor:
        """The cost without risk: ``z_pred (B, S, H, N, D)`` -> ``(B, S)``."""
        if z_pred.ndim != 5 or z_goal.ndim != 3 or z_pred.shape[0] != z_goal.shape[0] \
                or z_pred.shape[-2:] != z_goal.shape[-2:]:
            raise ValueError(f"expected z_pred (B, S, H, N, D) and z_goal (B, N, D) with matching B, N, D; "
                             f"got {tuple(z_pred.shape)} and {tuple(z_goal.shape)}")
        cost = self._over_time(self._frame_cost(z_pred, z_goal))           # (B, S)
        if self.alpha > 0:
            if proprio_pred is None or proprio_goal is None:
                raise ValueError("alpha > 0 needs proprio_pred (B, S, H, P) and proprio_goal (B, P): a world "
                                 "model that predicts proprio, and the goal's proprio (plan(..., goal_proprio=...) "
                                 "or MPCController.act(..., goal_proprio=...)); or set alpha=0")
            if proprio_pred.ndim != 4 or proprio_goal.ndim != 2 or proprio_pred.shape[-1] != proprio_goal.shape[-1] \
                    or proprio_goal.shape[-1] == 0:
                raise ValueError(f"expected proprio_pred (B, S, H, P) and proprio_goal (B, P) with P >= 1; got "
                                 f"{tuple(proprio_pred.shape)} and {tuple(proprio_goal.shape)}")
            sq = (proprio_pred - proprio_goal[:, None, None]) ** 2              # (B, S, H, P)
            if self.proprio_weights is None:
                perr = sq.mean(-1)                                             # (B, S, H)
            else:
                w = self.proprio_weights.to(sq.device, sq.dtype)
                if w.numel() != sq.shape[-1]:
                    raise ValueError(f"proprio_weights has {w.numel()} values, the proprio has {sq.shape[-1]}")
                perr = (sq * w).sum(-1) / w.sum()                              # weighted mean
            cost = cost + self.alpha * self._over_time(perr)
        return cost

    def _frame_cost(self, z_pred: torch.Tensor, z_goal: torch.Tensor) -> torch.Tensor:
        """Latent term per frame ``(B, S, H)``; with a distance and ``mode="last"`` only the last frame
        is embedded, ``(B, S, 1)``, which is all :meth:`_over_time` reads of it."""
        if self.distance is None:
            return latent_distance(z_pred, z_goal[:, None, None])          # (B, S, H)
        d = self.distance
        if d.mean.device != z_pred.device:
            d = self.distance = d.to(z_pred.device)
        frames = z_pred[:, :, -1:] if self.mode == "last" else z_pred     # (B, S, H or 1, N, D)
        with torch.autocast(z_pred.device.type, enabled=False):
            goal = d.embed(z_goal)[:, None, None]                          # (B, 1, 1, k)
            return ((d.embed(frames) - goal) ** 2).sum(-1)                 # (B, S, H or 1)

    def _risky(self, z_pred, z_goal, proprio_pred, proprio_goal) -> torch.Tensor:
        """Risk-aware cost (B, S) from member predictions (B, S, K, H, N, D)."""
        if z_pred.ndim == 5:
            z_pred = z_pred.unsqueeze(2)
            proprio_pred = None if proprio_pred is None else proprio_pred.unsqueeze(2)
        if z_pred.ndim != 6:
            raise ValueError(f"a risk-aware objective takes member predictions (B, S, K, H, N, D), got "
                             f"{tuple(z_pred.shape)}")
        B, S, K = z_pred.shape[:3]
        if self.risk_mode in ("disagreement", "standardized"):
            from mpc.ensemble import disagreement

            mean_p = None if proprio_pred is None else proprio_pred.mean(2)
            cost = self._plain(z_pred.mean(2), z_goal, mean_p, proprio_goal)  # (B, S)
            dis = self._over_time(disagreement(z_pred))                         # (B, S)
            if self.risk_mode == "standardized":  # one std of disagreement weighs one std of cost
                with torch.no_grad():
                    scale = cost.std(1, unbiased=False, keepdim=True) / dis.std(1, unbiased=False,
                                                                                keepdim=True).clamp_min(1e-12)
                dis = dis * torch.nan_to_num(scale, nan=0.0, posinf=0.0)  # (B, S)
            return cost + self.risk * dis
        flat_p = None if proprio_pred is None else proprio_pred.flatten(1, 2)
        per_member = self._plain(z_pred.flatten(1, 2), z_goal, flat_p, proprio_goal).view(B, S, K)
        return (1 - min(self.risk, 1.0)) * per_member.mean(-1) + min(self.risk, 1.0) * per_member.amax(-1)

    def __repr__(self) -> str:
        w = "" if self.proprio_weights is None else f", proprio_weights={self.proprio_weights.tolist()}"
        d = "" if self.distance is None else ", distance=TemporalDistance"
        return (f"LatentObjective(mode={self.mode!r}, discount={self.discount}, alpha={self.alpha}, "
                f"risk={self.risk}, risk_mode={self.risk_mode!r}{w}{d})")


def list_objectives() -> list[str]:
    """Names accepted by :func:`make_objective`."""
    return list(_MODES)


def make_objective(name: str = "last", **options) -> LatentObjective:
    """Build an objective by name.

    Args:
        name: ``"last"`` (DINO-WM: last predicted frame) or ``"all"`` (discounted mean over frames).
        **options: ``discount``, ``alpha``, ``risk``, ``risk_mode``, ``proprio_weights``, ``distance``
            (see :class:`LatentObjective`).

    Raises:
        ValueError: unknown name or option.
    """
    if name not in _MODES:
        raise ValueError(f"unknown objective {name!r}; known objectives: {', '.join(_MODES)} "
                         "(or pass your own callable objective(z_pred, z_goal, proprio_pred, proprio_goal))")
    unknown = set(options) - {"discount", "alpha", "risk", "risk_mode", "proprio_weights", "distance"}
    if unknown:
        raise ValueError(f"unknown option(s) for objective {name!r}: {sorted(unknown)}; valid: discount, "
                         "alpha, risk, risk_mode, proprio_weights, distance")
    return LatentObjective(mode=name, **options)
