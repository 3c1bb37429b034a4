"""Property-based fuzzing of ``make_planner(...).optimize``.

Costs with NaN/inf, zero-width boxes, H = 1 and odd batch sizes give a finite plan inside the Box
(or a ValueError that says what was wrong); costs of the wrong shape or type are a ValueError.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from gymnasium import spaces
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mpc.planners import list_planners, make_planner

FUZZ = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SMALL = {"cem": dict(samples=8, iterations=2, elites=2), "icem": dict(samples=8, iterations=2, elites=2),
         "mppi": dict(samples=8, iterations=2, elites=2), "cem_gd": dict(samples=8, iterations=2, elites=2,
                                                                          refine=2, steps=2),
         "gd": dict(steps=3, restarts=2), "gd_adam": dict(steps=3, restarts=2)}


@st.composite
def problems(draw):
    A = draw(st.integers(1, 3))
    H = draw(st.integers(1, 4))
    B = draw(st.integers(1, 3))
    low = np.array(draw(st.lists(st.floats(-5, 5), min_size=A, max_size=A)), np.float32)
    width = np.array(draw(st.lists(st.sampled_from([0.0, 1e-3, 1.0, 4.0]), min_size=A, max_size=A)), np.float32)
    poison = draw(st.sampled_from(["none", "nan", "inf", "all_nan", "all_inf", "neg_inf"]))
    return A, H, B, low, low + width, poison


def _cost(poison: str):
    def cost_fn(a):  # (B, S, H, A) -> (B, S)
        c = (a ** 2).sum((-1, -2))
        if poison == "nan":
            c = torch.where(a[..., 0, 0] > a[..., 0, 0].median(), torch.full_like(c, float("nan")), c)
        elif poison == "inf":
            c = torch.where(a[..., 0, 0] > a[..., 0, 0].median(), torch.full_like(c, float("inf")), c)
        elif poison == "all_nan":
            c = torch.full_like(c, float("nan"))
        elif poison == "all_inf":
            c = torch.full_like(c, float("inf"))
        elif poison == "neg_inf":
            c = torch.where(a[..., 0, 0] > a[..., 0, 0].median(), torch.full_like(c, -float("inf")), c)
        return c
    return cost_fn


@pytest.mark.parametrize("name", list_planners())
@FUZZ
@given(problem=problems())
def test_any_cost_gives_a_plan_inside_the_box_or_a_value_error(name, problem):
    A, H, B, low, high, poison = problem
    box = spaces.Box(low, high, dtype=np.float32)
    planner = make_planner(name, box, horizon=H, seed=0, **SMALL[name])
    try:
        res = planner.optimize(_cost(poison), batch=B)
    except ValueError as e:
        assert str(e)
        assert poison in ("all_nan", "all_inf", "neg_inf"), f"rejected a usable cost: {e}"
        return
    assert res.actions.shape == (B, H, A)
    assert torch.isfinite(res.actions).all()
    lo, hi = torch.as_tensor(low), torch.as_tensor(high)
    assert ((res.actions >= lo - 1e-5) & (res.actions <= hi + 1e-5)).all()


@pytest.mark.parametrize("name", list_planners())
@pytest.mark.parametrize("bad", ["shape", "type", "dtype"])
def test_cost_of_the_wrong_shape_or_type_is_a_value_error(name, bad):
    box = spaces.Box(-1, 1, (2,), dtype=np.float32)
    planner = make_planner(name, box, horizon=2, seed=0, **SMALL[name])
    out = {"shape": lambda a: (a ** 2).sum(-1),            # (B, S, H): one axis too many
           "type": lambda a: "cheap",
           "dtype": lambda a: (a ** 2).sum((-1, -2)) > 0}  # bool costs
    with pytest.raises(ValueError, match="cost"):
        planner.optimize(out[bad], batch=3)
