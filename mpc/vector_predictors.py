"""Predictors for single-vector latents (N = 1): an MLP over the last frames, and a GRU (World Models' M).

They share the interface of :class:`mpc.predictor.TransformerPredictor` (``forward``, ``prefill``,
``step``, ``window``); :func:`mpc.predictor.make_predictor` builds them from a ``PredictorConfig``.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn as nn
import torch.nn.functional as F

if TYPE_CHECKING:
    from mpc.predictor import PredictorConfig

__all__ = ["MLPPredictor", "GRUPredictor"]


class _VectorPredictor(nn.Module):
    """Shared input handling of the mlp/gru predictors (N = 1 vector latents)."""

    def __init__(self, cfg: PredictorConfig, num_tokens: int, token_dim: int, action_dim: int,
                 proprio_dim: int):
        super().__init__()
        if num_tokens != 1:
            raise ValueError(f"the {cfg.kind} predictor takes single-vector latents (N = 1), got "
                             f"N = {num_tokens}; pool the tokens (encoder token_mode cls/pooled) or "
                             "use predictor.kind=transformer")
        self.cfg = cfg
        self.num_tokens, self.token_dim = 1, token_dim
        self.action_encoder = nn.Linear(action_dim, cfg.action_emb)
        self.proprio_encoder = nn.Linear(proprio_dim, cfg.proprio_emb)
        self.in_dim = token_dim + cfg.action_emb + cfg.proprio_emb
        self.out = nn.Linear(cfg.mlp_dim, token_dim + proprio_dim)
        self.proprio_dim = proprio_dim

    def features(self, z, proprio, actions):
        """``(..., F, 1, D)`` etc. -> ``(..., F, in_dim)``."""
        z = z.squeeze(-2)
        a, p = self.action_encoder(actions), self.proprio_encoder(proprio)
        shape = torch.broadcast_shapes(z.shape[:-1], a.shape[:-1])
        return torch.cat([z.expand(*shape, -1), a.expand(*shape, -1), p.expand(*shape, -1)], -1)

    def split(self, y, z):
        """Head output -> ``(z_next (..., 1, D) as a residual on z, proprio_next (..., P))``."""
        dz, p = y[..., :self.token_dim], y[..., self.token_dim:]
        return z + dz.unsqueeze(-2), p


class MLPPredictor(_VectorPredictor):
    """MLP on the features of the last ``num_hist`` frames (zero-padded at the start)."""

    def __init__(self, cfg, num_tokens, token_dim, action_dim, proprio_dim):
        super().__init__(cfg, num_tokens, token_dim, action_dim, proprio_dim)
        layers, d = [], self.in_dim * cfg.num_hist
        for _ in range(cfg.depth):
            layers += [nn.Linear(d, cfg.mlp_dim), nn.GELU(), nn.Dropout(cfg.dropout)]
            d = cfg.mlp_dim
        self.net = nn.Sequential(*layers, self.out)

    @property
    def window(self):
        return self.cfg.num_hist

    def forward(self, z, proprio, actions):
        """See :meth:`TransformerPredictor.forward` (N = 1)."""
        f = self.features(z, proprio, actions)  # (*batch, F, E)
        w = self.window
        f = F.pad(f, (0, 0, w - 1, 0))  # (*batch, w-1+F, E)
        win = f.unfold(-2, w, 1).movedim(-1, -2).flatten(-2)  # (*batch, F, w*E), oldest first
        return self.split(self.net(win), z)

    def prefill(self, z, proprio, actions):
        f = self.features(z, proprio, actions).unsqueeze(1)  # (B, 1, T', E)
        return {"feats": f[..., -(self.window - 1):, :] if self.window > 1 else f[..., :0, :],
                "pos": torch.tensor(z.shape[-3], device=z.device)}

    def step(self, cache, z, proprio, actions):
        f = self.features(z, proprio, actions).unsqueeze(-2)  # (B, S, 1, E)
        past = cache["feats"]
        shape = (*f.shape[:-2], past.shape[-2], f.shape[-1])
        seq = torch.cat([past.expand(shape), f], dim=-2)  # (B, S, <=w, E)
        pad = self.window - seq.shape[-2]
        win = F.pad(seq, (0, 0, pad, 0)).flatten(-2)  # (B, S, w*E)
        z_next, p_next = self.split(self.net(win), z)
        keep = seq[..., 1:, :] if seq.shape[-2] == self.window else seq
        return z_next, p_next, {"feats": keep, "pos": cache["pos"] + 1}


class GRUPredictor(_VectorPredictor):
    """GRU over frames (World Models' M): hidden state carries the whole history."""

    def __init__(self, cfg, num_tokens, token_dim, action_dim, proprio_dim):
        super().__init__(cfg, num_tokens, token_dim, action_dim, proprio_dim)
        self.cell = nn.GRUCell(self.in_dim, cfg.mlp_dim)
        self.drop = nn.Dropout(cfg.dropout)

    def _run(self, f, h):
        """``f (*batch, F, E)``, ``h (*batch, Hd)`` -> outputs ``(*batch, F, Hd)``, last h."""
        batch = f.shape[:-2]
        hf = h.expand(*batch, -1).reshape(-1, h.shape[-1])
        ff = f.reshape(hf.shape[0], *f.shape[-2:])
        outs = []
        for t in range(ff.shape[1]):  # loop over frames, not over candidates
            hf = self.cell(ff[:, t], hf)
            outs.append(hf)
        out = torch.stack(outs, 1).reshape(*batch, f.shape[-2], -1) if outs else f.new_zeros(
            *batch, 0, hf.shape[-1])
        return out, hf.reshape(*batch, -1)

    def forward(self, z, proprio, actions):
        f = self.features(z, proprio, actions)
        h0 = f.new_zeros(self.cfg.mlp_dim)
        out, _ = self._run(f, h0)
        return self.split(self.out(self.drop(out)), z)

    def prefill(self, z, proprio, actions):
        f = self.features(z, proprio, actions)  # (B, T', E)
        _, h = self._run(f, f.new_zeros(self.cfg.mlp_dim))
        return {"h": h.unsqueeze(1), "pos": torch.tensor(z.shape[-3], device=z.device)}  # h (B, 1, Hd)

    def step(self, cache, z, proprio, actions):
        f = self.features(z, proprio, actions).unsqueeze(-2)  # (B, S, 1, E)
        out, h = self._run(f, cache["h"].expand(*f.shape[:-2], -1))
        z_next, p_next = self.split(self.out(self.drop(out[..., 0, :])), z)
        return z_next, p_next, {"h": h, "pos": cache["pos"] + 1}
