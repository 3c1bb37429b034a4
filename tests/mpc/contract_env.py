"""A user's env that follows only the observation contract, for the end-to-end CLI test.

Written without anything from wmpc: its constructor takes only ``speed`` (no ``image_size``, no
``action_repeat``), the goal image comes only in ``reset``'s info, and steps report ``state`` and
``goal_state`` but no ``distance``. Success ends the episode (``terminated``), as many gymnasium
goal envs signal it, and is also reported as ``info["success"]``.
Registered as ``Beacon-v0`` when imported (``env=tests.mpc.contract_env:Beacon-v0``).
"""
from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium import spaces

SIZE = 32


def _draw(pos: np.ndarray) -> np.ndarray:
    img = np.full((SIZE, SIZE, 3), 30, np.uint8)
    c = np.round((pos + 1) / 2 * (SIZE - 5)).astype(int)
    img[c[1]:c[1] + 5, c[0]:c[0] + 5] = (250, 200, 40)
    return img


class BeaconEnv(gym.Env):
    """A square on a dark floor, moved by the action; reach the square shown in the goal image."""

    metadata = {"render_modes": ["rgb_array"]}

    def __init__(self, speed: float = 0.15):
        self.speed = float(speed)
        self.action_space = spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.observation_space = spaces.Dict({
            "pixels": spaces.Box(0, 255, (SIZE, SIZE, 3), np.uint8),
            "proprio": spaces.Box(-1.0, 1.0, (2,), np.float32)})
        self._pos = np.zeros(2)
        self._goal = np.zeros(2)

    def _obs(self):
        return {"pixels": _draw(self._pos), "proprio": self._pos.astype(np.float32)}

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._pos = self.np_random.uniform(-0.9, 0.9, 2)
        self._goal = self.np_random.uniform(-0.9, 0.9, 2)
        return self._obs(), {"goal_image": _draw(self._goal), "state": self._pos.copy(),
                             "goal_state": self._goal.copy()}

    def step(self, action):
        action = np.clip(np.asarray(action, np.float64), -1.0, 1.0)
        self._pos = np.clip(self._pos + self.speed * action, -1.0, 1.0)
        success = bool(np.linalg.norm(self._pos - self._goal) < 0.12)
        return self._obs(), float(success), success, False, {"state": self._pos.copy(),
                                                             "goal_state": self._goal.copy(),
                                                             "success": success}


if "Beacon-v0" not in gym.registry:
    gym.register(id="Beacon-v0", entry_point=BeaconEnv)
