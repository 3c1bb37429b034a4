"""Latent dynamics predictors: tokens of past frames + actions + proprio -> tokens of the next frame.

Three kinds behind one interface (chosen by ``PredictorConfig.kind``):

* ``transformer``: the DINO-WM predictor (Zhou et al., 2024, https://arxiv.org/abs/2411.04983):
  a ViT over all patch tokens of a window of frames with a frame-causal block mask. A learned
  action embedding and proprio embedding are joined to every patch token (concatenated along
  the feature dim as in DINO-WM, or projected and added). Time is encoded either with a rotary
  embedding over the frame index (``rope``, default) or with DINO-WM's learned absolute
  per-window-position embedding (``absolute``).
* ``mlp``: for single-vector latents (N = 1): an MLP on the last ``num_hist`` frames.
* ``gru``: for single-vector latents: a recurrent core (World Models' M).

Every predictor maps normalised inputs over F frames,
``z (..., F, N, D)``, ``proprio (..., F, P)``, ``actions (..., F, Am)`` (action t is taken at frame t),
to ``z_next (..., F, N, D)`` and ``proprio_next (..., F, P)`` where output t predicts frame t + 1
(:meth:`forward`, teacher forcing), and supports incremental decoding with
:meth:`prefill` (the shared context, once per env) and :meth:`step` (one new frame for every candidate).

Exact KV caching (``time_encoding="rope"``): every layer uses a sliding-window frame-causal mask
(frame t attends to frames ``t - num_hist + 1 .. t``) and rotary phases depend on the frame index
only, so per-frame outputs depend on relative frame distances alone. Caching each layer's K/V of
every frame once and evicting frames older than the window therefore equals recomputing the whole
history with the same mask. With ``absolute`` positions the window must be recomputed every step.

Width: the joined token width is ``D + action_emb + proprio_emb`` (``join="concat"``) or ``D``
(``join="add"``). If ``dim`` is set the joined tokens are projected to ``dim``; otherwise the joined
width is used, rounded up to a multiple of ``heads`` (DINO-WM's 384 + 10 + 10 = 404 does not
divide 16 heads; the dino_wm preset projects to 384).
"""
from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

from mpc.attention import Block, FrameRope, KVRing, frame_mask, sdpa_context, under_vmap  # noqa: F401 (re-exported)
from mpc.vector_predictors import GRUPredictor, MLPPredictor

__all__ = ["PredictorConfig", "TransformerPredictor", "MLPPredictor", "GRUPredictor",
           "make_predictor", "frame_mask", "sdpa_context"]

log = logging.getLogger(__name__)

KINDS = ("transformer", "mlp", "gru")
TIME_ENCODINGS = ("rope", "absolute")
JOINS = ("concat", "add")
ATTN_BACKENDS = ("auto", "flash", "efficient", "math", "cudnn")


@dataclass
class PredictorConfig:
    """Predictor architecture and runtime switches (see ``configs/model/*.yaml``)."""

    kind: str = "transformer"  # transformer | mlp | gru
    depth: int = 6  # transformer blocks
    heads: int = 16  # attention heads (must divide the width)
    dim: int | None = None  # width after the input projection; None: joined width rounded to heads
    mlp_dim: int = 2048  # hidden size of each block's MLP (and of the mlp/gru predictors)
    dropout: float = 0.1  # dropout in attention, MLPs and embeddings
    action_emb: int = 10  # action embedding size
    proprio_emb: int = 10  # proprio embedding size
    join: str = "concat"  # concat: [z, a_emb, p_emb] per token (DINO-WM); add: project both to D and add
    num_hist: int = 3  # frames a frame attends to (itself included); window of the rollout
    num_pred: int = 1  # frames predicted per training window (L = num_hist + num_pred)
    time_encoding: str = "rope"  # rope (exact KV cache) | absolute (DINO-WM, recompute window)
    rope_fraction: float = 0.5  # fraction of each head's dims rotated by the frame rope
    rope_base: float = 100.0  # rope base (frame indices are small)
    attn_backend: str = "auto"  # auto | flash | efficient | math | cudnn: kernel of the cached
    # per-step attention (torch sdpa_kernel; flash/cudnn need bf16/fp16, i.e. autocast_bf16 on CUDA).
    # Masked passes (training, prefill, uncached rollout) always use torch's own choice.
    autocast_bf16: bool = False  # bf16 autocast of the predictor on CUDA
    compile: bool = False  # torch.compile the per-step function
    residual: bool = False  # transformer: predict the change of each token (z_next = z + head(x)),
    # the head starting at zero, so an untrained model copies the last frame (mlp/gru always do)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"predictor.kind must be one of {KINDS}, got {self.kind!r}")
        if self.time_encoding not in TIME_ENCODINGS:
            raise ValueError(f"predictor.time_encoding must be one of {TIME_ENCODINGS}, "
                             f"got {self.time_encoding!r}")
        if self.join not in JOINS:
            raise ValueError(f"predictor.join must be one of {JOINS}, got {self.join!r}")
        if self.attn_backend not in ATTN_BACKENDS:
            raise ValueError(f"predictor.attn_backend must be one of {ATTN_BACKENDS}, "
                             f"got {self.attn_backend!r}")
        for name in ("depth", "heads", "mlp_dim", "num_hist", "num_pred"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"predictor.{name} must be >= 1, got {getattr(self, name)}")
        if self.dim is not None and self.dim % self.heads:
            raise ValueError(f"predictor.dim={self.dim} is not divisible by heads={self.heads}; "
                             "choose a dim that is a multiple of heads")
        if not 0.0 <= self.rope_fraction <= 1.0:
            raise ValueError(f"predictor.rope_fraction must lie in [0, 1], got {self.rope_fraction}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "PredictorConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown predictor options {sorted(unknown)}; valid: {sorted(names)}")
        return cls(**d)


class TransformerPredictor(nn.Module):
    """DINO-WM predictor: ViT over the patch tokens of a window of frames, frame-causal.

    Cache layout (from :meth:`prefill` / :meth:`step`): a dict with ``frames`` (list per cached frame,
    oldest first, of per-layer ``(k, v)`` lists, each ``(*batch, h, N, hd)`` where a context frame's
    batch is ``(B, 1)`` and broadcasts over candidates) and ``pos`` (next frame index).
    """

    def __init__(self, cfg: PredictorConfig, num_tokens: int, token_dim: int, action_dim: int,
                 proprio_dim: int):
        super().__init__()
        self.cfg = cfg
        N, D = num_tokens, token_dim
        self.num_tokens, self.token_dim = N, D
        self.action_encoder = nn.Linear(action_dim, cfg.action_emb)
        self.proprio_encoder = nn.Linear(proprio_dim, cfg.proprio_emb)
        if cfg.join == "concat":
            joined = D + cfg.action_emb + cfg.proprio_emb
        else:
            joined = D
            self.action_to_token = nn.Linear(cfg.action_emb, D)
            self.proprio_to_token = nn.Linear(cfg.proprio_emb, D)
        width = cfg.dim if cfg.dim is not None else math.ceil(joined / cfg.heads) * cfg.heads
        self.width = width
        self.in_proj = nn.Linear(joined, width) if width != joined else nn.Identity()
        self.pos_spatial = nn.Parameter(torch.randn(1, N, width) * 0.02)
        if cfg.time_encoding == "absolute":
            self.pos_time = nn.Parameter(torch.randn(self.max_frames, 1, width) * 0.02)
            self.rope = None
        else:
            self.rope = FrameRope(width // cfg.heads, cfg.rope_fraction, cfg.rope_base)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(width, cfg.heads, cfg.mlp_dim, cfg.dropout)
                                    for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, D)
        self.proprio_head = nn.Linear(width, proprio_dim)
        if cfg.residual:  # start as copy-last-frame: the change is learned from zero
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)

    @property
    def max_frames(self) -> int:
        """Most frames one forward pass takes with absolute positions."""
        return self.cfg.num_hist + self.cfg.num_pred - 1

    @property
    def window(self) -> int:
        return self.cfg.num_hist

    # --- pieces ---
    def embed(self, z, proprio, actions):
        """Join action/proprio embeddings to tokens: ``(..., F, N, D)`` -> ``(..., F, N, W)``."""
        a = self.action_encoder(actions)  # (..., F, Ea)
        p = self.proprio_encoder(proprio)  # (..., F, Ep)
        if self.cfg.join == "concat":
            shape = (*torch.broadcast_shapes(z.shape[:-2], a.shape[:-1]), self.num_tokens)
            x = torch.cat([z.expand(*shape, z.shape[-1]),
                           a.unsqueeze(-2).expand(*shape, a.shape[-1]),
                           p.unsqueeze(-2).expand(*shape, p.shape[-1])], dim=-1)
        else:
            x = z + (self.action_to_token(a) + self.proprio_to_token(p)).unsqueeze(-2)
        return self.drop(self.in_proj(x) + self.pos_spatial)  # (..., F, N, W)

    def readout(self, x, z):
        """Block outputs ``(..., F, N, W)`` and the input tokens ``z`` (broadcastable) ->
        ``(z_next (..., F, N, D), proprio (..., F, P))`` (``residual``: the input plus the head's change)."""
        x = self.norm(x)
        z_next = self.head(x)
        if self.cfg.residual:
            z_next = z_next + z
        return z_next, self.proprio_head(x.mean(-2))

    def _angles(self, frame_pos: torch.Tensor):
        if self.rope is None:
            return None, None
        return self.rope.angles(frame_pos.repeat_interleave(self.num_tokens))

    # --- full sequence (teacher forcing, and the uncached reference rollout) ---
    def forward(self, z, proprio, actions):
        """Teacher-forced prediction over F frames.

        Args:
            z: ``(*batch, F, N, D)`` tokens; proprio ``(*batch, F, P)``; actions ``(*batch, F, Am)``
                (normalised; action t is taken at frame t).

        Returns:
            ``(z_next (*batch, F, N, D), proprio_next (*batch, F, P))``; output t predicts frame t+1.
        """
        return self.readout(self.features(z, proprio, actions), z)

    def features(self, z, proprio, actions):
        """:meth:`forward` before the readout: the last block's outputs ``(*batch, F, N, W)``."""
        x = self.embed(z, proprio, actions)  # (*batch, F, N, W)
        *batch, Fr, N, W = x.shape
        if self.rope is None:
            if Fr > self.max_frames:
                raise ValueError(f"absolute time encoding covers at most {self.max_frames} frames, "
                                 f"got {Fr}; use time_encoding='rope' for longer sequences")
            x = x + self.pos_time[:Fr]
        mask = frame_mask(Fr, N, self.window, device=x.device)
        cos, sin = self._angles(torch.arange(Fr, device=x.device))
        x = x.flatten(-3, -2)  # (*batch, F*N, W)
        for blk in self.blocks:
            x, _, _ = blk(x, self.rope, cos, sin, mask)
        return x.unflatten(-2, (Fr, N))

    # --- incremental decoding (rope only) ---
    def prefill(self, z, proprio, actions) -> dict:
        """Run the context frames once per env and cache their per-layer K/V.

        Args:
            z: ``(B, T', N, D)``; proprio ``(B, T', P)``; actions ``(B, T', Am)`` (T' may be 0).

        Returns:
            cache dict (frames with batch ``(B, 1)``, broadcasting over candidates).
        """
        if self.rope is None:
            raise RuntimeError("KV caching needs time_encoding='rope'")
        Tp = z.shape[-3]
        # the next frame index as a tensor, so a compiled step is not specialised on it
        cache = {"frames": [], "pos": torch.tensor(Tp, device=z.device)}
        if Tp == 0:
            return cache
        x = self.embed(z, proprio, actions)  # (B, T', N, W)
        N = x.shape[-2]
        mask = frame_mask(Tp, N, self.window, device=x.device)
        cos, sin = self._angles(torch.arange(Tp, device=x.device))
        x = x.flatten(-3, -2)  # (B, T'*N, W)
        per_layer = []
        for blk in self.blocks:
            x, k, v = blk(x, self.rope, cos, sin, mask)
            per_layer.append((k.unsqueeze(1), v.unsqueeze(1)))  # (B, 1, h, T'*N, hd)
        keep = range(max(0, Tp - (self.window - 1)), Tp)  # frames still inside the next window
        cache["frames"] = [[(k[..., t * N:(t + 1) * N, :], v[..., t * N:(t + 1) * N, :])
                            for k, v in per_layer] for t in keep]
        return cache

    def step(self, cache: dict, z, proprio, actions):
        """Predict the frame after one new frame, for every candidate, using the cache.

        Args:
            cache: from :meth:`prefill` or a previous :meth:`step`.
            z: ``(B, S, N, D)`` (or broadcastable, e.g. ``(B, 1, N, D)``); proprio ``(B, S, P)``;
                actions ``(B, S, Am)`` (normalised).

        Returns:
            ``(z_next (B, S, N, D), proprio_next (B, S, P), cache)``.
        """
        x, cache = self.step_features(cache, z, proprio, actions)
        z_next, p_next = self.readout(x, z)
        return z_next, p_next, cache

    def step_features(self, cache: dict, z, proprio, actions):
        """:meth:`step` before the readout: ``(the last block's outputs (B, S, N, W), cache)``."""
        x = self.embed(z, proprio, actions)  # (B, S, N, W)
        pos = cache["pos"]
        cos, sin = self.rope.angles(pos.reshape(1))  # (1, rot/2): one frame index for all tokens
        # gradient planners (autograd) and ensembles (vmap over members) cannot write into a ring in place
        if torch.is_grad_enabled() or under_vmap(x):
            frames, new = cache["frames"], []
            for i, blk in enumerate(self.blocks):
                x, k, v = blk(x, self.rope, cos, sin, None, [f[i] for f in frames])
                new.append((k, v))
            frames = (frames + [new])[-(self.window - 1):] if self.window > 1 else []
            return x, {"frames": frames, "pos": pos + 1}
        rings = cache.get("rings")
        if rings is None:  # first step: the prefix frames go into one ring per layer, (B, S, h, window*N, hd)
            h = self.blocks[0].attn.heads
            shape = (*x.shape[:-2], h, x.shape[-2], x.shape[-1] // h)
            frames = cache["frames"]
            rings = [KVRing([f[i] for f in frames], self.window, shape, x.dtype, x.device)
                     for i in range(len(self.blocks))]
        for blk, ring in zip(self.blocks, rings):
            x, _, _ = blk(x, self.rope, cos, sin, None, ring)
        return x, {"rings": rings, "pos": pos + 1}


def make_predictor(cfg: PredictorConfig, num_tokens: int, token_dim: int, action_dim: int,
                   proprio_dim: int) -> nn.Module:
    """Build the predictor named by ``cfg.kind``.

    Raises:
        ValueError: unknown kind, or a vector predictor asked for N > 1 tokens.
    """
    cls = {"transformer": TransformerPredictor, "mlp": MLPPredictor, "gru": GRUPredictor}[cfg.kind]
    return cls(cfg, num_tokens, token_dim, action_dim, proprio_dim)
