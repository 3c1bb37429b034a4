"""``wmpc train-proprio``: fit a proprio estimator on a dataset's frames (:mod:`mpc.proprio_estimator`).

``wmpc train-proprio data=data/reacher out=runs/proprio/reacher steps=3000 width=32``; then plan with
``wmpc eval checkpoint=... alpha=1.0 proprio_estimator=runs/proprio/reacher/estimator.safetensors``:
the goal's proprio is read from the goal image.
"""
from __future__ import annotations

import sys
from pathlib import Path

from mpc.commands.cli import hydra_command

__all__ = ["main"]


def _task(cfg) -> Path:
    import json

    from mpc.proprio_estimator import ESTIMATOR_FILE, train_proprio_estimator

    periods = "auto" if cfg.periods == "auto" else (None if cfg.periods is None else list(cfg.periods))
    train_proprio_estimator(cfg.data, cfg.out, steps=cfg.steps, batch_size=cfg.batch_size, lr=cfg.lr,
                            seed=cfg.seed, periods=periods, val_fraction=cfg.val_fraction, device=cfg.device,
                            progress=cfg.progress, width=cfg.width, num_keypoints=cfg.num_keypoints,
                            hidden=cfg.hidden)
    path = Path(cfg.out) / ESTIMATOR_FILE
    m = json.loads((Path(cfg.out) / "estimator.json").read_text())
    if m.get("val_mae"):
        print("validation error per proprio value:", ", ".join(f"{v:.4f}" for v in m["val_mae"]),
              "(mean predictor:", ", ".join(f"{v:.4f}" for v in m["val_mae_baseline"]) + ")")
    print(f"proprio estimator: {path}\nuse it with: wmpc eval ... alpha=1.0 proprio_estimator={path}")
    return path


def main(argv: list[str]) -> int:
    """``wmpc train-proprio data=<dir> out=<dir> steps=N width=W``."""
    return hydra_command("train_proprio", _task, argv, "wmpc train-proprio")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
