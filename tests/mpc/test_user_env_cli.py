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


def _wmpc(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    r = subprocess.run([sys.executable, "-m", "mpc.commands", *args], cwd=cwd, env=env,
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, f"wmpc {' '.join(args)} failed:\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}"
    return r


@pytest.mark.slow
def test_user_env_collect_train_eval_beats_random(tmp_path):
    _wmpc(tmp_path, "collect", f"env={ENV_ID}", "episodes=40", "steps=30", "policy=colored-noise",
          "out=data/beacon", "progress=false")
    meta = json.loads((tmp_path / "data/beacon/dataset.json").read_text())
    assert meta["env"] == ENV_ID and meta["env_options"] == {} and meta["image_size"] == 32
    _wmpc(tmp_path, "train", "data=data/beacon", "encoder=jepa", "encoder.image_size=32", "model=tiny",
          "train=quick", "train.steps=300", "train.batch_size=32", "train.jepa_steps=150",
          "train.val_every=300", "train.plot=false", "out=runs/beacon")
    ckpt = tmp_path / "runs/beacon/checkpoints/model_latest.safetensors"
    common = ["episodes=10", "steps=30", "batch_envs=10", "videos=0", "progress=false"]
    _wmpc(tmp_path, "eval", f"checkpoint={ckpt}", "planner.samples=48", "planner.iterations=3",
          "planner.elites=6", "out=runs/plan", *common)
    _wmpc(tmp_path, "eval", f"env={ENV_ID}", "policy=random", "out=runs/random", *common)
    planned = json.loads((tmp_path / "runs/plan/results.json").read_text())
    random = json.loads((tmp_path / "runs/random/results.json").read_text())
    assert planned["env"] == ENV_ID
    assert planned["success_rate"] >= random["success_rate"] + 0.5, (planned, random)
