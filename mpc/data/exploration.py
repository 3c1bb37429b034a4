"""Exploration policies: seeded action sequences (T, A) inside the action Box, blind to observations.

Each policy draws a (T, A) sequence in [-1, 1] from a ``numpy`` generator; :func:`make_actions`
seeds the generator from the episode's seed and maps the result onto the env's Box, so an episode's
actions depend on its seed alone (not on workers or interruptions).
"""
from __future__ import annotations

from typing import Callable

import numpy as np

__all__ = ["POLICIES", "make_actions"]


def _uniform(rng: np.random.Generator, steps: int, dim: int) -> np.ndarray:
    """iid uniform in [-1, 1]. Returns (T, A)."""
    return rng.uniform(-1.0, 1.0, size=(steps, dim))


def _powerlaw_noise(rng: np.random.Generator, steps: int, dim: int, beta: float) -> np.ndarray:
    """Gaussian noise with power spectrum ~ 1/f**beta along time, unit variance. Returns (T, A).

    beta = 0 is white noise, 1 pink, 2 red (Brownian-like); Timmer & Koenig (1995).
    """
    f = np.fft.rfftfreq(steps)                                    # (F,)
    scale = np.maximum(f, 1.0 / steps) ** (-beta / 2.0)           # amplitude per frequency
    w = scale[1:].copy()
    w[-1] *= (1 + steps % 2) / 2.0
    sigma = 2.0 * np.sqrt(np.sum(w ** 2)) / steps                 # std of the raw series
    real = rng.normal(size=(dim, f.size)) * scale
    imag = rng.normal(size=(dim, f.size)) * scale
    if steps % 2 == 0:                                            # Nyquist term is real
        imag[:, -1] = 0.0
        real[:, -1] *= np.sqrt(2.0)
    imag[:, 0] = 0.0                                              # DC term is real
    real[:, 0] *= np.sqrt(2.0)
    return (np.fft.irfft(real + 1j * imag, n=steps, axis=-1) / sigma).T  # (T, A)


def _colored_noise(rng: np.random.Generator, steps: int, dim: int, beta: float = 1.0,
                   sigma: float = 0.6) -> np.ndarray:
    """Temporally correlated noise ``clip(sigma * powerlaw(beta), -1, 1)``. Returns (T, A)."""
    if steps < 2:
        return _uniform(rng, steps, dim)
    return np.clip(sigma * _powerlaw_noise(rng, steps, dim, float(beta)), -1.0, 1.0)


def _brownian(rng: np.random.Generator, steps: int, dim: int, sigma: float = 0.2) -> np.ndarray:
    """Random walk from a uniform start, increments N(0, sigma), clipped to [-1, 1]. Returns (T, A)."""
    out = np.empty((steps, dim))
    a = rng.uniform(-1.0, 1.0, size=dim)
    steps_noise = rng.normal(0.0, sigma, size=(steps, dim))
    for t in range(steps):
        out[t] = a
        a = np.clip(a + steps_noise[t], -1.0, 1.0)
    return out


def _repeat(rng: np.random.Generator, steps: int, dim: int, k: int = 5) -> np.ndarray:
    """A uniform random action held for ``k`` steps, then a new one. Returns (T, A)."""
    if int(k) < 1:
        raise ValueError(f"policy 'repeat' needs k >= 1, got {k}")
    blocks = rng.uniform(-1.0, 1.0, size=(-(-steps // int(k)), dim))
    return np.repeat(blocks, int(k), axis=0)[:steps]


POLICIES: dict[str, Callable[..., np.ndarray]] = {
    "uniform": _uniform,
    "colored-noise": _colored_noise,
    "brownian": _brownian,
    "repeat": _repeat,
}


def check_policy(policy: str) -> None:
    """Check that ``policy`` names an exploration policy.

    Raises:
        ValueError: ``policy`` is not one of :data:`POLICIES`.
    """
    if policy not in POLICIES:
        raise ValueError(f"unknown policy {policy!r}; expected one of {', '.join(POLICIES)}")


def make_actions(policy: str, low: np.ndarray, high: np.ndarray, steps: int, seed: int,
                 **options) -> np.ndarray:
    """The exploration action sequence of one episode.

    The policy draws in [-1, 1] from ``numpy.random.default_rng([seed, 1])``; the result is mapped
    affinely onto the Box ``[low, high]``.

    Args:
        policy: one of :data:`POLICIES` (``uniform``, ``colored-noise`` (options ``beta``,
            ``sigma``), ``brownian`` (``sigma``), ``repeat`` (``k``)).
        low, high: (A,) finite action bounds.
        steps: T.
        seed: the episode's seed.

    Returns:
        float32 (T, A) actions inside ``[low, high]``.

    Raises:
        ValueError: unknown policy or options, or unbounded action space.
    """
    check_policy(policy)
    low, high = np.asarray(low, np.float64), np.asarray(high, np.float64)
    if not (np.all(np.isfinite(low)) and np.all(np.isfinite(high))):
        raise ValueError(f"random exploration needs a bounded action Box, got low={low} high={high}")
    rng = np.random.default_rng([int(seed), 1])
    try:
        unit = POLICIES[policy](rng, int(steps), low.size, **options)  # (T, A) in [-1, 1]
    except TypeError as e:
        raise ValueError(f"bad options {options} for policy {policy!r}: {e}") from e
    actions = low + (unit + 1.0) * 0.5 * (high - low)
    return np.clip(actions, low, high).astype(np.float32)
