"""Machinery shared by the trainable backends: freezing, checkpoints and the registry builder.

A checkpoint is one ``.safetensors`` file. Its metadata holds ``format_version``, ``backend`` and
``config`` (JSON of the constructor arguments), so a checkpoint alone rebuilds its encoder.
Files are written atomically (temp file in the same directory, then ``os.replace``).

``make_encoder(name, checkpoint=PATH)`` loads and freezes; ``make_encoder(name, weights="random")``
gives an untrained (frozen, ``pretrained=False``) encoder; ``make_encoder(name)`` alone is an error,
so planning never runs on random weights by accident.
"""
from __future__ import annotations

import inspect
import json
import logging
import os
import tempfile
from pathlib import Path

import torch

from .base import Encoder

__all__ = ["FORMAT_VERSION", "TrainableEncoder", "build_trainable", "trainable_status"]

log = logging.getLogger(__name__)

FORMAT_VERSION = 1


class TrainableEncoder(Encoder):
    """An :class:`Encoder` with weights learned by ``wmpc train-encoder``.

    Subclasses call ``super().__init__(config)`` with their constructor arguments as a dict (it
    must contain ``image_size``), set ``ARCH_KEYS`` (config keys that change the weights' shapes or
    meaning) and implement ``forward_tokens``, ``num_tokens``, ``dim`` and ``training_loss``.
    Inputs are normalised to [-1, 1] (mean = std = 0.5).
    """

    mean = (0.5, 0.5, 0.5)
    std = (0.5, 0.5, 0.5)
    interpolation = "bilinear"
    ARCH_KEYS: tuple[str, ...] = ("image_size",)

    def __init__(self, config: dict):
        super().__init__(config["image_size"])
        self.config = dict(config)
        # Token standardisation, set from training frames when training ends (identity until then):
        # encode() returns (forward_tokens - token_shift) / token_scale, so world models and planners
        # see unit-scale tokens whatever scale the backend's loss left them at.
        self.register_buffer("token_shift", torch.zeros(int(config.get("dim", 1))))  # (D,)
        self.register_buffer("token_scale", torch.ones(1))  # (1,): one scale keeps distances' shape

    @property
    def variant(self) -> str:  # type: ignore[override]
        return f"{self.token_mode}-{self.num_tokens}x{self.dim}"

    # --- frozen / trainable --------------------------------------------------------------
    def freeze(self) -> "TrainableEncoder":
        """Eval mode, no gradients, ``trainable=False`` (what planning and caching need)."""
        self.trainable = False
        self.requires_grad_(False)
        self.eval()
        self._weights_digest = None
        return self

    def unfreeze(self) -> "TrainableEncoder":
        """Train mode with gradients, ``trainable=True`` (what training needs)."""
        self.trainable = True
        self.requires_grad_(True)
        self.train()
        return self

    def encode(self, images) -> torch.Tensor:
        """Images -> standardised tokens ``(B, N, D)``: ``(forward_tokens - token_shift) / token_scale``."""
        return (super().encode(images) - self.token_shift) / self.token_scale

    @torch.no_grad()
    def set_token_stats(self, tokens: torch.Tensor) -> None:
        """Standardise :meth:`encode` with raw tokens ``(M, N, D)`` of training frames (``forward_tokens``).

        ``token_shift`` becomes the per-dim mean; ``token_scale`` the root mean over dims of the
        per-dim variance (one scale for all dims, so latent distances keep their shape).
        """
        z = tokens.detach().reshape(-1, tokens.shape[-1]).float()  # (M*N, D)
        self.token_shift.copy_(z.mean(0))
        self.token_scale.copy_(z.var(0).mean().sqrt().clamp_min(1e-8).reshape(1))
        self._weights_digest = None

    def to_normalized(self, images) -> torch.Tensor:
        """Images (any accepted form) -> ``(B, 3, S, S)`` in [-1, 1] on the encoder's device."""
        return self.preprocess(images)

    def from_normalized(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, S, S)`` in [-1, 1] -> float images in [0, 1]."""
        return (x * 0.5 + 0.5).clamp(0.0, 1.0)

    def check_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """Check ``tokens`` (as :meth:`encode` returns them) is ``(B, N, D)`` for this encoder.

        Returns the raw tokens the decoder works on (standardisation undone), on the encoder's device.

        Raises:
            ValueError: wrong rank or shape.
        """
        if not isinstance(tokens, torch.Tensor) or tokens.ndim != 3 or tuple(tokens.shape[1:]) != (
                self.num_tokens, self.dim):
            got = tuple(tokens.shape) if isinstance(tokens, torch.Tensor) else type(tokens).__name__
            raise ValueError(f"expected tokens of shape (B, {self.num_tokens}, {self.dim}) as returned by "
                             f"encode(); got {got}")
        return tokens.to(self.device, torch.float32) * self.token_scale + self.token_shift

    @staticmethod
    def foreground_weights(x: torch.Tensor, fg_weight: float, threshold: float = 0.1) -> torch.Tensor | None:
        """Per-pixel loss weights ``(B, 1, H, W)`` that up-weight what differs from the batch's background.

        The background is the per-pixel median over the batch (static camera: the floor, walls);
        pixels further than ``threshold`` from it (moving objects, a few pixels each) get weight
        ``1 + fg_weight``, the rest 1, then weights are rescaled to mean 1. Small objects would
        otherwise be ignored by a mean-squared loss. ``None`` when ``fg_weight`` is 0.
        """
        if fg_weight <= 0 or x.shape[0] < 3:
            return None
        diff = (x - x.median(dim=0, keepdim=True).values).abs().mean(dim=1, keepdim=True)  # (B, 1, H, W)
        w = 1.0 + fg_weight * (diff > threshold).to(x.dtype)
        return w / w.mean()

    def training_loss(self, *args, **kwargs) -> tuple[torch.Tensor, dict[str, float]]:
        raise NotImplementedError

    # --- checkpoints ----------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Write weights + config to ``path`` (``.safetensors``) atomically. Returns the path."""
        from safetensors.torch import save_file

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {"format_version": str(FORMAT_VERSION), "backend": self.backend,
                "config": json.dumps(self.config, sort_keys=True)}
        state = {k: v.detach().to("cpu").contiguous() for k, v in self.state_dict().items()}
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        try:
            save_file(state, tmp, metadata=meta)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return path

    @classmethod
    def read_checkpoint(cls, path: str | os.PathLike) -> tuple[dict, dict[str, torch.Tensor]]:
        """Read and validate a checkpoint for this backend. Returns ``(config, state_dict)``.

        Raises:
            FileNotFoundError: no file at ``path``.
            ValueError: unreadable/corrupt file, wrong format version or another backend's checkpoint.
        """
        from safetensors import safe_open

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"encoder checkpoint {str(path)!r} does not exist; train one with "
                                    f"`wmpc train-encoder encoder={cls.backend} data=DIR out=DIR`")
        try:
            state = {}
            with safe_open(str(path), framework="pt", device="cpu") as f:
                meta = f.metadata() or {}
                for k in f.keys():
                    state[k] = f.get_tensor(k)
        except Exception as e:  # safetensors raises its own error types for corrupt headers/data
            raise ValueError(f"could not read encoder checkpoint {str(path)!r} ({type(e).__name__}: {e}); "
                             "expected a .safetensors file written by `wmpc train-encoder`") from e
        version = meta.get("format_version")
        if version != str(FORMAT_VERSION):
            raise ValueError(f"encoder checkpoint {str(path)!r} has format_version={version!r}, this wmpc "
                             f"reads {FORMAT_VERSION}; retrain it with `wmpc train-encoder`")
        if meta.get("backend") != cls.backend:
            raise ValueError(f"encoder checkpoint {str(path)!r} holds a {meta.get('backend')!r} encoder, "
                             f"not {cls.backend!r}; use make_encoder({meta.get('backend')!r}, checkpoint=...)")
        try:
            config = json.loads(meta["config"])
        except (KeyError, json.JSONDecodeError) as e:
            raise ValueError(f"encoder checkpoint {str(path)!r} has no readable config in its metadata") from e
        return config, state

    @classmethod
    def load(cls, path: str | os.PathLike, **options) -> "TrainableEncoder":
        """Rebuild a frozen encoder from a checkpoint written by :meth:`save`.

        Args:
            path: the ``.safetensors`` file.
            **options: optional config values; architecture keys must equal the checkpoint's.

        Raises:
            FileNotFoundError, ValueError: see :meth:`read_checkpoint`; also options that contradict
                the checkpoint's architecture, or weights that do not fit it.
        """
        config, state = cls.read_checkpoint(path)
        # options added after a checkpoint was written (architecture or training) take their
        # constructor default there, so a config file that names them still loads the older file
        params = inspect.signature(cls.__init__).parameters
        known = {k: p.default for k, p in params.items()
                 if k != "self" and p.default is not inspect.Parameter.empty}
        defaults = {k: known[k] for k in cls.ARCH_KEYS if k in known}
        config = {**{k: v for k, v in known.items() if k not in config}, **config}
        # an architecture option at its default is a config file's value, not a request: the checkpoint's
        # architecture stands (so `wmpc ... encoder=jepa encoder.checkpoint=...` loads a width-8 file)
        options = {k: v for k, v in options.items() if not (k in defaults and v == defaults[k])}
        clash = {k: (v, config.get(k)) for k, v in options.items()
                 if k in cls.ARCH_KEYS and config.get(k) != v}
        if clash:
            detail = ", ".join(f"{k}={v!r} (checkpoint has {c!r})" for k, (v, c) in clash.items())
            raise ValueError(f"options contradict encoder checkpoint {str(path)!r}: {detail}; drop them or "
                             "train a checkpoint with these settings")
        unknown = set(options) - set(config)
        if unknown:
            raise ValueError(f"unknown {cls.backend} options {sorted(unknown)}; known: {sorted(config)}")
        config.update({k: v for k, v in options.items() if k not in cls.ARCH_KEYS})
        enc = cls(**config)
        missing, unexpected = enc.load_state_dict(state, strict=False)
        missing = [k for k in missing if k not in ("token_shift", "token_scale")]  # older files: identity
        shape_bad = [k for k, v in enc.state_dict().items() if k in state and state[k].shape != v.shape]
        if missing or unexpected or shape_bad:
            raise ValueError(f"encoder checkpoint {str(path)!r} does not fit its config (missing {missing}, "
                             f"unexpected {unexpected}, wrong shapes {shape_bad})")
        enc.pretrained = True
        enc.checkpoint = str(path)
        return enc.freeze()


def build_trainable(cls: type[TrainableEncoder], checkpoint: str | os.PathLike | None = None,
                    weights: str | None = None, **options) -> TrainableEncoder:
    """Registry builder: ``checkpoint=PATH`` loads and freezes; ``weights="random"`` builds untrained.

    Raises:
        ValueError: neither or both given, or an unknown ``weights`` value.
    """
    if checkpoint is not None and weights is not None:
        raise ValueError(f"pass either checkpoint=PATH or weights='random' to encoder {cls.backend!r}, not both")
    if checkpoint is not None:
        return cls.load(checkpoint, **options)
    if weights != "random":
        raise ValueError(
            f"encoder {cls.backend!r} is trainable and has no built-in weights: pass checkpoint=PATH "
            f"(train one with `wmpc train-encoder encoder={cls.backend} data=DIR out=DIR`), or "
            f"weights='random' to get an untrained encoder on purpose (got weights={weights!r})")
    enc = cls(**options)
    enc.pretrained = False
    enc.checkpoint = None
    return enc.freeze()


def trainable_status(name: str) -> list[dict]:
    """``weights_status`` row for a trainable backend (weights come from a checkpoint file)."""
    return [{"name": name, "available": False, "status": "trainable",
             "detail": f"`wmpc train-encoder encoder={name} data=DIR out=DIR`, then "
                       f"checkpoint=OUT/encoder.safetensors (weights='random' for untrained)"}]
