"""Model predictive path integral control (MPPI), in the form TD-MPC2 uses for planning.

Williams et al. 2017; TD-MPC2 (Hansen et al. 2024, https://arxiv.org/abs/2310.16828) ``_plan``:
sample around a mean with a per-step std, keep the elites, weight them with a softmax of
``-cost / temperature``, and refit mean and std as weighted moments, std clamped to
``[min_std, max_std]``. Costs of the elites are rescaled to [0, 1] per problem before the softmax
(``normalize=True``) so one temperature works for costs of any scale. Optional momentum blends the
previous mean and std in. Candidate 0 is the current mean; the best sequence ever evaluated is
returned.
"""
from __future__ import annotations

import torch

from . import register_planner
from .base import Planner, Run
from .cem import _positive, _positive_int


@register_planner("mppi")
class MPPI(Planner):
    """MPPI over (B, S, H, A) candidates.

    Args:
        action_space, horizon, seed, device: see :class:`~mpc.planners.base.Planner`.
        samples: S, candidates per iteration (candidate 0 is the current mean).
        iterations: refits.
        elites: K, lowest-cost candidates that get softmax weights (``samples`` = all).
        temperature: softmax temperature on (normalised) costs; lower is greedier.
        init_std, min_std, max_std: std bounds, fractions of the Box half-width.
        momentum: weight of the previous mean/std in each update (0 = none, as in TD-MPC2).
        normalize: rescale elite costs to [0, 1] per problem before the softmax.

    Raises:
        ValueError: ``elites > samples``, ``min_std > max_std`` or non-positive values.
    """

    name = "mppi"

    def __init__(self, action_space, horizon: int = 5, seed: int = 0, device=None, *,
                 samples: int = 512, iterations: int = 20, elites: int = 64, temperature: float = 0.5,
                 init_std: float = 1.0, min_std: float = 0.0, max_std: float = 2.0,
                 momentum: float = 0.0, normalize: bool = True):
        super().__init__(action_space, horizon, seed, device)
        self.samples = _positive_int("samples", samples, 2)
        self.iterations = _positive_int("iterations", iterations)
        self.elites = _positive_int("elites", elites)
        if self.elites > self.samples:
            raise ValueError(f"elites ({elites}) must not exceed samples ({samples})")
        self.temperature = _positive("temperature", temperature)
        self.init_std = _positive("init_std", init_std)
        self.min_std = _positive("min_std", min_std, allow_zero=True)
        self.max_std = _positive("max_std", max_std)
        if self.min_std > self.max_std:
            raise ValueError(f"min_std ({min_std}) must not exceed max_std ({max_std})")
        if not 0.0 <= float(momentum) < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
        self.momentum = float(momentum)
        self.normalize = bool(normalize)
        self.options = dict(samples=self.samples, iterations=self.iterations, elites=self.elites,
                            temperature=self.temperature, init_std=self.init_std, min_std=self.min_std,
                            max_std=self.max_std, momentum=self.momentum, normalize=self.normalize)

    def _optimize(self, run: Run, init: torch.Tensor) -> dict:
        B, H, A = init.shape
        S, K = self.samples, self.elites
        lo_std, hi_std = self.min_std * self.half, self.max_std * self.half  # (H, A)
        mean = init
        std = (self.init_std * self.half).expand(B, H, A).clamp(lo_std, hi_std)  # (B, H, A)
        for it in range(self.iterations):
            noise = self.normal(S, H, A)                                      # (B, S, H, A)
            cand = self.clip(mean[:, None] + std[:, None] * noise)            # (B, S, H, A)
            cand[:, 0] = mean
            cost = run.evaluate(cand)                                         # (B, S)
            elite_cost, idx = torch.topk(cost, K, dim=1, largest=False)       # (B, K)
            elites = torch.gather(cand, 1, idx[:, :, None, None].expand(B, K, H, A))  # (B, K, H, A)
            c = elite_cost - elite_cost[:, :1]                                # (B, K), >= 0
            if self.normalize:
                c = c / (c[:, -1:] + 1e-12) if K > 1 else c                   # worst elite -> 1
            c = torch.where(torch.isfinite(c), c, torch.full_like(c, 1e9))
            w = torch.softmax(-c / self.temperature, dim=1)[:, :, None, None] # (B, K, 1, 1)
            new_mean = (w * elites).sum(1)                                    # (B, H, A)
            new_std = ((w * (elites - new_mean[:, None]) ** 2).sum(1)).sqrt()
            mean = self.clip(self.momentum * mean + (1 - self.momentum) * new_mean)
            std = (self.momentum * std + (1 - self.momentum) * new_std).clamp(lo_std, hi_std)
            if run.end_iteration(mean=mean, std=std):
                break
        return {}
