"""Reference rollout and CEM plan loop doing DINO-WM's planning work, for comparison only.

This module does at planning time the work the DINO-WM research code (Zhou et al., 2024,
https://arxiv.org/abs/2411.04983; ``models/visual_world_model.py`` ``VWorldModel.rollout`` and
``planning/cem.py`` ``CEMPlanner.plan``) does, on the weights of a wmpc
:class:`~mpc.world_model.WorldModel`, so that ``benchmarks/hot_path.py`` can time wmpc against it
and ``tests/benchmarks/test_reference.py`` can check what both compute:

* one environment at a time, in a Python loop (DINO-WM loops ``for traj in range(n_evals)``);
* the observation encoded once per candidate at every CEM iteration (DINO-WM repeats ``obs_0``
  ``num_samples`` times and its rollout encodes every copy); the goal is encoded once per plan.
  ``encode_per_candidate=False`` encodes the observation once per env instead; without images
  the context tokens are given and copied per candidate (``repeat``, a real copy);
* every predicted step recomputes a fixed window: the predictor runs over the last ``num_hist``
  frames (``z[:, -num_hist:]``) with the frame-causal mask, so from a context of T frames it sees
  ``min(T + h, num_hist)`` frames at step h: N, 2N, 3N, 3N, 3N tokens over 5 steps from one
  context frame (DINO-WM plans from the current observation alone), 3N at every step from three;
* attention written out as ``softmax(Q K^T / sqrt(d))`` with ``masked_fill``, materialising the
  full ``(S, heads, M, M)`` score matrix; everything in float32, nothing compiled.

The window is what DINO-WM's model sees. A wmpc ``rope`` model is defined over the whole history
(every layer has a sliding ``num_hist`` window, so with depth L a prediction depends on up to
L (num_hist - 1) + 1 frames) and its KV cache computes exactly that; the window recompute equals it
only while ``T + h <= num_hist``, for depth-1 models, and for ``absolute`` positions (where wmpc
recomputes the same window). ``full_history=True`` recomputes the whole history under the sliding
mask instead: the function wmpc's rope rollout computes, for the equality tests.

Remaining differences from DINO-WM, none of which changes the amount of predictor work:

* the predictor is wmpc's (its time encoding, an action/proprio embedding joined per token, a
  separate proprio head); DINO-WM re-encodes its predicted frame's action embedding in place
  (``replace_actions_from_z``) and reads proprio out of the predicted token;
* the encoder is wmpc's (e.g. a random-weight DINOv2 through timm) with its own preprocessing;
* candidates are sampled with a torch generator and clipped to the action bounds; DINO-WM samples
  in normalised action space and does not clip; the cost is the MSE of the last frame's tokens
  (DINO-WM's ``objective`` also weighs proprio);
* nothing is evaluated in the env between iterations, and no logging or wandb work is done.

The hand-written attention is deliberate and lives in this file only; wmpc itself goes through
``torch.nn.functional.scaled_dot_product_attention``. Nothing here is used by the library.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["ReferenceWorldModel", "reference_cem_plan", "latent_mse_last"]


def _linear(w: dict, name: str, x: torch.Tensor) -> torch.Tensor:
    return F.linear(x, w[f"{name}.weight"], w[f"{name}.bias"])


def _layer_norm(w: dict, name: str, x: torch.Tensor) -> torch.Tensor:
    return F.layer_norm(x, x.shape[-1:], w[f"{name}.weight"], w[f"{name}.bias"], eps=1e-5)


class ReferenceWorldModel:
    """A DINO-WM-style re-implementation of a wmpc transformer world model's rollout.

    Args:
        model: a :class:`~mpc.world_model.WorldModel` with a ``transformer`` predictor; its weights
            are copied (float32, detached) and its config read; the model itself is not called.
        device: where the copied weights live (default: the model's device).
        encoder: the image encoder of :meth:`encode` (default: the model's attached encoder).
        full_history: recompute every frame so far at each step (wmpc's rope function) instead of
            DINO-WM's window of the last ``num_hist`` frames.

    Raises:
        ValueError: the predictor is not a transformer.
    """

    def __init__(self, model, device=None, encoder=None, full_history: bool = False):
        pcfg = model.config.predictor
        if pcfg.kind != "transformer":
            raise ValueError(f"the reference covers the transformer predictor only, got kind={pcfg.kind!r}")
        device = torch.device(device) if device is not None else model.device
        self.cfg = pcfg
        self.w = {k: v.detach().to(device=device, dtype=torch.float32).clone()
                  for k, v in model.state_dict().items()}
        self.device = device
        self.N, self.D = model.num_tokens, model.token_dim
        self.heads, self.depth = pcfg.heads, pcfg.depth
        self.width = self.w["predictor.pos_spatial"].shape[-1]
        self.hd = self.width // self.heads
        self.has_in_proj = "predictor.in_proj.weight" in self.w
        rot = int(self.hd * pcfg.rope_fraction) // 2 * 2
        self.rot = rot
        inv = pcfg.rope_base ** (-torch.arange(0, rot, 2, dtype=torch.float64) / max(rot, 1))
        self.inv_freq = inv.float().to(device)  # (rot/2,)
        self.encoder = encoder if encoder is not None else getattr(model, "encoder", None)
        self.full_history = full_history

    def encode(self, images) -> torch.Tensor:
        """Images ``(M, Hi, Wi, 3)`` uint8 -> tokens ``(M, N, D)`` float32 through the encoder.

        Raises:
            RuntimeError: no encoder (the model has none attached and none was given).
        """
        if self.encoder is None:
            raise RuntimeError("the reference has no encoder: attach one to the model or pass "
                               "ReferenceWorldModel(model, encoder=...)")
        return self.encoder.encode(images).to(device=self.device, dtype=torch.float32)

    # --- the predictor, one forward pass over a whole history ---
    def _rope(self, x: torch.Tensor, frames: int) -> torch.Tensor:
        """Rotate the first ``rot`` dims of each head by the frame index (rotate-half pairing).

        x ``(S, h, F*N, hd)``: dim ``j < rot/2`` pairs with dim ``j + rot/2``.
        """
        if self.rot == 0:
            return x
        half = self.rot // 2
        pos = torch.arange(frames, device=x.device).repeat_interleave(self.N).float()
        ang = pos[:, None] * self.inv_freq[None]  # (F*N, rot/2)
        cos, sin = ang.cos(), ang.sin()
        out = x.clone()
        out[..., :half] = x[..., :half] * cos - x[..., half:self.rot] * sin
        out[..., half:self.rot] = x[..., :half] * sin + x[..., half:self.rot] * cos
        return out

    def _attention(self, i: int, x: torch.Tensor, allowed: torch.Tensor, frames: int) -> torch.Tensor:
        """Explicit multi-head attention of block ``i``: x (S, M, W) -> (S, M, W)."""
        S, M, W = x.shape
        qkv = _linear(self.w, f"predictor.blocks.{i}.attn.qkv", x)  # (S, M, 3W)
        qkv = qkv.reshape(S, M, 3, self.heads, self.hd).permute(2, 0, 3, 1, 4)  # (3, S, h, M, hd)
        q, k, v = qkv[0], qkv[1], qkv[2]
        if self.cfg.time_encoding == "rope":
            q, k = self._rope(q, frames), self._rope(k, frames)
        dots = torch.matmul(q, k.transpose(-1, -2)) * (1.0 / math.sqrt(self.hd))  # (S, h, M, M)
        dots = dots.masked_fill(~allowed, float("-inf"))
        attn = torch.softmax(dots, dim=-1)
        out = torch.matmul(attn, v)  # (S, h, M, hd)
        out = out.transpose(1, 2).reshape(S, M, W)
        return _linear(self.w, f"predictor.blocks.{i}.attn.proj", out)

    def predict(self, z: torch.Tensor, proprio: torch.Tensor, actions: torch.Tensor):
        """One teacher-forced pass over F frames (normalised inputs).

        Args:
            z: ``(S, F, N, D)``; proprio ``(S, F, P)``; actions ``(S, F, Am)``.

        Returns:
            ``(z_next (S, F, N, D), proprio_next (S, F, P))``; output t predicts frame t + 1.
        """
        w, N = self.w, self.N
        S, Fr = z.shape[:2]
        a = _linear(w, "predictor.action_encoder", actions)  # (S, F, Ea)
        p = _linear(w, "predictor.proprio_encoder", proprio)  # (S, F, Ep)
        if self.cfg.join == "concat":
            x = torch.cat([z, a[:, :, None].repeat(1, 1, N, 1), p[:, :, None].repeat(1, 1, N, 1)], dim=-1)
        else:
            x = z + (_linear(w, "predictor.action_to_token", a)
                     + _linear(w, "predictor.proprio_to_token", p))[:, :, None]
        if self.has_in_proj:
            x = _linear(w, "predictor.in_proj", x)
        x = x + w["predictor.pos_spatial"]  # (S, F, N, W)
        if self.cfg.time_encoding == "absolute":
            x = x + w["predictor.pos_time"][:Fr]
        x = x.reshape(S, Fr * N, self.width)
        frame = torch.arange(Fr, device=x.device).repeat_interleave(N)
        d = frame[:, None] - frame[None, :]
        allowed = (d >= 0) & (d < self.cfg.num_hist)  # (F*N, F*N)
        for i in range(self.depth):
            b = f"predictor.blocks.{i}"
            x = x + self._attention(i, _layer_norm(w, f"{b}.norm1", x), allowed, Fr)
            hdn = F.gelu(_linear(w, f"{b}.mlp.0", _layer_norm(w, f"{b}.norm2", x)))
            x = x + _linear(w, f"{b}.mlp.3", hdn)
        x = _layer_norm(w, "predictor.norm", x).reshape(S, Fr, N, self.width)
        return _linear(w, "predictor.head", x), _linear(w, "predictor.proprio_head", x.mean(-2))

    # --- the rollout ---
    def rollout_one(self, z_context, proprio_context, actions, past_actions):
        """Roll S candidates of ONE env forward (DINO-WM style), the context copied per candidate.

        Args:
            z_context: ``(T, N, D)``; proprio_context ``(T, P)`` raw; actions ``(S, H, Am)`` raw;
                past_actions ``(T-1, Am)`` raw.

        Returns:
            ``(z_pred (S, H, N, D), proprio_pred (S, H, P))`` (proprio raw).
        """
        S = actions.shape[0]
        z = z_context[None].repeat(S, 1, 1, 1)  # (S, T, N, D): the context copied per candidate
        return self.rollout_candidates(z, proprio_context, actions, past_actions)

    def rollout_candidates(self, z, proprio_context, actions, past_actions):
        """Roll S candidates forward from per-candidate context tokens ``z (S, T, N, D)``.

        Each step runs :meth:`predict` over the last ``num_hist`` frames (all frames so far with
        ``full_history``) and keeps the prediction of the newest frame.

        Returns:
            ``(z_pred (S, H, N, D), proprio_pred (S, H, P))`` (proprio raw).
        """
        w = self.w
        S, H = actions.shape[:2]
        T = z.shape[1]
        a = (actions - w["action_mean"]) / w["action_std"]
        pa = (past_actions - w["action_mean"]) / w["action_std"]
        pc = (proprio_context - w["proprio_mean"]) / w["proprio_std"]
        p = pc[None].repeat(S, 1, 1)  # (S, T, P)
        act = torch.cat([pa[None].repeat(S, 1, 1), a], dim=1)  # (S, T-1+H, Am)
        zs, ps = [], []
        for h in range(H):
            lo = 0 if self.full_history else max(0, T + h - self.cfg.num_hist)
            zo, po = self.predict(z[:, lo:], p[:, lo:], act[:, lo:T + h])
            zs.append(zo[:, -1])
            ps.append(po[:, -1])
            z = torch.cat([z, zo[:, -1:]], dim=1)
            p = torch.cat([p, po[:, -1:]], dim=1)
        z_pred = torch.stack(zs, dim=1)
        p_pred = torch.stack(ps, dim=1) * w["proprio_std"] + w["proprio_mean"]
        return z_pred, p_pred

    @torch.no_grad()
    def rollout(self, z_context, proprio_context, actions, past_actions=None):
        """Batched signature of :meth:`mpc.world_model.WorldModel.rollout`, one env at a time.

        Args:
            z_context: ``(B, T, N, D)``; proprio_context ``(B, T, P)``; actions ``(B, S, H, Am)``;
                past_actions ``(B, T-1, Am)`` or None (zeros).

        Returns:
            ``(z_pred (B, S, H, N, D), proprio_pred (B, S, H, P))``.
        """
        B, T = z_context.shape[:2]
        if past_actions is None:
            past_actions = z_context.new_zeros(B, T - 1, actions.shape[-1])
        outs = [self.rollout_one(z_context[b], proprio_context[b], actions[b], past_actions[b])
                for b in range(B)]  # one env at a time
        return torch.stack([o[0] for o in outs]), torch.stack([o[1] for o in outs])


def latent_mse_last(z_pred: torch.Tensor, z_goal: torch.Tensor) -> torch.Tensor:
    """DINO-WM's planning cost: MSE of the last predicted frame to the goal; (S, H, N, D), (N, D) -> (S,)."""
    return ((z_pred[:, -1] - z_goal) ** 2).mean(dim=(-1, -2))


@torch.no_grad()
def reference_cem_plan(ref: ReferenceWorldModel, z_context, proprio_context, z_goal, past_actions,
                       low: torch.Tensor, high: torch.Tensor, horizon: int = 5, samples: int = 300,
                       iterations: int = 30, topk: int = 30, seed: int = 0, images=None,
                       goal_images=None, encode_per_candidate: bool = True):
    """The DINO-WM CEM plan loop: one env at a time, every candidate set rolled out from scratch.

    Args:
        ref: the reference model.
        z_context: ``(B, T, N, D)`` context tokens, or None when ``images`` are given.
        proprio_context: ``(B, T, P)`` raw.
        z_goal: ``(B, N, D)`` goal tokens, or None when ``goal_images`` are given.
        past_actions: ``(B, T-1, Am)`` raw.
        low, high: ``(Am,)`` action bounds.
        horizon, samples, iterations, topk: CEM settings (DINO-WM: 5, 300, 30, 30).
        seed: torch generator seed.
        images: ``(B, T, Hi, Wi, 3)`` uint8 context images, encoded with ``ref.encode``: S x T
            images per env at every iteration (``encode_per_candidate``, DINO-WM), else T per env.
        goal_images: ``(B, Hi, Wi, 3)`` uint8, encoded once per env (DINO-WM encodes the goal once).
        encode_per_candidate: see ``images``.

    Returns:
        ``(actions (B, H, Am), cost (B,))``: the last elite mean and the best cost of the last iteration.
    """
    if images is not None:
        images = torch.as_tensor(images)
    if goal_images is not None:
        goal_images = torch.as_tensor(goal_images)
    B, T = proprio_context.shape[:2]
    Am = low.shape[-1]
    device = proprio_context.device
    g = torch.Generator(device=device).manual_seed(seed)
    plans, costs = [], []
    for b in range(B):  # one env at a time
        goal = z_goal[b] if goal_images is None else ref.encode(goal_images[b:b + 1])[0]  # (N, D)
        if images is not None and not encode_per_candidate:
            z_env = ref.encode(images[b])  # (T, N, D), once per env
        else:
            z_env = None if z_context is None else z_context[b]
        mean = ((low + high) / 2).expand(horizon, Am).clone()
        std = ((high - low) / 2).expand(horizon, Am).clone()
        for _ in range(iterations):
            noise = torch.randn(samples, horizon, Am, generator=g, device=device)
            cand = torch.maximum(torch.minimum(mean + std * noise, high), low)
            cand[0] = mean
            if images is not None and encode_per_candidate:  # obs repeated per sample, all encoded
                copies = images[b].unsqueeze(0).expand(samples, *images.shape[1:])  # (S, T, Hi, Wi, 3)
                z = ref.encode(copies.reshape(samples * T, *images.shape[2:]))  # (S*T, N, D)
                z_pred, _ = ref.rollout_candidates(z.reshape(samples, T, *z.shape[1:]),
                                                   proprio_context[b], cand, past_actions[b])
            else:
                z_pred, _ = ref.rollout_one(z_env, proprio_context[b], cand, past_actions[b])
            cost = latent_mse_last(z_pred, goal)  # (S,)
            best, idx = torch.topk(cost, topk, largest=False)
            elites = cand[idx]
            mean, std = elites.mean(0), elites.std(0)
        plans.append(mean)
        costs.append(best[0])
    return torch.stack(plans), torch.stack(costs)
