"""The world-model trainer's checkpoints: what :class:`mpc.training.Trainer` saves and resumes from.

- :func:`save_train_state`: ``checkpoints/model_step_NNNNNNN.safetensors``, ``model_latest.safetensors``
  (``WorldModel.save``) and ``train_state.pt`` (model, optimizer, scheduler, step, every rank's RNG
  state and its train metrics summed since the last logged row), the oldest step files pruned;
- :func:`load_train_state`: restore all of that into a run's model, optimizer and scheduler;
- :func:`find_train_state`: the ``train_state.pt`` a run folder holds, checked against ``resume``.

Every file is written atomically (:mod:`mpc._io`).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from mpc._io import atomic_write
from mpc.training.distributed import DistContext
from mpc.training.schedule import rng_state, seed_everything, set_rng_state

__all__ = ["TRAIN_STATE_VERSION", "STATE_FILE", "save_train_state", "load_train_state", "find_train_state"]

log = logging.getLogger(__name__)

TRAIN_STATE_VERSION = 1
STATE_FILE = "train_state.pt"


def save_train_state(ckpt_dir: Path, model, optimizer, scheduler, step: int,
                     log_sums: dict[str, torch.Tensor], log_count: int, ctx: DistContext,
                     keep: int | None, train_seconds: float = 0.0) -> None:
    """Write model_step_N, model_latest and train_state.pt (collective: every rank calls it).

    Args:
        ckpt_dir: the run's ``checkpoints`` folder (created by rank 0).
        model: the world model (unwrapped); optimizer, scheduler: its AdamW and LR schedule.
        step: optimizer steps taken.
        log_sums, log_count: this rank's train metrics summed since the last logged row, and how
            many steps they sum.
        ctx: the distributed context; rank 0 writes, the others send their RNG states and sums.
        keep: how many ``model_step_*`` files to keep (None: all).
        train_seconds: seconds spent in the training loop so far, over every process that resumed the run.
    """
    local = {"rng": rng_state(), "log_window": {
        "sums": {k: v.cpu() for k, v in log_sums.items()}, "count": log_count}}
    if ctx.distributed:
        states: list[Any] = [None] * ctx.world_size
        dist.all_gather_object(states, local)
    else:
        states = [local]
    if ctx.is_main:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        model.save(ckpt_dir / f"model_step_{step:07d}.safetensors")  # atomic
        model.save(ckpt_dir / "model_latest.safetensors")
        state = {"format_version": TRAIN_STATE_VERSION, "step": step,
                 "world_size": ctx.world_size, "model": model.state_dict(),
                 "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                 "rng": [s["rng"] for s in states], "log_window": [s["log_window"] for s in states],
                 "train_seconds": float(train_seconds)}
        atomic_write(ckpt_dir / STATE_FILE, lambda p: torch.save(state, p))
        if keep is not None:
            steps = sorted(ckpt_dir.glob("model_step_*.safetensors"))
            for old in steps[:max(0, len(steps) - int(keep))]:
                old.unlink()
        log.info("checkpoint at step %d -> %s", step, ckpt_dir)
    ctx.barrier()


def load_train_state(path: Path, model, optimizer, scheduler, ctx: DistContext,
                     seed: int) -> tuple[int, tuple[dict[str, torch.Tensor], int] | None, float]:
    """Restore model, optimizer and scheduler from ``path``, and this rank's RNG state.

    With another number of processes than the run that wrote ``path`` the RNGs are reseeded from
    ``seed``, the step and the rank instead (the data order and dropout noise then differ).

    Returns:
        the step, this rank's train metrics summed since the last logged row with their step
        count (None when the process counts differ), and the seconds the run had spent in its training
        loop (0 for states written before that was recorded).

    Raises:
        ValueError: ``path`` holds another train-state format.
    """
    state = torch.load(path, map_location=ctx.device, weights_only=False)
    if state.get("format_version") != TRAIN_STATE_VERSION:
        raise ValueError(f"{path} has train-state format {state.get('format_version')}, this "
                         f"wmpc writes {TRAIN_STATE_VERSION}; start a new run (another out=)")
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    step = int(state["step"])
    window = None
    if state["world_size"] == ctx.world_size:
        set_rng_state(state["rng"][ctx.rank])
        saved = (state.get("log_window") or [{"sums": {}, "count": 0}] * ctx.world_size)[ctx.rank]
        window = {k: v.to(ctx.device) for k, v in saved["sums"].items()}, int(saved["count"])
    else:
        log.warning("checkpoint was written by %d processes, this run has %d: the data order "
                    "and dropout noise will differ from an uninterrupted run",
                    state["world_size"], ctx.world_size)
        seed_everything(seed + step * 1000 + ctx.rank)
    log.info("resumed from %s at step %d", path, step)
    return step, window, float(state.get("train_seconds", 0.0))


def find_train_state(run_dir: Path, ckpt_dir: Path, resume: bool) -> Path | None:
    """The ``train_state.pt`` to resume from: None when there is none (or ``resume`` is false and
    the folder is new).

    Raises:
        ValueError: the run folder already holds a training run and ``resume`` is false.
    """
    state_path = ckpt_dir / STATE_FILE
    if state_path.exists():
        if not resume:
            raise ValueError(f"{run_dir} already holds a training run ({state_path}); pass "
                             "resume=true to continue it, or choose another out=")
        return state_path
    if resume:
        log.warning("resume=true but %s does not exist: starting from step 0", state_path)
    return None
