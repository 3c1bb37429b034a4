"""Rollout memory: estimate what one candidate costs and split the candidates S into chunks that fit.

A rollout's working memory grows linearly with the candidates it runs at once (B envs x S
candidates): the KV cache, the attention scores, the MLP hidden activations and the predicted
tokens. :func:`rollout_bytes_per_candidate` estimates that growth from the model's config (an
upper bound: it assumes attention materialises its scores), :func:`candidate_chunk` turns a
budget into the largest chunk of S that fits, and :func:`chunked_rollout` runs the chunks one after
the other and concatenates them along S. Candidates never interact in a rollout, so the result
equals the unchunked one (to float rounding of the matrix kernels).

``memory_budget_mb="auto"`` takes half of the memory currently available on the device (free GPU
memory on CUDA, ``MemAvailable`` on CPU).
"""
from __future__ import annotations

import logging
import math

import torch

__all__ = ["rollout_bytes_per_candidate", "available_memory_mb", "candidate_chunk", "chunked_rollout"]

log = logging.getLogger(__name__)

_SAFETY = 1.5  # headroom over the estimate (allocator slack, temporaries the estimate misses)


def rollout_bytes_per_candidate(config, context: int, horizon: int, use_cache: bool = True,
                                dtype_bytes: int = 4) -> int:
    """Upper estimate of the rollout memory one candidate adds, in bytes.

    Args:
        config: a :class:`~mpc.world_model.WorldModelConfig`.
        context: T, context frames.
        horizon: H, predicted steps.
        use_cache: the KV-cached rollout (True) or the full-history recompute (False).
        dtype_bytes: bytes per activation element (4 float32, 2 bf16).

    Returns:
        bytes per candidate (per env), already multiplied by a safety factor.
    """
    p = config.predictor
    N, D, P = config.num_tokens, config.token_dim, config.proprio_dim
    out = 2 * horizon * (N * D + P) * 4  # predicted tokens kept in float32, plus the stacked copy
    if p.kind != "transformer":
        state = (p.num_hist + 1) * (D + p.action_emb + p.proprio_emb) + 4 * p.mlp_dim
        work = 4 * (N * D + P) + state
        return int(_SAFETY * (out + work * 4))
    W = p.dim or math.ceil((D + p.action_emb + p.proprio_emb) / p.heads) * p.heads
    joined = D + p.action_emb + p.proprio_emb
    if use_cache:
        frames = p.num_hist  # tokens attended per query: window frames
        cache = (p.num_hist - 1 + 1) * p.depth * 2 * N * W  # kept frames + the frame being added
        rows = N  # query tokens per candidate per step
    else:
        frames = context + horizon - 1 if p.time_encoding == "rope" else p.num_hist
        cache = 2 * frames * N * D  # the per-candidate history of tokens
        rows = frames * N
    keys = 2 * frames * N * W  # concatenated keys and values of one layer
    scores = 2 * p.heads * rows * frames * N  # scores and softmax of one layer (math kernel)
    acts = rows * (joined + 4 * W + 2 * p.mlp_dim)  # embeddings, residual stream, qkv, MLP hidden
    return int(_SAFETY * (out + (cache + keys + scores + acts) * dtype_bytes))


def available_memory_mb(device) -> float:
    """Memory available for new tensors on ``device``, in MiB (free GPU memory, or MemAvailable)."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free / 2**20
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import os
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**20


def candidate_chunk(config, batch: int, samples: int, context: int, horizon: int, *,
                    max_batch: int | None = None, memory_budget_mb: float | str | None = None,
                    use_cache: bool = True, dtype_bytes: int = 4, device="cpu") -> int:
    """The number of candidates per env to roll out at once.

    Args:
        config: the world model's config.
        batch: B envs (each chunk holds B x chunk candidates).
        samples: S candidates per env.
        context, horizon: T and H.
        max_batch: at most this many rollouts (B x chunk) at once (None: no cap).
        memory_budget_mb: a budget in MiB for the rollout's working memory, ``"auto"`` (half of
            what the device has available) or None (no budget).
        use_cache, dtype_bytes: as in :func:`rollout_bytes_per_candidate`.
        device: the device whose memory ``"auto"`` reads.

    Returns:
        chunk size in ``1 .. samples``.

    Raises:
        ValueError: a non-positive ``max_batch`` or budget.
    """
    chunk = samples
    if max_batch is not None:
        if int(max_batch) < 1:
            raise ValueError(f"max_batch must be a positive integer, got {max_batch!r}")
        chunk = min(chunk, max(1, int(max_batch) // max(batch, 1)))
    if memory_budget_mb is not None:
        if memory_budget_mb == "auto":
            budget = 0.5 * available_memory_mb(device)
        else:
            budget = float(memory_budget_mb)
            if not budget > 0:
                raise ValueError(f"memory_budget_mb must be > 0, 'auto' or None, got {memory_budget_mb!r}")
        per = rollout_bytes_per_candidate(config, context, horizon, use_cache, dtype_bytes)
        fit = int(budget * 2**20 // (per * max(batch, 1)))
        if fit < 1:
            log.warning("one candidate per env (%d envs) needs about %.0f MiB, over the %.0f MiB budget; "
                        "running one at a time", batch, per * batch / 2**20, budget)
        chunk = min(chunk, max(1, fit))
    return max(1, chunk)


def chunked_rollout(rollout, z_context, proprio_context, actions, past_actions=None, *, chunk: int,
                    **kwargs):
    """Run ``rollout`` over chunks of the candidate axis and concatenate the results.

    Args:
        rollout: a callable with :meth:`mpc.world_model.WorldModel.rollout`'s signature.
        z_context, proprio_context, past_actions: passed to every chunk unchanged.
        actions: ``(S, H, Am)`` or ``(B, S, H, Am)``; split along S.
        chunk: candidates per chunk.
        **kwargs: passed to ``rollout``.

    Returns:
        ``(z_pred, proprio_pred)`` as one call over all S candidates would.
    """
    s_axis = actions.ndim - 3
    S = actions.shape[s_axis]
    if chunk >= S:
        return rollout(z_context, proprio_context, actions, past_actions, **kwargs)
    zs, ps = [], []
    for part in torch.split(actions, chunk, dim=s_axis):  # loop over chunks of candidates
        z, p = rollout(z_context, proprio_context, part, past_actions, **kwargs)
        zs.append(z)
        ps.append(p)
    return torch.cat(zs, dim=s_axis), torch.cat(ps, dim=s_axis)
