"""Factors of variation (envs/variation.py) on every wmpc env: reproducible, inside their ranges,
never changing the task (start/goal draw, success rule, the oracle still reaches every goal)."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from envs import list_envs, make_env
from envs.checks import check

ALL = list_envs()
SPLITS = ("train", "test")
ORACLE_SEEDS = range(3)
BUDGET = 50
# a combination no config lists: some factors fixed to one value, one from its test range, the
# rest from the train split
CUSTOM = {
    "wall": {"split": "train", "door_center": 0.72, "door_width": [0.1, 0.11], "agent_rgb": [0.0, 0.0, 0.0],
             "distractor_size": [0.05, 0.06]},
    "pusht": {"split": "train", "object_rgb": [0.1, 0.8, 0.1], "background_rgb": [[0, 0, 0], [0.1, 0.1, 0.1]]},
    "pointmass": {"split": "train", "light": 2.0, "floor_rgb": [0.2, 0.2, 0.9], "distractor_size": 0.05},
    "reacher": {"split": "test", "agent_rgb": [1.0, 1.0, 1.0], "floor_texrepeat": [6.0, 8.0]},
    "pointmaze": {"split": "train", "layout": ["rot90"], "wall_rgb": [0.9, 0.9, 0.9], "light": [1.5, 2.0]},
}
# frames of variation="none" (reset(seed=7): obs, goal image, 3 random steps) from the code
# before factors existed; numpy/cv2 drawing is exact everywhere (MuJoCo frames depend on the GL
# backend, so those envs are compared with their untouched model instead)
BEFORE = {"wall": "4829468dd59cae11", "pusht": "c42cba549082587e"}


def _make(name, variation):
    options = {"action_repeat": 5, "substeps": 2} if name == "pointmaze" else {}
    return make_env(name, variation=variation, **options)


def _frames_hash(env, seed=7) -> str:
    obs, info = env.reset(seed=seed)
    frames = [obs["pixels"], info["goal_image"]]
    space = env.action_space
    space.seed(seed)
    frames += [env.step(space.sample())[0]["pixels"] for _ in range(3)]
    return hashlib.sha256(np.stack(frames).tobytes()).hexdigest()[:16]


def _inside(kind, value, rng) -> bool:
    if kind == "choice":
        return value in rng
    low, high = np.asarray(rng[0]), np.asarray(rng[1])
    return bool(np.all(low - 1e-12 <= np.asarray(value)) and np.all(np.asarray(value) <= high + 1e-12))


@pytest.mark.parametrize("name", ALL)
def test_factors_reproducible_and_independent_of_the_task(name):
    env = _make(name, "test")
    _, a = env.reset(seed=5)
    obs_a = env.render()
    _, b = env.reset(seed=5)
    assert a["factors"] == b["factors"] and np.array_equal(obs_a, env.render())
    assert env.reset(seed=6)[1]["factors"] != a["factors"]
    json.dumps(a["factors"])  # plain values
    # the start and goal come from their own generator: factors never move them
    # (PointMaze's layout changes which cells exist, so it is left out there)
    other = {"split": "train"} if name != "pointmaze" else {"agent_rgb": [0, 0, 1], "light": [0.5, 1.0]}
    _, ref = _make(name, "none").reset(seed=5)
    assert ref["factors"] == {}
    for info in ([_make(name, other).reset(seed=5)[1]] + ([a] if name != "pointmaze" else [])):
        assert np.array_equal(info["state"], ref["state"]) and np.array_equal(info["goal_state"], ref["goal_state"])


@pytest.mark.parametrize("split", SPLITS)
@pytest.mark.parametrize("name", ALL)
def test_factors_stay_inside_their_ranges(name, split):
    env = _make(name, split)
    table = env.unwrapped.FACTORS
    assert table, f"{name} declares no factors"
    for seed in range(5):
        factors = env.reset(seed=seed)[1]["factors"]
        assert set(factors) == set(table)
        for factor, value in factors.items():
            assert _inside(table[factor].kind, value, getattr(table[factor], split)), (factor, value)


@pytest.mark.parametrize("split", SPLITS + ("custom",))
@pytest.mark.parametrize("name", ALL)
def test_oracle_reaches_every_goal_and_check_passes(name, split):
    env = _make(name, CUSTOM[name] if split == "custom" else split)
    u = env.unwrapped
    for seed in ORACLE_SEEDS:
        _, info = env.reset(seed=seed)
        for _ in range(BUDGET):
            _, _, _, _, info = env.step(u.oracle_action())
            if info["is_success"]:
                break
        assert info["is_success"], f"{name} {split} seed {seed}: oracle ended {info['distance']:.3f} away"
        assert info["distance"] == u.goal_distance(info["state"], info["goal_state"])
    check(env, gym_checks=split == "train")


def test_custom_combination_is_honoured():
    env = _make("wall", CUSTOM["wall"])
    assert env.unwrapped.variation == "custom"
    factors = env.reset(seed=1)[1]["factors"]
    assert factors["door_center"] == 0.72 and factors["agent_rgb"] == [0.0, 0.0, 0.0]
    assert 0.1 <= factors["door_width"] <= 0.11 and set(factors) == set(env.unwrapped.FACTORS)
    spec = env.unwrapped.variation_spec()
    assert spec["split"] == "custom" and spec["factors"]["door_center"]["range"] == [0.72, 0.72]
    only = _make("pusht", {"agent_rgb": [1, 0, 0]})
    assert only.reset(seed=0)[1]["factors"] == {"agent_rgb": [1.0, 0.0, 0.0]}


@pytest.mark.parametrize("variation, match", [
    ({"agent_color": [0, 0, 0]}, "Did you mean 'agent_rgb'"),
    ({"agent_rgb": [0, 0]}, "agent_rgb"),
    ({"agent_rgb": [[1, 1, 1], [0, 0, 0]]}, "agent_rgb"),
    ({"door_width": "wide"}, "door_width"),
    ("held_out", "variation must be one of"),
    ({"split": "val"}, "variation must be one of"),
])
def test_bad_variation_is_a_clear_error(variation, match):
    with pytest.raises(ValueError, match=match):
        make_env("wall", variation=variation)


def test_door_that_does_not_fit_is_a_clear_error():
    env = make_env("wall", variation={"door_width": 0.05})
    with pytest.raises(ValueError, match="door"):
        env.reset(seed=0)


@pytest.mark.parametrize("name", ALL)
def test_none_renders_as_before(name):
    env = _make(name, "none")
    default = make_env(name, **({"action_repeat": 5, "substeps": 2} if name == "pointmaze" else {}))
    h = _frames_hash(env)
    assert h == _frames_hash(default)
    if name in BEFORE:
        assert h == BEFORE[name]
    u = env.unwrapped
    assert u.variation == "none" and u.variation_ranges == {} and u.variation_spec()["factors"] == {}


def test_variation_env_restores_defaults_between_resets():
    """A dict that varies only the light leaves every other look of a MuJoCo scene as loaded."""
    env = make_env("pointmass", variation={"light": [0.5, 0.6]})
    fresh = make_env("pointmass")
    env.reset(seed=0)
    m, f = env.unwrapped._scene.model, fresh.unwrapped._scene.model
    assert np.array_equal(m.mat_rgba, f.mat_rgba) and np.array_equal(m.mat_texrepeat, f.mat_texrepeat)
    assert not np.array_equal(m.light_diffuse, f.light_diffuse)


def test_dataset_records_the_variation(tmp_path):
    from mpc.data.collection import collect

    out = collect("wall", tmp_path / "d", episodes=1, steps=2, env_options={"variation": "test"}, progress=False)
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["variation"]["split"] == "test"
    assert meta["variation"]["factors"]["door_width"] == {"kind": "uniform", "range": [0.10, 0.13]}
    plain = collect("wall", tmp_path / "p", episodes=1, steps=2, progress=False)
    assert "variation" not in json.loads((plain / "dataset.json").read_text())
