"""Faults: ``kill -9`` during ``wmpc train-encoder``, ``wmpc encode`` and ``wmpc train``, then run again.

Each test starts the command as a subprocess on the tiny ``dots`` dataset of
``tests/encoders/test_trainable.py`` (a ``vae`` of 16 px, one token of 8 dims, with random frozen
weights for ``encode`` and ``train``; a ``tiny_mlp`` world model), waits until it has saved a step
drawn from a seeded generator, sends ``SIGKILL`` at a seeded random moment of the next save
interval, checks that every file left on disk reads back, adds the temporary file a kill inside a
write leaves, then runs the same command again (``resume=true`` for ``train``). The second run must
exit 0 and leave only readable files and no temporary files; a resumed ``train`` must log, row by
row, the losses of an uninterrupted run (made in this process with the config ``wmpc train``
composes).
"""
from __future__ import annotations

import csv
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import h5py
import numpy as np
import pytest
import torch
import yaml

from mpc._io import is_temp_file
from tests.encoders.test_trainable import write_dot_dataset

ROOT = Path(__file__).resolve().parents[2]
SEED = 2026  # seeds every kill moment below
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
       "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}  # tiny models: one thread is fastest
ENCODER = ["encoder=vae", "encoder.image_size=16", "encoder.dim=8", "encoder.width=8"]
FROZEN = [*ENCODER, "encoder.weights=random"]  # a frozen vae for encode and train (no training first)


# --- helpers -------------------------------------------------------------------------------------
def wmpc(command: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "mpc.commands", command, "device=cpu", *args]


def leave_temp_file(path: Path) -> None:
    """What a kill in the middle of an atomic write leaves beside ``path`` (mpc._io.temp_path)."""
    path.with_name(f".{path.stem}.99999.tmp{path.suffix}").write_bytes(b"half a file")


def run(argv: list[str], log: Path, timeout: float = 120) -> None:
    """Run ``argv`` to completion; fail with its output unless it exits 0."""
    with open(log, "w") as f:
        rc = subprocess.run(argv, env=ENV, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, timeout=timeout).returncode
    assert rc == 0, f"{' '.join(argv[3:5])} exited {rc}:\n{log.read_text()[-3000:]}"


def run_and_kill(argv: list[str], log: Path, progress: Callable[[], int], at: int, fraction: float,
                 timeout: float = 120) -> None:
    """Start ``argv`` and SIGKILL it ``fraction`` of a save interval after its save at step ``at``.

    ``progress()`` is the step of the last thing the command saved. The save interval is timed as
    the wait from the first save at or after ``at`` to the next one, so the kill lands at a random
    moment of the interval that follows (inside a write or between writes) whatever the speed of
    the machine, and well before the command ends.
    """
    with open(log, "w") as f:
        proc = subprocess.Popen(argv, env=ENV, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)
    deadline = time.time() + timeout

    def wait_for(step: int) -> int:
        while (reached := progress()) < step:
            assert proc.poll() is None, f"it ended (exit {proc.returncode}) before the kill:\n{log.read_text()[-3000:]}"
            assert time.time() < deadline, "no progress before the timeout"
            time.sleep(0.002)
        return reached

    try:
        reached = wait_for(at)
        t0 = time.time()
        wait_for(reached + 1)
        time.sleep(fraction * (time.time() - t0))
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "it finished before the kill; give it more work"


def check_files(folder: Path, *, temp_ok: bool) -> None:
    """Every file under ``folder`` reads back whole; temporary files only where ``temp_ok``."""
    from safetensors.torch import load_file
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    for p in sorted(folder.rglob("*")):
        if not p.is_file():
            continue
        if is_temp_file(p.name):  # ours (.<stem>.<pid>.tmp<suffix>) or safetensors' (.tmpXXXXXX)
            assert temp_ok, f"temporary file left behind: {p}"
        elif p.suffix == ".safetensors":
            assert load_file(p)
        elif p.suffix == ".h5":
            with h5py.File(p, "r") as f:
                assert bool(f.attrs["complete"]), p
                f.visititems(lambda _, obj: obj[()] if isinstance(obj, h5py.Dataset) else None)  # checksums
        elif p.suffix == ".json":
            json.loads(p.read_text())
        elif p.suffix == ".yaml":
            yaml.safe_load(p.read_text())
        elif p.suffix == ".csv":
            with open(p, newline="") as f:
                rows = list(csv.reader(f))
            assert len({len(r) for r in rows}) == 1, f"ragged {p}"
        elif p.suffix == ".pt":
            torch.load(p, weights_only=False)
        elif p.suffix == ".png":
            import imageio.v3 as iio
            assert iio.imread(p).size
        elif p.name.startswith("events.out.tfevents."):
            list(EventFileLoader(str(p)).Load())  # append-only: a cut last record is skipped
        else:
            assert p.suffix == ".log" or p.name == ".lock", f"unexpected file {p}"  # append-only text; a lock


def encoder_step(out: Path) -> int:
    """The step of ``wmpc train-encoder``'s last checkpoint (its ``train_log.json``); -1 before it."""
    try:
        return int(json.loads((out / "train_log.json").read_text())["step"])
    except (FileNotFoundError, ValueError, KeyError):
        return -1


def train_step(run_dir: Path) -> int:
    """The step of ``wmpc train``'s last checkpoint (``model_step_N``); -1 before the first."""
    return max((int(p.stem.rsplit("_", 1)[1]) for p in (run_dir / "checkpoints").glob("model_step_*")), default=-1)


# --- fixtures ------------------------------------------------------------------------------------
pytestmark = pytest.mark.usefixtures("one_thread")  # tests/mpc/conftest.py


@pytest.fixture(scope="module")
def dots(tmp_path_factory) -> Path:
    return write_dot_dataset(tmp_path_factory.mktemp("faults") / "dots", episodes=40, steps=20)


# --- tests ---------------------------------------------------------------------------------------
def test_train_encoder_killed_then_run_again_completes(dots, tmp_path):
    rng = random.Random(f"{SEED}-train-encoder")
    out = tmp_path / "enc"
    argv = wmpc("train-encoder", *ENCODER, f"data={dots}", f"out={out}", "progress=false", "steps=40",
                "batch_size=16", "save_every=5")
    run_and_kill(argv, tmp_path / "killed.log", lambda: encoder_step(out), rng.randrange(5, 20), rng.random())
    check_files(out, temp_ok=True)
    leave_temp_file(out / "encoder.safetensors")
    run(argv, tmp_path / "again.log")
    check_files(out, temp_ok=False)
    log = json.loads((out / "train_log.json").read_text())
    assert log["step"] == 40 and len(log["loss"]) == 40


def test_encode_killed_then_run_again_completes(dots, tmp_path):
    import shutil

    rng = random.Random(f"{SEED}-encode")
    data = tmp_path / "dots"
    shutil.copytree(dots, data, ignore=shutil.ignore_patterns("latents"))
    argv = wmpc("encode", *FROZEN, f"data={data}", "progress=false", "batch_size=1")
    run_and_kill(argv, tmp_path / "killed.log", lambda: len(list(data.glob("latents/*/episode_*.h5"))),
                 rng.randrange(1, 10), rng.random())
    done = len(list(data.glob("latents/*/episode_*.h5")))
    assert done < 40, "the kill should land mid-encoding"
    check_files(data, temp_ok=True)
    (cache,) = data.glob("latents/*")
    leave_temp_file(cache / f"episode_{done:06d}.h5")
    run(argv, tmp_path / "again.log")
    check_files(data, temp_ok=False)
    assert sorted(p.name for p in cache.glob("episode_*.h5")) == [f"episode_{i:06d}.h5" for i in range(40)]


def test_train_killed_then_resumed_logs_the_uninterrupted_losses(dots, tmp_path):
    from hydra import compose, initialize_config_dir

    from mpc.commands.cli import CONFIG_DIR
    from mpc.training import train

    rng = random.Random(f"{SEED}-train")
    common = [*FROZEN, f"data={dots}", "model=tiny_mlp",
              "model.predictor.mlp_dim=32", "model.predictor.dropout=0.1",  # dropout: RNG state matters
              "train.steps=60", "train.batch_size=16", "train.warmup_steps=10", "train.log_every=12",
              "train.val_every=24", "train.ckpt_every=5", "train.val_batches=2", "train.eval_windows=16",
              "train.plot=false"]  # most checkpoints land mid-way between metrics rows
    full, part = tmp_path / "full", tmp_path / "part"
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):  # what `wmpc train` composes
        cfg = compose("train", overrides=[*common, "device=cpu", f"out={full}"])
    train(cfg)  # the uninterrupted run, in this process (one start-up less); it fills the latent cache
    run_and_kill(wmpc("train", *common, f"out={part}"), tmp_path / "killed.log", lambda: train_step(part),
                 rng.randrange(5, 35, 5), rng.random())
    check_files(part, temp_ok=True)
    leave_temp_file(part / "checkpoints" / "train_state.pt")
    leave_temp_file(part / "metrics.csv")
    run(wmpc("train", *common, f"out={part}", "resume=true"), tmp_path / "resumed.log")
    check_files(part, temp_ok=False)
    check_files(full, temp_ok=False)

    def metrics(run_dir):
        with open(run_dir / "metrics.csv", newline="") as f:
            return list(csv.DictReader(f))

    a, b = metrics(full), metrics(part)
    assert [r["step"] for r in a] == [r["step"] for r in b] == ["12", "24", "36", "48", "60"]
    for key in [k for k in a[0] if k != "samples_per_s"]:  # every loss and metric, lr and epoch
        va = [float(r[key]) if r.get(key) else np.nan for r in a]
        vb = [float(r[key]) if r.get(key) else np.nan for r in b]
        np.testing.assert_allclose(vb, va, rtol=1e-6, atol=1e-7, err_msg=key)
    ratios = [json.loads((d / "eval_metrics.json").read_text())["ratio"] for d in (full, part)]
    np.testing.assert_allclose(ratios[1], ratios[0], rtol=1e-5)


def test_remove_temp_files_clears_ours_and_safetensors_leftovers_only(tmp_path):
    """A kill can leave our ``.<stem>.<pid>.tmp<suffix>`` or the ``.tmpXXXXXX`` safetensors writes before its
    rename; both go on resume, nothing else does."""
    from mpc._io import remove_temp_files

    names = {".model.4242.tmp.safetensors": False, ".tmpLrx2qi": False, ".lock": True, "model.safetensors": True,
             ".tmp_notes.txt": True, "train.log": True}
    for n in names:
        (tmp_path / n).write_text("x")
    assert remove_temp_files(tmp_path) == 2
    assert {p.name for p in tmp_path.iterdir()} == {n for n, kept in names.items() if kept}
