"""``vae``: a small convolutional VAE, in the spirit of the V model of World Models (Ha & Schmidhuber, 2018).

q(z | x) is a diagonal Gaussian per token; the tokens are its means (deterministic encoding).
Trained on reconstruction + beta * KL(q(z | x) || N(0, I)) with ``wmpc train-encoder encoder=vae``.

Token modes: ``tokens="vector"`` (default) gives one token ``(B, 1, dim)`` from the whole frame, whose
distances follow object positions across the frame; ``tokens="grid"`` gives ``grid_size**2`` local
tokens ``(B, grid_size**2, dim)``, sharper reconstructions but distances that saturate once an object
has moved by more than a cell or two; ``tokens="keypoints"`` gives one token computed from the (x, y)
of spatial-softmax keypoints, whose distances follow object displacements most directly;
``tokens="sprites"`` gives one token holding a pose (x, y, angle) per sprite: the decoder is a
background plus ``num_sprites`` learned rigid templates placed at those poses (:mod:`encoders._sprites`),
so the token says where each object is and how it is turned, in image units (dim = 4 * num_sprites).
"""
from __future__ import annotations

import torch

from . import register_encoder
from ._conv import TOKEN_MODES, ImageToTokens, TokensToImage
from ._sprites import SpriteDecoder, pyramid_mse
from ._trainable import TrainableEncoder, build_trainable, trainable_status

__all__ = ["VAEEncoder", "VAE_TOKEN_MODES", "vae_loss", "weights_status"]

VAE_TOKEN_MODES = TOKEN_MODES + ("sprites",)


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
    ARCH_KEYS = ("image_size", "tokens", "dim", "grid_size", "width", "num_keypoints", "num_sprites",
                 "sprite_size", "sprite_extent")

    def __init__(self, image_size: int = 64, tokens: str = "vector", dim: int = 32, grid_size: int = 4,
                 width: int = 32, beta: float = 1.0, seed: int = 0, num_keypoints: int = 16,
                 fg_weight: float = 10.0, num_sprites: int = 2, sprite_size: int = 32,
                 sprite_extent: float = 0.5):
        """
        Args:
            image_size: input side S (frames are resized to S x S); S / grid_size (grid) or S / 4
                (vector) must be a power of two.
            tokens: ``"vector"`` (N = 1), ``"keypoints"`` (N = 1, from spatial-softmax keypoints),
                ``"grid"`` (N = grid_size**2) or ``"sprites"`` (N = 1, a pose per sprite).
            dim: token dim D (``tokens="sprites"``: always ``4 * num_sprites``, the given value is not used).
            grid_size: grid side for ``tokens="grid"``.
            width: channels of the first conv stage (later stages use 2 * width).
            beta: KL weight in the training loss.
            seed: seed of the weight initialisation.
            num_keypoints: spatial-softmax keypoints for ``tokens="keypoints"``.
            fg_weight: extra reconstruction weight on pixels that differ from the batch background
                (see ``foreground_weights``), so small objects are not ignored; 0 turns it off.
            num_sprites: sprites of ``tokens="sprites"`` (one per object that moves).
            sprite_size: template side in pixels for ``tokens="sprites"``.
            sprite_extent: half-width a template covers, as a fraction of the frame's half-width.

        Raises:
            ValueError: unknown token mode or sizes that do not fit.
        """
        if tokens not in VAE_TOKEN_MODES:
            raise ValueError(f"tokens must be one of {VAE_TOKEN_MODES} (grid: grid_size**2 tokens; vector, "
                             f"keypoints, sprites: one token), got {tokens!r}")
        sprites = tokens == "sprites"
        if sprites:
            dim = 4 * int(num_sprites)
        super().__init__(dict(image_size=int(image_size), tokens=tokens, dim=int(dim), grid_size=int(grid_size),
                              width=int(width), num_keypoints=int(num_keypoints), beta=float(beta),
                              seed=int(seed), fg_weight=float(fg_weight), num_sprites=int(num_sprites),
                              sprite_size=int(sprite_size), sprite_extent=float(sprite_extent)))
        self.token_mode = tokens
        self.beta, self.fg_weight = float(beta), float(fg_weight)
        self._dim = int(dim)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.encoder = ImageToTokens(self.image_size, "keypoints" if sprites else tokens, 2 * self._dim,
                                         grid_size, width, num_keypoints)
            if sprites:
                self.decoder = SpriteDecoder(num_sprites, self.image_size, sprite_size, sprite_extent)
                with torch.no_grad():  # near-deterministic poses at first: noisy ones blur the templates away
                    self.encoder.head.bias[self._dim:] = -8.0
            else:
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
        mu = self.posterior(x)[0]
        if self.token_mode == "sprites":
            return self.decoder.tokens(mu.view(mu.shape[0], -1, 4))
        return mu

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        out = super().load_state_dict(state_dict, strict=strict, assign=assign)
        if self.token_mode == "sprites":
            self.decoder.mark_background_set()
        return out

    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        """Tokens ``(B, N, D)`` -> float images ``(B, 3, S, S)`` in [0, 1].

        Raises:
            ValueError: tokens of the wrong shape.
        """
        z = self.check_tokens(tokens)
        if self.token_mode == "sprites":
            z = z.view(z.shape[0], -1, 4)  # (B, K, 4): the angle reads the direction of (rho cos, rho sin)
        with torch.set_grad_enabled(self.trainable and torch.is_grad_enabled()):
            return self.from_normalized(self.decoder(z))

    def training_loss(self, x: torch.Tensor, generator: torch.Generator | None = None
                      ) -> tuple[torch.Tensor, dict[str, float]]:
        """Negative ELBO (see :func:`vae_loss`) on normalised images ``(B, 3, S, S)``.

        ``tokens="sprites"``: the squared error is :func:`encoders._sprites.pyramid_mse` (pooled terms
        give far-off sprites a gradient); with ``beta=0`` the poses are used as they are (no sampling,
        no KL), which is how sprites were measured.
        """
        if self.token_mode == "sprites":
            return self._sprite_loss(x, generator)
        mu, logvar = self.posterior(x)
        eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        recon = self.decoder(mu + eps * (0.5 * logvar).exp())
        w = self.foreground_weights(x, self.fg_weight)
        loss, mse, kl = vae_loss(x, recon, mu, logvar, self.beta, w)
        return loss, {"loss": loss.item(), "mse": mse.item(), "kl": kl.item()}

    def _sprite_loss(self, x: torch.Tensor, generator: torch.Generator | None
                     ) -> tuple[torch.Tensor, dict[str, float]]:
        self.decoder.init_background(x)
        mu, logvar = self.posterior(x)
        z = mu
        kl = torch.zeros((), device=x.device)
        if self.beta > 0:
            eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
            z = mu + eps * (0.5 * logvar).exp()
            kl = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(dim=(1, 2)).mean()
        recon = self.decoder(z.view(x.shape[0], -1, 4))
        mse = pyramid_mse(recon, x, self.foreground_weights(x, self.fg_weight))
        loss = mse + self.beta * kl / x[0].numel()
        return loss, {"loss": loss.item(), "mse": mse.item(), "kl": kl.item()}


@register_encoder("vae")
def _vae(checkpoint=None, weights=None, **options) -> VAEEncoder:
    return build_trainable(VAEEncoder, checkpoint=checkpoint, weights=weights, **options)


def weights_status() -> list[dict]:
    return trainable_status("vae")
