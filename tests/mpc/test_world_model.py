"""WorldModel: training loss, rollout semantics (batching, caching), checkpoints, input checks."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from encoders.base import Encoder
from mpc.predictor import PredictorConfig
from mpc.world_model import (FORMAT_VERSION, WorldModel, WorldModelConfig, config_from_preset,
                             load_preset)

N, D, A, P = 4, 8, 2, 3


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/mpc/conftest.py



def make_model(kind="transformer", frameskip=1, N=N, D=D, seed=0, **pred):
    base = dict(kind=kind, depth=2, heads=4, dim=32, mlp_dim=64, dropout=0.0, num_hist=3)
    base.update(pred)
    cfg = WorldModelConfig(num_tokens=N, token_dim=D, env_action_dim=A, proprio_dim=P,
                           frameskip=frameskip, predictor=PredictorConfig(**base))
    torch.manual_seed(seed)
    m = WorldModel(cfg).eval()
    m.set_normalization({"action_mean": [0.1, -0.2], "action_std": [0.5, 2.0],
                         "proprio_mean": [1.0, 0.0, -1.0], "proprio_std": [1.0, 3.0, 0.5]})
    return m


def context(B=None, T=3, S=5, H=4, Am=A, n=N, d=D, seed=0):
    g = torch.Generator().manual_seed(seed)
    lead = () if B is None else (B,)
    return (torch.randn(*lead, T, n, d, generator=g), torch.randn(*lead, T, P, generator=g),
            torch.randn(*lead, S, H, Am, generator=g), torch.randn(*lead, T - 1, Am, generator=g))


class FakeEncoder(Encoder):
    backend, variant = "fake", "t"

    def __init__(self, scale=1.0):
        super().__init__(image_size=8)
        self.w = torch.nn.Parameter(torch.full((N, D), scale))

    num_tokens = property(lambda self: N)
    dim = property(lambda self: D)

    def forward_tokens(self, x):
        return x.mean((1, 2, 3))[:, None, None] * self.w


# --- normalisation and training -----------------------------------------------------------------
def test_normalization_tiles_env_stats_over_frameskip():
    m = make_model(frameskip=3)
    assert m.action_dim == 6
    assert m.action_mean.tolist() == pytest.approx([0.1, -0.2] * 3)
    assert m.action_std.tolist() == [0.5, 2.0] * 3
    with pytest.raises(ValueError, match="expected A=2 or Am=6"):
        m.set_normalization({"action_mean": [0.0] * 4, "action_std": [1.0] * 4,
                             "proprio_mean": [0.0] * P, "proprio_std": [1.0] * P})
    with pytest.raises(ValueError, match="positive"):
        m.set_normalization({"action_mean": [0.0] * 2, "action_std": [0.0, 1.0],
                             "proprio_mean": [0.0] * P, "proprio_std": [1.0] * P})


def test_normalization_is_applied_inside():
    """Raw inputs shifted with the stats give the same predictions as normalised inputs."""
    m = make_model()
    z, p, a, _ = context(B=2, T=4, S=1, H=1)
    a = torch.randn(2, 3, A)
    zp, pp = m(z, p, a)
    m2 = make_model()
    m2.set_normalization({"action_mean": [0.0] * A, "action_std": [1.0] * A,
                          "proprio_mean": [0.0] * P, "proprio_std": [1.0] * P})
    zq, pq = m2(z, (p - m.proprio_mean) / m.proprio_std, (a - m.action_mean) / m.action_std)
    torch.testing.assert_close(zp, zq)
    torch.testing.assert_close(pp, pq)


@pytest.mark.parametrize("kind", ["transformer", "mlp"])
def test_tiny_model_overfits_tiny_dataset(kind):
    torch.manual_seed(0)
    n = N if kind == "transformer" else 1
    m = make_model(kind, N=n).train()
    batch = {"z": torch.randn(8, 4, n, D), "proprio": torch.randn(8, 4, P),
             "actions": torch.randn(8, 3, A)}
    first, metrics = fit(m, batch)
    assert set(metrics) == {"loss", "z_loss", "proprio_loss"}
    assert metrics["loss"] < first["loss"] / 10


def fit(m, batch, steps=150):
    """Adam on one batch: the metrics of the first and the last step."""
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    first = None
    for _ in range(steps):
        loss, metrics = m.loss(batch)
        first = first or metrics
        opt.zero_grad()
        loss.backward()
        opt.step()
    return first, metrics


@pytest.mark.parametrize("kind,time_encoding", [("transformer", "rope"), ("transformer", "absolute"),
                                                ("mlp", "rope")])
def test_rollout_loss_is_the_error_of_the_planning_rollout(kind, time_encoding):
    """The multi-step term is the MSE of what rollout() predicts for the window's last num_pred
    frames from its first num_hist, and is added with its weight to the teacher-forced loss."""
    n = N if kind == "transformer" else 1
    m = make_model(kind, N=n, num_pred=3, time_encoding=time_encoding)
    m.config.rollout_loss_weight = 0.5
    g = torch.Generator().manual_seed(1)
    batch = {"z": torch.randn(4, 6, n, D, generator=g), "proprio": torch.randn(4, 6, P, generator=g),
             "actions": torch.randn(4, 5, A, generator=g)}
    loss, metrics = m.loss(batch)
    with torch.no_grad():
        zr, pr = m.rollout(batch["z"][:, :3], batch["proprio"][:, :3], batch["actions"][:, None, 2:],
                           past_actions=batch["actions"][:, :2])  # (B, 1, 3, ...)
    rz = torch.mean((zr[:, 0] - batch["z"][:, 3:]) ** 2)
    rp = torch.mean((m._norm_proprio(pr[:, 0]) - m._norm_proprio(batch["proprio"][:, 3:])) ** 2)
    assert metrics["rollout_z_loss"] == pytest.approx(float(rz), rel=1e-4)
    assert metrics["rollout_proprio_loss"] == pytest.approx(float(rp), rel=1e-4)
    teacher = metrics["z_loss"] + metrics["proprio_loss"]
    assert loss.item() == pytest.approx(teacher + 0.5 * float(rz + rp), rel=1e-4)
    m.config.rollout_loss_weight = 0.0
    assert m.loss(batch)[0].item() == pytest.approx(teacher, rel=1e-5)


def test_rollout_loss_trains_the_model_on_its_own_predictions():
    """Gradients flow through the fed-back steps: fitting with the multi-step term drives the
    rolled-out error of a tiny dataset down."""
    torch.manual_seed(0)
    m = make_model(num_pred=3).train()
    m.config.rollout_loss_weight = 1.0
    batch = {"z": torch.randn(8, 6, N, D), "proprio": torch.randn(8, 6, P), "actions": torch.randn(8, 5, A)}
    first, metrics = fit(m, batch)
    assert metrics["rollout_z_loss"] < first["rollout_z_loss"] / 5


@pytest.mark.parametrize("kind", ["transformer", "mlp", "gru"])
def test_gradients_through_the_cached_rollout_equal_the_recomputed_ones(kind):
    """The multi-step loss backpropagates through the planning rollout's KV cache (written in place
    into a ring) and the vector predictors' state: the same gradients as the full recompute."""
    n = N if kind == "transformer" else 1
    m = make_model(kind, N=n, num_pred=3)
    g = torch.Generator().manual_seed(1)
    z, p, a = torch.randn(4, 6, n, D, generator=g), torch.randn(4, 6, P, generator=g), torch.randn(4, 5, A, generator=g)
    pn, an = m._norm_proprio(p), m._norm_actions(a)
    args = (z[:, :3], pn[:, :3], an[:, :2], an[:, 2:].unsqueeze(1))
    grads = []
    for run in (m._rollout_cached, m._rollout_recompute):
        m.zero_grad()
        zr, pr = run(*args)
        (((zr[:, 0] - z[:, 3:]) ** 2).mean() + ((pr[:, 0] - pn[:, 3:]) ** 2).mean()).backward()
        grads.append(torch.cat([q.grad.flatten() for q in m.parameters() if q.grad is not None]))
    assert grads[0].abs().max() > 0
    torch.testing.assert_close(grads[0], grads[1], atol=1e-5, rtol=1e-4)


def test_rollout_loss_options_are_checked():
    pred = PredictorConfig(kind="transformer", depth=1, heads=2, dim=16, mlp_dim=16, num_hist=3)
    with pytest.raises(ValueError, match="num_pred >= 2"):
        WorldModelConfig(num_tokens=N, token_dim=D, env_action_dim=A, proprio_dim=P, predictor=pred,
                         rollout_loss_weight=1.0)
    pred.num_pred = 2
    with pytest.raises(ValueError, match="ensemble=1"):
        WorldModelConfig(num_tokens=N, token_dim=D, env_action_dim=A, proprio_dim=P, predictor=pred,
                         rollout_loss_weight=1.0, ensemble=2)
    with pytest.raises(ValueError, match=">= 0"):
        WorldModelConfig(num_tokens=N, token_dim=D, env_action_dim=A, proprio_dim=P, predictor=pred,
                         rollout_loss_weight=-1.0)


# --- rollout ----------------------------------------------------------------------------------------
def test_rollout_feeds_predictions_back_like_teacher_forcing():
    """Step h of a rollout equals forward() on the sequence made of the earlier predictions."""
    m = make_model()
    zc, pc, a, pa = context(T=3, S=1, H=3)
    with torch.no_grad():
        zr, pr = m.rollout(zc, pc, a, pa)
        zs = torch.cat([zc, zr[0, :2]])[None]  # (1, 5, N, D)
        ps = torch.cat([pc, pr[0, :2]])[None]
        zf, pf = m(zs.new_zeros(1, 6, N, D).index_copy(1, torch.arange(5), zs),
                   torch.cat([ps, ps[:, -1:]], 1), torch.cat([pa, a[0]])[None])
    torch.testing.assert_close(zr[0], zf[0, 2:], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(m._norm_proprio(pr[0]), pf[0, 2:], atol=1e-5, rtol=1e-5)


def test_rollout_candidates_equal_separate_rollouts():
    m = make_model()
    zc, pc, a, pa = context(S=6, H=4)
    with torch.no_grad():
        zb, pb = m.rollout(zc, pc, a, pa)
        for s in range(6):
            zs, ps = m.rollout(zc, pc, a[s:s + 1], pa)
            torch.testing.assert_close(zb[s:s + 1], zs, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(pb[s:s + 1], ps, atol=1e-5, rtol=1e-5)


def test_rollout_envs_equal_separate_rollouts():
    m = make_model()
    zc, pc, a, pa = context(B=3, S=4, H=3)
    with torch.no_grad():
        zb, pb = m.rollout(zc, pc, a, pa)
        assert zb.shape == (3, 4, 3, N, D) and pb.shape == (3, 4, 3, P)
        for b in range(3):
            zs, ps = m.rollout(zc[b], pc[b], a[b], pa[b])
            torch.testing.assert_close(zb[b], zs, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(pb[b], ps, atol=1e-5, rtol=1e-5)


def _preset_model(name, seed=0, **over):
    """A preset's structure at test size (fewer tokens, thinner, shallower)."""
    pre = load_preset(name)
    pre["predictor"].update(dropout=0.0, **over)
    if pre["predictor"]["kind"] == "transformer":
        pre["predictor"].update(depth=min(pre["predictor"]["depth"], 3), mlp_dim=64,
                                dim=pre["predictor"]["heads"] * 4)
    pre.update(num_tokens=None, token_dim=None)
    n = 1 if pre["predictor"]["kind"] != "transformer" else N
    cfg = config_from_preset(pre, num_tokens=n, token_dim=D, env_action_dim=A, proprio_dim=P)
    torch.manual_seed(seed)
    return WorldModel(cfg).eval(), n


@pytest.mark.parametrize("name,over", [("tiny", {}), ("dino_wm", {}), ("tiny_mlp", {}),
                                       ("tiny_mlp", {"kind": "gru"}), ("tiny", {"join": "add"}),
                                       ("dino_wm", {"time_encoding": "absolute"})],
                         ids=["tiny", "dino_wm", "tiny_mlp", "gru", "tiny-add", "dino_wm-absolute"])
def test_cached_rollout_equals_uncached(name, over):
    m, n = _preset_model(name, **over)
    Am = m.action_dim
    for T in (1, 2, 5):  # shorter, equal and longer context than the window
        zc, pc, a, pa = context(B=2, T=T, S=3, H=5, Am=Am, n=n)
        with torch.no_grad():
            z1, p1 = m.rollout(zc, pc, a, pa, use_cache=True)
            z2, p2 = m.rollout(zc, pc, a, pa, use_cache=False)
        torch.testing.assert_close(z1, z2, atol=1e-5, rtol=0)
        torch.testing.assert_close(p1, p2, atol=1e-5, rtol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", ["tiny", "dino_wm"])
def test_cuda_rollout_matches_cpu_float32(name):
    """The CUDA rollout (float32, bf16 autocast, compiled step) against the CPU float32 one."""
    cpu = _preset_model(name)[0]
    zc, pc, a, pa = context(B=2, T=3, S=16, H=5, Am=cpu.action_dim)
    with torch.no_grad():
        ref, pref = cpu.rollout(zc, pc, a, pa)

    def on_cuda(**over):
        m = _preset_model(name, **over)[0].to("cuda")
        with torch.no_grad():
            z, p = m.rollout(*(x.cuda() for x in (zc, pc, a, pa)))
        assert z.dtype == torch.float32 and z.is_cuda
        return z.cpu(), p.cpu()

    z, p = on_cuda()
    torch.testing.assert_close(z, ref, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(p, pref, atol=1e-4, rtol=1e-4)
    for over in ({"autocast_bf16": True}, {"autocast_bf16": True, "compile": True}):
        z, p = on_cuda(**over)
        rel = ((z - ref).norm() / ref.norm()).item()  # bf16 keeps 8 bits of mantissa: ~1e-2 after 5 steps
        assert rel < 3e-2, (over, rel)


def test_rollout_is_differentiable_in_actions():
    m = make_model()
    zc, pc, a, pa = context(S=2, H=3)
    a.requires_grad_(True)
    z, p = m.rollout(zc, pc, a, pa)
    z.square().sum().backward()
    assert a.grad is not None and a.grad.abs().sum() > 0


def test_rollout_past_actions_matter_and_default_to_zero():
    m = make_model()
    zc, pc, a, pa = context(T=3)
    with torch.no_grad():
        z0, _ = m.rollout(zc, pc, a)
        zz, _ = m.rollout(zc, pc, a, torch.zeros_like(pa))
        z1, _ = m.rollout(zc, pc, a, pa)
    torch.testing.assert_close(z0, zz)
    assert (z1 - z0).abs().max() > 1e-4


# --- input checks -----------------------------------------------------------------------------------
def test_bad_inputs_raise_clear_errors():
    m = make_model()
    zc, pc, a, pa = context()
    with pytest.raises(ValueError, match="z_context must have shape"):
        m.rollout(zc[..., :-1], pc, a)
    with pytest.raises(ValueError, match="actions must have shape"):
        m.rollout(zc, pc, a[..., :1])
    bad = zc.clone()
    bad[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        m.rollout(bad, pc, a)
    with pytest.raises(ValueError, match="same B and T"):
        m.rollout(zc, pc[:2], a)
    with pytest.raises(ValueError, match="past_actions"):
        m.rollout(zc, pc, a, pa[:1])
    with pytest.raises(ValueError, match="L-1"):
        m(zc[None], pc[None], pa[None, :1])
    with pytest.raises(ValueError, match="lacks 'actions'"):
        m.loss({"z": zc[None], "proprio": pc[None]})
    with pytest.raises(RuntimeError, match="no encoder"):
        m.encode(torch.zeros(1, 8, 8, 3, dtype=torch.uint8))


# --- checkpoints ------------------------------------------------------------------------------------
def test_save_load_roundtrip(tmp_path):
    enc = FakeEncoder()
    m = make_model(frameskip=2)
    m.config.encoder_fingerprint = enc.fingerprint
    path = m.save(tmp_path / "wm.safetensors")
    assert [p.name for p in tmp_path.iterdir()] == ["wm.safetensors"]  # no temp files left
    m2 = WorldModel.load(path, encoder=enc)
    assert m2.config == m.config and m2.frameskip == 2 and m2.num_hist == 3
    zc, pc, a, pa = context(Am=4)
    with torch.no_grad():
        z1, p1 = m.rollout(zc, pc, a, pa)
        z2, p2 = m2.rollout(zc, pc, a, pa)
    assert torch.equal(z1, z2) and torch.equal(p1, p2)
    assert torch.equal(m2.action_std, m.action_std)
    img = torch.randint(0, 255, (2, 8, 8, 3), dtype=torch.uint8)
    torch.testing.assert_close(m2.encode(img), enc.encode(img))


def test_killed_save_keeps_previous_checkpoint(tmp_path, monkeypatch):
    m = make_model()
    path = m.save(tmp_path / "wm.safetensors")
    before = path.read_bytes()
    m2 = make_model(seed=1)

    def boom(src, dst):
        with open(src, "r+b") as f:  # a half-written temp file, then the process dies
            f.truncate(100)
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(KeyboardInterrupt):
        m2.save(path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["wm.safetensors"]
    loaded = WorldModel.load(path)
    assert torch.equal(loaded.predictor.head.weight, m.predictor.head.weight)


def test_load_errors(tmp_path):
    m = make_model()
    path = m.save(tmp_path / "wm.safetensors")
    # corrupt / truncated file
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ValueError, match="corrupt"):
        WorldModel.load(bad)
    with pytest.raises(FileNotFoundError):
        WorldModel.load(tmp_path / "missing.safetensors")
    # other format version
    from safetensors.torch import load_file, save_file
    header = WorldModel.read_header(path)
    header["format_version"] = FORMAT_VERSION + 1
    old = tmp_path / "v2.safetensors"
    save_file(load_file(path), old, metadata={"wmpc_world_model": json.dumps(header)})
    with pytest.raises(ValueError, match="format version"):
        WorldModel.load(old)
    # encoder fingerprint mismatch
    m.config.encoder_fingerprint = FakeEncoder(1.0).fingerprint
    m.save(path)
    with pytest.raises(ValueError, match="fingerprint"):
        WorldModel.load(path, encoder=FakeEncoder(2.0))
    # time encoding is part of the model
    want = WorldModelConfig.from_dict(m.config.to_dict())
    want.predictor.time_encoding = "absolute"
    with pytest.raises(ValueError, match="time_encoding"):
        WorldModel.load(path, config=want)
    with pytest.raises(ValueError, match="runtime options"):
        WorldModel.load(path, overrides={"depth": 4})
    assert WorldModel.load(path, overrides={"attn_backend": "math"}).config.predictor.attn_backend == "math"


def test_preset_checks_latent_shape():
    with pytest.raises(ValueError, match="expects num_tokens=196"):
        config_from_preset("dino_wm", num_tokens=64, token_dim=384, env_action_dim=2, proprio_dim=4)
    cfg = config_from_preset("dino_wm", num_tokens=196, token_dim=384, env_action_dim=2, proprio_dim=4)
    assert cfg.action_dim == 10 and cfg.predictor.depth == 6 and cfg.predictor.heads == 16
    with pytest.raises(ValueError, match="unknown model preset"):
        load_preset("huge")


def test_runtime_switches_keep_results():
    """attn_backend=math and bf16 autocast (a no-op off CUDA) leave CPU rollouts unchanged."""
    m = make_model()
    m2 = make_model(attn_backend="math", autocast_bf16=True)
    zc, pc, a, pa = context()
    with torch.no_grad():
        z1, _ = m.rollout(zc, pc, a, pa)
        z2, _ = m2.rollout(zc, pc, a, pa)
    torch.testing.assert_close(z1, z2, atol=1e-5, rtol=1e-5)


def test_load_rebuilds_the_checkpoint_encoder(tmp_path):
    import encoders
    from mpc.world_model import WorldModel, config_from_preset

    opts = {"weights": "random", "image_size": 28, "tokens": "pooled"}
    enc = encoders.make_encoder("dinov2", **opts)
    cfg = config_from_preset("tiny_mlp", num_tokens=1, token_dim=enc.dim, env_action_dim=2, proprio_dim=3,
                             encoder="dinov2", encoder_options=opts)
    model = WorldModel(cfg, encoder=enc)
    path = model.save(tmp_path / "m.safetensors")
    img = np.random.default_rng(0).integers(0, 256, (2, 28, 28, 3), dtype=np.uint8)
    loaded = WorldModel.load(path)
    assert loaded.encoder is not None
    torch.testing.assert_close(loaded.encode(img), model.encode(img))
    # an encoder that cannot be rebuilt: the model still loads, encode() says why
    cfg2 = config_from_preset("tiny_mlp", num_tokens=1, token_dim=enc.dim, env_action_dim=2, proprio_dim=3,
                              encoder="dinov2", encoder_options={"weights": str(tmp_path / "missing.pth")})
    path2 = WorldModel(cfg2).save(tmp_path / "m2.safetensors")
    bare = WorldModel.load(path2)
    with pytest.raises(RuntimeError, match="missing.pth"):
        bare.encode(img)


@pytest.mark.parametrize("name,over", [("tiny", {}), ("tiny_mlp", {}), ("tiny_mlp", {"kind": "gru"})],
                         ids=["tiny", "tiny_mlp", "gru"])
def test_rollout_without_prefix_sharing_equals_shared(name, over):
    """share_prefix=False runs the context once per candidate: same predictions."""
    m, n = _preset_model(name, **over)
    zc, pc, a, pa = context(B=2, T=3, S=4, H=3, Am=m.action_dim, n=n)
    with torch.no_grad():
        z1, p1 = m.rollout(zc, pc, a, pa)
        z2, p2 = m.rollout(zc, pc, a, pa, share_prefix=False, max_batch=6)  # chunks of 3 candidates
    torch.testing.assert_close(z1, z2, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(p1, p2, atol=1e-5, rtol=1e-5)


def test_residual_predictor_starts_as_copy_last_and_its_cache_stays_exact():
    m, n = _preset_model("tiny", residual=True)
    zc, pc, a, pa = context(B=2, T=3, S=3, H=4, Am=m.action_dim, n=n)
    with torch.no_grad():
        z, _ = m.rollout(zc, pc, a, pa)  # (B, S, H, N, D)
        torch.testing.assert_close(z, zc[:, -1][:, None, None].expand_as(z))  # untrained: copies the last frame
        for p in m.predictor.head.parameters():  # a learned change
            p.copy_(0.1 * torch.randn_like(p))
        z1, p1 = m.rollout(zc, pc, a, pa, use_cache=True)
        z2, p2 = m.rollout(zc, pc, a, pa, use_cache=False)
    torch.testing.assert_close(z1, z2, atol=1e-5, rtol=0)
    torch.testing.assert_close(p1, p2, atol=1e-5, rtol=0)
    assert (z1 - zc[:, -1][:, None, None]).abs().max() > 1e-3
    zt, _ = m(torch.cat([zc, z1[:, 0, :1]], 1), torch.cat([pc, p1[:, 0, :1]], 1), torch.cat([pa, a[:, 0, :1]], 1))
    torch.testing.assert_close(zt[:, -1], z1[:, 0, 0], atol=1e-5, rtol=0)  # teacher forcing: the same step


def test_cpu_rollout_over_many_candidates_runs_the_mlp_in_chunks_with_the_same_values(monkeypatch):
    """Above 2 x MLP_CHUNK_ROWS token rows a CPU rollout runs each block's MLP in row chunks (the hidden
    activations stay in cache); the values equal the one-pass MLP's, which autograd mode takes."""
    import mpc.attention as attention

    monkeypatch.setattr(attention, "MLP_CHUNK_ROWS", 16)  # small chunks: 3 envs x 8 candidates x N tokens
    m, n = _preset_model("dino_wm")
    calls = []
    original = attention.Block._mlp_in_chunks
    monkeypatch.setattr(attention.Block, "_mlp_in_chunks", lambda self, x: calls.append(x.shape) or original(self, x))
    zc, pc, a, pa = context(B=3, T=2, S=8, H=4, Am=m.action_dim, n=n)
    with torch.no_grad():
        z1, p1 = m.rollout(zc, pc, a, pa)
    assert calls  # the chunked path ran
    z2, p2 = m.rollout(zc, pc, a, pa)  # with autograd on: the plain MLP
    torch.testing.assert_close(z1, z2.detach(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(p1, p2.detach(), atol=1e-5, rtol=1e-5)
