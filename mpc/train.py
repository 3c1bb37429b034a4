"""``wmpc train``: fit a world model on a dataset's cached encoder latents.

``wmpc train env=pointmass encoder=dinov2 model=tiny data=data/pointmass out=runs/pm``

The trainer reads windows of cached latents (:class:`mpc.data.WindowDataset`; the cache for the
chosen encoder is built once, on first use), builds a :class:`mpc.world_model.WorldModel` from the
model preset with the token, action and proprio sizes of the dataset and its normalisation stats,
and minimises the teacher-forced next-frame token loss plus the proprio loss with AdamW (linear
warm-up, cosine decay, gradient clipping, bf16 autocast on CUDA). It runs on one device or under
``torchrun`` (DistributedDataParallel: NCCL on CUDA, gloo on CPU; rank 0 writes everything).

Run folder (``out``)::

    config.yaml                   resolved config of the run
    train.log                     log lines
    metrics.csv                   step, epoch, lr, samples_per_s, train/*, val/* every log_every steps
    events.out.tfevents.*         TensorBoard scalars (same values as metrics.csv)
    checkpoints/model_latest.safetensors, checkpoints/model_step_NNNNNNN.safetensors  (WorldModel.save)
    checkpoints/train_state.pt    model, optimizer, scheduler, step and RNG states (for resume=true)
    loss_curve.png                train / validation loss against step
    eval_metrics.json             open-loop token errors on validation episodes vs copying the last frame

Every file is written atomically (temp file in the same folder, then ``os.replace``), so a run
killed at any moment leaves either the old or the new version. ``resume=true`` continues exactly:
the data order is a pure function of (seed, epoch, step) and every RNG state is restored.
"""
from __future__ import annotations

import csv
import datetime
import json
import logging
import math
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler

__all__ = ["train", "train_command", "Trainer", "DistContext", "setup_distributed",
           "cosine_schedule", "open_loop_errors"]

log = logging.getLogger(__name__)

TRAIN_STATE_VERSION = 1


# --- small pieces -----------------------------------------------------------------------------
def cosine_schedule(step: int, warmup_steps: int, total_steps: int, min_ratio: float) -> float:
    """LR multiplier: linear warm-up to 1 over ``warmup_steps``, then cosine decay to ``min_ratio``.

    ``step`` counts optimizer steps already taken (0 for the first one).
    """
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def _atomic_write(path: Path, write) -> None:
    """Call ``write(tmp_path)`` and move the result onto ``path`` in one ``os.replace``."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# --- distributed plumbing ----------------------------------------------------------------------
@dataclass
class DistContext:
    """Where this process sits in a (possibly single-process) run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    initialized_here: bool = False  # we called init_process_group, so we destroy it

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def close(self) -> None:
        if self.initialized_here and dist.is_initialized():
            dist.destroy_process_group()
            self.initialized_here = False


def setup_distributed(device: str | None = None) -> DistContext:
    """Join the process group described by torchrun's env vars (RANK, WORLD_SIZE, LOCAL_RANK).

    Without them (plain ``wmpc train``) this is a single-process context. Backend: NCCL when the
    device is CUDA, gloo otherwise; each rank uses GPU ``LOCAL_RANK``.

    Args:
        device: ``"cuda"``, ``"cpu"``, ``"cuda:1"`` ... or None (cuda when available).

    Raises:
        ValueError: ``device`` names CUDA but no GPU is visible.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    name = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device={name!r} but no CUDA device is visible; use device=cpu")
        if dev.index is None:
            dev = torch.device("cuda", local_rank % torch.cuda.device_count())
        torch.cuda.set_device(dev)
    ctx = DistContext(rank=rank, world_size=world, local_rank=local_rank, device=dev)
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        kw = {"device_id": dev} if dev.type == "cuda" else {}
        # long timeout: rank 0 may build the latent cache while the others wait at a barrier
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(hours=2), **kw)
        ctx.initialized_here = True
        log.info("joined process group: rank %d/%d (%s, %s)", rank, world, backend, dev)
    return ctx


def _all_reduce_sum(values: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    if ctx.distributed:
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


class _LossModule(torch.nn.Module):
    """Wraps ``WorldModel.loss`` as ``forward`` so DistributedDataParallel can hook it."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, batch: dict[str, torch.Tensor]):
        return self.model.loss(batch)


# --- data and model ------------------------------------------------------------------------------
def _encoder_options(cfg) -> tuple[str, dict]:
    from omegaconf import OmegaConf

    options = OmegaConf.to_container(cfg.encoder, resolve=True)
    if not isinstance(options, dict) or "name" not in options:
        raise ValueError("the encoder config needs a `name` (e.g. encoder=dinov2, or "
                         "+encoder.name=<registered name>)")
    name = options.pop("name")
    return name, options


def _pretrain_jepa(cfg, options: dict, frameskip: int, ctx: DistContext) -> dict:
    """``encoder=jepa`` without a checkpoint: train it first (rank 0) into ``<out>/encoder/``.

    Returns:
        the encoder options with ``checkpoint`` set to the trained weights.
    """
    from mpc.train_encoder import CHECKPOINT_NAME, train_jepa

    folder = Path(cfg.out) / "encoder"
    path = folder / CHECKPOINT_NAME
    build = {k: v for k, v in options.items() if k not in ("checkpoint", "weights")}
    if ctx.is_main and not path.exists():
        log.info("encoder=jepa has no checkpoint: training it first for %d steps into %s "
                 "(or train one with `wmpc train-encoder encoder=jepa` and pass encoder.checkpoint=...)",
                 int(cfg.train.jepa_steps), folder)
        train_jepa(cfg.data, folder, steps=int(cfg.train.jepa_steps), encoder_options=build,
                   frameskip=frameskip, seed=int(cfg.seed), device=str(ctx.device))
    ctx.barrier()
    return {**build, "checkpoint": str(path)}


def _make_encoder(name: str, options: dict, data: str):
    """The frozen encoder whose latents the world model learns on.

    Raises:
        ValueError: unknown name, or a trainable encoder without trained weights.
    """
    import encoders

    encoder = encoders.make_encoder(name, **options)
    if encoder.trainable:
        raise ValueError(f"encoder {name!r} is trainable and was built without a trained checkpoint, so "
                         f"its tokens cannot be cached; train it first with `wmpc train-encoder "
                         f"encoder={name} data={data}`, then pass encoder.checkpoint=<its checkpoint>")
    return encoder


def _model_options(cfg) -> dict:
    """The model preset as a dict of :class:`WorldModelConfig` fields (without the data-given sizes)."""
    from omegaconf import OmegaConf

    options = OmegaConf.to_container(cfg.model, resolve=True)
    options.pop("name", None)
    return options


def _ensure_cache(data_dir: Path, encoder, ctx: DistContext, batch_size: int) -> None:
    """Build the latent cache of ``encoder`` once (rank 0) if it is missing or incomplete."""
    from mpc import data as wdata

    folder = wdata.cache_path(data_dir, encoder.fingerprint)
    episodes = len(wdata.load_dataset(data_dir))
    done = len(list(folder.glob("episode_*.h5"))) if (folder / "cache.json").exists() else 0
    if done < episodes:
        if ctx.is_main:
            log.info("latent cache for encoder %s is missing in %s (%d of %d episodes): encoding the "
                     "dataset once now (same as `wmpc encode data=%s encoder=...`)",
                     encoder.fingerprint, data_dir, done, episodes, data_dir)
            encoder.to(ctx.device)
            wdata.encode_dataset(data_dir, encoder, batch_size=batch_size)
            encoder.to("cpu")
        ctx.barrier()


def _build_model(cfg, windows, encoder: tuple[str, dict]):
    """A WorldModel from the preset, sized by the dataset, with the dataset's normalisation."""
    from mpc.world_model import WorldModel, WorldModelConfig

    enc_name, enc_options = encoder
    options = _model_options(cfg)
    for key, have in (("num_tokens", windows.num_tokens), ("token_dim", windows.token_dim)):
        want = options.pop(key, None)
        if want is not None and int(want) != have:
            raise ValueError(f"the model preset expects {key}={want} but the latents of encoder "
                             f"{windows.fingerprint} have {have}; set model.{key}=null (take it from "
                             f"the data) or pick the encoder the preset was made for")
    config = WorldModelConfig.from_dict({
        **options, "num_tokens": windows.num_tokens, "token_dim": windows.token_dim,
        "env_action_dim": windows.env_action_dim, "proprio_dim": windows.proprio_dim,
        "frameskip": windows.frameskip, "encoder": enc_name, "encoder_options": enc_options,
        "encoder_fingerprint": windows.fingerprint})
    model = WorldModel(config)
    model.set_normalization(windows.stats)
    return model


# --- evaluation and files ------------------------------------------------------------------------
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
    loader = DataLoader(torch.utils.data.Subset(windows, index), batch_size=batch_size, shuffle=False)
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


def _read_csv(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return [{k: (float(v) if k != "step" else int(v)) for k, v in r.items() if v not in ("", None)}
                for r in csv.DictReader(f)]


def _write_csv(path: Path, rows: list[dict]) -> None:
    fields: list[str] = []
    for r in rows:
        fields += [k for k in r if k not in fields]

    def write(p):
        with open(p, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=fields)
            w.writeheader()
            w.writerows(rows)

    _atomic_write(path, write)


def _plot_losses(rows: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for key, label in (("train/loss", "train"), ("val/loss", "validation")):
        pts = [(r["step"], r[key]) for r in rows if key in r]
        if pts:
            ax.plot(*zip(*pts), label=label, marker="o" if key.startswith("val") else None)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    if all(r.get("train/loss", 1) > 0 for r in rows):
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    _atomic_write(path, lambda p: fig.savefig(p, dpi=120))
    plt.close(fig)


# --- the trainer -----------------------------------------------------------------------------------
class Trainer:
    """One training run: data, model, optimizer, schedule, logging and checkpoints.

    ``Trainer(cfg, ctx).fit()`` is what :func:`train` runs; tests drive :meth:`batches` and
    :meth:`forward_backward` directly.

    Args:
        cfg: the composed ``configs/train.yaml`` (an OmegaConf DictConfig).
        ctx: the distributed context (:func:`setup_distributed`); None: single process on ``cfg.device``.

    Raises:
        ValueError: a batch size that does not split over the ranks, a dataset too small for one
            batch, or a run folder that already holds a checkpoint while ``resume`` is false.
    """

    def __init__(self, cfg, ctx: DistContext | None = None):
        self.cfg = cfg
        self.ctx = ctx or setup_distributed(cfg.get("device"))
        self.run_dir = Path(cfg.out)
        self.ckpt_dir = self.run_dir / "checkpoints"
        t = cfg.train
        if int(t.batch_size) % self.ctx.world_size:
            raise ValueError(f"train.batch_size={t.batch_size} must be a multiple of the number of "
                             f"processes ({self.ctx.world_size}); it is the global batch")
        self.local_batch = int(t.batch_size) // self.ctx.world_size
        _seed_everything(int(cfg.seed))

        options = _model_options(cfg)
        predictor = options.get("predictor") or {}
        self.num_hist = int(predictor.get("num_hist", 3))
        self.num_pred = int(predictor.get("num_pred", 1))
        self.frameskip = int(options.get("frameskip", 1))
        name, enc_options = _encoder_options(cfg)
        if name == "jepa" and enc_options.get("checkpoint") is None and enc_options.get("weights") is None:
            enc_options = _pretrain_jepa(cfg, enc_options, self.frameskip, self.ctx)
        self.encoder = _make_encoder(name, enc_options, cfg.data)
        self.data_dir = Path(cfg.data)
        _ensure_cache(self.data_dir, self.encoder, self.ctx, int(cfg.get("encode_batch", 256)))
        self.train_ds = self._windows("train", self.num_pred)
        env = (cfg.get("env") or {}).get("name")
        if env is not None and env != self.train_ds.meta.get("env"):
            log.warning("env=%s but the dataset %s was collected on env %r", env, self.data_dir,
                        self.train_ds.meta.get("env"))
        self.val_ds = self._windows("val", self.num_pred)
        self.model = _build_model(cfg, self.train_ds, (name, enc_options))
        self.sampler = DistributedSampler(self.train_ds, num_replicas=self.ctx.world_size,
                                          rank=self.ctx.rank, shuffle=True, seed=int(cfg.seed),
                                          drop_last=True)
        self.batches_per_epoch = len(self.sampler) // self.local_batch
        if self.batches_per_epoch == 0:
            raise ValueError(f"the training split has {len(self.train_ds)} windows, fewer than one "
                             f"global batch of {t.batch_size}; lower train.batch_size or collect more data")

        self.model.to(self.ctx.device)
        self.loss_module = _LossModule(self.model)
        if self.ctx.distributed:
            ids = [self.ctx.device.index] if self.ctx.device.type == "cuda" else None
            self.loss_module = DistributedDataParallel(self.loss_module, device_ids=ids)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = self._make_optimizer()
        steps, warm, floor = int(t.steps), int(t.warmup_steps), float(t.min_lr_ratio)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: cosine_schedule(s, warm, steps, floor))
        self.autocast = self.ctx.device.type == "cuda" and bool(t.amp)
        self.step = 0

    # -- construction helpers --
    def _make_optimizer(self) -> torch.optim.Optimizer:
        t = self.cfg.train
        decay = [p for p in self.params if p.ndim >= 2]  # matrices decay; biases and norms do not
        no_decay = [p for p in self.params if p.ndim < 2]
        groups = [{"params": decay, "weight_decay": float(t.weight_decay)},
                  {"params": no_decay, "weight_decay": 0.0}]
        fused = self.ctx.device.type == "cuda"
        return torch.optim.AdamW(groups, lr=float(t.lr), betas=tuple(t.betas), fused=fused)

    # -- data --
    def _windows(self, split: str, num_pred: int):
        from mpc.data import WindowDataset

        return WindowDataset(self.data_dir, self.encoder.fingerprint, num_hist=self.num_hist,
                             num_pred=num_pred, frameskip=self.frameskip, split=split,
                             val_fraction=float(self.cfg.train.val_fraction), seed=int(self.cfg.seed))

    def batches(self, start_step: int = 0) -> Iterator[tuple[int, dict[str, torch.Tensor]]]:
        """Endless ``(epoch, batch)`` stream from optimizer step ``start_step`` on.

        The order depends only on (seed, epoch, position): epoch ``e`` permutes the windows with
        seed ``seed + e`` (DistributedSampler) and each rank takes its share, so resuming at step
        ``k`` yields exactly the batches an uninterrupted run would see from step ``k``.
        """
        epoch, skip = divmod(start_step, self.batches_per_epoch)
        b = self.local_batch
        while True:
            self.sampler.set_epoch(epoch)
            order = list(self.sampler)
            chunks = [order[i * b:(i + 1) * b] for i in range(skip, self.batches_per_epoch)]
            loader = DataLoader(self.train_ds, batch_sampler=chunks, num_workers=int(self.cfg.train.workers),
                                pin_memory=self.ctx.device.type == "cuda",
                                generator=torch.Generator().manual_seed(int(self.cfg.seed) + epoch))
            for batch in loader:
                yield epoch, batch
            epoch, skip = epoch + 1, 0

    def _to_device(self, batch: dict) -> dict[str, torch.Tensor]:
        return {k: v.to(self.ctx.device, non_blocking=True) if torch.is_tensor(v) else v
                for k, v in batch.items()}

    # -- one step --
    def forward_backward(self, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Loss of one local batch and its backward pass (gradients averaged over ranks under DDP).

        Returns:
            the detached loss and the model's metrics as detached scalar tensors.
        """
        self.loss_module.train()
        batch = self._to_device(batch)
        with torch.autocast(self.ctx.device.type, dtype=torch.bfloat16, enabled=self.autocast):
            loss, metrics = self.loss_module(batch)
        loss.backward()
        metrics = {k: torch.as_tensor(v, device=self.ctx.device).detach().float() for k, v in metrics.items()}
        return loss.detach().float(), metrics

    def train_step(self, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """forward, backward, clip, AdamW step and schedule step."""
        loss, metrics = self.forward_backward(batch)
        if self.cfg.train.grad_clip is not None:
            norm = torch.nn.utils.clip_grad_norm_(self.params, float(self.cfg.train.grad_clip))
            metrics["grad_norm"] = norm.detach().float()
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        return loss, metrics

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Mean loss and metrics over (up to ``train.val_batches``) validation batches, all ranks."""
        self.model.eval()
        sampler = DistributedSampler(self.val_ds, num_replicas=self.ctx.world_size, rank=self.ctx.rank,
                                     shuffle=False, drop_last=False)
        loader = DataLoader(self.val_ds, batch_size=self.local_batch, sampler=sampler,
                            num_workers=int(self.cfg.train.workers),
                            generator=torch.Generator().manual_seed(0))
        limit = self.cfg.train.val_batches
        sums: dict[str, torch.Tensor] = {}
        count = torch.zeros((), device=self.ctx.device)
        for i, batch in enumerate(loader):
            if limit is not None and i >= int(limit):
                break
            batch = self._to_device(batch)
            n = next(v for v in batch.values() if torch.is_tensor(v)).shape[0]
            with torch.autocast(self.ctx.device.type, dtype=torch.bfloat16, enabled=self.autocast):
                loss, metrics = self.model.loss(batch)
            for k, v in {"loss": loss, **metrics}.items():
                sums[k] = sums.get(k, 0.0) + torch.as_tensor(v, device=self.ctx.device).float() * n
            count += n
        self.model.train()
        if not sums:
            return {}
        keys = sorted(sums)
        packed = _all_reduce_sum(torch.stack([sums[k] for k in keys] + [count]), self.ctx)
        return {k: float(packed[i] / packed[-1]) for i, k in enumerate(keys)}

    # -- checkpoints --
    def save_checkpoint(self) -> None:
        """Write model_step_N, model_latest and train_state.pt (collective: every rank calls it)."""
        rng = _rng_state()
        if self.ctx.distributed:
            states: list[Any] = [None] * self.ctx.world_size
            dist.all_gather_object(states, rng)
        else:
            states = [rng]
        if self.ctx.is_main:
            self.ckpt_dir.mkdir(parents=True, exist_ok=True)
            self.model.save(self.ckpt_dir / f"model_step_{self.step:07d}.safetensors")  # atomic
            self.model.save(self.ckpt_dir / "model_latest.safetensors")
            state = {"format_version": TRAIN_STATE_VERSION, "step": self.step,
                     "world_size": self.ctx.world_size, "model": self.model.state_dict(),
                     "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                     "rng": states}
            _atomic_write(self.ckpt_dir / "train_state.pt", lambda p: torch.save(state, p))
            keep = self.cfg.train.keep_checkpoints
            if keep is not None:
                steps = sorted(self.ckpt_dir.glob("model_step_*.safetensors"))
                for old in steps[:max(0, len(steps) - int(keep))]:
                    old.unlink()
            log.info("checkpoint at step %d -> %s", self.step, self.ckpt_dir)
        self.ctx.barrier()

    def load_checkpoint(self, path: Path) -> None:
        """Restore model, optimizer, scheduler, step and this rank's RNG state from ``path``."""
        state = torch.load(path, map_location=self.ctx.device, weights_only=False)
        if state.get("format_version") != TRAIN_STATE_VERSION:
            raise ValueError(f"{path} has train-state format {state.get('format_version')}, this "
                             f"wmpc writes {TRAIN_STATE_VERSION}; start a new run (another out=)")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step = int(state["step"])
        if state["world_size"] == self.ctx.world_size:
            _set_rng_state(state["rng"][self.ctx.rank])
        else:
            log.warning("checkpoint was written by %d processes, this run has %d: the data order "
                        "and dropout noise will differ from an uninterrupted run",
                        state["world_size"], self.ctx.world_size)
            _seed_everything(int(self.cfg.seed) + self.step * 1000 + self.ctx.rank)
        log.info("resumed from %s at step %d", path, self.step)

    # -- the loop --
    def _start_logging(self) -> None:
        from omegaconf import OmegaConf
        from torch.utils.tensorboard import SummaryWriter

        self.run_dir.mkdir(parents=True, exist_ok=True)
        text = OmegaConf.to_yaml(self.cfg, resolve=True)
        _atomic_write(self.run_dir / "config.yaml", lambda p: p.write_text(text))
        self._file_handler = logging.FileHandler(self.run_dir / "train.log")
        self._file_handler.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] %(message)s"))
        self._file_handler.setLevel(logging.INFO)
        logging.getLogger().addHandler(self._file_handler)
        for name in ("mpc", "encoders"):
            if logging.getLogger(name).level == logging.NOTSET:
                logging.getLogger(name).setLevel(logging.INFO)
        self.rows = [r for r in _read_csv(self.run_dir / "metrics.csv") if int(r["step"]) <= self.step]
        self.writer = SummaryWriter(str(self.run_dir), purge_step=self.step if self.step else None)

    def _stop_logging(self) -> None:
        if getattr(self, "writer", None) is not None:
            self.writer.close()
        if getattr(self, "_file_handler", None) is not None:
            logging.getLogger().removeHandler(self._file_handler)
            self._file_handler.close()

    def _log_row(self, row: dict) -> None:
        self.rows.append(row)
        _write_csv(self.run_dir / "metrics.csv", self.rows)
        for k, v in row.items():
            if k not in ("step", "epoch"):
                self.writer.add_scalar(k, v, row["step"])
        self.writer.flush()

    def fit(self) -> Path:
        """Train to ``train.steps`` (or ``train.stop_at``), then evaluate. Returns the run folder."""
        from tqdm.auto import tqdm

        cfg, t, ctx = self.cfg, self.cfg.train, self.ctx
        state_path = self.ckpt_dir / "train_state.pt"
        if state_path.exists():
            if not cfg.resume:
                raise ValueError(f"{self.run_dir} already holds a training run ({state_path}); pass "
                                 "resume=true to continue it, or choose another out=")
            self.load_checkpoint(state_path)
        elif cfg.resume:
            log.warning("resume=true but %s does not exist: starting from step 0", state_path)
        total = int(t.steps)
        stop = total if t.stop_at is None else min(total, int(t.stop_at))
        log_every, val_every, ckpt_every = int(t.log_every), int(t.val_every), int(t.ckpt_every)
        if ctx.is_main:
            self._start_logging()
        try:
            log.info("training %s: %d parameters, %d train / %d val windows, global batch %d on %d "
                     "process(es) (%s), steps %d -> %d of %d", type(self.model).__name__,
                     sum(p.numel() for p in self.params), len(self.train_ds), len(self.val_ds),
                     int(t.batch_size), ctx.world_size, ctx.device, self.step, stop, total)
            stream = self.batches(self.step)
            sums: dict[str, torch.Tensor] = {}
            count, tic = 0, time.perf_counter()
            bar = tqdm(total=stop, initial=self.step, desc="train", disable=not ctx.is_main,
                       dynamic_ncols=True)
            epoch = self.step // self.batches_per_epoch
            while self.step < stop:
                epoch, batch = next(stream)
                lr = self.optimizer.param_groups[0]["lr"]
                loss, metrics = self.train_step(batch)
                for k, v in {"loss": loss, **metrics}.items():
                    sums[k] = sums[k] + v if k in sums else v
                count += 1
                bar.update(1)
                row = None
                if self.step % log_every == 0 or self.step == stop:
                    keys = sorted(sums)
                    packed = _all_reduce_sum(torch.stack([sums[k] for k in keys]) / count, ctx)
                    packed = (packed / ctx.world_size).tolist()
                    rate = int(t.batch_size) * count / (time.perf_counter() - tic)
                    row = {"step": self.step, "epoch": epoch, "lr": lr, "samples_per_s": rate,
                           **{f"train/{k}": packed[i] for i, k in enumerate(keys)}}
                    bar.set_postfix(loss=f"{row['train/loss']:.4g}", samples_per_s=f"{rate:.0f}")
                    sums, count = {}, 0
                if self.step % val_every == 0 or self.step == stop:
                    row = row or {"step": self.step, "epoch": epoch}
                    row.update({f"val/{k}": v for k, v in self.validate().items()})
                    if "val/loss" in row:
                        log.info("step %d: train loss %s, val loss %.5g", self.step,
                                 f"{row['train/loss']:.5g}" if "train/loss" in row else "-", row["val/loss"])
                if row is not None and ctx.is_main:
                    self._log_row(row)
                if self.step % ckpt_every == 0 or self.step == stop:
                    self.save_checkpoint()
                if row is not None:
                    tic = time.perf_counter()  # throughput counts training time only
            bar.close()
            if self.step < total:
                log.info("stopped at step %d of %d (train.stop_at); continue with resume=true out=%s",
                         self.step, total, self.run_dir)
            elif ctx.is_main:
                self._finish()
            ctx.barrier()
        finally:
            self._stop_logging()
        return self.run_dir

    def _finish(self) -> None:
        """Open-loop evaluation on the validation episodes and the loss plot (rank 0)."""
        t = self.cfg.train
        horizon = int(t.eval_horizon)
        try:
            windows = self._windows("val", horizon)
        except ValueError as e:  # episodes too short for num_hist + horizon frames
            log.warning("skipping the open-loop evaluation: %s", e)
            windows = []
        if len(windows) == 0:
            log.warning("no validation window spans %d context + %d predicted frames: skipping the "
                        "open-loop evaluation", self.model.num_hist, horizon)
        else:
            result = open_loop_errors(self.model, windows, horizon=horizon, max_windows=int(t.eval_windows),
                                      batch_size=self.local_batch, device=self.ctx.device)
            _atomic_write(self.run_dir / "eval_metrics.json",
                          lambda p: p.write_text(json.dumps(result, indent=2) + "\n"))
            log.info("open-loop token MSE / copy-last-frame MSE on %d validation windows: "
                     "1-step %.4f, %d-step %.4f", result["windows"], result["ratio"][0], horizon,
                     result["ratio"][-1])
        if t.plot:
            _plot_losses(self.rows, self.run_dir / "loss_curve.png")


def train(cfg) -> Path:
    """Train a world model as configured by ``configs/train.yaml`` (see the module docstring).

    Args:
        cfg: a DictConfig (or plain dict) with the keys of ``configs/train.yaml``.

    Returns:
        the run folder.
    """
    from omegaconf import DictConfig, OmegaConf

    if not isinstance(cfg, DictConfig):
        cfg = OmegaConf.create(cfg)
    ctx = setup_distributed(cfg.get("device"))
    try:
        run_dir = Trainer(cfg, ctx).fit()
        ctx.barrier()  # leave together: rank 0 holds the rendezvous store, it must not go first
        return run_dir
    finally:
        ctx.close()


def train_command(argv: list[str]) -> int:
    """``wmpc train key=value ...`` (hydra over ``configs/train.yaml``)."""
    from mpc.commands.cli import hydra_command

    def task(cfg):
        run = train(cfg)
        if int(os.environ.get("RANK", "0")) == 0:
            print(f"run folder: {run}")
            result = run / "eval_metrics.json"
            if result.exists():
                r = json.loads(result.read_text())
                print(f"open-loop token MSE / copy-last-frame MSE: 1-step {r['ratio_1step']:.4f}, "
                      f"{r['horizon']}-step {r['ratio'][-1]:.4f}")
        return run

    return hydra_command("train", task, argv, prog="wmpc train")


if __name__ == "__main__":  # `torchrun --nproc_per_node 4 -m mpc.train key=value ...`
    import sys

    sys.exit(train_command(sys.argv[1:]))
