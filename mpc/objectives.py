"""Planning objectives: distances between predicted latent tokens and the goal's tokens.

An objective is any callable::

    objective(z_pred (B, S, H, N, D), z_goal (B, N, D),
              proprio_pred (B, S, H, P) | None = None, proprio_goal (B, P) | None = None) -> cost (B, S)

:class:`LatentObjective` is the DINO-WM one (mean squared error over tokens of the last predicted
frame), optionally over all predicted frames with a discount, plus an optional proprio term.
Replace it with your own callable of the same signature wherever an objective is taken.
The controller passes the world model's predicted proprio (raw units) and the goal's proprio given to
``plan(..., goal_proprio=...)`` / ``MPCController.act(..., goal_proprio=...)`` (None when not given).
"""
from __future__ import annotations

from typing import Callable

import torch

__all__ = ["LatentObjective", "make_objective", "list_objectives", "Objective"]

Objective = Callable[..., torch.Tensor]
_MODES = ("last", "all")


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

    Raises:
        ValueError: unknown mode, negative alpha, non-positive discount.
    """

    def __init__(self, mode: str = "last", discount: float = 1.0, alpha: float = 0.0):
        if mode not in _MODES:
            raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
        if float(discount) <= 0:
            raise ValueError(f"discount must be > 0, got {discount!r}")
        if float(alpha) < 0:
            raise ValueError(f"alpha must be >= 0, got {alpha!r}")
        self.mode, self.discount, self.alpha = mode, float(discount), float(alpha)

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

        Raises:
            ValueError: shapes that do not match the layout above, or ``alpha > 0`` without proprio.
        """
        if z_pred.ndim != 5 or z_goal.ndim != 3 or z_pred.shape[0] != z_goal.shape[0] \
                or z_pred.shape[-2:] != z_goal.shape[-2:]:
            raise ValueError(f"expected z_pred (B, S, H, N, D) and z_goal (B, N, D) with matching B, N, D; "
                             f"got {tuple(z_pred.shape)} and {tuple(z_goal.shape)}")
        err = ((z_pred - z_goal[:, None, None]) ** 2).mean(dim=(-1, -2))   # (B, S, H)
        cost = self._over_time(err)                                        # (B, S)
        if self.alpha > 0:
            if proprio_pred is None or proprio_goal is None:
                raise ValueError("alpha > 0 needs proprio_pred (B, S, H, P) and proprio_goal (B, P): a world "
                                 "model that predicts proprio, and the goal's proprio (plan(..., goal_proprio=...) "
                                 "or MPCController.act(..., goal_proprio=...)); or set alpha=0")
            if proprio_pred.ndim != 4 or proprio_goal.ndim != 2 or proprio_pred.shape[-1] != proprio_goal.shape[-1] \
                    or proprio_goal.shape[-1] == 0:
                raise ValueError(f"expected proprio_pred (B, S, H, P) and proprio_goal (B, P) with P >= 1; got "
                                 f"{tuple(proprio_pred.shape)} and {tuple(proprio_goal.shape)}")
            perr = ((proprio_pred - proprio_goal[:, None, None]) ** 2).mean(-1)  # (B, S, H)
            cost = cost + self.alpha * self._over_time(perr)
        return cost

    def __repr__(self) -> str:
        return f"LatentObjective(mode={self.mode!r}, discount={self.discount}, alpha={self.alpha})"


def list_objectives() -> list[str]:
    """Names accepted by :func:`make_objective`."""
    return list(_MODES)


def make_objective(name: str = "last", **options) -> LatentObjective:
    """Build an objective by name.

    Args:
        name: ``"last"`` (DINO-WM: last predicted frame) or ``"all"`` (discounted mean over frames).
        **options: ``discount``, ``alpha`` (see :class:`LatentObjective`).

    Raises:
        ValueError: unknown name or option.
    """
    if name not in _MODES:
        raise ValueError(f"unknown objective {name!r}; known objectives: {', '.join(_MODES)} "
                         "(or pass your own callable objective(z_pred, z_goal, proprio_pred, proprio_goal))")
    unknown = set(options) - {"discount", "alpha"}
    if unknown:
        raise ValueError(f"unknown option(s) for objective {name!r}: {sorted(unknown)}; valid: discount, alpha")
    return LatentObjective(mode=name, **options)
