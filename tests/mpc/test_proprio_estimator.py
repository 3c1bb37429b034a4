"""The proprio estimator: trained on a dataset it beats predicting the mean; periodic values wrap; its
file round-trips and refuses damage; the controller plans toward the proprio it reads from the goal image."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import envs
from mpc.controller import plan
from mpc.data import collect
from mpc.objectives import make_objective
from mpc.proprio_estimator import ESTIMATOR_FILE, ProprioEstimator, train_proprio_estimator, wrapped_error
from tests.conftest import SPEED, render_point
from tests.mpc.test_task import BlindModel

GYM_ID = "tests.mpc.fake_envs:FakeGoal-v0"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A FakeGoal dataset at 32 px (proprio = the square's position) and an estimator trained on it."""
    root = tmp_path_factory.mktemp("proprio")
    data = collect(env=GYM_ID, out=root / "data", episodes=24, steps=20, policy="colored-noise", seed=3,
                   image_size=32, progress=False)
    torch.manual_seed(0)
    est = train_proprio_estimator(data, root / "est", steps=250, batch_size=32, lr=3e-3, width=8,
                                  num_keypoints=8, hidden=64, val_fraction=0.2, progress=False)
    return data, root / "est", est


def test_trained_estimator_reads_the_position_far_better_than_the_mean(trained):
    import json

    _, folder, _ = trained
    m = json.loads((folder / "estimator.json").read_text())
    assert m["val_frames"] > 0 and m["periods"] == [None, None]  # FakeGoal declares nothing periodic
    mae, base = np.array(m["val_mae"]), np.array(m["val_mae_baseline"])
    assert np.all(mae < 0.35 * base), (mae, base)


def test_estimate_of_a_fresh_frame_is_close(trained):
    _, _, est = trained
    env = envs.make_env(GYM_ID, image_size=32)
    errs = []
    for seed in range(5):
        obs, info = env.reset(seed=10_000 + seed)  # never in the data
        errs.append(np.abs(est(obs["pixels"]).detach().numpy()[0] - info["state"][:2]))
        errs.append(np.abs(est(info["goal_image"]).detach().numpy()[0] - info["goal_proprio"]))
    assert float(np.mean(errs)) < 0.15  # the square moves over [-1, 1]


def test_file_round_trip_and_clear_errors(trained, tmp_path):
    _, folder, est = trained
    loaded = ProprioEstimator.load(folder / ESTIMATOR_FILE)
    x = (np.random.default_rng(0).random((3, 32, 32, 3)) * 255).astype(np.uint8)
    torch.testing.assert_close(loaded(x), est(x), atol=1e-5, rtol=1e-5)
    with pytest.raises(FileNotFoundError, match="train_proprio_estimator"):
        ProprioEstimator.load(tmp_path / "none.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes((folder / ESTIMATOR_FILE).read_bytes()[:200])
    with pytest.raises(ValueError, match="not a readable safetensors"):
        ProprioEstimator.load(bad)
    with pytest.raises(ValueError, match="32x32 images"):
        est(np.zeros((1, 16, 16, 3), np.uint8))
    with pytest.raises(ValueError, match="NaN"):
        est(torch.full((1, 3, 32, 32), float("nan")))


def test_periodic_values_come_back_wrapped_and_train_modulo_the_period():
    est = ProprioEstimator(32, 2, mean=[0.0, 0.0], std=[1.0, 1.0], periods=[2 * math.pi, None], width=8,
                           num_keypoints=4, hidden=16)
    theta = torch.tensor([0.5, 3.0, -3.0])
    true = torch.stack([theta + 2 * math.pi * torch.tensor([2.0, -1.0, 3.0]), torch.zeros(3)], dim=-1)  # unwrapped
    est._raw = lambda x: torch.stack([theta.cos(), theta.sin(), torch.zeros(3)], dim=-1)  # a perfect net
    out = est(torch.zeros(3, 3, 32, 32))
    torch.testing.assert_close(out[:, 0], theta)  # in [-pi, pi), whatever the winding
    assert float(est.loss(torch.zeros(3, 3, 32, 32), true)) < 1e-10
    aligned = est.align(torch.tensor([[3.0, 5.0], [-3.0 + 6 * math.pi, 5.0]]), torch.tensor([-3.0, 0.0]))
    torch.testing.assert_close(aligned, torch.tensor([[3.0 - 2 * math.pi, 5.0], [-3.0, 5.0]]))  # the short way round
    err = wrapped_error(np.array([[3.1, 0.0]]), np.array([[-3.1 + 4 * np.pi, 1.0]]), [2 * np.pi, None])
    np.testing.assert_allclose(err, [[2 * np.pi - 6.2, 1.0]], atol=1e-9)
    with pytest.raises(ValueError, match="periods must list 2"):
        ProprioEstimator(32, 2, periods=[1.0])


def test_reacher_declares_its_free_shoulder():
    assert envs.proprio_periods("reacher", 4) == [2 * math.pi, None, None, None]
    assert envs.proprio_periods("pointmass", 4) is None


class _PointReader(torch.nn.Module):
    """Reads the blob of ``render_point`` back to its position: a hand-made estimator."""

    proprio_dim, image_size = 2, 48

    def forward(self, images):
        img = torch.as_tensor(np.asarray(images)).float()[..., 0]            # (B, S, S)
        S = img.shape[-1]
        grid = (torch.arange(S) + 0.5) / S * 2 - 1
        w = img / img.sum(dim=(1, 2), keepdim=True)
        return torch.stack([(w.sum(1) * grid).sum(-1), (w.sum(2) * grid).sum(-1)], dim=-1)


def test_plan_reads_the_goal_proprio_from_the_goal_image():
    model, start, goal = BlindModel(), np.array([-0.3, 0.2], np.float32), np.array([0.3, -0.3], np.float32)
    obs = {"pixels": render_point(start), "proprio": start}
    opts = dict(model=model, horizon=3, samples=128, iterations=6, elites=10, seed=0,
                objective=make_objective("last", alpha=1.0))
    read = plan(obs, render_point(goal), proprio_estimator=_PointReader(), **opts)  # no goal_proprio given
    told = plan(obs, render_point(goal), goal_proprio=goal, **opts)
    for actions in (read, told):
        assert np.linalg.norm(start + SPEED * actions.sum(0) - goal) < 0.06
    with pytest.raises(ValueError, match="gives 3 values"):
        three = _PointReader()
        three.proprio_dim = 3
        plan(obs, render_point(goal), proprio_estimator=three, **opts)


def test_train_proprio_command(trained, tmp_path):
    import subprocess
    import sys

    data, _, _ = trained
    out = tmp_path / "cli"
    r = subprocess.run([sys.executable, "-m", "mpc.commands", "train-proprio", f"data={data}", f"out={out}", "steps=3",
                        "batch_size=8", "width=4", "num_keypoints=4", "hidden=8", "progress=false"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (out / ESTIMATOR_FILE).exists() and "validation error per proprio value" in r.stdout
    assert ProprioEstimator.load(out / ESTIMATOR_FILE).info["dataset"] == str(data)
