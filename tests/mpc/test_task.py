"""What planning needs of the task: stored action bounds and image size, proprio-free models, goal proprio.

Real tiny WorldModels (with a small pooling encoder) go through ``plan`` and ``MPCController``;
the goal-proprio case is a constructed model whose images say nothing and whose proprio says all.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn as nn

from encoders.base import Encoder
from mpc.checkpoint import TaskInfo, task_from_dataset_meta
from mpc.controller import MPCController, plan
from mpc.objectives import make_objective
from mpc.world_model import WorldModel, config_from_preset
from tests.conftest import SPEED, render_point

N, D, A = 4, 8, 2
SMALL = {"samples": 32, "iterations": 3, "elites": 4}


class PoolEncoder(Encoder):
    """Average colour of 4 image quadrants, tiled to D: (B, 4, 8) tokens, no weights to train."""

    backend, variant = "pool", "t"

    def __init__(self):
        super().__init__(image_size=16)

    num_tokens = property(lambda self: N)
    dim = property(lambda self: D)

    def forward_tokens(self, x):
        q = nn.functional.adaptive_avg_pool2d(x, 2).flatten(2).transpose(1, 2)  # (B, 4, 3)
        return torch.cat([q, q, q[..., :2]], -1)                                # (B, 4, 8)


def tiny_model(proprio_dim=2, seed=0, **task) -> WorldModel:
    cfg = config_from_preset("tiny", num_tokens=N, token_dim=D, env_action_dim=A, proprio_dim=proprio_dim)
    torch.manual_seed(seed)
    model = WorldModel(cfg, encoder=PoolEncoder()).eval()
    if task:
        model.set_task(**task)
    return model


def images(size=48, n=2):
    return [render_point(np.array(p), size) for p in ([-0.5, -0.5], [0.5, 0.4])[:n]]


# --- the task record --------------------------------------------------------------------------
def test_checkpoint_keeps_the_task(tmp_path):
    meta = {"env": "wall", "env_options": {"image_size": 48, "action_repeat": 2, "door_width": 0.2},
            "action_low": [0.0, -0.5], "action_high": [2.0, 0.5], "episodes": 3}
    model = tiny_model()
    model.set_task(task_from_dataset_meta(meta))
    loaded = WorldModel.load(model.save(tmp_path / "m.safetensors"), encoder=PoolEncoder())
    assert loaded.task == model.task
    assert loaded.action_low.dtype == np.float32 and loaded.action_low.tolist() == [0.0, -0.5]
    assert loaded.action_high.tolist() == [2.0, 0.5]
    assert loaded.image_size == 48 and loaded.env == "wall"
    assert loaded.env_options == {"image_size": 48, "action_repeat": 2, "door_width": 0.2}
    assert WorldModel.read_header(tmp_path / "m.safetensors")["task"]["env"] == "wall"


def test_checkpoint_without_a_task_loads_with_nothing_known(tmp_path):
    from safetensors.torch import load_file, save_file

    path = tiny_model().save(tmp_path / "m.safetensors")
    header = WorldModel.read_header(path)
    del header["task"]  # as written before checkpoints stored the task
    old = tmp_path / "old.safetensors"
    save_file(load_file(path), str(old), metadata={"wmpc_world_model": json.dumps(header)})
    model = WorldModel.load(old, encoder=PoolEncoder())
    assert model.task == TaskInfo()
    assert (model.action_low, model.action_high, model.image_size, model.env, model.env_options) == (None,) * 5
    # planning then falls back to [-1, 1] (with a warning) unless the caller passes action_space
    assert MPCController(model).action_space.high.tolist() == [1.0, 1.0]


@pytest.mark.parametrize("bad,match", [
    ({"action_low": [0.0, 0.0]}, "both"),
    ({"action_low": [0.0], "action_high": [1.0, 1.0]}, "same length"),
    ({"action_low": [1.0, 0.0], "action_high": [0.0, 1.0]}, "<="),
    ({"action_low": [0.0, -np.inf], "action_high": [1.0, 1.0]}, "finite"),
    ({"action_low": [0.0, 0.0, 0.0], "action_high": [1.0, 1.0, 1.0]}, "A=2"),
    ({"image_size": 0}, "image_size"),
    ({"image_size": 31.5}, "image_size"),
])
def test_set_task_rejects_bad_values(bad, match):
    with pytest.raises(ValueError, match=match):
        tiny_model().set_task(**bad)


def test_set_task_takes_a_task_or_fields_not_both():
    model = tiny_model()
    with pytest.raises(TypeError, match="not both"):
        model.set_task(TaskInfo(image_size=8), image_size=8)
    with pytest.raises(TypeError):
        model.set_task(colour="red")
    with pytest.raises(ValueError, match="unknown task fields"):
        TaskInfo.from_dict({"image_size": 8, "colour": "red"})


def test_plan_without_action_space_uses_the_stored_bounds(linear_model):
    """Bounds [0, 2]: a far goal up and right is reached only with actions above 1."""
    linear_model.action_low, linear_model.action_high = np.zeros(2), np.full(2, 2.0)
    start, goal = np.array([-0.6, -0.6]), np.array([0.6, 0.6])  # 1.2 = 3 steps of SPEED * 2
    actions = plan(render_point(start), render_point(goal), model=linear_model, horizon=3,
                   samples=256, iterations=8, elites=16)
    assert actions.min() >= 0.0 and actions.max() <= 2.0
    assert actions.mean() > 1.5  # in [-1, 1] the mean could be 1 at most
    end = start + SPEED * actions.sum(0)
    assert np.linalg.norm(end - goal) < 0.1


def test_real_model_plans_inside_its_stored_bounds():
    model = tiny_model(action_low=[0.0, 0.0], action_high=[2.0, 2.0])
    ctrl = MPCController(model, horizon=2, planner_options=SMALL)
    assert ctrl.action_space.low.tolist() == [0.0, 0.0] and ctrl.action_space.high.tolist() == [2.0, 2.0]
    obs, goal = images()
    actions = plan({"pixels": obs, "proprio": np.zeros(2, np.float32)}, goal, model=model, horizon=2, **SMALL)
    assert actions.shape == (2, 2) and actions.min() >= 0.0 and actions.max() <= 2.0


def test_images_of_another_size_than_the_models_are_refused():
    model = tiny_model(image_size=32)
    obs48, goal48 = images(48)
    obs32, goal32 = images(32)
    p = np.zeros(2, np.float32)
    with pytest.raises(ValueError, match=r"observation image is 48x48 .* trained on 32x32"):
        plan({"pixels": obs48, "proprio": p}, goal48, model=model, horizon=2, **SMALL)
    ctrl = MPCController(model, horizon=2, planner_options=SMALL)
    with pytest.raises(ValueError, match=r"goal image is 48x48 .* trained on 32x32.*image_size=32"):
        ctrl.act({"pixels": obs32, "proprio": p}, np.stack([goal48]))
    assert ctrl.act({"pixels": obs32, "proprio": p}, goal32).shape == (2,)


# --- proprio-free models ------------------------------------------------------------------------
def test_proprio_free_model_plans_through_plan_and_the_controller():
    model = tiny_model(proprio_dim=0)
    obs, goal = images()
    a = plan(obs, goal, model=model, horizon=3, action_space=None, **SMALL)  # the image alone
    assert a.shape == (3, 2) and np.all(np.isfinite(a))
    b = plan({"pixels": np.stack([obs, obs]), "proprio": np.zeros((2, 5), np.float32)},  # proprio ignored
             goal, model=model, horizon=3, **SMALL)
    assert b.shape == (2, 3, 2)
    ctrl = MPCController(model, horizon=3, planner_options=SMALL)
    for _ in range(4):  # fills the context past num_hist = 3 frames
        assert ctrl.act(obs, goal).shape == (2,)
    with pytest.raises(ValueError, match="predicts no proprio"):
        MPCController(model, objective=make_objective("last", alpha=1.0))


# --- goal proprio -------------------------------------------------------------------------------
class BlindModel(nn.Module):
    """Images say nothing (constant tokens); proprio is a point moved by SPEED * action per step."""

    action_dim, proprio_dim, num_hist, frameskip, image_size = 2, 2, 1, 1, None
    action_low, action_high = -np.ones(2), np.ones(2)

    def __init__(self):
        super().__init__()
        self._anchor = nn.Parameter(torch.zeros(1), requires_grad=False)

    def encode(self, images):
        return torch.zeros(len(np.asarray(images)), 1, 2)

    def rollout(self, z_context, proprio_context, actions, past_actions=None):
        B, S, H = actions.shape[:3]
        p = proprio_context[:, -1][:, None, None] + SPEED * torch.cumsum(actions, dim=2)  # (B, S, H, 2)
        return z_context[:, -1][:, None, None].expand(B, S, H, 1, 2), p


def test_goal_proprio_steers_where_images_cannot():
    model, start, goal = BlindModel(), np.array([-0.3, 0.2], np.float32), np.array([0.3, -0.3], np.float32)
    obs = {"pixels": render_point(start), "proprio": start}
    opts = dict(model=model, horizon=3, samples=128, iterations=6, elites=10, seed=0)
    blind = plan(obs, render_point(goal), objective="last", **opts)
    steered = plan(obs, render_point(goal), objective=make_objective("last", alpha=1.0), goal_proprio=goal, **opts)
    miss_blind = np.linalg.norm(start + SPEED * blind.sum(0) - goal)
    miss_steered = np.linalg.norm(start + SPEED * steered.sum(0) - goal)
    assert miss_steered < 0.05 and miss_steered < miss_blind / 4
    with pytest.raises(ValueError, match="pass goal_proprio"):
        plan(obs, render_point(goal), objective=make_objective("last", alpha=1.0), **opts)
    with pytest.raises(ValueError, match=r"goal_proprio must be \(P,\)"):
        plan(obs, render_point(goal), objective=make_objective("last", alpha=1.0), goal_proprio=np.zeros(3), **opts)


def test_goal_proprio_reaches_the_objective_of_a_real_model():
    model = tiny_model()
    obs, goal = images()
    o = {"pixels": obs, "proprio": np.zeros(2, np.float32)}
    costs = []
    for alpha, gp in ((0.0, None), (5.0, np.array([3.0, -3.0], np.float32))):
        ctrl = MPCController(model, objective=make_objective("last", alpha=alpha), horizon=2, planner_options=SMALL)
        ctrl.act(o, goal, goal_proprio=gp)
        costs.append(float(ctrl.last_plan_info["cost"][0]))
    assert costs[1] > costs[0]  # the proprio term adds a positive cost (the goal's proprio is far)
