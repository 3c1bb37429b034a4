"""CEM followed by gradient refinement of its top elites (CEM for the basin, Adam for the digits).

Runs :func:`~mpc.planners.cem.cem_loop`, then descends the best-ever sequence plus the top
``refine - 1`` elites of the last CEM iteration with projected Adam (steps scaled by the Box
half-width, cosine-annealed, backtracking as in :mod:`mpc.planners.gd`). ``cost_fn`` must be differentiable.
The best sequence ever evaluated (CEM or gradient phase) is returned.
"""
from __future__ import annotations

import torch

from . import register_planner
from .base import Planner, Run
from .cem import _positive, _positive_int, cem_loop, cem_options
from .gd import _OPTIMIZERS, gradient_descent


@register_planner("cem_gd")
class CEMGD(Planner):
    """CEM, then projected gradient descent on the top elites.

    Args:
        action_space, horizon, seed, device: see :class:`~mpc.planners.base.Planner`.
        samples, iterations, elites, init_std, min_std: the CEM phase (see :class:`~mpc.planners.cem.CEM`).
        refine: R, elites refined by gradient descent (the best-ever sequence is one of them).
        steps: gradient steps.
        lr: gradient step size (Adam: fraction of the Box half-width per step).
        optimizer: ``"adam"`` or ``"sgd"``.
        backtrack: undo cost-increasing steps and halve that elite's step size.

    Raises:
        ValueError: ``refine > elites``, ``elites > samples`` or bad values.
    """

    name = "cem_gd"

    def __init__(self, action_space, horizon: int = 5, seed: int = 0, device=None, *,
                 samples: int = 300, iterations: int = 15, elites: int = 30, init_std: float = 1.0,
                 min_std: float = 0.0, refine: int = 8, steps: int = 50, lr: float = 0.05,
                 optimizer: str = "adam", backtrack: bool = True):
        super().__init__(action_space, horizon, seed, device)
        cem = cem_options(samples, iterations, elites, init_std, min_std)
        vars(self).update(cem)
        self.refine = _positive_int("refine", refine)
        if self.refine > self.elites:
            raise ValueError(f"refine ({refine}) must not exceed elites ({elites})")
        self.steps = _positive_int("steps", steps, 0)
        self.lr = _positive("lr", lr)
        if optimizer not in _OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {_OPTIMIZERS}, got {optimizer!r}")
        self.optimizer = optimizer
        self.backtrack = bool(backtrack)
        self.options = dict(cem, refine=self.refine, steps=self.steps, lr=self.lr, optimizer=optimizer,
                            backtrack=self.backtrack)

    def _optimize(self, run: Run, init: torch.Tensor) -> dict:
        B, H, A = init.shape
        std = (self.init_std * self.half).expand(B, H, A)                  # (B, H, A)
        elites, _ = cem_loop(self, run, init, std, self.samples, self.iterations, self.elites, self.min_std)
        cem_iterations = run.iterations
        if run.stopped:
            return {"cem_iterations": cem_iterations}
        start = elites[:, :self.refine].clone()                              # (B, R, H, A)
        start[:, 0] = run.best_actions
        lr_scale = self.half if self.optimizer == "adam" else 1.0
        gradient_descent(self, run, start, self.steps, self.lr, self.optimizer, (0.9, 0.999),
                         0.0, self.backtrack, lr_scale, "cosine")
        return {"cem_iterations": cem_iterations}
