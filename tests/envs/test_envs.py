"""Contract and behaviour tests for the wmpc goal envs (pointmass, reacher, wall).

Envs of other modules are checked in their own test files with the same :func:`envs.checks.check`.
"""
from __future__ import annotations

import logging

import gymnasium as gym
import numpy as np
import pytest

import envs
from envs import make_env
from envs.checks import EnvContractError, check

log = logging.getLogger(__name__)

OWN_ENVS = ["pointmass", "reacher", "wall"]
SEEDS = range(10)
BUDGET = 50  # env steps per evaluation episode


@pytest.fixture(scope="module", params=OWN_ENVS)
def env(request):
    e = make_env(request.param)
    yield e
    e.close()


def envs_name(env) -> str:
    """The registry name of one of OWN_ENVS."""
    return {"PointMassEnv": "pointmass", "ReacherEnv": "reacher", "WallEnv": "wall"}[type(env.unwrapped).__name__]


def reach_rate(env, policy, seeds=SEEDS, steps=BUDGET) -> float:
    """Fraction of seeds where ``policy(env, rng)`` hits ``is_success`` within ``steps`` steps."""
    hits = 0
    for seed in seeds:
        _, info = env.reset(seed=seed)
        rng = np.random.default_rng(seed)
        for _ in range(steps):
            _, _, _, _, info = env.step(policy(env, rng))
            if info["is_success"]:
                hits += 1
                break
    return hits / len(seeds)


def test_check_passes(env):
    check(env)


def test_same_seed_same_episode_other_seed_other_goal(env):
    a = make_env(envs_name(env))
    try:
        for seed in (0, 7):
            obs1, info1 = env.reset(seed=seed)
            obs2, info2 = a.reset(seed=seed)
            assert np.array_equal(obs1["pixels"], obs2["pixels"])
            assert np.array_equal(info1["goal_image"], info2["goal_image"])
            assert np.array_equal(info1["goal_state"], info2["goal_state"])
        goals = {tuple(env.reset(seed=s)[1]["goal_state"]) for s in range(5)}
        assert len(goals) == 5
    finally:
        a.close()


def test_goal_image_is_rendered_goal_state(env):
    _, info = env.reset(seed=3)
    assert np.array_equal(info["goal_image"], env.unwrapped.render_state(info["goal_state"]))
    obs, info = env.reset(seed=3, options={"start_state": info["goal_state"]})
    assert np.array_equal(obs["pixels"], info["goal_image"])
    assert info["is_success"] and info["distance"] == 0.0


@pytest.mark.parametrize("name", envs.list_envs())
def test_info_gives_the_goal_states_proprio(name):
    """info["goal_proprio"] (float32 (P,)) on reset and every step: the proprio seen at the goal state."""
    env = make_env(name)
    try:
        obs, info = env.reset(seed=5)
        goal_p = info["goal_proprio"]
        assert goal_p.dtype == np.float32 and goal_p.shape == obs["proprio"].shape
        assert not np.allclose(goal_p, obs["proprio"])  # the start is away from the goal
        for _ in range(3):
            obs, _, _, _, info = env.step(env.action_space.sample())
            assert np.array_equal(info["goal_proprio"], goal_p)
        obs, info = env.reset(seed=5, options={"start_state": info["goal_state"]})
        np.testing.assert_allclose(obs["proprio"], goal_p, atol=1e-6)
    finally:
        env.close()


def test_goal_image_differs_from_start_image(env):
    obs, info = env.reset(seed=4)
    diff = np.abs(obs["pixels"].astype(int) - info["goal_image"].astype(int)).sum(-1)
    assert (diff > 30).sum() >= 4, "the goal must be visibly different from the start"


def test_oracle_reaches_goals_random_does_not(env):
    oracle = reach_rate(env, lambda e, rng: e.unwrapped.oracle_action())
    random = reach_rate(env, lambda e, rng: rng.uniform(-1, 1, e.action_space.shape).astype(np.float32))
    log.info("%s: oracle %.2f, random %.2f over %d seeds x %d steps", envs_name(env), oracle, random,
             len(SEEDS), BUDGET)
    assert oracle >= 0.9, f"oracle success {oracle}"
    assert random <= 0.3, f"random success {random}"


def test_wall_oracle_accounts_for_action_repeat():
    """With each action repeated, the wall oracle scales its action to land on its waypoints, not past them."""
    env = make_env("wall", action_repeat=5)
    try:
        oracle = reach_rate(env, lambda e, rng: e.unwrapped.oracle_action(), steps=BUDGET // 5)
        assert oracle >= 0.9, f"oracle success {oracle} with action_repeat=5"
    finally:
        env.close()


@pytest.mark.parametrize("bad", [np.zeros(3, np.float32), np.zeros((1, 2), np.float32),
                                 np.array([np.nan, 0.0], np.float32), np.array([np.inf, 0.0])])
def test_bad_action_raises(env, bad):
    env.reset(seed=0)
    with pytest.raises(ValueError):
        env.step(bad)


def test_step_before_reset_raises():
    e = make_env("wall")
    with pytest.raises(RuntimeError, match="reset"):
        e.step(np.zeros(2, np.float32))


def test_actions_are_clipped(env):
    env.reset(seed=1)
    a = env.step(np.full(2, 5.0, np.float32))[0]["proprio"]
    env.reset(seed=1)
    b = env.step(np.ones(2, np.float32))[0]["proprio"]
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name", OWN_ENVS)
def test_image_size_224(name):
    e = make_env(name, image_size=224)
    try:
        obs, info = e.reset(seed=0)
        assert obs["pixels"].shape == (224, 224, 3) and info["goal_image"].shape == (224, 224, 3)
        assert obs["pixels"].std() > 0
    finally:
        e.close()


@pytest.mark.parametrize("name", OWN_ENVS)
def test_action_repeat_repeats_the_action(name):
    e1, e3 = make_env(name), make_env(name, action_repeat=3)
    try:
        e1.reset(seed=2)
        e3.reset(seed=2)
        action = np.array([0.7, -0.4], np.float32)
        for _ in range(3):
            obs1 = e1.step(action)[0]
        obs3 = e3.step(action)[0]
        np.testing.assert_array_equal(obs1["proprio"], obs3["proprio"])
        np.testing.assert_array_equal(obs1["pixels"], obs3["pixels"])
    finally:
        e1.close()
        e3.close()


@pytest.mark.parametrize("name", OWN_ENVS)
def test_gym_make_registered_id(name):
    e = gym.make(envs.ENVS[name][1])
    try:
        obs, info = e.reset(seed=0)
        ref = make_env(name)
        obs_ref, _ = ref.reset(seed=0)
        ref.close()
        assert np.array_equal(obs["pixels"], obs_ref["pixels"])
        check(e, gym_checks=False)
    finally:
        e.close()


def test_user_gym_id_via_make_env():
    e = make_env("tests.envs.user_env:UserDot-v0", image_size=8)
    obs, info = e.reset(seed=0)
    assert obs["pixels"].shape == (8, 8, 3)
    check(e)
    assert type(e.unwrapped).__name__ == "UserDotEnv"


def test_unknown_env_suggests_close_name():
    with pytest.raises(ValueError, match="pointmass"):
        make_env("pointmas")


def test_check_catches_a_wrong_goal_image():
    class WrongGoalImage(type(make_env("wall").unwrapped)):
        def reset(self, **kwargs):
            obs, info = super().reset(**kwargs)
            info["goal_image"] = obs["pixels"].copy()
            return obs, info

    with pytest.raises(EnvContractError, match="goal_image differs"):
        check(WrongGoalImage(), gym_checks=False)


def test_check_catches_rendering_that_moves_the_agent():
    class Disturbing(type(make_env("wall").unwrapped)):
        def render_state(self, state):
            self._set_state(np.asarray(state, dtype=np.float64))
            return self._render()

    with pytest.raises(EnvContractError, match="changed"):
        check(Disturbing(), gym_checks=False)


def test_check_catches_success_not_from_state():
    class Lenient(type(make_env("wall").unwrapped)):
        def _info(self):
            info = super()._info()
            info["is_success"] = True
            return info

    with pytest.raises(EnvContractError, match="is_success"):
        check(Lenient(), gym_checks=False)


def test_wall_blocks_except_through_the_door():
    e = make_env("wall").unwrapped
    e.reset(seed=0)
    rng = np.random.default_rng(0)
    lo, hi = e.door
    crossings = 0
    for _ in range(3000):
        before = e.get_state()
        e.step(rng.uniform(-1, 1, 2).astype(np.float32) + np.array([0.3 * np.sign(0.5 - before[0]), 0.0],
                                                                   np.float32).clip(-1, 1))
        after = e.get_state()
        assert not e._collides(after)
        if (before[0] > 0.5) != (after[0] > 0.5):
            crossings += 1
            t = (0.5 - before[0]) / (after[0] - before[0])  # where the move crosses x = 0.5
            assert lo <= before[1] + t * (after[1] - before[1]) <= hi
    assert crossings > 0


def test_wall_goals_cross_the_wall_sometimes():
    e = make_env("wall")
    sides = []
    for s in range(40):
        _, info = e.reset(seed=s)
        sides.append((info["state"][0] > 0.5) != (info["goal_state"][0] > 0.5))
    assert 0.2 < np.mean(sides) < 0.8


def test_reacher_success_uses_wrapped_shoulder_angle():
    from envs.reacher import joint_error
    goal = np.array([np.pi - 0.05, 0.3, 0, 0])
    state = np.array([-np.pi + 0.05, 0.3, 0, 0])  # 0.1 rad apart across the wrap
    np.testing.assert_allclose(joint_error(state, goal), [-0.1, 0.0], atol=1e-12)
    # the wrist is limited, so it is not wrapped
    np.testing.assert_allclose(joint_error([0, -2.5], [0, 2.5]), [0.0, 5.0])


def test_pointmass_target_hidden_and_agent_visible():
    e = make_env("pointmass").unwrapped
    a = e.render_state(np.array([-0.2, -0.2, 0, 0]))
    b = e.render_state(np.array([0.2, 0.2, 0, 0]))
    changed = np.abs(a.astype(int) - b.astype(int)).sum(-1) > 30
    # the two agent discs differ, nothing else (the target sphere at the origin is hidden)
    assert 4 <= changed.sum() <= 2 * 40
    e.close()


@pytest.mark.parametrize("name", OWN_ENVS)
def test_config_builds_the_default_env(name):
    from pathlib import Path

    from omegaconf import OmegaConf
    cfg = OmegaConf.to_container(OmegaConf.load(Path(__file__).parents[2] / "configs" / "env" / f"{name}.yaml"))
    assert cfg.pop("name") == name
    e, ref = make_env(name, **cfg), make_env(name)
    try:
        obs, info = e.reset(seed=5)
        obs_ref, info_ref = ref.reset(seed=5)
        assert np.array_equal(info["goal_state"], info_ref["goal_state"])
        assert np.array_equal(obs["pixels"], obs_ref["pixels"]), "the config must state the defaults"
    finally:
        e.close()
        ref.close()


def test_old_frameskip_option_still_works_with_a_warning():
    with pytest.warns(FutureWarning, match="action_repeat"):
        env = make_env("wall", frameskip=3)
    assert env.unwrapped.action_repeat == 3
    env.close()
