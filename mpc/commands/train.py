"""``wmpc train``: fit a world model on a dataset's cached encoder latents (:mod:`mpc.training.trainer`).

``wmpc train env=pointmass encoder=dinov2 model=tiny data=data/pointmass out=runs/pm``

Under several processes: ``torchrun --nproc_per_node 4 -m mpc.commands.train key=value ...``.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from mpc.commands.cli import hydra_command

__all__ = ["main"]


def _task(cfg) -> Path:
    from mpc.training import train

    run = train(cfg)
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"run folder: {run}")
        result = run / "eval_metrics.json"
        if result.exists():
            r = json.loads(result.read_text())
            print(f"open-loop token MSE / copy-last-frame MSE: 1-step {r['ratio_1step']:.4f}, "
                  f"{r['horizon']}-step {r['ratio'][-1]:.4f}")
    return run


def main(argv: list[str]) -> int:
    """``wmpc train key=value ...`` (hydra over ``configs/train.yaml``)."""
    return hydra_command("train", _task, argv, prog="wmpc train")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
