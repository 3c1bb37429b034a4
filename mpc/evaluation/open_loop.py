"""Open-loop prediction error of a world model on held-out windows, against copying the last frame.

``wmpc train`` reports it at the end of a run (``eval_metrics.json``): a ratio below 1 means the
model predicts the future tokens better than assuming nothing moves.
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
    """
    was_training = model.training
    model.eval()
    T = model.num_hist
    n = min(len(windows), int(max_windows))
    index = np.unique(np.linspace(0, len(windows) - 1, n).round().astype(int)).tolist()
    loader = DataLoader(Subset(windows, index), batch_size=batch_size, shuffle=False)
    err_model = torch.zeros(horizon, dtype=torch.float64)
    err_copy = torch.zeros(horizon, dtype=torch.float64)
    for batch in loader:
        z = batch["z"].to(device)  # (B, L, N, D)
        proprio = batch["proprio"].to(device)  # (B, L, P)
        actions = batch["actions"].to(device)  # (B, L-1, Am)
        future = actions[:, T - 1:T - 1 + horizon].unsqueeze(1)  # (B, 1, H, Am)
        z_pred, _ = model.rollout(z[:, :T], proprio[:, :T], future, past_actions=actions[:, :T - 1])
        target = z[:, T:T + horizon]  # (B, H, N, D)
        err_model += (z_pred[:, 0].float() - target).pow(2).mean(dim=(2, 3)).sum(0).double().cpu()
        err_copy += (z[:, T - 1:T] - target).pow(2).mean(dim=(2, 3)).sum(0).double().cpu()
    model.train(was_training)
    count = len(index)
    mse_model = (err_model / count).tolist()
    mse_copy = (err_copy / count).tolist()
    ratio = [m / c if c > 0 else float("inf") for m, c in zip(mse_model, mse_copy)]
    return {"windows": count, "horizon": horizon, "num_hist": T, "mse_model": mse_model,
            "mse_copy_last": mse_copy, "ratio": ratio, "ratio_1step": ratio[0],
            f"ratio_{horizon}step": ratio[-1]}
