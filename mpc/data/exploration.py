"""Exploration policies: how goal-free data are collected.

Two kinds, both seeded by the episode's seed alone (not by workers or interruptions):

* **open-loop** (:data:`POLICIES`: ``uniform``, ``colored-noise``, ``brownian``, ``repeat``): a
  ``(T, A)`` sequence in [-1, 1] drawn before the episode, blind to observations;
  :func:`make_actions` maps it onto the env's Box.
* **closed-loop** (:data:`CLOSED_LOOP`: ``push``, ``waypoints``): an action per step from the env's
  true state, read through ``env.unwrapped``. Exploration may use privileged state (DINO-WM's
  Push-T data are noisy replays of purposeful pushes), but never an evaluation goal: targets are
  drawn from the policy's own generator. A ``mix`` fraction of episodes plays ``colored-noise``
  instead. :func:`make_policy` builds either kind as one per-step callable.

Which envs each closed-loop policy supports:

| policy      | envs                                      | what it does                                   |
|-------------|-------------------------------------------|------------------------------------------------|
| ``push``    | pusht                                     | goes behind the block on a random side, pushes |
|             |                                           | through a random point near its centre, again  |
| ``waypoints``| pointmass, wall, reacher, pointmaze (any | the env's ``oracle_action`` toward random       |
|             | env whose ``oracle_action`` is a feedback | targets drawn like its goals (``_sample_episode``|
|             | law on ``_goal_state``); not pusht        | with the policy's own generator)                |
"""
from __future__ import annotations

from typing import Callable

import numpy as np

__all__ = ["POLICIES", "CLOSED_LOOP", "make_actions", "make_policy"]


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
        ValueError: ``policy`` is not one of :data:`POLICIES` or :data:`CLOSED_LOOP`.
    """
    if policy not in POLICIES and policy not in CLOSED_LOOP:
        raise ValueError(f"unknown policy {policy!r}; expected one of {', '.join([*POLICIES, *CLOSED_LOOP])}")


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
    if policy not in POLICIES:
        check_policy(policy)
        raise ValueError(f"policy {policy!r} is closed-loop (it reads the env each step); use make_policy")
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


# --------------------------------------------------------------------------------------------
# Closed-loop policies: (rng, low, high, **options) -> act(unwrapped env) -> (A,) env action
# --------------------------------------------------------------------------------------------
class _Push:
    """Push-T: approach a point behind the block, then push through it; repeat with new draws.

    Each push draws a heading, an offset of the aim point across it (``offset`` px) and a push
    length (``reach`` px); the pusher goes to ``standoff`` px behind the aim point (at most
    ``approach_steps`` steps), then towards the far point until it is there (``push_steps`` steps
    at most), then draws the next push.
    The far point stays ``margin`` px inside the board, so pushes seldom ram the block through a
    wall. Gaussian noise of std ``noise`` (in action units) is added to every action.
    """

    def __init__(self, rng: np.random.Generator, low: np.ndarray, high: np.ndarray, noise: float = 0.1,
                 offset: float = 25.0, reach: tuple = (60.0, 140.0), standoff: float = 90.0,
                 approach_steps: int = 15, push_steps: int = 12, margin: float = 80.0):
        self.rng, self.low, self.high = rng, low, high
        self.noise, self.offset, self.reach = float(noise), float(offset), tuple(float(r) for r in reach)
        self.standoff, self.approach_steps, self.push_steps = float(standoff), int(approach_steps), int(push_steps)
        self.margin = float(margin)
        self._phase, self._left, self._target, self._through = "new", 0, None, None

    def _new_push(self, u) -> None:
        from envs.pusht import BOARD

        block = u._sim.block
        cog = np.array(block.local_to_world(block.center_of_gravity))
        heading = self.rng.uniform(-np.pi, np.pi)
        direction = np.array([np.cos(heading), np.sin(heading)])
        aim = cog + self.rng.uniform(-self.offset, self.offset) * np.array([-direction[1], direction[0]])
        self._target = np.clip(aim - self.standoff * direction, 30, BOARD - 30)
        self._through = np.clip(aim + self.rng.uniform(*self.reach) * direction, self.margin, BOARD - self.margin)
        self._phase, self._left = "approach", self.approach_steps

    def __call__(self, env) -> np.ndarray:
        u = env.unwrapped
        if not hasattr(u, "_sim") or not hasattr(u._sim, "block"):
            raise ValueError(f"policy 'push' needs the Push-T env (envs/pusht.py), got {type(u).__name__}")
        agent = np.array(u._sim.agent.position)
        arrived = self._target is not None and np.linalg.norm(agent - self._target) < 15
        if self._phase == "approach" and (arrived or self._left <= 0):
            self._phase, self._left, self._target = "push", self.push_steps, self._through
        elif self._phase == "new" or arrived or self._left <= 0:  # a push ended (or none yet)
            self._new_push(u)
        self._left -= 1
        action = (self._target - agent) / u.action_scale + self.rng.normal(0.0, self.noise, 2)
        return np.clip(action, self.low, self.high)


class _Waypoints:
    """Any env with a feedback ``oracle_action``: drive toward random targets drawn like its goals.

    A target comes from ``env.unwrapped._sample_episode(rng)`` (the goal half) with the policy's
    own generator, so it is reachable but no evaluation goal. The oracle acts as if the target
    were the goal (its ``_goal_state`` is swapped in for the call only). A new target is drawn when
    the current one is reached (the env's success test) or after ``hold`` steps. Gaussian noise of
    std ``noise`` (fraction of the half-range of the Box) is added to every action.
    """

    _UNSUPPORTED = ("PushTEnv",)  # its oracle replays a recorded push instead of a feedback law

    def __init__(self, rng: np.random.Generator, low: np.ndarray, high: np.ndarray, noise: float = 0.2,
                 hold: int = 25):
        if int(hold) < 1:
            raise ValueError(f"policy 'waypoints' needs hold >= 1, got {hold}")
        self.rng, self.low, self.high, self.noise, self.hold = rng, low, high, float(noise), int(hold)
        self._target, self._left = None, 0

    def __call__(self, env) -> np.ndarray:
        u = env.unwrapped
        if (type(u).__name__ in self._UNSUPPORTED or not callable(getattr(u, "oracle_action", None))
                or not hasattr(u, "_sample_episode") or not hasattr(u, "_goal_state")):
            raise ValueError(f"policy 'waypoints' needs an env whose oracle_action() is a feedback law on "
                             f"its goal state (pointmass, wall, reacher, pointmaze); got {type(u).__name__}"
                             " (for pusht use policy=push)")
        state = u.get_state()
        if self._target is None or self._left <= 0 or u.goal_distance(state, self._target) <= u.success_threshold:
            self._target = np.asarray(u._sample_episode(self.rng)[1], np.float64)
            self._left = self.hold
        self._left -= 1
        goal, u._goal_state = u._goal_state, self._target
        try:
            action = np.asarray(u.oracle_action(), np.float64)
        finally:
            u._goal_state = goal
        action = action + self.rng.normal(0.0, self.noise, action.shape) * 0.5 * (self.high - self.low)
        return np.clip(action, self.low, self.high)


CLOSED_LOOP: dict[str, Callable[..., Callable]] = {
    "push": _Push,
    "waypoints": _Waypoints,
}


def make_policy(policy: str, low: np.ndarray, high: np.ndarray, steps: int, seed: int,
                mix: float = 0.0, **options) -> Callable[[object], np.ndarray]:
    """The exploration policy of one episode, as ``act(env) -> (A,) float32 action`` called once per step.

    An open-loop policy replays :func:`make_actions` (same actions, same seed). A closed-loop one
    reads ``env.unwrapped`` each step; with probability ``mix`` (drawn from the episode's seed) the
    whole episode plays ``colored-noise`` (default options) instead. Generators:
    ``default_rng([seed, 1])`` for the actions, ``[seed, 2]`` for the mix draw.

    Args:
        policy: one of :data:`POLICIES` or :data:`CLOSED_LOOP` (``push`` options: ``noise``,
            ``offset``, ``reach``, ``standoff``, ``approach_steps``, ``push_steps``, ``margin``; ``waypoints``:
            ``noise``, ``hold``).
        low, high: (A,) finite action bounds.
        steps: T.
        seed: the episode's seed.
        mix: fraction of closed-loop episodes played as colored noise, in [0, 1].

    Returns:
        a callable taking the env (after ``reset``) and returning the next action in ``[low, high]``.

    Raises:
        ValueError: unknown policy or options, ``mix`` outside [0, 1] or given to an open-loop policy.
    """
    check_policy(policy)
    mix = float(mix)
    if policy in POLICIES:
        if mix:
            raise ValueError(f"mix is an option of the closed-loop policies ({', '.join(CLOSED_LOOP)}), "
                             f"not of {policy!r}")
        return _replay(make_actions(policy, low, high, steps, seed, **options))
    if not 0.0 <= mix <= 1.0:
        raise ValueError(f"mix must lie in [0, 1], got {mix}")
    if mix and np.random.default_rng([int(seed), 2]).random() < mix:
        return _replay(make_actions("colored-noise", low, high, steps, seed))
    low, high = np.asarray(low, np.float64), np.asarray(high, np.float64)
    try:
        act = CLOSED_LOOP[policy](np.random.default_rng([int(seed), 1]), low, high, **options)
    except TypeError as e:
        raise ValueError(f"bad options {options} for policy {policy!r}: {e}") from e
    return lambda env: np.asarray(act(env), np.float32)


def _replay(actions: np.ndarray) -> Callable[[object], np.ndarray]:
    """A per-step callable returning ``actions[0], actions[1], ...`` whatever the env."""
    it = iter(actions)
    return lambda env: next(it)
