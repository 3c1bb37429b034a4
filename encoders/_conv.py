"""Small convolutional building blocks shared by the trainable backends (``vae``, ``diffusion``, ``jepa``).

Sizes are chosen for 32-128 px frames on a CPU: every stage halves (or doubles) the resolution with a
4x4 stride-2 convolution followed by GroupNorm and SiLU, so a 64 px frame reaches a 4x4 grid in four
stages. The first stage also sees two coordinate channels (CoordConv), which lets the trunk report
*where* things are, the quantity goal reaching depends on.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["num_stages", "stage_channels", "coord_channels", "ConvDown", "ConvUp", "FiLMResBlock",
           "timestep_features", "SpatialSoftmax", "ImageToTokens", "TokensToImage", "TOKEN_MODES"]


def num_stages(image_size: int, out_size: int) -> int:
    """How many stride-2 stages take ``image_size`` to ``out_size``.

    Raises:
        ValueError: ``image_size / out_size`` is not a power of two >= 2.
    """
    ratio = image_size / out_size
    k = round(math.log2(ratio)) if ratio >= 1 else -1
    if k < 1 or out_size * 2 ** k != image_size:
        raise ValueError(f"image_size={image_size} must be out_size={out_size} times a power of two >= 2 "
                         "(e.g. image_size=64 with grid_size 4 or 8); pick matching sizes")
    return k


def stage_channels(width: int, stages: int) -> list[int]:
    """Channels per stage: ``width, 2*width, 2*width, ...`` (``stages`` entries)."""
    return [width] + [2 * width] * (stages - 1)


def coord_channels(x: torch.Tensor) -> torch.Tensor:
    """Two channels with the x and y pixel coordinates in [-1, 1]: ``(B, 2, H, W)``."""
    B, _, H, W = x.shape
    ys = torch.linspace(-1.0, 1.0, H, device=x.device, dtype=x.dtype).view(1, 1, H, 1).expand(B, 1, H, W)
    xs = torch.linspace(-1.0, 1.0, W, device=x.device, dtype=x.dtype).view(1, 1, 1, W).expand(B, 1, H, W)
    return torch.cat([xs, ys], dim=1)


def _norm(c: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(8, c), c)


class ConvDown(nn.Module):
    """``(B, in_ch, S, S)`` -> ``(B, C, S / 2^k, S / 2^k)`` with ``k = len(channels)`` stride-2 stages."""

    def __init__(self, in_ch: int, channels: list[int], coords: bool = True):
        super().__init__()
        self.coords = coords
        layers, c_in = [], in_ch + (2 if coords else 0)
        for c in channels:
            layers += [nn.Conv2d(c_in, c, 4, stride=2, padding=1), _norm(c), nn.SiLU()]
            c_in = c
        self.net = nn.Sequential(*layers)
        self.out_channels = c_in

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.coords:
            x = torch.cat([x, coord_channels(x)], dim=1)
        return self.net(x)


class ConvUp(nn.Module):
    """``(B, C, g, g)`` -> ``(B, out_ch, g * 2^k, g * 2^k)``: mirror of :class:`ConvDown`.

    ``channels`` lists the stage widths from the finest to the coarsest (as given to ConvDown).
    """

    def __init__(self, channels: list[int], out_ch: int = 3):
        super().__init__()
        layers, rev = [], list(reversed(channels))
        for c_in, c_out in zip(rev, rev[1:]):
            layers += [nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1), _norm(c_out), nn.SiLU()]
        layers += [nn.ConvTranspose2d(channels[0], out_ch, 4, stride=2, padding=1)]  # full res, cheap
        self.net = nn.Sequential(*layers)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.net(h)


def timestep_features(tau: torch.Tensor, n: int = 8) -> torch.Tensor:
    """Fourier features of a flow time ``tau`` (B,) in [0, 1] -> ``(B, 2n + 1)``."""
    freqs = (2.0 ** torch.arange(n, device=tau.device, dtype=tau.dtype)) * math.pi
    ang = tau[:, None] * freqs[None]
    return torch.cat([tau[:, None], ang.sin(), ang.cos()], dim=1)


class FiLMResBlock(nn.Module):
    """Residual conv block whose second norm is scaled and shifted by a condition vector (FiLM).

    ``x (B, C, H, W), cond (B, E) -> (B, C, H, W)``.
    """

    def __init__(self, c: int, cond_dim: int):
        super().__init__()
        self.norm1, self.conv1 = _norm(c), nn.Conv2d(c, c, 3, padding=1)
        self.norm2, self.conv2 = _norm(c), nn.Conv2d(c, c, 3, padding=1)
        self.film = nn.Linear(cond_dim, 2 * c)
        nn.init.zeros_(self.film.weight)
        nn.init.zeros_(self.film.bias)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.film(cond)[:, :, None, None].chunk(2, dim=1)  # (B, C, 1, 1) each
        h = self.norm2(h) * (1 + scale) + shift
        return x + self.conv2(F.silu(h))


TOKEN_MODES = ("grid", "vector", "keypoints")
VECTOR_GRID = 4  # spatial size the trunk reaches before flattening in "vector" mode
KEYPOINT_GRID = 16  # feature-map size whose spatial softmax gives the keypoints in "keypoints" mode


class SpatialSoftmax(nn.Module):
    """``(B, K, h, w)`` -> ``(B, K, 2)``: expected (x, y) in [-1, 1] under each channel's softmax.

    The temperature is learned (log-parameterised). Each keypoint is a smooth, nearly linear function
    of where its feature fires, so distances between keypoint tokens follow distances in the image.
    """

    def __init__(self, temperature: float = 1.0):
        super().__init__()
        self.log_temp = nn.Parameter(torch.full((1,), math.log(temperature)))  # (1,): digests skip 0-d

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        B, K, h, w = f.shape
        p = torch.softmax(f.flatten(2) / self.log_temp.exp(), dim=-1).view(B, K, h, w)
        xs = torch.linspace(-1.0, 1.0, w, device=f.device, dtype=f.dtype)
        ys = torch.linspace(-1.0, 1.0, h, device=f.device, dtype=f.dtype)
        return torch.stack([(p.sum(2) * xs).sum(-1), (p.sum(3) * ys).sum(-1)], dim=-1)  # (B, K, 2)


def check_token_mode(tokens: str, grid_size: int) -> None:
    """Raises ValueError for an unknown token mode or a non-positive grid size."""
    if tokens not in TOKEN_MODES:
        raise ValueError(f"tokens must be one of {TOKEN_MODES} (grid: grid_size**2 tokens; vector, "
                         f"keypoints: one token), got {tokens!r}")
    if int(grid_size) < 1:
        raise ValueError(f"grid_size must be a positive integer, got {grid_size!r}")


class ImageToTokens(nn.Module):
    """Conv trunk + head: ``(B, 3, S, S)`` -> ``(B, N, out_dim)``.

    ``tokens="grid"``: N = grid_size**2, one token per cell (1x1 conv head).
    ``tokens="vector"``: N = 1, the 4x4 feature map flattened through a linear head.
    ``tokens="keypoints"``: N = 1, a linear head over the (x, y) of ``num_keypoints`` spatial-softmax
    keypoints of a 16x16 feature map (latent distances follow object displacements).
    """

    def __init__(self, image_size: int, tokens: str, out_dim: int, grid_size: int = 4, width: int = 32,
                 num_keypoints: int = 16):
        super().__init__()
        check_token_mode(tokens, grid_size)
        self.tokens = tokens
        g = grid_size if tokens == "grid" else VECTOR_GRID
        self.channels = stage_channels(width, num_stages(image_size, g))  # also the decoder's stages
        self.grid = g
        if tokens == "keypoints":
            kc = stage_channels(width, num_stages(image_size, KEYPOINT_GRID))
            self.trunk = ConvDown(3, kc)
            C = self.trunk.out_channels
            self.keypoints = nn.Sequential(nn.Conv2d(C, C, 3, padding=1), _norm(C), nn.SiLU(),
                                           nn.Conv2d(C, int(num_keypoints), 1))
            self.softmax = SpatialSoftmax()
            self.head = nn.Linear(2 * int(num_keypoints), out_dim)
            return
        self.trunk = ConvDown(3, self.channels)
        C = self.trunk.out_channels
        self.head = nn.Conv2d(C, out_dim, 1) if tokens == "grid" else nn.Linear(C * g * g, out_dim)

    @property
    def num_tokens(self) -> int:
        return self.grid ** 2 if self.tokens == "grid" else 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.trunk(x)  # (B, C, g, g)
        if self.tokens == "keypoints":
            k = self.softmax(self.keypoints(h))  # (B, K, 2)
            return self.head(k.flatten(1)).unsqueeze(1)  # (B, 1, out_dim)
        if self.tokens == "grid":
            return self.head(h).flatten(2).transpose(1, 2)  # (B, g*g, out_dim)
        return self.head(h.flatten(1)).unsqueeze(1)  # (B, 1, out_dim)


class TokensToImage(nn.Module):
    """Decoder mirroring :class:`ImageToTokens`: ``(B, N, D)`` -> ``(B, 3, S, S)`` (unbounded).

    ``keypoints`` tokens are decoded like ``vector`` ones.
    """

    def __init__(self, enc: ImageToTokens, dim: int):
        super().__init__()
        self.tokens = "grid" if enc.tokens == "grid" else "vector"
        self.grid = enc.grid
        C = enc.channels[-1]
        self.C = C
        self.inp = nn.Conv2d(dim, C, 1) if self.tokens == "grid" else nn.Linear(dim, C * self.grid ** 2)
        self.up = ConvUp(enc.channels, 3)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        B, N, D = z.shape
        g = self.grid
        if self.tokens == "grid":
            h = self.inp(z.transpose(1, 2).reshape(B, D, g, g))  # (B, C, g, g)
        else:
            h = self.inp(z[:, 0]).view(B, self.C, g, g)  # (B, C, g, g)
        return self.up(F.silu(h))
