"""The DINO-WM reference (benchmarks/reference.py): the work it does, and what it computes against wmpc.

The reference recomputes DINO-WM's window of ``num_hist`` frames every step. That equals wmpc's
rollout for ``absolute`` positions (wmpc recomputes the same window), for depth-1 models and on the
steps where the window still holds the whole history (``T + h <= num_hist``); a deeper ``rope``
model sees further back through its sliding-window layers, which ``full_history=True`` reproduces.
"""
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
    """Full-history reference == wmpc for rope; DINO-WM's window == wmpc for absolute positions."""
    name, n, d, over = CASES[case]
    model = _model(name, n, d, **over)
    ref = ReferenceWorldModel(model, full_history=model.config.predictor.time_encoding == "rope")
    zc, pc, a, pa = _inputs(model, T=T)
    with torch.no_grad():
        z1, p1 = model.rollout(zc, pc, a, pa)  # KV cache where the model allows it
        z2, p2 = ref.rollout(zc, pc, a, pa)
    torch.testing.assert_close(z1, z2, atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(p1, p2, atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("T", [1, 2, 3])
def test_dino_wm_window_equals_wmpc_while_the_window_holds_the_history(T):
    """rope, depth 2: equal on steps with T + h <= num_hist, different after (wmpc sees further back)."""
    model = _model("dino_wm", 12, 48, depth=2, dim=64, mlp_dim=96)
    ref = ReferenceWorldModel(model)  # DINO-WM's window
    zc, pc, a, pa = _inputs(model, T=T)
    with torch.no_grad():
        z1, p1 = model.rollout(zc, pc, a, pa)
        z2, p2 = ref.rollout(zc, pc, a, pa)
    same = model.num_hist - T + 1  # steps h = 0 .. num_hist - T
    torch.testing.assert_close(z2[:, :, :same], z1[:, :, :same], atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(p2[:, :, :same], p1[:, :, :same], atol=2e-5, rtol=1e-5)
    assert (z2[:, :, same:] - z1[:, :, same:]).abs().amax() > 1e-3


def test_dino_wm_window_equals_wmpc_for_one_layer():
    """With one layer the sliding window is the whole receptive field: equal at every step."""
    model = _model("dino_wm", 12, 48, depth=1, dim=64, mlp_dim=96)
    zc, pc, a, pa = _inputs(model, T=1)
    with torch.no_grad():
        z1, p1 = model.rollout(zc, pc, a, pa)
        z2, p2 = ReferenceWorldModel(model).rollout(zc, pc, a, pa)
    torch.testing.assert_close(z2, z1, atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(p2, p1, atol=2e-5, rtol=1e-5)


def _count_predictor_tokens(ref):
    seen = []
    predict = ref.predict

    def counting(z, p, a):
        seen.append(z.shape[1] * z.shape[2])  # frames x N tokens in this pass
        return predict(z, p, a)
    ref.predict = counting
    return seen


@pytest.mark.parametrize("T, frames", [(1, [1, 2, 3, 3, 3]), (2, [2, 3, 3, 3, 3]), (3, [3, 3, 3, 3, 3])])
def test_reference_predictor_sees_dino_wm_window(T, frames):
    """min(T + h, num_hist) frames at step h: N, 2N, 3N, 3N, 3N tokens from one context frame."""
    model = _model("dino_wm", 12, 48, depth=1, dim=64, mlp_dim=96)
    ref = ReferenceWorldModel(model)
    seen = _count_predictor_tokens(ref)
    zc, pc, a, pa = _inputs(model, B=1, T=T, H=5)
    ref.rollout(zc, pc, a, pa)
    assert seen == [f * model.num_tokens for f in frames]
    full = ReferenceWorldModel(model, full_history=True)
    seen_full = _count_predictor_tokens(full)
    full.rollout(zc, pc, a, pa)
    assert seen_full == [(T + h) * model.num_tokens for h in range(5)]


class _CountingEncoder:
    """Encodes uint8 images (M, Hi, Wi, 3) to fixed random tokens and counts the images it saw."""

    def __init__(self, N, D):
        self.N, self.D, self.images = N, D, []
        self.proj = torch.randn(3, N * D, generator=torch.Generator().manual_seed(0))

    def encode(self, images):
        images = torch.as_tensor(images)
        self.images.append(images.shape[0])
        mean = images.float().mean(dim=(1, 2)) / 255  # (M, 3)
        return (mean @ self.proj).reshape(-1, self.N, self.D)


@pytest.mark.parametrize("per_candidate", [True, False])
def test_reference_plan_encodes_the_observation_per_candidate(per_candidate):
    model = _model("tiny", 4, 8)
    enc = _CountingEncoder(4, 8)
    ref = ReferenceWorldModel(model, encoder=enc)
    _, pc, _, pa = _inputs(model, B=2, T=1)
    images = torch.randint(0, 255, (2, 1, 8, 8, 3), dtype=torch.uint8)
    goals = torch.randint(0, 255, (2, 8, 8, 3), dtype=torch.uint8)
    S, iters = 16, 3
    low, high = -torch.ones(A), torch.ones(A)
    plan, _ = reference_cem_plan(ref, None, pc, None, pa, low, high, samples=S, iterations=iters, topk=4,
                                 images=images, goal_images=goals, encode_per_candidate=per_candidate)
    assert plan.shape == (2, 5, A)
    per_env = [1] + ([S] * iters if per_candidate else [1])  # the goal once, then the observation
    assert enc.images == per_env * 2
    # the encoded copies are the context: the plan equals planning from the tokens themselves
    z = enc.encode(images.reshape(2, 8, 8, 3)).reshape(2, 1, 4, 8)
    plan2, _ = reference_cem_plan(ref, z, pc, enc.encode(goals), pa, low, high, samples=S,
                                  iterations=iters, topk=4)
    torch.testing.assert_close(plan, plan2)


def test_reference_encoder_comes_from_the_model_or_is_required():
    model = _model("tiny", 4, 8)
    with pytest.raises(RuntimeError, match="encoder"):
        ReferenceWorldModel(model).encode(torch.zeros(1, 8, 8, 3, dtype=torch.uint8))
    enc = _CountingEncoder(4, 8)
    object.__setattr__(model, "encoder", enc)  # what WorldModel.attach_encoder stores
    assert ReferenceWorldModel(model).encoder is enc


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
