"""The "why" part of a suite report: each env's result beside what explains it.

For every ``(env, encoder)`` of the run: the best planner cell's success, the world model's
open-loop ratio (token MSE / copy-last-frame MSE on validation windows at 1 and at the last
evaluated step: below 1 the model beats copying the last frame; ``eval_metrics.json`` of its
training run; for Push-T also on the windows where the block moves, and the block's pose read from
the true latent, the model's prediction and the last context frame, in px and degrees), the latent
probe's Spearman correlation (Push-T: block position, block angle and pusher apart); and for every
env the coverage of its exploration data (``stats.json``: the range the true state spans per
dimension, and for Push-T the fraction of steps where the block moves and the spread of block
poses). All of it is read from the run folder, so old runs get the section too.
"""
from __future__ import annotations

from pathlib import Path

from mpc._io import read_json

from mpc.evaluation.open_loop import format_object_readout

from .probe import pusher_weight

__all__ = ["explain_tables"]


def _open_loop(run: Path, row: dict) -> dict | None:
    """``eval_metrics.json`` of the row's world model (None when missing)."""
    ckpt = row.get("model_checkpoint")
    if not ckpt:
        return None
    return read_json(run / Path(ckpt).parent.parent / "eval_metrics.json")


def _coverage_text(env_dir: Path) -> str:
    cov = (read_json(env_dir / "stats.json") or {}).get("coverage") or {}
    parts = []
    if "object_moving_fraction" in cov:
        std = cov.get("object_pose_std") or []
        parts.append(f"block moves in {cov['object_moving_fraction']:.0%} of steps; block pose std "
                     + " / ".join(f"{v:.3g}" for v in std))
    if cov.get("state_range"):
        parts.append("state range " + " / ".join(f"{v:.3g}" for v in cov["state_range"][:4]))
    return "; ".join(parts)


def explain_tables(run: Path, rows: list[dict], probes: dict[str, dict]) -> list[str]:
    """Markdown lines of the section (empty without finished planner cells).

    Args:
        run: the run folder.
        rows: every row of the report (training condition rows are used).
        probes: ``"<env>/<encoder>" -> probe json`` of the training condition.
    """
    best: dict[tuple[str, str], dict] = {}
    for r in rows:
        if r.get("status") != "ok" or r.get("policy") != "planner" or r.get("shift"):
            continue
        key = (r["env"], r["encoder"])
        if key not in best or float(r["success_rate"]) > float(best[key]["success_rate"]):
            best[key] = r
    if not best:
        return []
    lines = ["", "## Why each result", "",
             "Beside each backend's best cell: the world model's open-loop ratio (token MSE over copy-last-frame "
             "MSE on validation windows, at 1 step and at the last evaluated step; < 1 beats copying the last "
             "frame) and the latent probe's Spearman (Push-T: block position / block angle / pusher, and the "
             "pusher's weight: its share of latent distance per pixel moved, pusher against block; near 0 the "
             "planner leaves the pusher anywhere, while success needs it in place; elsewhere, per line: the "
             "latent distance per unit of true distance along each probe line of the suite's config, relative "
             "to the largest, so a direction the latent underweights shows as a small number). For an env with a "
             "movable object (Push-T's block) the ratio is also given on the validation windows where the "
             "object moves in the predicted steps: goals that move the object need the model's contact "
             "dynamics, which windows where only the agent moves do not test. There the object's pose is also read "
             "from the tokens (a linear readout fitted on half of the validation episodes, applied to the other "
             "half's windows where the object moves): its median error on the true latent says how much of the "
             "pose the latent carries at all, on the model's prediction how precisely the model moves it, and on "
             "the last context frame what standing still gives; Push-T's success test allows 20 px and 20 "
             "degrees. A backend "
             "fails when its probe is low (the latent does not order states by distance to the goal) or its "
             "ratio is near or above 1 (the model predicts no better than standing still). Rows that plan with a "
             "learnt temporal distance add its probe (`learnt distance`: the same pairs ranked by the distance "
             "instead of the token MSE).", "",
             "| env | encoder | best planner | success | open-loop ratio (1 / last step) | probe Spearman |",
             "|---|---|---|---|---|---|"]
    for (env, enc), r in best.items():
        ol = _open_loop(run, r)
        ratio = "" if not ol else f"{ol['ratio'][0]:.2f} / {ol['ratio'][-1]:.2f} ({len(ol['ratio'])} steps)"
        if ol and ol.get("ratio_object_moving"):
            moving = ol["ratio_object_moving"]
            ratio += f"; {moving[0]:.2f} / {moving[-1]:.2f} where the object moves"
        if ol and ol.get("object_readout"):
            ratio += "; " + format_object_readout(ol["object_readout"])
        p = probes.get(f"{env}/{enc}")
        if p is None:
            probe = ""
        elif p.get("parts"):
            probe = " / ".join(f"{p['parts'][k]['spearman']:.2f}" for k in ("block_position", "block_angle", "agent")
                               if k in p["parts"])
            weight = pusher_weight(p["parts"])
            probe += "" if weight is None else f"; pusher weight {weight:.2f}"
        else:
            probe = f"{p['spearman']:.2f}"
            rates = [v for v in p.get("line_rates") or [] if v is not None]
            if len(rates) > 1:  # latent per unit true distance along each probe line, relative to the largest
                top = max(rates)
                probe += "; per line " + " / ".join(f"{v / top:.2f}" for v in rates) if top > 0 else ""
        learnt = read_json(run / "probes" / f"{env}__{enc}.distance.json")
        if learnt is not None and "temporal-distance" in str(r.get("labels") or ""):  # the cost it planned with
            probe += f"; learnt distance {learnt['spearman']:.2f}"
            rates = [v for v in learnt.get("line_rates") or [] if v is not None]
            if len(rates) > 1 and max(rates) > 0:
                probe += " (per line " + " / ".join(f"{v / max(rates):.2f}" for v in rates) + ")"
        lines.append(f"| {env} | {enc} | {r['planner']} | {float(r['success_rate']):.2f} | {ratio} | {probe} |")
    data = {env: r.get("data") or env for (env, _), r in best.items()}  # an entry's data_from folder
    cover = [(env, _coverage_text(run / "data" / folder)) for env, folder in data.items()]
    if any(text for _, text in cover):
        lines += ["", "Coverage of the exploration data (true states of every step):", "",
                  "| env | coverage |", "|---|---|"]
        lines += [f"| {env} | {text} |" for env, text in cover if text]
    return lines
