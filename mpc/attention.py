"""Attention for the frame-causal transformer predictor: masks, frame RoPE, the KV ring, blocks.

- :func:`sdpa_context` picks the scaled-dot-product-attention kernel; :func:`frame_mask` builds the
  sliding-window frame-causal mask.
- :class:`FrameRope`: rotary phases from the frame index (all tokens of a frame share it).
- :class:`KVRing`: one layer's keys/values of the last ``window`` frames during cached rollouts.
- :class:`Attention`, :class:`Block`: pre-norm transformer pieces (SDPA, or plain matmuls under
  ``torch.vmap`` where CPU SDPA has no batching rule, and in CPU inference on small score tiles, where
  they are faster).
"""
from __future__ import annotations

import contextlib
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["sdpa_context", "frame_mask", "FrameRope", "KVRing", "Attention", "Block", "under_vmap"]


def under_vmap(*tensors: torch.Tensor) -> bool:
    """Whether any of ``tensors`` is batched by ``torch.vmap`` (an ensemble's members): CPU SDPA has no
    batching rule there, and in-place writes into unbatched buffers are not allowed."""
    return any(torch._C._functorch.is_batchedtensor(t) for t in tensors)


def sdpa_context(backend: str):
    """Context manager selecting the scaled-dot-product-attention kernel (``auto``: torch's choice)."""
    if backend == "auto":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel
    table = {"flash": SDPBackend.FLASH_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION,
             "math": SDPBackend.MATH, "cudnn": SDPBackend.CUDNN_ATTENTION}
    return sdpa_kernel(table[backend])


def frame_mask(num_frames: int, num_tokens: int, window: int, device=None) -> torch.Tensor:
    """Boolean attention mask (True = may attend) for ``num_frames`` frames of ``num_tokens`` tokens.

    A token of frame t sees every token of frames ``t - window + 1 .. t``.

    Returns:
        bool ``(F*N, F*N)``.
    """
    f = torch.arange(num_frames, device=device).repeat_interleave(num_tokens)  # (F*N,)
    d = f[:, None] - f[None, :]
    return (d >= 0) & (d < window)


class FrameRope(nn.Module):
    """Rotary embedding over the frame index, applied to the first ``rot`` dims of each head."""

    def __init__(self, head_dim: int, fraction: float, base: float):
        super().__init__()
        rot = int(head_dim * fraction) // 2 * 2
        self.rot = rot
        inv = base ** (-torch.arange(0, rot, 2, dtype=torch.float64) / max(rot, 1))
        self.register_buffer("inv_freq", inv.float(), persistent=False)

    def angles(self, frame_pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Frame indices ``(M,)`` (one per token) -> cos, sin ``(M, rot/2)``."""
        a = frame_pos.float()[:, None] * self.inv_freq[None]
        return a.cos(), a.sin()

    def rotate(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """Rotate ``x (..., M, hd)`` by the per-token angles ``(M, rot/2)``."""
        if self.rot == 0:
            return x
        half = self.rot // 2
        x1, x2, xp = x[..., :half], x[..., half:self.rot], x[..., self.rot:]  # rotate-half pairing
        cos, sin = cos.to(x.dtype), sin.to(x.dtype)
        return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos, xp), dim=-1)


class KVRing:
    """One layer's keys/values of the last ``window`` frames, preallocated: a ring of frame slots.

    Every cached step writes its frame's keys/values into the next slot (overwriting the frame that
    left the window) and attends over the filled slots. With RoPE the positions live in the rotated
    keys, and attention does not depend on the order of keys, so the slots need no shifting; each
    step copies only its own frame instead of concatenating the whole window again.

    Args:
        frames: the context frames' ``(k, v)``, each ``(*batch', h, N, hd)`` (broadcast into the ring).
        batch: the ring's leading shape ``(*batch, h)`` and the frame's ``N``, ``hd``, dtype, device.
    """

    def __init__(self, frames: list, window: int, shape: tuple, dtype, device):
        *lead, N, hd = shape
        self.N, self.window = N, window
        self.k = torch.empty(*lead, window * N, hd, dtype=dtype, device=device)
        self.v = torch.empty_like(self.k)
        for i, (k, v) in enumerate(frames):  # the shared prefix, copied once per candidate
            self.k[..., i * N:(i + 1) * N, :] = k
            self.v[..., i * N:(i + 1) * N, :] = v
        self.count = len(frames)

    def write(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store one frame's ``k``, ``v`` ``(*batch, h, N, hd)``; returns the keys/values to attend."""
        N, slot = self.N, self.count % self.window
        self.k[..., slot * N:(slot + 1) * N, :] = k
        self.v[..., slot * N:(slot + 1) * N, :] = v
        self.count += 1
        filled = min(self.count, self.window) * N
        return self.k[..., :filled, :], self.v[..., :filled, :]


def _attention(q, k, v, mask, dropout: float) -> torch.Tensor:
    """Softmax attention in plain matmuls: ``q (*batch, h, M, hd)``, ``k``/``v`` ``(*batch, h, Mk, hd)``,
    bool ``mask (M, Mk)`` or None -> ``(*batch, M, h * hd)``."""
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])  # (*batch, h, M, Mk)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    out = F.dropout(scores.softmax(-1), dropout) @ v  # (*batch, h, M, hd)
    return out.movedim(-3, -2).flatten(-2)


SMALL_TILE = 4096  # CPU inference: score tiles (M x Mk per batch and head) up to this many entries
SMALL_TILE_BYTES = 256 * 2 ** 20  # ... and all scores together up to this size go through plain matmuls


def _sdpa_unrestricted() -> bool:
    """Whether every SDPA kernel is allowed (``attn_backend: auto``), not one picked by ``sdpa_kernel``."""
    b = torch.backends.cuda
    return b.flash_sdp_enabled() and b.mem_efficient_sdp_enabled() and b.math_sdp_enabled()


def _eager_cpu_inference(x: torch.Tensor) -> bool:
    """Whether ``x`` is on the CPU with no gradient recorded and no ``torch.compile`` tracing: where the
    hand-made CPU paths (:func:`_small_tile_attention`, :meth:`Block._mlp_in_chunks`) apply."""
    return x.device.type == "cpu" and not torch.is_grad_enabled() and not torch.compiler.is_compiling()


def _small_tiles_on_cpu(q: torch.Tensor, k: torch.Tensor, dropout: float = 0.0) -> bool:
    """Whether :func:`_small_tile_attention` applies: eager CPU inference (no dropout) on small score tiles.

    Measured with 2 threads (head dim 24 and 64): torch's CPU SDPA kernel is 1.3-4.8x slower than
    two batched matmuls and an in-place softmax while a tile has at most ~4k entries (16 query tokens
    over 48 keys: 2.4x; one token over 3: 2.9x), and faster from ~12k (196 over 588: 0.55x)."""
    M, Mk = q.shape[-2], k.shape[-2]
    scores_bytes = q.numel() // q.shape[-1] * Mk * q.element_size()
    return (not dropout and M * Mk <= SMALL_TILE and scores_bytes <= SMALL_TILE_BYTES and _eager_cpu_inference(q)
            and _sdpa_unrestricted())


def _small_tile_attention(q, k, v, mask) -> torch.Tensor:
    """Inference softmax attention as :func:`_attention` computes it, with the scores scaled through
    ``q`` and masked and normalised in place (one score buffer instead of three)."""
    scores = torch.matmul(q * (1.0 / math.sqrt(q.shape[-1])), k.transpose(-1, -2))  # (*batch, h, M, Mk)
    if mask is not None and mask.dtype == torch.bool:
        scores.masked_fill_(~mask, float("-inf"))
    elif mask is not None:  # an additive float mask, as SDPA takes it
        scores += mask
    torch.softmax(scores, -1, out=scores)
    return torch.matmul(scores, v).movedim(-3, -2).flatten(-2)


class Attention(nn.Module):
    """Multi-head self-attention through ``F.scaled_dot_product_attention``."""

    def __init__(self, width: int, heads: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.dropout = dropout
        self.proj_drop = nn.Dropout(dropout)

    def forward(self, x, rope: FrameRope | None, cos=None, sin=None, mask=None, past=None):
        """Attend from ``x`` to ``past`` keys/values plus ``x``'s own.

        Args:
            x: ``(*batch, M, W)`` tokens.
            rope: rotary module (None: no rotation); ``cos``/``sin`` ``(M, rot/2)``.
            mask: bool ``(M, Mp + M)`` or None (all visible).
            past: list of ``(k, v)`` each ``(*batch', h, Mi, hd)`` broadcastable to ``x``'s batch, or
                a :class:`KVRing` that receives ``x``'s keys/values and holds the window.

        Returns:
            ``(out (*batch, M, W), k, v)``; ``k``, ``v`` ``(*batch, h, M, hd)`` (rotated k).
        """
        *batch, M, W = x.shape
        h = self.heads
        if rope is not None and cos.shape[-2] == 1:
            # every token sits at the same frame: rotating q and k equals rotating the q/k rows of
            # the projection once ((3W, W) numbers) instead of the (*batch, h, M, hd) activations
            qkv = F.linear(x, *self._rotated_qkv(rope, cos, sin)).unflatten(-1, (3, h, W // h))
            q, k, v = qkv.movedim(-3, 0).movedim(-2, -3).unbind(0)  # each (*batch, h, M, hd)
        else:
            qkv = self.qkv(x).unflatten(-1, (3, h, W // h))  # (*batch, M, 3, h, hd)
            q, k, v = qkv.movedim(-3, 0).movedim(-2, -3).unbind(0)  # each (*batch, h, M, hd)
            if rope is not None:
                q, k = rope.rotate(q, cos, sin), rope.rotate(k, cos, sin)
        if isinstance(past, KVRing):
            keys, vals = past.write(k, v)  # views of the ring, (*batch, h, Mk, hd): no concatenation
        elif past:
            shape = (*batch, h, -1, W // h)
            keys = torch.cat([pk.expand(shape) for pk, _ in past] + [k], dim=-2)  # (*batch, h, Mk, hd)
            vals = torch.cat([pv.expand(shape) for _, pv in past] + [v], dim=-2)
        else:
            keys, vals = k, v
        drop = self.dropout if self.training else 0.0
        if under_vmap(q, keys):
            # under torch.vmap (ensemble members, mpc.ensemble) CPU SDPA has no batching rule and
            # would loop over members: plain matmuls batch
            return self.proj_drop(self.proj(_attention(q, keys, vals, mask, drop))), k, v
        if _small_tiles_on_cpu(q, keys, drop):
            return self.proj_drop(self.proj(_small_tile_attention(q, keys, vals, mask))), k, v
        # fused SDPA kernels take 4-D (batch, h, M, hd): fold the leading batch dims
        out = F.scaled_dot_product_attention(q.reshape(-1, *q.shape[-3:]),
                                             keys.reshape(-1, *keys.shape[-3:]),
                                             vals.reshape(-1, *vals.shape[-3:]),
                                             attn_mask=mask, dropout_p=drop)
        out = out.unflatten(0, q.shape[:-3]).movedim(-3, -2).flatten(-2)  # (*batch, M, W)
        return self.proj_drop(self.proj(out)), k, v

    def _rotated_qkv(self, rope: FrameRope, cos, sin):
        """The qkv weight ``(3W, W)`` and bias ``(3W,)`` with the q and k rows rotated to one frame."""
        w, b = self.qkv.weight, self.qkv.bias
        W = w.shape[1]
        hd = W // self.heads
        wqk = w[:2 * W].unflatten(0, (2, self.heads, hd)).transpose(-1, -2)  # (2, h, W, hd)
        bqk = b[:2 * W].unflatten(0, (2, self.heads, 1, hd))  # (2, h, 1, hd)
        wqk = rope.rotate(wqk, cos, sin).transpose(-1, -2).flatten(0, 2)  # (2W, W)
        bqk = rope.rotate(bqk, cos, sin).flatten()  # (2W,)
        return torch.cat([wqk, w[2 * W:]]), torch.cat([bqk, b[2 * W:]])


MLP_CHUNK_ROWS = 512  # CPU inference: rows of a block's MLP per chunk (a 512 x 2048 fp32 hidden is 4 MiB)


class Block(nn.Module):
    """Pre-norm transformer block."""

    def __init__(self, width: int, heads: int, mlp_dim: int, dropout: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(width)
        self.attn = Attention(width, heads, dropout)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, mlp_dim), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(mlp_dim, width), nn.Dropout(dropout))

    def forward(self, x, rope, cos=None, sin=None, mask=None, past=None):
        a, k, v = self.attn(self.norm1(x), rope, cos, sin, mask, past)
        x = x + a
        if self._chunk_mlp(x):
            return self._mlp_in_chunks(x), k, v
        x = x + self.mlp(self.norm2(x))
        return x, k, v

    def _chunk_mlp(self, x: torch.Tensor) -> bool:
        """Whether :meth:`_mlp_in_chunks` applies: eager CPU inference on at least two chunks of rows
        (torch.compile fuses the MLP itself)."""
        return (not self.training and x.numel() >= 2 * MLP_CHUNK_ROWS * x.shape[-1] and _eager_cpu_inference(x)
                and not under_vmap(x))

    def _mlp_in_chunks(self, x: torch.Tensor) -> torch.Tensor:
        """``x + mlp(norm2(x))`` over ``MLP_CHUNK_ROWS`` rows at a time (rows are independent, so the
        values are the same): each chunk's ``(rows, mlp_dim)`` hidden activations stay in the CPU's
        cache between the first linear layer, the GELU and the second one, instead of three passes
        through memory over the whole batch; the second layer accumulates onto the residual in place."""
        fc1, fc2 = self.mlp[0], self.mlp[3]
        flat = x.reshape(-1, x.shape[-1])
        out = flat + fc2.bias  # residual plus the second layer's bias; the products are added below
        w2 = fc2.weight.t()
        for i in range(0, flat.shape[0], MLP_CHUNK_ROWS):
            h = F.gelu(F.linear(self.norm2(flat[i:i + MLP_CHUNK_ROWS]), fc1.weight, fc1.bias))
            out[i:i + MLP_CHUNK_ROWS].addmm_(h, w2)
        return out.view(x.shape)
