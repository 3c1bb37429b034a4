"""Open-loop prediction error of a world model on held-out windows, against copying the last frame.

``wmpc train`` reports it at the end of a run (``eval_metrics.json``): a ratio below 1 means the
model predicts the future tokens better than assuming nothing moves. For an env with a movable object
(:data:`mpc.data.format.OBJECT_POSE`, e.g. Push-T's block) whose episodes record their states, the
ratio is also given apart for the windows where the object moves in the predicted steps: what a
goal that moves the object needs from the model is contact, and windows where only the agent moves
can hide a model that never moves the object.
"""
from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset

__all__ = ["open_loop_errors"]


@torch.no_grad()
def open_loop_errors(model, windows, horizon: int, max_windows: int = 512, batch_size: int = 64,
                     device: torch.device | str = "cpu") -> dict:
    """Open-loop token errors of ``model.rollout`` against copying the last context frame.

    Each window (from a :class:`WindowDataset` with ``num_pred >= horizon``) gives the model its
    first ``T = model.num_hist`` frames and the true actions; the rollout's step ``h`` is compared
    with the true tokens of frame ``T - 1 + h``, as is the last context frame (the baseline).

    Args:
        model: a WorldModel.
        windows: dataset whose items hold ``z`` (L, N, D), ``proprio`` (L, P), ``actions`` (L-1, Am).
        horizon: H, open-loop steps.
        max_windows: evenly spaced windows used at most.
        batch_size: windows per rollout call.
        device: where the model runs.

    Returns:
        dict with ``windows``, ``horizon``, per-step lists ``mse_model``, ``mse_copy_last`` and
        ``ratio`` (model / baseline; below 1 beats copying), and ``ratio_1step``, ``ratio_<H>step``.
        For an object env with recorded states also ``object_moving_windows`` (how many windows move
        the object in their predicted steps) and the same three lists for those windows
        (``..._object_moving``) and for the rest (``..._object_still``), each when it has windows.
    """
    was_training = model.training
    model.eval()
    T = model.num_hist
    n = min(len(windows), int(max_windows))
    index = np.unique(np.linspace(0, len(windows) - 1, n).round().astype(int)).tolist()
    loader = DataLoader(Subset(windows, index), batch_size=batch_size, shuffle=False)
    errors_model, errors_copy = [], []  # (B, H) per batch
    for batch in loader:
        z = batch["z"].to(device)  # (B, L, N, D)
        proprio = batch["proprio"].to(device)  # (B, L, P)
        actions = batch["actions"].to(device)  # (B, L-1, Am)
        future = actions[:, T - 1:T - 1 + horizon].unsqueeze(1)  # (B, 1, H, Am)
        z_pred, _ = model.rollout(z[:, :T], proprio[:, :T], future, past_actions=actions[:, :T - 1])
        target = z[:, T:T + horizon]  # (B, H, N, D)
        errors_model.append((z_pred[:, 0].float() - target).pow(2).mean(dim=(2, 3)).double().cpu())
        errors_copy.append((z[:, T - 1:T] - target).pow(2).mean(dim=(2, 3)).double().cpu())
    model.train(was_training)
    err_model, err_copy = torch.cat(errors_model).numpy(), torch.cat(errors_copy).numpy()  # (W, H)
    result = {"windows": len(index), "horizon": horizon, "num_hist": T, **_ratios(err_model, err_copy, "")}
    result["ratio_1step"], result[f"ratio_{horizon}step"] = result["ratio"][0], result["ratio"][-1]
    moving = _object_moving_windows(windows, index, T, horizon)
    if moving is not None:
        result["object_moving_windows"] = int(moving.sum())
        for name, rows in (("_object_moving", moving), ("_object_still", ~moving)):
            if rows.any():
                result.update(_ratios(err_model[rows], err_copy[rows], name))
    return result


def _ratios(err_model: np.ndarray, err_copy: np.ndarray, suffix: str) -> dict:
    """Per-step mean MSEs of ``(W, H)`` window errors and their ratio, keys suffixed by ``suffix``."""
    mse_model, mse_copy = err_model.mean(0).tolist(), err_copy.mean(0).tolist()
    ratio = [m / c if c > 0 else float("inf") for m, c in zip(mse_model, mse_copy)]
    return {f"mse_model{suffix}": mse_model, f"mse_copy_last{suffix}": mse_copy, f"ratio{suffix}": ratio}


def _object_moving_windows(windows, index: list[int], T: int, horizon: int) -> np.ndarray | None:
    """``(W,)`` bool: the env's object moves in a window's predicted env steps (None: no object or no states)."""
    from mpc.data.format import OBJECT_POSE, object_moving

    episodes = getattr(windows, "episodes", None)
    pose = OBJECT_POSE.get((getattr(windows, "meta", None) or {}).get("env"))
    if pose is None or episodes is None or "states" not in episodes.shapes:
        return None
    k = int(windows.frameskip)
    moves: dict[int, np.ndarray] = {}
    flags = []
    for j in index:
        e, s = windows.window_index(j)
        if e not in moves:
            moves[e] = object_moving(episodes.read(e, ("states",))["states"], pose)
        first = s + (T - 1) * k  # env step of the last context frame
        flags.append(bool(moves[e][first:first + horizon * k].any()))
    return np.asarray(flags, dtype=bool)
