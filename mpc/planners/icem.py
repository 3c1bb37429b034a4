"""Improved cross-entropy method (iCEM), Pinneri et al. 2020, https://arxiv.org/abs/2008.06389.

Changes to CEM, each an option:

- colored noise: samples are power-law noise over the horizon (PSD ~ 1/f^beta, beta=0 is white),
  made by shaping Gaussian spectra and an inverse real FFT along H, normalised to unit variance;
- population decay: iteration i samples ``max(samples * decay**-i, min_samples)`` sequences;
- elite keeping: a fraction ``keep_elites`` of the previous iteration's elites joins the next
  population; after :meth:`ICEM.shift`, the shifted elites of the last call join the first one;
- momentum on mean and std (``momentum``), and the mean is added as a candidate in the last iteration.

The best sequence ever evaluated is returned.
"""
from __future__ import annotations


import torch

from . import register_planner
from .base import Planner, Run
from .cem import _positive, _positive_int


def colored_noise(planner: Planner, samples: int, horizon: int, action_dim: int, beta: float) -> torch.Tensor:
    """(B, samples, H, A) unit-variance noise with power spectrum ~ 1/f^beta along H."""
    if beta == 0:
        return planner.normal(samples, horizon, action_dim)
    F = horizon // 2 + 1
    k = torch.arange(F, device=planner.low.device)                        # rfft frequency index
    w = (k.float() / horizon).clamp(min=1.0 / horizon) ** (-beta / 2.0)   # (F,) amplitude; DC capped at 1/H
    real_only = (k == 0) | (2 * k == horizon)                             # DC and Nyquist are real
    nyquist = horizon % 2 == 0
    re = planner.normal(samples, action_dim, F) * w                       # (B, S, A, F)
    im = planner.normal(samples, action_dim, F) * torch.where(real_only, 0.0, w)
    x = torch.fft.irfft(torch.complex(re, im), n=horizon, dim=-1)        # (B, S, A, H)
    # variance of each x_t: DC and Nyquist terms count once, the others twice (conjugate pair)
    var = w[0] ** 2 + 4 * (w[1:F - 1 if nyquist else F] ** 2).sum() + (w[-1] ** 2 if nyquist else 0.0)
    x = x / (var.sqrt() / horizon)
    return x.transpose(-1, -2)                                            # (B, S, H, A)


@register_planner("icem")
class ICEM(Planner):
    """iCEM over (B, S, H, A) candidates.

    Args:
        action_space, horizon, seed, device: see :class:`~mpc.planners.base.Planner`.
        samples: population of the first iteration.
        iterations: refits.
        elites: K, elites per iteration.
        beta: colored-noise exponent (0 white, 1 pink, 2 red/brown; the paper uses 2-2.5 for long
            horizons of smooth controls, 0.5 keeps short-horizon analytic costs converging).
        decay: population shrink factor per iteration (gamma in the paper).
        min_samples: population floor (default ``max(2 * elites, samples // 2)``).
        keep_elites: fraction of elites carried to the next iteration (and the next call after ``shift``).
        momentum: momentum of mean and std (weight of the previous value; the paper uses 0.1, 0 converges faster on static costs).
        init_std: initial std, fraction of the Box half-width.
        min_std: std floor, fraction of the Box half-width.

    Raises:
        ValueError: ``elites`` larger than the smallest population, or bad values.
    """

    name = "icem"

    def __init__(self, action_space, horizon: int = 5, seed: int = 0, device=None, *,
                 samples: int = 400, iterations: int = 30, elites: int = 30, beta: float = 0.5,
                 decay: float = 1.25, min_samples: int | None = None, keep_elites: float = 0.3,
                 momentum: float = 0.0, init_std: float = 1.0, min_std: float = 0.0):
        super().__init__(action_space, horizon, seed, device)
        self.samples = _positive_int("samples", samples, 2)
        self.iterations = _positive_int("iterations", iterations)
        self.elites = _positive_int("elites", elites, 2)
        self.min_samples = _positive_int("min_samples", min_samples if min_samples is not None
                                         else min(max(2 * self.elites, self.samples // 2), self.samples), 2)
        if self.elites > min(self.min_samples, self.samples):
            raise ValueError(f"elites ({elites}) must not exceed samples ({samples}) or min_samples "
                             f"({self.min_samples})")
        self.beta = _positive("beta", beta, allow_zero=True)
        self.decay = float(decay)
        if self.decay < 1.0:
            raise ValueError(f"decay must be >= 1 (population never grows), got {decay!r}")
        if not 0.0 <= float(keep_elites) <= 1.0:
            raise ValueError(f"keep_elites must be in [0, 1], got {keep_elites!r}")
        self.keep_elites = float(keep_elites)
        if not 0.0 <= float(momentum) < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
        self.momentum = float(momentum)
        self.init_std = _positive("init_std", init_std)
        self.min_std = _positive("min_std", min_std, allow_zero=True)
        self.options = dict(samples=self.samples, iterations=self.iterations, elites=self.elites,
                            beta=self.beta, decay=self.decay, min_samples=self.min_samples,
                            keep_elites=self.keep_elites, momentum=self.momentum, init_std=self.init_std,
                            min_std=self.min_std)
        self._elites: torch.Tensor | None = None   # (B, K, H, A) last call's elites
        self._carry: torch.Tensor | None = None    # shifted elites for the next call

    def population(self, it: int) -> int:
        """Population size of iteration ``it``."""
        return max(int(self.samples * self.decay ** -it), self.min_samples)

    def shift(self, actions: torch.Tensor) -> torch.Tensor:
        """Shift the plan (see :meth:`Planner.shift`) and the last call's elites for the next call."""
        if self._carry is not None:            # shifted again before the next call
            self._carry = super().shift(self._carry)
        elif self._elites is not None:
            self._carry, self._elites = super().shift(self._elites), None
        return super().shift(actions)

    def reset(self) -> None:
        super().reset()
        self._elites = self._carry = None

    def _optimize(self, run: Run, init: torch.Tensor) -> dict:
        B, H, A = init.shape
        K = self.elites
        n_keep = int(round(self.keep_elites * K))
        mean = init
        std = (self.init_std * self.half).expand(B, H, A)                   # (B, H, A)
        floor = self.min_std * self.half
        kept = None
        if n_keep and self._carry is not None and self._carry.shape[0] == B:
            kept = self._carry[:, :n_keep].to(init.device)                  # (B, n_keep, H, A)
        self._carry = None
        for it in range(self.iterations):
            S = self.population(it)
            cand = self.clip(mean[:, None] + std[:, None] * colored_noise(self, S, H, A, self.beta))
            if it == self.iterations - 1:
                cand[:, 0] = mean                                             # add the mean last
            if kept is not None:
                cand = torch.cat([cand, kept], dim=1)                         # (B, S + n_keep, H, A)
            cost = run.evaluate(cand)                                         # (B, S')
            _, idx = torch.topk(cost, K, dim=1, largest=False)               # (B, K), sorted
            elites = torch.gather(cand, 1, idx[:, :, None, None].expand(B, K, H, A))  # (B, K, H, A)
            mean = self.momentum * mean + (1 - self.momentum) * elites.mean(1)
            std = torch.maximum(self.momentum * std + (1 - self.momentum) * elites.std(1), floor)
            kept = elites[:, :n_keep] if n_keep else None
            if run.end_iteration(mean=mean, std=std):
                break
        self._elites = elites
        return {}
