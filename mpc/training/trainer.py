"""The world-model trainer: :class:`Trainer` (one run) and :func:`train` (what ``wmpc train`` runs).

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
    eval_metrics.json             open-loop token errors on validation episodes vs copying the last frame,
                                  and the seconds spent in the training loop (over resumed processes too)

Every file is written atomically (temp file in the same folder, then ``os.replace``), so a run
killed at any moment leaves either the old or the new version; the next run in the folder (which
holds its lock) deletes the temp files a killed one left. ``resume=true`` continues exactly: the
data order is a pure function of (seed, epoch, step), every RNG state is restored, and so are the
train metrics summed since the last ``metrics.csv`` row, so the resumed run logs the same rows.
The checkpoints are written and read by :mod:`mpc.training.state`.
"""
from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path
from typing import Iterator

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import BatchSampler, DataLoader
from torch.utils.data.distributed import DistributedSampler

from mpc._io import folder_lock, remove_temp_files, write_json
from mpc.training.assembly import build_encoder, build_model, ensure_cache, model_options
from mpc.training.distributed import DistContext, LossModule, all_reduce_sum, setup_distributed
from mpc.training.run_log import RunLog
from mpc.training.schedule import cosine_schedule, seed_everything
from mpc.training.state import TRAIN_STATE_VERSION, find_train_state, load_train_state, save_train_state

__all__ = ["Trainer", "train", "TRAIN_STATE_VERSION"]

log = logging.getLogger(__name__)


class _Batches:
    """A :class:`mpc.data.WindowDataset` indexed by lists of windows: item ``[j1, j2, ...]`` is the
    stacked batch (``WindowDataset.get_batch``), so a DataLoader with ``batch_size=None`` and a
    sampler of index lists fetches a batch with a few numpy gathers, not a Python call per window."""

    def __init__(self, windows):
        self.windows = windows

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, indices) -> dict:
        return self.windows.get_batch(indices)


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
        self.data_dir = Path(cfg.data)
        self._check_data()
        self.local_batch = self._split_batch()
        seed_everything(int(cfg.seed))  # before anything draws random numbers
        self._read_window_shape()
        self._load_data()
        self._build_model()
        self._build_optimizer()
        self.step = 0
        self.log_sums: dict[str, torch.Tensor] = {}  # train metrics summed since the last logged row
        self.log_count = 0  # steps in log_sums
        self.train_seconds = self.earlier_seconds = 0.0  # in the training loop: all processes, earlier ones
        self.run_log: RunLog | None = None

    # -- construction steps, in order --
    def _check_data(self) -> None:
        """Check the dataset's ``dataset.json`` before anything is trained or encoded.

        Raises:
            DatasetError: ``data`` is not a dataset. ValueError: ``env=`` names another env.
        """
        from mpc.data.episodes import read_meta

        meta = read_meta(self.data_dir)  # dataset.json only: the windows open the episodes later
        env = (self.cfg.get("env") or {}).get("name")
        if env is not None and env != meta.get("env"):
            raise ValueError(f"env={env} but the data in {self.data_dir} hold env {meta.get('env')!r}; "
                             f"drop env= (the env is read from the dataset) or pass data= a dataset of {env}")

    def _split_batch(self) -> int:
        """The per-rank batch: ``train.batch_size`` is the global one."""
        size, world = int(self.cfg.train.batch_size), self.ctx.world_size
        if size % world:
            raise ValueError(f"train.batch_size={size} must be a multiple of the number of "
                             f"processes ({world}); it is the global batch")
        return size // world

    def _read_window_shape(self) -> None:
        """Context frames, predicted frames and frameskip of the training windows, from the preset."""
        options = model_options(self.cfg)
        predictor = options.get("predictor") or {}
        self.num_hist = int(predictor.get("num_hist", 3))
        self.num_pred = int(predictor.get("num_pred", 1))
        self.frameskip = int(options.get("frameskip", 1))

    def _load_data(self) -> None:
        """The encoder, its latent cache, the train/val windows, the train sampler and epoch length."""
        cfg = self.cfg
        name, options, self.encoder = build_encoder(cfg, self.frameskip, self.ctx)
        self.encoder_spec = (name, options)
        ensure_cache(self.data_dir, self.encoder, self.ctx, int(cfg.get("encode_batch", 256)),
                     progress=bool(cfg.get("progress", True)))
        from mpc.data import load_dataset

        self.episodes = load_dataset(self.data_dir)  # checked once, shared by every split's windows
        self.train_ds = self._windows("train", self.num_pred)
        self.val_ds = self._windows("val", self.num_pred)
        self.sampler = DistributedSampler(self.train_ds, num_replicas=self.ctx.world_size,
                                          rank=self.ctx.rank, shuffle=True, seed=int(cfg.seed),
                                          drop_last=True)
        self.batches_per_epoch = len(self.sampler) // self.local_batch
        if self.batches_per_epoch == 0:
            raise ValueError(f"the training split has {len(self.train_ds)} windows, fewer than one "
                             f"global batch of {cfg.train.batch_size}; lower train.batch_size or "
                             "collect more data")

    def _build_model(self) -> None:
        """The world model on the device, wrapped for DDP when distributed."""
        self.model = build_model(self.cfg, self.train_ds, self.encoder_spec)
        self.model.to(self.ctx.device)
        self.loss_module = LossModule(self.model)
        if self.ctx.distributed:
            ids = [self.ctx.device.index] if self.ctx.device.type == "cuda" else None
            self.loss_module = DistributedDataParallel(self.loss_module, device_ids=ids)
        self.params = [p for p in self.model.parameters() if p.requires_grad]

    def _build_optimizer(self) -> None:
        """AdamW (matrices decay; biases and norms do not), its LR schedule and autocast."""
        t = self.cfg.train
        decay = [p for p in self.params if p.ndim >= 2]
        no_decay = [p for p in self.params if p.ndim < 2]
        groups = [{"params": decay, "weight_decay": float(t.weight_decay)},
                  {"params": no_decay, "weight_decay": 0.0}]
        # fused kernels on CUDA; on the CPU the multi-tensor (foreach) update, which gives the same
        # weights as torch's per-tensor default there in a fraction of its time on small models
        cuda = self.ctx.device.type == "cuda"
        self.optimizer = torch.optim.AdamW(groups, lr=float(t.lr), betas=tuple(t.betas),
                                           fused=cuda or None, foreach=None if cuda else True)
        steps, warm, floor = int(t.steps), int(t.warmup_steps), float(t.min_lr_ratio)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: cosine_schedule(s, warm, steps, floor))
        self.autocast = self.ctx.device.type == "cuda" and bool(t.amp)

    # -- data --
    def _windows(self, split: str, num_pred: int):
        from mpc.data import WindowDataset

        return WindowDataset(self.episodes, self.encoder.fingerprint, num_hist=self.num_hist,
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
            loader = DataLoader(_Batches(self.train_ds), batch_size=None, sampler=chunks,
                                num_workers=int(self.cfg.train.workers),
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
            norm = torch.nn.utils.clip_grad_norm_(self.params, float(self.cfg.train.grad_clip), foreach=True)
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
        loader = DataLoader(_Batches(self.val_ds), batch_size=None,
                            sampler=BatchSampler(sampler, self.local_batch, drop_last=False),
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
        packed = all_reduce_sum(torch.stack([sums[k] for k in keys] + [count]), self.ctx)
        return {k: float(packed[i] / packed[-1]) for i, k in enumerate(keys)}

    # -- checkpoints (mpc.training.state) --
    def save_checkpoint(self) -> None:
        """Write model_step_N, model_latest and train_state.pt (collective: every rank calls it)."""
        save_train_state(self.ckpt_dir, self.model, self.optimizer, self.scheduler, self.step,
                         self.log_sums, self.log_count, self.ctx, self.cfg.train.keep_checkpoints,
                         train_seconds=self.train_seconds)

    def load_checkpoint(self, path: Path) -> None:
        """Restore model, optimizer, scheduler, step, this rank's RNG state and its train metrics
        summed since the last logged row from ``path``."""
        self.step, window, self.earlier_seconds = load_train_state(path, self.model, self.optimizer,
                                                                   self.scheduler, self.ctx, int(self.cfg.seed))
        if window is not None:
            self.log_sums, self.log_count = window

    def _resume_if_asked(self) -> None:
        """Load ``train_state.pt`` when the run folder holds one and ``resume`` is true."""
        state_path = find_train_state(self.run_dir, self.ckpt_dir, self.cfg.resume)
        if state_path is not None:
            self.load_checkpoint(state_path)

    # -- the loop --
    @contextlib.contextmanager
    def _hold_run_folder(self) -> Iterator[None]:
        """Rank 0 holds the run folder's lock and clears the temp files a killed run left in it."""
        if not self.ctx.is_main:
            yield
            return
        with folder_lock(self.run_dir, "wmpc train"):
            for folder in (self.run_dir, self.ckpt_dir):
                remove_temp_files(folder)
            yield

    def fit(self) -> Path:
        """Train to ``train.steps`` (or ``train.stop_at``), then evaluate. Returns the run folder.

        Raises:
            mpc._io.LockHeld: another process is training into the same run folder.
        """
        with self._hold_run_folder():
            return self._fit()

    def _fit(self) -> Path:
        t, ctx = self.cfg.train, self.ctx
        self._resume_if_asked()
        total = int(t.steps)
        stop = total if t.stop_at is None else min(total, int(t.stop_at))
        if ctx.is_main:
            self.run_log = RunLog(self.run_dir, self.cfg, self.step)
        try:
            log.info("training %s: %d parameters, %d train / %d val windows, global batch %d on %d "
                     "process(es) (%s), steps %d -> %d of %d", type(self.model).__name__,
                     sum(p.numel() for p in self.params), len(self.train_ds), len(self.val_ds),
                     int(t.batch_size), ctx.world_size, ctx.device, self.step, stop, total)
            self._loop(stop)
            if self.step < total:
                log.info("stopped at step %d of %d (train.stop_at); continue with resume=true out=%s",
                         self.step, total, self.run_dir)
            elif ctx.is_main:
                self._finish()
            ctx.barrier()
        finally:
            if self.run_log is not None:
                self.run_log.close()
        return self.run_dir

    def _loop(self, stop: int) -> None:
        """Optimizer steps up to ``stop``, logging, validating and checkpointing on schedule."""
        from tqdm.auto import tqdm

        t, ctx = self.cfg.train, self.ctx
        log_every, val_every, ckpt_every = int(t.log_every), int(t.val_every), int(t.ckpt_every)
        stream = self.batches(self.step)
        timed, tic = 0, time.perf_counter()  # steps trained in this process since tic
        start = time.perf_counter()
        bar = tqdm(total=stop, initial=self.step, desc="train", dynamic_ncols=True,
                   disable=not (ctx.is_main and bool(self.cfg.get("progress", True))))
        while self.step < stop:
            epoch, batch = next(stream)
            lr = self.optimizer.param_groups[0]["lr"]
            loss, metrics = self.train_step(batch)
            sums = self.log_sums
            for k, v in {"loss": loss, **metrics}.items():
                sums[k] = sums[k] + v if k in sums else v
            self.log_count += 1
            timed += 1
            bar.update(1)
            row = None
            if self.step % log_every == 0 or self.step == stop:
                keys = sorted(sums)
                packed = all_reduce_sum(torch.stack([sums[k] for k in keys]) / self.log_count, ctx)
                packed = (packed / ctx.world_size).tolist()
                rate = int(t.batch_size) * timed / (time.perf_counter() - tic)
                row = {"step": self.step, "epoch": epoch, "lr": lr, "samples_per_s": rate,
                       **{f"train/{k}": packed[i] for i, k in enumerate(keys)}}
                bar.set_postfix(loss=f"{row['train/loss']:.4g}", samples_per_s=f"{rate:.0f}")
                self.log_sums, self.log_count = {}, 0
            if self.step % val_every == 0 or self.step == stop:
                row = row or {"step": self.step, "epoch": epoch}
                row.update({f"val/{k}": v for k, v in self.validate().items()})
                if "val/loss" in row:
                    log.info("step %d: train loss %s, val loss %.5g", self.step,
                             f"{row['train/loss']:.5g}" if "train/loss" in row else "-", row["val/loss"])
            if row is not None and ctx.is_main:
                self.run_log.log_row(row)
            self.train_seconds = self.earlier_seconds + time.perf_counter() - start
            if self.step % ckpt_every == 0 or self.step == stop:
                self.save_checkpoint()
            if row is not None:
                timed, tic = 0, time.perf_counter()  # throughput counts training time only
        bar.close()

    def _finish(self) -> None:
        """Open-loop evaluation on the validation episodes and the loss plot (rank 0)."""
        from mpc.evaluation.open_loop import format_object_readout, open_loop_errors

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
            # seconds in the training loop over every process of the run, and those of earlier ones (resumed)
            result.update(train_seconds=self.train_seconds, train_seconds_earlier=self.earlier_seconds)
            write_json(self.run_dir / "eval_metrics.json", result)
            log.info("open-loop token MSE / copy-last-frame MSE on %d validation windows: "
                     "1-step %.4f, %d-step %.4f", result["windows"], result["ratio"][0], horizon,
                     result["ratio"][-1])
            if "ratio_object_moving" in result:
                log.info("on the %d of those windows whose object moves in the predicted steps: 1-step %.4f, "
                         "%d-step %.4f", result["object_moving_windows"], result["ratio_object_moving"][0],
                         horizon, result["ratio_object_moving"][-1])
            if result.get("object_readout"):
                log.info("%s", format_object_readout(result["object_readout"]))
        if t.plot:
            self.run_log.plot()


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
