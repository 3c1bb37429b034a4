"""``wmpc encode``: fill a dataset's latent cache with a frozen encoder (``configs/encode.yaml``)."""
from __future__ import annotations

from pathlib import Path

from mpc._config import resolve_device, split_encoder_config
from mpc.commands.cli import hydra_command
from mpc.data import encode_dataset


def _encode_task(cfg) -> Path:
    """Encode the dataset ``cfg.data`` with ``cfg.encoder`` and print a summary. Returns the cache folder."""
    import encoders

    name, options = split_encoder_config(cfg.encoder)
    enc = encoders.make_encoder(name, **options).to(resolve_device(cfg.device))
    folder = encode_dataset(cfg.data, enc, dtype=cfg.dtype, batch_size=cfg.batch_size, progress=cfg.progress)
    print(f"latent cache: {folder}  (encoder {enc.fingerprint}, N={enc.num_tokens}, D={enc.dim}, {cfg.dtype})")
    return folder


def main(argv: list[str]) -> int:
    """``wmpc encode data=<dir> encoder=<name> dtype=float16``: fill the latent cache."""
    return hydra_command("encode", _encode_task, argv, "wmpc encode")
