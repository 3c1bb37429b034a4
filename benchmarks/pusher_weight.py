"""Does an encoder's latent see Push-T's pusher as well as its block?

    python -m benchmarks.pusher_weight jepa=runs/enc/jepa/encoder.safetensors \
        jepa_idm=runs/enc/jepa_idm/encoder.safetensors:width=8,hidden=128,idm_weight=0.3

Each argument is ``label=CHECKPOINT[:key=value,...]`` (the backend is read from the checkpoint; the
options are those it was trained with, as ``make_encoder`` wants them). For every encoder it prints

- the probe's **pusher weight** (``benchmarks.suite.probe.pusher_weight`` on the standard suite's
  Push-T probe lines: the pusher's share of latent distance per pixel moved, against the block's), and
- on ``goals`` start/goal pairs of DINO-WM's Push-T protocol (``start=pushing``, ``goal_steps=5``), the
  median latent distance (the planning objective's MSE) between the goal and (a) the start, (b) the goal
  with the pusher put back at its start position, (c) the goal with the block put back at its start pose;
- how the latent weighs each of the success test's tolerances: the median latent distance between the
  goal and the goal with the block moved 20 px (a random direction), the block turned 20 degrees (a random
  sign), or the pusher moved 20 px. The success test weighs these three alike; a latent that weighs one
  far below the others lets plans leave it off.

A latent with (b) near 0 leaves the pusher out: plans then move the block and leave the pusher anywhere,
while Push-T's success test needs both in place.
"""
from __future__ import annotations

import argparse
import sys

import numpy as np

def _parse(arg: str) -> tuple[str, str, dict]:
    label, _, rest = arg.partition("=")
    path, _, opts = rest.partition(":")
    if not label or not path:
        raise SystemExit(f"expected label=CHECKPOINT[:key=value,...], got {arg!r}")
    options = {}
    for item in filter(None, opts.split(",")):
        key, _, value = item.partition("=")
        for cast in (int, float):
            try:
                value = cast(value)
                break
            except ValueError:
                continue
        options[key] = value
    return label, path, options


def measure(encoder, image_size: int = 64, goals: int = 20) -> dict:
    """The pusher weight and the three median latent distances for one frozen encoder."""
    import torch

    import envs
    from benchmarks.suite.probe import latent_probe, pusher_weight
    from envs.pusht import ANGLE_TOLERANCE, POSITION_TOLERANCE
    from mpc._config import group_config
    from mpc.objectives import latent_distance

    probe_cfg = group_config("bench", "standard")["envs"]["pusht"]["probe"]  # the standard suite's Push-T probe
    probe = latent_probe("pusht", {"image_size": image_size}, encoder, probe_cfg["lines"], probe_cfg["points"])
    env = envs.make_env("pusht", image_size=image_size, action_repeat=5, start="pushing", goal_steps=5)
    rows, rng = [], np.random.default_rng(0)
    try:
        u = env.unwrapped
        for seed in range(goals):
            _, info = env.reset(seed=seed)
            start, goal = info["state"].copy(), info["goal_state"].copy()
            pusher_back, block_back = goal.copy(), start.copy()
            pusher_back[:2] = start[:2]  # block at the goal, pusher where it started
            block_back[:2] = goal[:2]  # pusher at the goal, block where it started
            shifted, turned, pusher_shifted = goal.copy(), goal.copy(), goal.copy()  # one tolerance off each
            for s, part in ((shifted, slice(2, 4)), (pusher_shifted, slice(0, 2))):
                heading = rng.uniform(-np.pi, np.pi)
                s[part] += POSITION_TOLERANCE * np.array([np.cos(heading), np.sin(heading)])
            turned[4] += ANGLE_TOLERANCE * rng.choice([-1.0, 1.0])
            states = (start, pusher_back, block_back, shifted, turned, pusher_shifted, goal)
            images = np.stack([u.render_state(s) for s in states])
            with torch.no_grad():
                z = encoder.encode(images).float()
            rows.append(latent_distance(z[:-1], z[-1:]).numpy())
    finally:
        env.close()
    start_d, pusher_d, block_d, shift_d, turn_d, pusher_shift_d = np.median(np.array(rows), axis=0)
    return {"pusher_weight": pusher_weight(probe["parts"]), "start": float(start_d),
            "pusher_moved": float(pusher_d), "block_moved": float(block_d), "block_20px": float(shift_d),
            "block_20deg": float(turn_d), "pusher_20px": float(pusher_shift_d)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("encoders", nargs="+", help="label=CHECKPOINT[:key=value,...]")
    parser.add_argument("--goals", type=int, default=20, help="start/goal pairs (seeds 0..goals-1)")
    args = parser.parse_args(argv)
    from safetensors import safe_open

    from encoders import make_encoder

    print("| encoder | pusher weight | start to goal | only the pusher off | only the block off "
          "| block 20 px off | block 20 degrees off | pusher 20 px off |")
    print("|---|---|---|---|---|---|---|---|")
    for arg in args.encoders:
        label, path, options = _parse(arg)
        with safe_open(path, framework="pt") as f:
            backend = (f.metadata() or {}).get("backend")
        if backend is None:
            raise SystemExit(f"{path}: not a wmpc encoder checkpoint (no backend in its metadata)")
        enc = make_encoder(backend, checkpoint=path, **options)
        r = measure(enc, enc.image_size, args.goals)
        weight = "n/a" if r["pusher_weight"] is None else f"{r['pusher_weight']:.3f}"
        print(f"| {label} | {weight} | {r['start']:.4f} | {r['pusher_moved']:.4f} | {r['block_moved']:.4f} "
              f"| {r['block_20px']:.4f} | {r['block_20deg']:.4f} | {r['pusher_20px']:.4f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
