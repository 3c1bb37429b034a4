"""World-model checkpoints: one safetensors file, weights plus a JSON header.

The header (config, encoder fingerprint, normalisation, task, format version) lives in the
safetensors metadata under one key. :func:`save` writes atomically (a killed save leaves the previous
file); :func:`load` checks the format version, the expected config and the encoder before it returns
a model. :class:`mpc.world_model.WorldModel` exposes these as ``save`` / ``load`` / ``read_header``.

The task record (:class:`TaskInfo`) holds what planning needs of the data the model learnt from:
the env's action bounds, the camera's image size, the env id and its options. The trainer fills it
from the dataset's ``dataset.json`` (:func:`task_from_dataset_meta`); checkpoints written before it
existed load with every field None (planning then needs ``action_space`` from the caller).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mpc._io import atomic_path
from mpc.presets import WorldModelConfig

__all__ = ["FORMAT_VERSION", "RUNTIME_OPTIONS", "TaskInfo", "task_from_dataset_meta", "header", "save",
           "read_header", "load"]

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
META_KEY = "wmpc_world_model"  # the safetensors metadata key holding the JSON header
# predictor fields that change how the model runs, not what it computes: may differ on load
RUNTIME_OPTIONS = ("attn_backend", "autocast_bf16", "compile", "dropout")


@dataclass(frozen=True)
class TaskInfo:
    """What planning needs of the task a world model learnt (stored in its checkpoint).

    Every field may be None (unknown: e.g. a checkpoint written before tasks were stored). The
    model's own ``frameskip`` (env steps per model step) lives in its config; ``env_options`` holds
    the env's constructor options, whose ``frameskip`` (if any) is the env's action repeat.

    Raises:
        ValueError: only one of the bounds, bounds of different lengths, non-finite bounds,
            ``low > high``, or an image size that is not a whole number >= 1.
    """

    action_low: tuple[float, ...] | None = None  # (A,) the env's action Box, per env action
    action_high: tuple[float, ...] | None = None  # (A,)
    image_size: int | None = None  # side of the square camera images the model was trained on
    env: str | None = None  # wmpc env name or gymnasium id the data came from
    env_options: dict[str, Any] | None = None  # the env's constructor options (image_size included)

    def __post_init__(self):
        low, high = self.action_low, self.action_high
        if (low is None) != (high is None):
            raise ValueError("give both action_low and action_high, or neither")
        if low is not None:
            low, high = _float_tuple("action_low", low), _float_tuple("action_high", high)
            if len(low) != len(high) or not low:
                raise ValueError(f"action_low and action_high must be (A,) of the same length >= 1, got "
                                 f"{len(low)} and {len(high)} values")
            if any(a > b for a, b in zip(low, high)):
                raise ValueError(f"action_low must be <= action_high, got {list(low)} and {list(high)}")
            object.__setattr__(self, "action_low", low)
            object.__setattr__(self, "action_high", high)
        if self.image_size is not None:
            size = self.image_size
            if isinstance(size, bool) or not isinstance(size, (int, float)) or size != int(size) or size < 1:
                raise ValueError(f"image_size must be a whole number >= 1, got {size!r}")
            object.__setattr__(self, "image_size", int(size))
        if self.env is not None and not isinstance(self.env, str):
            raise ValueError(f"env must be an env name (str), got {self.env!r}")
        if self.env_options is not None:
            if not isinstance(self.env_options, dict):
                raise ValueError(f"env_options must be a dict, got {type(self.env_options).__name__}")
            object.__setattr__(self, "env_options", dict(self.env_options))

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for key in ("action_low", "action_high"):
            d[key] = None if d[key] is None else list(d[key])
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> "TaskInfo":
        """Inverse of :meth:`to_dict` (None or ``{}``: nothing known).

        Raises:
            ValueError: unknown keys (the message lists the valid ones) or bad values.
        """
        if d is not None and not isinstance(d, dict):
            raise ValueError(f"a task record is a dict, got {type(d).__name__}")
        d = dict(d or {})
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown task fields {sorted(unknown)}; valid: {sorted(names)}")
        return cls(**d)


def _float_tuple(name: str, values) -> tuple[float, ...]:
    try:
        out = tuple(float(v) for v in values)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name} must be a sequence of numbers, got {values!r}") from e
    if not all(math.isfinite(v) for v in out):
        raise ValueError(f"{name} must be finite, got {list(out)}; planners need a bounded action box")
    return out


def task_from_dataset_meta(meta: dict) -> TaskInfo:
    """The :class:`TaskInfo` of a dataset, from its ``dataset.json`` dict.

    Reads ``action_low``, ``action_high``, ``env`` and ``env_options`` (whose ``image_size`` is the
    camera's); a missing key leaves its field None.

    Raises:
        ValueError: bad values (see :class:`TaskInfo`).
    """
    options = meta.get("env_options")
    options = dict(options) if isinstance(options, dict) else None
    size = meta.get("image_size", (options or {}).get("image_size"))
    return TaskInfo(action_low=meta.get("action_low"), action_high=meta.get("action_high"),
                    image_size=size, env=meta.get("env"), env_options=options)


def header(model) -> dict:
    """The JSON header of ``model``'s checkpoint: format version, config, fingerprint, normalisation, task."""
    return {"format_version": FORMAT_VERSION, "config": model.config.to_dict(),
            "encoder_fingerprint": model.config.encoder_fingerprint,
            "normalization": model.normalization(), "task": model.task.to_dict()}


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
    """The JSON header of a checkpoint (format_version, config, encoder_fingerprint, normalization,
    and ``task`` when the checkpoint has one).

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
    head = read_header(path)
    saved = _saved_config(head, path)
    overrides = _checked_overrides(overrides)
    if config is not None:
        expected = _check_expected(config, saved, path)
        overrides = {**{k: getattr(expected.predictor, k) for k in RUNTIME_OPTIONS}, **overrides}
    if overrides:
        saved.predictor = dataclasses.replace(saved.predictor, **overrides)
    try:
        model = model_cls(saved)
    except (ValueError, TypeError, RuntimeError) as e:  # values that pass parsing but build nothing
        raise ValueError(f"{path}: the world-model config in its header cannot be built ({e}); "
                         "re-save the model or retrain it") from e
    _load_weights(model, path)
    try:
        model.set_task(TaskInfo.from_dict(head.get("task")))
    except ValueError as e:
        raise ValueError(f"{path}: bad task record in the header: {e}") from e
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
    version = head.get("format_version") if isinstance(head, dict) else None
    if version != FORMAT_VERSION:
        raise ValueError(f"{path} has world-model format version {version}, this wmpc reads "
                         f"version {FORMAT_VERSION}; retrain or convert the checkpoint")
    try:
        return WorldModelConfig.from_dict(head["config"])
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise ValueError(f"{path}: the world-model config in its header is damaged ({type(e).__name__}: "
                         f"{e}); re-save the model or retrain it") from e


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
