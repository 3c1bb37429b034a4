"""Open-loop prediction error of a world model on held-out windows, against copying the last frame.

``wmpc train`` reports it at the end of a run (``eval_metrics.json``): a ratio below 1 means the
model predicts the future tokens better than assuming nothing moves. For an env with a movable object
(:data:`mpc.data.format.OBJECT_POSE`, e.g. Push-T's block) whose episodes record their states, the
ratio is also given apart for the windows where the object moves in the predicted steps: what a
goal that moves the object needs from the model is contact, and windows where only the agent moves
can hide a model that never moves the object.

Token errors say how far the model is from the truth in the latent, not whether it is precise at the
scale a task's success test uses. So for such an env the object's pose is also read from the latent
(:func:`object_readout`: a ridge regression from tokens to the object's position and angle, fitted on
half of the validation episodes, applied to the other half): the position and angle error of that
readout on the true latent (how much of the pose the latent carries), on the model's prediction and on
the last context frame (copying it), on the windows where the object moves.
"""
from __future__ import annotations

import functools

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset

__all__ = ["open_loop_errors", "object_readout", "format_object_readout"]


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
    tokens_true, tokens_pred = [], []  # (B, L, N*D), (B, H, N*D) per batch, for the object readout
    poses = _pose_reader(windows)
    for batch in loader:
        z = batch["z"].to(device)  # (B, L, N, D)
        proprio = batch["proprio"].to(device)  # (B, L, P)
        actions = batch["actions"].to(device)  # (B, L-1, Am)
        future = actions[:, T - 1:T - 1 + horizon].unsqueeze(1)  # (B, 1, H, Am)
        z_pred, _ = model.rollout(z[:, :T], proprio[:, :T], future, past_actions=actions[:, :T - 1])
        target = z[:, T:T + horizon]  # (B, H, N, D)
        errors_model.append((z_pred[:, 0].float() - target).pow(2).mean(dim=(2, 3)).double().cpu())
        errors_copy.append((z[:, T - 1:T] - target).pow(2).mean(dim=(2, 3)).double().cpu())
        if poses is not None and z.shape[2] * z.shape[3] <= MAX_READOUT_FEATURES:
            tokens_true.append(z[:, :T + horizon].flatten(2).double().cpu())
            tokens_pred.append(z_pred[:, 0].flatten(2).double().cpu())
    model.train(was_training)
    err_model, err_copy = torch.cat(errors_model).numpy(), torch.cat(errors_copy).numpy()  # (W, H)
    result = {"windows": len(index), "horizon": horizon, "num_hist": T, **_ratios(err_model, err_copy, "")}
    result["ratio_1step"], result[f"ratio_{horizon}step"] = result["ratio"][0], result["ratio"][-1]
    moving = _object_moving_windows(windows, index, T, horizon, poses)
    if moving is not None:
        result["object_moving_windows"] = int(moving.sum())
        for name, rows in (("_object_moving", moving), ("_object_still", ~moving)):
            if rows.any():
                result.update(_ratios(err_model[rows], err_copy[rows], name))
        if tokens_true:
            readout = object_readout(windows, index, T, horizon, torch.cat(tokens_true).numpy(),
                                     torch.cat(tokens_pred).numpy(), moving, poses)
            if readout is not None:
                result["object_readout"] = readout
    return result


def _ratios(err_model: np.ndarray, err_copy: np.ndarray, suffix: str) -> dict:
    """Per-step mean MSEs of ``(W, H)`` window errors and their ratio, keys suffixed by ``suffix``."""
    mse_model, mse_copy = err_model.mean(0).tolist(), err_copy.mean(0).tolist()
    ratio = [m / c if c > 0 else float("inf") for m, c in zip(mse_model, mse_copy)]
    return {f"mse_model{suffix}": mse_model, f"mse_copy_last{suffix}": mse_copy, f"ratio{suffix}": ratio}


def _pose_reader(windows):
    """``episode -> (frames, 3)``: the object's recorded x, y and angle, each episode read once; None when the
    windows' env has no object (:data:`mpc.data.format.OBJECT_POSE`) or their episodes record no states."""
    from mpc.data.format import OBJECT_POSE

    episodes = getattr(windows, "episodes", None)
    pose = OBJECT_POSE.get((getattr(windows, "meta", None) or {}).get("env"))
    if pose is None or episodes is None or "states" not in episodes.shapes:
        return None

    @functools.lru_cache(maxsize=None)
    def read(e: int) -> np.ndarray:
        return np.asarray(episodes.read(e, ("states",))["states"], np.float64)[:, list(pose)]

    return read


def _object_moving_windows(windows, index: list[int], T: int, horizon: int, poses) -> np.ndarray | None:
    """``(W,)`` bool: the env's object moves in a window's predicted env steps (None: no pose reader)."""
    from mpc.data.format import object_moving

    if poses is None:
        return None
    k = int(windows.frameskip)
    moves: dict[int, np.ndarray] = {}
    flags = []
    for j in index:
        e, s = windows.window_index(j)
        if e not in moves:
            moves[e] = object_moving(poses(e), (0, 1, 2))
        first = s + (T - 1) * k  # env step of the last context frame
        flags.append(bool(moves[e][first:first + horizon * k].any()))
    return np.asarray(flags, dtype=bool)


MAX_READOUT_FEATURES = 2048  # latents of more numbers per frame (N x D) get no object readout
READOUT_RIDGE = 1e-6         # ridge penalty on standardised tokens per fitted frame: only keeps the solve stable
READOUT_WINDOWS = 2048       # windows (of even-numbered episodes) whose frames fit the readout, at most


def object_readout(windows, index: list[int], T: int, horizon: int, tokens: np.ndarray, predicted: np.ndarray,
                   moving: np.ndarray, poses=None) -> dict | None:
    """How precisely the object's pose can be read from the true latent, the model's and copying's.

    A ridge regression from a frame's tokens to the object's position and (cos, sin) of its angle is
    fitted on the frames of the dataset's windows of even-numbered episodes (at most
    :data:`READOUT_WINDOWS` of them, evenly spaced); on the evaluated windows of odd-numbered episodes
    where the object moves in the predicted steps it reads step ``h``'s pose from the true tokens
    (``latent``: what the latent carries at all), from the model's prediction (``model``) and from the
    last context frame (``copy_last``), against the recorded state.

    Args:
        windows, index: the windows (each item's ``z`` holds at least ``T + H`` frames) and which of
            them ``tokens`` / ``predicted`` hold, in order.
        T, horizon: context frames and predicted steps.
        tokens: ``(W, T + H, F)`` true tokens of each window (flattened per frame).
        predicted: ``(W, H, F)`` the model's tokens.
        moving: ``(W,)`` bool, the object moves in the window's predicted steps.
        poses: the episodes' object poses (default: read from ``windows``' episodes).

    Returns:
        ``{"fit_frames", "windows", "position_error": {"latent", "model", "copy_last"},
        "angle_error_deg": {...}}``, each a per-step list of medians (position in state units: px on
        Push-T); None when either half has too few frames or no moving window.
    """
    poses = _pose_reader(windows) if poses is None else poses
    k = int(windows.frameskip)

    def window_poses(j):  # (L, 3) object pose of window j's frames
        e, s = windows.window_index(j)
        return poses(e)[s + np.arange(T + horizon) * k]

    def as_targets(poses):  # (..., 3) -> (..., 4): position, cos and sin of the angle
        return np.concatenate([poses[..., :2], np.cos(poses[..., 2:]), np.sin(poses[..., 2:])], -1)

    even = [j for j in range(len(windows)) if windows.window_index(j)[0] % 2 == 0]
    spaced = np.unique(np.linspace(0, len(even) - 1, min(len(even), READOUT_WINDOWS)).round().astype(int))
    fit = [even[i] for i in spaced] if even else []
    fit_x = np.concatenate([np.asarray(windows[j]["z"][:T + horizon], np.float64).reshape(T + horizon, -1)
                            for j in fit]) if fit else tokens[:0, 0]
    fit_y = np.concatenate([as_targets(window_poses(j)) for j in fit]) if fit else np.zeros((0, 4))
    odd = np.array([windows.window_index(j)[0] % 2 == 1 for j in index])
    evaluated = odd & moving
    if len(fit_x) < 4 * (tokens.shape[-1] + 1) or not evaluated.any():
        return None
    poses = np.stack([window_poses(j) for j, keep in zip(index, evaluated) if keep])  # (M, T+H, 3)
    mean, std = fit_x.mean(0), fit_x.std(0) + 1e-8
    x = np.concatenate([(fit_x - mean) / std, np.ones((len(fit_x), 1))], 1)
    weights = np.linalg.solve(x.T @ x + READOUT_RIDGE * len(x) * np.eye(x.shape[1]), x.T @ fit_y)

    def read(z):  # (..., F) -> (..., 4)
        return np.concatenate([(z - mean) / std, np.ones((*z.shape[:-1], 1))], -1) @ weights

    truth = poses[:, T:]  # (M, H, 3)

    def errors(read_pose):  # (M, H, 4) -> per-step medians of position and angle error
        pos = np.linalg.norm(read_pose[..., :2] - truth[..., :2], axis=-1)
        ang = np.abs(np.angle(np.exp(1j * (np.arctan2(read_pose[..., 3], read_pose[..., 2]) - truth[..., 2]))))
        return np.median(pos, 0).tolist(), np.degrees(np.median(ang, 0)).tolist()

    copy = np.repeat(tokens[evaluated][:, T - 1:T], horizon, axis=1)
    out = {name: errors(read(z)) for name, z in (("latent", tokens[evaluated][:, T:]),
                                                  ("model", predicted[evaluated]), ("copy_last", copy))}
    return {"fit_frames": int(len(fit_x)), "windows": int(evaluated.sum()),
            "position_error": {name: v[0] for name, v in out.items()},
            "angle_error_deg": {name: v[1] for name, v in out.items()}}


def format_object_readout(readout: dict | None) -> str:
    """One line of an :func:`object_readout` at its last step: ``"block pose at step H read from the latent
    X px / Y deg, the model ..., copying ... (median of M windows)"``; empty without one."""
    if not readout:
        return ""
    pos, ang = readout["position_error"], readout["angle_error_deg"]
    parts = [f"{label} {pos[key][-1]:.0f} px / {ang[key][-1]:.0f} deg"
             for key, label in (("latent", "the latent"), ("model", "the model"), ("copy_last", "copying"))]
    return (f"block pose at step {len(pos['model'])} read from " + ", ".join(parts)
            + f" (median of {readout['windows']} windows)")
