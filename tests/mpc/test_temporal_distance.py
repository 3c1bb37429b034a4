"""The learned temporal distance: on a U-shaped corridor it measures the way round, not the straight line
through the wall, and beats the best constant; planning with it prefers progress along the corridor over a
frame by the wall; its file round-trips and refuses damage and another encoder's latent."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from mpc.controller import MPCController
from mpc.data import collect, encode_dataset, load_dataset
from mpc.objectives import make_objective
from mpc.temporal_distance import (DISTANCE_FILE, TemporalDistance, expectile_loss, fit_temporal_distance,
                                   train_temporal_distance)
from tests.conftest import LinearWorldModel

CORNERS = np.array([[0.0, 2.0], [2.0, 2.0], [2.0, 0.0], [0.0, 0.0]])  # a U: along the top, down, back


def u_point(s: np.ndarray) -> np.ndarray:
    """The point at path length ``s`` in [0, 6] along the U (its two ends lie 2 apart in the plane)."""
    s = np.clip(np.asarray(s, np.float64), 0, 6)
    seg = np.minimum((s // 2).astype(int), 2)
    t = (s - 2 * seg)[..., None] / 2
    return CORNERS[seg] * (1 - t) + CORNERS[seg + 1] * t


def u_tokens(s: np.ndarray, mix: np.ndarray) -> np.ndarray:
    """Latent frames ``(..., 1, 8)``: the point in the plane seen through a fixed linear map."""
    return (u_point(s) @ mix)[..., None, :].astype(np.float32)


def _walk(rng: np.random.Generator, steps: int) -> np.ndarray:
    """Path lengths of one episode: along the U at 0.15 per step, turning at its ends and now and then."""
    s, v, out = rng.uniform(0, 6), rng.choice([-0.15, 0.15]), []
    for _ in range(steps + 1):
        out.append(s)
        if rng.random() < 0.05:
            v = -v
        s += v + rng.normal(0, 0.02)
        if not 0 <= s <= 6:
            s, v = float(np.clip(s, 0, 6)), -v
    return np.array(out)


@pytest.fixture(scope="module")
def corridor():
    """60 episodes of 40 steps along the U and a distance fit to them (50 to fit, 10 held out)."""
    rng = np.random.default_rng(0)
    mix = np.linalg.qr(rng.normal(size=(8, 8)))[0][:, :2].T  # orthonormal rows: latent distances are the plane's
    lengths = np.full(60, 40)
    tokens = np.concatenate([u_tokens(_walk(rng, 40), mix) for _ in lengths])
    net, metrics = fit_temporal_distance(tokens, lengths, np.arange(50), np.arange(50, 60), "u-corridor",
                                         steps=800, batch_size=256, lr=3e-3, progress=False, dim=8, hidden=64)
    return net, metrics, mix


def test_distance_follows_the_corridor_round_the_wall(corridor):
    """Pairs of a frame on the top arm and one on the bottom arm: their straight-line distance says
    little of the way round (ends 2 apart, 6 along the U); the learned distance ranks them by it."""
    net, _, mix = corridor
    rng = np.random.default_rng(1)
    sa, sb = rng.uniform(0, 2, 2000), rng.uniform(4, 6, 2000)
    za, zb = torch.from_numpy(u_tokens(sa, mix)), torch.from_numpy(u_tokens(sb, mix))
    with torch.no_grad():
        learned = net(za, zb).numpy()
    path = np.abs(sa - sb)
    straight = np.linalg.norm(u_point(sa) - u_point(sb), axis=-1)
    rho_learned, rho_straight = spearmanr(learned, path).statistic, spearmanr(straight, path).statistic
    assert rho_learned > 0.8 and rho_straight < 0.5, (rho_learned, rho_straight)
    with torch.no_grad():  # the two ends: 2 apart through the wall, 6 round it
        ends = float(net(torch.from_numpy(u_tokens(0.0, mix)), torch.from_numpy(u_tokens(6.0, mix))))
        corner = float(net(torch.from_numpy(u_tokens(0.0, mix)), torch.from_numpy(u_tokens(2.0, mix))))
    assert ends > 2.0 * corner, (ends, corner)


def test_fit_beats_the_best_constant_on_held_out_episodes(corridor):
    _, m, _ = corridor
    assert m["val_episodes"] == 10 and m["val_pairs"] > 0
    assert m["val_loss"] < 0.6 * m["val_loss_constant"], m
    assert m["val_spearman"] > 0.5, m


def test_expectile_loss_weighs_overestimates_more_at_low_tau():
    target = torch.tensor([4.0])
    over, under = expectile_loss(torch.tensor([5.0]), target, 0.1), expectile_loss(torch.tensor([3.0]), target, 0.1)
    assert float(over) == pytest.approx(0.9) and float(under) == pytest.approx(0.1)


def test_objective_prefers_progress_round_the_corridor_to_the_wall(corridor):
    """From the U's start (s = 0) toward its other end (s = 6): staying by the wall (2.0 from the goal in a
    straight line, 6 round the U) against a frame past the first corner (s = 2.6: 2.44 in a straight line,
    3.4 round the U). The token MSE picks the wall; the temporal distance picks the corridor."""
    net, _, mix = corridor
    goal = torch.from_numpy(u_tokens(6.0, mix))[None]                      # (B=1, N, D)
    cands = torch.from_numpy(u_tokens(np.array([0.0, 2.6]), mix))          # (S=2, N, D)
    z_pred = cands[None, :, None]                                          # (1, 2, H=1, N, D)
    mse = make_objective("last")(z_pred, goal)
    learned = make_objective("last", distance=net)(z_pred, goal)
    assert int(mse.argmin()) == 0 and int(learned.argmin()) == 1
    with torch.no_grad():  # the cost is the squared estimated steps
        torch.testing.assert_close(learned[0], net(cands, goal[0]) ** 2, rtol=1e-5, atol=1e-5)
    # a 3-step rollout costs its last frame only (mode last), and gradients reach the actions' frames
    z3 = torch.from_numpy(u_tokens(np.array([[0.2, 1.0, 2.6]]), mix))[None].requires_grad_(True)  # (1, 1, 3, 1, 8)
    c = make_objective("last", distance=net)(z3, goal)
    torch.testing.assert_close(c, make_objective("last", distance=net)(z3[:, :, -1:], goal))
    c.sum().backward()
    assert z3.grad[:, :, -1].abs().sum() > 0 and z3.grad[:, :, :-1].abs().sum() == 0


def test_file_round_trip_clear_errors_and_the_encoder_check(corridor, tmp_path):
    net, _, mix = corridor
    path = net.save(tmp_path / DISTANCE_FILE)
    loaded = TemporalDistance.load(path)
    z = torch.from_numpy(u_tokens(np.linspace(0, 6, 7), mix))
    torch.testing.assert_close(loaded.embed(z), net.embed(z), atol=1e-6, rtol=1e-6)
    assert loaded.fingerprint == "u-corridor"
    with pytest.raises(FileNotFoundError, match="wmpc train-distance"):
        TemporalDistance.load(tmp_path / "none.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ValueError, match="not a readable safetensors"):
        TemporalDistance.load(bad)
    from safetensors.torch import save_file
    save_file({"w": torch.zeros(1)}, str(bad), metadata={"wmpc_temporal_distance": "{not json"})
    with pytest.raises(ValueError, match="corrupt temporal distance header"):
        TemporalDistance.load(bad)
    with pytest.raises(ValueError, match="1 x 8 tokens"):
        net.embed(torch.zeros(3, 2, 8))
    # a world model of another latent is refused with what to do: other tokens, or another encoder
    class Other(LinearWorldModel):
        num_tokens, token_dim, encoder_fingerprint = 1, 2, "u-corridor"

    with pytest.raises(ValueError, match="train one with `wmpc train-distance"):
        MPCController(Other(), "cem", make_objective("last", distance=path), horizon=2)
    Other.num_tokens, Other.token_dim, Other.encoder_fingerprint = 1, 8, "another encoder"
    with pytest.raises(ValueError, match="another encoder"):
        MPCController(Other(), "cem", make_objective("last", distance=path), horizon=2)
    Other.encoder_fingerprint = "u-corridor"
    MPCController(Other(), "cem", make_objective("last", distance=path), horizon=2)  # its own latent: accepted
    with pytest.raises(ValueError, match="tau must lie in"):
        fit_temporal_distance(np.zeros((4, 1, 2), np.float32), [3], [0], tau=1.5)


def test_train_from_a_dataset_cache_writes_the_file_and_its_figures(tmp_path):
    from tests.mpc.test_data import FakeEncoder

    data = collect(env="tests.mpc.fake_envs:FakeGoal-v0", out=tmp_path / "data", episodes=6, steps=12,
                   policy="colored-noise", seed=0, image_size=16, progress=False)
    enc = FakeEncoder(image_size=16, seed=0)
    encode_dataset(data, enc, progress=False)
    net = train_temporal_distance(data, enc, tmp_path / "dist", steps=30, batch_size=64, progress=False, hidden=16)
    m = json.loads((tmp_path / "dist" / "distance.json").read_text())
    assert m["train_episodes"] + m["val_episodes"] == len(load_dataset(data)) and m["steps"] == 30
    loaded = TemporalDistance.load(tmp_path / "dist" / DISTANCE_FILE)
    assert loaded.fingerprint == enc.fingerprint and loaded.info["env"] == "tests.mpc.fake_envs:FakeGoal-v0"
    z = torch.randn(2, net.num_tokens, net.token_dim)
    torch.testing.assert_close(loaded.embed(z), net.embed(z), atol=1e-6, rtol=1e-6)
