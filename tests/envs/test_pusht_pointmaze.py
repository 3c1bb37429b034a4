"""PushT (gym-pusht physics) and PointMaze (gymnasium-robotics model) against the wmpc env contract."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from envs import make_env

CASES = {
    "pusht": ("pusht", {}),
    "pointmaze-umaze": ("pointmaze", {"maze": "umaze"}),
    "pointmaze-medium": ("pointmaze", {"maze": "medium"}),
}
SEEDS = range(8)
BUDGET = 50  # steps per episode in wmpc's goal-reaching evaluation


@pytest.fixture(scope="module", params=list(CASES))
def env(request):
    name, options = CASES[request.param]
    env = make_env(name, **options)
    yield env
    env.close()


def _episode(env, seed: int, policy) -> tuple[bool, float]:
    """Run one BUDGET-step episode; returns (success at the last step, final distance)."""
    env.reset(seed=seed)
    info = {}
    for _ in range(BUDGET):
        _, reward, terminated, truncated, info = env.step(policy())
        assert reward == -info["distance"] and not terminated and not truncated
    return info["is_success"], info["distance"]


def test_gymnasium_check_env(env):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any checker warning fails the test, except:
        warnings.filterwarnings("ignore", message=".*alternative render modes.*")  # no gymnasium spec
        check_env(env)


def test_contract_checker_when_available(env):
    checks = pytest.importorskip("envs.checks")
    checks.check(env)


def test_observation_and_info_contract(env):
    obs, info = env.reset(seed=3)
    assert obs["pixels"].dtype == np.uint8 and obs["pixels"].shape == (64, 64, 3)
    assert obs["proprio"].dtype == np.float32 and obs["proprio"].shape == (4,)
    assert info["goal_image"].shape == obs["pixels"].shape and info["goal_image"].dtype == np.uint8
    assert env.observation_space.contains(obs)
    # proprio is the agent's position and velocity, read from the true state
    state = info["state"]
    xy_vel = np.concatenate([state[:2], state[5:7]]) if state.shape == (10,) else state[:4]
    np.testing.assert_allclose(obs["proprio"], xy_vel, rtol=1e-6)
    assert info["distance"] == pytest.approx(env.goal_distance(info["state"], info["goal_state"]))
    assert info["is_success"] == (info["distance"] <= env.success_threshold)
    assert not np.array_equal(obs["pixels"], info["goal_image"])  # start and goal differ


def test_same_seed_same_start_goal_and_images(env):
    obs1, info1 = env.reset(seed=11)
    env.step(env.action_space.sample())
    obs2, info2 = env.reset(seed=11)
    np.testing.assert_array_equal(obs1["pixels"], obs2["pixels"])
    np.testing.assert_array_equal(obs1["proprio"], obs2["proprio"])
    np.testing.assert_array_equal(info1["goal_state"], info2["goal_state"])
    np.testing.assert_array_equal(info1["goal_image"], info2["goal_image"])
    _, info3 = env.reset(seed=12)
    assert not np.array_equal(info1["goal_state"], info3["goal_state"])


def test_goal_image_is_render_of_goal_state_and_rendering_is_side_effect_free(env):
    _, info = env.reset(seed=5)
    np.testing.assert_array_equal(info["goal_image"], env.unwrapped.render_state(info["goal_state"]))
    actions = [env.oracle_action() for _ in range(1)] + [np.array([0.7, -0.4], np.float32)] * 9
    # reference run: 10 steps, no rendering in between
    env.reset(seed=5)
    reference = [env.step(a)[4]["state"] for a in actions]
    # same run with a goal render (of another state) before every step
    env.reset(seed=5)
    other = info["goal_state"] + 0.3
    for a, ref in zip(actions, reference):
        env.unwrapped.render_state(other)
        np.testing.assert_array_equal(env.step(a)[4]["state"], ref)


def test_set_state_is_exact_and_deterministic(env):
    env.reset(seed=2)
    for _ in range(6):
        env.step(np.array([0.9, 0.8], np.float32))
    saved = env.unwrapped.get_state()
    env.unwrapped.set_state(saved)
    np.testing.assert_array_equal(env.unwrapped.get_state(), saved)
    runs = []
    for _ in range(2):
        env.unwrapped.set_state(saved)
        runs.append([env.step(np.array([-0.5, 0.6], np.float32))[4]["state"] for _ in range(5)])
    np.testing.assert_array_equal(np.array(runs[0]), np.array(runs[1]))


def test_oracle_reaches_goals_random_actions_mostly_do_not(env):
    oracle = [_episode(env, s, env.unwrapped.oracle_action) for s in SEEDS]
    rng = np.random.default_rng(0)
    random = [_episode(env, s, lambda: rng.uniform(-1, 1, 2).astype(np.float32)) for s in SEEDS]
    n_oracle, n_random = sum(s for s, _ in oracle), sum(s for s, _ in random)
    print(f"\n{env.unwrapped.__class__.__name__} {getattr(env.unwrapped, 'maze', '')}: success after "
          f"{BUDGET} steps over {len(SEEDS)} seeds: oracle {n_oracle}, random {n_random}; mean final "
          f"distance oracle {np.mean([d for _, d in oracle]):.3f}, random {np.mean([d for _, d in random]):.3f}")
    assert n_oracle == len(SEEDS)
    assert n_random <= 3  # random wins only by chance; the U-maze is small, so it does sometimes


def test_pusht_oracle_replays_goal_exactly_with_action_repeat():
    env = make_env("pusht", action_repeat=5, goal_steps=10)
    _, info = env.reset(seed=4)
    for _ in range(10):
        _, _, _, _, info = env.step(env.unwrapped.oracle_action())
    np.testing.assert_allclose(info["state"], info["goal_state"], atol=1e-9)
    assert info["distance"] == pytest.approx(0.0, abs=1e-9) and info["is_success"]


def test_pusht_pushing_start_is_a_push_under_way_and_its_goal_replays_exactly():
    """start="pushing" (DINO-WM's protocol): the start is the pusher at rest near the block, about to push;
    the goal lies goal_steps env steps further along the same push, is deterministic per seed, moves the
    block, and the oracle replays it exactly."""
    env = make_env("pusht", action_repeat=5, start="pushing", goal_steps=5)
    other = make_env("pusht", action_repeat=5, start="pushing", goal_steps=5)
    try:
        for seed in range(6):
            _, info = env.reset(seed=seed)
            _, again = other.reset(seed=seed)
            np.testing.assert_array_equal(info["goal_state"], again["goal_state"])
            start, goal = info["state"], info["goal_state"]
            assert np.all(start[5:] == 0.0)  # at rest
            assert np.linalg.norm(goal[2:4] - start[2:4]) >= 30  # the block moves
            block = env.unwrapped._sim.block
            gap = min(shape.point_query(tuple(start[:2])).distance for shape in block.shapes)
            assert gap < 110  # behind the block, not anywhere on the board
            for _ in range(5):
                _, _, _, _, info = env.step(env.unwrapped.oracle_action())
            np.testing.assert_allclose(info["state"], info["goal_state"], atol=1e-9)
        with pytest.raises(ValueError, match="start"):
            make_env("pusht", start="anywhere")
    finally:
        env.close()
        other.close()


def test_pusht_success_follows_dino_wm_thresholds():
    env = make_env("pusht").unwrapped
    goal = np.array([200.0, 200.0, 300.0, 300.0, 0.1, 0, 0, 0, 0, 0])
    near = goal.copy()
    near[[0, 2]] += 13.0  # ||(13, 0, 13, 0)|| = 18.4 < 20 px
    near[4] = 0.1 + np.pi / 9 - 0.01 + 2 * np.pi  # angle error wraps around
    far = near.copy()
    far[1] += 10.0  # ||(13, 10, 13, 0)|| = 20.9 > 20 px
    turned = goal.copy()
    turned[4] += np.pi / 9 + 0.01
    assert env.goal_distance(near, goal) < 1.0
    assert env.goal_distance(far, goal) > 1.0
    assert env.goal_distance(turned, goal) > 1.0


def test_pointmaze_success_radius_and_oracle_path_through_maze():
    env = make_env("pointmaze", maze="umaze")
    try:
        assert env.unwrapped.success_threshold == 0.5
        # U-maze: from the bottom-left arm to the top-left arm the straight line crosses a wall
        start = np.array([-1.0, -1.0, 0.0, 0.0])
        goal = np.array([-1.0, 1.0, 0.0, 0.0])
        env.reset(seed=0, options={"start_state": start, "goal_state": goal})
        xs = []
        for _ in range(BUDGET):
            _, _, _, _, info = env.step(env.unwrapped.oracle_action())
            xs.append(info["state"][0])
        assert info["is_success"]
        assert max(xs) > 0.8  # it went round through the right-hand column
    finally:
        env.close()


def test_pointmaze_leaves_no_maze_file_in_the_temp_folder():
    import tempfile
    from pathlib import Path

    before = set(Path(tempfile.gettempdir()).glob("ant_maze*.xml"))
    env = make_env("pointmaze", maze="medium")
    try:
        env.reset(seed=0)
        env.step(env.action_space.sample())
        assert env.render().shape[-1] == 3  # it still simulates and renders without the file
    finally:
        env.close()
    assert set(Path(tempfile.gettempdir()).glob("ant_maze*.xml")) <= before


@pytest.mark.parametrize("name,options", [("pusht", {}), ("pointmaze", {"maze": "medium"})])
def test_image_size_option(name, options):
    env = make_env(name, image_size=96, **options)
    try:
        obs, info = env.reset(seed=0)
        assert obs["pixels"].shape == (96, 96, 3) == info["goal_image"].shape
        assert env.observation_space["pixels"].shape == (96, 96, 3)
        assert obs["pixels"].std() > 10  # a real scene, not a blank frame
    finally:
        env.close()


@pytest.mark.parametrize("name,options", [
    ("pointmaze", {"maze": "large"}), ("pointmaze", {"substeps": 0}),
    ("pointmaze", {"min_goal_cells": 5, "max_goal_cells": 2}),
    ("pusht", {"action_scale": 0.0}), ("pusht", {"goal_steps": 0}), ("pusht", {"image_size": 0}),
])
def test_bad_options_raise(name, options):
    with pytest.raises(ValueError):
        make_env(name, **options)


@pytest.mark.parametrize("contain", [False, True])
def test_pusht_contain_agent_keeps_the_pusher_inside_the_walls(contain):
    """Driven into a corner, gym-pusht's kinematic pusher passes the walls to the board's edge, half out of
    the image; with ``contain_agent`` its targets stay inside the walls and the whole disc stays in view."""
    env = make_env("pusht", action_repeat=5, contain_agent=contain)
    env.reset(seed=0)
    for _ in range(20):
        _, _, _, _, info = env.step(np.array([1.0, 1.0], np.float32))  # to the bottom-right corner
    x, y = info["state"][:2]
    if contain:
        assert 480 < x < 495 and 480 < y < 495  # 22 px from the edge, the PD loop settles on it
    else:
        assert x > 505 and y > 505  # past the walls at 506 px
