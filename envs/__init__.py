"""Goal-reaching environments: ``make_env(name, **options)`` and ``list_envs(tag=None)``.

Each env is also registered with gymnasium as ``wmpc/<Name>-v0``. Any gymnasium id works where
wmpc takes ``env=``: ``"my_pkg.envs:MyTask-v0"`` imports ``my_pkg.envs`` first (gymnasium's
convention), so users bring their own robots and simulators as long as the observation follows the
contract in :mod:`envs.base`.

Envs carry tags that name subsets (see :data:`TAGS`): ``list_envs("quick")`` gives the envs of the
CPU suite, ``list_envs("mujoco")`` the ones that need MuJoCo and a GL context.
"""
from __future__ import annotations

import difflib
import os

try:  # torch's compiler stack (triton) must load before MuJoCo's GL libraries (dm_control): loaded
    import torch._dynamo  # noqa: F401  after them, its first import (an optimizer's) dies with SIGSEGV
except ImportError:  # pragma: no cover - torch is a dependency, but the envs also run without it
    pass
import gymnasium as gym

from .base import GoalEnv, warn_frameskip_renamed

os.environ.setdefault("MUJOCO_GL", "egl")

__all__ = ["GoalEnv", "make_env", "list_envs", "env_factors", "proprio_periods", "ENVS", "TAGS"]

# name -> (entry point "module:Class", gymnasium id, tags)
ENVS: dict[str, tuple[str, str, tuple[str, ...]]] = {}
# tag -> the subset it names
TAGS = {
    "quick": "small and fast to render: the CPU suite (configs/bench/quick.yaml)",
    "dino_wm": "the DINO-WM protocol's envs (configs/bench/dino_wm.yaml)",
    "mujoco": "simulated with MuJoCo: needs a GL context (MUJOCO_GL=egl or osmesa) to render",
}


def _register(name: str, entry_point: str, gym_id: str, tags: tuple[str, ...] = ()) -> None:
    unknown = set(tags) - set(TAGS)
    if unknown:
        raise ValueError(f"env {name!r}: unknown tags {sorted(unknown)}; known tags: {sorted(TAGS)}")
    ENVS[name] = (entry_point, gym_id, tags)
    if gym_id not in gym.registry:
        gym.register(id=gym_id, entry_point=entry_point)


def list_envs(tag: str | None = None) -> list[str]:
    """Names of wmpc envs, sorted; with ``tag``, only those carrying it.

    Args:
        tag: one of :data:`TAGS` (``"quick"``, ``"dino_wm"``, ``"mujoco"``), or None for all.

    Raises:
        ValueError: an unknown tag (with the closest known one).
    """
    if tag is not None and tag not in TAGS:
        close = difflib.get_close_matches(tag, list(TAGS), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown env tag {tag!r}.{hint} Known tags: {', '.join(sorted(TAGS))}")
    return sorted(n for n, (_, _, tags) in ENVS.items() if tag is None or tag in tags)


def env_factors(name: str) -> dict:
    """The ``FACTORS`` table (:mod:`envs.variation`) of a wmpc env or a gymnasium id, without
    building the env; ``{}`` for an env that declares none.

    Raises:
        ValueError: an unknown name.
    """
    import importlib

    if name in ENVS:
        mod, cls = ENVS[name][0].split(":")
        return dict(getattr(getattr(importlib.import_module(mod), cls), "FACTORS", {}))
    _, factory = _gym_factory(name)
    return dict(getattr(factory, "FACTORS", {}))


def proprio_periods(name: str, proprio_dim: int) -> list | None:
    """The ``PROPRIO_PERIODS`` of a wmpc env or a gymnasium id (per proprio value: None, or the
    period of a value that wraps, like a freely turning joint's angle), without building the env;
    None when the env declares none or declares them for another proprio size.

    Raises:
        ValueError: an unknown name.
    """
    import importlib

    if name in ENVS:
        mod, cls = ENVS[name][0].split(":")
        periods = getattr(getattr(importlib.import_module(mod), cls), "PROPRIO_PERIODS", None)
    else:
        periods = getattr(_gym_factory(name)[1], "PROPRIO_PERIODS", None)
    return list(periods) if periods is not None and len(periods) == int(proprio_dim) else None


def _gym_factory(env_id: str):
    """The constructor behind a gymnasium id (``"module:Id-v0"`` imports ``module`` first).

    Raises:
        ValueError: the module cannot be imported or the id is not registered.
    """
    import importlib

    from gymnasium.envs.registration import load_env_creator

    module, _, short = env_id.rpartition(":")
    try:
        if module:
            importlib.import_module(module)
        spec = gym.spec(short)
    except (gym.error.Error, ModuleNotFoundError, ImportError) as e:
        close = difflib.get_close_matches(env_id, list(ENVS), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown env {env_id!r}.{hint} wmpc envs: {', '.join(list_envs())}; "
                         f"or pass a gymnasium id such as 'my_pkg.envs:MyTask-v0' ({e})") from e
    entry = spec.entry_point
    return short, (entry if callable(entry) else load_env_creator(entry))


def _renamed_options(options: dict) -> dict:
    """wmpc 0.1's ``frameskip`` env option is ``action_repeat`` now (an explicit ``action_repeat`` wins)."""
    if "frameskip" in options:
        warn_frameskip_renamed(stacklevel=3)
        options.setdefault("action_repeat", options.pop("frameskip"))
    return options


def make_env(name: str, **options) -> gym.Env:
    """Create a wmpc env by name, or any gymnasium id (``"module:Id-v0"`` imports ``module``).

    A wmpc env takes every option. A gymnasium env gets only the options given here (``None``
    values dropped: its own defaults hold); ``image_size`` and ``action_repeat`` go to its constructor
    when it declares them and are applied by wrappers otherwise (:mod:`envs.wrappers`: resized
    frames, repeated actions), and the goal image of ``reset`` is kept in every step's info.

    Raises:
        ValueError: an unknown name (with the closest known one).
        TypeError: an option the env's constructor does not take.
    """
    options = _renamed_options({k: v for k, v in options.items() if v is not None})
    if name in ENVS:
        entry, _, _ = ENVS[name]
        mod, cls = entry.split(":")
        import importlib
        return getattr(importlib.import_module(mod), cls)(**options)
    import functools

    from .wrappers import fit_user_env

    short, factory = _gym_factory(name)
    return fit_user_env((factory, functools.partial(gym.make, short)), options)


_register("pointmass", "envs.pointmass:PointMassEnv", "wmpc/PointMass-v0", ("quick", "dino_wm", "mujoco"))
_register("reacher", "envs.reacher:ReacherEnv", "wmpc/Reacher-v0", ("dino_wm", "mujoco"))
_register("wall", "envs.wall:WallEnv", "wmpc/Wall-v0", ("quick", "dino_wm"))
_register("pusht", "envs.pusht:PushTEnv", "wmpc/PushT-v0", ("dino_wm",))
_register("pointmaze", "envs.pointmaze:PointMazeEnv", "wmpc/PointMaze-v0", ("dino_wm", "mujoco"))
