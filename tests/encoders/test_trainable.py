"""Trainable encoders (vae, diffusion, jepa, transporter): shapes, errors, losses, checkpoints and train-encoder."""
from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

import encoders
from encoders.diffusion import flow_matching_loss
from encoders.jepa import jepa_regularizer

SIZE = 32
BACKENDS = ("vae", "diffusion", "jepa", "transporter")
SMALL = {"vae": dict(dim=8, width=8), "diffusion": dict(dim=8, width=8), "jepa": dict(dim=8, width=8, hidden=32),
         "transporter": dict(num_keypoints=4, width=8, refine_width=8)}


def render_dots(pos: np.ndarray, size: int = SIZE) -> np.ndarray:
    """Dark disc at ``pos (M, 2)`` in [-1, 1] on a light floor -> uint8 ``(M, size, size, 3)``."""
    c = (np.arange(size) + 0.5) / size * 2 - 1
    yy, xx = np.meshgrid(c, c, indexing="ij")
    d = np.sqrt((xx - pos[:, 0, None, None]) ** 2 + (yy - pos[:, 1, None, None]) ** 2)
    disc = np.clip((0.15 - d) * size / 2 + 0.5, 0, 1)[..., None]  # (M, S, S, 1)
    img = np.array([0.85, 0.8, 0.7]) * (1 - disc) + np.array([0.1, 0.6, 0.2]) * disc
    return (img * 255).round().astype(np.uint8)


def write_dot_dataset(root: Path, episodes: int = 6, steps: int = 20, seed: int = 0, states: bool = False) -> Path:
    """A tiny dataset in the wmpc layout: a dot moved by 2-D actions (``states``: also record the
    dot's position as the simulator state)."""
    rng = np.random.default_rng(seed)
    (root / "episodes").mkdir(parents=True)
    for e in range(episodes):
        a = rng.uniform(-1, 1, (steps, 2)).astype(np.float32)
        pos = np.empty((steps + 1, 2), np.float32)
        pos[0] = rng.uniform(-0.8, 0.8, 2)
        for t in range(steps):
            pos[t + 1] = np.clip(pos[t] + 0.15 * a[t], -0.8, 0.8)
        with h5py.File(root / "episodes" / f"episode_{e:06d}.h5", "w") as f:
            f["pixels"], f["proprio"], f["actions"] = render_dots(pos), pos, a
            if states:
                f["states"] = pos.astype(np.float64)
            f.attrs["length"], f.attrs["seed"], f.attrs["complete"] = steps, e, True
    (root / "dataset.json").write_text(json.dumps({"format_version": 1, "episodes": episodes, "env": "dots"}))
    (root / "stats.json").write_text(json.dumps({"action_mean": [0.0, 0.0], "action_std": [0.58, 0.58],
                                                 "proprio_mean": [0.0, 0.0], "proprio_std": [0.5, 0.5]}))
    return root


@pytest.fixture(scope="module")
def dots(tmp_path_factory) -> Path:
    return write_dot_dataset(tmp_path_factory.mktemp("dots"))


def _make(name, **kw):
    opts = dict(SMALL[name], image_size=SIZE)
    opts.update(kw)
    return encoders.make_encoder(name, weights="random", **opts)


# --- shapes and errors ----------------------------------------------------------------------------
@pytest.mark.parametrize("name,tokens,n", [("vae", "vector", 1), ("vae", "grid", 16), ("vae", "keypoints", 1),
                                           ("diffusion", "vector", 1), ("diffusion", "grid", 16),
                                           ("diffusion", "keypoints", 1)])
def test_encode_decode_shapes_and_range(name, tokens, n):
    enc = _make(name, tokens=tokens, grid_size=4)
    imgs = render_dots(np.array([[0.0, 0.0], [0.5, -0.5], [-0.3, 0.7]]))
    z = enc.encode(imgs)
    assert z.shape == (3, n, 8) and z.dtype == torch.float32
    assert (enc.num_tokens, enc.dim, enc.token_mode) == (n, 8, tokens)
    x = enc.decode(z, steps=2) if name == "diffusion" else enc.decode(z)
    assert x.shape == (3, 3, SIZE, SIZE) and 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    # uint8 HWC and float CHW inputs give the same tokens; a larger frame is resized
    assert torch.allclose(enc.encode(torch.from_numpy(imgs).permute(0, 3, 1, 2) / 255.0), z, atol=1e-5)
    assert enc.encode(np.repeat(np.repeat(imgs, 2, 1), 2, 2)).shape == z.shape
    with pytest.raises(ValueError, match="tokens of shape"):
        enc.decode(z[:, :, :4])


def test_keypoint_tokens_follow_the_dot():
    from encoders._conv import SpatialSoftmax

    f = torch.full((1, 1, 16, 16), -30.0)
    f[0, 0, 4, 12] = 30.0  # a single peak at row 4, column 12
    xy = SpatialSoftmax()(f)[0, 0]
    c = torch.linspace(-1, 1, 16)
    assert torch.allclose(xy, torch.stack([c[12], c[4]]), atol=1e-4)


@pytest.mark.parametrize("tokens", ["vector", "keypoints"])
def test_jepa_tokens_and_predictor(tokens):
    enc = _make("jepa", num_tokens=3, action_dim=4, tokens=tokens)
    z = enc.encode(render_dots(np.zeros((2, 2))))
    assert z.shape == (2, 3, 8) and enc.token_mode == f"{tokens}-multi"
    assert enc.predict(z, torch.zeros(2, 4)).shape == (2, 3, 8)
    with pytest.raises(ValueError, match="expected actions"):
        enc.predict(z, torch.zeros(2, 3))


@pytest.mark.parametrize("name", BACKENDS)
def test_bad_inputs_raise(name):
    enc = _make(name)
    with pytest.raises(ValueError, match="channels-last"):
        enc.encode(np.zeros((2, SIZE, SIZE, 4), np.uint8))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        enc.encode(torch.full((1, 3, SIZE, SIZE), 2.0))
    with pytest.raises(ValueError, match="dtype"):
        enc.encode(np.zeros((1, SIZE, SIZE, 3), np.int32))


def test_bad_options_raise():
    with pytest.raises(ValueError, match="tokens must be one of"):
        _make("vae", tokens="patch")
    with pytest.raises(ValueError, match="power of two"):
        _make("vae", tokens="grid", grid_size=3)
    with pytest.raises(ValueError, match="reg must be one of"):
        _make("jepa", reg="barlow")


# --- weights: untrained needs an explicit opt-in; checkpoints round-trip ----------------------------
@pytest.mark.parametrize("name", BACKENDS)
def test_untrained_requires_weights_random(name):
    with pytest.raises(ValueError, match="weights='random'"):
        encoders.make_encoder(name)
    with pytest.raises(ValueError, match="weights='random'"):
        encoders.make_encoder(name, weights="imagenet")
    enc = _make(name)
    assert enc.pretrained is False and enc.trainable is False
    assert "pretrained=False" in enc.fingerprint and f"w={enc.weights_digest()}" in enc.fingerprint
    assert _make(name, seed=1).fingerprint != enc.fingerprint  # the weights hash is in it


@pytest.mark.parametrize("name,tokens", [("vae", "vector"), ("vae", "keypoints"), ("diffusion", "grid"),
                                         ("jepa", "vector"), ("jepa", "keypoints")])
def test_checkpoint_roundtrip_and_frozen(name, tokens, tmp_path):
    enc = _make(name, seed=3, tokens=tokens)
    enc.unfreeze()
    assert enc.trainable and all(p.requires_grad for p in enc.parameters())
    with torch.no_grad():  # move away from the init so the roundtrip checks real values
        for p in enc.parameters():
            p.add_(0.01 * torch.randn_like(p))
    path = enc.save(tmp_path / "enc.safetensors")
    assert not list(tmp_path.glob("*.tmp"))  # atomic write leaves no temp file
    enc.freeze()
    imgs = render_dots(np.array([[0.1, 0.2], [-0.6, 0.4]]))
    loaded = encoders.make_encoder(name, checkpoint=path)
    assert type(loaded) is type(enc) and loaded.config == enc.config
    assert torch.equal(loaded.encode(imgs), enc.encode(imgs))
    assert loaded.fingerprint == enc.fingerprint.replace("pretrained=False", "pretrained=True")
    assert loaded.trainable is False and not loaded.training
    assert not any(p.requires_grad for p in loaded.parameters())
    assert not loaded.encode(imgs).requires_grad


def test_checkpoint_errors(tmp_path):
    enc = _make("vae")
    path = enc.save(tmp_path / "vae.safetensors")
    with pytest.raises(ValueError, match="holds a 'vae' encoder"):
        encoders.make_encoder("diffusion", checkpoint=path)
    with pytest.raises(ValueError, match="contradict"):
        encoders.make_encoder("vae", checkpoint=path, dim=16)
    # options at their defaults (what configs/encoder/vae.yaml passes with a checkpoint) leave the file's
    # architecture standing: a dim-8, width-8 checkpoint loads as such
    loaded = encoders.make_encoder("vae", checkpoint=path, dim=32, width=32, image_size=64 if SIZE != 64 else 32)
    assert loaded.dim == 8 and loaded.config["width"] == 8 and loaded.image_size == SIZE
    with pytest.raises(ValueError, match="not both"):
        encoders.make_encoder("vae", checkpoint=path, weights="random")
    with pytest.raises(FileNotFoundError, match="train-encoder"):
        encoders.make_encoder("vae", checkpoint=tmp_path / "missing.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    with pytest.raises(ValueError, match="could not read"):
        encoders.make_encoder("vae", checkpoint=bad)
    from safetensors.torch import save_file
    old = tmp_path / "old.safetensors"
    save_file(dict(enc.state_dict()), old, metadata={"format_version": "0", "backend": "vae", "config": "{}"})
    with pytest.raises(ValueError, match="format_version"):
        encoders.make_encoder("vae", checkpoint=old)


# --- losses ------------------------------------------------------------------------------------------
def test_flow_matching_loss_matches_hand_computation():
    g = torch.Generator().manual_seed(0)
    x1 = torch.rand(2, 3, 4, 4, generator=g) * 2 - 1
    x0 = torch.randn(2, 3, 4, 4, generator=g)
    z = torch.randn(2, 1, 5, generator=g)
    tau = torch.tensor([0.25, 0.75])

    def f(x_tau, t, zz):  # a known "denoiser": 0.5 * x_tau + t + mean(z)
        return 0.5 * x_tau + t.view(-1, 1, 1, 1) + zz.mean(dim=(1, 2)).view(-1, 1, 1, 1)

    total = 0.0
    for b in range(2):  # element by element, as written on paper
        t = float(tau[b])
        xt = (1 - t) * x0[b] + t * x1[b]
        pred = 0.5 * xt + t + float(z[b].mean())
        total += float(((pred - (x1[b] - x0[b])) ** 2).sum())
    expected = total / x1.numel()
    assert flow_matching_loss(f, x1, z, x0, tau).item() == pytest.approx(expected, rel=1e-6)
    # the ideal velocity field gives zero loss
    assert flow_matching_loss(lambda xt, t, zz: x1 - x0, x1, z, x0, tau).item() == 0.0
    # the model's method is the same function with its own denoiser
    enc = _make("diffusion")
    X1, X0, Z = x1.repeat(1, 1, 8, 8), x0.repeat(1, 1, 8, 8), torch.zeros(2, 1, 8)  # (2, 3, 32, 32)
    assert enc.flow_matching_loss(X1, Z, X0, tau).item() == pytest.approx(
        flow_matching_loss(enc.denoiser, X1, Z, X0, tau).item())


def test_foreground_weights_single_out_the_moving_dot():
    from encoders._trainable import TrainableEncoder

    x = _make("vae").preprocess(render_dots(np.array([[-0.5, -0.5], [0.0, 0.0], [0.5, 0.5], [0.5, -0.5]])))
    w = TrainableEncoder.foreground_weights(x, fg_weight=10.0)
    assert w.shape == (4, 1, SIZE, SIZE) and w.mean().item() == pytest.approx(1.0)
    c = SIZE // 2
    assert w[1, 0, c, c] > 5 * w[1, 0, 2, 2]  # the dot of frame 1 (at the centre) vs a floor pixel
    assert w[0, 0, c, c] == w[0, 0, 2, 2]  # frame 0 has floor at the centre
    assert TrainableEncoder.foreground_weights(x, fg_weight=0.0) is None


@pytest.mark.parametrize("kind", ["sigreg", "vicreg"])
def test_jepa_regularizer_rises_on_collapse(kind):
    g = torch.Generator().manual_seed(0)
    iso = torch.randn(512, 16, generator=g)
    kw = {"generator": torch.Generator().manual_seed(1)} if kind == "sigreg" else {}
    cases = {"iso": iso, "constant": torch.full((512, 16), 0.3),
             "low_rank": torch.randn(512, 2, generator=g) @ torch.randn(2, 16, generator=g) / 2,
             "shrunk": 0.05 * iso}
    r = {}
    for name, e in cases.items():
        if kind == "sigreg":
            kw["generator"].manual_seed(1)
        r[name] = jepa_regularizer(e, kind, **kw).item()
    assert r["iso"] < 0.2 * min(r["constant"], r["low_rank"], r["shrunk"]), r
    # tokens (B, N, D) are flattened into samples
    flat = [jepa_regularizer(e, kind, **({"generator": torch.Generator().manual_seed(2)} if kw else {})).item()
            for e in (iso.view(128, 4, 16), iso)]
    assert flat[0] == pytest.approx(flat[1])
    with pytest.raises(ValueError, match="reg must be one of"):
        jepa_regularizer(iso, "barlow")


# --- training ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,steps,factor", [("vae", 40, 0.8), ("diffusion", 40, 0.9), ("jepa", 80, 0.8),
                                               ("transporter", 40, 0.8)])
def test_training_loss_falls_and_checkpoint_loads(name, steps, factor, dots, tmp_path):
    """Loss over the last 10 steps below ``factor`` x the first 5 (flow matching has a high floor)."""
    from mpc.training import train_encoder

    out = tmp_path / name
    ckpt = train_encoder(name, dots, out, steps=steps, batch_size=16, lr=3e-3, save_every=25, progress=False,
                         encoder_options=dict(SMALL[name], image_size=SIZE))
    log = json.loads((out / "train_log.json").read_text())
    losses = np.array(log["loss"])
    assert len(losses) == steps and log["step"] == steps
    assert losses[-10:].mean() < factor * losses[:5].mean(), (losses[:5], losses[-10:])
    assert (out / "loss.png").stat().st_size > 0
    assert (out / "samples.png").exists() == (name in ("vae", "diffusion"))
    enc = encoders.make_encoder(name, checkpoint=ckpt)
    assert enc.pretrained and not enc.trainable and enc.image_size == SIZE


def test_jepa_embeddings_do_not_collapse(dots, tmp_path):
    from mpc.training import train_jepa

    ckpt = train_jepa(dots, tmp_path / "j", steps=40, batch_size=32, lr=3e-3, progress=False,
                      encoder_options=dict(SMALL["jepa"], image_size=SIZE))
    enc = encoders.make_encoder("jepa", checkpoint=ckpt)
    assert enc.action_dim == 2
    pos = np.random.default_rng(0).uniform(-0.8, 0.8, (128, 2))
    z = enc.encode(render_dots(pos))[:, 0]  # (128, D)
    assert z.std(0).mean() > 0.2  # spread out, not a point


def test_jepa_inverse_dynamics_head_learns_the_action_and_round_trips(dots, tmp_path):
    """idm_weight > 0 adds an inverse-dynamics head whose loss is part of training and falls: the latent
    comes to carry what the action moved. The head is saved with the encoder; checkpoints written before
    the option existed load with its default (no head)."""
    from safetensors.torch import save_file

    from mpc.training import train_jepa

    assert _make("jepa").idm is None
    with pytest.raises(ValueError, match="idm_weight"):
        _make("jepa", idm_weight=-1.0)
    enc = encoders.jepa.JEPAEncoder(**SMALL["jepa"], image_size=SIZE, idm_weight=1.0)  # trainable
    x, a = torch.randn(4, 3, SIZE, SIZE), torch.randn(4, 2)
    loss, metrics = enc.training_loss(x, a, torch.randn(4, 3, SIZE, SIZE))
    assert loss.item() == pytest.approx(metrics["pred"] + enc.reg_weight * metrics["reg"] + metrics["idm"], rel=1e-5)
    loss.backward()
    assert enc.idm[0].weight.grad.abs().sum() > 0

    out = tmp_path / "idm"
    ckpt = train_jepa(dots, out, steps=150, batch_size=32, lr=3e-3, progress=False,
                      encoder_options=dict(SMALL["jepa"], image_size=SIZE, idm_weight=1.0))
    trained = encoders.make_encoder("jepa", checkpoint=ckpt)
    assert trained.idm is not None and trained.idm_weight == 1.0
    # held-out transitions of the dot: the head recovers the normalised action far better than its mean
    rng = np.random.default_rng(7)
    pos = rng.uniform(-0.6, 0.6, (64, 2))
    act = rng.uniform(-1, 1, (64, 2))
    nxt = np.clip(pos + 0.15 * act, -0.8, 0.8)
    with torch.no_grad():
        z0 = trained.forward_tokens(trained.preprocess(render_dots(pos))).reshape(64, -1)
        z1 = trained.forward_tokens(trained.preprocess(render_dots(nxt))).reshape(64, -1)
        pred = trained.idm(torch.cat([z0, z1], 1)).numpy()
    target = act / 0.58  # the dataset's action normalisation (stats.json)
    assert np.mean((pred - target) ** 2) < 0.5 * np.mean(target ** 2)

    # a checkpoint from before the option: no idm_weight in its config, no head in its weights
    plain = train_jepa(dots, tmp_path / "plain", steps=2, batch_size=8, progress=False,
                       encoder_options=dict(SMALL["jepa"], image_size=SIZE))
    config, state = encoders.jepa.JEPAEncoder.read_checkpoint(plain)
    for key in ("idm_weight", "state_weight", "state_dim", "state_entries"):  # options added since such files were written
        config.pop(key)
    old = tmp_path / "old.safetensors"
    meta = {"format_version": str(encoders._trainable.FORMAT_VERSION), "backend": "jepa", "config": json.dumps(config)}
    save_file({k: v.contiguous() for k, v in state.items()}, old, metadata=meta)
    assert encoders.make_encoder("jepa", checkpoint=old, idm_weight=0.0).idm is None
    # configs/encoder/jepa.yaml names every option, the training-only state_weight too
    assert encoders.make_encoder("jepa", checkpoint=old, idm_weight=0.0, state_weight=0.0).state_head is None
    with pytest.raises(ValueError, match="idm_weight"):
        encoders.make_encoder("jepa", checkpoint=old, idm_weight=1.0)


def test_jepa_state_head_learns_the_recorded_state_and_round_trips(dots, tmp_path):
    """state_weight > 0 adds a linear head that reads the data's recorded state from the token (privileged
    supervision, training only): after training it reads held-out states far better than their mean,
    and it travels with the checkpoint. Data without states, or a batch without them, are refused."""
    from mpc.data import DatasetError
    from mpc.training import train_jepa
    from mpc.training.encoder_trainer import load_state_targets

    with pytest.raises(ValueError, match="state_dim"):
        _make("jepa", state_weight=1.0)  # no state_dim: train_jepa sets it from the data
    enc = encoders.jepa.JEPAEncoder(**SMALL["jepa"], image_size=SIZE, state_weight=1.0, state_dim=2)
    x, a = torch.randn(4, 3, SIZE, SIZE), torch.randn(4, 2)
    loss, metrics = enc.training_loss(x, a, torch.randn(4, 3, SIZE, SIZE), torch.randn(4, 2))
    assert loss.item() == pytest.approx(metrics["pred"] + enc.reg_weight * metrics["reg"] + metrics["state"], rel=1e-5)
    with pytest.raises(ValueError, match="states of shape"):
        enc.training_loss(x, a, x)
    with pytest.raises(DatasetError, match="records no states"):
        train_jepa(dots, tmp_path / "none", steps=2, batch_size=8, progress=False,
                   encoder_options=dict(SMALL["jepa"], image_size=SIZE, state_weight=1.0))

    data = write_dot_dataset(tmp_path / "dots_states", episodes=12, states=True)
    targets = load_state_targets(data)
    assert targets.shape == (12 * 21, 2) and np.allclose(targets.mean(0), 0, atol=1e-5)
    assert np.allclose(targets.std(0), 1, atol=1e-4)
    ckpt = train_jepa(data, tmp_path / "state", steps=200, batch_size=32, lr=3e-3, progress=False,
                      encoder_options=dict(SMALL["jepa"], image_size=SIZE, state_weight=1.0))
    trained = encoders.make_encoder("jepa", checkpoint=ckpt)
    assert trained.state_head is not None and trained.state_dim == 2 and trained.state_weight == 1.0
    rng = np.random.default_rng(11)
    pos = rng.uniform(-0.6, 0.6, (64, 2))  # held-out positions
    with torch.no_grad():
        z = trained.forward_tokens(trained.preprocess(render_dots(pos))).reshape(64, -1)
        pred = trained.state_head(z).numpy()
    all_pos = np.concatenate([h5py.File(p, "r")["states"][()] for p in sorted((data / "episodes").glob("*.h5"))])
    target = (pos - all_pos.mean(0)) / all_pos.std(0)
    assert np.mean((pred - target) ** 2) < 0.3 * np.mean(target ** 2)


def test_state_targets_give_an_object_angle_as_cos_and_sin(tmp_path):
    """Push-T's block angle (mpc.data.format.OBJECT_POSE) becomes cos, sin: two states a hair either
    side of the wrap get nearly the same targets, where the raw angle would put them far apart."""
    from mpc.training.encoder_trainer import load_state_targets

    data = write_dot_dataset(tmp_path / "pusht_like", episodes=2, steps=4)
    rng = np.random.default_rng(0)
    for i, path in enumerate(sorted((data / "episodes").glob("*.h5"))):
        st = rng.uniform(50, 450, (5, 5))
        st[:, 4] = rng.uniform(-np.pi, np.pi, 5)
        if i == 0:
            st[0, 4], st[1, 4] = np.pi - 1e-3, -np.pi + 1e-3
        with h5py.File(path, "a") as f:
            f["states"] = st
    meta = json.loads((data / "dataset.json").read_text())
    (data / "dataset.json").write_text(json.dumps({**meta, "env": "pusht"}))
    targets = load_state_targets(data)
    assert targets.shape == (10, 6)  # agent x, y, block x, y, cos, sin
    assert np.abs(targets[0] - targets[1])[:4].max() > 0.01  # the positions differ ...
    assert np.abs(targets[0, 4:] - targets[1, 4:]).max() < 0.01  # ... the wrapped angles do not


def test_state_entries_pick_what_the_head_reads(tmp_path):
    """state_entries chooses which recorded state entries are targets (Push-T's poses without the
    velocities one frame cannot show): the selected columns, the angle still as cos and sin wherever
    it sits in the list, the same standardised values as the full targets' columns; train_jepa sizes
    the head from them and records them; bad lists get clear errors."""
    from mpc.training import train_jepa
    from mpc.training.encoder_trainer import load_state_targets

    data = write_dot_dataset(tmp_path / "pusht_like", episodes=2, steps=4)
    rng = np.random.default_rng(1)
    for path in sorted((data / "episodes").glob("*.h5")):
        st = rng.uniform(-100, 450, (5, 7))  # agent x, y, block x, y, angle, agent vx, vy
        st[:, 4] = rng.uniform(-np.pi, np.pi, 5)
        with h5py.File(path, "a") as f:
            f["states"] = st
    meta = json.loads((data / "dataset.json").read_text())
    (data / "dataset.json").write_text(json.dumps({**meta, "env": "pusht"}))
    full = load_state_targets(data)  # agent x, y, block x, y, vx, vy, cos, sin
    assert full.shape == (10, 8)
    pose = load_state_targets(data, [0, 1, 2, 3, 4])
    assert pose.shape == (10, 6) and np.allclose(pose, full[:, [0, 1, 2, 3, 6, 7]], atol=1e-6)
    picked = load_state_targets(data, [4, 5])  # the angle first: still cos, sin, after the rest
    assert picked.shape == (10, 3) and np.allclose(picked, full[:, [4, 6, 7]], atol=1e-6)
    assert load_state_targets(data, [5, 0]).shape == (10, 2)  # no angle: the entries as they are
    with pytest.raises(ValueError, match="past the 7"):
        load_state_targets(data, [0, 7])
    for bad in ([], [0, 0], [-1], "xy"):
        with pytest.raises(ValueError, match="state_entries"):
            load_state_targets(data, bad)
    with pytest.raises(ValueError, match="state_entries"):
        encoders.jepa.JEPAEncoder(**SMALL["jepa"], image_size=SIZE, state_entries=[1, 1])
    ckpt = train_jepa(data, tmp_path / "pose", steps=2, batch_size=4, progress=False,
                      encoder_options=dict(SMALL["jepa"], image_size=SIZE, state_weight=1.0,
                                           state_entries=[0, 1, 2, 3, 4]))
    config, _ = encoders.jepa.JEPAEncoder.read_checkpoint(ckpt)
    assert config["state_dim"] == 6 and config["state_entries"] == [0, 1, 2, 3, 4]


def test_train_encoder_command(dots, tmp_path):
    from mpc.commands.cli import main

    out = tmp_path / "cmd"
    rc = main(["train-encoder", "encoder=vae", f"data={dots}", f"out={out}", "steps=3", "batch_size=4",
               "save_every=2", "progress=false", "encoder.image_size=32", "encoder.width=8", "encoder.dim=4"])
    assert rc == 0 and (out / "encoder.safetensors").exists() and (out / "samples.png").exists()
    assert json.loads((out / "train_log.json").read_text())["step"] == 3
    with pytest.raises(ValueError, match="train-encoder trains one of"):
        from mpc.training import train_encoder
        train_encoder("dinov2", dots, tmp_path / "x", steps=1)


@pytest.mark.parametrize("name", ["vae", "jepa", "transporter"])
def test_trained_tokens_are_standardised(name, dots, tmp_path):
    from mpc.training import load_frames, train_encoder

    ckpt = train_encoder(name, dots, tmp_path / name, steps=3, batch_size=16,
                         encoder_options=dict(SMALL[name], image_size=SIZE), progress=False)
    enc = encoders.make_encoder(name, checkpoint=ckpt)
    frames = load_frames(dots)
    z = enc.encode(frames).reshape(-1, enc.dim)  # standardised
    assert z.mean(0).abs().max() < 0.3 and z.var(0).mean().sqrt().item() == pytest.approx(1.0, abs=0.2)
    with torch.no_grad():
        raw = enc.forward_tokens(enc.preprocess(frames)).reshape(-1, enc.dim)
    assert torch.allclose(z * enc.token_scale + enc.token_shift, raw, atol=1e-4)
    assert torch.allclose(enc.check_tokens(enc.encode(frames[:4])), raw[:4].view(4, 1, -1), atol=1e-4)


def test_checkpoint_without_token_stats_loads_as_identity(tmp_path):
    from safetensors.torch import load_file, save_file
    from safetensors import safe_open

    enc = _make("vae")
    path = enc.save(tmp_path / "enc.safetensors")
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    state = {k: v for k, v in load_file(str(path)).items() if not k.startswith("token_")}
    save_file(state, str(path), metadata=meta)  # as written before tokens were standardised
    old = encoders.make_encoder("vae", checkpoint=path)
    assert torch.equal(old.token_shift, torch.zeros(8)) and torch.equal(old.token_scale, torch.ones(1))
