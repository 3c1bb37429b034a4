"""``wmpc train-encoder``: fit a trainable encoder on a dataset's frames (:mod:`mpc.training.encoder_trainer`).

``wmpc train-encoder encoder=vae data=data/pointmass out=runs/enc/vae steps=2000 batch_size=64 lr=0.001``
"""
from __future__ import annotations

import sys
from pathlib import Path

from mpc._config import split_encoder_config
from mpc.commands.cli import hydra_command

__all__ = ["main"]


def _task(cfg) -> Path:
    from mpc.training import train_encoder

    name, options = split_encoder_config(cfg.encoder, drop_load_keys=True)  # training, not loading, options
    ckpt = train_encoder(name, cfg.data, cfg.out, steps=cfg.steps, batch_size=cfg.batch_size, lr=cfg.lr,
                         encoder_options=options, save_every=cfg.save_every, seed=cfg.seed, device=cfg.device,
                         progress=cfg.progress, frameskip=cfg.frameskip)
    print(f"encoder checkpoint: {ckpt}\nuse it with: encoder={name} encoder.checkpoint={ckpt}")
    return ckpt


def main(argv: list[str]) -> int:
    """``wmpc train-encoder encoder=<vae|diffusion|jepa|transporter> data=<dir> out=<dir> steps=N batch_size=B lr=LR``."""
    return hydra_command("train_encoder", _task, argv, "wmpc train-encoder")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
