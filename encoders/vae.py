"""``vae``: a small convolutional VAE, in the spirit of the V model of World Models (Ha & Schmidhuber, 2018).

q(z | x) is a diagonal Gaussian per token; the tokens are its means (deterministic encoding).
Trained on reconstruction + beta * KL(q(z | x) || N(0, I)) with ``wmpc train-encoder encoder=vae``.

Token modes: ``tokens="vector"`` (default) gives one token ``(B, 1, dim)`` from the whole frame, whose
distances follow object positions across the frame; ``tokens="grid"`` gives ``grid_size**2`` local
tokens ``(B, grid_size**2, dim)``, sharper reconstructions but distances that saturate once an object
has moved by more than a cell or two; ``tokens="keypoints"`` gives one token computed from the (x, y)
of spatial-softmax keypoints, whose distances follow object displacements most directly.
"""
from __future__ import annotations

import torch

from . import register_encoder
from ._conv import ImageToTokens, TokensToImage
from ._trainable import TrainableEncoder, build_trainable, trainable_status

__all__ = ["VAEEncoder", "vae_loss", "weights_status"]


def vae_loss(x: torch.Tensor, recon: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor,
             beta: float, weights: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Negative ELBO per pixel value: ``mse + beta * KL / (3 * H * W)``.

    Args:
        x, recon: ``(B, 3, H, W)`` target and reconstruction (both in [-1, 1] space).
        mu, logvar: ``(B, N, D)`` posterior parameters.
        beta: KL weight.
        weights: optional per-pixel weights ``(B, 1, H, W)`` with mean 1 on the squared error.

    Returns:
        ``(loss, mse, kl)``, where ``kl`` is nats per image (mean over the batch).
    """
    se = (recon - x).pow(2)
    mse = (se * weights).mean() if weights is not None else se.mean()
    kl = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(dim=(1, 2)).mean()
    return mse + beta * kl / x[0].numel(), mse, kl


class VAEEncoder(TrainableEncoder):
    """Conv VAE: ``encode(images) -> (B, N, dim)`` posterior means, ``decode(tokens) -> (B, 3, S, S)``."""

    backend = "vae"
    ARCH_KEYS = ("image_size", "tokens", "dim", "grid_size", "width", "num_keypoints")

    def __init__(self, image_size: int = 64, tokens: str = "vector", dim: int = 32, grid_size: int = 4,
                 width: int = 32, beta: float = 1.0, seed: int = 0, num_keypoints: int = 16,
                 fg_weight: float = 10.0):
        """
        Args:
            image_size: input side S (frames are resized to S x S); S / grid_size (grid) or S / 4
                (vector) must be a power of two.
            tokens: ``"vector"`` (N = 1), ``"keypoints"`` (N = 1, from spatial-softmax keypoints) or
                ``"grid"`` (N = grid_size**2).
            dim: token dim D.
            grid_size: grid side for ``tokens="grid"``.
            width: channels of the first conv stage (later stages use 2 * width).
            beta: KL weight in the training loss.
            seed: seed of the weight initialisation.
            num_keypoints: spatial-softmax keypoints for ``tokens="keypoints"``.
            fg_weight: extra reconstruction weight on pixels that differ from the batch background
                (see ``foreground_weights``), so small objects are not ignored; 0 turns it off.

        Raises:
            ValueError: unknown token mode or sizes that do not fit.
        """
        super().__init__(dict(image_size=int(image_size), tokens=tokens, dim=int(dim), grid_size=int(grid_size),
                              width=int(width), num_keypoints=int(num_keypoints), beta=float(beta),
                              seed=int(seed), fg_weight=float(fg_weight)))
        self.token_mode = tokens
        self.beta, self.fg_weight = float(beta), float(fg_weight)
        self._dim = int(dim)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.encoder = ImageToTokens(self.image_size, tokens, 2 * self._dim, grid_size, width, num_keypoints)
            self.decoder = TokensToImage(self.encoder, self._dim)

    @property
    def num_tokens(self) -> int:
        return self.encoder.num_tokens

    @property
    def dim(self) -> int:
        return self._dim

    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised ``(B, 3, S, S)`` -> ``(mu, logvar)``, each ``(B, N, D)``."""
        mu, logvar = self.encoder(x).chunk(2, dim=-1)
        return mu, logvar.clamp(-12.0, 8.0)

    def forward_tokens(self, x: torch.Tensor) -> torch.Tensor:
        return self.posterior(x)[0]

    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        """Tokens ``(B, N, D)`` -> float images ``(B, 3, S, S)`` in [0, 1].

        Raises:
            ValueError: tokens of the wrong shape.
        """
        z = self.check_tokens(tokens)
        with torch.set_grad_enabled(self.trainable and torch.is_grad_enabled()):
            return self.from_normalized(self.decoder(z))

    def training_loss(self, x: torch.Tensor, generator: torch.Generator | None = None
                      ) -> tuple[torch.Tensor, dict[str, float]]:
        """Negative ELBO (see :func:`vae_loss`) on normalised images ``(B, 3, S, S)``."""
        mu, logvar = self.posterior(x)
        eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        recon = self.decoder(mu + eps * (0.5 * logvar).exp())
        w = self.foreground_weights(x, self.fg_weight)
        loss, mse, kl = vae_loss(x, recon, mu, logvar, self.beta, w)
        return loss, {"loss": loss.item(), "mse": mse.item(), "kl": kl.item()}


@register_encoder("vae")
def _vae(checkpoint=None, weights=None, **options) -> VAEEncoder:
    return build_trainable(VAEEncoder, checkpoint=checkpoint, weights=weights, **options)


def weights_status() -> list[dict]:
    return trainable_status("vae")
