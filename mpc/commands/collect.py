"""``wmpc collect``: random-exploration episodes into a dataset folder (``configs/collect.yaml``)."""
from __future__ import annotations

import sys
from pathlib import Path

from mpc._config import to_plain
from mpc.commands.cli import env_overrides, hydra_command
from mpc.data import collect, load_dataset


def _collect_task(cfg) -> Path:
    """Collect the dataset ``cfg`` describes and print a one-line summary. Returns its folder."""

    options = to_plain(cfg.env)
    name = options.pop("name", None)
    if not name:
        raise ValueError("the env config needs a `name` (a wmpc env name or a gymnasium id)")
    options.pop("image_size", None)
    options.pop("action_repeat", None)
    try:
        out = collect(env=name, out=cfg.out, episodes=cfg.episodes, steps=cfg.steps, policy=cfg.policy,
                      seed=cfg.seed, workers=cfg.workers, env_options=options, image_size=cfg.image_size,
                      action_repeat=cfg.action_repeat, policy_options=to_plain(cfg.get("policy_options") or {}),
                      compression=cfg.compression, progress=cfg.progress)
    except KeyboardInterrupt:
        print(f"\ninterrupted: the finished episodes in {cfg.out} are kept; run the same command again "
              "to collect the rest", file=sys.stderr)
        raise SystemExit(130)
    ds = load_dataset(out)
    print(f"dataset: {out}  ({len(ds)} episodes, {int(ds.lengths.sum()) + len(ds)} frames, env={name})")
    return out


def main(argv: list[str]) -> int:
    """``wmpc collect env=<name> episodes=N steps=T policy=uniform out=<dir> workers=K seed=S``."""
    return hydra_command("collect", _collect_task, env_overrides(argv), "wmpc collect")
