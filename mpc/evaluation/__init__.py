"""Evaluation of goal reaching: the closed loop, its policies and its metrics.

- :mod:`mpc.evaluation.evaluate`: :func:`evaluate`, the closed loop over evaluation episodes.
- :mod:`mpc.evaluation.policies`: planner / random / oracle policies behind one ``act``.
- :mod:`mpc.evaluation.metrics`: :func:`wilson_interval`, :class:`EvalResult`, :func:`format_result`.
- :mod:`mpc.evaluation.open_loop`: :func:`open_loop_errors`, a world model's open-loop token error
  against copying the last frame.
"""
from mpc.evaluation.evaluate import EvalSettings, evaluate
from mpc.evaluation.metrics import EvalResult, format_result, wilson_interval
from mpc.evaluation.open_loop import open_loop_errors
from mpc.evaluation.policies import PlannerSettings, make_policy

__all__ = ["evaluate", "EvalSettings", "PlannerSettings", "make_policy", "EvalResult",
           "wilson_interval", "format_result", "open_loop_errors"]
