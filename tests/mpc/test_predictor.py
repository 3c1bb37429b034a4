"""Predictor behaviour: frame causality, sliding window, exact KV caching, overfitting."""
from __future__ import annotations

import pytest
import torch

from mpc.predictor import PredictorConfig, frame_mask, make_predictor


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/mpc/conftest.py



def small(kind="transformer", **kw):
    base = dict(kind=kind, depth=2, heads=4, dim=32, mlp_dim=64, dropout=0.0, num_hist=3)
    base.update(kw)
    return PredictorConfig(**base)


def build(cfg, N=6, D=8, Am=3, P=2, seed=0):
    torch.manual_seed(seed)
    return make_predictor(cfg, N, D, Am, P).eval()


def inputs(B=2, Fr=6, N=6, D=8, Am=3, P=2, seed=1):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(B, Fr, N, D, generator=g), torch.randn(B, Fr, P, generator=g),
            torch.randn(B, Fr, Am, generator=g))


def test_frame_mask_sliding_window():
    m = frame_mask(4, 2, window=2)
    # token 0 of frame 2 (row 4) sees frames 1 and 2 only
    assert m[4].tolist() == [False, False, True, True, True, True, False, False]
    assert m.sum().item() == 2 * 2 * (1 + 2 + 2 + 2)


CAUSAL_CASES = [small(), small(time_encoding="absolute", num_hist=6), small(join="add"),
                small("mlp"), small("gru")]


@pytest.mark.parametrize("cfg", CAUSAL_CASES, ids=lambda c: f"{c.kind}-{c.time_encoding}-{c.join}")
def test_causality(cfg):
    N = 6 if cfg.kind == "transformer" else 1
    if cfg.time_encoding == "absolute":
        cfg.num_pred = 1
    pred = build(cfg, N=N)
    z, p, a = inputs(N=N)
    t = 2
    with torch.no_grad():
        zo, po = pred(z, p, a)
        z2, p2, a2 = z.clone(), p.clone(), a.clone()
        z2[:, t + 1:] += 5.0
        p2[:, t + 1:] -= 3.0
        a2[:, t + 1:] *= -2.0
        zo2, po2 = pred(z2, p2, a2)
        a3 = a.clone()
        a3[:, t] += 1.0
        zo3, _ = pred(z, p, a3)
    # outputs up to frame t ignore later frames and actions...
    torch.testing.assert_close(zo2[:, :t + 1], zo[:, :t + 1], atol=1e-6, rtol=0)
    torch.testing.assert_close(po2[:, :t + 1], po[:, :t + 1], atol=1e-6, rtol=0)
    assert (zo2[:, t + 1:] - zo[:, t + 1:]).abs().max() > 1e-3
    # ...but do depend on the action taken at t
    assert (zo3[:, t] - zo[:, t]).abs().max() > 1e-4
    torch.testing.assert_close(zo3[:, :t], zo[:, :t], atol=1e-6, rtol=0)


def test_rope_single_layer_sees_only_window():
    pred = build(small(depth=1, num_hist=2))
    z, p, a = inputs()
    with torch.no_grad():
        zo, _ = pred(z, p, a)
        z2 = z.clone()
        z2[:, 1] += 5.0  # outside frame 3's window (frames 2, 3) for a single layer
        zo2, _ = pred(z2, p, a)
    torch.testing.assert_close(zo2[:, 3:], zo[:, 3:], atol=1e-5, rtol=0)
    assert (zo2[:, 2] - zo[:, 2]).abs().max() > 1e-3


def test_rope_is_shift_invariant():
    """Per-frame outputs depend on relative frame distances only (what makes the cache exact)."""
    pred = build(small(num_hist=2, depth=1))
    z, p, a = inputs(Fr=5)
    with torch.no_grad():
        full, _ = pred(z, p, a)
        tail, _ = pred(z[:, 2:], p[:, 2:], a[:, 2:])
    # with one layer and window 2, frame 3 sees frames 2, 3 in both runs
    torch.testing.assert_close(tail[:, 1:], full[:, 3:], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("cfg", [small(), small(join="add", rope_fraction=1.0), small("mlp"), small("gru")],
                         ids=["rope-concat", "rope-add", "mlp", "gru"])
def test_prefill_step_equals_forward(cfg):
    N = 6 if cfg.kind == "transformer" else 1
    pred = build(cfg, N=N)
    z, p, a = inputs(N=N, Fr=7)
    with torch.no_grad():
        ref, pref = pred(z, p, a)  # (B, F, N, D)
        cache = pred.prefill(z[:, :3], p[:, :3], a[:, :3])
        outs = []
        for t in range(3, 7):
            zo, po, cache = pred.step(cache, z[:, t:t + 1], p[:, t:t + 1], a[:, t:t + 1])
            outs.append(zo[:, 0])
    torch.testing.assert_close(torch.stack(outs, 1), ref[:, 3:], atol=1e-5, rtol=1e-5)


def test_bad_config():
    with pytest.raises(ValueError, match="divisible"):
        PredictorConfig(dim=30, heads=4)
    with pytest.raises(ValueError, match="time_encoding"):
        PredictorConfig(time_encoding="sinusoid")
    with pytest.raises(ValueError, match="N = 1"):
        make_predictor(PredictorConfig(kind="mlp"), 4, 8, 2, 2)
    with pytest.raises(ValueError, match="unknown predictor options"):
        PredictorConfig.from_dict({"depht": 3})


def test_default_width_rounds_to_heads():
    cfg = PredictorConfig(depth=1, heads=16, dim=None, mlp_dim=32)
    pred = make_predictor(cfg, 4, 384, 10, 4)
    assert pred.width == 416 and pred.width % 16 == 0  # 384 + 10 + 10 = 404 -> 416


@pytest.mark.parametrize("masked", [None, "bool", "float"])
def test_small_tile_attention_equals_sdpa(monkeypatch, masked):
    """CPU inference on small score tiles runs plain matmuls (faster than CPU SDPA there); the
    values are SDPA's, with and without a mask and with keys from earlier frames."""
    import mpc.attention as A
    torch.manual_seed(0)
    attn = A.Attention(32, 4, 0.0).eval()
    x, past = torch.randn(5, 3, 6, 32), [(torch.randn(5, 3, 4, 12, 8), torch.randn(5, 3, 4, 12, 8))]
    mask = None
    if masked:  # the frame's 6 queries over 12 earlier keys and its own 6, some hidden
        mask = torch.ones(6, 18, dtype=torch.bool)
        mask[:3, :4] = False
        if masked == "float":  # SDPA's additive form
            mask = torch.zeros(6, 18).masked_fill(~mask, float("-inf"))
    with torch.no_grad():
        q = torch.randn(5, 3, 4, 6, 8)
        assert not A._small_tiles_on_cpu(torch.randn(1, 4, 196, 8), torch.randn(1, 4, 588, 8))
        assert not A._small_tiles_on_cpu(q, past[0][0], dropout=0.1)  # dropout is SDPA's to apply
        calls = []
        small = A._small_tile_attention
        monkeypatch.setattr(A, "_small_tile_attention", lambda *a: calls.append(1) or small(*a))
        fast, kf, vf = attn(x, None, mask=mask, past=past)
        assert calls == [1]  # the matmul path ran
        monkeypatch.setattr(A, "SMALL_TILE", 0)  # every tile to SDPA
        ref, kr, vr = attn(x, None, mask=mask, past=past)
        assert calls == [1]  # ... and SDPA the second time
    torch.testing.assert_close(fast, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(kf, kr)
    with torch.enable_grad():  # training keeps SDPA (the in-place softmax has no gradient)
        assert not A._small_tiles_on_cpu(q, past[0][0])
