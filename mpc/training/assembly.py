"""Config -> the encoder and the world model a training run fits.

``Trainer`` calls these in order: :func:`build_encoder` (JEPA pre-training first when
``encoder=jepa`` has no checkpoint), :func:`ensure_cache` (the encoder's latent cache, built once),
then :func:`build_model` (a :class:`mpc.world_model.WorldModel` from the model preset, sized by the
dataset's windows and carrying their normalisation stats).
"""
from __future__ import annotations

import logging
from pathlib import Path

from mpc._config import LOAD_ONLY_ENCODER_KEYS, split_encoder_config, to_plain
from mpc.training.distributed import DistContext

__all__ = ["model_options", "build_encoder", "ensure_cache", "build_model"]

log = logging.getLogger(__name__)


def model_options(cfg) -> dict:
    """The model preset ``cfg.model`` as a plain dict, without its ``name``."""
    options = to_plain(cfg.model)
    options.pop("name", None)
    return options


def _pretrain_jepa(cfg, options: dict, frameskip: int, ctx: DistContext) -> dict:
    """``encoder=jepa`` without a checkpoint: train it first (rank 0) into ``<out>/encoder/``.

    Returns:
        the encoder options with ``checkpoint`` set to the trained weights.
    """
    from mpc.training.encoder_trainer import CHECKPOINT_NAME, train_jepa

    folder = Path(cfg.out) / "encoder"
    path = folder / CHECKPOINT_NAME
    build = {k: v for k, v in options.items() if k not in LOAD_ONLY_ENCODER_KEYS}
    if ctx.is_main and not path.exists():
        log.info("encoder=jepa has no checkpoint: training it first for %d steps into %s "
                 "(or train one with `wmpc train-encoder encoder=jepa` and pass encoder.checkpoint=...)",
                 int(cfg.train.jepa_steps), folder)
        train_jepa(cfg.data, folder, steps=int(cfg.train.jepa_steps), encoder_options=build,
                   frameskip=frameskip, seed=int(cfg.seed), device=str(ctx.device),
                   progress=bool(cfg.get("progress", True)))
    ctx.barrier()
    return {**build, "checkpoint": str(path)}


def build_encoder(cfg, frameskip: int, ctx: DistContext) -> tuple[str, dict, object]:
    """The frozen encoder whose latents the world model learns on.

    Args:
        cfg: the composed ``configs/train.yaml``.
        frameskip: the model preset's env steps per model step (for JEPA pre-training).
        ctx: the distributed context (rank 0 pre-trains, the others wait).

    Returns:
        ``(name, options, encoder)``: ``options`` are what a checkpoint records to rebuild it.

    Raises:
        ValueError: no encoder name, unknown name, or a trainable encoder without trained weights.
    """
    import encoders

    name, options = split_encoder_config(cfg.encoder)
    if name == "jepa" and options.get("checkpoint") is None and options.get("weights") is None:
        options = _pretrain_jepa(cfg, options, frameskip, ctx)
    encoder = encoders.make_encoder(name, **options)
    if encoder.trainable:
        raise ValueError(f"encoder {name!r} is trainable and was built without a trained checkpoint, so "
                         f"its tokens cannot be cached; train it first with `wmpc train-encoder "
                         f"encoder={name} data={cfg.data}`, then pass encoder.checkpoint=<its checkpoint>")
    return name, options, encoder


def ensure_cache(data_dir: Path, encoder, ctx: DistContext, batch_size: int, progress: bool = True) -> None:
    """Build the latent cache of ``encoder`` once (rank 0) if it is missing or incomplete."""
    from mpc import data as wdata
    from mpc.data.episodes import read_meta

    folder = wdata.cache_path(data_dir, encoder.fingerprint)
    episodes = int(read_meta(data_dir)["episodes"])  # the episode files are checked when they are read
    done = len(list(folder.glob("episode_*.h5"))) if (folder / "cache.json").exists() else 0
    if done < episodes:
        if ctx.is_main:
            log.info("latent cache for encoder %s is missing in %s (%d of %d episodes): encoding the "
                     "dataset once now (same as `wmpc encode data=%s encoder=...`)",
                     encoder.fingerprint, data_dir, done, episodes, data_dir)
            encoder.to(ctx.device)
            # runs training on one dataset at once (a sweep, suite entries sharing data): the second
            # waits for the first's encoding and reuses it
            wdata.encode_dataset(data_dir, encoder, batch_size=batch_size, progress=progress, wait=True)
            encoder.to("cpu")
        ctx.barrier()


def build_model(cfg, windows, encoder: tuple[str, dict]):
    """A WorldModel from the preset ``cfg.model``, sized by ``windows``, with their normalisation.

    Args:
        cfg: the composed ``configs/train.yaml``.
        windows: the training :class:`mpc.data.WindowDataset` (N, D, A, P, frameskip and stats).
        encoder: ``(name, options)`` of the encoder the latents come from.

    Raises:
        ValueError: the preset's expected N or D differ from the latents'.
    """
    from mpc.world_model import WorldModel, config_from_preset, task_from_dataset_meta

    enc_name, enc_options = encoder
    preset = {**to_plain(cfg.model), "frameskip": windows.frameskip}
    config = config_from_preset(preset, num_tokens=windows.num_tokens, token_dim=windows.token_dim,
                                env_action_dim=windows.env_action_dim, proprio_dim=windows.proprio_dim,
                                encoder=enc_name, encoder_options=enc_options,
                                encoder_fingerprint=windows.fingerprint)
    model = WorldModel(config)
    model.set_normalization(windows.stats)
    model.set_task(task_from_dataset_meta(windows.meta))  # what planning needs, from dataset.json
    return model
