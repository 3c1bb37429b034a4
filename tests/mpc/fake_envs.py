"""A tiny numpy-rendered goal-reaching env for data tests.

``FakeGoalEnv``: a point in [-1, 1]^2 moved by ``0.1 * action`` per simulator step; the frame is a
flat background with a coloured square at the point. Registered with gymnasium as ``FakeGoal-v0``
so ``make_env("tests.mpc.fake_envs:FakeGoal-v0")`` exercises the user-gymnasium-id path.
"""
from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from envs.base import GoalEnv


class FakeGoalEnv(GoalEnv):
    """State (x, y) in [-1, 1]^2; action (dx, dy) in [-1, 1]^2; proprio = state (float32)."""

    success_threshold = 0.05

    def __init__(self, image_size: int = 16, action_repeat: int = 1, render_mode: str | None = "rgb_array"):
        super().__init__(image_size=image_size, action_repeat=action_repeat, render_mode=render_mode)
        self.action_space = spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.observation_space = spaces.Dict({
            "pixels": self._pixel_space(),
            "proprio": spaces.Box(-1.0, 1.0, (2,), np.float32)})
        self._state = np.zeros(2)

    def _sample_episode(self, rng):
        return rng.uniform(-0.8, 0.8, 2), rng.uniform(-0.8, 0.8, 2)

    def _set_state(self, state):
        self._state = np.array(state, dtype=np.float64)

    def _get_state(self):
        return self._state.copy()

    def _apply_action(self, action):
        self._state = np.clip(self._state + 0.1 * np.asarray(action, np.float64), -1.0, 1.0)

    def _render(self):
        s = self.image_size
        img = np.full((s, s, 3), 30, np.uint8)
        ij = np.clip(((self._state + 1.0) / 2.0 * (s - 1)).round().astype(int), 0, s - 1)
        img[max(ij[1] - 1, 0):ij[1] + 2, max(ij[0] - 1, 0):ij[0] + 2] = (250, 120, 20)
        return img

    def _proprio(self):
        return self._state.astype(np.float32)

    def goal_distance(self, state, goal_state):
        return float(np.linalg.norm(np.asarray(state)[:2] - np.asarray(goal_state)[:2]))


if "FakeGoal-v0" not in gym.registry:
    gym.register(id="FakeGoal-v0", entry_point=FakeGoalEnv)
