"""A user's own goal env, written without wmpc's base class, registered with gymnasium on import.

``make_env("tests.envs.user_env:UserDot-v0")`` imports this module (gymnasium's ``module:Id``
convention) and builds :class:`UserDotEnv` through ``gym.make``.
"""
from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium import spaces


class UserDotEnv(gym.Env):
    """A dot on a 1-D line drawn as a bright column; the goal is another position."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(self, image_size: int = 8, render_mode: str | None = "rgb_array"):
        self.image_size, self.render_mode = image_size, render_mode
        self.action_space = spaces.Box(-1.0, 1.0, (1,), np.float32)
        self.observation_space = spaces.Dict({
            "pixels": spaces.Box(0, 255, (image_size, image_size, 3), np.uint8),
            "proprio": spaces.Box(-1.0, 1.0, (1,), np.float32)})
        self._x, self._goal = 0.0, 0.5

    def _image(self, x: float) -> np.ndarray:
        img = np.zeros((self.image_size, self.image_size, 3), np.uint8)
        img[:, int((x + 1) / 2 * (self.image_size - 1))] = 255
        return img

    def _obs_info(self):
        obs = {"pixels": self._image(self._x), "proprio": np.array([self._x], np.float32)}
        dist = abs(self._x - self._goal)
        info = {"goal_image": self._image(self._goal), "goal_state": np.array([self._goal]),
                "state": np.array([self._x]), "distance": dist, "is_success": bool(dist < 0.1)}
        return obs, info

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._x, self._goal = self.np_random.uniform(-1, 1, 2)
        return self._obs_info()

    def step(self, action):
        action = np.asarray(action, dtype=np.float32)
        if action.shape != (1,) or not np.all(np.isfinite(action)):
            raise ValueError(f"action must be a finite array of shape (1,), got {action}")
        self._x = float(np.clip(self._x + 0.2 * action[0], -1, 1))
        obs, info = self._obs_info()
        return obs, -info["distance"], False, False, info

    def render(self):
        return self._image(self._x)


if "UserDot-v0" not in gym.registry:
    gym.register(id="UserDot-v0", entry_point=UserDotEnv)
