"""Config plumbing: the only copy of each in ``mpc`` and ``benchmarks``.

- :func:`config_dir`: where the shipped ``configs/`` package lies (works from a wheel too).
- :func:`group_config`: one ``configs/<group>/<name>.yaml`` composed by hydra, as a plain dict.
- :func:`to_plain`: OmegaConf nodes (and numpy scalars) -> plain Python values.
- :func:`resolve_device`: ``"auto"`` / ``None`` / a name -> a ``torch.device``.
- :func:`split_encoder_config`: an ``encoder`` config node -> ``(name, options)``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["config_dir", "config_names", "group_config", "to_plain", "resolve_device",
           "split_encoder_config", "LOAD_ONLY_ENCODER_KEYS"]

# encoder options that say where weights come from, not how the network is built
LOAD_ONLY_ENCODER_KEYS = ("checkpoint", "weights")


def config_dir() -> Path:
    """The folder of the shipped hydra configs (the ``configs`` package, editable or installed)."""
    from importlib import resources

    return Path(str(resources.files("configs")))


def config_names(group: str) -> list[str]:
    """Names of the yaml files in ``configs/<group>/``, sorted."""
    return sorted(p.stem for p in (config_dir() / group).glob("*.yaml"))


def group_config(group: str, name: str) -> dict[str, Any]:
    """``configs/<group>/<name>.yaml`` composed by hydra (its own ``defaults`` included), as a dict.

    Raises:
        ValueError: no such config (the message lists the known ones).
    """
    if not (config_dir() / group / f"{name}.yaml").is_file():
        raise ValueError(f"no {group} config {name!r}; known {group} configs: "
                         f"{', '.join(config_names(group)) or 'none'}")
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():  # inside a running hydra app: compose beside it
        saved = GlobalHydra.instance().hydra
        GlobalHydra.instance().clear()
    else:
        saved = None
    try:
        with initialize_config_dir(config_dir=str(config_dir() / group), version_base=None):
            cfg = compose(config_name=name)
    finally:
        if saved is not None:
            GlobalHydra.instance().initialize(saved)
    return to_plain(cfg)


def to_plain(x) -> Any:
    """OmegaConf containers (resolved) and numpy scalars/arrays -> plain JSON-like Python values.

    Anything else is returned as a JSON round trip of itself (so tuples become lists), which keeps
    settings comparable across a save and a load.
    """
    try:
        from omegaconf import OmegaConf

        if OmegaConf.is_config(x):
            x = OmegaConf.to_container(x, resolve=True)
    except ImportError:  # pragma: no cover
        pass
    from mpc._io import json_default

    return json.loads(json.dumps(x, default=json_default))


def resolve_device(name=None):
    """``None`` / ``"auto"`` -> CUDA when present, else CPU; anything else -> ``torch.device(name)``.

    Raises:
        ValueError: a CUDA device was asked for and none is present, or the name is not a device.
    """
    import torch

    if name is None or str(name) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(str(name))
    except RuntimeError as e:
        raise ValueError(f"device={name!r} is not a device name (use auto, cpu, cuda or cuda:N)") from e
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={name!r} was asked for but no CUDA device is present; use device=cpu "
                         "or device=auto")
    return device


def split_encoder_config(encoder, *, drop_load_keys: bool = False) -> tuple[str, dict[str, Any]]:
    """An ``encoder`` config (node or dict with a ``name``) -> ``(name, options)``.

    Args:
        encoder: e.g. ``cfg.encoder`` of a hydra command.
        drop_load_keys: also drop ``checkpoint`` / ``weights`` and ``None`` values (to build an
            encoder for training rather than load one).

    Raises:
        ValueError: no ``name``.
    """
    options = to_plain(encoder)
    if not isinstance(options, dict) or not options.get("name"):
        raise ValueError("the encoder config needs a `name` (e.g. encoder=dinov2, encoder=jepa, or "
                         "+encoder.name=<registered name>)")
    options = dict(options)
    name = options.pop("name")
    if drop_load_keys:
        options = {k: v for k, v in options.items() if k not in LOAD_ONLY_ENCODER_KEYS and v is not None}
    return str(name), options
