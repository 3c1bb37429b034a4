"""wmpc: model-predictive control in the latent space of a world model.

Public face (loaded lazily so ``import mpc`` stays fast)::

    mpc.plan(obs, goal_image, model=..., planner="cem", horizon=5)   # one call
    mpc.WorldModel, mpc.MPCController, mpc.planners.make_planner(...)
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

_LAZY = {
    "WorldModel": "mpc.world_model",
    "MPCController": "mpc.controller",
    "plan": "mpc.controller",
    "planners": "mpc.planners",
    "objectives": "mpc.objectives",
    "data": "mpc.data",
}

__all__ = list(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        mod = importlib.import_module(_LAZY[name])
        value = mod if mod.__name__ == f"mpc.{name}" else getattr(mod, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'mpc' has no attribute {name!r}")
