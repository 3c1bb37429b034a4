"""Latent objectives against hand-computed values."""
from __future__ import annotations

import pytest
import torch

from mpc.objectives import LatentObjective, list_objectives, make_objective

B, S, H, N, D, P = 2, 3, 4, 5, 6, 3


def _data(seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(B, S, H, N, D, generator=g), torch.randn(B, N, D, generator=g),
            torch.randn(B, S, H, P, generator=g), torch.randn(B, P, generator=g))


def test_last_is_token_mse_of_the_last_frame():
    z, g, _, _ = _data()
    cost = make_objective("last")(z, g)
    assert cost.shape == (B, S)
    for b in range(B):
        for s in range(S):
            assert torch.isclose(cost[b, s], ((z[b, s, -1] - g[b]) ** 2).mean())


def test_all_with_discount_is_a_normalised_weighted_mean():
    z, g, _, _ = _data()
    per_frame = ((z - g[:, None, None]) ** 2).mean((-1, -2))               # (B, S, H)
    assert torch.allclose(make_objective("all")(z, g), per_frame.mean(-1))
    w = 0.5 ** torch.arange(H, dtype=torch.float32)
    assert torch.allclose(make_objective("all", discount=0.5)(z, g), (per_frame * w).sum(-1) / w.sum())


def test_zero_at_the_goal_and_proprio_term_only_with_alpha():
    z, g, pp, pg = _data()
    at_goal = g[:, None, None].expand(B, S, H, N, D)
    assert torch.all(make_objective("last")(at_goal, g) == 0)
    base = make_objective("last")(z, g)
    assert torch.equal(make_objective("last")(z, g, pp, pg), base)        # alpha = 0: proprio ignored
    with_p = make_objective("last", alpha=0.5)(z, g, pp, pg)
    assert torch.allclose(with_p, base + 0.5 * ((pp[:, :, -1] - pg[:, None]) ** 2).mean(-1))


def test_proprio_weights_make_a_weighted_mean_of_the_squared_errors():
    z, g, pp, pg = _data()
    base = make_objective("last")(z, g)
    w = torch.tensor([1.0, 3.0, 0.0])
    sq = (pp[:, :, -1] - pg[:, None]) ** 2                                  # (B, S, P)
    got = make_objective("last", alpha=2.0, proprio_weights=[1.0, 3.0, 0.0])(z, g, pp, pg)
    assert torch.allclose(got, base + 2.0 * (sq * w).sum(-1) / 4.0)
    pp_moved = pp.clone()
    pp_moved[..., 2] += 100.0  # a value weighted 0 does not count
    assert torch.allclose(make_objective("last", alpha=2.0, proprio_weights=w)(z, g, pp_moved, pg), got)
    for bad in ([0.0, 0.0, 0.0], [1.0, -1.0, 1.0], [float("nan"), 1.0, 1.0]):
        with pytest.raises(ValueError, match="proprio_weights"):
            make_objective("last", alpha=1.0, proprio_weights=bad)
    with pytest.raises(ValueError, match="proprio_weights has 2 values"):
        make_objective("last", alpha=1.0, proprio_weights=[1.0, 1.0])(z, g, pp, pg)


def test_candidate_closest_to_goal_has_lowest_cost():
    _, g, _, _ = _data()
    z = g[:, None, None].expand(B, S, H, N, D) + torch.tensor([0.5, 0.1, 1.0])[None, :, None, None, None]
    assert torch.all(make_objective("last")(z, g).argmin(1) == 1)


def test_errors_are_clear():
    z, g, pp, pg = _data()
    with pytest.raises(ValueError, match="unknown objective"):
        make_objective("first")
    with pytest.raises(ValueError, match="unknown option"):
        make_objective("last", alhpa=1.0)
    with pytest.raises(ValueError, match="alpha > 0 needs proprio"):
        make_objective("all", alpha=1.0)(z, g)
    with pytest.raises(ValueError, match="P >= 1"):  # a proprio-free model: no NaN from an empty mean
        make_objective("last", alpha=1.0)(z, g, pp[..., :0], pg[..., :0])
    with pytest.raises(ValueError, match="expected z_pred"):
        LatentObjective()(z[:, 0], g)
    assert list_objectives() == ["last", "all"]


def test_differentiable_for_gradient_planners():
    z, g, _, _ = _data()
    z.requires_grad_(True)
    make_objective("all", discount=0.9)(z, g).sum().backward()
    assert z.grad is not None and torch.isfinite(z.grad).all()
