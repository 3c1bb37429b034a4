"""``check(env)``: gymnasium's ``check_env`` plus the wmpc goal-reaching contract.

Usable on any env built on :class:`envs.base.GoalEnv` (and, for the observation and info part,
on any env that follows the contract in :mod:`envs.base`)::

    from envs import make_env
    from envs.checks import check
    check(make_env("pointmass"))
"""
from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
from gymnasium.utils.env_checker import check_env

__all__ = ["check", "EnvContractError"]

_INFO_KEYS = ("goal_image", "goal_state", "state", "distance", "is_success")


class EnvContractError(AssertionError):
    """An env breaks the wmpc goal-reaching contract (the message says which part)."""


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise EnvContractError(message)


def _check_obs_info(env: gym.Env, obs: dict, info: dict, where: str) -> None:
    _require(isinstance(obs, dict) and {"pixels", "proprio"} <= set(obs),
             f"{where}: obs must be a dict with 'pixels' and 'proprio', got {type(obs).__name__} "
             f"{sorted(obs) if isinstance(obs, dict) else ''}")
    pix, prop = obs["pixels"], obs["proprio"]
    _require(isinstance(pix, np.ndarray) and pix.dtype == np.uint8 and pix.ndim == 3 and pix.shape[2] == 3,
             f"{where}: pixels must be uint8 (H, W, 3), got {getattr(pix, 'dtype', type(pix))} "
             f"{getattr(pix, 'shape', '')}")
    size = getattr(env.unwrapped, "image_size", None)
    if size is not None:
        _require(pix.shape[:2] == (size, size), f"{where}: pixels are {pix.shape[:2]}, expected image_size "
                 f"{(size, size)}")
    _require(isinstance(prop, np.ndarray) and prop.dtype == np.float32 and prop.ndim == 1,
             f"{where}: proprio must be float32 (P,), got {getattr(prop, 'dtype', type(prop))} "
             f"{getattr(prop, 'shape', '')}")
    _require(bool(np.all(np.isfinite(prop))), f"{where}: proprio has NaN/inf: {prop}")
    _require(env.observation_space.contains(obs), f"{where}: obs is outside observation_space")
    missing = [k for k in _INFO_KEYS if k not in info]
    _require(not missing, f"{where}: info lacks {missing}; the contract needs {list(_INFO_KEYS)}")
    _require(info["goal_image"].dtype == np.uint8 and info["goal_image"].shape == pix.shape,
             f"{where}: goal_image must be uint8 {pix.shape}, got {info['goal_image'].dtype} "
             f"{info['goal_image'].shape}")
    for key in ("state", "goal_state"):
        arr = info[key]
        _require(isinstance(arr, np.ndarray) and arr.dtype == np.float64 and arr.ndim == 1,
                 f"{where}: info[{key!r}] must be float64 (S,), got {getattr(arr, 'dtype', type(arr))}")
    if "goal_proprio" in info:  # optional for other packages' envs; every wmpc env gives it
        gp = info["goal_proprio"]
        _require(isinstance(gp, np.ndarray) and gp.dtype == np.float32 and gp.shape == prop.shape
                 and bool(np.all(np.isfinite(gp))),
                 f"{where}: info['goal_proprio'] must be finite float32 {prop.shape} like proprio, got "
                 f"{getattr(gp, 'dtype', type(gp))} {getattr(gp, 'shape', '')}")
    _require(isinstance(info["is_success"], bool), f"{where}: info['is_success'] must be a bool")
    _require(np.isfinite(info["distance"]), f"{where}: info['distance'] is not finite")


def _actions(env: gym.Env, n: int, seed: int) -> list[np.ndarray]:
    space = env.action_space
    space.seed(seed)
    return [np.asarray(space.sample()) for _ in range(n)]


def _check_goal_env(env: gym.Env, seed: int, steps: int) -> None:
    u = env.unwrapped
    # success is judged from the true state, with the env's own distance and threshold
    obs, info = env.reset(seed=seed)
    for t, action in enumerate(_actions(env, steps, seed)):
        obs, _, _, _, info = env.step(action)
        _check_obs_info(env, obs, info, f"step {t}")
        dist = u.goal_distance(info["state"], info["goal_state"])
        _require(np.isclose(dist, info["distance"]), f"step {t}: info['distance'] {info['distance']} "
                 f"!= goal_distance(state, goal_state) {dist}")
        _require(info["is_success"] == bool(dist <= u.success_threshold),
                 f"step {t}: is_success disagrees with goal_distance <= success_threshold")
        _require(np.array_equal(u.render_state(info["state"]), obs["pixels"]),
                 f"step {t}: render_state(info['state']) differs from obs['pixels']: the image must be "
                 "a function of the true state")

    # the goal image is the rendered goal state, and starting at the goal is a success
    obs, info = env.reset(seed=seed)
    _require(np.array_equal(info["goal_image"], u.render_state(info["goal_state"])),
             "goal_image differs from render_state(goal_state)")
    _require(not np.array_equal(info["state"], info["goal_state"]),
             "reset sampled a start equal to the goal; goals must be away from the start")
    obs, info = env.reset(seed=seed, options={"start_state": info["goal_state"]})
    _require(info["is_success"] and info["distance"] <= u.success_threshold,
             f"starting at the goal state is not a success (distance {info['distance']})")
    _require(np.array_equal(obs["pixels"], info["goal_image"]),
             "obs at the goal state differs from the goal image")
    if "goal_proprio" in info:
        _require(np.allclose(obs["proprio"], info["goal_proprio"]),
                 f"obs proprio at the goal state {obs['proprio']} differs from info['goal_proprio'] "
                 f"{info['goal_proprio']}")

    # rendering other states mid-episode must not disturb the episode
    actions = _actions(env, steps, seed + 1)
    env.reset(seed=seed)
    clean = [env.step(a)[0] for a in actions]
    _, info = env.reset(seed=seed)
    goal, start = info["goal_state"], info["state"]
    disturbed = []
    for a in actions:
        before = u.get_state()
        u.render_state(goal)
        u.render_state(start)
        _require(np.array_equal(u.get_state(), before), "render_state changed the episode's state")
        disturbed.append(env.step(a)[0])
    for t, (o1, o2) in enumerate(zip(clean, disturbed)):
        _require(np.array_equal(o1["pixels"], o2["pixels"]) and np.array_equal(o1["proprio"], o2["proprio"]),
                 f"step {t}: rendering the goal mid-episode changed the trajectory")

    # the scripted oracle gives valid actions
    if hasattr(u, "oracle_action"):
        a = np.asarray(u.oracle_action())
        _require(a.shape == env.action_space.shape and env.action_space.contains(a.astype(env.action_space.dtype)),
                 f"oracle_action() gave {a.shape} {a.dtype}, not an action in {env.action_space}")


def check(env: gym.Env, seed: int = 0, steps: int = 5, gym_checks: bool = True) -> None:
    """Check ``env`` against gymnasium's API and the wmpc goal-reaching contract.

    Checks: gymnasium's ``check_env``; obs/info dtypes and shapes; the same seed gives the same
    first obs, state, goal state and goal image (another seed a different goal); actions of the
    wrong shape or with NaN raise ``ValueError``. For :class:`envs.base.GoalEnv` envs also: the goal
    image equals ``render_state(goal_state)``; frames are a function of the true state;
    ``is_success`` and ``distance`` follow ``goal_distance`` and ``success_threshold``; starting at
    the goal is a success; rendering other states mid-episode leaves the trajectory unchanged;
    ``oracle_action()`` returns a valid action.

    Args:
        env: the env (a ``gym.make`` wrapper or a bare env); it is reset and stepped.
        seed: the seed used for resets and actions.
        steps: steps taken per sub-check.
        gym_checks: also run gymnasium's ``check_env`` on ``env.unwrapped``.

    Raises:
        EnvContractError: the first broken rule, with what was expected.
    """
    if gym_checks:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # advisory warnings (e.g. no spec for alternative render modes)
            check_env(env.unwrapped, skip_render_check=False, skip_close_check=True)

    obs1, info1 = env.reset(seed=seed)
    _check_obs_info(env, obs1, info1, "reset")
    obs2, info2 = env.reset(seed=seed)
    for key in ("pixels", "proprio"):
        _require(np.array_equal(obs1[key], obs2[key]), f"reset(seed={seed}) twice gave different obs[{key!r}]")
    for key in ("state", "goal_state", "goal_image") + (("goal_proprio",) if "goal_proprio" in info1 else ()):
        _require(np.array_equal(info1[key], info2[key]), f"reset(seed={seed}) twice gave different info[{key!r}]")
    others = [env.reset(seed=seed + k)[1]["goal_state"] for k in (1, 2, 3)]
    _require(any(not np.array_equal(g, info1["goal_state"]) for g in others),
             "different seeds gave the same goal: goals must be drawn from the seeded generator")

    env.reset(seed=seed)
    shape = env.action_space.shape
    for bad, why in ((np.zeros((*shape, 2), np.float32), "the wrong shape"),
                     (np.full(shape, np.nan, np.float32), "NaN")):
        try:
            env.step(bad)
        except ValueError:
            pass
        else:
            raise EnvContractError(f"step() accepted an action with {why}; it must raise ValueError")

    if hasattr(env.unwrapped, "render_state"):
        _check_goal_env(env, seed, steps)
