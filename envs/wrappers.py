"""Gymnasium wrappers that fit a user's own env to wmpc's contract without touching its constructor.

A user env needs only the observation contract of :mod:`envs.base` (``{"pixels": uint8 (H, W, 3),
"proprio": (P,)}`` and a goal image in ``info``). What wmpc would otherwise pass as constructor
options, it applies from outside when the constructor does not declare them:

- :class:`ResizePixels`: ``image_size`` -> frames (and goal images) resized to a square size;
- :class:`RepeatAction`: ``action_repeat`` -> each action repeated ``k`` simulator steps;
- :class:`GoalInfo`: a goal image given only in ``reset``'s info is carried into every ``step``'s
  info, and ``distance`` comes from ``state``/``goal_state`` when the env does not report it
  (``None`` when neither exists: reports say "n/a").

:func:`fit_user_env` applies what is needed; ``envs.make_env`` calls it for every gymnasium id.
"""
from __future__ import annotations

import inspect

import gymnasium as gym
import numpy as np
from gymnasium import spaces

__all__ = ["ResizePixels", "RepeatAction", "GoalInfo", "fit_user_env", "accepts_option"]


def _resize(image: np.ndarray, size: int) -> np.ndarray:
    """uint8 (H, W, 3) -> uint8 (size, size, 3), antialiased (PIL's bilinear filter)."""
    from PIL import Image

    image = np.asarray(image)
    if image.shape[:2] == (size, size):
        return image
    return np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.BILINEAR))


class ResizePixels(gym.Wrapper):
    """Resize ``obs["pixels"]`` and ``info["goal_image"]`` to ``(size, size, 3)``.

    Args:
        env: an env following the observation contract.
        size: the square frame side in pixels.
    """

    def __init__(self, env: gym.Env, size: int):
        super().__init__(env)
        self.size = int(size)
        obs_space = env.observation_space
        if isinstance(obs_space, spaces.Dict) and "pixels" in obs_space.spaces:
            self.observation_space = spaces.Dict({
                **obs_space.spaces, "pixels": spaces.Box(0, 255, (self.size, self.size, 3), np.uint8)})

    def _fit(self, obs, info):
        if isinstance(obs, dict) and "pixels" in obs:
            obs = {**obs, "pixels": _resize(obs["pixels"], self.size)}
        if info.get("goal_image") is not None:
            info = {**info, "goal_image": _resize(info["goal_image"], self.size)}
        return obs, info

    def reset(self, **kwargs):
        return self._fit(*self.env.reset(**kwargs))

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        obs, info = self._fit(obs, info)
        return obs, reward, terminated, truncated, info


class RepeatAction(gym.Wrapper):
    """Apply each action ``k`` times (summing rewards; stops early when the episode ends).

    Args:
        env: any env.
        k: simulator steps per action (>= 1).
    """

    def __init__(self, env: gym.Env, k: int):
        super().__init__(env)
        if int(k) < 1:
            raise ValueError(f"action_repeat must be >= 1, got {k}")
        self.k = int(k)

    def step(self, action):
        total = 0.0
        for _ in range(self.k):
            obs, reward, terminated, truncated, info = self.env.step(action)
            total += float(reward)
            if terminated or truncated:
                break
        return obs, total, terminated, truncated, info


class GoalInfo(gym.Wrapper):
    """Keep ``goal_image`` (and ``goal_state``) from ``reset`` in every ``step``'s info; fill ``distance``.

    ``distance`` is the env's own when it reports one; else the Euclidean distance between
    ``state`` and ``goal_state`` when both exist; else ``None``. ``is_success`` is the env's own,
    else its ``info["success"]`` (gymnasium-robotics' key), else ``terminated`` (an episode that
    ends by itself ended at the goal), else False.
    """

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self._goal: dict = {}

    def _fill(self, info: dict, terminated: bool = False) -> dict:
        info = dict(info)
        for key in ("goal_image", "goal_state"):
            if info.get(key) is None and key in self._goal:
                info[key] = self._goal[key]
        if info.get("distance") is None:
            state, goal = info.get("state"), info.get("goal_state")
            dist = None
            if state is not None and goal is not None:
                s, g = np.asarray(state, np.float64).ravel(), np.asarray(goal, np.float64).ravel()
                if s.shape == g.shape:
                    dist = float(np.linalg.norm(s - g))
            info["distance"] = dist
        if info.get("is_success") is None:
            info["is_success"] = bool(info.get("success", terminated))
        return info

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        self._goal = {k: info[k] for k in ("goal_image", "goal_state") if info.get(k) is not None}
        return obs, self._fill(info)

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        return obs, reward, terminated, truncated, self._fill(info, bool(terminated))


def accepts_option(factory, name: str) -> bool:
    """Whether ``factory`` (a class or function) declares the keyword ``name`` (or ``**kwargs``)."""
    try:
        params = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):  # builtins without a signature: do not pass what we cannot check
        return False
    return any(p.name == name or p.kind is p.VAR_KEYWORD for p in params)


def fit_user_env(make, options: dict) -> gym.Env:
    """Build a user env through ``make(**kwargs)`` and fit it to wmpc's contract.

    ``image_size`` and ``action_repeat`` in ``options`` go to the constructor when ``factory``
    declares them (``action_repeat`` also under the name ``frameskip``, which many gymnasium envs
    use for it), and are applied by :class:`ResizePixels` / :class:`RepeatAction` otherwise; every
    other option goes to the constructor as given. :class:`GoalInfo` is always applied.

    Args:
        make: ``(factory, build)``: the env's constructor (for its signature) and a callable that
            builds the env from keyword options (e.g. ``functools.partial(gym.make, id)``).
        options: the options the user gave (``None`` values already dropped).
    """
    factory, build = make
    options = dict(options)
    size, skip = options.pop("image_size", None), options.pop("action_repeat", None)
    if size is not None and accepts_option(factory, "image_size"):
        options["image_size"], size = size, None
    for name in ("action_repeat", "frameskip"):
        if skip is not None and accepts_option(factory, name):
            options[name], skip = skip, None
    env = build(**options)
    if skip is not None and int(skip) != 1:
        env = RepeatAction(env, int(skip))
    if size is not None:
        env = ResizePixels(env, int(size))
    return GoalInfo(env)
