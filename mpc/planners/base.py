"""Planner interface, result type and the shared machinery every planner uses.

A planner minimises ``cost_fn`` over action sequences inside a gymnasium ``Box``::

    cost_fn(actions (B, S, H, A)) -> cost (B, S)      # B independent problems, S candidates each
    planner.optimize(cost_fn, batch=B, init=None, callback=None) -> PlanResult

Randomness is counter based: every number is a hash of ``(seed + b, call, draw, element)`` computed
with integer tensor ops on the planner's device. Problem ``b`` of a batch therefore sees exactly the
numbers that problem ``0`` sees when the same planner is built with ``seed + b`` and run alone,
whatever the batch size, and no Python loop over problems or candidates is needed.

A user planner plugs in by subclassing :class:`Planner` (implement ``_optimize``; the base class
gives ``optimize``, ``shift``, ``reset``, bounds, noise and bookkeeping) or by duck typing: any
object with ``optimize(cost_fn, batch=B, init=None, callback=None) -> PlanResult`` (and ideally
``shift`` / ``reset``) works wherever a planner is expected.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

__all__ = ["Planner", "PlanResult", "CostFn", "Callback", "Run"]

CostFn = Callable[[torch.Tensor], torch.Tensor]
"""``cost_fn(actions (B, S, H, A)) -> cost (B, S)``; lower is better."""
Callback = Callable[[int, dict], Any]
"""``callback(iteration, state) -> stop?``; ``state`` holds tensors (see :meth:`Run.end_iteration`)."""

_M32 = 0xFFFFFFFF


def _mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    """``(x * c) mod 2**32`` for int64 ``x`` in ``[0, 2**32)`` without signed overflow."""
    lo, hi = c & 0xFFFF, c >> 16
    return (x * lo + (((x * hi) & 0xFFFF) << 16)) & _M32


def _mix(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer hash (lowbias32), bijective on ``[0, 2**32)``; int64 in, int64 out."""
    x = x & _M32
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def _mix_fast(x: torch.Tensor) -> torch.Tensor:
    """A cheaper 32-bit integer hash for bulk draws (two multiplies by a constant < 2**27: no overflow)."""
    x = x & _M32
    x = (((x >> 16) ^ x) * 0x45D9F3B) & _M32
    x = (((x >> 16) ^ x) * 0x45D9F3B) & _M32
    return (x >> 16) ^ x


@dataclass
class PlanResult:
    """What :meth:`Planner.optimize` returns.

    Attributes:
        actions: (B, H, A) the best action sequence found per problem (inside the Box).
        cost: (B,) its cost.
        info: ``iterations`` (int), ``rollouts`` (int, candidates evaluated per problem),
            ``cost_history`` ((iterations, B) best cost so far after each iteration),
            ``time`` (seconds, wall clock, device synchronised), plus planner-specific keys.
    """

    actions: torch.Tensor
    cost: torch.Tensor
    info: dict = field(default_factory=dict)


class Run:
    """Book-keeping for one ``optimize`` call: evaluates candidates, keeps the best ever per problem.

    Planners call :meth:`evaluate` for every candidate set and :meth:`end_iteration` once per
    iteration. Nothing here synchronises with the device.
    """

    def __init__(self, cost_fn: CostFn, batch: int, horizon: int, action_dim: int,
                 device: torch.device, callback: Callback | None):
        self.cost_fn, self.B, self.callback = cost_fn, batch, callback
        self.best_actions = torch.zeros(batch, horizon, action_dim, device=device)
        self.best_cost = torch.full((batch,), math.inf, device=device)
        self.rollouts = 0
        self.iterations = 0
        self.history: list[torch.Tensor] = []
        self.stopped = False  # set when the callback asks to stop; multi-phase planners check it
        self._last: tuple[torch.Tensor, torch.Tensor] | None = None

    def evaluate(self, actions: torch.Tensor, track: bool = True) -> torch.Tensor:
        """Score candidates and remember the best one per problem.

        Args:
            actions: (B, S, H, A) candidates, already inside the Box.
            track: update the best-ever plan (off for intermediate, non-returnable points).

        Returns:
            (B, S) costs; NaN and -inf costs become +inf so they never win.

        Raises:
            ValueError: the cost function returned a wrong shape.
        """
        B, S = actions.shape[:2]
        cost = self.cost_fn(actions)
        if not isinstance(cost, torch.Tensor) or cost.shape != (B, S):
            shape = tuple(cost.shape) if isinstance(cost, torch.Tensor) else type(cost).__name__
            raise ValueError(f"cost_fn must map actions (B, S, H, A) = {tuple(actions.shape)} to costs "
                             f"(B, S) = {(B, S)}; it returned {shape}. Reduce over H, A (and tokens) "
                             "inside cost_fn.")
        if not torch.is_floating_point(cost):
            raise ValueError(f"cost_fn must return floating-point costs (B, S); it returned {cost.dtype}")
        # NaN and -inf (a broken cost, which would otherwise win every time) never win
        cost = torch.nan_to_num(cost.float(), nan=math.inf, neginf=math.inf)
        self.rollouts += S
        if track:
            self.update_best(actions.detach(), cost.detach())
        self._last = (actions, cost)
        return cost

    def update_best(self, actions: torch.Tensor, cost: torch.Tensor) -> None:
        """Keep the lowest-cost sequence per problem; actions (B, S, H, A), cost (B, S)."""
        c, i = cost.min(dim=1)                                         # (B,), (B,)
        better = c < self.best_cost                                    # (B,)
        pick = actions[torch.arange(self.B, device=actions.device), i]  # (B, H, A)
        self.best_actions = torch.where(better[:, None, None], pick, self.best_actions)
        self.best_cost = torch.where(better, c, self.best_cost)

    def end_iteration(self, **extra: torch.Tensor) -> bool:
        """Record the history, call the callback; returns True when the callback asks to stop."""
        self.iterations += 1
        self.history.append(self.best_cost.clone())
        if self.callback is None:
            return False
        state = {"best_actions": self.best_actions, "best_cost": self.best_cost,
                 "rollouts": self.rollouts, **extra}
        if self._last is not None:
            state["candidates"], state["costs"] = self._last
        self.stopped = bool(self.callback(self.iterations - 1, state))
        return self.stopped

    def result(self, start: float, **info: Any) -> PlanResult:
        """The best plan per problem and the run's info.

        Raises:
            ValueError: every candidate of some problem cost NaN or +inf (there is no plan to give).
        """
        device = self.best_cost.device
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        lost = torch.isinf(self.best_cost).nonzero().flatten().tolist()
        if lost:
            raise ValueError(f"every candidate of problem(s) {lost} cost NaN or +inf, so there is no plan; "
                             "check the cost function (a world model or goal that gives NaN, or an "
                             "objective that is infinite everywhere)")
        history = (torch.stack(self.history) if self.history
                   else torch.empty(0, self.B, device=device))
        return PlanResult(self.best_actions, self.best_cost,
                          {"iterations": self.iterations, "rollouts": self.rollouts,
                           "cost_history": history, "time": time.perf_counter() - start, **info})


class Planner:
    """Base class: bounds, seeded counter-based noise, warm start, and the ``optimize`` wrapper.

    Args:
        action_space: a gymnasium ``Box`` (or anything with ``low``/``high``) with bounds of shape
            (A,) or (H, A); infinite bounds are allowed (no clipping there, unit sampling scale).
        horizon: H, the number of planned steps.
        seed: base seed; problem ``b`` of a batch uses ``seed + b``.
        device: where candidates live (defaults to ``init``'s device, else CPU).

    Subclasses implement ``_optimize(run, init) -> dict`` (extra info) using :meth:`normal`,
    :meth:`uniform`, :meth:`clip` and ``run.evaluate`` / ``run.end_iteration``.
    """

    name = "planner"

    def __init__(self, action_space, horizon: int, seed: int = 0, device=None):
        low = torch.as_tensor(np.asarray(action_space.low, dtype=np.float64), dtype=torch.float32)
        high = torch.as_tensor(np.asarray(action_space.high, dtype=np.float64), dtype=torch.float32)
        if int(horizon) < 1:
            raise ValueError(f"horizon must be a positive integer, got {horizon!r}")
        self.horizon = int(horizon)
        if low.ndim == 1:
            low, high = low.expand(self.horizon, -1), high.expand(self.horizon, -1)
        if low.shape != high.shape or low.ndim != 2 or low.shape[0] != self.horizon:
            raise ValueError(f"action_space bounds must have shape (A,) or (H, A) = ({self.horizon}, A); "
                             f"got low {tuple(action_space.low.shape)}, high {tuple(action_space.high.shape)}")
        if bool((low > high).any()):
            raise ValueError("action_space has low > high in some dimension")
        self.action_dim = int(low.shape[1])
        self.low, self.high = low.contiguous(), high.contiguous()         # (H, A)
        finite = torch.isfinite(low) & torch.isfinite(high)
        self.centre = torch.where(finite, (low + high) / 2, torch.zeros_like(low).clamp(low, high))
        self.half = torch.where(finite, (high - low) / 2, torch.ones_like(low))  # sampling scale
        self.seed = int(seed)
        self.device = torch.device(device) if device is not None else None
        self._calls = 0
        self._draws = 0
        self._key: torch.Tensor | None = None

    # ----------------------------------------------------------------- public API
    def optimize(self, cost_fn: CostFn, batch: int = 1, init: torch.Tensor | None = None,
                 callback: Callback | None = None) -> PlanResult:
        """Minimise ``cost_fn`` for ``batch`` independent problems.

        Args:
            cost_fn: maps candidates (B, S, H, A) to costs (B, S).
            batch: B, the number of problems.
            init: optional (B, H, A) or (H, A) warm start (clipped into the Box).
            callback: ``callback(iteration, state)`` once per iteration; ``state`` has tensors
                ``best_actions`` (B, H, A), ``best_cost`` (B,), ``candidates``, ``costs``, planner
                extras (e.g. ``mean``, ``std``) and ``rollouts`` (int, so far). Return True to stop early.

        Returns:
            :class:`PlanResult` with actions (B, H, A), cost (B,) and info.

        Raises:
            ValueError: bad ``batch`` / ``init`` shape, or a cost of the wrong shape.
        """
        start = time.perf_counter()
        if int(batch) < 1:
            raise ValueError(f"batch must be a positive integer, got {batch!r}")
        B, H, A = int(batch), self.horizon, self.action_dim
        device = self.device or (init.device if isinstance(init, torch.Tensor) else torch.device("cpu"))
        self._to(device)
        if init is not None:
            init = torch.as_tensor(init, dtype=torch.float32, device=device)
            if init.shape == (H, A):
                init = init.expand(B, H, A)
            if init.shape != (B, H, A):
                raise ValueError(f"init must have shape (B, H, A) = {(B, H, A)} or (H, A); got {tuple(init.shape)}")
            init = self.clip(init.detach())
        else:
            init = self.centre.expand(B, H, A)
        self._key = _mix(_mix(torch.arange(B, device=device, dtype=torch.int64) + (self.seed & _M32))
                         + ((self._calls * 0x85EBCA6B) & _M32))                # (B,) per-problem key
        self._calls += 1
        self._draws = 0
        run = Run(cost_fn, B, H, A, device, callback)
        with torch.no_grad():
            extra = self._optimize(run, init) or {}
        return run.result(start, **extra)

    def shift(self, actions: torch.Tensor) -> torch.Tensor:
        """Warm start for the next replan: move the plan one step earlier, pad with the Box centre.

        Args:
            actions: (B, H, A) or (H, A) the previous plan.

        Returns:
            same shape; step ``h`` is the old step ``h + 1``; the last step is the centre of the
            Box (the zero action for symmetric boxes).
        """
        centre = self.centre.to(actions.device, actions.dtype)[-1]                  # (A,)
        pad = centre.expand(*actions.shape[:-2], 1, actions.shape[-1])
        return torch.cat([actions[..., 1:, :], pad], dim=-2)

    def reset(self) -> None:
        """Forget state carried between calls; the next call repeats the first call's randomness."""
        self._calls = 0

    # ------------------------------------------------------------ for subclasses
    def _optimize(self, run: Run, init: torch.Tensor) -> dict | None:
        raise NotImplementedError

    def _to(self, device: torch.device) -> None:
        if self.low.device != device:
            self.low, self.high = self.low.to(device), self.high.to(device)
            self.centre, self.half = self.centre.to(device), self.half.to(device)

    def clip(self, actions: torch.Tensor) -> torch.Tensor:
        """Project (..., H, A) actions into the Box."""
        return torch.clamp(actions, self.low, self.high)

    def _bits(self, n: int) -> torch.Tensor:
        """(B, n) 32-bit hashes for this draw: a hash of (element index + per-problem draw key)."""
        idx = torch.arange(n, device=self._key.device, dtype=torch.int64)
        draw = _mix(self._key + (((self._draws + 1) * 0x9E3779B1) & _M32))    # (B,), no host copy
        self._draws += 1
        return _mix_fast(idx[None, :] + draw[:, None])                      # (B, n)

    @staticmethod
    def _to_unit(bits: torch.Tensor) -> torch.Tensor:
        return ((bits >> 8).float() + 0.5) * (1.0 / (1 << 24))             # (0, 1), 24-bit

    def uniform(self, *shape: int) -> torch.Tensor:
        """(B, *shape) uniform numbers in (0, 1), per-problem streams."""
        return self._to_unit(self._bits(math.prod(shape))).view(-1, *shape)

    def normal(self, *shape: int) -> torch.Tensor:
        """(B, *shape) standard normal numbers (Box-Muller on two uniforms of one draw)."""
        n = math.prod(shape)
        u = self._to_unit(self._bits(2 * n))                               # (B, 2n)
        z = torch.sqrt(-2.0 * torch.log(u[:, :n])) * torch.cos((2.0 * math.pi) * u[:, n:])
        return z.view(-1, *shape)

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in getattr(self, "options", {}).items())
        return f"{type(self).__name__}(horizon={self.horizon}, action_dim={self.action_dim}, {opts})"
