"""The world model: frozen encoder + action/proprio normalisation + latent predictor.

``WorldModel`` takes RAW actions and proprio and normalises them inside with stats stored as
buffers (set from a dataset's ``stats.json`` with :meth:`WorldModel.set_normalization`).
Teacher-forced training goes through :meth:`WorldModel.forward` / :meth:`WorldModel.loss`;
planning goes through :meth:`WorldModel.rollout`, which rolls ``S`` candidate action sequences
(for ``B`` envs) forward ``H`` steps in single tensor operations, feeding its own predictions
(tokens and proprio) back like DINO-WM. With ``time_encoding="rope"`` it reuses a KV cache and
computes the shared context once per env (prefix sharing), which equals the uncached reference
(``use_cache=False``: recompute the full history every step) to float rounding.

The config and its presets live in :mod:`mpc.presets`, checkpoint files in :mod:`mpc.checkpoint`
(both re-exported here); ``save`` / ``load`` / ``read_header`` delegate to the latter. What planning
needs of the task (action bounds, image size, env) is a :class:`~mpc.checkpoint.TaskInfo` set with
:meth:`WorldModel.set_task` and saved with the weights.

A model with ``proprio_dim = 0`` takes ``None`` (or ``(..., 0)`` arrays) wherever proprio goes in.
"""
from __future__ import annotations

import contextlib
import functools
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from mpc import checkpoint
from mpc.checkpoint import FORMAT_VERSION, RUNTIME_OPTIONS, TaskInfo, task_from_dataset_meta
from mpc.ensemble import bootstrap_counts, make_ensemble_predictor
from mpc.memory import candidate_chunk, chunked_rollout
from mpc.model_inputs import ModelInputs
from mpc.predictor import sdpa_context
from mpc.presets import WorldModelConfig, config_from_preset, load_preset

__all__ = ["WorldModelConfig", "WorldModel", "TaskInfo", "task_from_dataset_meta", "FORMAT_VERSION",
           "RUNTIME_OPTIONS", "load_preset", "config_from_preset"]



class WorldModel(ModelInputs, nn.Module):
    """Encoder (frozen, optional) + latent predictor, on raw actions and proprio.

    Args:
        config: shapes and predictor architecture.
        encoder: the frozen encoder used by :meth:`encode` (optional; its fingerprint must match
            ``config.encoder_fingerprint`` when both are set).

    Raises:
        ValueError: encoder fingerprint, token count or dim disagree with the config.
    """

    def __init__(self, config: WorldModelConfig, encoder=None):
        super().__init__()
        if isinstance(config, dict):
            config = WorldModelConfig.from_dict(config)
        self.config = config
        self.predictor = make_ensemble_predictor(config)  # K = config.ensemble stacked members
        Am, P = config.action_dim, config.proprio_dim
        self.register_buffer("action_mean", torch.zeros(Am))
        self.register_buffer("action_std", torch.ones(Am))
        self.register_buffer("proprio_mean", torch.zeros(P))
        self.register_buffer("proprio_std", torch.ones(P))
        self.task = TaskInfo()  # what planning needs of the task (set_task; saved in checkpoints)
        self.encoder = None
        self.encoder_error: str | None = None  # why load() could not rebuild the checkpoint's encoder
        if encoder is not None:
            self.attach_encoder(encoder)
        self._compiled_step = None
        # memory bound of the rollout (runtime settings, not saved): candidates per env are split
        # into chunks so that B x chunk <= max_batch and the estimated working memory fits the budget
        self.max_batch: int | None = None
        self.memory_budget_mb: float | str | None = "auto"

    # --- properties ---
    action_dim = property(lambda self: self.config.action_dim, doc="Am = frameskip * A")
    proprio_dim = property(lambda self: self.config.proprio_dim, doc="P")
    num_tokens = property(lambda self: self.config.num_tokens, doc="N")
    token_dim = property(lambda self: self.config.token_dim, doc="D")
    frameskip = property(lambda self: self.config.frameskip)
    num_hist = property(lambda self: self.config.predictor.num_hist)
    ensemble = property(lambda self: self.config.ensemble, doc="K predictors (1: a single one)")
    _heads = property(lambda self: self.config.ensemble > 1 and self.config.ensemble_kind == "heads",
                      doc="one shared trunk with K heads (mpc.ensemble.HeadsEnsemble)")
    encoder_fingerprint = property(lambda self: self.config.encoder_fingerprint)
    _cacheable = property(lambda self: self.config.predictor.kind != "transformer"
                          or self.config.predictor.time_encoding == "rope",
                          doc="the rollout can reuse per-frame state (rope KV cache, MLP window, GRU state)")

    @property
    def device(self) -> torch.device:
        return self.action_mean.device

    # --- task (what planning needs; see mpc.checkpoint.TaskInfo) ---
    @property
    def action_low(self) -> np.ndarray | None:
        """float32 ``(A,)`` lower bounds of the env's actions (None: unknown)."""
        low = self.task.action_low
        return None if low is None else np.asarray(low, np.float32)

    @property
    def action_high(self) -> np.ndarray | None:
        """float32 ``(A,)`` upper bounds of the env's actions (None: unknown)."""
        high = self.task.action_high
        return None if high is None else np.asarray(high, np.float32)

    image_size = property(lambda self: self.task.image_size,
                          doc="side of the camera images the model was trained on (None: unknown)")
    env = property(lambda self: self.task.env, doc="env name or gymnasium id of the data (None: unknown)")
    env_options = property(lambda self: None if self.task.env_options is None else dict(self.task.env_options),
                           doc="the env's constructor options of the data (None: unknown)")

    def set_task(self, task: TaskInfo | None = None, **fields) -> None:
        """Record what planning needs of the task: the env's action bounds, image size, env and options.

        Args:
            task: a :class:`~mpc.checkpoint.TaskInfo` (e.g. ``task_from_dataset_meta(meta)``), or
                None to build one from ``fields``.
            **fields: ``action_low``, ``action_high`` (``(A,)`` each), ``image_size``, ``env``,
                ``env_options``; fields not given are None (unknown).

        Raises:
            ValueError: bad values, or bounds whose length is not the model's A.
            TypeError: both ``task`` and ``fields``, or an unknown field.
        """
        if task is not None and fields:
            raise TypeError("pass a TaskInfo or its fields as keywords, not both")
        if task is None:
            task = TaskInfo(**fields)
        elif not isinstance(task, TaskInfo):
            raise TypeError(f"task must be a TaskInfo, got {type(task).__name__}")
        A = self.config.env_action_dim
        if task.action_low is not None and len(task.action_low) != A:
            raise ValueError(f"action bounds have {len(task.action_low)} values, this model's env actions "
                             f"have A={A}")
        self.task = task

    # --- encoder ---
    def attach_encoder(self, encoder) -> None:
        """Attach a frozen encoder; checks fingerprint, N and D against the config.

        Raises:
            ValueError: any of them differs.
        """
        cfg = self.config
        fp = encoder.fingerprint
        if cfg.encoder_fingerprint is not None and fp != cfg.encoder_fingerprint:
            raise ValueError(f"encoder fingerprint {fp!r} differs from the one this world model was "
                             f"trained on ({cfg.encoder_fingerprint!r}); pass the same encoder "
                             "(same weights, image size and token mode)")
        if (encoder.num_tokens, encoder.dim) != (cfg.num_tokens, cfg.token_dim):
            raise ValueError(f"encoder gives (N, D) = ({encoder.num_tokens}, {encoder.dim}), the "
                             f"world model expects ({cfg.num_tokens}, {cfg.token_dim})")
        if cfg.encoder_fingerprint is None:
            cfg.encoder_fingerprint = fp  # checkpoints then remember which encoder this was
        for p in encoder.parameters():
            p.requires_grad_(False)
        encoder.eval()
        object.__setattr__(self, "encoder", encoder)  # not a submodule: its weights stay out of ours

    def encode(self, images) -> torch.Tensor:
        """Images -> tokens ``(B, N, D)`` through the frozen encoder.

        Raises:
            RuntimeError: no encoder attached.
        """
        if self.encoder is None:
            why = self.encoder_error
            raise RuntimeError("this world model has no encoder; pass encoder= to WorldModel(...) "
                               "or WorldModel.load(path, encoder=...)"
                               + (f" (rebuilding the checkpoint's encoder failed: {why})" if why else ""))
        with torch.no_grad():
            return self.encoder.encode(images).to(self.device)

    def _bf16(self) -> bool:
        """Whether the predictor runs under bf16 autocast (asked for, and on CUDA)."""
        return self.config.predictor.autocast_bf16 and self.device.type == "cuda"

    def _autocast(self):
        return torch.autocast("cuda", dtype=torch.bfloat16) if self._bf16() else contextlib.nullcontext()

    # --- teacher forcing ---
    def forward(self, z, proprio, actions, members: bool = False):
        """Teacher-forced prediction: output i predicts frame i+1.

        Args:
            z: ``(B, L, N, D)`` tokens; proprio ``(B, L, P)`` raw (None when P = 0); actions
                ``(B, L-1, Am)`` raw.

        Returns:
            ``(z_pred (B, L-1, N, D), proprio_pred (B, L-1, P))`` (proprio_pred normalised); for an
            ensemble the members' mean, or with ``members=True`` every member's,
            ``(B, K, L-1, N, D)`` and ``(B, K, L-1, P)``.

        Raises:
            ValueError: wrong shapes or non-finite values.
        """
        N, D, P, Am = self.num_tokens, self.token_dim, self.proprio_dim, self.action_dim
        z = self._check("z", z, (4,), (N, D))
        proprio = self._check("proprio", self._no_proprio("proprio", proprio, z.shape[:2]), (3,), (P,))
        actions = self._check("actions", actions, (3,), (Am,))
        B, L = z.shape[:2]
        if proprio.shape[:2] != (B, L) or actions.shape[:2] != (B, L - 1) or L < 2:
            raise ValueError(f"expected z (B, L, N, D), proprio (B, L, P), actions (B, L-1, Am) with "
                             f"L >= 2; got {tuple(z.shape)}, {tuple(proprio.shape)}, "
                             f"{tuple(actions.shape)}")
        zp, pp = self._teacher(z[:, :-1], self._norm_proprio(proprio[:, :-1]), self._norm_actions(actions))
        if self.ensemble > 1:  # (K, B, ...) -> (B, K, ...) or the members' mean
            zp, pp = (zp.movedim(0, 1), pp.movedim(0, 1)) if members else (zp.mean(0), pp.mean(0))
        elif members:
            zp, pp = zp.unsqueeze(1), pp.unsqueeze(1)
        return zp, pp

    def _teacher(self, z, proprio, actions):
        """The predictor on normalised inputs; an ensemble takes and gives a leading K axis (inputs
        without one are shared by every member)."""
        K = self.ensemble
        if K > 1 and z.ndim == 4 and not self._heads:  # (B, L', N, D): the same windows for every member
            z, proprio, actions = (x.expand(K, *x.shape) for x in (z, proprio, actions))
        with self._autocast():
            zp, pp = self.predictor(z, proprio, actions)
        return zp.float(), pp.float()

    def loss(self, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        """MSE on next-frame tokens plus ``proprio_loss_weight`` x MSE on normalised proprio; with
        ``rollout_loss_weight`` > 0 plus that weight x the same on the window's last ``num_pred``
        frames rolled out on the model's own predictions (multi-step loss).

        Args:
            batch: dict from ``mpc.data.WindowDataset`` (collated): ``z (B, L, N, D)``,
                ``proprio (B, L, P)`` raw (may be absent when P = 0), ``actions (B, L-1, Am)`` raw.

        Returns:
            ``(loss, metrics)`` with metrics ``loss``, ``z_loss``, ``proprio_loss`` (floats).
        """
        for key in ("z", "proprio", "actions"):
            if key not in batch and (key != "proprio" or self.proprio_dim):
                raise ValueError(f"batch lacks {key!r}; expected keys z, proprio, actions")
        z = self._check("z", batch["z"], (4,), (self.num_tokens, self.token_dim))
        proprio = self._check("proprio", self._no_proprio("proprio", batch.get("proprio"), z.shape[:2]),
                              (3,), (self.proprio_dim,))
        actions = self._check("actions", batch["actions"], (3,), (self.action_dim,))
        B, L = z.shape[:2]
        if proprio.shape[:2] != (B, L) or actions.shape[:2] != (B, L - 1) or L < 2:
            raise ValueError(f"expected z (B, L, N, D), proprio (B, L, P), actions (B, L-1, Am) with "
                             f"L >= 2; got {tuple(z.shape)}, {tuple(proprio.shape)}, "
                             f"{tuple(actions.shape)}")
        proprio, actions = self._norm_proprio(proprio), self._norm_actions(actions)
        if self._heads:  # shared trunk: one pass; each head's error weighted by its bootstrap counts
            zp, pp = self._teacher(z[:, :-1], proprio[:, :-1], actions)  # (K, B, L-1, ...)
            K = self.ensemble
            w = (bootstrap_counts(K, B, z.device) if self.training else z.new_ones(K, B)) / B  # (K, B)
            z_loss = (((zp - z[:, 1:]) ** 2).mean(dim=(-1, -2, -3)) * w).sum() / K
            p_loss = ((((pp - proprio[:, 1:]) ** 2).mean(dim=(-1, -2)) * w).sum() / K if self.proprio_dim
                      else zp.new_zeros(()))
            return self._loss_out(z_loss, p_loss)
        if self.ensemble > 1:
            # bootstrapped windows: in training every member sees its own resampled batch
            idx = (torch.randint(B, (self.ensemble, B), device=z.device) if self.training
                   else torch.arange(B, device=z.device).expand(self.ensemble, B))  # (K, B)
            z, proprio, actions = z[idx], proprio[idx], actions[idx]  # (K, B, ...)
        zp, pp = self._teacher(z[..., :-1, :, :], proprio[..., :-1, :], actions)
        z_loss = F.mse_loss(zp, z[..., 1:, :, :])  # the mean over members of each one's MSE
        p_loss = F.mse_loss(pp, proprio[..., 1:, :]) if self.proprio_dim else zp.new_zeros(())
        if self.config.rollout_loss_weight > 0:
            return self._loss_out(z_loss, p_loss, self._rollout_loss(z, proprio, actions))
        return self._loss_out(z_loss, p_loss)

    def _rollout_loss(self, z, proprio, actions):
        """Token and proprio MSE of the window's last ``L - num_hist`` frames rolled out from its
        first ``num_hist`` on the model's own predictions, with gradients through every fed-back
        step (normalised inputs; a single model)."""
        T = self.num_hist
        if z.shape[1] - T < 2:
            raise ValueError(f"rollout_loss_weight > 0 needs windows of num_hist + num_pred >= {T + 2} "
                             f"frames, got {z.shape[1]}")
        args = (z[:, :T], proprio[:, :T], actions[:, :T - 1], actions[:, T - 1:].unsqueeze(1))
        with self._autocast():  # what rollout() computes, differentiably
            if self._cacheable:  # KV cache / MLP window / GRU state
                zr, pr = self._rollout_cached(*args)
            else:  # DINO-WM's absolute positions: the last num_hist frames, recomputed
                zr, pr = self._rollout_recompute(*args, window=T)
        zr, pr = zr[:, 0].float(), pr[:, 0].float()  # (B, H, N, D), (B, H, P)
        rz = F.mse_loss(zr, z[:, T:])
        rp = F.mse_loss(pr, proprio[:, T:]) if self.proprio_dim else zr.new_zeros(())
        return rz, rp

    def _loss_out(self, z_loss, p_loss, rollout=None):
        w = self.config.proprio_loss_weight
        loss = z_loss + w * p_loss
        if rollout is not None:
            loss = loss + self.config.rollout_loss_weight * (rollout[0] + w * rollout[1])
        metrics = {"loss": float(loss.detach()), "z_loss": float(z_loss.detach()),
                   "proprio_loss": float(p_loss.detach())}
        if rollout is not None:
            metrics.update(rollout_z_loss=float(rollout[0].detach()),
                           rollout_proprio_loss=float(rollout[1].detach()))
        return loss, metrics

    # --- rollout ---
    def _step_fn(self):
        if not self.config.predictor.compile:
            return self.predictor.step
        if self._compiled_step is None:
            self._compiled_step = torch.compile(self.predictor.step, dynamic=False)
        return self._compiled_step

    def rollout(self, z_context, proprio_context, actions, past_actions=None, use_cache: bool = True,
                max_batch: int | None = None, memory_budget_mb: float | str | None = None,
                share_prefix: bool = True, members: bool = False):
        """Roll ``S`` candidate action sequences forward ``H`` steps from a context of T frames.

        Args:
            z_context: ``(T, N, D)`` or ``(B, T, N, D)`` context tokens (oldest first).
            proprio_context: ``(T, P)`` / ``(B, T, P)`` raw proprio of the context frames (None
                when P = 0).
            actions: ``(S, H, Am)`` / ``(B, S, H, Am)`` raw candidate actions; action 0 is taken at
                the last context frame.
            past_actions: ``(T-1, Am)`` / ``(B, T-1, Am)`` raw actions executed between the context
                frames (zeros when None).
            use_cache: reuse per-frame K/V (rope transformer, mlp, gru) and compute the context once
                per env; False recomputes the full history each step (reference semantics).
            max_batch: run at most this many rollouts (B x candidates) at once (default
                ``self.max_batch``, None: no cap).
            memory_budget_mb: working-memory budget in MiB, ``"auto"`` (half of what the device
                has available) or None (default ``self.memory_budget_mb``, ``"auto"``). Candidates
                are split into chunks along S (see :mod:`mpc.memory`); results are the same.
            share_prefix: with the cache, compute the shared context once per env (True) or once
                per candidate (False: B x S contexts, the same result; for timing prefix sharing).
                The recomputing rollouts always run the context per candidate.
            members: return every ensemble member's prediction (a member axis K after S) instead
                of the members' mean; a single model gives K = 1. Disagreement:
                :func:`mpc.ensemble.disagreement`.

        Returns:
            ``(z_pred, proprio_pred)``: ``(S, H, N, D)`` / ``(B, S, H, N, D)`` predicted tokens of
            frames T .. T+H-1 and ``(S, H, P)`` / ``(B, S, H, P)`` raw proprio; for an ensemble the
            members' mean (each member rolls out on its own predictions). With ``members=True``:
            ``(S, K, H, N, D)`` / ``(B, S, K, H, N, D)`` and ``(S, K, H, P)`` / ``(B, S, K, H, P)``.

        Raises:
            ValueError: wrong shapes, mismatched B or T, or non-finite values.
        """
        zc, pc, a, pa, batched = self._rollout_inputs(z_context, proprio_context, actions, past_actions)
        B, T = zc.shape[:2]
        S, H = a.shape[1:3]
        pc = self._norm_proprio(pc)  # (B, T, P)
        pa = self._norm_actions(pa)  # (B, T-1, Am)
        a = self._norm_actions(a)  # (B, S, H, Am)
        pcfg = self.config.predictor
        cached = use_cache and self._cacheable
        if cached:
            run = functools.partial(self._rollout_cached, share_prefix=share_prefix)
        else:  # absolute positions (DINO-WM) see the last num_hist frames; the rest the whole history
            absolute = pcfg.kind == "transformer" and pcfg.time_encoding == "absolute"
            run = functools.partial(self._rollout_recompute, window=self.num_hist if absolute else None)
        K = self.ensemble
        if self._heads:  # one trunk rollout read by K heads: (K, B, S, H, ...) -> member axis after S
            run = functools.partial(lambda inner, *args: tuple(x.movedim(0, 2) for x in inner(*args)), run)
        elif K > 1:  # every member rolls out in one vmapped call; member axis after S
            run = self.predictor.vmap(
                functools.partial(lambda inner, pred, *args: inner(*args, predictor=pred), run),
                (None, None, None, None), out_dims=2)
        chunk = candidate_chunk(self.config, B if self._heads else B * K, S, T, H,
                                max_batch=self.max_batch if max_batch is None else max_batch,
                                memory_budget_mb=(self.memory_budget_mb if memory_budget_mb is None
                                                  else memory_budget_mb),
                                use_cache=cached, dtype_bytes=2 if self._bf16() else 4, device=self.device)
        with self._autocast():
            zs, ps = chunked_rollout(lambda zc_, pc_, part, pa_: run(zc_, pc_, pa_, part),
                                     zc, pc, a, pa, chunk=chunk)
        z_pred = zs.float()  # (B, S, H, N, D), an ensemble's (B, S, K, H, N, D)
        p_pred = self._denorm_proprio(ps.float())  # (B, S, H, P), an ensemble's (B, S, K, H, P)
        if K > 1 and not members:
            z_pred, p_pred = z_pred.mean(2), p_pred.mean(2)
        elif K == 1 and members:
            z_pred, p_pred = z_pred.unsqueeze(2), p_pred.unsqueeze(2)
        if not batched:
            z_pred, p_pred = z_pred[0], p_pred[0]
        return z_pred, p_pred

    def _rollout_cached(self, zc, pc, pa, a, share_prefix: bool = True, predictor=None):
        """KV-cached rollout on normalised inputs; ``(B, S, H, N, D)``, ``(B, S, H, P)`` out.

        With ``share_prefix`` the T-1 context frames run once per env (batch B) and the cache
        broadcasts over S; without it every candidate becomes an env of its own (batch B x S).
        ``predictor``: one ensemble member (default: ``self.predictor``).
        """
        if not share_prefix:
            B, S = a.shape[:2]
            def per_candidate(x):  # (B, ...) -> (B*S, ...)
                return x.unsqueeze(1).expand(B, S, *x.shape[1:]).reshape(B * S, *x.shape[1:])
            z, p = self._rollout_cached(per_candidate(zc), per_candidate(pc), per_candidate(pa),
                                        a.reshape(B * S, 1, *a.shape[2:]),
                                        predictor=predictor)  # (B*S, 1, H, ...)
            return z.reshape(B, S, *z.shape[2:]), p.reshape(B, S, *p.shape[2:])
        cache = (predictor or self.predictor).prefill(zc[:, :-1], pc[:, :-1], pa)  # (B,) -> (B, 1) entries
        step = self._step_fn() if predictor is None else predictor.step
        z_cur, p_cur = zc[:, -1:], pc[:, -1:]  # (B, 1, N, D), (B, 1, P): broadcast over S
        zs, ps = [], []
        # the kernel choice applies to the maskless per-step attention (flash takes no mask)
        with sdpa_context(self.config.predictor.attn_backend):
            for h in range(a.shape[2]):  # loop over horizon steps only
                z_out, p_out, cache = step(cache, z_cur, p_cur, a[:, :, h])  # (B, S, N, D), (B, S, P)
                zs.append(z_out)
                ps.append(p_out)
                z_cur, p_cur = self._fed_back(z_out, p_out)
        return torch.stack(zs, -3), torch.stack(ps, -2)

    def _fed_back(self, z, p):
        """What a step's prediction feeds back: itself, or for K heads (a leading K axis) their mean."""
        return (z.mean(0), p.mean(0)) if self._heads else (z, p)

    def _rollout_recompute(self, zc, pc, pa, a, window: int | None = None, predictor=None):
        """Rollout that runs the predictor over the last ``window`` frames every step (None: all).

        ``window=None`` is the reference semantics (the whole history, every step);
        ``window=num_hist`` is DINO-WM's absolute-position rollout. ``predictor``: one ensemble
        member (default: ``self.predictor``).
        """
        predictor = predictor or self.predictor
        B, S, H = a.shape[:3]
        T = zc.shape[1]
        w = T + H if window is None else window  # T + H frames never exceed a full-history window
        zh = zc[:, -w:].unsqueeze(1).expand(B, S, *zc[:, -w:].shape[1:])  # (B, S, <=w, N, D)
        ph = pc[:, -w:].unsqueeze(1).expand(B, S, *pc[:, -w:].shape[1:])  # (B, S, <=w, P)
        ah = torch.cat([pa.unsqueeze(1).expand(B, S, *pa.shape[1:]), a], 2)  # (B, S, T-1+H, Am)
        zs, ps = [], []
        for h in range(H):
            n = zh.shape[2]  # frames T+h-n .. T+h-1 are in the window
            zo, po = predictor(zh, ph, ah[:, :, T + h - n:T + h])  # (B, S, n, N, D) (heads: K first)
            z_next, p_next = zo[..., -1, :, :], po[..., -1, :]
            zs.append(z_next)
            ps.append(p_next)
            z_next, p_next = self._fed_back(z_next, p_next)
            zh = torch.cat([zh, z_next.unsqueeze(2)], 2)[:, :, -w:]
            ph = torch.cat([ph, p_next.unsqueeze(2)], 2)[:, :, -w:]
        return torch.stack(zs, -3), torch.stack(ps, -2)

    # --- checkpoints (see mpc.checkpoint) ---
    def save(self, path) -> Path:
        """Write weights + config (one safetensors file) atomically.

        Args:
            path: target file (``.safetensors`` recommended); its directory is created.

        Returns:
            the path written.
        """
        return checkpoint.save(self, path)

    @staticmethod
    def read_header(path) -> dict:
        """The JSON header of a checkpoint (format_version, config, encoder_fingerprint, normalization,
        task).

        Raises:
            FileNotFoundError: no such file. ValueError: not a wmpc world-model checkpoint.
        """
        return checkpoint.read_header(path)

    @classmethod
    def load(cls, path, encoder="auto", device=None, config: WorldModelConfig | None = None,
             overrides: dict | None = None) -> "WorldModel":
        """Load a checkpoint written by :meth:`save`.

        Args:
            path: checkpoint file.
            encoder: frozen encoder to attach (its fingerprint must match the checkpoint's);
                ``"auto"`` (default) rebuilds the encoder the checkpoint names (``make_encoder(
                config.encoder, **config.encoder_options)``) and attaches it when it can be built
                (weights found, same fingerprint); otherwise the model loads without one and
                :meth:`encode` says why. ``None``: attach nothing.
            device: where to put the model (default CPU).
            config: optional expected config; its shape-defining fields (and time encoding) must
                match the checkpoint's.
            overrides: runtime-only predictor options to change (``attn_backend``,
                ``autocast_bf16``, ``compile``, ``dropout``).

        Returns:
            the model in eval mode.

        Raises:
            ValueError: corrupt file, other format version, mismatched config or encoder fingerprint.
        """
        return checkpoint.load(cls, path, encoder=encoder, device=device, config=config,
                               overrides=overrides)
