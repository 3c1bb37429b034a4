"""``transporter``: its masks, its tokens, and learning where objects are (and how one is turned) from pixels."""
from __future__ import annotations

import math

import h5py
import numpy as np
import pytest
import torch

import encoders
from encoders.transporter import keypoint_masks


def test_keypoint_masks_are_gaussians_around_the_keypoints_and_their_union_stays_below_one():
    size, std = 33, 0.1
    kp = torch.tensor([[[0.0, 0.0], [0.5, -0.5]]])  # (1, 2, 2)
    m = keypoint_masks(kp, size, std)[0, 0]  # (S, S); pixel 16 is 0.0, pixel 24 is 0.5
    assert m.shape == (size, size)
    assert m[16, 16] == pytest.approx(1.0, abs=1e-6) and m[8, 24] == pytest.approx(1.0, abs=1e-6)  # row y, col x
    assert m[0, 0] < 1e-6  # far from both
    one = keypoint_masks(kp[:, :1], size, std)[0, 0]
    assert one[16, 19] == pytest.approx(math.exp(-(3 / 16) ** 2 / (2 * std ** 2)), rel=1e-5)  # 3 px = 0.1875 away
    twice = keypoint_masks(torch.cat([kp[:, :1], kp[:, :1]], 1), size, std)[0, 0]
    assert twice.max() <= 1.0 and torch.all(twice >= one - 1e-6)  # union: never above 1, never below one mask


def test_tokens_are_the_keypoints_and_checkpoints_round_trip(tmp_path):
    enc = encoders.make_encoder("transporter", weights="random", image_size=32, num_keypoints=3, width=8,
                                refine_width=8, seed=2)
    assert (enc.num_tokens, enc.dim, enc.variant) == (1, 6, "keypoints-1x6")
    imgs = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    with torch.no_grad():
        kp = enc.keypoints(enc.preprocess(imgs))  # (4, 3, 2)
    assert kp.shape == (4, 3, 2) and kp.abs().max() <= 1.0
    assert torch.allclose(enc.encode(imgs), kp.reshape(4, 1, 6))  # untrained: standardisation is the identity
    with torch.no_grad():
        enc.token_shift.fill_(0.1)
        enc.token_scale.fill_(2.0)
    path = enc.save(tmp_path / "tp.safetensors")
    loaded = encoders.make_encoder("transporter", checkpoint=path)
    assert loaded.config == enc.config and loaded.pretrained and not loaded.trainable
    assert torch.allclose(loaded.encode(imgs), (kp.reshape(4, 1, 6) - 0.1) / 2.0, atol=1e-6)
    with pytest.raises(ValueError, match="contradict"):
        encoders.make_encoder("transporter", checkpoint=path, num_keypoints=4)


@pytest.mark.parametrize("bad,match", [(dict(image_size=31), "even"), (dict(num_keypoints=0), ">= 1"),
                                       (dict(mask_std=0.0), "mask_std"), (dict(fg_weight=-1.0), "fg_weight")])
def test_bad_options_raise(bad, match):
    with pytest.raises(ValueError, match=match):
        encoders.make_encoder("transporter", weights="random", **bad)


def test_transporter_learns_where_the_dot_is_from_frame_pairs_alone(tmp_path):
    """``wmpc train-encoder``'s path, frame pairs of one episode only (no positions, no actions): a linear
    readout of the keypoints finds the dot on held-out frames to a small fraction of its spread."""
    from mpc.training import load_frames, train_encoder

    from .test_trainable import write_dot_dataset

    root = write_dot_dataset(tmp_path / "dots", episodes=8, steps=20)
    ckpt = train_encoder("transporter", root, tmp_path / "enc", steps=100, batch_size=16, lr=3e-3, progress=False,
                         encoder_options=dict(image_size=32, num_keypoints=2, width=8, refine_width=8, mask_std=0.15))
    enc = encoders.make_encoder("transporter", checkpoint=ckpt)
    assert not (tmp_path / "enc" / "samples.png").exists()  # no decoder, no reconstructions
    pos = np.concatenate([h5py.File(p)["proprio"][:] for p in sorted((root / "episodes").glob("*.h5"))])
    z = enc.encode(load_frames(root))[:, 0].numpy()  # (F, 4)
    X = np.c_[z, np.ones(len(z))]
    n = len(z) * 3 // 4  # the last two episodes are held out of the readout
    w = np.linalg.lstsq(X[:n], pos[:n], rcond=None)[0]
    err = np.median(np.linalg.norm(X[n:] @ w - pos[n:], axis=1))
    spread = np.median(np.linalg.norm(pos[n:] - pos[:n].mean(0), axis=1))
    assert err < 0.1 * spread, (err, spread)  # measured: ~0.01 x; after one step: ~0.27 x
