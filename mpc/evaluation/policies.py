"""The policies of the closed-loop evaluation: MPC with a world model, and two baselines.

Every policy acts for a batch of B envs at once through one method::

    act(obs, info) -> actions float32 (B, A)
        obs:  {"pixels": uint8 (B, H, W, 3), "proprio": float (B, P)}   the envs' observations
        info: {"goal_image": uint8 (B, H, W, 3),                         what the episode asks for
               "goal_proprio": float32 (B, P)}   (when the envs give info["goal_proprio"])

- ``planner``: :class:`~mpc.controller.MPCController` plans in the world model's latent space
  (with ``alpha > 0`` also toward the goal's proprio, which the envs must then give).
- ``random``: uniform actions in the env's action space (seeded).
- ``oracle``: each env's scripted controller (``env.unwrapped.oracle_action()``), an upper bound.

:func:`make_policy` builds one by name for one batch of envs.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

import numpy as np

__all__ = ["POLICIES", "Policy", "PlannerSettings", "PlannerPolicy", "RandomPolicy", "OraclePolicy",
           "check_policy", "make_policy"]

POLICIES = ("planner", "random", "oracle")


class Policy(Protocol):
    """What the closed loop needs of a policy."""

    plan_times: Sequence[float]  # seconds of each replan so far (empty for the baselines)

    def act(self, obs: dict, info: dict) -> np.ndarray:
        """Actions ``(B, A)`` for the batch of observations (see the module docstring)."""


@dataclass
class PlannerSettings:
    """How the ``planner`` policy plans (the baselines ignore these)."""

    planner: str = "cem"  # registered planner name (mpc.planners)
    planner_options: dict | None = None  # make_planner options (samples, iterations, ...)
    objective: str = "last"  # last: MSE on the last predicted frame (DINO-WM); all: every step
    alpha: float = 0.0  # weight of the goal-proprio term (0: plan from images alone)
    risk: float = 0.0  # weight of the ensemble's disagreement in the objective (0: off)
    risk_mode: str = "disagreement"  # disagreement | standardized | pessimistic (mpc.objectives)
    proprio_weights: list | None = None  # per proprio value, its weight in the goal-proprio term (None: equal)
    proprio_estimator: str | None = None  # with alpha > 0: read the goal's proprio from the goal image
    # with this estimator file (mpc.proprio_estimator) instead of taking the env's info["goal_proprio"]
    distance: str | None = None  # a temporal-distance file (mpc.temporal_distance): each frame costs its
    # squared estimated steps to the goal frame instead of the token MSE (rows labelled temporal-distance)
    horizon: int = 5  # H, planning horizon in model steps
    replan_every: int = 1  # model steps executed from each plan before replanning
    action_bound: float = 1.0  # fraction of the env's action box the planner searches, about its centre


class PlannerPolicy:
    """MPC in the latent space of ``model`` (one batched plan per replan for all B envs)."""

    def __init__(self, model, action_space, settings: PlannerSettings, *, seed: int, device=None):
        from mpc.controller import MPCController
        from mpc.objectives import make_objective

        s = settings
        objective = (make_objective(s.objective, alpha=s.alpha, risk=s.risk, risk_mode=s.risk_mode,
                                    proprio_weights=s.proprio_weights, distance=s.distance)
                     if s.alpha or s.risk or s.distance else s.objective)
        self.controller = MPCController(model, s.planner, objective, horizon=s.horizon,
                                        replan_every=s.replan_every, action_space=action_space,
                                        planner_options=s.planner_options, seed=seed, device=device,
                                        record_gap=True, proprio_estimator=s.proprio_estimator,
                                        action_bound=s.action_bound)

    @property
    def plan_times(self) -> list[float]:
        return self.controller.plan_times

    @property
    def plan_rollouts(self) -> list[int]:
        """Candidate rollouts per problem of each replan (the planner's ``info["rollouts"]``)."""
        return self.controller.plan_rollouts

    @property
    def imagination(self) -> list[dict]:
        """Predicted and realised latent costs of each plan seen through (MPCController.imagination)."""
        return self.controller.imagination

    @property
    def can_decode(self) -> bool:
        """Whether the model's encoder decodes tokens to images (vae, diffusion)."""
        return callable(getattr(self.controller.model.encoder, "decode", None))

    def predicted_frames(self, rows: list[int], size: int) -> np.ndarray | None:
        """The frames the latest plan predicts its executed steps lead to, decoded, for envs ``rows``:
        uint8 ``(len(rows), size, size, 3)``; None before the first plan or when the encoder cannot
        decode. A sampling decoder (diffusion) starts from seeded noise, so frames are reproducible."""
        import inspect

        import torch
        import torch.nn.functional as F

        z = self.controller.predicted_tokens
        if z is None or not rows or not self.can_decode:
            return None
        enc = self.controller.model.encoder
        device = next(enc.parameters()).device
        extra = {}
        if "generator" in inspect.signature(enc.decode).parameters:
            extra["generator"] = torch.Generator(device).manual_seed(0)
        with torch.no_grad():
            img = enc.decode(z[list(rows)].to(device), **extra).float()  # (n, 3, S', S') in [0, 1]
            if img.shape[-1] != size:
                img = F.interpolate(img, size=(size, size), mode="bilinear", align_corners=False)
        return (img.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()

    def act(self, obs: dict, info: dict) -> np.ndarray:
        """Actions ``(B, A)``; ``info["goal_proprio"]`` is passed on when present, unless a proprio
        estimator reads the goal's proprio from the goal image; ``info["active"]`` (bool ``(B,)``, the
        envs still under way) limits the planner's rollouts to those envs.

        Raises:
            ValueError: ``alpha > 0`` but the envs give no ``info["goal_proprio"]`` (and no estimator).
        """
        active = info.get("active")  # (B,) envs still under way, when the caller says
        if self.controller.proprio_estimator is not None:  # the goal image alone
            return self.controller.act(obs, info["goal_image"], active=active)
        goal_proprio = info.get("goal_proprio")
        if goal_proprio is None and self.controller.uses_goal_proprio:
            raise ValueError("alpha > 0 plans toward the goal's proprio, but the env gives no "
                             "info['goal_proprio'] (the goal state's proprio, float32 (P,), on reset and "
                             "each step; see envs/base.py); add it to the env or set alpha=0")
        return self.controller.act(obs, info["goal_image"], goal_proprio=goal_proprio, active=active)


class RandomPolicy:
    """Uniform actions in ``action_space``, drawn from a generator seeded with ``seed``."""

    plan_times = ()

    def __init__(self, action_space, *, seed: int):
        self.action_space = action_space
        self.rng = np.random.default_rng(seed)

    def act(self, obs: dict, info: dict) -> np.ndarray:
        sp = self.action_space
        return self.rng.uniform(sp.low, sp.high, size=(len(obs["pixels"]), *sp.shape)).astype(np.float32)


class OraclePolicy:
    """Each env's scripted controller: reads the true state, so it sets an upper bound."""

    plan_times = ()

    def __init__(self, envs: Sequence):
        self.envs = list(envs)
        if not all(callable(getattr(e.unwrapped, "oracle_action", None)) for e in self.envs):
            raise NoOracle(f"{type(self.envs[0].unwrapped).__name__} has no scripted oracle_action(); "
                           "policy=oracle runs on envs that define one (every wmpc env does)")

    def act(self, obs: dict, info: dict) -> np.ndarray:
        return np.stack([e.unwrapped.oracle_action() for e in self.envs]).astype(np.float32)


class NoOracle(ValueError):
    """policy=oracle on an env without a scripted ``oracle_action()``."""


def check_policy(name: str) -> None:
    """Raises ValueError unless ``name`` is one of :data:`POLICIES`."""
    if name not in POLICIES:
        raise ValueError(f"policy must be 'planner', 'random' or 'oracle', got {name!r}")


def make_policy(name: str, envs: Sequence, *, seed: int, model=None,
                settings: PlannerSettings | None = None, device=None) -> Policy:
    """Build the policy ``name`` for one batch of envs.

    Args:
        name: ``"planner"``, ``"random"`` or ``"oracle"``.
        envs: the B envs it will act in (all with the same action space).
        seed: seeds the planner or the random actions.
        model, settings, device: the world model, its planning settings and device
            (``planner`` only).

    Raises:
        ValueError: unknown name, or ``planner`` without a model.
    """
    check_policy(name)
    if name == "planner":
        if model is None:
            raise ValueError("policy=planner needs a world model")
        return PlannerPolicy(model, envs[0].action_space, settings or PlannerSettings(), seed=seed,
                             device=device)
    if name == "random":
        return RandomPolicy(envs[0].action_space, seed=seed)
    return OraclePolicy(envs)
