"""Fuzzing of the file readers: damaged world-model checkpoints and datasets get clear errors.

``WorldModel.load`` on truncated, garbage, foreign-safetensors and newer-format files, and the
dataset readers on truncated HDF5, missing episodes and foreign ``dataset.json`` files, raise
``ValueError`` (``DatasetError`` is one) or ``FileNotFoundError`` with a message naming the file,
never an exception from deep inside safetensors / h5py, and never a hang.
"""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

from mpc.data import DatasetError, collect, load_dataset
from mpc.world_model import WorldModel, config_from_preset

FUZZ = settings(max_examples=25, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
GYM_ID = "tests.mpc.fake_envs:FakeGoal-v0"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    cfg = config_from_preset("tiny", num_tokens=4, token_dim=8, env_action_dim=2, proprio_dim=2)
    return WorldModel(cfg).save(tmp_path_factory.mktemp("ckpt") / "model.safetensors")


def _load_or_clear_error(path):
    try:
        WorldModel.load(path, encoder=None)
    except (ValueError, FileNotFoundError) as e:
        assert str(path.name) in str(e) or "checkpoint" in str(e), str(e)
        return False
    return True


@FUZZ
@given(cut=st.floats(0.0, 0.999))
def test_truncated_checkpoint(checkpoint, tmp_path, cut):
    data = checkpoint.read_bytes()
    bad = tmp_path / "truncated.safetensors"
    bad.write_bytes(data[:int(len(data) * cut)])
    assert not _load_or_clear_error(bad)


@FUZZ
@given(junk=st.binary(min_size=0, max_size=512), where=st.integers(0, 10_000))
def test_garbage_and_flipped_bytes(checkpoint, tmp_path, junk, where):
    bad = tmp_path / "garbage.safetensors"
    bad.write_bytes(junk)
    assert not _load_or_clear_error(bad)
    data = bytearray(checkpoint.read_bytes())
    i = where % len(data)
    data[i:i + len(junk)] = junk[:len(data) - i]
    flipped = tmp_path / "flipped.safetensors"
    flipped.write_bytes(bytes(data))
    _load_or_clear_error(flipped)  # may still load when only weights changed; must not crash


def test_foreign_safetensors_and_newer_format(checkpoint, tmp_path):
    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(3)}, str(foreign), metadata={"format": "pt"})
    with pytest.raises(ValueError, match="no wmpc world-model header"):
        WorldModel.load(foreign, encoder=None)
    from safetensors import safe_open
    with safe_open(str(checkpoint), framework="pt") as f:
        meta = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    key = next(k for k in meta if "world_model" in k)
    header = json.loads(meta[key])
    header["format_version"] = 99
    newer = tmp_path / "newer.safetensors"
    save_file(tensors, str(newer), metadata={**meta, key: json.dumps(header)})
    with pytest.raises(ValueError, match="format version 99"):
        WorldModel.load(newer, encoder=None)
    with pytest.raises(FileNotFoundError, match="no world-model checkpoint"):
        WorldModel.load(tmp_path / "missing.safetensors", encoder=None)
    directory = tmp_path / "a_folder.safetensors"
    directory.mkdir()
    with pytest.raises((ValueError, FileNotFoundError)):
        WorldModel.load(directory, encoder=None)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return collect(GYM_ID, tmp_path_factory.mktemp("data") / "d", episodes=3, steps=6, seed=0,
                   progress=False)


def _read_all(root):
    ds = load_dataset(root)
    for i in range(len(ds)):
        ds[i]
    return ds


@FUZZ
@given(episode=st.integers(0, 2), cut=st.floats(0.0, 0.95))
def test_truncated_episode_names_the_file(dataset, tmp_path, episode, cut):
    root = tmp_path / "d"
    shutil.rmtree(root, ignore_errors=True)
    shutil.copytree(dataset, root)
    path = root / "episodes" / f"episode_{episode:06d}.h5"
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * cut)])
    with pytest.raises(DatasetError, match=f"episode_{episode:06d}"):
        _read_all(root)


def test_missing_episode_and_foreign_metadata(dataset, tmp_path):
    root = tmp_path / "d"
    shutil.copytree(dataset, root)
    (root / "episodes" / "episode_000001.h5").unlink()
    with pytest.raises(DatasetError, match="episode_000001"):
        _read_all(root)
    for text in ["{not json", json.dumps([1, 2, 3]), json.dumps({"format_version": 99, "env": "x"}),
                 json.dumps({"hello": "world"}), ""]:
        other = tmp_path / f"foreign{abs(hash(text))}"
        shutil.copytree(dataset, other)
        (other / "dataset.json").write_text(text)
        with pytest.raises(DatasetError, match="dataset.json"):
            load_dataset(other)
    with pytest.raises(DatasetError, match="not a wmpc dataset"):
        load_dataset(tmp_path / "nothing_here")
    assert np.isfinite(_read_all(dataset)[0]["proprio"]).all()  # the original is untouched
