"""Property-based fuzzing of ``plan()`` and ``MPCController.act`` on a real tiny world model.

Observations, goals, proprio and action spaces of every wrong kind give a ``ValueError`` with a
message; valid ones give finite actions inside the Box. A refused call leaves the controller usable.
"""
from __future__ import annotations

import numpy as np
import pytest
from gymnasium import spaces
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mpc.controller import MPCController, plan
from tests.mpc.test_task import SMALL, tiny_model

FUZZ = settings(max_examples=25, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
SIZE = 16


@pytest.fixture(scope="module")
def model():
    return tiny_model(action_low=[-1.0, -1.0], action_high=[1.0, 1.0], image_size=SIZE)


@st.composite
def observations(draw):
    """(kind, obs): a valid observation dict, or one broken in one way."""
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    pixels = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    proprio = rng.normal(size=2).astype(np.float32)
    kind = draw(st.sampled_from(["ok", "ok_image_only", "float_pixels", "gray", "chw", "wrong_size",
                                 "nan_proprio", "proprio_size", "no_pixels", "string", "empty"]))
    if kind == "ok":
        return kind, {"pixels": pixels, "proprio": proprio}
    if kind == "ok_image_only":
        return kind, pixels
    if kind == "float_pixels":
        return kind, {"pixels": pixels / 255.0, "proprio": proprio}
    if kind == "gray":
        return kind, {"pixels": pixels[..., 0], "proprio": proprio}
    if kind == "chw":
        return kind, {"pixels": np.ascontiguousarray(pixels.transpose(2, 0, 1)), "proprio": proprio}
    if kind == "wrong_size":
        return kind, {"pixels": rng.integers(0, 256, (SIZE + 8, SIZE + 8, 3), dtype=np.uint8),
                      "proprio": proprio}
    if kind == "nan_proprio":
        return kind, {"pixels": pixels, "proprio": np.array([np.nan, 0.0], np.float32)}
    if kind == "proprio_size":
        return kind, {"pixels": pixels, "proprio": np.zeros(5, np.float32)}
    if kind == "no_pixels":
        return kind, {"proprio": proprio}
    if kind == "string":
        return kind, "an image"
    return kind, np.zeros((0, SIZE, 3), np.uint8)


def _goal():
    return np.full((SIZE, SIZE, 3), 128, np.uint8)


@FUZZ
@given(case=observations())
def test_plan_gives_actions_or_a_value_error(model, case):
    kind, obs = case
    try:
        actions = plan(obs, _goal(), model=model, horizon=2, **SMALL)
    except ValueError as e:
        assert kind != "ok", f"valid input refused: {e}"
        assert str(e)
        return
    assert kind == "ok", f"{kind} observation accepted"  # image-only: this model needs proprio
    assert actions.shape == (2, 2) and np.isfinite(actions).all() and np.abs(actions).max() <= 1.0


@FUZZ
@given(case=observations(), goal_kind=st.sampled_from(["ok", "float", "wrong_size", "none", "batch"]))
def test_controller_act_refuses_bad_input_and_stays_usable(model, case, goal_kind):
    kind, obs = case
    goal = {"ok": _goal(), "float": _goal() / 255.0, "wrong_size": np.zeros((8, 8, 3), np.uint8),
            "none": None, "batch": np.stack([_goal(), _goal()])}[goal_kind]
    ctrl = MPCController(model, planner="cem", horizon=2, planner_options=SMALL)
    try:
        ctrl.act(obs, goal)
    except ValueError as e:
        assert str(e)
        assert not (kind == "ok" and goal_kind == "ok"), f"valid input refused: {e}"
    else:
        assert kind == "ok" and goal_kind == "ok", f"{kind} / {goal_kind} accepted"
    action = ctrl.act({"pixels": np.zeros((SIZE, SIZE, 3), np.uint8), "proprio": np.zeros(2, np.float32)},
                      _goal())
    assert action.shape == (2,) and np.isfinite(action).all()


@pytest.mark.parametrize("space", [spaces.Box(-1, 1, (3,), np.float32), spaces.Box(-1, 1, (5, 2), np.float32),
                                   spaces.Discrete(4)])
def test_an_action_space_that_does_not_fit_the_model_is_a_value_error(model, space):
    with pytest.raises(ValueError):
        plan(np.zeros((SIZE, SIZE, 3), np.uint8), _goal(), model=model, horizon=2, action_space=space, **SMALL)


@pytest.mark.parametrize("goal_proprio", [np.array([np.nan, 0.0]), np.zeros(3), "up"])
def test_bad_goal_proprio_is_a_value_error(model, goal_proprio):
    from mpc.objectives import make_objective

    with pytest.raises(ValueError):
        plan({"pixels": np.zeros((SIZE, SIZE, 3), np.uint8), "proprio": np.zeros(2, np.float32)}, _goal(),
             model=model, horizon=2, objective=make_objective("last", alpha=1.0), goal_proprio=goal_proprio,
             **SMALL)
