"""benchmarks.true_dynamics: the planner and its cost with the env itself as the model."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import encoders
import envs
from benchmarks import true_dynamics
from mpc.world_model import WorldModel, config_from_preset


def _tiny_model(env: str, proprio_dim: int, size: int = 28) -> WorldModel:
    """An untrained tiny_mlp model over a random-weight DINOv2 (pooled token), its task set to ``env``."""
    opts = {"weights": "random", "image_size": size, "tokens": "pooled"}
    enc = encoders.make_encoder("dinov2", **opts)
    cfg = config_from_preset("tiny_mlp", num_tokens=1, token_dim=enc.dim, env_action_dim=2,
                             proprio_dim=proprio_dim, encoder="dinov2", encoder_options=opts)
    model = WorldModel(cfg, encoder=enc)
    model.set_task(action_low=[-1.0, -1.0], action_high=[1.0, 1.0], image_size=size, env=env,
                   env_options={"image_size": size})
    return model.eval()


def test_the_goal_making_push_costs_nothing_and_the_env_is_left_as_it_was():
    """Push-T's goal is made by a recorded push: replayed in the copy it reaches the goal exactly, so its
    latent and state costs are 0 while random candidates cost more; the evaluation env is untouched."""
    model = _tiny_model("pusht", proprio_dim=4)
    opts = {"image_size": 28, "start": "pushing", "goal_steps": 5, "action_repeat": 5}
    env, shadow = envs.make_env("pusht", **opts), envs.make_env("pusht", **opts)
    _, info = env.reset(seed=3)
    push = np.asarray(env.unwrapped._plan, np.float32)                       # (5, 2) the goal-making actions
    rand = np.random.default_rng(0).uniform(-1, 1, (7, 5, 2)).astype(np.float32)
    cand = torch.as_tensor(np.concatenate([push[None], rand]))[None]         # (1, 8, 5, 2)
    before = env.unwrapped.get_state()
    for kind in ("latent", "state"):
        cost = true_dynamics.TrueDynamicsCost(env, shadow, model, kind, alpha=0.001,
                                              proprio_weights=[1, 1, 0, 0])
        cost.set_goal(info)
        c = cost(cand)[0].numpy()
        assert c.shape == (8,) and c[0] == pytest.approx(0.0, abs=1e-6), kind
        assert (c[1:] > 1e-4).all(), kind
    np.testing.assert_array_equal(env.unwrapped.get_state(), before)
    wrong = true_dynamics.TrueDynamicsCost(env, shadow, model, "latent", alpha=0.001, proprio_weights=[1, 1, 0])
    with pytest.raises(ValueError, match="proprio_weights has 3 values"):
        wrong.set_goal(info)


def test_the_planner_on_the_true_dynamics_reaches_pointmass_goals(tmp_path, capsys):
    """With a perfect model and the env's own distance as cost, CEM reaches every goal of a short run;
    the command prints one line per cost."""
    path = _tiny_model("pointmass", proprio_dim=4).save(tmp_path / "pm.safetensors")
    assert true_dynamics.main([str(path), "--cost", "state", "--episodes", "2", "--steps", "40"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("true dynamics, state cost") and "success 1.00" in line, line


def test_the_true_dynamics_planner_searches_only_the_action_bound(tmp_path):
    """``action_bound`` shrinks the box the planner searches, as in wmpc eval: a sliver of it cannot carry
    the point to the goals the whole box reaches in the same steps, and the record names the bound."""
    model = _tiny_model("pointmass", proprio_dim=4)
    common = dict(episodes=2, steps=40, progress=False, planner_options={"samples": 64, "iterations": 4, "elites": 8})
    whole = true_dynamics.run(model, "pointmass", "state", **common)
    sliver = true_dynamics.run(model, "pointmass", "state", action_bound=0.02, **common)
    assert whole["success_rate"] == 1.0 and whole["action_bound"] == 1.0
    assert sliver["success_rate"] == 0.0 and sliver["action_bound"] == 0.02
    assert sliver["mean_final_distance"] > 3 * whole["mean_final_distance"]


def test_an_env_that_cannot_restore_states_is_refused():
    class Plain:
        unwrapped = object()

    with pytest.raises(TypeError, match="restores states"):
        true_dynamics.TrueDynamicsCost(Plain(), Plain(), _tiny_model("pointmass", 4))


def test_oracle_rank_scores_the_goal_making_push_and_the_plan_where_they_lead(capsys, tmp_path):
    """Push-T's oracle replays the push that made the goal: it ends on the goal (distance 0). A plan kept to
    a sliver of the action box barely moves, so it ends about as far as it started; both costs are the
    model's planning cost of the sequence, and the command prints one summary line."""
    model = _tiny_model("pusht", proprio_dim=4)
    opts = {"image_size": 28, "start": "pushing", "goal_steps": 5, "action_repeat": 5}
    model.set_task(action_low=[-1.0, -1.0], action_high=[1.0, 1.0], image_size=28, env="pusht", env_options=opts)
    r = true_dynamics.oracle_rank(model, episodes=2, planner_options={"samples": 8, "iterations": 2, "elites": 2},
                                  alpha=0.001, proprio_weights=[1, 1, 0, 0], action_bound=0.01, progress=False)
    assert r["episodes"] == 2 and len(r["rows"]) == 2 and r["oracle_success"] == 1.0 and r["plan_success"] == 0.0
    env = envs.make_env("pusht", **opts)
    for row in r["rows"]:
        _, info = env.reset(seed=1_000_000 + row["episode"])
        assert row["oracle_distance"] == pytest.approx(0.0, abs=1e-6)
        assert row["plan_distance"] == pytest.approx(info["distance"], rel=0.05)  # it hardly moved
        assert np.isfinite([row["oracle_cost"], row["plan_cost"]]).all() and row["oracle_cost"] != row["plan_cost"]
    assert r["oracle_cheaper"] == np.mean([x["oracle_cost"] < x["plan_cost"] for x in r["rows"]])
    path = model.save(tmp_path / "pt.safetensors")
    assert true_dynamics.main([str(path), "--oracle-rank", "--episodes", "1", "--samples", "8", "--iterations", "1",
                               "--elites", "2"]) == 0
    assert "rates the oracle below its plan in" in capsys.readouterr().out
