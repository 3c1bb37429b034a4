"""Every registered planner on analytic costs with known optima (no world model)."""
from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from mpc.planners import (Planner, PlanResult, list_planners, make_planner, make_planner_from_config,
                          planner_options, register_planner)
from mpc.planners.icem import colored_noise

H, A, B = 5, 4, 3
SYM = gym.spaces.Box(-1.0, 1.0, (A,), np.float32)
ASYM = gym.spaces.Box(np.array([-1.0, -2.0, 0.0, -0.5], np.float32), np.array([1.0, 0.5, 2.0, 1.5], np.float32))
PLANNERS = list_planners()
FAST = {"gd": {"steps": 300}}          # SGD converges long before DINO-WM's 1000 steps here
ONE_ITERATION = {"cem": {"iterations": 1}, "mppi": {"iterations": 1}, "icem": {"iterations": 1},
                 "gd": {"steps": 1}, "gd_adam": {"steps": 1}, "cem_gd": {"iterations": 1, "steps": 1}}
CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs" / "planner"


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: one intra-op thread is faster and immune to a busy machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _bounds(box):
    return torch.as_tensor(box.low), torch.as_tensor(box.high)


def _targets(box, seed, lo_frac=0.1, hi_frac=0.9):
    """(B, H, A) points strictly inside the box, different per problem."""
    lo, hi = _bounds(box)
    u = torch.rand(B, H, A, generator=torch.Generator().manual_seed(seed))
    return lo + (hi - lo) * (lo_frac + (hi_frac - lo_frac) * u)


def quadratic(target):
    """cost (B, S) = squared distance to target (B, H, A)."""
    return lambda a: ((a - target[:, None]) ** 2).sum((-1, -2))


def double_well(t1, t2, depth=5.0):
    """Two basins: the global minimum 0 at t1, a local one of cost ``depth`` at t2."""
    def cost(a):
        return torch.minimum(((a - t1[:, None]) ** 2).sum((-1, -2)),
                             ((a - t2[:, None]) ** 2).sum((-1, -2)) + depth)
    return cost


def rastrigin(target, amplitude=0.1, period=0.5):
    """Quadratic bowl with cosine ripples (many local minima), global minimum 0 at target."""
    def cost(a):
        d = a - target[:, None]
        return (d ** 2 + amplitude * (1 - torch.cos(2 * torch.pi * d / period))).sum((-1, -2))
    return cost


def _cases(box):
    lo, hi = _bounds(box)
    t_in = _targets(box, 1)
    t_out = t_in.clone()
    t_out[..., 0] = torch.where(t_in[..., 0] > (lo[0] + hi[0]) / 2, hi[0] + 0.7, lo[0] - 0.7)
    t_out[:, 2:, 1] = hi[1] + 0.3
    t2 = _targets(box, 2)
    return {
        "inside": (quadratic(t_in), t_in),
        "outside": (quadratic(t_out), torch.clamp(t_out, lo, hi)),
        "double_well": (double_well(t_in, t2), t_in),
        "rastrigin": (rastrigin(t_in), t_in),
    }


@pytest.mark.parametrize("box", [SYM, ASYM], ids=["sym", "asym"])
@pytest.mark.parametrize("case", ["inside", "outside", "double_well", "rastrigin"])
@pytest.mark.parametrize("name", PLANNERS)
def test_finds_optimum(name, case, box):
    if case == "rastrigin" and name == "gd":
        pytest.skip("plain SGD is a local method: the ripples trap every restart (gd_adam's momentum gets through)")
    cost_fn, answer = _cases(box)[case]
    planner = make_planner(name, box, horizon=H, seed=0, **FAST.get(name, {}))
    res = planner.optimize(cost_fn, batch=B)
    assert isinstance(res, PlanResult)
    assert res.actions.shape == (B, H, A) and res.cost.shape == (B,)
    best = cost_fn(answer[:, None])[:, 0]
    assert torch.all(res.cost <= best + 0.01), (res.cost, best)
    assert (res.actions - answer).abs().max() < 0.06
    assert torch.allclose(res.cost, cost_fn(res.actions[:, None])[:, 0], atol=1e-5)


@pytest.mark.parametrize("name", PLANNERS)
def test_batched_equals_each_problem_alone_with_seed_plus_b(name):
    cost_fn, _ = _cases(ASYM)["double_well"]
    batched = make_planner(name, ASYM, horizon=H, seed=7, **FAST.get(name, {})).optimize(cost_fn, batch=B)
    for b in range(B):
        def single(a, b=b):  # problem b alone: (1, S, H, A) -> (1, S)
            return cost_fn(a.expand(B, *a.shape[1:]))[b:b + 1]
        alone = make_planner(name, ASYM, horizon=H, seed=7 + b, **FAST.get(name, {})).optimize(single, batch=1)
        assert torch.allclose(alone.actions[0], batched.actions[b], atol=1e-5)
        assert torch.allclose(alone.cost[0], batched.cost[b], atol=1e-5)


@pytest.mark.parametrize("name", PLANNERS)
def test_every_evaluated_candidate_lies_in_the_box(name):
    base_cost, _ = _cases(ASYM)["outside"]
    lo, hi = _bounds(ASYM)
    seen = []

    def cost_fn(a):
        seen.append(a.detach().clone())
        return base_cost(a)
    init = torch.full((B, H, A), 5.0)  # far outside: must be clipped before evaluation
    res = make_planner(name, ASYM, horizon=H, seed=0, **FAST.get(name, {})).optimize(cost_fn, batch=B, init=init)
    allc = torch.cat([s.reshape(-1, H, A) for s in seen])
    assert torch.all(allc >= lo) and torch.all(allc <= hi)
    assert torch.all(res.actions >= lo) and torch.all(res.actions <= hi)
    assert sum(s.shape[1] for s in seen) == res.info["rollouts"]


def _recorded(name, seed, calls=1, reset_between=False, **opts):
    """Every candidate a planner evaluates over ``calls`` optimize calls, concatenated."""
    cost_fn, _ = _cases(SYM)["rastrigin"]
    seen = []

    def record(a):
        seen.append(a.detach().reshape(-1))
        return cost_fn(a)
    planner = make_planner(name, SYM, horizon=H, seed=seed, **opts)
    for _ in range(calls):
        planner.optimize(record, batch=B)
        if reset_between:
            planner.reset()
    return torch.cat(seen)


@pytest.mark.parametrize("name", PLANNERS)
def test_fixed_seed_reproduces_and_reset_repeats(name):
    opts = {**FAST.get(name, {}), **ONE_ITERATION[name]}
    first = _recorded(name, 3, **opts)
    assert torch.equal(first, _recorded(name, 3, **opts))
    assert not torch.equal(first, _recorded(name, 4, **opts))
    two = _recorded(name, 3, calls=2, **opts)                          # a second call draws anew ...
    assert not torch.equal(two[:first.numel()], two[first.numel():])
    again = _recorded(name, 3, calls=2, reset_between=True, **opts)    # ... unless reset in between
    assert torch.equal(again[:first.numel()], again[first.numel():])


@pytest.mark.parametrize("name", PLANNERS)
def test_warm_start_at_optimum_returns_it_in_one_iteration(name):
    cost_fn, answer = _cases(ASYM)["double_well"]
    planner = make_planner(name, ASYM, horizon=H, seed=0, **ONE_ITERATION[name])
    res = planner.optimize(cost_fn, batch=B, init=answer)
    assert res.info["iterations"] == (2 if name == "cem_gd" else 1)
    assert (res.actions - answer).abs().max() < 1e-3


@pytest.mark.parametrize("name", PLANNERS)
def test_history_info_and_callback(name):
    cost_fn, _ = _cases(SYM)["inside"]
    planner = make_planner(name, SYM, horizon=H, seed=0, **FAST.get(name, {}))
    res = planner.optimize(cost_fn, batch=B)
    hist = res.info["cost_history"]
    assert hist.shape == (res.info["iterations"], B)
    assert torch.all(hist[1:] <= hist[:-1]) and torch.equal(hist[-1], res.cost)
    assert res.info["rollouts"] > 0 and res.info["time"] > 0
    calls = []

    def stop_after_two(it, state):
        calls.append((it, state["best_cost"].shape, state["candidates"].shape[0]))
        return it == 1
    res = make_planner(name, SYM, horizon=H, seed=0).optimize(cost_fn, batch=B, callback=stop_after_two)
    assert res.info["iterations"] == 2 and [c[0] for c in calls] == [0, 1]
    assert calls[0][1:] == ((B,), B)


@pytest.mark.parametrize("name", PLANNERS)
def test_nan_costs_never_win(name):
    target = _targets(SYM, 5)

    def cost_fn(a):
        c = ((a - target[:, None]) ** 2).sum((-1, -2))
        return torch.where(a[..., 0, 0] > 0.9, torch.full_like(c, float("nan")), c)
    res = make_planner(name, SYM, horizon=H, seed=0, **ONE_ITERATION[name]).optimize(cost_fn, batch=B)
    assert torch.all(torch.isfinite(res.cost))


def test_unknown_name_and_option_raise_with_hints():
    with pytest.raises(ValueError, match="did you mean 'elites'"):
        make_planner("cem", SYM, horizon=H, elite=10)
    with pytest.raises(ValueError, match="Did you mean 'icem'"):
        make_planner("icme", SYM, horizon=H)
    with pytest.raises(ValueError, match="elites"):
        make_planner("cem", SYM, horizon=H, samples=10, elites=20)
    with pytest.raises(ValueError, match="optimizer"):
        make_planner("gd", SYM, horizon=H, optimizer="rmsprop")


def test_bad_init_and_bad_cost_shapes_raise():
    planner = make_planner("cem", SYM, horizon=H, iterations=1)
    with pytest.raises(ValueError, match="init must have shape"):
        planner.optimize(lambda a: a.sum((-1, -2)), batch=B, init=torch.zeros(B, H + 1, A))
    with pytest.raises(ValueError, match="cost_fn must map"):
        planner.optimize(lambda a: a.sum(-1), batch=B)


@pytest.mark.parametrize("name", ["gd", "gd_adam", "cem_gd"])
def test_gradient_planners_need_a_differentiable_cost_and_work_under_no_grad(name):
    target = _targets(SYM, 1)
    planner = make_planner(name, SYM, horizon=H, **ONE_ITERATION[name])
    with pytest.raises(ValueError, match="differentiable"):
        planner.optimize(lambda a: quadratic(target)(a).detach(), batch=B)
    with torch.no_grad():
        res = make_planner(name, SYM, horizon=H, seed=0, **FAST.get(name, {})).optimize(quadratic(target), batch=B)
    assert (res.actions - target).abs().max() < 0.06


def test_shift_moves_one_step_and_pads_with_box_centre():
    planner = make_planner("cem", ASYM, horizon=H)
    acts = torch.arange(B * H * A, dtype=torch.float32).view(B, H, A)
    shifted = planner.shift(acts)
    assert torch.equal(shifted[:, :-1], acts[:, 1:])
    lo, hi = _bounds(ASYM)
    assert torch.equal(shifted[:, -1], ((lo + hi) / 2).expand(B, A))
    assert planner.shift(acts[0]).shape == (H, A)


def test_icem_carries_shifted_elites_into_the_next_call():
    cost_fn, answer = _cases(SYM)["inside"]
    planner = make_planner("icem", SYM, horizon=H, seed=0)
    res = planner.optimize(cost_fn, batch=B)
    init = planner.shift(res.actions)
    seen = []

    def record(a):
        seen.append(a.shape[1])
        return cost_fn(a)
    planner.optimize(record, batch=B, init=init)
    n_keep = round(planner.keep_elites * planner.elites)
    assert seen[0] == planner.population(0) + n_keep
    elites = planner._elites
    planner.shift(planner.shift(res.actions))             # two executed steps: elites move twice
    assert torch.equal(planner._carry[:, :, :-2], elites[:, :, 2:])


@pytest.mark.parametrize("beta,min_corr,max_corr", [(0.0, -0.05, 0.05), (2.0, 0.3, 1.0)])
def test_colored_noise_has_unit_variance_and_power_law_correlation(beta, min_corr, max_corr):
    planner = make_planner("icem", SYM, horizon=8, seed=0)
    planner.optimize(lambda a: a.sum((-1, -2)), batch=1)   # sets the device and the key
    x = colored_noise(planner, 4000, 8, 2, beta)[0, :, :, 0]  # (S, H)
    assert torch.allclose(x.std(0), torch.ones(8), atol=0.06)
    corr = torch.corrcoef(x.T)[0, 1].item()
    assert min_corr < corr < max_corr


def test_user_planner_plugs_in_by_subclassing():
    @register_planner("test_random_search")
    class RandomSearch(Planner):
        def __init__(self, action_space, horizon=5, seed=0, device=None, *, samples: int = 2000):
            super().__init__(action_space, horizon, seed, device)
            self.samples = samples

        def _optimize(self, run, init):
            lo, hi = self.low, self.high
            run.evaluate(lo + (hi - lo) * self.uniform(self.samples, self.horizon, self.action_dim))
            run.end_iteration()

    assert "test_random_search" in list_planners()
    assert planner_options("test_random_search") == {"samples": 2000}
    res = make_planner("test_random_search", SYM, horizon=1).optimize(lambda a: (a ** 2).sum((-1, -2)), batch=2)
    assert res.actions.shape == (2, 1, A) and torch.all(res.cost < 0.5)


@pytest.mark.parametrize("path", sorted(CONFIG_DIR.glob("*.yaml")), ids=lambda p: p.stem)
def test_configs_build_their_planner_with_every_key_an_option(path):
    from omegaconf import OmegaConf
    cfg = OmegaConf.load(path)
    planner = make_planner_from_config(cfg, SYM, horizon=4)
    assert planner.horizon == 4
    known = planner_options(cfg.name)
    assert set(cfg) - {"name", "horizon", "seed"} <= set(known)
    for key, value in cfg.items():
        if key in known and value is not None:
            got = planner.options[key]
            assert (list(got) if isinstance(got, tuple) else got) == value, key


def test_every_planner_has_a_config():
    assert {p.stem for p in CONFIG_DIR.glob("*.yaml")} >= set(PLANNERS)


@pytest.mark.parametrize("name", PLANNERS)
def test_per_step_bounds_and_unbounded_dims(name):
    low = -0.2 - 0.1 * torch.arange(H * A, dtype=torch.float32).view(H, A) / (H * A)   # (H, A) bounds
    high = low + 0.5
    box = gym.spaces.Box(low.numpy(), high.numpy())
    target = torch.zeros(B, H, A) + torch.tensor([1.0, -1.0, 0.0, 0.05])             # partly outside
    res = make_planner(name, box, horizon=H, seed=0, **FAST.get(name, {})).optimize(quadratic(target), batch=B)
    assert torch.all(res.actions >= low) and torch.all(res.actions <= high)
    assert (res.actions - torch.clamp(target, low, high)).abs().max() < 0.06
    free = gym.spaces.Box(-np.inf, np.inf, (A,), np.float32)
    res = make_planner(name, free, horizon=H, seed=0, **FAST.get(name, {})).optimize(
        quadratic(_targets(SYM, 1)), batch=B)
    assert (res.actions - _targets(SYM, 1)).abs().max() < 0.06
