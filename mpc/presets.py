"""The world model's config and its presets.

:class:`WorldModelConfig` holds everything that defines a world model's shapes and meaning (it is
stored in every checkpoint). A preset (``configs/model/<name>.yaml``, shipped inside the installed
package) fills in the predictor architecture; :func:`config_from_preset` adds the data's shapes
(N, D from the latents; A, P from the dataset) and the encoder the latents come from.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from mpc._config import config_dir, config_names, to_plain
from mpc.predictor import PredictorConfig

__all__ = ["WorldModelConfig", "load_preset", "config_from_preset"]

# preset keys that are not WorldModelConfig fields: the preset's name and the expected N and D
_PRESET_ONLY = ("name", "num_tokens", "token_dim")


@dataclass
class WorldModelConfig:
    """Everything that defines a world model's shapes and meaning (stored in checkpoints)."""

    num_tokens: int  # N tokens per frame
    token_dim: int  # D
    env_action_dim: int  # A (one env step)
    proprio_dim: int  # P
    frameskip: int = 1  # env steps per model step; Am = frameskip * A
    encoder: str | None = None  # encoder registry name (for information and `encode`)
    encoder_options: dict[str, Any] = field(default_factory=dict)  # make_encoder options
    encoder_fingerprint: str | None = None  # fingerprint of the encoder the latents came from
    predictor: PredictorConfig = field(default_factory=PredictorConfig)
    proprio_loss_weight: float = 1.0  # weight of the proprio MSE in the loss
    rollout_loss_weight: float = 0.0  # weight of the multi-step loss: the window's num_pred frames rolled
    # out from its first num_hist on the model's own predictions (0: teacher forcing only, DINO-WM)
    ensemble: int = 1  # K predictors trained as one batched module (mpc.ensemble); 1: a single one
    ensemble_kind: str = "full"  # full: K whole predictors; heads: one shared trunk, K output heads

    def __post_init__(self):
        if isinstance(self.predictor, dict):
            self.predictor = PredictorConfig.from_dict(self.predictor)
        for name in ("num_tokens", "token_dim", "env_action_dim", "frameskip", "ensemble"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        from mpc.ensemble import ENSEMBLE_KINDS

        if self.ensemble_kind not in ENSEMBLE_KINDS:
            raise ValueError(f"ensemble_kind must be one of {ENSEMBLE_KINDS}, got {self.ensemble_kind!r}")
        if self.ensemble_kind == "heads" and self.ensemble > 1 and self.predictor.kind != "transformer":
            raise ValueError("ensemble_kind='heads' needs predictor.kind='transformer' (the heads share its "
                             f"trunk), got {self.predictor.kind!r}; use ensemble_kind='full'")
        if int(self.proprio_dim) < 0:
            raise ValueError(f"proprio_dim must be >= 0, got {self.proprio_dim}")
        if float(self.rollout_loss_weight) < 0:
            raise ValueError(f"rollout_loss_weight must be >= 0, got {self.rollout_loss_weight}")
        if self.rollout_loss_weight > 0 and self.predictor.num_pred < 2:
            raise ValueError("rollout_loss_weight > 0 rolls the window's num_pred frames out on the model's "
                             f"own predictions and needs predictor.num_pred >= 2, got {self.predictor.num_pred}"
                             "; set model.predictor.num_pred (e.g. 5)")
        if self.rollout_loss_weight > 0 and self.ensemble > 1:
            raise ValueError("rollout_loss_weight > 0 is for a single model (ensemble=1), got "
                             f"ensemble={self.ensemble}")

    @property
    def action_dim(self) -> int:
        """Am = frameskip * A."""
        return self.frameskip * self.env_action_dim

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["predictor"] = self.predictor.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "WorldModelConfig":
        """Inverse of :meth:`to_dict`.

        Raises:
            ValueError: unknown keys (the message lists the valid ones) or bad values.
        """
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown world model options {sorted(unknown)}; valid: {sorted(names)}")
        d = dict(d)
        d["predictor"] = PredictorConfig.from_dict(dict(d.get("predictor") or {}))
        d["encoder_options"] = dict(d.get("encoder_options") or {})
        return cls(**d)


def load_preset(name: str) -> dict[str, Any]:
    """Read ``configs/model/<name>.yaml`` (from the installed ``configs`` package) as a plain dict.

    Raises:
        ValueError: no such preset (the message lists the available ones).
    """
    import yaml

    path = config_dir() / "model" / f"{name}.yaml"
    if not path.is_file():
        raise ValueError(f"unknown model preset {name!r}; available: {config_names('model')}")
    with open(path) as f:
        return yaml.safe_load(f)


def config_from_preset(preset, *, num_tokens: int, token_dim: int, env_action_dim: int,
                       proprio_dim: int, encoder: str | None = None,
                       encoder_options: dict | None = None,
                       encoder_fingerprint: str | None = None) -> WorldModelConfig:
    """Build a :class:`WorldModelConfig` from a model preset (``configs/model/*.yaml``) and data shapes.

    Args:
        preset: preset name, or its dict / omegaconf node (``cfg.model`` in hydra commands).
        num_tokens, token_dim: N and D of the latents (checked against the preset's expected
            values when those are not null).
        env_action_dim, proprio_dim: A and P of the dataset.
        encoder, encoder_options, encoder_fingerprint: the encoder the latents come from.

    Returns:
        the config.

    Raises:
        ValueError: the latents' N or D differ from the preset's expected ones, or bad options.
    """
    if isinstance(preset, str):
        preset = load_preset(preset)
    elif not isinstance(preset, dict):
        preset = to_plain(preset)
    preset = dict(preset)
    for key, got in (("num_tokens", num_tokens), ("token_dim", token_dim)):
        want = preset.get(key)
        if want is not None and int(want) != int(got):
            raise ValueError(f"model preset {preset.get('name', '?')!r} expects {key}={want}, the "
                             f"latents have {got}; pick an encoder that matches or set "
                             f"model.{key}=null")
    rest = {k: v for k, v in preset.items() if k not in _PRESET_ONLY}
    return WorldModelConfig.from_dict({**rest, "num_tokens": int(num_tokens),
                                       "token_dim": int(token_dim),
                                       "env_action_dim": int(env_action_dim),
                                       "proprio_dim": int(proprio_dim), "encoder": encoder,
                                       "encoder_options": dict(encoder_options or {}),
                                       "encoder_fingerprint": encoder_fingerprint})
