"""The `Encoder` interface: images in, tokens out.

Every backend (``dinov2``, ``vae``, ``diffusion``, ``jepa``) subclasses :class:`Encoder` and
implements :meth:`Encoder.forward_tokens` on preprocessed float images. The base class owns input
checking, resizing, normalisation, chunking over large batches and the frozen/trainable switch, so
all backends accept exactly the same inputs and fail with the same clear errors.

Accepted images (see :func:`to_float_images`):
  * uint8 ``(H, W, 3)`` or ``(B, H, W, 3)`` numpy arrays or tensors (what envs and cameras give);
  * float ``(B, 3, H, W)`` or ``(3, H, W)`` tensors (or arrays) with values in [0, 1].
"""
from __future__ import annotations

import hashlib
from typing import Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["Encoder", "to_float_images", "tensor_digest"]

def to_float_images(images, device: torch.device | str | None = None) -> torch.Tensor:
    """Check an image batch and turn it into float ``(B, 3, H, W)`` in [0, 1].

    Args:
        images: uint8 ``(H, W, 3)`` / ``(B, H, W, 3)`` (numpy or torch), or float
            ``(3, H, W)`` / ``(B, 3, H, W)`` in [0, 1] (numpy or torch).
        device: where the result lives (default: where the input is; numpy goes to CPU).

    Returns:
        float32 tensor ``(B, 3, H, W)`` with values in [0, 1].

    Raises:
        ValueError: wrong type, rank, channel count or dtype, values outside [0, 1], or NaN/inf.
    """
    expected = ("expected uint8 images (H, W, 3) or (B, H, W, 3), or float images (3, H, W) or "
                "(B, 3, H, W) with values in [0, 1]")
    if isinstance(images, np.ndarray):
        if images.dtype == np.uint8:
            x = torch.from_numpy(np.ascontiguousarray(images))
        elif np.issubdtype(images.dtype, np.floating):
            x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
        else:
            raise ValueError(f"{expected}; got a numpy array of dtype {images.dtype}")
    elif isinstance(images, torch.Tensor):
        x = images
    else:
        raise ValueError(f"{expected}; got {type(images).__name__}")
    if x.dtype == torch.uint8:
        if x.ndim == 3:
            x = x.unsqueeze(0)
        if x.ndim != 4 or x.shape[-1] != 3:
            raise ValueError(f"{expected}; got uint8 of shape {tuple(x.shape)} "
                             "(uint8 images must be channels-last with 3 channels)")
        if x.shape[1] == 0 or x.shape[2] == 0:
            raise ValueError(f"{expected}; got uint8 images of size {x.shape[1]}x{x.shape[2]} (no pixels)")
        if device is not None:
            x = x.to(device)
        return x.permute(0, 3, 1, 2).float().div_(255.0)
    if not torch.is_floating_point(x):
        raise ValueError(f"{expected}; got a tensor of dtype {x.dtype}")
    if x.ndim == 3:
        x = x.unsqueeze(0)
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"{expected}; got float of shape {tuple(x.shape)} "
                         "(float images must be channels-first with 3 channels)")
    if x.shape[2] == 0 or x.shape[3] == 0:
        raise ValueError(f"{expected}; got float images of size {x.shape[2]}x{x.shape[3]} (no pixels)")
    if device is not None:
        x = x.to(device)
    x = x.float()
    if not torch.isfinite(x).all():
        raise ValueError("images contain NaN or inf; expected finite values in [0, 1]")
    if x.numel() == 0:  # an empty batch: nothing to check, tokens (0, N, D)
        return x
    lo, hi = float(x.min()), float(x.max())
    if lo < 0.0 or hi > 1.0:
        raise ValueError(f"float images must lie in [0, 1], got values in [{lo:.3g}, {hi:.3g}]; "
                         "divide uint8 pixels by 255 or pass the uint8 array itself")
    return x


def tensor_digest(tensors: dict[str, torch.Tensor] | Sequence[torch.Tensor], length: int = 12) -> str:
    """A short, stable hash of tensor values (for fingerprints of weights)."""
    h = hashlib.sha256()
    items = sorted(tensors.items()) if isinstance(tensors, dict) else enumerate(tensors)
    for key, t in items:
        h.update(str(key).encode())
        t = t.detach().to("cpu").contiguous()
        h.update(str(tuple(t.shape)).encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:length]


class Encoder(nn.Module):
    """Image -> tokens ``(B, N, D)``.

    Subclasses set ``backend``, ``variant``, ``image_size``, ``trainable``, ``pretrained``,
    ``token_mode``, ``mean``/``std`` (normalisation applied after resizing) and implement
    :meth:`forward_tokens` and the ``num_tokens`` / ``dim`` properties.
    """

    backend: str = "base"
    variant: str = ""
    token_mode: str = "patch"
    trainable: bool = False
    pretrained: bool = False
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    chunk_size: int = 64  # images per forward pass in :meth:`encode` (bounds memory)
    interpolation: str = "bicubic"

    def __init__(self, image_size: int):
        super().__init__()
        self.image_size = int(image_size)
        self._weights_digest: str | None = None

    # --- to implement -------------------------------------------------------------------
    @property
    def num_tokens(self) -> int:  # N
        raise NotImplementedError

    @property
    def dim(self) -> int:  # D
        raise NotImplementedError

    def forward_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Preprocessed float ``(B, 3, image_size, image_size)`` -> tokens ``(B, N, D)``."""
        raise NotImplementedError

    # --- shared machinery ---------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        p = next(self.parameters(), None)
        return p.device if p is not None else torch.device("cpu")

    def weights_digest(self) -> str:
        """Hash of the current parameter values (recomputed when weights may have changed)."""
        if self._weights_digest is None or self.trainable:
            self._weights_digest = tensor_digest(dict(self.state_dict()))
        return self._weights_digest

    @property
    def fingerprint(self) -> str:
        """Identifies every choice that changes the tokens: caches key on it."""
        return (f"{self.backend}:{self.variant}:w={self.weights_digest()}:"
                f"pretrained={self.pretrained}:size={self.image_size}:tokens={self.token_mode}")

    def preprocess(self, images) -> torch.Tensor:
        """Check, resize to ``image_size`` and normalise. Returns ``(B, 3, S, S)`` float."""
        x = to_float_images(images, device=self.device)
        if x.shape[-2:] != (self.image_size, self.image_size):
            kw = {"antialias": True} if self.interpolation in ("bilinear", "bicubic") else {}
            x = F.interpolate(x, size=(self.image_size, self.image_size),
                              mode=self.interpolation, align_corners=False if kw else None, **kw)
            x = x.clamp_(0.0, 1.0)
        mean = torch.tensor(self.mean, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, 3, 1, 1)
        return (x - mean) / std

    def encode(self, images) -> torch.Tensor:
        """Images -> tokens ``(B, N, D)`` (float32), chunked over the batch.

        Frozen encoders run under ``torch.inference_mode``; trainable ones keep autograd so
        they can be trained through this method.
        """
        x = self.preprocess(images)
        if self.trainable and torch.is_grad_enabled():
            return self.forward_tokens(x)
        with torch.inference_mode():
            outs = [self.forward_tokens(c) for c in x.split(self.chunk_size)]
        return torch.cat(outs).float()

    def forward(self, images) -> torch.Tensor:
        return self.encode(images)

    def extra_repr(self) -> str:
        return (f"backend={self.backend}, variant={self.variant}, image_size={self.image_size}, "
                f"tokens={self.token_mode}, pretrained={self.pretrained}, trainable={self.trainable}")
