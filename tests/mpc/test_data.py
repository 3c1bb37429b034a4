"""Tests of mpc.data: collection, storage, resume, damage detection, latent cache, windows, commands."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import torch.nn as nn

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # so "tests.mpc.fake_envs" resolves as a gymnasium module path
    sys.path.insert(0, str(ROOT))

import encoders  # noqa: E402
import envs  # noqa: E402
from encoders.base import Encoder  # noqa: E402
from mpc import data  # noqa: E402
from mpc._io import folder_lock  # noqa: E402
from mpc.commands.encode import main as encode_command  # noqa: E402
from mpc.data import (DatasetError, WindowDataset, cache_path, collect, encode_dataset,  # noqa: E402
                      load_dataset, make_actions, rollout_episode, split_episodes)

GYM_ID = "tests.mpc.fake_envs:FakeGoal-v0"
SUBPROCESS_ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}


class FakeEncoder(Encoder):
    """Random patch-conv encoder: (B, 3, S, S) -> (B, (S/4)^2, 8). Weights follow ``seed``."""

    backend = "test-fake"
    variant = "p4d8"

    def __init__(self, image_size: int = 16, seed: int = 0, token_mode: str = "patch"):
        super().__init__(image_size)
        self.token_mode = token_mode
        torch.manual_seed(seed)
        self.conv = nn.Conv2d(3, 8, kernel_size=4, stride=4)
        self.requires_grad_(False)

    @property
    def num_tokens(self) -> int:
        return (self.image_size // 4) ** 2

    @property
    def dim(self) -> int:
        return 8

    def forward_tokens(self, x):
        return self.conv(x).flatten(2).transpose(1, 2)  # (B, N, D)


if "test-fake" not in encoders.list_encoders():
    encoders.register_encoder("test-fake")(lambda **kw: FakeEncoder(**kw))


def _collect(out, **kw):
    args = dict(env=GYM_ID, out=out, episodes=4, steps=12, policy="colored-noise", seed=7,
                image_size=16, progress=False)
    args.update(kw)
    return collect(**args)


def _all_arrays(root):
    ds = load_dataset(root)
    return [ds[i] for i in range(len(ds))]


def _assert_same(a, b):
    assert len(a) == len(b)
    for ea, eb in zip(a, b):
        assert ea.keys() == eb.keys()
        for k in ea:
            np.testing.assert_array_equal(ea[k], eb[k], err_msg=k)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return _collect(tmp_path_factory.mktemp("ds") / "fake", episodes=5, steps=14, action_repeat=2)


# ----------------------------------------------------------------------------- policies
@pytest.mark.parametrize("policy", list(data.POLICIES))
def test_policies_stay_in_box_and_are_seeded(policy):
    low, high = np.array([-2.0, 0.0]), np.array([1.0, 0.5])
    a = make_actions(policy, low, high, 200, seed=3)
    assert a.shape == (200, 2) and a.dtype == np.float32
    assert np.all(a >= low.astype(np.float32)) and np.all(a <= high.astype(np.float32))
    np.testing.assert_array_equal(a, make_actions(policy, low, high, 200, seed=3))
    assert not np.array_equal(a, make_actions(policy, low, high, 200, seed=4))


def test_policy_temporal_structure():
    low, high = -np.ones(1), np.ones(1)

    def lag1(x):
        x = x[:, 0] - x[:, 0].mean()
        return float((x[1:] * x[:-1]).mean() / (x * x).mean())

    assert abs(lag1(make_actions("uniform", low, high, 4000, 0))) < 0.05
    assert lag1(make_actions("colored-noise", low, high, 4000, 0, beta=2.0)) > 0.8
    assert lag1(make_actions("brownian", low, high, 4000, 0)) > 0.8
    rep = make_actions("repeat", low, high, 40, 0, k=4)
    assert np.all(rep.reshape(10, 4)[:, 1:] == rep.reshape(10, 4)[:, :1])
    with pytest.raises(ValueError, match="unknown policy"):
        make_actions("nope", low, high, 5, 0)
    with pytest.raises(ValueError, match="bad options"):
        make_actions("uniform", low, high, 5, 0, beta=1.0)


# ----------------------------------------------------------------------------- collection
def test_collected_data_equal_direct_replay(dataset):
    ds = load_dataset(dataset)
    assert ds.meta["env"] == GYM_ID and ds.meta["env_options"] == {"image_size": 16, "action_repeat": 2}
    assert ds.meta["action_low"] == [-1.0, -1.0] and ds.meta["seed"] == 7 and len(ds) == 5
    env = envs.make_env(GYM_ID, image_size=16, action_repeat=2)
    for i in range(len(ds)):
        actions = make_actions("colored-noise", env.action_space.low, env.action_space.high, 14, 7 + i)
        expected = rollout_episode(env, actions, 7 + i)
        _assert_same([ds[i]], [expected])
        with h5py.File(ds.paths[i], "r") as f:  # readable with h5py alone
            assert f.attrs["seed"] == 7 + i and f.attrs["length"] == 14 and bool(f.attrs["complete"])
            assert f["pixels"].shape == (15, 16, 16, 3) and f["states"].dtype == np.float64
    # replay is not trivial: frames change and the point moves 0.1*a per simulator step (action_repeat 2)
    ep = ds[0]
    np.testing.assert_allclose(ep["states"][1], np.clip(ep["states"][0] + 0.2 * ep["actions"][0], -1, 1),
                               atol=1e-6)
    allp = np.concatenate([ds[i]["proprio"] for i in range(len(ds))])
    np.testing.assert_allclose(ds.stats["proprio_mean"], allp.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ds.stats["proprio_std"], allp.std(0), rtol=1e-4)
    assert ds.stats["num_frames"] == 5 * 15


def test_workers_give_identical_data(tmp_path):
    a = _collect(tmp_path / "w1", episodes=4, workers=1)
    b = _collect(tmp_path / "w2", episodes=4, workers=2)
    _assert_same(_all_arrays(a), _all_arrays(b))
    assert (a / "stats.json").read_text() == (b / "stats.json").read_text()


def test_rerun_with_other_settings_fails(tmp_path):
    out = _collect(tmp_path / "d", episodes=2)
    with pytest.raises(DatasetError, match="other settings.*image_size"):
        _collect(out, episodes=2, image_size=24)
    with pytest.raises(DatasetError, match="policy"):
        _collect(out, episodes=2, policy="uniform")


def test_concurrent_collection_into_one_folder_is_refused(tmp_path):
    out = _collect(tmp_path / "d", episodes=1)
    with folder_lock(out, "a test"):
        with pytest.raises(DatasetError, match="another process is running wmpc collect"):
            _collect(out, episodes=2)
    assert len(_collect(out, episodes=2) and load_dataset(out)) == 2  # lock released


def test_kill_minus_nine_then_resume_equals_uninterrupted(tmp_path):
    out = tmp_path / "killed"
    code = (f"from mpc.data import collect; collect({GYM_ID!r}, {str(out)!r}, episodes=400, steps=40, "
            "policy='colored-noise', seed=7, image_size=16, progress=False)")
    proc = subprocess.Popen([sys.executable, "-c", code], env=SUBPROCESS_ENV, cwd=str(ROOT))
    ep_dir = out / "episodes"
    deadline = time.time() + 30
    while time.time() < deadline and len(list(ep_dir.glob("episode_*.h5"))) < 3:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = sorted(ep_dir.glob("episode_*.h5"))
    assert 3 <= len(finished) < 400, "the subprocess should have been killed mid-collection"
    for p in finished:  # every finished episode is whole
        with h5py.File(p, "r") as f:
            assert f["pixels"].shape == (41, 16, 16, 3) and bool(f.attrs["complete"])
    with pytest.raises(DatasetError, match="incomplete.*Re-run the same `wmpc collect`"):
        load_dataset(out)
    # add what a kill can leave behind: a temp file, plus a damaged finished file
    (ep_dir / f".episode_{len(finished):06d}.h5.999.tmp").write_bytes(b"half an episode")
    damaged = finished[1]
    damaged.write_bytes(damaged.read_bytes()[:500])
    # resume with fewer episodes to keep the test fast; the finished ones are kept, not rewritten
    keep = finished[0].stat().st_mtime_ns
    resumed = collect(GYM_ID, out, episodes=len(finished) + 2, steps=40, policy="colored-noise", seed=7,
                      image_size=16, progress=False)
    assert finished[0].stat().st_mtime_ns == keep
    assert not list(ep_dir.glob(".*"))  # temp leftovers cleaned
    ref = collect(GYM_ID, tmp_path / "ref", episodes=len(finished) + 2, steps=40, policy="colored-noise",
                  seed=7, image_size=16, progress=False)
    _assert_same(_all_arrays(resumed), _all_arrays(ref))


def test_damaged_files_give_clear_errors(tmp_path):
    out = _collect(tmp_path / "d", episodes=3, steps=30)
    p0 = out / "episodes" / "episode_000000.h5"
    p0.write_bytes(p0.read_bytes()[: p0.stat().st_size // 2])  # truncated
    with pytest.raises(DatasetError, match=r"episode_000000\.h5 is truncated or damaged.*Delete it and re-run"):
        load_dataset(out)
    p0.unlink()
    _collect(out, episodes=3, steps=30)  # redo it
    # garbage bytes in the pixel chunks: the checksum catches them, the error names the file
    p2 = out / "episodes" / "episode_000002.h5"
    good = load_dataset(out)[2]
    with h5py.File(p2, "r") as f:
        px = f["pixels"].id
        offset = px.get_chunk_info(px.get_num_chunks() // 2).byte_offset
    raw = p2.read_bytes()
    p2.write_bytes(raw[:offset] + bytes(255 - b for b in raw[offset:offset + 32]) + raw[offset + 32:])
    with pytest.raises(DatasetError, match=r"episode_000002\.h5 is truncated or damaged"):
        ds = load_dataset(out)
        [ds[i] for i in range(len(ds))]
    # damage anywhere in the file is either reported or leaves every array intact: never silent
    rng = np.random.default_rng(0)
    for start in range(0, len(raw), 151):
        p2.write_bytes(raw[:start] + rng.bytes(16) + raw[start + 16:])
        try:
            ds = load_dataset(out)
            _assert_same([ds[2]], [good])
        except DatasetError as e:
            assert "episode_000002.h5" in str(e)
    with pytest.raises(DatasetError, match="not a wmpc dataset"):
        load_dataset(tmp_path)


# ----------------------------------------------------------------------------- latent cache
def test_encoding_waits_for_another_encoder_of_the_same_cache_when_asked(dataset, tmp_path):
    """Two trainings on one dataset at once (suite entries sharing data, a sweep): the second waits for
    the first's encoding instead of failing; ``wmpc encode`` itself still fails at once."""
    import shutil
    import threading

    from mpc.data.format import dataset_lock

    data = tmp_path / "data"
    shutil.copytree(dataset, data)
    enc = FakeEncoder(image_size=16, seed=3)
    folder = cache_path(data, enc.fingerprint)
    errors = []

    def second():
        try:
            encode_dataset(data, enc, progress=False, wait=True)
        except Exception as e:  # noqa: BLE001 - the test reports it
            errors.append(e)

    with dataset_lock(folder, "wmpc encode"):  # the first is encoding
        with pytest.raises(DatasetError, match="another process is running wmpc encode"):
            encode_dataset(data, enc, progress=False)
        t = threading.Thread(target=second)
        t.start()
        t.join(1.0)
        assert t.is_alive()  # the second waits for it
    t.join(60)
    assert not t.is_alive() and not errors
    assert len(list(folder.glob("episode_*.h5"))) == len(load_dataset(data))


def test_latent_cache_contents_and_invalidation(dataset):
    enc = FakeEncoder(image_size=16, seed=0)
    folder = encode_dataset(dataset, enc, dtype="float16", batch_size=7, progress=False)
    assert folder == cache_path(dataset, enc.fingerprint)
    ds = load_dataset(dataset)
    with h5py.File(folder / "episode_000001.h5", "r") as f:
        tokens = f["tokens"][()]
        assert f.attrs["fingerprint"] == enc.fingerprint and tokens.dtype == np.float16
    expected = enc.encode(ds[1]["pixels"]).numpy()
    np.testing.assert_allclose(tokens.astype(np.float32), expected, rtol=2e-3, atol=2e-3)
    # resumable: a deleted cache file is re-encoded, the others are kept
    keep = (folder / "episode_000000.h5").stat().st_mtime_ns
    (folder / "episode_000003.h5").unlink()
    encode_dataset(dataset, enc, dtype="float16", progress=False)
    assert (folder / "episode_000003.h5").exists() and (folder / "episode_000000.h5").stat().st_mtime_ns == keep
    with pytest.raises(DatasetError, match="float16"):
        encode_dataset(dataset, enc, dtype="float32", progress=False)
    # new weights, image size or token mode -> new key; the old cache is never used for them
    for other in (FakeEncoder(image_size=16, seed=1), FakeEncoder(image_size=8, seed=0),
                  FakeEncoder(image_size=16, seed=0, token_mode="pooled")):
        assert cache_path(dataset, other.fingerprint) != folder
        with pytest.raises(DatasetError, match="wmpc encode"):
            WindowDataset(dataset, other.fingerprint, num_hist=2, num_pred=1)
    new = FakeEncoder(image_size=16, seed=1)
    encode_dataset(dataset, new, dtype="float32", progress=False)
    w_old = WindowDataset(dataset, enc, num_hist=1, num_pred=1, split="all")
    w_new = WindowDataset(dataset, new, num_hist=1, num_pred=1, split="all")
    assert w_new.fingerprint == new.fingerprint and w_old.fingerprint == enc.fingerprint
    assert not torch.allclose(w_old[0]["z"], w_new[0]["z"], atol=1e-2)
    # a cache folder whose stored fingerprint does not match is refused
    import json
    info = json.loads((folder / "cache.json").read_text())
    (folder / "cache.json").write_text(json.dumps({**info, "fingerprint": "something else"}))
    try:
        with pytest.raises(DatasetError, match="holds tokens of encoder"):
            WindowDataset(dataset, enc.fingerprint, num_hist=1, num_pred=1)
    finally:
        (folder / "cache.json").write_text(json.dumps(info))


# ----------------------------------------------------------------------------- windows
def test_windows_content(dataset):
    enc = FakeEncoder(image_size=16, seed=0)
    folder = encode_dataset(dataset, enc, dtype="float16", progress=False)
    ds = load_dataset(dataset)
    k, L = 3, 4  # frameskip 3, num_hist 3 + num_pred 1
    w = WindowDataset(dataset, enc.fingerprint, num_hist=3, num_pred=1, frameskip=k, split="all")
    T = 14
    assert len(w) == 5 * (T - (L - 1) * k + 1)
    assert w.action_dim == 6 and w.proprio_dim == 2 and (w.num_tokens, w.token_dim) == (16, 8)
    assert w._tokens.dtype == np.float16  # stays float16 in memory
    assert len(w.stats["action_mean"]) == 6 and len(w.stats["env_action_mean"]) == 2
    for j in (0, 3, len(w) - 1, 7):
        e, s = w.window_index(j)
        item = w[j]
        ep = ds[e]
        with h5py.File(folder / f"episode_{e:06d}.h5", "r") as f:
            tok = f["tokens"][()]
        idx = [s, s + k, s + 2 * k, s + 3 * k]
        assert item["z"].dtype == torch.float32 and item["z"].shape == (4, 16, 8)
        np.testing.assert_array_equal(item["z"].numpy(), tok[idx].astype(np.float32))
        np.testing.assert_array_equal(item["proprio"].numpy(), ep["proprio"][idx])
        for i in range(L - 1):
            expect = np.concatenate([ep["actions"][idx[i] + m] for m in range(k)])
            np.testing.assert_array_equal(item["actions"][i].numpy(), expect)
    w_dir = WindowDataset(dataset, folder, num_hist=3, num_pred=1, frameskip=k, split="all")  # a cache folder
    np.testing.assert_array_equal(w_dir[7]["z"].numpy(), w[7]["z"].numpy())
    starts = [w.window_index(j) for j in range(len(w))]
    assert starts[0] == (0, 0) and starts[T - (L - 1) * k] == (0, T - (L - 1) * k) and starts[-1][1] == 5
    # pixel mode gives the frames themselves
    wp = WindowDataset(dataset, None, num_hist=3, num_pred=1, frameskip=k, split="all", source="pixels")
    e, s = wp.window_index(5)
    np.testing.assert_array_equal(wp[5]["pixels"].numpy(), ds[e]["pixels"][[s, s + k, s + 2 * k, s + 3 * k]])
    batch = next(iter(torch.utils.data.DataLoader(w, batch_size=4, shuffle=True)))
    assert batch["z"].shape == (4, 4, 16, 8) and batch["actions"].shape == (4, 3, 6)
    with pytest.raises(ValueError, match="long enough"):
        WindowDataset(dataset, enc, num_hist=10, num_pred=5, frameskip=2)


def test_a_batch_of_windows_equals_its_windows_stacked(dataset):
    enc = FakeEncoder(image_size=16, seed=0)
    encode_dataset(dataset, enc, dtype="float16", progress=False)
    for k, split in ((3, "all"), (1, "train")):
        w = WindowDataset(dataset, enc.fingerprint, num_hist=3, num_pred=1, frameskip=k, split=split,
                          val_fraction=0.4)
        idx = np.random.default_rng(k).permutation(len(w))[:9]
        batch, expect = w.get_batch(idx), torch.utils.data.default_collate([w[int(j)] for j in idx])
        assert list(batch) == list(expect)
        for key in expect:
            assert batch[key].dtype == expect[key].dtype
            np.testing.assert_array_equal(batch[key].numpy(), expect[key].numpy())
    wp = WindowDataset(dataset, None, num_hist=3, num_pred=1, frameskip=3, split="all", source="pixels")
    np.testing.assert_array_equal(wp.get_batch([5, 0])["pixels"].numpy(),
                                  torch.stack([wp[5]["pixels"], wp[0]["pixels"]]).numpy())
    with pytest.raises(IndexError, match="out of range"):
        w.get_batch([0, len(w)])


def test_split_is_disjoint_by_episode(dataset):
    enc = FakeEncoder(image_size=16, seed=0)
    encode_dataset(dataset, enc, progress=False)
    tr = WindowDataset(dataset, enc, num_hist=2, num_pred=1, split="train", val_fraction=0.4, seed=1)
    va = WindowDataset(dataset, enc, num_hist=2, num_pred=1, split="val", val_fraction=0.4, seed=1)
    assert len(va.episode_ids) == 2 and set(tr.episode_ids).isdisjoint(va.episode_ids)
    assert sorted([*tr.episode_ids, *va.episode_ids]) == list(range(5))
    assert {tr.window_index(j)[0] for j in range(len(tr))} == set(tr.episode_ids)
    assert {va.window_index(j)[0] for j in range(len(va))} == set(va.episode_ids)
    again = WindowDataset(dataset, enc, num_hist=2, num_pred=1, split="val", val_fraction=0.4, seed=1)
    np.testing.assert_array_equal(again.episode_ids, va.episode_ids)
    splits = {tuple(split_episodes(100, 0.1, s)[1]) for s in range(5)}
    assert len(splits) == 5 and all(len(v) == 10 for v in splits)
    assert len(split_episodes(3, 0.0, 0)[1]) == 0


# ----------------------------------------------------------------------------- commands
def test_collect_cli_on_user_gym_id(tmp_path):
    out = tmp_path / "cli"
    cmd = [sys.executable, "-m", "mpc.commands", "collect", f"env={GYM_ID}", "episodes=3", "steps=6",
           "policy=repeat", "+policy_options.k=2", "image_size=16", f"out={out}", "seed=3", "progress=false"]
    res = subprocess.run(cmd, env=SUBPROCESS_ENV, cwd=str(tmp_path), capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "3 episodes" in res.stdout
    ref = collect(GYM_ID, tmp_path / "api", episodes=3, steps=6, policy="repeat", seed=3, image_size=16,
                  policy_options={"k": 2}, progress=False)
    _assert_same(_all_arrays(out), _all_arrays(ref))
    assert not (tmp_path / ".hydra").exists() and not (out / ".hydra").exists()


def test_fewer_episodes_rerun_updates_stats(tmp_path):
    out = _collect(tmp_path / "d", episodes=3)
    _collect(out, episodes=2)
    ds = load_dataset(out)
    assert len(ds) == 2 and ds.stats["num_episodes"] == 2


def test_encode_cli(dataset):
    rc = encode_command([f"data={dataset}", "~encoder", "+encoder.name=test-fake", "+encoder.seed=5",
                          "+encoder.image_size=16", "dtype=float32", "device=cpu", "progress=false"])
    assert rc == 0
    enc = FakeEncoder(image_size=16, seed=5)
    w = WindowDataset(dataset, enc.fingerprint, num_hist=1, num_pred=1, split="all")
    np.testing.assert_allclose(w[0]["z"].numpy(), enc.encode(load_dataset(dataset)[0]["pixels"][:2]).numpy(),
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["wall"])
def test_collect_smoke_on_wmpc_env(tmp_path, name):
    entry = envs.ENVS[name][0].split(":")[0]
    pytest.importorskip(entry)
    out = collect(name, tmp_path / name, episodes=2, steps=5, policy="uniform", seed=0, progress=False)
    ds = load_dataset(out)
    assert ds.shapes["pixels"] == (64, 64, 3) and ds.lengths.tolist() == [5, 5]
    assert not np.array_equal(ds[0]["pixels"][0], ds[1]["pixels"][0]) or not np.array_equal(
        ds[0]["proprio"], ds[1]["proprio"])
