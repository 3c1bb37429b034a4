"""One row of the suite: a planner cell of ``(env, encoder)`` or a random / oracle baseline of an env.

A row is a flat dict written atomically to ``cells/<env>__<encoder>__<planner>.json``: the
evaluation numbers, times, sizes and ``status`` (``ok``, ``skipped: ...`` or ``failed: ...``).
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

from mpc._io import read_json, write_json

from benchmarks.suite.artifacts import (cell_path, distance_probe_path, ensemble_probe_path, ensure_dataset,
                                        ensure_encoder, ensure_distance, ensure_estimator, ensure_model, probe_path)
from benchmarks.suite.probe import ensemble_probe, latent_probe
from benchmarks.suite.settings import EvalSettings, SuiteSettings

__all__ = ["CELL_FORMAT", "DINOV2_SKIP", "conditions", "run_baseline", "run_cell", "skip_row"]

CELL_FORMAT = 1
DINOV2_SKIP = "skipped: no DINOv2 weights (see README)"
log = logging.getLogger(__name__)


def _evaluate(env: str, ev: EvalSettings, **kwargs):
    """:func:`mpc.evaluation.evaluate` on the held-out goals of ``ev`` (every row uses the same ones)."""
    from mpc.evaluation import evaluate

    return evaluate(env, episodes=ev.episodes, steps=ev.steps, batch_envs=ev.batch_envs, seed=ev.seed,
                    **kwargs)


def _gap_fields(res) -> dict:
    """The imagination gap of a planner row (realised - predicted latent cost per executed plan)."""
    g = res.imagination_gap
    if not g:
        return {}
    return {"gap_mean": g["mean"], "gap_median": g["quantiles"]["0.5"], "gap_q05": g["quantiles"]["0.05"],
            "gap_q95": g["quantiles"]["0.95"], "gap_predicted": g["mean_predicted"],
            "gap_realised": g["mean_realised"], "gap_correlation": g["correlation"], "gap_plans": g["plans"]}


def _result_fields(res, ev: EvalSettings) -> dict:
    lo, hi = res.success_ci95
    return {"success_rate": res.success_rate, "ci_low": lo, "ci_high": hi, "episodes": res.episodes,
            "steps": res.steps, "final_success_rate": res.final_success_rate,
            "plan_time_ms": None if res.mean_plan_time_s is None else 1e3 * res.mean_plan_time_s,
            "mean_initial_distance": res.mean_initial_distance, "mean_final_distance": res.mean_final_distance,
            "labels": ",".join(res.labels), "batch_envs": ev.batch_envs}


def _gifs(folder: Path, run: Path) -> list[str]:
    return [str(p.relative_to(run)) for p in sorted(folder.glob("episode_*.gif"))]


def _count_params(module) -> int:
    return int(sum(p.numel() for p in module.parameters())) if module is not None else 0


def skip_row(env: str, encoder: str, planner: str, status: str, shift: str = "") -> dict:
    """The row of a planner cell that did not run (``status`` says why)."""
    return {"env": env, "encoder": encoder, "planner": planner, "policy": "planner", "shift": shift,
            "status": status, "format": CELL_FORMAT}


def conditions(suite: SuiteSettings, env: str) -> list[str]:
    """The evaluation conditions of ``env``: ``""`` (the training condition), then each shift."""
    return ["", *suite.envs[env].shifts]


def reusable(row: dict | None, settings: dict) -> bool:
    """Whether a cell row read back from disk stands for these settings: finished (``status: ok``) and
    run under the same :meth:`SuiteSettings.cell_settings` (rows from before cells recorded them count
    as the same)."""
    return row is not None and row.get("status") == "ok" and row.get("settings", settings) == settings


def _log_row(row: dict) -> None:
    """One log line per finished row, so a run's log shows its progress without progress bars."""
    baseline = row["encoder"] == "-"  # random / oracle rows: the policy instead of encoder and planner
    who = [row["env"], row["policy"]] if baseline else [row["env"], row["encoder"], row["planner"]]
    log.info("%s%s: success %.2f over %d goals (%.0f s)", " / ".join(who),
             f" [{row['shift']}]" if row["shift"] else "", row["success_rate"], row["episodes"], row["eval_time_s"])


def run_baseline(suite: SuiteSettings, env: str, policy: str, shift: str = "") -> dict:
    """Random-action or oracle row of ``env`` under ``shift`` (same evaluation goals as the planner rows)."""
    from mpc.evaluation.policies import NoOracle

    ev = suite.envs[env].eval
    folder = cell_path(suite.out, env, policy, "none", shift).with_suffix("")
    t0 = time.perf_counter()
    try:
        res = _evaluate(suite.envs[env].env, ev, policy=policy, env_options=suite.envs[env].options_for(shift),
                        videos=ev.baseline_videos, out=folder, progress=suite.progress)
    except NoOracle:
        return {"env": env, "encoder": "-", "planner": "-", "policy": policy, "shift": shift,
                "status": "skipped: the env has no scripted oracle", "format": CELL_FORMAT}
    row = {"env": env, "encoder": "-", "planner": "-", "policy": policy, "shift": shift, "status": "ok",
           **_result_fields(res, ev), "plan_time_ms": None, "eval_time_s": time.perf_counter() - t0,
           "gifs": _gifs(folder, suite.out), "settings": suite.cell_settings(env, None, None, shift),
           "format": CELL_FORMAT}
    _log_row(row)
    return row


def run_cell(suite: SuiteSettings, env: str, encoder: str, planners: list[str]) -> dict[tuple[str, str], dict]:
    """Train what ``(env, encoder)`` needs, probe it, then evaluate each planner under each condition
    (:func:`conditions`). Returns rows by ``(planner, shift)``.

    Cells finished earlier (``status: ok``) are reused, not run again.

    Raises:
        EncoderUnavailable: pretrained weights missing (the caller writes skipped rows).
    """
    import torch

    from mpc.world_model import WorldModel

    run, device, es = suite.out, suite.device, suite.envs[env]
    data_dir, _ = ensure_dataset(suite, env)
    enc, enc_settings, enc_seconds = ensure_encoder(suite, env, encoder, data_dir)
    ckpt, model_seconds = ensure_model(suite, env, encoder, enc_settings, data_dir)
    enc = enc.to(device)
    model = WorldModel.load(ckpt, encoder=enc, device=device)

    for shift in conditions(suite, env):
        probe_file = probe_path(run, env, encoder, shift)
        if es.probe is not None and read_json(probe_file) is None:
            probe = latent_probe(es.env, es.options_for(shift), enc, es.probe.lines, es.probe.points)
            write_json(probe_file, {"env": env, "encoder": encoder, "shift": shift, **probe})

    ev = es.eval
    estimator = str(ensure_estimator(suite, env, data_dir)) if ev.estimates_goal_proprio else None
    distance = (None if ev.distance is None
                else str(ensure_distance(suite, env, encoder, data_dir, model.encoder_fingerprint)))
    dist_probe = distance_probe_path(run, env, encoder)
    dist_rel = None if distance is None else str(Path(distance).relative_to(run))
    if dist_rel is not None and es.probe is not None and (read_json(dist_probe) or {}).get("distance") != dist_rel:
        # none yet, or of an earlier distance
        from mpc.temporal_distance import TemporalDistance

        probe = latent_probe(es.env, es.options, enc, es.probe.lines, es.probe.points,
                             distance=TemporalDistance.load(distance, device=device))
        write_json(dist_probe, {"env": env, "encoder": encoder, "distance": dist_rel, **probe})
    ens_file = ensemble_probe_path(run, env, encoder)
    if model.ensemble > 1 and read_json(ens_file) is None:
        seeds = list(range(ev.seed, ev.seed + min(ev.episodes, 10)))
        write_json(ens_file, {"env": env, "encoder": encoder,
                              **ensemble_probe(es.env, es.options, model, seeds, seed=suite.seed)})
    rows = {}
    for shift, planner in ((s, p) for s in conditions(suite, env) for p in planners):
        path = cell_path(run, env, encoder, planner, shift)
        old = read_json(path)
        settings = suite.cell_settings(env, encoder, planner, shift)
        if reusable(old, settings):
            rows[planner, shift] = old
            continue
        ps = suite.planners[planner]
        folder = path.with_suffix("")
        t0 = time.perf_counter()
        res = _evaluate(es.env, ev, policy="planner", model=model, planner=ps.name,
                        planner_options=suite.planner_options(env, planner),
                        objective=ev.objective, alpha=ev.alpha, proprio_estimator=estimator,
                        proprio_weights=ev.proprio_weights, distance=distance,
                        risk=ps.risk, risk_mode=ps.risk_mode,
                        horizon=ev.horizon or ps.horizon,
                        replan_every=ev.replan_every, action_bound=ev.action_bound,
                        env_options=es.options_for(shift), videos=ev.videos,
                        out=folder, device=device, progress=suite.progress)
        row = {"env": env, "encoder": encoder, "planner": planner, "policy": "planner", "shift": shift,
               "status": "ok",
               **_result_fields(res, ev), **_gap_fields(res), "risk": ps.risk, "risk_mode": ps.risk_mode,
               "rollouts_per_plan": res.mean_rollouts_per_plan, "planner_name": ps.name,
               "horizon": ev.horizon or ps.horizon,
               "ensemble": int(model.ensemble),
               "ensemble_kind": model.config.ensemble_kind if model.ensemble > 1 else "",
               "eval_time_s": time.perf_counter() - t0,
               "encoder_train_time_s": enc_seconds, "predictor_train_time_s": model_seconds,
               "train_time_s": enc_seconds + model_seconds, "data": es.data_name,
               "data_episodes": es.data.episodes, "train_steps": int(suite.train_for(env, encoder)["steps"]),
               "encoder_params": _count_params(enc), "predictor_params": _count_params(model),
               "num_tokens": int(model.num_tokens), "token_dim": int(model.token_dim),
               "model_checkpoint": str(ckpt.relative_to(run)), "gifs": _gifs(folder, run),
               "settings": settings, "format": CELL_FORMAT, "finished": time.strftime("%Y-%m-%d %H:%M:%S")}
        write_json(path, row)
        _log_row(row)
        rows[planner, shift] = row
    del model
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return rows
