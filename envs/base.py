"""The goal-reaching task contract every wmpc env follows.

Observation: ``{"pixels": uint8 (H, W, 3), "proprio": float32 (P,)}``; actions: a continuous
``Box``. ``reset(seed=...)`` and every ``step`` return ``info`` with:

- ``goal_image``: uint8, same size as ``pixels``: the goal state rendered;
- ``goal_proprio``: float32 (P,): the proprio an observation of the goal state has (what a
  goal-proprio planning objective, ``alpha > 0``, compares the predicted proprio with);
- ``state``, ``goal_state``: the true simulator state and the goal's, float64 vectors;
- ``distance``: the env's distance of ``state`` to ``goal_state``;
- ``is_success``: judged from the true state (``distance <= success_threshold``);
- ``factors``: the factors of variation drawn at reset (``{}`` with ``variation="none"``; see
  :mod:`envs.variation`).

Envs of other packages follow the same contract by returning the same observation dict and info
keys; the dataset tools need only ``pixels``, ``proprio`` and (if present) ``state``, and
``goal_proprio`` is needed only to plan with a goal-proprio objective.
"""
from __future__ import annotations

import numpy as np
import gymnasium as gym
from gymnasium import spaces

from .variation import Factor, describe, factor_rng, resolve_variation, sample_factors

__all__ = ["GoalEnv"]


def warn_frameskip_renamed(stacklevel: int = 2) -> None:
    """The FutureWarning for wmpc 0.1's env option ``frameskip``, called ``action_repeat`` now
    (``frameskip`` names the world model's env steps per model step); the old name works until 0.3."""
    import warnings

    warnings.warn("the env option 'frameskip' is now called 'action_repeat' (same meaning); the old name "
                  "works until wmpc 0.3", FutureWarning, stacklevel=stacklevel + 1)


def whole_number(name: str, value, minimum: int = 0) -> int:
    """``value`` as an int >= ``minimum`` (integral floats such as 64.0 pass).

    Raises:
        ValueError: not a number, not whole, or below ``minimum``.
    """
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    if not ok or not np.isfinite(value) or int(value) != value or int(value) < minimum:
        raise ValueError(f"{name} must be a whole number >= {minimum}, got {value!r}")
    return int(value)


class GoalEnv(gym.Env):
    """Base class for wmpc goal-reaching tasks (see the module docstring for the contract).

    Subclasses implement the hooks below; the base class does seeding, action repeat, goal
    rendering without disturbing the episode, and the info dicts.

    Hooks:
        _sample_episode(rng) -> (start_state, goal_state)
        _set_state(state); _get_state() -> state
        _apply_action(action)  (one simulator step)
        _render() -> uint8 (H, W, 3) of the current state at ``image_size``
        _proprio() -> float32 (P,)
        goal_distance(state, goal_state) -> float; success_threshold: float
        _apply_factors(factors)  (only for envs with a ``FACTORS`` table: set the drawn factors;
        called at reset before the start and goal are sampled, never with ``variation="none"``)
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}
    success_threshold: float = 0.0
    FACTORS: dict[str, Factor] = {}  # name -> Factor(kind, train range, test range); see envs.variation

    def __init__(self, image_size: int = 64, action_repeat: int = 1, render_mode: str | None = "rgb_array",
                 frameskip: int | None = None, variation: str | dict | None = "none"):
        self.image_size = whole_number("image_size", image_size, minimum=1)
        if frameskip is not None:  # wmpc 0.1's name; works until wmpc 0.3
            warn_frameskip_renamed(stacklevel=3)
            action_repeat = frameskip
        self.action_repeat = whole_number("action_repeat", action_repeat, minimum=1)
        self.render_mode = render_mode
        self._goal_state: np.ndarray | None = None
        self._goal_image: np.ndarray | None = None
        self._goal_proprio: np.ndarray | None = None
        self.variation, self.variation_ranges = resolve_variation(variation, self.FACTORS)
        self._factor_rng: np.random.Generator | None = None
        self.factors: dict = {}  # the factors drawn at the last reset

    # --- hooks ------------------------------------------------------------------------
    def _sample_episode(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def _set_state(self, state: np.ndarray) -> None:
        raise NotImplementedError

    def _get_state(self) -> np.ndarray:
        raise NotImplementedError

    def _apply_action(self, action: np.ndarray) -> None:
        raise NotImplementedError

    def _render(self) -> np.ndarray:
        raise NotImplementedError

    def _proprio(self) -> np.ndarray:
        raise NotImplementedError

    def goal_distance(self, state: np.ndarray, goal_state: np.ndarray) -> float:
        raise NotImplementedError

    def _apply_factors(self, factors: dict) -> None:
        raise NotImplementedError

    # --- public helpers ---------------------------------------------------------------
    def get_state(self) -> np.ndarray:
        return np.array(self._get_state(), dtype=np.float64)

    def set_state(self, state: np.ndarray) -> None:
        self._set_state(np.asarray(state, dtype=np.float64))

    def variation_spec(self) -> dict:
        """The variation in use, plainly: ``{"split": ..., "factors": {name: {"kind", "range"}}}``."""
        return describe(self.variation, self.variation_ranges, self.FACTORS)

    def render_state(self, state: np.ndarray) -> np.ndarray:
        """Render an arbitrary state without disturbing the running episode."""
        saved = self.get_state()
        try:
            self._set_state(np.asarray(state, dtype=np.float64))
            return self._render().copy()
        finally:
            self._set_state(saved)

    def is_success(self, state: np.ndarray | None = None) -> bool:
        state = self.get_state() if state is None else state
        return bool(self.goal_distance(state, self._goal_state) <= self.success_threshold)

    def _obs(self) -> dict:
        return {"pixels": self._render(), "proprio": np.asarray(self._proprio(), dtype=np.float32)}

    def _info(self) -> dict:
        state = self.get_state()
        dist = float(self.goal_distance(state, self._goal_state))
        return {"state": state, "goal_state": self._goal_state.copy(), "goal_image": self._goal_image.copy(),
                "goal_proprio": self._goal_proprio.copy(), "distance": dist,
                "is_success": bool(dist <= self.success_threshold),
                "factors": {k: (list(v) if isinstance(v, list) else v) for k, v in self.factors.items()}}

    # --- gymnasium API ----------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        options = options or {}
        if seed is not None or self._factor_rng is None:
            self._factor_rng = factor_rng(seed)
        if self.variation_ranges:
            self.factors = sample_factors(self.variation_ranges, self.FACTORS, self._factor_rng)
            self._apply_factors(self.factors)
        start, goal = self._sample_episode(self.np_random)
        if "start_state" in options:
            start = np.asarray(options["start_state"], dtype=np.float64)
        if "goal_state" in options:
            goal = np.asarray(options["goal_state"], dtype=np.float64)
        self._goal_state = np.asarray(goal, dtype=np.float64)
        self._goal_image = self.render_state(self._goal_state)
        self._set_state(self._goal_state)
        self._goal_proprio = np.array(self._proprio(), dtype=np.float32)  # (P,)
        self._set_state(np.asarray(start, dtype=np.float64))
        return self._obs(), self._info()

    def step(self, action):
        if self._goal_state is None:
            raise RuntimeError("call reset() before step()")
        action = np.asarray(action, dtype=np.float32)
        if action.shape != self.action_space.shape:
            raise ValueError(f"action must have shape {self.action_space.shape}, got {action.shape}")
        if not np.all(np.isfinite(action)):
            raise ValueError("action contains NaN or inf")
        action = np.clip(action, self.action_space.low, self.action_space.high)
        for _ in range(self.action_repeat):
            self._apply_action(action)
        info = self._info()
        reward = -info["distance"]
        return self._obs(), reward, False, False, info

    def render(self):
        return self._render()

    def _pixel_space(self) -> spaces.Box:
        return spaces.Box(0, 255, (self.image_size, self.image_size, 3), np.uint8)
