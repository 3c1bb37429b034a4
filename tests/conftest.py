"""Shared fakes: a point on a plane seen through a blob image, and its exact linear world model."""
from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np
import pytest
import torch
import torch.nn as nn
from hypothesis import settings

# CI replays the same generated examples on every run (a fuzz failure there is reproducible);
# locally hypothesis explores new ones each run.
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

IMG = 48           # fake camera resolution
SPEED = 0.2        # position change per unit action per step


def render_point(pos: np.ndarray, size: int = IMG) -> np.ndarray:
    """uint8 (size, size, 3) image of a Gaussian blob at ``pos`` in [-1, 1]^2."""
    grid = (np.arange(size) + 0.5) / size * 2 - 1
    xx, yy = np.meshgrid(grid, grid, indexing="xy")
    blob = np.exp(-((xx - pos[0]) ** 2 + (yy - pos[1]) ** 2) / (2 * 0.08 ** 2))
    img = np.repeat((blob * 255).round().astype(np.uint8)[..., None], 3, axis=-1)
    return img


class LinearWorldModel(nn.Module):
    """Exact world model of ``x' = clip(x + SPEED * a)``: tokens (B, 1, 2) = the blob's centroid."""

    action_dim = 2
    proprio_dim = 0
    num_hist = 1
    frameskip = 1
    image_size = None
    encoder = None

    def __init__(self):
        super().__init__()
        self._anchor = nn.Parameter(torch.zeros(1), requires_grad=False)
        grid = (torch.arange(IMG) + 0.5) / IMG * 2 - 1
        self.register_buffer("grid", grid)
        self.rollout_calls = 0
        self.encode_calls = 0

    def encode(self, images) -> torch.Tensor:
        self.encode_calls += 1
        x = torch.as_tensor(np.asarray(images)).float()[..., 0]            # (B, H, W)
        x = x / x.sum(dim=(1, 2), keepdim=True)
        cx = (x.sum(1) * self.grid).sum(-1)
        cy = (x.sum(2) * self.grid).sum(-1)
        return torch.stack([cx, cy], -1)[:, None, :]                       # (B, 1, 2)

    def rollout(self, z_context, proprio_context, actions, past_actions=None):
        self.rollout_calls += 1
        z0 = z_context[:, -1]                                              # (B, 1, 2)
        steps = SPEED * torch.cumsum(actions, dim=2)                       # (B, S, H, 2)
        z = (z0[:, None, None] + steps[..., None, :])                      # (B, S, H, 1, 2)
        return z.clamp(-0.9, 0.9), None


class PointEnv:
    """The true system the LinearWorldModel describes (positions clipped to [-0.9, 0.9])."""

    def __init__(self, start, goal):
        self.pos = np.asarray(start, np.float64)
        self.goal = np.asarray(goal, np.float64)

    def obs(self):
        return {"pixels": render_point(self.pos), "proprio": self.pos.astype(np.float32)}

    def step(self, a):
        self.pos = np.clip(self.pos + SPEED * np.clip(a, -1, 1), -0.9, 0.9)
        return self.obs()


@pytest.fixture
def linear_model():
    return LinearWorldModel()
