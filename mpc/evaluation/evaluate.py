"""Closed-loop goal reaching: run a policy on evaluation episodes and measure success.

Runs ``episodes`` episodes (seeds ``seed + i``, disjoint from collection seeds by default),
``batch_envs`` envs at a time with one policy call per step for all of them (the planner policy
plans them in one batched call), and reports the success rate with a 95% Wilson interval, the mean
planning time per replan, and the final latent and true-state distances. Baselines (``random``,
``oracle``, see :mod:`mpc.evaluation.policies`) run through the same loop. With ``out`` it writes
``results.json`` and a side-by-side GIF (observation | goal) of the first ``videos`` episodes.

The planner policy also measures the *imagination gap*: for every executed plan, the latent cost
(token MSE to the goal) the model predicted for the frame the plan's executed steps lead to, and
the latent cost of the frame actually reached (encoded). Plans of an env that reached its goal
before their steps were through are left out. ``EvalResult.imagination_gap`` summarises
realised - predicted (see :func:`~mpc.evaluation.metrics.gap_statistics`).
"""
from __future__ import annotations

import dataclasses
import difflib
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mpc._config import to_plain
from mpc._io import atomic_write, write_json
from mpc.evaluation.metrics import EvalResult, summarize
from mpc.evaluation.policies import Policy, PlannerSettings, check_policy, make_policy
from mpc.objectives import latent_distance

__all__ = ["EvalSettings", "evaluate"]


@dataclass
class EvalSettings:
    """Which episodes an evaluation runs and what it records."""

    episodes: int = 50  # evaluation episodes (episode i uses seed + i)
    steps: int = 50  # env steps per episode
    batch_envs: int = 10  # envs run side by side (one policy call per step for all)
    seed: int = 1_000_000  # seed of the first episode (far from collection seeds)
    env_options: dict | None = None  # make_env options (e.g. image_size, action_repeat), over those of the
    # world model's training data when it was trained on this env
    videos: int = 2  # episodes saved as side-by-side GIFs in `out`


def evaluate(env_name: str, policy: str = "planner", *, checkpoint: str | Path | None = None,
             model=None, out: str | Path | None = None, device: str | None = None,
             progress: bool = True, settings: EvalSettings | None = None,
             planning: PlannerSettings | None = None, **options) -> EvalResult:
    """Evaluate goal reaching. See the module docstring.

    Args:
        env_name: a wmpc env name or a gymnasium id (``"pkg.mod:Id-v0"``).
        policy: ``"planner"`` (MPC with the world model), ``"random"`` or ``"oracle"``.
        checkpoint / model: the world model (path or object) for ``policy="planner"``.
        out: run folder for ``results.json`` and GIFs (nothing written when None).
        device: where the world model loads and plans (default: the model's device).
        progress: show a progress bar.
        settings: episodes, steps, envs at once, seed, env options, videos (:class:`EvalSettings`).
        planning: planner, its options, objective, alpha, horizon, replan_every
            (:class:`~mpc.evaluation.policies.PlannerSettings`).
        **options: any field of either settings by name (``episodes=4``, ``planner="mppi"``),
            taking precedence over ``settings`` / ``planning``.

    Returns:
        an :class:`~mpc.evaluation.metrics.EvalResult`.

    Raises:
        ValueError: unknown policy, or ``policy="planner"`` without a checkpoint or model.
        TypeError: an option that is no settings field.
    """
    from tqdm import tqdm

    import envs as envs_pkg

    check_policy(policy)
    settings, planning = _apply_options(settings or EvalSettings(), planning or PlannerSettings(),
                                        options)
    model = _world_model(checkpoint, model, device) if policy == "planner" else None
    env_options = _env_options(env_name, settings.env_options, model)
    rows, plan_times, latent_distances, frames, gaps, rollouts = [], [], [], {}, [], []
    bar = tqdm(total=settings.episodes, desc=f"eval {env_name} ({policy})", disable=not progress)
    for bi in range(math.ceil(settings.episodes / settings.batch_envs)):  # one batch of envs at a time
        ids = list(range(bi * settings.batch_envs,
                         min(settings.episodes, (bi + 1) * settings.batch_envs)))
        envs = [envs_pkg.make_env(env_name, **env_options) for _ in ids]
        try:
            actor = make_policy(policy, envs, seed=settings.seed + bi, model=model,
                                settings=planning, device=device)
            batch_rows, final_pixels, goals = _run_episodes(envs, ids, actor, settings, frames, gaps)
        finally:
            for e in envs:
                e.close()
        rows += batch_rows
        plan_times += list(actor.plan_times)
        rollouts += list(getattr(actor, "plan_rollouts", ()))
        if model is not None:
            latent_distances += _latent_distances(model, final_pixels, goals)
        bar.update(len(ids))
    bar.close()
    result = summarize(rows, env=env_name, policy=policy,
                       planner=planning.planner if policy == "planner" else None,
                       steps=settings.steps, plan_times=plan_times, plan_rollouts=rollouts,
                       latent_distances=latent_distances,
                       labels=([] if planning.alpha == 0 else ["goal-proprio"] if not planning.proprio_estimator
                               else ["proprio-from-goal-image"])
                       + (["temporal-distance"] if policy == "planner" and planning.distance else [])
                       + ([] if planning.risk == 0 else [f"risk={planning.risk:g}" + (
                           "" if planning.risk_mode == "disagreement" else f" {planning.risk_mode}")])
                       + ([] if policy != "planner" or planning.action_bound == 1 else
                          [f"action-bound={planning.action_bound:g}"])
                       + (["state-supervised-encoder"] if model is not None
                          and getattr(model.encoder, "state_dim", 0) > 0 else []),
                       imagination=gaps if policy == "planner" else None)
    result.env_options = to_plain(env_options)
    if out is not None:
        _write_run(Path(out), result, frames)
    return result


def _env_options(env_name: str, given: dict | None, model) -> dict:
    """The env's options: ``given`` over the options of the model's training data when the model was
    trained on ``env_name`` (as ``wmpc eval`` does), so the env repeats and scales actions as the model
    learnt them; for another env, ``given`` with the model's image size."""
    given = dict(given or {})
    if model is None:
        return given
    stored = getattr(model, "env_options", None)
    if stored and getattr(model, "env", None) == env_name:
        return {**stored, **given}
    if getattr(model, "image_size", None) is not None:
        given.setdefault("image_size", model.image_size)
    return given


def _apply_options(settings: EvalSettings, planning: PlannerSettings, options: dict):
    """Copies of both settings with ``options`` applied to whichever declares each name."""
    names = [{f.name for f in dataclasses.fields(s)} for s in (settings, planning)]
    unknown = set(options) - names[0] - names[1]
    if unknown:
        valid = sorted(names[0] | names[1])
        close = [m for k in sorted(unknown) for m in difflib.get_close_matches(k, valid, n=1)]
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise TypeError(f"evaluate() got unknown options {sorted(unknown)}.{hint} Valid: {valid}")
    return tuple(dataclasses.replace(s, **{k: v for k, v in options.items() if k in n})
                 for s, n in zip((settings, planning), names))


def _world_model(checkpoint, model, device):
    """The given model, or the one saved at ``checkpoint``."""
    if model is not None:
        return model
    if checkpoint is None:
        raise ValueError("policy=planner needs checkpoint=PATH (a world model saved by `wmpc train`)")
    from mpc.world_model import WorldModel

    return WorldModel.load(checkpoint, device=device)


def _run_episodes(envs: list, ids: list[int], policy: Policy, settings: EvalSettings,
                  frames: dict[int, list], gaps: list[tuple[float, float]] | None = None
                  ) -> tuple[list[dict], np.ndarray, np.ndarray]:
    """Run one episode in each of the B ``envs`` until all reached their goals or time ran out.

    An env that reached its goal holds still while the others go on. Frames of episodes below
    ``settings.videos`` are appended to ``frames``; each plan's ``(predicted, realised)`` latent
    cost of an env still under way when the plan's steps were through is appended to ``gaps``.

    Returns:
        ``(rows, final pixels (B, H, W, 3), goal images (B, H, W, 3))``, one row per episode.
    """
    resets = [e.reset(seed=settings.seed + i) for e, i in zip(envs, ids)]
    obs = [o for o, _ in resets]
    infos = [inf for _, inf in resets]
    goals = np.stack([inf["goal_image"] for inf in infos])  # (B, H, W, 3)
    episode_info = {"goal_image": goals}
    if all("goal_proprio" in inf for inf in infos):
        episode_info["goal_proprio"] = np.stack([inf["goal_proprio"] for inf in infos])  # (B, P)
    init_d = [_distance(inf) for inf in infos]
    done = np.zeros(len(ids), bool)
    reached = np.array([bool(inf.get("is_success", False)) for inf in infos])
    filmed = [j for j in range(len(ids)) if ids[j] < settings.videos]
    decodes = bool(filmed) and getattr(policy, "can_decode", False)
    predicted = {j: None for j in filmed}  # the frame the last plan predicted for now (decoded)
    for _ in range(settings.steps):
        batch_obs = {"pixels": np.stack([o["pixels"] for o in obs]),  # (B, H, W, 3)
                     "proprio": np.stack([o["proprio"] for o in obs])}  # (B, P)
        seen = len(getattr(policy, "imagination", ()))
        for j in filmed:
            extra = (predicted[j],) if decodes else ()
            frames.setdefault(ids[j], []).append(_side_by_side(obs[j]["pixels"], *extra, goals[j]))
        episode_info["active"] = ~done  # envs still under way: a planner rolls out these alone
        actions = policy.act(batch_obs, episode_info)  # (B, A)
        for rec in getattr(policy, "imagination", [])[seen:]:  # plans whose steps just went through
            if gaps is not None:
                gaps += [(float(rec["predicted"][j]), float(rec["realised"][j]))
                         for j in range(len(ids)) if not done[j]]
        if decodes:
            pred = policy.predicted_frames(filmed, size=goals.shape[1])
            predicted = {j: None if pred is None else pred[k] for k, j in enumerate(filmed)}
        for j, e in enumerate(envs):
            if done[j]:
                continue  # an env that reached its goal holds still
            obs[j], _, term, trunc, infos[j] = e.step(actions[j])
            reached[j] |= bool(infos[j]["is_success"])
            done[j] = reached[j] or term or trunc
        if done.all():
            break
    rows = [{"episode": i, "seed": settings.seed + i, "reached": bool(reached[j]),
             "final_success": bool(infos[j]["is_success"]), "initial_distance": init_d[j],
             "final_distance": _distance(infos[j])} for j, i in enumerate(ids)]
    return rows, np.stack([o["pixels"] for o in obs]), goals


def _distance(info: dict) -> float:
    """The true distance an env reports (NaN when it reports none: summaries then say n/a)."""
    d = info.get("distance")
    return float("nan") if d is None else float(d)


def _latent_distances(model, pixels: np.ndarray, goals: np.ndarray) -> list[float]:
    """Token MSE between the encoded final observations and goals, one value per env."""
    with torch.no_grad():
        z_final = model.encode(pixels)  # (B, N, D)
        z_goal = model.encode(goals)
        return latent_distance(z_final, z_goal).cpu().tolist()


def _side_by_side(*panels: np.ndarray | None) -> np.ndarray:
    """One GIF frame: observation | goal, or observation | predicted | goal when the model decodes
    (the frame the previous plan predicted for this step; grey before the first plan), with white
    2-pixel separators."""
    first = panels[0]
    sep = np.full((first.shape[0], 2, 3), 255, np.uint8)
    parts = []
    for p in panels:
        parts += [np.full_like(first, 128) if p is None else p, sep]
    return np.concatenate(parts[:-1], axis=1)


def _write_run(out: Path, result: EvalResult, frames: dict[int, list]) -> None:
    """``results.json`` and one ``episode_<i>.gif`` per recorded episode, each written atomically."""
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "results.json", dataclasses.asdict(result))
    if frames:
        import imageio.v2 as imageio

        for ep, episode_frames in frames.items():
            atomic_write(out / f"episode_{ep:03d}.gif",
                         lambda tmp: imageio.mimsave(tmp, episode_frames, duration=0.1, loop=0))
