"""What a world model does with its inputs before the predictor sees them: checks and normalisation.

:class:`ModelInputs` is a mixin of :class:`mpc.world_model.WorldModel`: it checks shapes and finite
values at the public boundary (so the hot loop does not), fills in empty proprio for proprio-free
models (P = 0), and (de)normalises actions and proprio with the ``action_mean`` / ``action_std`` /
``proprio_mean`` / ``proprio_std`` buffers that the model registers and its checkpoints store.
"""
from __future__ import annotations

import torch

__all__ = ["ModelInputs", "STAT_KEYS"]

STAT_KEYS = ("action_mean", "action_std", "proprio_mean", "proprio_std")


def _check_finite(name: str, x: torch.Tensor):
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or inf; expected finite values")


def _as_tensor(name: str, x, device) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        try:
            x = torch.as_tensor(x)
        except Exception as e:  # noqa: BLE001 - re-raised with context
            raise ValueError(f"{name} must be a tensor or array, got {type(x).__name__}") from e
    if not torch.is_floating_point(x):
        raise ValueError(f"{name} must be a float tensor, got dtype {x.dtype}")
    return x.to(device=device, dtype=torch.float32)


class ModelInputs:
    """Input checks and normalisation of a world model (needs ``config``, ``device``, the four
    stat buffers, ``num_tokens``, ``token_dim``, ``proprio_dim``, ``action_dim``)."""

    def set_normalization(self, stats: dict) -> None:
        """Set the normalisation buffers from a dataset's ``stats.json`` dict.

        Args:
            stats: ``action_mean``/``action_std`` of length A (tiled frameskip times) or Am, and
                ``proprio_mean``/``proprio_std`` of length P.

        Raises:
            ValueError: missing key, wrong length, non-finite or non-positive std.
        """
        A, Am, P = self.config.env_action_dim, self.config.action_dim, self.config.proprio_dim
        for key in STAT_KEYS:
            if key not in stats:
                raise ValueError(f"stats lack {key!r}; expected keys {STAT_KEYS} (dataset stats.json)")
            v = torch.as_tensor(stats[key], dtype=torch.float32).flatten()
            if key.startswith("action"):
                if v.numel() == A and Am != A:
                    v = v.repeat(self.config.frameskip)
                if v.numel() != Am:
                    raise ValueError(f"{key} has {v.numel()} values, expected A={A} or Am={Am}")
            elif v.numel() != P:
                raise ValueError(f"{key} has {v.numel()} values, expected P={P}")
            _check_finite(key, v)
            if key.endswith("std"):
                if (v <= 0).any():
                    raise ValueError(f"{key} must be positive; got {v.tolist()}")
            getattr(self, key).copy_(v)

    def normalization(self) -> dict[str, list[float]]:
        return {k: getattr(self, k).tolist() for k in STAT_KEYS}

    def _norm_actions(self, a):
        return (a - self.action_mean) / self.action_std

    def _norm_proprio(self, p):
        return (p - self.proprio_mean) / self.proprio_std

    def _denorm_proprio(self, p):
        return p * self.proprio_std + self.proprio_mean

    # --- input checks ---
    def _check(self, name, x, ndims, tail):
        x = _as_tensor(name, x, self.device)
        if x.ndim not in ndims or tuple(x.shape[x.ndim - len(tail):]) != tail:
            want = " or ".join(f"({', '.join(['...'] * (n - len(tail)) + [str(t) for t in tail])})"
                               for n in ndims)
            raise ValueError(f"{name} must have shape {want}, got {tuple(x.shape)}")
        _check_finite(name, x)
        return x

    def _no_proprio(self, name, x, lead: tuple) -> torch.Tensor:
        """``x``, or for a proprio-free model (P = 0) given None, an empty ``(*lead, 0)`` tensor.

        Raises:
            ValueError: None for a model that conditions on proprio (P > 0).
        """
        if x is not None:
            return x
        if self.proprio_dim:
            raise ValueError(f"{name} is None but this world model conditions on proprio (P="
                             f"{self.proprio_dim}); pass the env's proprio")
        return torch.zeros(*lead, 0, device=self.device)

    def _rollout_inputs(self, z_context, proprio_context, actions, past_actions):
        """Check the rollout's inputs and give them a leading B axis (past actions default to 0).

        Returns:
            ``(z (B, T, N, D), proprio (B, T, P), actions (B, S, H, Am), past (B, T-1, Am), batched)``.
        """
        N, D, P, Am = self.num_tokens, self.token_dim, self.proprio_dim, self.action_dim
        z_context = self._check("z_context", z_context, (3, 4), (N, D))
        batched = z_context.ndim == 4
        nb = 1 if batched else 0
        proprio_context = self._no_proprio("proprio_context", proprio_context, z_context.shape[:-2])
        proprio_context = self._check("proprio_context", proprio_context, (2 + nb,), (P,))
        actions = self._check("actions", actions, (3 + nb,), (Am,))
        if not batched:
            z_context, proprio_context, actions = (z_context[None], proprio_context[None], actions[None])
        B, T = z_context.shape[:2]
        if proprio_context.shape[:2] != (B, T) or actions.shape[0] != B:
            raise ValueError(f"expected z_context (B, T, N, D), proprio_context (B, T, P) and actions "
                             f"(B, S, H, Am) with the same B and T; got {tuple(z_context.shape)}, "
                             f"{tuple(proprio_context.shape)}, {tuple(actions.shape)}")
        if actions.shape[2] < 1 or actions.shape[1] < 1:
            raise ValueError(f"actions need S >= 1 candidates and H >= 1 steps, got {tuple(actions.shape)}")
        if past_actions is None:
            past_actions = z_context.new_zeros(B, T - 1, Am)
        else:
            past_actions = self._check("past_actions", past_actions, (2 + nb,), (Am,))
            if not batched:
                past_actions = past_actions[None]
            if past_actions.shape[:2] != (B, T - 1):
                raise ValueError(f"past_actions must be (T-1, Am) / (B, T-1, Am) = ({B}, {T - 1}, {Am})"
                                 f" here, got {tuple(past_actions.shape)}")
        return z_context, proprio_context, actions, past_actions, batched

