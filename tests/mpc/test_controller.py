import gymnasium as gym
import numpy as np
import pytest

from mpc.controller import MPCController, plan
from tests.conftest import PointEnv, render_point

BOX = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)


@pytest.mark.parametrize("replan_every", [1, 2])
def test_controller_drives_linear_system_to_goal(linear_model, replan_every):
    starts = np.array([[-0.6, -0.5], [0.5, 0.6], [0.0, 0.7]])
    goals = np.array([[0.5, 0.4], [-0.6, -0.3], [0.1, -0.6]])
    envs = [PointEnv(s, g) for s, g in zip(starts, goals)]
    goal_imgs = np.stack([render_point(g) for g in goals])
    ctrl = MPCController(linear_model, "cem", horizon=4, replan_every=replan_every, action_space=BOX,
                         planner_options={"samples": 64, "iterations": 5, "elites": 8})
    obs = [e.obs() for e in envs]
    for _ in range(15):
        batch = {"pixels": np.stack([o["pixels"] for o in obs]), "proprio": np.stack([o["proprio"] for o in obs])}
        actions = ctrl.act(batch, goal_imgs)
        assert actions.shape == (3, 2) and np.all(np.abs(actions) <= 1.0)
        obs = [e.step(a) for e, a in zip(envs, actions)]
    final = np.stack([e.pos for e in envs])
    assert np.linalg.norm(final - goals, axis=1).max() < 0.05
    # the goal is encoded once (it never changes), observations once per replan
    n_replans = len(ctrl.plan_times)
    assert n_replans == int(np.ceil(15 / replan_every))
    assert linear_model.encode_calls == 1 + 15    # the goal once, each observed frame once


def test_encodes_once_per_replan_not_inside_planner(linear_model):
    ctrl = MPCController(linear_model, "cem", horizon=3, replan_every=3, action_space=BOX,
                         planner_options={"samples": 32, "iterations": 4, "elites": 4})
    env = PointEnv([0.0, 0.0], [0.3, 0.3])
    goal = render_point(env.goal)
    for _ in range(6):
        ctrl.act(env.obs(), goal)
        env.step(np.zeros(2))
    assert len(ctrl.plan_times) == 2
    assert linear_model.rollout_calls >= 8          # the planner evaluated many candidate batches
    assert linear_model.encode_calls == 1 + 6       # goal once, each observed frame once


def test_plan_single_and_batch(linear_model):
    obs = render_point(np.array([0.0, 0.0]))
    goal = render_point(np.array([0.4, -0.4]))
    actions = plan(obs, goal, model=linear_model, planner="cem", horizon=3, action_space=BOX,
                   samples=128, iterations=6, elites=10)
    assert actions.shape == (3, 2)
    end = np.clip(0.2 * actions.sum(0), -0.9, 0.9)
    assert np.linalg.norm(end - np.array([0.4, -0.4])) < 0.05
    batch = plan(np.stack([obs, obs]), np.stack([goal, goal]), model=linear_model, horizon=3,
                 action_space=BOX, samples=64, iterations=3, elites=8)
    assert batch.shape == (2, 3, 2)


@pytest.mark.parametrize("bad,match", [
    (lambda o, g: (o.astype(np.float32), g), "uint8"),
    (lambda o, g: (o[..., :2], g), "shape"),
    (lambda o, g: (o, g[:24, :24]), "goal image"),
])
def test_plan_rejects_bad_images(linear_model, bad, match):
    obs, goal = render_point(np.zeros(2)), render_point(np.ones(2) * 0.3)
    o, g = bad(obs, goal)
    with pytest.raises(ValueError, match=match):
        plan(o, g, model=linear_model, action_space=BOX)


def test_plan_rejects_wrong_action_space(linear_model):
    obs, goal = render_point(np.zeros(2)), render_point(np.ones(2) * 0.3)
    with pytest.raises(ValueError, match="action"):
        plan(obs, goal, model=linear_model, action_space=gym.spaces.Box(-1, 1, (3,), np.float32))


def test_action_bound_plans_in_the_shrunk_box_and_finds_its_optimum(linear_model):
    """The goal lies out of reach in the shrunk box: the best plan pushes on its edge all the way."""
    obs, goal = render_point(np.zeros(2)), render_point(np.array([0.4, -0.4]))
    actions = plan(obs, goal, model=linear_model, horizon=3, action_space=BOX, action_bound=0.25,
                   samples=128, iterations=6, elites=10)
    assert np.all(np.abs(actions) <= 0.25 + 1e-6)
    np.testing.assert_allclose(0.2 * actions.sum(0), [0.15, -0.15], atol=0.02)  # 3 steps of 0.2 x 0.25
    free = plan(obs, goal, model=linear_model, horizon=3, action_space=BOX, samples=128, iterations=6, elites=10)
    assert np.linalg.norm(0.2 * free.sum(0) - [0.4, -0.4]) < 0.05  # the whole box reaches it


def test_action_bound_shrinks_about_the_box_centre_in_closed_loop(linear_model):
    box = gym.spaces.Box(np.array([0.0, -1.0], np.float32), np.array([1.0, 1.0], np.float32))
    ctrl = MPCController(linear_model, "cem", horizon=3, action_space=box, action_bound=0.5,
                         planner_options={"samples": 32, "iterations": 3, "elites": 4})
    np.testing.assert_allclose(ctrl.action_space.low, [0.25, -0.5])
    np.testing.assert_allclose(ctrl.action_space.high, [0.75, 0.5])
    env = PointEnv([0.0, 0.0], [-0.5, 0.5])
    goal = render_point(env.goal)
    for _ in range(4):
        a = ctrl.act(env.obs(), goal)
        assert 0.25 - 1e-6 <= a[0] <= 0.75 + 1e-6 and abs(a[1]) <= 0.5 + 1e-6
        env.step(a)


@pytest.mark.parametrize("bound", [0, -0.5, 1.5, float("nan"), True, "half"])
def test_action_bound_must_be_a_fraction(linear_model, bound):
    with pytest.raises(ValueError, match="action_bound"):
        MPCController(linear_model, "cem", action_space=BOX, action_bound=bound)


def test_active_mask_rolls_out_only_the_envs_under_way_and_keeps_their_plans(linear_model):
    starts = np.array([[-0.6, -0.5], [0.5, 0.6], [0.0, 0.7]])
    goals = np.array([[0.5, 0.4], [-0.6, -0.3], [0.1, -0.6]])
    goal_imgs = np.stack([render_point(g) for g in goals])
    opts = {"samples": 32, "iterations": 3, "elites": 4}
    masked, plain = (MPCController(linear_model, "cem", horizon=3, action_space=BOX, planner_options=opts, seed=5)
                     for _ in range(2))
    rows = []
    rollout = linear_model.rollout
    linear_model.rollout = lambda z, *a, **k: rows.append(z.shape[0]) or rollout(z, *a, **k)
    envs_m, envs_p = ([PointEnv(s, g) for s, g in zip(starts, goals)] for _ in range(2))
    active = np.array([True, False, True])
    for step in range(4):
        batch = [{"pixels": np.stack([e.obs()["pixels"] for e in envs]),
                  "proprio": np.stack([e.obs()["proprio"] for e in envs])} for envs in (envs_m, envs_p)]
        rows.clear()
        a_m = masked.act(batch[0], goal_imgs, active=active if step else None)
        assert set(rows) == ({2} if step else {3})  # env 1 is not rolled out once it is done
        a_p = plain.act(batch[1], goal_imgs)
        np.testing.assert_allclose(a_m[active], a_p[active], atol=1e-5)  # the same plans for the others
        for envs, acts in ((envs_m, a_m), (envs_p, a_p)):
            for e, a, on in zip(envs, acts, active):
                if on:
                    e.step(a)
    with pytest.raises(ValueError, match="one flag per env"):
        masked.act(batch[0], goal_imgs, active=np.array([True, False]))
    with pytest.raises(ValueError, match="one flag per env"):
        masked.act(batch[0], goal_imgs, active=np.array([1, 0, 1]))
