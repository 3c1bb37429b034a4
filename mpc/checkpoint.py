"""World-model checkpoints: one safetensors file, weights plus a JSON header.

The header (config, encoder fingerprint, normalisation, format version) lives in the safetensors
metadata under one key. :func:`save` writes atomically (a killed save leaves the previous file);
:func:`load` checks the format version, the expected config and the encoder before it returns a
model. :class:`mpc.world_model.WorldModel` exposes these as ``save`` / ``load`` / ``read_header``.
"""
from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

from mpc._io import atomic_path
from mpc.presets import WorldModelConfig

__all__ = ["FORMAT_VERSION", "RUNTIME_OPTIONS", "header", "save", "read_header", "load"]

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
META_KEY = "wmpc_world_model"  # the safetensors metadata key holding the JSON header
# predictor fields that change how the model runs, not what it computes: may differ on load
RUNTIME_OPTIONS = ("attn_backend", "autocast_bf16", "compile", "dropout")


def header(model) -> dict:
    """The JSON header of ``model``'s checkpoint: format version, config, fingerprint, normalisation."""
    return {"format_version": FORMAT_VERSION, "config": model.config.to_dict(),
            "encoder_fingerprint": model.config.encoder_fingerprint,
            "normalization": model.normalization()}


def save(model, path) -> Path:
    """Write ``model``'s weights and header (one safetensors file) atomically.

    Args:
        model: a :class:`~mpc.world_model.WorldModel`.
        path: target file (``.safetensors`` recommended); its directory is created.

    Returns:
        the path written.
    """
    from safetensors.torch import save_file

    tensors = {k: v.detach().to("cpu").contiguous().clone()  # clone: tied modules share storage
               for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={META_KEY: json.dumps(header(model))})
    return Path(path)


def read_header(path) -> dict:
    """The JSON header of a checkpoint (format_version, config, encoder_fingerprint, normalization).

    Raises:
        FileNotFoundError: no such file. ValueError: not a wmpc world-model checkpoint.
    """
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no world-model checkpoint at {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as e:  # noqa: BLE001 - safetensors raises several types
        raise ValueError(f"{path} is not a readable safetensors checkpoint (corrupt or "
                         f"truncated?): {e}") from e
    if META_KEY not in meta:
        raise ValueError(f"{path} has no wmpc world-model header; was it written by WorldModel.save?")
    try:
        return json.loads(meta[META_KEY])
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: corrupt world-model header: {e}") from e


def load(model_cls, path, encoder="auto", device=None, config: WorldModelConfig | None = None,
         overrides: dict | None = None):
    """Load a checkpoint written by :func:`save` as a ``model_cls`` (see ``WorldModel.load``).

    Returns:
        the model in eval mode.

    Raises:
        ValueError: corrupt file, other format version, mismatched config or encoder fingerprint.
    """
    saved = _saved_config(read_header(path), path)
    overrides = _checked_overrides(overrides)
    if config is not None:
        expected = _check_expected(config, saved, path)
        overrides = {**{k: getattr(expected.predictor, k) for k in RUNTIME_OPTIONS}, **overrides}
    if overrides:
        saved.predictor = dataclasses.replace(saved.predictor, **overrides)
    model = model_cls(saved)
    _load_weights(model, path)
    if device is not None:
        model.to(device)
    if isinstance(encoder, str) and encoder == "auto":
        encoder = None
        _attach_saved_encoder(model, path)
    if encoder is not None:
        model.attach_encoder(encoder)
    return model.eval()


def _saved_config(head: dict, path) -> WorldModelConfig:
    """The checkpoint's config, after checking its format version."""
    version = head.get("format_version")
    if version != FORMAT_VERSION:
        raise ValueError(f"{path} has world-model format version {version}, this wmpc reads "
                         f"version {FORMAT_VERSION}; retrain or convert the checkpoint")
    return WorldModelConfig.from_dict(head["config"])


def _checked_overrides(overrides: dict | None) -> dict:
    """``overrides`` as a dict, refusing anything but :data:`RUNTIME_OPTIONS`."""
    overrides = dict(overrides or {})
    bad = set(overrides) - set(RUNTIME_OPTIONS)
    if bad:
        raise ValueError(f"only runtime options {RUNTIME_OPTIONS} may be overridden on load, "
                         f"got {sorted(bad)}")
    return overrides


def _check_expected(config, saved: WorldModelConfig, path) -> WorldModelConfig:
    """Compare an expected config with the checkpoint's; returns the expected one as a config.

    Runtime options, encoder options and the encoder fingerprint may differ; the time encoding and
    every shape-defining field may not.
    """
    if isinstance(config, dict):
        config = WorldModelConfig.from_dict(config)
    exp, got = config.predictor, saved.predictor
    if exp.time_encoding != got.time_encoding:
        raise ValueError(f"checkpoint {path} uses time_encoding={got.time_encoding!r}, the "
                         f"requested config uses {exp.time_encoding!r}; the encoding is "
                         "part of the trained model and cannot change on load")
    a = {k: v for k, v in config.to_dict().items() if k not in ("predictor", "encoder_options")}
    b = {k: v for k, v in saved.to_dict().items() if k not in ("predictor", "encoder_options")}
    pa = {k: v for k, v in exp.to_dict().items() if k not in RUNTIME_OPTIONS}
    pb = {k: v for k, v in got.to_dict().items() if k not in RUNTIME_OPTIONS}
    diff = sorted([k for k in a if a[k] != b.get(k) and k != "encoder_fingerprint"]
                  + [f"predictor.{k}" for k in pa if pa[k] != pb.get(k)])
    if diff:
        raise ValueError(f"checkpoint {path} does not match the requested config in {diff}")
    return config


def _load_weights(model, path) -> None:
    """Copy the checkpoint's tensors into ``model``; every key must match."""
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(path))
    except Exception as e:  # noqa: BLE001
        raise ValueError(f"{path}: cannot read weights (corrupt or truncated?): {e}") from e
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    if missing or unexpected:
        raise ValueError(f"{path}: weights do not match the config (missing {missing}, "
                         f"unexpected {unexpected})")


def _attach_saved_encoder(model, path) -> None:
    """Rebuild the encoder the checkpoint names and attach it; on failure remember why, for encode()."""
    saved = model.config
    if not saved.encoder:
        return
    try:
        import encoders

        built = encoders.make_encoder(saved.encoder, **saved.encoder_options)
        model.attach_encoder(built.to(model.device))
    except (ValueError, FileNotFoundError, OSError, RuntimeError) as e:
        model.encoder_error = f"{type(e).__name__}: {e}"
        log.warning("%s: encoder %r not attached (%s); pass encoder=... to load()",
                    path, saved.encoder, e)
