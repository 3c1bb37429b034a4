"""``mpc.training``: learning, exact resume, checkpoints, DDP gradients and the CLI, on a tiny dataset.

The dataset is collected with :func:`mpc.data.collect` from ``BlobGoal-v0`` (the fake point env of
``tests/mpc/fake_envs.py`` drawn as a Gaussian blob, so the image gives the position to sub-pixel
precision) and encoded by ``test-centroid``: an encoder whose ``N = 4`` tokens of ``D = 8`` are a
fixed linear function of the blob's centroid. The true dynamics in token space are then almost
linear in the action, which a tiny transformer learns in a few hundred CPU steps.
"""
from __future__ import annotations

import csv
import json
import os
import socket
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

import encoders
from encoders.base import Encoder
from mpc.commands.cli import CONFIG_DIR
from tests.mpc.fake_envs import FakeGoalEnv

ENV_ID = "tests.mpc.test_train:BlobGoal-v0"
IMG = 16


# --- fakes ---------------------------------------------------------------------------------------
class BlobGoalEnv(FakeGoalEnv):
    """FakeGoalEnv rendered as a Gaussian blob (sub-pixel position in the image)."""

    def _render(self):
        s = self.image_size
        grid = (np.arange(s) + 0.5) / s * 2 - 1
        xx, yy = np.meshgrid(grid, grid, indexing="xy")
        blob = np.exp(-((xx - self._state[0]) ** 2 + (yy - self._state[1]) ** 2) / (2 * 0.2 ** 2))
        img = np.zeros((s, s, 3), np.uint8)
        img[..., 0] = (blob * 255).round().astype(np.uint8)
        return img


if "BlobGoal-v0" not in gym.registry:
    gym.register(id="BlobGoal-v0", entry_point=BlobGoalEnv)


class CentroidEncoder(Encoder):
    """Tokens ``(B, 4, 8)`` = fixed random linear map of the red channel's centroid."""

    backend = "test-centroid"
    variant = "n4d8"
    token_mode = "pooled"

    def __init__(self, image_size: int = IMG):
        super().__init__(image_size)
        g = torch.Generator().manual_seed(0)
        self.register_buffer("proj", torch.randn(2, 32, generator=g))

    num_tokens = property(lambda self: 4)
    dim = property(lambda self: 8)

    def forward_tokens(self, x):
        B, _, S, _ = x.shape
        w = x[:, 0] / x[:, 0].sum((1, 2), keepdim=True).clamp_min(1e-6)  # (B, S, S)
        grid = (torch.arange(S, device=x.device) + 0.5) / S * 2 - 1
        c = torch.stack([(w.sum(1) * grid).sum(-1), (w.sum(2) * grid).sum(-1)], -1)  # (B, 2)
        return (c @ self.proj).view(B, 4, 8)


if "test-centroid" not in encoders.list_encoders():
    encoders.register_encoder("test-centroid")(lambda **kw: CentroidEncoder(**kw))


# --- helpers -------------------------------------------------------------------------------------
pytestmark = pytest.mark.usefixtures("one_thread")  # tests/mpc/conftest.py


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    from mpc.data import collect, encode_dataset

    out = collect(ENV_ID, tmp_path_factory.mktemp("data") / "blob", episodes=40, steps=40,
                  image_size=IMG, action_repeat=5, seed=0, progress=False)
    encode_dataset(out, encoders.make_encoder("test-centroid"), dtype="float32", progress=False)
    return out


def make_cfg(data: Path, out: Path, *overrides: str):
    """The composed ``configs/train.yaml`` with a very small model and schedule."""
    from hydra import compose, initialize_config_dir

    base = ["~encoder", "+encoder.name=test-centroid", f"data={data}", f"out={out}",
            "device=cpu", "model.predictor.depth=1", "model.predictor.dim=32", "model.predictor.heads=2",
            "model.predictor.mlp_dim=64", "train.batch_size=32", "train.lr=1e-2", "train.warmup_steps=10",
            "train.log_every=5", "train.val_every=50", "train.ckpt_every=50", "train.val_batches=4",
            "train.eval_windows=128", "train.plot=false"]
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
        return compose("train", overrides=base + list(overrides))


def read_metrics(run: Path) -> list[dict]:
    with open(run / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


# --- tests ---------------------------------------------------------------------------------------
def test_cosine_schedule_warms_up_then_decays_to_floor():
    from mpc.training import cosine_schedule

    assert cosine_schedule(0, 10, 110, 0.1) == pytest.approx(0.1)
    assert cosine_schedule(9, 10, 110, 0.1) == pytest.approx(1.0)
    assert cosine_schedule(10, 10, 110, 0.1) == pytest.approx(1.0)
    assert cosine_schedule(60, 10, 110, 0.1) == pytest.approx(0.55)
    assert cosine_schedule(110, 10, 110, 0.1) == pytest.approx(0.1)


def test_train_learns_beats_copy_baseline_and_writes_run_folder(dataset, tmp_path):
    from mpc.training import train
    from mpc.world_model import WorldModel

    run = train(make_cfg(dataset, tmp_path / "run", "train.steps=200", "train.plot=true"))
    rows = read_metrics(run)
    losses = [float(r["train/loss"]) for r in rows if r.get("train/loss")]
    assert losses[-1] < 0.2 * losses[0]
    result = json.loads((run / "eval_metrics.json").read_text())
    assert result["horizon"] == 5 and len(result["ratio"]) == 5
    assert result["ratio_1step"] < 0.4 and result["ratio_5step"] < 0.5
    for name in ("config.yaml", "train.log", "loss_curve.png", "checkpoints/train_state.pt",
                 "checkpoints/model_latest.safetensors", "checkpoints/model_step_0000200.safetensors"):
        assert (run / name).is_file(), name
    assert list(run.glob("events.out.tfevents.*"))
    assert "val/loss" in rows[-1] and float(rows[-1]["val/loss"]) < losses[0]

    # the saved model is the trained one and reproduces the reported errors
    from mpc.data import WindowDataset
    from mpc.evaluation.open_loop import open_loop_errors

    model = WorldModel.load(run / "checkpoints" / "model_latest.safetensors")
    assert model.encoder_fingerprint == encoders.make_encoder("test-centroid").fingerprint
    val = WindowDataset(dataset, model.encoder_fingerprint, num_hist=3, num_pred=5, split="val")
    again = open_loop_errors(model, val, horizon=5, max_windows=128)
    assert again["ratio"] == pytest.approx(result["ratio"], rel=1e-4)


def test_resume_reproduces_uninterrupted_run(dataset, tmp_path):
    from mpc.training import train

    common = ("train.steps=20", "train.log_every=2", "train.val_every=10", "train.ckpt_every=10",
              "model.predictor.dropout=0.2")  # dropout: the restored RNG state matters
    full = train(make_cfg(dataset, tmp_path / "full", *common))
    part = train(make_cfg(dataset, tmp_path / "part", *common, "train.stop_at=10"))
    assert not (part / "eval_metrics.json").exists()
    assert max(int(r["step"]) for r in read_metrics(part)) == 10
    with pytest.raises(ValueError, match="resume=true"):
        train(make_cfg(dataset, tmp_path / "part", *common))
    train(make_cfg(dataset, tmp_path / "part", *common, "resume=true"))
    a, b = read_metrics(full), read_metrics(part)
    assert [r["step"] for r in a] == [r["step"] for r in b]
    for key in ("train/loss", "val/loss", "lr"):
        va = [float(r[key]) for r in a if r.get(key)]
        vb = [float(r[key]) for r in b if r.get(key)]
        assert len(va) == len(vb) > 0
        np.testing.assert_allclose(va, vb, rtol=0, atol=1e-6)
    # the training time counts the interrupted process's loop too
    whole, resumed = (json.loads((run / "eval_metrics.json").read_text()) for run in (full, part))
    assert whole["train_seconds_earlier"] == 0 and whole["train_seconds"] > 0
    assert 0 < resumed["train_seconds_earlier"] < resumed["train_seconds"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _first_step_grads(rank: int, world: int, port: int, data: str, out: str, result: str) -> None:
    """Join a gloo group (when world > 1), run one forward/backward, save rank 0's gradients."""
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
                       "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank)})
    torch.set_num_threads(1)
    from mpc.training import Trainer, setup_distributed

    ctx = setup_distributed("cpu")
    try:
        trainer = Trainer(make_cfg(Path(data), Path(out), "train.batch_size=16"), ctx)
        _, batch = next(trainer.batches(0))
        trainer.forward_backward(batch)
        if rank == 0:
            torch.save({n: p.grad.clone() for n, p in trainer.model.named_parameters()
                        if p.grad is not None}, result)
        ctx.barrier()  # leave together: rank 0 holds the store, it must not exit first
    finally:
        ctx.close()


def test_two_process_gloo_ddp_matches_single_process_gradients(dataset, tmp_path, monkeypatch):
    import torch.multiprocessing as mp

    for key in ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.setenv(key, "0")  # restored after the test; each process sets its own values
    single = tmp_path / "single.pt"
    _first_step_grads(0, 1, 0, str(dataset), str(tmp_path / "one"), str(single))
    double = tmp_path / "double.pt"
    mp.spawn(_first_step_grads, args=(2, _free_port(), str(dataset), str(tmp_path / "two"), str(double)),
             nprocs=2, join=True)
    g1, g2 = torch.load(single), torch.load(double)
    assert g1.keys() == g2.keys() and len(g1) > 0
    for name in g1:
        torch.testing.assert_close(g2[name], g1[name], rtol=1e-4, atol=1e-6, msg=name)


def test_cli_smoke_and_clear_errors(dataset, tmp_path, capsys):
    from mpc.commands.train import main as train_command
    from mpc.training import train

    out = tmp_path / "cli"
    rc = train_command(["~encoder", "+encoder.name=test-centroid", f"data={dataset}", f"out={out}",
                        "device=cpu", "train.steps=4", "train.log_every=2", "train.val_every=2",
                        "train.ckpt_every=2", "train.batch_size=8", "train.eval_windows=8",
                        "model.predictor.depth=1", "model.predictor.dim=16", "model.predictor.heads=2"])
    assert rc == 0
    assert "run folder" in capsys.readouterr().out
    assert (out / "eval_metrics.json").is_file() and (out / "config.yaml").is_file()
    assert sorted(p.name for p in (out / "checkpoints").glob("model_step_*")) == [
        "model_step_0000002.safetensors", "model_step_0000004.safetensors"]
    with pytest.raises(ValueError, match="model.num_tokens"):
        train(make_cfg(dataset, tmp_path / "bad", "model.num_tokens=196"))
    with pytest.raises(ValueError, match="multiple of the number of processes|fewer than one"):
        train(make_cfg(dataset, tmp_path / "big", "train.batch_size=100000"))
