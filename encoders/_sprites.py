"""Sprite decoder: a frame rebuilt as a background plus K rigid sprites, each placed at a pose (x, y, angle).

Used by ``vae`` with ``tokens="sprites"``: the encoder reads one pose per sprite from the frame and
this decoder composites learned RGBA templates over a learned background with spatial transformers
(``affine_grid`` + ``grid_sample``), so reconstructing the frame forces each pose to say where an
object is and how it is turned, in image units. It is a small layered-sprite model in the spirit of
"Unsupervised Layered Image Decomposition into Object Prototypes" (Monnier et al., 2021), without
their per-sprite colour and scale transforms or their curriculum.

Poses: ``(B, K, 4)`` raw ``(x, y, a, b)``; ``x, y`` in [-1, 1] image coordinates (beyond for a sprite
partly outside), the angle is ``atan2(b, a)`` (the length of ``(a, b)`` is free).
Tokens (what planners compare): per sprite ``(x, y, rho cos, rho sin)``, where ``rho`` is the template's
radius of gyration in image units: the distance between two tokens of one sprite is then close to the
mean displacement of its pixels, for a shift and a turn alike.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["SpriteDecoder", "pyramid_mse"]

PARAM_GAIN = 10.0  # templates and background are stored divided by this: a 10x learning rate for them


def pyramid_mse(recon: torch.Tensor, x: torch.Tensor, weights: torch.Tensor | None = None,
                scales: tuple[int, ...] = (2, 4, 8, 16)) -> torch.Tensor:
    """Squared error at full resolution (optionally pixel-weighted) plus, for each ``s`` in ``scales``,
    ``s`` times the squared error of the ``s x s`` average-pooled images.

    The pooled terms see a sprite that does not yet overlap its object (its blurred footprint does),
    so poses get a gradient from anywhere in the frame, not only once they are nearly right.
    """
    se = (recon - x).pow(2)
    loss = (se * weights).mean() if weights is not None else se.mean()
    for s in scales:
        if s < min(x.shape[-2:]):
            loss = loss + s * (F.avg_pool2d(recon, s) - F.avg_pool2d(x, s)).pow(2).mean()
    return loss


class SpriteDecoder(nn.Module):
    """Poses ``(B, K, 4)`` -> frames ``(B, 3, S, S)`` in [-1, 1]: a background and K composited sprites.

    Sprite k is drawn over sprites 0..k-1 (fixed order). Template k covers ``extent`` of the frame's
    half-width around its pose (``extent=0.5``: a quarter of the frame's width on each side).
    """

    def __init__(self, num_sprites: int, image_size: int, sprite_size: int = 32, extent: float = 0.5):
        super().__init__()
        if int(num_sprites) < 1 or int(sprite_size) < 4 or not 0.0 < float(extent) <= 2.0:
            raise ValueError(f"sprites need num_sprites >= 1, sprite_size >= 4 and 0 < sprite_extent <= 2; got "
                             f"{num_sprites}, {sprite_size}, {extent}")
        K, T = int(num_sprites), int(sprite_size)
        self.K, self.size, self.extent = K, int(image_size), float(extent)
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, T), torch.linspace(-1, 1, T), indexing="ij")
        blob = torch.exp(-(xs ** 2 + ys ** 2) / 0.3)  # (T, T)
        # opaque grey disc at first; templates and background are learned
        self.alpha = nn.Parameter(((-3.0 + 5.0 * blob) / PARAM_GAIN).expand(K, 1, T, T).clone())
        self.rgb = nn.Parameter(torch.zeros(K, 3, T, T))
        self.background = nn.Parameter(torch.zeros(1, 3, self.size, self.size))
        self.register_buffer("r2", ((xs ** 2 + ys ** 2) * self.extent ** 2).reshape(1, T * T))  # (1, T*T)
        self._background_set = False

    def templates(self) -> torch.Tensor:
        """RGBA templates ``(K, 4, T, T)``: colour in [-1, 1], alpha in [0, 1]."""
        return torch.cat([torch.tanh(PARAM_GAIN * self.rgb), torch.sigmoid(PARAM_GAIN * self.alpha)], dim=1)

    def radius(self) -> torch.Tensor:
        """Radius of gyration of each template's alpha about its centre, in image units: ``(K,)``."""
        a = torch.sigmoid(PARAM_GAIN * self.alpha).reshape(self.K, -1)  # (K, T*T)
        return ((a * self.r2).sum(1) / a.sum(1).clamp_min(1e-6)).sqrt()

    @torch.no_grad()
    def init_background(self, x: torch.Tensor) -> None:
        """Set the background to the per-pixel median of frames ``x`` (B, 3, S, S) in [-1, 1], once."""
        if not self._background_set:
            self.background.copy_(torch.atanh(x.median(dim=0, keepdim=True).values.clamp(-0.999, 0.999)) / PARAM_GAIN)
            self._background_set = True

    def mark_background_set(self) -> None:
        """A loaded decoder keeps its background (no data-driven reset)."""
        self._background_set = True

    def tokens(self, pose: torch.Tensor) -> torch.Tensor:
        """Raw poses ``(B, K, 4)`` -> tokens ``(B, 1, 4K)``: per sprite ``(x, y, rho cos, rho sin)``."""
        B = pose.shape[0]
        ab = pose[..., 2:]
        unit = ab / ab.norm(dim=-1, keepdim=True).clamp_min(1e-6)
        rho = self.radius().to(pose.dtype)[None, :, None]  # (1, K, 1)
        return torch.cat([pose[..., :2], rho * unit], dim=-1).reshape(B, 1, 4 * self.K)

    def forward(self, pose: torch.Tensor) -> torch.Tensor:
        """Poses ``(B, K, 4)`` (raw, or tokens reshaped: the angle ignores the length of (a, b))."""
        B = pose.shape[0]
        tx, ty = pose[..., 0], pose[..., 1]
        ab = pose[..., 2:]
        c, s = (ab / ab.norm(dim=-1, keepdim=True).clamp_min(1e-6)).unbind(-1)  # (B, K) each
        e = self.extent
        # output pixel p -> template coordinate u = R(-angle) (p - t) / extent
        theta = torch.stack([torch.stack([c, s, -(c * tx + s * ty)], -1),
                             torch.stack([-s, c, s * tx - c * ty], -1)], dim=-2) / e  # (B, K, 2, 3)
        img = torch.tanh(PARAM_GAIN * self.background).expand(B, -1, -1, -1)
        tmpl = self.templates()
        shape = (B, 4, self.size, self.size)
        for k in range(self.K):
            grid = F.affine_grid(theta[:, k], shape, align_corners=False)
            sprite = F.grid_sample(tmpl[k:k + 1].expand(B, -1, -1, -1), grid, align_corners=False)
            a = sprite[:, 3:]
            img = a * sprite[:, :3] + (1.0 - a) * img
        return img
