"""Gradient descent through the cost, with restarts and projection onto the Box.

DINO-WM (Zhou et al. 2024) plans with SGD on the actions: lr 1, 1000 steps, action noise 0.003,
random normal initialisation. Here the restarts are the S axis: (B, R, H, A) sequences descend
together in one tensor (restart 0 starts from ``init`` / the Box centre, the others uniformly in
the Box), each step is projected back into the Box, and the best sequence ever evaluated is
returned.

Step control (``backtrack=True``, default): a step that raises a candidate's cost is not taken and
that candidate's step size halves; an accepted step grows it by 1.2, up to ``lr`` for Adam and
``1000 * lr`` for SGD. This keeps SGD with DINO-WM's lr 1 stable and fast on costs of any scale. ``cost_fn`` must be differentiable in the actions;
gradients are enabled inside even when the caller runs under ``torch.no_grad()``.
"""
from __future__ import annotations

import math

import torch

from . import register_planner
from .base import Planner, Run
from .cem import _positive, _positive_int

_OPTIMIZERS = ("sgd", "adam")
_SCHEDULES = ("constant", "cosine")
_SGD_GROWTH = 1000.0  # with backtracking, an SGD step may grow to this multiple of lr (flat costs)


def _value_and_grad(run: Run, x: torch.Tensor, track: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Cost (B, R) and its gradient (B, R, H, A) at x (B, R, H, A)."""
    with torch.enable_grad():
        xr = x.detach().requires_grad_(True)
        cost = run.evaluate(xr, track=track)                                  # (B, R)
        if not cost.requires_grad:
            raise ValueError("gradient planners need a cost_fn that is differentiable in the actions "
                             "(the returned cost does not require grad). Avoid .detach()/numpy/no_grad "
                             "inside cost_fn, or use a sampling planner such as 'cem'.")
        finite = torch.isfinite(cost)
        (grad,) = torch.autograd.grad(torch.where(finite, cost, 0.0).sum(), xr, allow_unused=True)
    grad = torch.zeros_like(x) if grad is None else torch.nan_to_num(grad, nan=0.0, posinf=0.0, neginf=0.0)
    return cost.detach(), grad


def gradient_descent(planner: Planner, run: Run, x: torch.Tensor, steps: int, lr: float, optimizer: str,
                     betas: tuple[float, float], action_noise: float, backtrack: bool,
                     lr_scale: torch.Tensor | float = 1.0, schedule: str = "constant") -> None:
    """Descend ``steps`` projected steps from x (B, R, H, A); best points are recorded in ``run``.

    ``lr_scale`` ((H, A) or scalar) multiplies every step (Adam uses the Box half-width);
    ``schedule="cosine"`` anneals the step size from ``lr`` to 0 over the steps.
    """
    B, R, H, A = x.shape
    cost, grad = _value_and_grad(run, x)                                      # (B, R), (B, R, H, A)
    step = torch.full((B, R, 1, 1), float(lr), device=x.device)             # per-candidate step size
    m, v = torch.zeros_like(x), torch.zeros_like(x)
    b1, b2 = betas
    max_step = lr * (1.0 if optimizer == "adam" else _SGD_GROWTH)
    for t in range(1, steps + 1):
        if optimizer == "adam":
            m = b1 * m + (1 - b1) * grad
            v = b2 * v + (1 - b2) * grad * grad
            direction = (m / (1 - b1 ** t)) / ((v / (1 - b2 ** t)).sqrt() + 1e-8)
        else:
            direction = grad
        anneal = 0.5 * (1 + math.cos(math.pi * (t - 1) / steps)) if schedule == "cosine" else 1.0
        x_new = x - anneal * step * lr_scale * direction                                        # (B, R, H, A)
        if action_noise > 0:
            x_new = x_new + action_noise * planner.half * planner.normal(R, H, A)
        x_new = planner.clip(x_new)
        cost_new, grad_new = _value_and_grad(run, x_new)
        if backtrack:
            ok = cost_new <= cost                                             # (B, R)
            okx = ok[:, :, None, None]
            x, cost = torch.where(okx, x_new, x), torch.where(ok, cost_new, cost)
            grad = torch.where(okx, grad_new, grad)
            step = torch.where(okx, (step * 1.2).clamp(max=max_step), step * 0.5)
        else:
            x, cost, grad = x_new, cost_new, grad_new
        if run.end_iteration(restarts=x, step=step):
            break


@register_planner("gd")
@register_planner("gd_adam", optimizer="adam", lr=0.2, steps=100, schedule="cosine", action_noise=0.0)
class GD(Planner):
    """Projected gradient descent (SGD or Adam) on R restarts per problem.

    Args:
        action_space, horizon, seed, device: see :class:`~mpc.planners.base.Planner`.
        optimizer: ``"sgd"`` (DINO-WM) or ``"adam"`` (preset ``gd_adam``: lr 0.2, 100 steps, cosine,
            no action noise).
        lr: step size: per unit gradient (SGD), or per step as a fraction of the Box
            half-width (Adam).
        steps: gradient steps (one cost evaluation of all restarts each).
        restarts: R, sequences descended in parallel per problem.
        action_noise: std of Gaussian noise added after each step, fraction of the half-width.
        betas: Adam moment decay rates.
        backtrack: undo cost-increasing steps and halve that candidate's step size.
        schedule: ``"constant"`` or ``"cosine"`` (anneal the step size to 0; ``gd_adam`` uses it).

    Raises:
        ValueError: unknown optimizer or non-positive sizes.
    """

    name = "gd"

    def __init__(self, action_space, horizon: int = 5, seed: int = 0, device=None, *,
                 optimizer: str = "sgd", lr: float = 1.0, steps: int = 1000, restarts: int = 8,
                 action_noise: float = 0.003, betas: tuple[float, float] = (0.9, 0.999),
                 backtrack: bool = True, schedule: str = "constant"):
        super().__init__(action_space, horizon, seed, device)
        if optimizer not in _OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {_OPTIMIZERS}, got {optimizer!r}")
        if schedule not in _SCHEDULES:
            raise ValueError(f"schedule must be one of {_SCHEDULES}, got {schedule!r}")
        self.schedule = schedule
        self.optimizer = optimizer
        self.lr = _positive("lr", lr)
        self.steps = _positive_int("steps", steps, 0)
        self.restarts = _positive_int("restarts", restarts)
        self.action_noise = _positive("action_noise", action_noise, allow_zero=True)
        self.betas = (float(betas[0]), float(betas[1]))
        self.backtrack = bool(backtrack)
        self.options = dict(optimizer=optimizer, lr=self.lr, steps=self.steps, restarts=self.restarts,
                            action_noise=self.action_noise, betas=self.betas, backtrack=self.backtrack,
                            schedule=schedule)

    def initial_restarts(self, init: torch.Tensor) -> torch.Tensor:
        """(B, R, H, A) starting points: ``init`` first, then uniform in the Box (normal where unbounded)."""
        B, H, A = init.shape
        u = self.uniform(self.restarts, H, A)                                 # (B, R, H, A)
        lo, hi = self.low.clamp(min=self.centre - self.half), self.high.clamp(max=self.centre + self.half)
        x = lo + (hi - lo) * u
        x[:, 0] = init
        return self.clip(x)

    def _optimize(self, run: Run, init: torch.Tensor) -> dict:
        x = self.initial_restarts(init)
        lr_scale = self.half if self.optimizer == "adam" else 1.0  # Adam steps: fractions of the Box
        gradient_descent(self, run, x, self.steps, self.lr, self.optimizer, self.betas,
                         self.action_noise, self.backtrack, lr_scale, self.schedule)
        return {}
