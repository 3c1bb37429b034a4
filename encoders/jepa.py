"""``jepa``: a joint-embedding predictive encoder in the spirit of LeWorldModel (LeJEPA / SIGReg).

A small CNN maps a frame to ``num_tokens`` tokens of size ``dim`` (default one 32-d token, computed
from the (x, y) of spatial-softmax keypoints: on pointmass its latent distance to a goal tracks the
true distance far better than a flattened-feature head, Spearman 0.75 vs 0.45); a latent
predictor (MLP over [z_t, a_t], residual) predicts the next frame's embedding. Both train end to end
on ``|| pred(z_t, a_t) - z_{t+1} ||^2`` plus a regulariser on the embedding distribution, which keeps
the encoder from collapsing to a constant (no stop-gradient, no EMA target):

* ``reg="sigreg"`` (default): Sketched Isotropic Gaussian Regulariser. Embeddings are projected on
  random unit directions; each 1-D projection is compared with N(0, 1) by the Epps-Pulley statistic
  (weighted squared distance between the empirical and the Gaussian characteristic functions).
* ``reg="vicreg"``: VICReg variance (hinge on each dimension's std) + covariance (off-diagonal) terms.

No decoder: JEPA tokens are trained to be predictable, not to rebuild pixels. Train with
``mpc.training.train_jepa`` (or ``wmpc train-encoder encoder=jepa``).

``state_weight > 0`` adds a supervised term: a linear head must read the simulator state recorded
with each training frame (standardised; an object's angle as cos, sin) from the frame's tokens, so
the latent carries the object's pose wherever the self-supervised terms leave it out. This is
privileged information, used in training only: planning still reads the goal image alone, but an
encoder trained this way is no longer trained from pixels and actions alone, and its rows say so.
"""
from __future__ import annotations


import torch
import torch.nn as nn
import torch.nn.functional as F

from . import register_encoder
from ._conv import ConvDown, ImageToTokens, VECTOR_GRID, num_stages, stage_channels
from ._trainable import TrainableEncoder, build_trainable, trainable_status

__all__ = ["JEPAEncoder", "check_state_entries", "jepa_regularizer", "sigreg", "vicreg", "weights_status"]

REGULARIZERS = ("sigreg", "vicreg")


def sigreg(emb: torch.Tensor, num_directions: int = 256, num_points: int = 17, t_max: float = 3.0,
           generator: torch.Generator | None = None) -> torch.Tensor:
    """Sketched isotropic Gaussian regulariser (Epps-Pulley test on random 1-D projections).

    For each unit direction u, with projections h = emb @ u (M values), the statistic is

        EP(u) = integral over t in [-t_max, t_max] of |phi_h(t) - exp(-t^2 / 2)|^2 * exp(-t^2 / 2) dt,

    where phi_h(t) = mean_m exp(i t h_m) is the empirical characteristic function (trapezoid rule on
    ``num_points`` points of [0, t_max], doubled by symmetry). It is ~0 (order 1/M) when the
    projections are N(0, 1) and grows when they are not: collapse to a point or a subspace, wrong scale.

    Args:
        emb: embeddings ``(M, D)`` (M samples; tokens of a batch flattened into M).
        num_directions: random directions per call.
        num_points: quadrature points on [0, t_max].
        t_max: integration half-range.
        generator: seeds the directions (default: torch's global generator).

    Returns:
        scalar, the mean statistic over directions.
    """
    M, D = emb.shape
    dev = generator.device if generator is not None else emb.device
    dirs = torch.randn((D, num_directions), generator=generator, device=dev).to(emb.device, emb.dtype)
    dirs = dirs / dirs.norm(dim=0, keepdim=True)  # (D, K) unit columns
    h = emb @ dirs  # (M, K)
    t = torch.linspace(0.0, t_max, num_points, device=emb.device, dtype=emb.dtype)  # (T,)
    ht = h.unsqueeze(-1) * t  # (M, K, T)
    gauss = torch.exp(-0.5 * t ** 2)  # (T,) CF of N(0, 1) and the weight
    err = (ht.cos().mean(0) - gauss) ** 2 + ht.sin().mean(0) ** 2  # (K, T)
    w = torch.full_like(t, t_max / (num_points - 1))
    w[0] = w[-1] = 0.5 * w[0]  # trapezoid weights
    return 2.0 * (err * gauss * w).sum(-1).mean()


def vicreg(emb: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """VICReg variance + covariance terms on ``emb (M, D)``.

    ``mean_d relu(1 - std_d) + sum_{i != j} cov_ij^2 / D``: zero for whitened embeddings.
    """
    M, D = emb.shape
    x = emb - emb.mean(0)
    std = torch.sqrt(x.var(0) + eps)
    cov = (x.T @ x) / max(M - 1, 1)  # (D, D)
    off = cov - torch.diag(torch.diag(cov))
    return F.relu(1.0 - std).mean() + off.pow(2).sum() / D


def jepa_regularizer(emb: torch.Tensor, kind: str = "sigreg", **kwargs) -> torch.Tensor:
    """Anti-collapse regulariser on embeddings ``(M, D)`` or tokens ``(B, N, D)`` (flattened to M = B*N).

    Args:
        emb: embeddings.
        kind: ``"sigreg"`` (see :func:`sigreg`, kwargs go to it) or ``"vicreg"`` (see :func:`vicreg`).

    Returns:
        scalar; larger when the embeddings are further from an isotropic Gaussian / more collapsed.

    Raises:
        ValueError: unknown kind or bad shape.
    """
    if emb.ndim == 3:
        emb = emb.reshape(-1, emb.shape[-1])
    if emb.ndim != 2 or emb.shape[0] < 2:
        raise ValueError(f"expected embeddings (M, D) or (B, N, D) with at least 2 samples, got {tuple(emb.shape)}")
    if kind == "sigreg":
        return sigreg(emb, **kwargs)
    if kind == "vicreg":
        return vicreg(emb, **kwargs)
    raise ValueError(f"reg must be one of {REGULARIZERS}, got {kind!r}")


def check_state_entries(entries) -> list[int] | None:
    """``state_entries`` as a list of distinct indices >= 0 (None stays None: every entry)."""
    if entries is None:
        return None
    try:
        out = [int(i) for i in entries]
    except (TypeError, ValueError):
        raise ValueError(f"state_entries must be a list of state indices such as [0, 1, 2, 3, 4] or null (every "
                         f"entry), got {entries!r}") from None
    if not out or min(out) < 0 or len(set(out)) != len(out):
        raise ValueError(f"state_entries must be a non-empty list of distinct indices >= 0, got {entries!r}")
    return out


class JEPAEncoder(TrainableEncoder):
    """CNN encoder ``(B, 3, S, S) -> (B, num_tokens, dim)`` plus a latent predictor used in training."""

    backend = "jepa"
    ARCH_KEYS = ("image_size", "dim", "num_tokens", "width", "action_dim", "hidden", "tokens",
                 "num_keypoints", "idm_weight", "state_dim")

    def __init__(self, image_size: int = 64, dim: int = 32, num_tokens: int = 1, width: int = 32,
                 action_dim: int = 2, hidden: int = 256, reg: str = "sigreg", reg_weight: float = 1.0,
                 num_directions: int = 256, seed: int = 0, tokens: str = "keypoints", num_keypoints: int = 16,
                 idm_weight: float = 0.0, state_weight: float = 0.0, state_dim: int = 0,
                 state_entries=None):
        """
        Args:
            image_size: input side S (S / 4 must be a power of two).
            dim: token dim D.
            num_tokens: tokens per frame N.
            width: channels of the first conv stage.
            action_dim: size of the action vector the predictor takes (frameskip * env action dim).
            hidden: predictor MLP width.
            reg: ``"sigreg"`` or ``"vicreg"``.
            reg_weight: weight of the regulariser in the training loss.
            num_directions: SIGReg random directions per step.
            seed: seed of the weight initialisation.
            tokens: ``"keypoints"`` (default: conv trunk -> spatial-softmax keypoints -> linear head;
                distances follow displacements) or ``"vector"`` (conv trunk -> MLP projector).
            num_keypoints: keypoints for ``tokens="keypoints"``.
            idm_weight: weight of an inverse-dynamics loss (PLDM's L_idm): an MLP head predicts the
                action from ``(z_t, z_t+1)``, so whatever the action moves must show in the latent.
                Without it a latent may leave out a small, fully controlled part of the scene (Push-T's
                pusher) at no cost to prediction. 0 (default): no head.
            state_weight: weight of the state-supervision loss (see the module docstring): a linear
                head reads the standardised recorded state from the tokens. Needs ``state_dim``.
                0 (default): none. A training setting: a trained encoder loads whatever it is.
            state_dim: size of the state target the head predicts (set from the data by
                ``train_jepa``); 0 (default): no head.
            state_entries: indices of the recorded state the head reads (``train_jepa`` selects them);
                None (default): every entry. A still frame shows positions, not velocities: on Push-T
                ``[0, 1, 2, 3, 4]`` (pusher and block pose) gives a latent whose linear readout is 2-3x
                more precise than with the velocities as targets too (README, "Encoder backends").

        Raises:
            ValueError: unknown regulariser or sizes that do not fit.
        """
        if reg not in REGULARIZERS:
            raise ValueError(f"reg must be one of {REGULARIZERS}, got {reg!r}")
        entries = check_state_entries(state_entries)
        if tokens not in ("vector", "keypoints"):
            raise ValueError(f"tokens must be 'vector' or 'keypoints' for jepa, got {tokens!r}")
        if int(num_tokens) < 1 or int(action_dim) < 1:
            raise ValueError(f"num_tokens and action_dim must be >= 1, got {num_tokens}, {action_dim}")
        if not float(idm_weight) >= 0.0:
            raise ValueError(f"idm_weight must be >= 0, got {idm_weight}")
        if not float(state_weight) >= 0.0 or int(state_dim) < 0 or (float(state_weight) > 0 and int(state_dim) < 1):
            raise ValueError(f"state_weight must be >= 0, and state_dim > 0 when state_weight > 0; got "
                             f"state_weight={state_weight}, state_dim={state_dim} (train_jepa sets state_dim "
                             "from the data's recorded states)")
        super().__init__(dict(image_size=int(image_size), dim=int(dim), num_tokens=int(num_tokens),
                              width=int(width), action_dim=int(action_dim), hidden=int(hidden), reg=reg,
                              reg_weight=float(reg_weight), num_directions=int(num_directions), seed=int(seed),
                              tokens=tokens, num_keypoints=int(num_keypoints), idm_weight=float(idm_weight),
                              state_weight=float(state_weight), state_dim=int(state_dim),
                              state_entries=entries))
        self.token_mode = tokens if int(num_tokens) == 1 else f"{tokens}-multi"
        self._dim, self._n = int(dim), int(num_tokens)
        self.action_dim = int(action_dim)
        self.reg, self.reg_weight, self.num_directions = reg, float(reg_weight), int(num_directions)
        self.idm_weight = float(idm_weight)
        self.state_weight, self.state_dim = float(state_weight), int(state_dim)
        channels = stage_channels(int(width), num_stages(self.image_size, VECTOR_GRID))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            nd = self._n * self._dim
            if tokens == "keypoints":
                self.frame_encoder = ImageToTokens(self.image_size, "keypoints", nd, width=int(width),
                                                   num_keypoints=int(num_keypoints))
            else:
                feat = channels[-1] * VECTOR_GRID ** 2
                self.frame_encoder = nn.Sequential(ConvDown(3, channels), nn.Flatten(), nn.Linear(feat, hidden),
                                                   nn.SiLU(), nn.Linear(hidden, nd))
            self.predictor = nn.Sequential(nn.Linear(nd + self.action_dim, hidden), nn.SiLU(),
                                           nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, nd))
            # inverse dynamics (training only): (z_t, z_t+1) -> the action taken between them
            self.idm = (nn.Sequential(nn.Linear(2 * nd, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
                                      nn.Linear(hidden, self.action_dim)) if self.idm_weight > 0 else None)
            # state supervision (training only): z_t -> the standardised recorded state
            self.state_head = nn.Linear(nd, self.state_dim) if self.state_dim > 0 else None

    @property
    def num_tokens(self) -> int:
        return self._n

    @property
    def dim(self) -> int:
        return self._dim

    def forward_tokens(self, x: torch.Tensor) -> torch.Tensor:
        return self.frame_encoder(x).reshape(x.shape[0], self._n, self._dim)

    def predict(self, z: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Next-frame tokens: ``z (B, N, D), actions (B, action_dim) -> (B, N, D)`` (residual MLP).

        Raises:
            ValueError: actions of the wrong size.
        """
        if actions.ndim != 2 or actions.shape[1] != self.action_dim:
            raise ValueError(f"expected actions (B, {self.action_dim}), got {tuple(actions.shape)}; "
                             "action_dim is fixed when the encoder is built")
        B = z.shape[0]
        zf = z.reshape(B, -1)  # (B, N*D)
        return (zf + self.predictor(torch.cat([zf, actions.to(zf.dtype)], dim=1))).view_as(z)

    def training_loss(self, x: torch.Tensor, actions: torch.Tensor, x_next: torch.Tensor,
                      states: torch.Tensor | None = None, generator: torch.Generator | None = None
                      ) -> tuple[torch.Tensor, dict[str, float]]:
        """Next-embedding prediction + regulariser (+ ``idm_weight`` x inverse-dynamics MSE)
        (+ ``state_weight`` x state-head MSE).

        Args:
            x, x_next: normalised frames ``(B, 3, S, S)`` at t and t+1.
            actions: ``(B, action_dim)``, normalised, taken between them.
            states: ``(B, state_dim)`` standardised states recorded with ``x``; required exactly when
                the encoder has a state head.
            generator: seeds SIGReg's directions.

        Raises:
            ValueError: ``states`` missing for a state head, given without one, or of the wrong size.
        """
        if (states is None) != (self.state_head is None) or (
                states is not None and tuple(states.shape) != (x.shape[0], self.state_dim)):
            got = None if states is None else tuple(states.shape)
            raise ValueError(f"this jepa encoder takes states of shape (B, {self.state_dim}) in training "
                             f"(state_dim={self.state_dim}), got {got}")
        B = x.shape[0]
        z = self.forward_tokens(torch.cat([x, x_next]))  # (2B, N, D)
        z_t, z_next = z[:B], z[B:]
        pred = F.mse_loss(self.predict(z_t, actions), z_next)
        kw = {"num_directions": self.num_directions, "generator": generator} if self.reg == "sigreg" else {}
        reg = jepa_regularizer(z, self.reg, **kw)
        loss = pred + self.reg_weight * reg
        metrics = {"pred": pred.item(), "reg": reg.item()}
        if self.idm is not None:
            idm = F.mse_loss(self.idm(torch.cat([z_t.reshape(B, -1), z_next.reshape(B, -1)], dim=1)),
                             actions.to(z.dtype))
            loss = loss + self.idm_weight * idm
            metrics["idm"] = idm.item()
        if self.state_head is not None:
            state = F.mse_loss(self.state_head(z_t.reshape(B, -1)), states.to(z.dtype))
            loss = loss + self.state_weight * state
            metrics["state"] = state.item()
        return loss, {"loss": loss.item(), **metrics}


@register_encoder("jepa")
def _jepa(checkpoint=None, weights=None, **options) -> JEPAEncoder:
    return build_trainable(JEPAEncoder, checkpoint=checkpoint, weights=weights, **options)


def weights_status() -> list[dict]:
    return trainable_status("jepa")
