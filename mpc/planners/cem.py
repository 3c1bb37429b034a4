"""Cross-entropy method (CEM), as used for latent planning in DINO-WM.

Rubinstein 1999; DINO-WM (Zhou et al. 2024, https://arxiv.org/abs/2411.04983) defaults:
300 samples, 30 iterations, top 30 elites, horizon 5, init_std 1.

Each iteration samples S sequences around a per-problem Gaussian (mean (B, H, A), std (B, H, A)),
clips them into the Box, keeps the current mean as candidate 0 (so an iteration never loses its
best plan), scores all (B, S) at once, and refits mean and std to the top-k. The returned plan is
the best sequence ever evaluated per problem (never worse than the final mean, which is also
evaluated as candidate 0 of the last iteration).
"""
from __future__ import annotations

import torch

from . import register_planner
from .base import Planner, Run


def _positive_int(name: str, value, minimum: int = 1) -> int:
    if int(value) != value or int(value) < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _positive(name: str, value, allow_zero: bool = False) -> float:
    value = float(value)
    if value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{name} must be {'>= 0' if allow_zero else '> 0'}, got {value!r}")
    return value


def cem_loop(planner: Planner, run: Run, mean: torch.Tensor, std: torch.Tensor, samples: int,
             iterations: int, num_elites: int, min_std: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Run CEM iterations from ``mean``/``std`` (B, H, A); returns the last (elites, elite costs).

    Elites are (B, K, H, A) and their costs (B, K), sorted best first.
    """
    B, H, A = mean.shape
    floor = min_std * planner.half                                           # (H, A)
    for it in range(iterations):
        noise = planner.normal(samples, H, A)                                # (B, S, H, A)
        cand = planner.clip(mean[:, None] + std[:, None] * noise)            # (B, S, H, A)
        cand[:, 0] = planner.clip(mean)                                      # keep the mean
        cost = run.evaluate(cand)                                            # (B, S)
        elite_cost, idx = torch.topk(cost, num_elites, dim=1, largest=False)   # (B, K), sorted
        elites = torch.gather(cand, 1, idx[:, :, None, None].expand(B, num_elites, H, A))  # (B, K, H, A)
        mean = elites.mean(dim=1)                                            # (B, H, A)
        std = torch.maximum(elites.std(dim=1), floor)                        # (B, H, A)
        if run.end_iteration(mean=mean, std=std):
            break
    return elites, elite_cost


def cem_options(samples, iterations, elites, init_std, min_std) -> dict:
    """Checked CEM options (shared by ``cem`` and ``cem_gd``).

    Raises:
        ValueError: non-positive values or ``elites > samples``.
    """
    opts = dict(samples=_positive_int("samples", samples, 2),
                iterations=_positive_int("iterations", iterations),
                elites=_positive_int("elites", elites, 2),
                init_std=_positive("init_std", init_std),
                min_std=_positive("min_std", min_std, allow_zero=True))
    if opts["elites"] > opts["samples"]:
        raise ValueError(f"elites ({elites}) must not exceed samples ({samples})")
    return opts


@register_planner("cem")
class CEM(Planner):
    """Cross-entropy method over (B, S, H, A) candidates.

    Args:
        action_space, horizon, seed, device: see :class:`~mpc.planners.base.Planner`.
        samples: S, candidates per iteration (candidate 0 is the current mean).
        iterations: refits of the Gaussian.
        elites: K, the lowest-cost candidates used to refit mean and std.
        init_std: initial std as a fraction of the Box half-width (1 = DINO-WM on [-1, 1]).
        min_std: std floor as a fraction of the Box half-width (0 = none, as in DINO-WM).

    Raises:
        ValueError: ``elites > samples`` or non-positive sizes.
    """

    name = "cem"

    def __init__(self, action_space, horizon: int = 5, seed: int = 0, device=None, *,
                 samples: int = 300, iterations: int = 30, elites: int = 30,
                 init_std: float = 1.0, min_std: float = 0.0):
        super().__init__(action_space, horizon, seed, device)
        self.options = cem_options(samples, iterations, elites, init_std, min_std)
        vars(self).update(self.options)

    def _optimize(self, run: Run, init: torch.Tensor) -> dict:
        B, H, A = init.shape
        std = (self.init_std * self.half).expand(B, H, A)                  # (B, H, A)
        cem_loop(self, run, init, std, self.samples, self.iterations, self.elites, self.min_std)
        return {}
