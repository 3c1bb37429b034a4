"""Ensembles of latent predictors: K members as one batched module, and their disagreement.

``model.ensemble=K`` (:class:`~mpc.presets.WorldModelConfig`) builds K predictors of one
architecture with different initialisations and keeps their parameters *stacked*: every parameter
of the member architecture is stored once with a leading member axis ``(K, ...)`` (state-dict keys
are the member's own names, e.g. ``predictor.stacked.blocks.0.attn.qkv.weight`` of shape
``(K, 3W, W)``), so one checkpoint holds the whole ensemble. A member-free copy of the architecture
(on the ``meta`` device) runs each member through :func:`torch.func.functional_call`, and
:func:`torch.vmap` over the member axis turns K forward passes into one pass of batched matmuls
(as TD-MPC2's ``Ensemble``): a K = 5 rollout costs far less than five single ones.

Two kinds (``model.ensemble_kind``):

* ``full`` (default): K whole predictors as above; each member rolls out on its own predictions, so
  a K-member rollout does K times the FLOPs of one (the vmapped call removes only per-call overhead).
* ``heads``: one shared transformer trunk and K small output heads (:class:`HeadsEnsemble`, the
  shared-torso design of Bootstrapped DQN, Osband et al. 2016): each head is a residual MLP on the
  trunk's normalised features and its own linear readout, trained on its own bootstrap (window
  weights drawn as resample counts). The rollout feeds the heads' mean prediction back, so the trunk
  runs once per step; a member's prediction at step h is its head's one-step prediction along that
  shared trajectory, and disagreement is the heads' one-step variance there (the one-step ensemble
  disagreement of MOPO / MOReL). A K = 5 rollout costs about 1.1-1.2x a single model at tiny size
  (benchmarks/bench_ensemble.py).

Layout: wherever members appear they sit right after the candidates,
``z (B, S, K, H, N, D)`` and ``proprio (B, S, K, H, P)`` from
``WorldModel.rollout(..., members=True)``; :func:`disagreement` reduces that to ``(B, S, H)``.
Training bootstraps windows: each member sees its own resampled batch (``WorldModel.loss``).
"""
from __future__ import annotations

import copy
import math
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call

__all__ = ["ENSEMBLE_KINDS", "EnsemblePredictor", "HeadsEnsemble", "make_ensemble_predictor", "disagreement",
           "member_mean", "bootstrap_counts"]

ENSEMBLE_KINDS = ("full", "heads")


class _Apply(nn.Module):
    """``fn(inner, *args)`` as a module call, so functional_call can swap a member's weights in."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, fn, *args):
        return fn(self.inner, *args)


class EnsemblePredictor(nn.Module):
    """K predictors of one architecture with stacked parameters (see the module docstring).

    Args:
        members: K >= 2 predictors of identical architecture (each its own initialisation).

    Raises:
        ValueError: fewer than two members, or members whose parameters differ in names or shapes.
    """

    def __init__(self, members: list[nn.Module]):
        super().__init__()
        if len(members) < 2:
            raise ValueError(f"an ensemble needs K >= 2 members, got {len(members)}")
        names = [[(n, tuple(p.shape)) for n, p in m.named_parameters()] for m in members]
        if any(n != names[0] for n in names[1:]):
            raise ValueError("ensemble members must share one architecture (same parameter names and shapes)")
        self.size = len(members)
        # the member architecture without weights: run with each member's parameters swapped in
        template = copy.deepcopy(members[0]).to("meta")
        object.__setattr__(self, "_template", template)
        object.__setattr__(self, "_apply_module", _Apply(template))
        stacked = copy.deepcopy(members[0])  # holds the stacked (K, ...) parameters and the buffers
        for name, _ in members[0].named_parameters():
            owner, _, leaf = name.rpartition(".")
            mod = stacked.get_submodule(owner) if owner else stacked
            delattr(mod, leaf)
            mod.register_parameter(leaf, nn.Parameter(
                torch.stack([m.get_parameter(name).detach() for m in members]).clone()))
        self.stacked = stacked

    # what the world model reads of its predictor
    cfg = property(lambda self: self._template.cfg)
    window = property(lambda self: self._template.window)

    def train(self, mode: bool = True):
        super().train(mode)
        self._template.train(mode)
        return self

    def member(self, k: int) -> nn.Module:
        """A standalone copy of member ``k`` (a plain predictor with its own weights)."""
        m = copy.deepcopy(self.stacked)
        for name, p in self.stacked.named_parameters():
            owner, _, leaf = name.rpartition(".")
            mod = m.get_submodule(owner) if owner else m
            delattr(mod, leaf)
            mod.register_parameter(leaf, nn.Parameter(p.detach()[k].clone()))
        return m

    def vmap(self, fn: Callable, in_dims: tuple, out_dims=0) -> Callable:
        """``fn(predictor, *args)`` run for every member in one batched call.

        Args:
            fn: a function of one member predictor and tensors (``predictor.forward``/``prefill``/
                ``step``, or a whole rollout).
            in_dims: one entry per argument of ``fn`` after the predictor: 0 (the argument has a
                leading K axis) or None (shared by all members).
            out_dims: where the member axis goes in the outputs.

        Returns:
            a function of the arguments whose outputs carry a member axis at ``out_dims``.
        """
        params = {f"inner.{n}": p for n, p in self.stacked.named_parameters()}
        buffers = {f"inner.{n}": b for n, b in self.stacked.named_buffers()}
        apply = self._apply_module

        def one(p, *args):
            return functional_call(apply, {**p, **buffers}, (fn, *args))

        batched = torch.vmap(one, in_dims=(0, *in_dims), out_dims=out_dims,
                             randomness="different" if self.training else "error")
        return lambda *args: batched(params, *args)

    def forward(self, z, proprio, actions):
        """Teacher forcing for every member: inputs ``(K, *batch, F, ...)`` (a member's own batch each).

        Returns:
            ``(z_next (K, *batch, F, N, D), proprio_next (K, *batch, F, P))``.
        """
        return self.vmap(lambda pred, z_, p_, a_: pred(z_, p_, a_), (0, 0, 0))(z, proprio, actions)


class HeadsEnsemble(nn.Module):
    """A shared transformer trunk with K output heads (``ensemble_kind="heads"``; module docstring).

    Member k reads the trunk's normalised features ``x`` as
    ``h = x + gelu(x A_k + a_k) B_k + b_k``, ``z_next = h W_k + c_k`` (plus the input tokens with
    ``residual``) and ``proprio_next = mean_tokens(h) V_k + d_k``. ``B_k, b_k`` start at zero, so a
    fresh member is a linear readout like a single predictor's; members start from different random
    ``A_k`` and readouts. Parameters are stacked with a leading member axis (one checkpoint).

    Args:
        trunk: a :class:`~mpc.predictor.TransformerPredictor` (its own readout heads are dropped).
        members: K >= 2.
    """

    def __init__(self, trunk: nn.Module, members: int):
        super().__init__()
        if members < 2:
            raise ValueError(f"an ensemble needs K >= 2 members, got {members}")
        if not hasattr(trunk, "step_features"):
            raise ValueError("ensemble_kind='heads' needs the transformer predictor (predictor.kind=transformer)")
        self.size = K = int(members)
        W, D, P = trunk.width, trunk.token_dim, trunk.proprio_head.out_features
        trunk.head = trunk.proprio_head = None  # the members' heads replace the trunk's own readout
        self.trunk = trunk

        def linear(fan_in, fan_out, zero=False):  # nn.Linear's default init, drawn per member
            bound = 0.0 if zero else 1.0 / math.sqrt(fan_in)
            w = torch.empty(K, fan_in, fan_out).uniform_(-bound, bound)
            b = torch.empty(K, fan_out).uniform_(-bound, bound)
            return nn.Parameter(w), nn.Parameter(b)

        self.hidden_w, self.hidden_b = linear(W, W)
        self.out_w, self.out_b = linear(W, W, zero=True)
        self.z_w, self.z_b = linear(W, D, zero=trunk.cfg.residual)
        self.p_w, self.p_b = linear(W, P)

    cfg = property(lambda self: self.trunk.cfg)
    window = property(lambda self: self.trunk.window)

    def readout_members(self, x, z):
        """Trunk outputs ``(..., N, W)`` and input tokens ``z`` -> every member's
        ``(z_next (K, ..., N, D), proprio_next (K, ..., P))``."""
        x = self.trunk.norm(x)

        def bias(b, like):  # (K, C) -> (K, 1, ..., 1, C) against a (K, ..., C) tensor
            return b.view(b.shape[0], *([1] * (like.ndim - 2)), b.shape[1])

        hid = torch.einsum("...w,kwh->k...h", x, self.hidden_w)
        hid = F.gelu(hid + bias(self.hidden_b, hid))
        h = torch.einsum("k...h,khw->k...w", hid, self.out_w)
        h = x + h + bias(self.out_b, h)
        z_next = torch.einsum("k...w,kwd->k...d", h, self.z_w)
        z_next = z_next + bias(self.z_b, z_next)
        if self.cfg.residual:
            z_next = z_next + z
        p_next = torch.einsum("k...w,kwp->k...p", h.mean(-2), self.p_w)
        return z_next, p_next + bias(self.p_b, p_next)

    def forward(self, z, proprio, actions):
        """Teacher forcing on shared inputs ``(*batch, F, ...)``: ``((K, *batch, F, N, D), (K, *batch, F, P))``."""
        return self.readout_members(self.trunk.features(z, proprio, actions), z)

    def prefill(self, z, proprio, actions) -> dict:
        """The trunk's context cache (:meth:`TransformerPredictor.prefill`)."""
        return self.trunk.prefill(z, proprio, actions)

    def step(self, cache: dict, z, proprio, actions):
        """One trunk step for every candidate, read by every member: ``(z (K, B, S, N, D), p (K, B, S, P),
        cache)``; the caller feeds the members' mean back."""
        x, cache = self.trunk.step_features(cache, z, proprio, actions)
        z_next, p_next = self.readout_members(x, z)
        return z_next, p_next, cache


def bootstrap_counts(members: int, batch: int, device=None) -> torch.Tensor:
    """Per member, how often each of ``batch`` windows is drawn when resampling the batch with
    replacement: ``(K, B)`` counts summing to B per member (a bootstrap as window weights)."""
    idx = torch.randint(batch, (members, batch), device=device)
    return torch.zeros(members, batch, device=device).scatter_add_(1, idx, torch.ones(members, batch, device=device))


def make_ensemble_predictor(config) -> nn.Module:
    """The predictor of a :class:`~mpc.presets.WorldModelConfig`: a plain one for ``ensemble=1``,
    else ``config.ensemble`` freshly initialised members: an :class:`EnsemblePredictor` (``ensemble_kind``
    ``full``) or a :class:`HeadsEnsemble` (``heads``)."""
    from mpc.predictor import make_predictor

    def build():
        return make_predictor(config.predictor, config.num_tokens, config.token_dim,
                              config.action_dim, config.proprio_dim)

    if config.ensemble == 1:
        return build()
    if config.ensemble_kind == "heads":
        return HeadsEnsemble(build(), config.ensemble)
    return EnsemblePredictor([build() for _ in range(config.ensemble)])


def disagreement(z_members: torch.Tensor) -> torch.Tensor:
    """Epistemic uncertainty: variance across members of the predicted tokens, mean over N and D.

    Args:
        z_members: ``(B, S, K, H, N, D)`` predicted tokens of every member.

    Returns:
        ``(B, S, H)``; zero where all members agree.

    Raises:
        ValueError: not 6-D.
    """
    if z_members.ndim != 6:
        raise ValueError(f"expected member predictions (B, S, K, H, N, D), got {tuple(z_members.shape)}")
    return z_members.var(dim=2, unbiased=False).mean(dim=(-1, -2))


def member_mean(x: torch.Tensor) -> torch.Tensor:
    """The members' mean prediction: ``(B, S, K, H, ...)`` -> ``(B, S, H, ...)``."""
    return x.mean(dim=2)
