"""``wmpc eval``: closed-loop goal reaching with a trained world model, or a baseline policy.

``wmpc eval env=<name> checkpoint=<path> planner=<name> episodes=50 steps=50`` (configs/eval.yaml;
``policy=random`` or ``policy=oracle`` runs a baseline through the same loop). Prints one line of
results and writes ``results.json`` and GIFs to ``out`` (see :mod:`mpc.evaluation`).
"""
from __future__ import annotations

from pathlib import Path

from mpc._config import to_plain
from mpc.commands.cli import env_overrides, hydra_command


def _command_line_env_options(cfg) -> dict:
    """``env.<key>=value`` overrides typed on the command line (not the env config's defaults), with
    the values hydra parsed (``'+env.variation={split: train, light: 0.4}'`` gives a dict)."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    out = {}
    for item in HydraConfig.get().overrides.task:
        key, _, value = item.lstrip("+~").partition("=")
        if key.startswith("env.") and key != "env.name":
            out[key[4:]] = to_plain(OmegaConf.select(cfg, key)) if value else None
    return out


def _env_of(cfg) -> tuple[str, dict]:
    """The env to evaluate on and its options.

    With a checkpoint that stores its env (``wmpc train`` writes it), that env and its options are
    used; ``env.<key>=`` on the command line changes an option; ``env=<name>`` must name the same
    env. Without one, ``env=`` is required.

    Raises:
        ValueError: no env to evaluate on, or ``env=`` naming another env than the checkpoint's.
    """
    given = to_plain(cfg.get("env")) or {}
    name = given.pop("name", None)
    stored = None
    if cfg.get("checkpoint"):
        from mpc.checkpoint import read_header

        stored = read_header(cfg.checkpoint).get("task") or {}
    if stored and stored.get("env"):
        if name is not None and name != stored["env"]:
            raise ValueError(f"env={name} but the checkpoint {cfg.checkpoint} was trained on env "
                             f"{stored['env']!r}; drop env= (it is read from the checkpoint)")
        options = {**(stored.get("env_options") or {}), **_command_line_env_options(cfg)}
        return stored["env"], options
    if name is None:
        raise ValueError("pass env=<name> (a wmpc env or a gymnasium id): "
                         + ("this checkpoint does not store its env" if cfg.get("checkpoint")
                            else f"policy={cfg.policy} has no checkpoint to read it from"))
    return name, given


def task(cfg):
    """Run :func:`mpc.evaluation.evaluate` with the composed ``eval`` config; returns its result."""
    from mpc.evaluation import EvalSettings, PlannerSettings, evaluate, format_result

    planner_options = to_plain(cfg.planner) if "planner" in cfg else {}
    planner = planner_options.pop("name", "cem")
    planner_options.pop("horizon", None)  # the eval's horizon (default: the planner config's)
    planner_options.pop("seed", None)  # episodes seed their planners from the eval seed
    env_name, env_options = _env_of(cfg)
    settings = EvalSettings(episodes=cfg.episodes, steps=cfg.steps, batch_envs=cfg.batch_envs,
                            seed=cfg.seed, env_options=env_options, videos=cfg.videos)
    planning = PlannerSettings(planner=planner, planner_options=planner_options,
                               objective=cfg.objective, alpha=cfg.alpha,
                               proprio_estimator=cfg.get("proprio_estimator"),
                               proprio_weights=to_plain(cfg.get("proprio_weights")),
                               distance=cfg.get("distance"),
                               risk=float(cfg.get("risk", 0.0)),
                               risk_mode=str(cfg.get("risk_mode", "disagreement")), horizon=cfg.horizon,
                               replan_every=cfg.replan_every,
                               action_bound=float(cfg.get("action_bound", 1.0)))
    r = evaluate(env_name, policy=cfg.policy, checkpoint=cfg.checkpoint, out=cfg.out,
                 device=cfg.device, progress=bool(cfg.get("progress", True)), settings=settings,
                 planning=planning)
    print(format_result(r))
    print(f"results: {Path(cfg.out) / 'results.json'}")
    return r


def main(argv: list[str]) -> int:
    """``wmpc eval [key=value ...]``: see the module docstring and configs/eval.yaml."""
    return hydra_command("eval", task, env_overrides(argv), "wmpc eval")
