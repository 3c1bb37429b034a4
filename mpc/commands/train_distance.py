"""``wmpc train-distance``: fit a temporal distance on a world model's latent of its dataset
(:mod:`mpc.temporal_distance`).

``wmpc train-distance checkpoint=runs/pm/checkpoints/model_latest.safetensors data=data/pointmaze
out=runs/distance/pointmaze``; then plan with ``wmpc eval checkpoint=... distance=runs/distance/
pointmaze/distance.safetensors``: each predicted frame costs its estimated steps to the goal frame.
"""
from __future__ import annotations

import sys
from pathlib import Path

from mpc.commands.cli import hydra_command

__all__ = ["main"]


def _task(cfg) -> Path:
    import json

    from mpc.data import encode_dataset
    from mpc.temporal_distance import DISTANCE_FILE, train_temporal_distance
    from mpc.world_model import WorldModel

    model = WorldModel.load(cfg.checkpoint)
    if model.encoder is not None:  # fill the latent cache if the data were never encoded by it
        encode_dataset(cfg.data, model.encoder, progress=bool(cfg.progress), wait=True)
    train_temporal_distance(cfg.data, model, cfg.out, steps=cfg.steps, batch_size=cfg.batch_size, lr=cfg.lr,
                            tau=cfg.tau, seed=cfg.seed, val_fraction=cfg.val_fraction, device=cfg.device,
                            progress=cfg.progress, dim=cfg.dim, hidden=cfg.hidden)
    path = Path(cfg.out) / DISTANCE_FILE
    m = json.loads((Path(cfg.out) / "distance.json").read_text())
    if "val_spearman" in m:
        print(f"validation: rank correlation with the recorded steps {m['val_spearman']:.3f}; expectile loss "
              f"{m['val_loss']:.3f} (best constant {m['val_loss_constant']:.3f})")
    print(f"temporal distance: {path}\nuse it with: wmpc eval checkpoint={cfg.checkpoint} distance={path}")
    return path


def main(argv: list[str]) -> int:
    """``wmpc train-distance checkpoint=<world model> data=<dir> out=<dir>``."""
    return hydra_command("train_distance", _task, argv, "wmpc train-distance")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
