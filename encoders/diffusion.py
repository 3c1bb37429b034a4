"""``diffusion``: a diffusion autoencoder trained with flow matching (the Dreamer 4 form).

An encoder E maps a frame x1 (normalised to [-1, 1]) to tokens z; a small conv U-Net denoiser
f(x_tau, tau, z) (z and tau enter every block through FiLM; grid tokens are also concatenated as
channels) learns the velocity that carries noise to the frame:

    x0 ~ N(0, I),  tau ~ U(0, 1),  x_tau = (1 - tau) * x0 + tau * x1,
    L = || f(x_tau, tau, z) - (x1 - x0) ||^2   (mean over pixels and batch).

E and f train together, so z must carry what the denoiser needs to rebuild the frame.
``decode(z, steps=8)`` integrates dx/dtau = f(x, tau, z) from noise (tau = 0) to tau = 1 with Euler steps.
Tokens: ``tokens="vector"`` (default, ``(B, 1, dim)``), ``"keypoints"`` (``(B, 1, dim)`` from spatial-softmax
keypoints) or ``"grid"`` (``(B, grid_size**2, dim)``).
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import register_encoder
from ._conv import FiLMResBlock, ImageToTokens, coord_channels, num_stages, timestep_features
from ._trainable import TrainableEncoder, build_trainable, trainable_status

__all__ = ["DiffusionEncoder", "Denoiser", "flow_matching_loss", "weights_status"]


def flow_matching_loss(denoiser: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
                       x1: torch.Tensor, z: torch.Tensor, x0: torch.Tensor, tau: torch.Tensor,
                       weights: torch.Tensor | None = None) -> torch.Tensor:
    """Flow-matching loss ``mean((f(x_tau, tau, z) - (x1 - x0))**2)``, with ``x_tau = (1 - tau) x0 + tau x1``.

    Args:
        denoiser: ``f(x_tau (B, C, H, W), tau (B,), z (B, N, D)) -> velocity (B, C, H, W)``.
        x1: clean (normalised) images ``(B, C, H, W)``.
        z: conditioning tokens ``(B, N, D)``.
        x0: noise ``(B, C, H, W)``.
        tau: flow times ``(B,)`` in [0, 1] (tau = 1 is the clean image).
        weights: optional per-pixel weights ``(B, 1, H, W)`` (mean 1) on the squared error.

    Returns:
        scalar loss (mean over all elements).
    """
    t = tau.view(-1, 1, 1, 1)
    x_tau = (1 - t) * x0 + t * x1
    se = (denoiser(x_tau, tau, z) - (x1 - x0)).pow(2)
    return (se * weights).mean() if weights is not None else se.mean()


class Denoiser(nn.Module):
    """Small U-Net over ``(B, 3, S, S)`` at resolutions S/2, S/4, S/8, conditioned on tau and tokens.

    ``forward(x_tau (B, 3, S, S), tau (B,), z (B, N, D)) -> velocity (B, 3, S, S)``.
    """

    def __init__(self, image_size: int, tokens: str, dim: int, grid_size: int, width: int):
        super().__init__()
        num_stages(image_size, 8)  # validates: S must be 8 * 2^k
        self.tokens, self.grid_size = tokens, grid_size
        c1, c2, e = width, 2 * width, 4 * width
        zc = dim if tokens == "grid" else 0
        self.t_mlp = nn.Sequential(nn.Linear(17, e), nn.SiLU(), nn.Linear(e, e))
        self.z_mlp = nn.Sequential(nn.Linear(dim, e), nn.SiLU(), nn.Linear(e, e))
        self.stem = nn.Conv2d(3 + 2 + zc, c1, 4, stride=2, padding=1)  # S/2
        self.b1 = FiLMResBlock(c1, e)
        self.down1 = nn.Conv2d(c1, c2, 4, stride=2, padding=1)  # S/4
        self.b2 = FiLMResBlock(c2, e)
        self.down2 = nn.Conv2d(c2, c2, 4, stride=2, padding=1)  # S/8
        self.b3 = FiLMResBlock(c2, e)
        self.up2 = nn.ConvTranspose2d(c2, c2, 4, stride=2, padding=1)  # S/4
        self.merge2 = nn.Conv2d(2 * c2, c2, 1)
        self.b4 = FiLMResBlock(c2, e)
        self.up1 = nn.ConvTranspose2d(c2, c1, 4, stride=2, padding=1)  # S/2
        self.merge1 = nn.Conv2d(2 * c1, c1, 1)
        self.b5 = FiLMResBlock(c1, e)
        self.out = nn.ConvTranspose2d(c1, 3, 4, stride=2, padding=1)  # S
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor, tau: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        B, _, S, _ = x.shape
        cond = F.silu(self.t_mlp(timestep_features(tau)) + self.z_mlp(z.mean(dim=1)))  # (B, E)
        feats = [x, coord_channels(x)]
        if self.tokens == "grid":
            g = self.grid_size
            zmap = z.transpose(1, 2).reshape(B, -1, g, g)  # (B, D, g, g)
            feats.append(F.interpolate(zmap, size=(S, S), mode="nearest"))  # (B, D, S, S)
        h1 = self.b1(self.stem(torch.cat(feats, dim=1)), cond)  # (B, c1, S/2, S/2)
        h2 = self.b2(self.down1(h1), cond)  # (B, c2, S/4, S/4)
        h3 = self.b3(self.down2(h2), cond)  # (B, c2, S/8, S/8)
        u2 = self.b4(self.merge2(torch.cat([self.up2(h3), h2], dim=1)), cond)  # (B, c2, S/4, S/4)
        u1 = self.b5(self.merge1(torch.cat([self.up1(u2), h1], dim=1)), cond)  # (B, c1, S/2, S/2)
        return self.out(F.silu(u1))  # (B, 3, S, S)


class DiffusionEncoder(TrainableEncoder):
    """Diffusion autoencoder: ``encode(images) -> (B, N, dim)``, ``decode(z, steps) -> (B, 3, S, S)``."""

    backend = "diffusion"
    ARCH_KEYS = ("image_size", "tokens", "dim", "grid_size", "width", "num_keypoints")

    def __init__(self, image_size: int = 64, tokens: str = "vector", dim: int = 32, grid_size: int = 4,
                 width: int = 32, latent_l2: float = 1e-3, seed: int = 0, num_keypoints: int = 16,
                 fg_weight: float = 10.0):
        """
        Args:
            image_size: input side S (a multiple of 8 by a power of two: 32, 64, 128, ...).
            tokens: ``"vector"`` (N = 1), ``"keypoints"`` (N = 1, from spatial-softmax keypoints) or
                ``"grid"`` (N = grid_size**2).
            dim: token dim D.
            grid_size: grid side for ``tokens="grid"``.
            width: channels of the first conv stage of encoder and denoiser.
            latent_l2: weight of a small penalty on mean(z**2) that keeps the token scale bounded.
            seed: seed of the weight initialisation.
            num_keypoints: spatial-softmax keypoints for ``tokens="keypoints"``.
            fg_weight: extra loss weight on pixels that differ from the batch background (see
                ``foreground_weights``), so small objects are not ignored; 0 turns it off.

        Raises:
            ValueError: unknown token mode or sizes that do not fit.
        """
        super().__init__(dict(image_size=int(image_size), tokens=tokens, dim=int(dim), grid_size=int(grid_size),
                              width=int(width), num_keypoints=int(num_keypoints), latent_l2=float(latent_l2),
                              seed=int(seed), fg_weight=float(fg_weight)))
        self.token_mode = tokens
        self._dim = int(dim)
        self.latent_l2, self.fg_weight = float(latent_l2), float(fg_weight)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.encoder = ImageToTokens(self.image_size, tokens, self._dim, grid_size, width, num_keypoints)
            self.denoiser = Denoiser(self.image_size, tokens, self._dim, grid_size, width)

    @property
    def num_tokens(self) -> int:
        return self.encoder.num_tokens

    @property
    def dim(self) -> int:
        return self._dim

    def forward_tokens(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def flow_matching_loss(self, x1: torch.Tensor, z: torch.Tensor, x0: torch.Tensor,
                           tau: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        """:func:`flow_matching_loss` with this model's denoiser."""
        return flow_matching_loss(self.denoiser, x1, z, x0, tau, weights)

    def training_loss(self, x: torch.Tensor, generator: torch.Generator | None = None
                      ) -> tuple[torch.Tensor, dict[str, float]]:
        """Flow-matching loss (+ latent penalty) on normalised images ``(B, 3, S, S)``."""
        z = self.encoder(x)
        x0 = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        tau = torch.rand(x.shape[0], generator=generator, device=x.device, dtype=x.dtype)
        fm = self.flow_matching_loss(x, z, x0, tau, self.foreground_weights(x, self.fg_weight))
        zpen = z.pow(2).mean()
        loss = fm + self.latent_l2 * zpen
        return loss, {"loss": loss.item(), "flow": fm.item(), "z2": zpen.item()}

    def decode(self, tokens: torch.Tensor, steps: int = 8, generator: torch.Generator | None = None
               ) -> torch.Tensor:
        """Sample frames for ``tokens`` by Euler integration of the flow from noise.

        Args:
            tokens: ``(B, N, D)`` as returned by :meth:`encode`.
            steps: Euler steps from tau = 0 (noise) to tau = 1 (image).
            generator: seeds the starting noise (default: torch's global generator).

        Returns:
            float images ``(B, 3, S, S)`` in [0, 1].

        Raises:
            ValueError: tokens of the wrong shape or ``steps < 1``.
        """
        z = self.check_tokens(tokens)
        if int(steps) < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        B, S = z.shape[0], self.image_size
        dev = generator.device if generator is not None else z.device
        x = torch.randn((B, 3, S, S), generator=generator, device=dev).to(z.device)
        dt = 1.0 / int(steps)
        with torch.no_grad():
            for k in range(int(steps)):
                tau = torch.full((B,), k * dt, device=z.device)
                x = x + dt * self.denoiser(x, tau, z)
        return self.from_normalized(x)


@register_encoder("diffusion")
def _diffusion(checkpoint=None, weights=None, **options) -> DiffusionEncoder:
    return build_trainable(DiffusionEncoder, checkpoint=checkpoint, weights=weights, **options)


def weights_status() -> list[dict]:
    return trainable_status("diffusion")
