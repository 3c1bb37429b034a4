"""Property-based fuzzing of ``make_env`` and ``step``: bad options and actions get clear errors.

Out-of-Box actions are clipped into the Box (gymnasium's convention for continuous control);
NaN/inf, wrong shapes and non-numeric actions are a ValueError; nothing crashes deep inside a
simulator and the env stays usable after a rejected action.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import envs

FUZZ = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                        HealthCheck.function_scoped_fixture])
NAMES = ["wall", "pointmass", "reacher", "pusht", "pointmaze"]


@pytest.fixture(scope="module", params=NAMES)
def env(request):
    e = envs.make_env(request.param, image_size=16)
    e.reset(seed=0)
    yield e
    e.close()


@st.composite
def actions(draw):
    kind = draw(st.sampled_from(["finite", "huge", "nan", "inf", "shape", "scalar", "text", "none", "list"]))
    if kind in ("finite", "huge", "nan", "inf"):
        scale = 1e6 if kind == "huge" else 3.0
        a = np.array(draw(st.lists(st.floats(-scale, scale), min_size=2, max_size=2)))
        if kind == "nan":
            a[draw(st.integers(0, 1))] = np.nan
        if kind == "inf":
            a[draw(st.integers(0, 1))] = -np.inf
        return kind, a
    if kind == "shape":
        n = draw(st.sampled_from([0, 1, 3, 4]))
        return kind, np.zeros(n)
    return kind, {"scalar": 0.5, "text": "left", "none": None, "list": [0.1, 0.2]}[kind]


@FUZZ
@given(case=actions())
def test_step_takes_any_action_or_raises_value_error(env, case):
    kind, action = case
    try:
        obs, reward, terminated, truncated, info = env.step(action)
    except ValueError as e:
        assert kind in ("nan", "inf", "shape", "scalar", "text", "none"), f"{kind} action rejected: {e}"
        assert str(e)
        obs, *_ = env.step(env.action_space.sample())  # the env is still usable
    else:
        assert kind in ("finite", "huge", "list"), f"{kind} action was accepted"
    assert obs["pixels"].dtype == np.uint8 and np.isfinite(obs["proprio"]).all()
    assert env.observation_space.contains(obs) or obs["pixels"].shape == env.observation_space["pixels"].shape


@FUZZ
@given(name=st.sampled_from(NAMES), size=st.one_of(st.integers(-3, 0), st.floats(1.1, 1.9), st.just("64")))
def test_bad_image_size_is_a_value_error(name, size):
    with pytest.raises((ValueError, TypeError), match="image_size"):
        envs.make_env(name, image_size=size)


@pytest.mark.parametrize("name", NAMES)
def test_unknown_option_names_the_valid_ones(name):
    with pytest.raises(TypeError, match="no_such_option"):
        envs.make_env(name, no_such_option=1)
