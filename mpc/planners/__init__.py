"""Planners behind one interface: ``make_planner(name, action_space=Box, horizon=H, **options)``.

Registered: ``cem``, ``gd``, ``gd_adam`` (gd preset), ``mppi``, ``icem``, ``cem_gd``. Each file in this
package registers its class with :func:`register_planner`. A user planner registers the same way::

    @register_planner("mine")
    class Mine(Planner):
        def __init__(self, action_space, horizon, seed=0, device=None, *, iterations=10): ...
        def _optimize(self, run, init): ...

Options are the keyword arguments of the class ``__init__`` (after ``action_space, horizon, seed,
device``); an unknown option is an error, never silently dropped. Configs ``configs/planner/<name>.yaml``
hold ``name``, ``horizon``, ``seed`` and the options; see :func:`make_planner_from_config`.
"""
from __future__ import annotations

import difflib
import fnmatch
import inspect
import warnings
from typing import Any, Callable, Mapping

from .base import Callback, CostFn, Planner, PlanResult, Run

__all__ = ["Planner", "PlanResult", "Run", "CostFn", "Callback", "make_planner", "make_planner_from_config",
           "list_planners", "register_planner", "planner_options"]

_REGISTRY: dict[str, tuple[Callable[..., Planner], dict[str, Any]]] = {}
_BASE_ARGS = ("action_space", "horizon", "seed", "device")
# option names of wmpc 0.1 -> their names now; accepted with a FutureWarning until wmpc 0.3
RENAMED_OPTIONS = {"topk": "elites", "var_scale": "init_std", "alpha": "momentum"}


def register_planner(name: str, **preset: Any):
    """Decorator: record a planner class (or builder) under ``name``, optionally with preset options.

    Args:
        name: registry name.
        **preset: option defaults for this name (e.g. ``gd_adam`` = ``gd`` with Adam options).

    Raises:
        ValueError: the name is taken.
    """
    def wrap(cls):
        if name in _REGISTRY:
            raise ValueError(f"planner {name!r} is already registered")
        _REGISTRY[name] = (cls, dict(preset))
        return cls
    return wrap


def list_planners(pattern: str = "*") -> list[str]:
    """Registered planner names matching a shell-style ``pattern``."""
    return sorted(n for n in _REGISTRY if fnmatch.fnmatch(n, pattern))


def _check_name(name: str) -> None:
    if name not in _REGISTRY:
        close = difflib.get_close_matches(str(name), list(_REGISTRY), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown planner {name!r}.{hint} Known planners: {', '.join(list_planners())}")


def planner_options(name: str) -> dict[str, Any]:
    """The options of planner ``name`` with their defaults (preset applied)."""
    _check_name(name)
    cls, preset = _REGISTRY[name]
    params = inspect.signature(cls).parameters
    opts = {k: p.default for k, p in params.items()
            if k not in _BASE_ARGS and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}
    return {**opts, **preset}


def _renamed(name: str, options: dict[str, Any], known: dict[str, Any]) -> dict[str, Any]:
    """Map old option names (:data:`RENAMED_OPTIONS`) onto today's, with a FutureWarning."""
    out = dict(options)
    for old, new in RENAMED_OPTIONS.items():
        if old in out and old not in known and new in known:
            # an old name is the user's own setting (a config written for wmpc 0.1 merged over
            # today's defaults): it wins over the new name's value
            warnings.warn(f"planner option {old!r} is now called {new!r} (same meaning); the old name "
                          "works until wmpc 0.3", FutureWarning, stacklevel=3)
            out[new] = out.pop(old)
    return out


def make_planner(name: str, action_space, horizon: int = 5, seed: int = 0, device=None,
                 **options: Any) -> Planner:
    """Build a planner by name.

    Args:
        name: a registered name (see :func:`list_planners`).
        action_space: gymnasium ``Box`` with (A,) or (H, A) bounds.
        horizon: H, planned steps.
        seed: base seed (problem ``b`` of a batch uses ``seed + b``).
        device: torch device of candidates (default: ``init``'s device, else CPU).
        **options: planner options (see :func:`planner_options`).

    Returns:
        a :class:`Planner`.

    Raises:
        ValueError: unknown name or unknown option (the message lists the valid ones), bad values.
    """
    _check_name(name)
    known = planner_options(name)
    options = _renamed(name, options, known)
    unknown = [k for k in options if k not in known]
    if unknown:
        hints = []
        for k in unknown:
            close = difflib.get_close_matches(k, list(known), n=1)
            hints.append(f"{k!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise ValueError(f"unknown option(s) for planner {name!r}: {', '.join(hints)}. "
                         f"Valid options: {', '.join(sorted(known))}")
    cls, preset = _REGISTRY[name]
    return cls(action_space, horizon, seed=seed, device=device, **{**preset, **options})


def make_planner_from_config(cfg: Mapping[str, Any], action_space, horizon: int | None = None,
                             device=None, seed: int | None = None) -> Planner:
    """Build a planner from a ``configs/planner/<name>.yaml`` mapping (dict or DictConfig).

    Args:
        cfg: keys ``name`` (required), optional ``horizon`` and ``seed``, and planner options.
        action_space: gymnasium ``Box``.
        horizon: overrides ``cfg.horizon`` when given.
        device: torch device.
        seed: overrides ``cfg.seed`` when given.

    Raises:
        ValueError: missing ``name``, unknown planner or option.
    """
    cfg = dict(cfg.items()) if not isinstance(cfg, dict) else dict(cfg)
    from mpc._config import to_plain

    cfg = {k: to_plain(v) for k, v in cfg.items()}
    if "name" not in cfg:
        raise ValueError(f"planner config needs a 'name' key (one of {', '.join(list_planners())}); got keys {sorted(cfg)}")
    name = cfg.pop("name")
    cfg_h, cfg_seed = cfg.pop("horizon", 5), cfg.pop("seed", 0)
    return make_planner(name, action_space, horizon=horizon if horizon is not None else cfg_h,
                        seed=seed if seed is not None else cfg_seed, device=device, **cfg)


# registration happens on import of each algorithm file (leaf-first order)
from . import cem, gd, mppi, icem, cem_gd  # noqa: E402,F401
