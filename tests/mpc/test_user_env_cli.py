"""A user's own gymnasium env, through ``wmpc collect`` -> ``wmpc train`` -> ``wmpc eval`` as a user runs them.

The env (:mod:`tests.mpc.contract_env`) follows only the observation contract and takes only the
arguments it declares; nothing tells wmpc about it but its gymnasium id. ``wmpc train`` gets the env
from the dataset and ``wmpc eval`` from the checkpoint, so neither is given ``env=``. The planner
must reach far more goals than random actions.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ENV_ID = "tests.mpc.contract_env:Beacon-v0"
ROOT = Path(__file__).resolve().parents[2]


def _start(cwd: Path, *args: str) -> tuple[subprocess.Popen, tuple[str, ...]]:
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.Popen([sys.executable, "-m", "mpc.commands", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return proc, args


def _finish(proc: subprocess.Popen, args: tuple[str, ...]) -> None:
    try:
        out, err = proc.communicate(timeout=900)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    assert proc.returncode == 0, f"wmpc {' '.join(args)} failed:\n{out[-2000:]}\n{err[-3000:]}"


def _wmpc(cwd: Path, *args: str) -> None:
    _finish(*_start(cwd, *args))


@pytest.mark.slow
def test_user_env_collect_train_eval_beats_random(tmp_path):
    common = ["episodes=10", "steps=30", "batch_envs=10", "videos=0", "progress=false"]
    # the random baseline needs no data or model: it runs beside collect (both mostly start-up)
    random_run = _start(tmp_path, "eval", f"env={ENV_ID}", "policy=random", "out=runs/random", *common)
    try:
        _wmpc(tmp_path, "collect", f"env={ENV_ID}", "episodes=40", "steps=30", "policy=colored-noise",
              "out=data/beacon", "progress=false")
    except BaseException:
        random_run[0].kill()
        raise
    _finish(*random_run)
    meta = json.loads((tmp_path / "data/beacon/dataset.json").read_text())
    assert meta["env"] == ENV_ID and meta["env_options"] == {} and meta["image_size"] == 32
    # a short schedule still plans far better than random (seeds 0-2 all reached 1.0 at these sizes)
    _wmpc(tmp_path, "train", "data=data/beacon", "encoder=jepa", "encoder.image_size=32", "model=tiny",
          "train=quick", "train.steps=150", "train.batch_size=32", "train.jepa_steps=40",
          "train.val_every=150", "train.plot=false", "out=runs/beacon")
    ckpt = tmp_path / "runs/beacon/checkpoints/model_latest.safetensors"
    _wmpc(tmp_path, "eval", f"checkpoint={ckpt}", "planner.samples=48", "planner.iterations=3",
          "planner.elites=6", "out=runs/plan", *common)
    planned = json.loads((tmp_path / "runs/plan/results.json").read_text())
    random = json.loads((tmp_path / "runs/random/results.json").read_text())
    assert planned["env"] == ENV_ID
    assert planned["success_rate"] >= random["success_rate"] + 0.5, (planned, random)
