"""``wmpc eval``: closed-loop goal reaching with a trained world model, or a baseline policy.

Runs ``episodes`` evaluation episodes (seeds ``seed + i``, disjoint from collection seeds by
default), ``batch_envs`` envs at a time with one batched planner call per replan, and reports the
success rate with a 95% Wilson interval, the mean planning time per replan, and the final latent
and true-state distances. Baselines run through the same loop: ``policy=random`` (uniform actions)
and ``policy=oracle`` (the env's scripted controller). Writes ``results.json`` and a side-by-side
GIF (observation | goal | the model's predicted frame when the encoder can decode) of a few
episodes to the run folder.
"""
from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, asdict, field
from pathlib import Path

import numpy as np
import torch

__all__ = ["evaluate", "wilson_interval", "EvalResult", "eval_command"]

log = logging.getLogger(__name__)


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a success rate."""
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


@dataclass
class EvalResult:
    env: str
    policy: str
    planner: str | None
    episodes: int
    steps: int
    success_rate: float
    success_ci95: tuple[float, float]
    final_success_rate: float
    mean_plan_time_s: float | None
    mean_final_distance: float
    mean_initial_distance: float
    mean_final_latent_distance: float | None
    per_episode: list = field(default_factory=list)
    labels: list = field(default_factory=list)


def _frame(obs_px, goal_px, pred_px=None) -> np.ndarray:
    parts = [obs_px, goal_px] + ([pred_px] if pred_px is not None else [])
    sep = np.full((obs_px.shape[0], 2, 3), 255, np.uint8)
    out = []
    for i, p in enumerate(parts):
        out += ([sep] if i else []) + [p]
    return np.concatenate(out, axis=1)


def evaluate(env_name: str, policy: str = "planner", checkpoint: str | None = None, model=None,
             planner: str = "cem", planner_options: dict | None = None, objective: str = "last",
             alpha: float = 0.0, episodes: int = 50, steps: int = 50, horizon: int = 5,
             replan_every: int = 1, batch_envs: int = 10, seed: int = 1_000_000,
             env_options: dict | None = None, videos: int = 2, out: str | Path | None = None,
             device: str | None = None, progress: bool = True) -> EvalResult:
    """Evaluate goal reaching. See the module docstring.

    Args:
        env_name: a wmpc env name or a gymnasium id (``"pkg.mod:Id-v0"``).
        policy: ``"planner"`` (MPC with the world model), ``"random"`` or ``"oracle"``.
        checkpoint / model: the world model (path or object) for ``policy="planner"``.
        planner, planner_options, objective, alpha, horizon, replan_every: MPC settings.
        episodes, steps: how many episodes and env steps per episode.
        batch_envs: envs run side by side (one batched plan per replan).
        seed: seed of the first evaluation episode (episode i uses ``seed + i``).
        env_options: options for ``make_env`` (e.g. ``image_size``, ``frameskip``).
        videos: how many episodes to save as a side-by-side GIF in ``out``.
        out: run folder for ``results.json`` and GIFs (nothing written when None).

    Returns:
        an :class:`EvalResult`.
    """
    import envs as envs_pkg
    from tqdm import tqdm

    from .controller import MPCController
    from .objectives import make_objective

    if policy not in ("planner", "random", "oracle"):
        raise ValueError(f"policy must be 'planner', 'random' or 'oracle', got {policy!r}")
    env_options = dict(env_options or {})
    if policy == "planner":
        if model is None:
            if checkpoint is None:
                raise ValueError("policy=planner needs checkpoint=PATH (a world model saved by `wmpc train`)")
            from .world_model import WorldModel
            model = WorldModel.load(checkpoint, device=device)
        img = getattr(model, "image_size", None)
        if img is not None:
            env_options.setdefault("image_size", img)
    out = Path(out) if out is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    decode = None
    if policy == "planner" and getattr(model, "encoder", None) is not None and hasattr(model.encoder, "decode"):
        decode = model.encoder.decode

    rows, plan_times, latent_d, frames_by_ep = [], [], [], {}
    n_batches = math.ceil(episodes / batch_envs)
    bar = tqdm(total=episodes, desc=f"eval {env_name} ({policy})", disable=not progress)
    for bi in range(n_batches):
        ids = list(range(bi * batch_envs, min(episodes, (bi + 1) * batch_envs)))
        envs = [envs_pkg.make_env(env_name, **env_options) for _ in ids]
        resets = [e.reset(seed=seed + i) for e, i in zip(envs, ids)]
        obs = [o for o, _ in resets]
        infos = [inf for _, inf in resets]
        goals = np.stack([inf["goal_image"] for inf in infos])
        init_d = [float(inf.get("distance", np.nan)) for inf in infos]
        done = np.zeros(len(ids), bool)
        reached = np.array([bool(inf.get("is_success", False)) for inf in infos])
        ctrl = None
        if policy == "planner":
            ctrl = MPCController(model, planner, make_objective(objective, alpha=alpha) if alpha else objective,
                                 horizon=horizon, replan_every=replan_every, action_space=envs[0].action_space,
                                 planner_options=planner_options, seed=seed + bi, device=device)
        rng = np.random.default_rng(seed + bi)
        for t in range(steps):
            if policy == "planner":
                batch_obs = {"pixels": np.stack([o["pixels"] for o in obs]),
                             "proprio": np.stack([o["proprio"] for o in obs])}
                actions = ctrl.act(batch_obs, goals)
            elif policy == "random":
                sp = envs[0].action_space
                actions = rng.uniform(sp.low, sp.high, size=(len(ids), *sp.shape)).astype(np.float32)
            else:
                actions = np.stack([e.unwrapped.oracle_action() for e in envs]).astype(np.float32)
            for j, e in enumerate(envs):
                if ids[j] < videos:
                    pred = None
                    frames_by_ep.setdefault(ids[j], []).append(_frame(obs[j]["pixels"], goals[j], pred))
                if done[j]:
                    continue  # an env that reached its goal holds still
                obs[j], _, term, trunc, infos[j] = e.step(actions[j])
                reached[j] |= bool(infos[j]["is_success"])
                done[j] = reached[j] or term or trunc
            if done.all():
                break
        if ctrl is not None:
            plan_times += ctrl.plan_times
            with torch.no_grad():
                z_final = model.encode(np.stack([o["pixels"] for o in obs]))
                z_goal = model.encode(goals)
                latent_d += ((z_final - z_goal) ** 2).mean(dim=(1, 2)).cpu().tolist()
        for j, e in enumerate(envs):
            rows.append({"episode": ids[j], "seed": seed + ids[j], "reached": bool(reached[j]),
                         "final_success": bool(infos[j]["is_success"]),
                         "initial_distance": init_d[j], "final_distance": float(infos[j].get("distance", np.nan))})
            e.close()
        bar.update(len(ids))
    bar.close()

    n = len(rows)
    k = sum(r["reached"] for r in rows)
    labels = [] if alpha == 0 else ["goal-proprio"]
    res = EvalResult(
        env=env_name, policy=policy, planner=planner if policy == "planner" else None, episodes=n,
        steps=steps, success_rate=k / n, success_ci95=wilson_interval(k, n),
        final_success_rate=sum(r["final_success"] for r in rows) / n,
        mean_plan_time_s=float(np.mean(plan_times)) if plan_times else None,
        mean_final_distance=float(np.nanmean([r["final_distance"] for r in rows])),
        mean_initial_distance=float(np.nanmean([r["initial_distance"] for r in rows])),
        mean_final_latent_distance=float(np.mean(latent_d)) if latent_d else None,
        per_episode=rows, labels=labels)
    if out is not None:
        (out / "results.json").write_text(json.dumps(asdict(res), indent=2))
        if frames_by_ep:
            import imageio.v2 as imageio
            for ep, frames in frames_by_ep.items():
                imageio.mimsave(out / f"episode_{ep:03d}.gif", frames, duration=0.1, loop=0)
    return res


def format_result(r: EvalResult) -> str:
    lo, hi = r.success_ci95
    s = (f"{r.env} | {r.policy}{'/' + r.planner if r.planner else ''}: success {r.success_rate:.2f} "
         f"[95% CI {lo:.2f}-{hi:.2f}] over {r.episodes} episodes of {r.steps} steps "
         f"(final-step success {r.final_success_rate:.2f}); true distance {r.mean_initial_distance:.3f} -> "
         f"{r.mean_final_distance:.3f}")
    if r.mean_plan_time_s is not None:
        s += f"; {r.mean_plan_time_s * 1e3:.1f} ms per replan; final latent distance {r.mean_final_latent_distance:.4f}"
    if r.labels:
        s += f" [{', '.join(r.labels)}]"
    return s


def eval_command(argv: list[str]) -> int:
    """``wmpc eval env=<name> checkpoint=<path> planner=<name> episodes=50 steps=50``."""
    from omegaconf import OmegaConf

    from mpc.commands.cli import env_overrides, hydra_command

    def task(cfg):
        planner_cfg = OmegaConf.to_container(cfg.planner, resolve=True) if "planner" in cfg else {}
        planner_name = planner_cfg.pop("name", "cem")
        planner_cfg.pop("horizon", None)   # the eval's horizon (default: the planner config's)
        planner_cfg.pop("seed", None)      # episodes seed their planners from the eval seed
        env_cfg = OmegaConf.to_container(cfg.env, resolve=True)
        env_name = env_cfg.pop("name")
        r = evaluate(env_name, policy=cfg.policy, checkpoint=cfg.checkpoint, planner=planner_name,
                     planner_options=planner_cfg, objective=cfg.objective, alpha=cfg.alpha,
                     episodes=cfg.episodes, steps=cfg.steps, horizon=cfg.horizon,
                     replan_every=cfg.replan_every, batch_envs=cfg.batch_envs, seed=cfg.seed,
                     env_options=env_cfg, videos=cfg.videos, out=cfg.out, device=cfg.device)
        print(format_result(r))
        print(f"results: {Path(cfg.out) / 'results.json'}")
        return r

    return hydra_command("eval", task, env_overrides(argv), "wmpc eval")
