"""``wmpc eval``: closed-loop goal reaching with a trained world model, or a baseline policy.

``wmpc eval env=<name> checkpoint=<path> planner=<name> episodes=50 steps=50`` (configs/eval.yaml;
``policy=random`` or ``policy=oracle`` runs a baseline through the same loop). Prints one line of
results and writes ``results.json`` and GIFs to ``out`` (see :mod:`mpc.evaluation`).
"""
from __future__ import annotations

from pathlib import Path

from mpc._config import to_plain
from mpc.commands.cli import env_overrides, hydra_command


def task(cfg):
    """Run :func:`mpc.evaluation.evaluate` with the composed ``eval`` config; returns its result."""
    from mpc.evaluation import EvalSettings, PlannerSettings, evaluate, format_result

    planner_options = to_plain(cfg.planner) if "planner" in cfg else {}
    planner = planner_options.pop("name", "cem")
    planner_options.pop("horizon", None)  # the eval's horizon (default: the planner config's)
    planner_options.pop("seed", None)  # episodes seed their planners from the eval seed
    env_options = to_plain(cfg.env)
    env_name = env_options.pop("name")
    settings = EvalSettings(episodes=cfg.episodes, steps=cfg.steps, batch_envs=cfg.batch_envs,
                            seed=cfg.seed, env_options=env_options, videos=cfg.videos)
    planning = PlannerSettings(planner=planner, planner_options=planner_options,
                               objective=cfg.objective, alpha=cfg.alpha, horizon=cfg.horizon,
                               replan_every=cfg.replan_every)
    r = evaluate(env_name, policy=cfg.policy, checkpoint=cfg.checkpoint, out=cfg.out,
                 device=cfg.device, settings=settings, planning=planning)
    print(format_result(r))
    print(f"results: {Path(cfg.out) / 'results.json'}")
    return r


def main(argv: list[str]) -> int:
    """``wmpc eval [key=value ...]``: see the module docstring and configs/eval.yaml."""
    return hydra_command("eval", task, env_overrides(argv), "wmpc eval")
