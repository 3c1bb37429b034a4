"""The DINO-WM-style reference (benchmarks/reference.py) computes the same function as wmpc's rollout."""
from __future__ import annotations

import pytest
import torch

from benchmarks.reference import ReferenceWorldModel, latent_mse_last, reference_cem_plan
from mpc.objectives import make_objective
from mpc.world_model import WorldModel, config_from_preset, load_preset

A, P = 2, 3
STATS = dict(action_mean=[0.1, -0.2], action_std=[0.5, 2.0], proprio_mean=[1.0, 2.0, 3.0],
             proprio_std=[0.5, 1.0, 2.0])


def _model(name: str, num_tokens: int, token_dim: int, **over) -> WorldModel:
    """A preset's structure (heads, join, time encoding, frameskip) at test size."""
    pre = load_preset(name)
    pre["predictor"].update(dropout=0.0, **over)
    pre.update(num_tokens=None, token_dim=None)
    cfg = config_from_preset(pre, num_tokens=num_tokens, token_dim=token_dim, env_action_dim=A,
                             proprio_dim=P)
    torch.manual_seed(0)
    model = WorldModel(cfg).eval()
    model.set_normalization(STATS)
    return model


def _inputs(model, B=2, T=3, S=4, H=5, seed=1):
    g = torch.Generator().manual_seed(seed)
    N, D, Am = model.num_tokens, model.token_dim, model.action_dim
    return (torch.randn(B, T, N, D, generator=g), torch.randn(B, T, P, generator=g),
            torch.randn(B, S, H, Am, generator=g), torch.randn(B, T - 1, Am, generator=g))


CASES = {
    "tiny": ("tiny", 16, 32, {}),
    # dino_wm structure (16 heads, projected width, frameskip 5, concat join), fewer tokens, thinner
    "dino_wm-reduced": ("dino_wm", 12, 48, {"depth": 2, "dim": 64, "mlp_dim": 96}),
    "tiny-add": ("tiny", 16, 32, {"join": "add"}),
    "dino_wm-absolute": ("dino_wm", 12, 48, {"depth": 2, "dim": 64, "mlp_dim": 96,
                                             "time_encoding": "absolute"}),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("T", [1, 3, 4])
def test_reference_equals_wmpc_rollout(case, T):
    name, n, d, over = CASES[case]
    model = _model(name, n, d, **over)
    ref = ReferenceWorldModel(model)
    zc, pc, a, pa = _inputs(model, T=T)
    with torch.no_grad():
        z1, p1 = model.rollout(zc, pc, a, pa)  # KV cache where the model allows it
        z2, p2 = ref.rollout(zc, pc, a, pa)
    torch.testing.assert_close(z1, z2, atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(p1, p2, atol=2e-5, rtol=1e-5)


def test_reference_context_matters():
    model = _model("tiny", 16, 32)
    ref = ReferenceWorldModel(model)
    zc, pc, a, pa = _inputs(model)
    z1, _ = ref.rollout(zc, pc, a, pa)
    z2, _ = ref.rollout(zc, pc, a, torch.zeros_like(pa))
    assert (z1 - z2).abs().max() > 1e-3  # past actions reach the prediction


def test_reference_rejects_vector_predictors():
    pre = load_preset("tiny_mlp")
    cfg = config_from_preset(pre, num_tokens=1, token_dim=8, env_action_dim=A, proprio_dim=P)
    with pytest.raises(ValueError, match="transformer"):
        ReferenceWorldModel(WorldModel(cfg))


def test_reference_cost_is_the_last_objective():
    model = _model("tiny", 16, 32)
    zc, pc, a, pa = _inputs(model, B=1)
    z, p = model.rollout(zc, pc, a, pa)
    goal = torch.randn(1, 16, 32)
    torch.testing.assert_close(latent_mse_last(z[0], goal[0]), make_objective("last")(z, goal)[0])


def test_reference_cem_finds_the_goal_of_a_known_plan():
    model = _model("tiny", 4, 8)
    ref = ReferenceWorldModel(model)
    zc, pc, _, pa = _inputs(model, B=2, T=2)
    target = torch.full((2, 1, 5, A), 0.5)
    z_goal = model.rollout(zc, pc, target, pa)[0][:, 0, -1]  # (B, N, D)
    low, high = -torch.ones(A), torch.ones(A)
    plan, cost = reference_cem_plan(ref, zc, pc, z_goal, pa, low, high, samples=32, iterations=4,
                                    topk=8)
    rand = torch.rand(2, 32, 5, A) * 2 - 1
    rand_cost = make_objective("last")(model.rollout(zc, pc, rand, pa)[0], z_goal)  # (B, S)
    assert plan.shape == (2, 5, A)
    assert (cost < rand_cost.median(dim=1).values).all()  # CEM beats typical random plans
