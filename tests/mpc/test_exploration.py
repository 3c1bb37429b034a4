"""Closed-loop exploration policies: deterministic per seed, recorded in dataset.json, and the
coverage they reach (stats.json) against open-loop colored noise."""
from __future__ import annotations

import json

import numpy as np
import pytest

import envs
from mpc.data import collect, rollout_episode
from mpc.data.exploration import CLOSED_LOOP, make_actions, make_policy


def _episode(env, policy, seed, steps=20, **options):
    act = make_policy(policy, env.action_space.low, env.action_space.high, steps, seed, **options)
    return rollout_episode(env, act, seed, steps=steps)


@pytest.mark.parametrize("env_name,policy", [("pusht", "push"), ("pointmaze", "waypoints"),
                                             ("reacher", "waypoints"), ("wall", "waypoints")])
def test_closed_loop_policy_is_deterministic_per_seed(env_name, policy):
    env = envs.make_env(env_name, image_size=16)
    try:
        a, b, c = (_episode(env, policy, s) for s in (3, 3, 4))
    finally:
        env.close()
    np.testing.assert_array_equal(a["actions"], b["actions"])
    np.testing.assert_array_equal(a["states"], b["states"])
    assert not np.array_equal(a["actions"], c["actions"])
    assert np.all(np.abs(a["actions"]) <= 1.0)


def test_open_loop_policy_through_make_policy_replays_make_actions():
    env = envs.make_env("wall", image_size=16)
    try:
        ep = _episode(env, "colored-noise", 5, steps=12)
        expected = make_actions("colored-noise", env.action_space.low, env.action_space.high, 12, 5)
    finally:
        env.close()
    np.testing.assert_array_equal(ep["actions"], expected)


def test_mix_plays_colored_noise_in_that_fraction_of_episodes():
    low, high = -np.ones(2), np.ones(2)

    def is_noise(mix, seed):  # a colored-noise episode replays its actions without reading the env
        act = make_policy("push", low, high, 10, seed, mix=mix)
        try:
            first = act(None)
        except AttributeError:
            return False
        np.testing.assert_array_equal(first, make_actions("colored-noise", low, high, 10, seed)[0])
        return True

    assert 10 <= sum(is_noise(0.5, s) for s in range(40)) <= 30
    assert not any(is_noise(0.0, s) for s in range(10))
    assert all(is_noise(1.0, s) for s in range(10))


def test_bad_options_and_unsupported_envs_are_clear_errors():
    low, high = -np.ones(2), np.ones(2)
    with pytest.raises(ValueError, match="mix must lie"):
        make_policy("push", low, high, 5, 0, mix=1.5)
    with pytest.raises(ValueError, match="mix is an option of the closed-loop"):
        make_policy("uniform", low, high, 5, 0, mix=0.5)
    with pytest.raises(ValueError, match="bad options"):
        make_policy("waypoints", low, high, 5, 0, beta=1.0)
    with pytest.raises(ValueError, match="closed-loop"):
        make_actions("push", low, high, 5, 0)
    for name, policy, message in (("pusht", "waypoints", "policy=push"), ("wall", "push", "Push-T")):
        env = envs.make_env(name, image_size=16)
        try:
            with pytest.raises(ValueError, match=message):
                _episode(env, policy, 0, steps=3)
        finally:
            env.close()
    assert set(CLOSED_LOOP) == {"push", "waypoints"}


def test_push_moves_the_block_far_more_often_than_colored_noise(tmp_path):
    """10 episodes x 40 steps each: the coverage in stats.json, and the policy in dataset.json."""
    moving = {}
    for policy, options in (("push", {"mix": 0.2}), ("colored-noise", {})):
        out = collect("pusht", tmp_path / policy, episodes=10, steps=40, policy=policy, seed=0,
                      image_size=16, policy_options=options, progress=False)
        meta = json.loads((out / "dataset.json").read_text())
        assert meta["policy"] == policy and meta["policy_options"] == options
        cov = json.loads((out / "stats.json").read_text())["coverage"]
        assert len(cov["state_range"]) == 10 and len(cov["object_pose_std"]) == 3
        moving[policy] = cov["object_moving_fraction"]
    assert moving["push"] > 0.3 and moving["push"] > 3 * moving["colored-noise"], moving


def test_waypoints_cover_the_pointmaze(tmp_path):
    out = collect("pointmaze", tmp_path / "maze", episodes=4, steps=40, policy="waypoints", seed=0,
                  image_size=16, progress=False)
    cov = json.loads((out / "stats.json").read_text())["coverage"]
    assert "object_moving_fraction" not in cov
    assert min(cov["state_range"][:2]) > 1.5  # the ball travels across more than one cell each way
