"""``vae`` with ``tokens="sprites"``: the sprite decoder's geometry, its tokens, and learning poses from pixels."""
from __future__ import annotations

import math

import numpy as np
import torch

import encoders
from encoders._sprites import SpriteDecoder


def _decoder_with_bar(size: int = 32) -> SpriteDecoder:
    """One sprite whose template is an opaque bar on its +x side, over a white background."""
    dec = SpriteDecoder(1, size, sprite_size=16, extent=0.5)
    with torch.no_grad():
        alpha = torch.full((1, 1, 16, 16), -9.0)
        alpha[..., 7:9, 10:15] = 9.0  # rows near the centre, columns right of it
        dec.alpha.copy_(alpha / 10.0)
        dec.rgb.fill_(-0.3)  # dark
        dec.background.fill_(0.3)  # tanh(3) ~ white
    return dec


def _ink_centroid(img: torch.Tensor) -> np.ndarray:
    """(x, y) in [-1, 1] image coordinates of where a rendered frame is darker than white."""
    ink = (1.0 - img[0].mean(0)).numpy()  # (S, S)
    ink = np.where(ink > 0.05, ink, 0.0)  # the background is white up to tanh's 0.005
    S = ink.shape[0]
    coords = (np.arange(S) + 0.5) / S * 2 - 1
    return np.array([(ink.sum(0) * coords).sum(), (ink.sum(1) * coords).sum()]) / ink.sum()


def test_sprite_decoder_draws_the_template_at_its_position_and_turn():
    dec = _decoder_with_bar()
    t = np.array([0.3, -0.2])
    for angle, direction in ((0.0, (1, 0)), (math.pi / 2, (0, 1)), (math.pi, (-1, 0))):
        pose = torch.tensor([[[t[0], t[1], 2 * math.cos(angle), 2 * math.sin(angle)]]], dtype=torch.float32)
        c = _ink_centroid(dec(pose).detach())
        offset = c - t  # the bar sits on the template's +x side, turned by the angle (y points down)
        assert np.dot(offset, direction) > 0.1 and abs(np.cross(offset, direction)) < 0.03, (angle, offset)
    # the length of (a, b) does not matter, only its direction
    p1 = torch.tensor([[[0.1, 0.1, 1.0, 1.0]]])
    assert torch.allclose(dec(p1), dec(p1 * torch.tensor([1, 1, 5.0, 5.0])), atol=1e-5)


def test_sprite_tokens_measure_shifts_and_turns_in_image_units():
    dec = _decoder_with_bar()
    rho = float(dec.radius()[0])
    assert 0.15 < rho < 0.35  # the bar's pixels lie 1.5 to 3.5 template pixels of 1/16 from the centre
    pose = torch.tensor([[[0.3, -0.2, 3.0, 0.0]], [[0.3, -0.2, 0.0, 0.5]], [[0.5, -0.2, 7.0, 0.0]]])
    z = dec.tokens(pose)  # (3, 1, 4)
    assert z.shape == (3, 1, 4)
    assert torch.allclose(z[0, 0], torch.tensor([0.3, -0.2, rho, 0.0]), atol=1e-6)
    assert torch.allclose((z[0] - z[1]).norm(), torch.tensor(rho * math.sqrt(2)), atol=1e-5)  # a quarter turn
    assert torch.allclose((z[0] - z[2]).norm(), torch.tensor(0.2), atol=1e-5)  # a shift, whatever |(a, b)|


def _t_frames(n: int, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``n`` uint8 frames of a grey T at random positions and turns on white, and the poses (x, y, angle)."""
    poses = np.c_[rng.uniform(-0.5, 0.5, (n, 2)), rng.uniform(-math.pi, math.pi, n)]
    coords = (np.arange(size) + 0.5) / size * 2 - 1
    px, py = np.meshgrid(coords, coords)  # (S, S) each
    frames = np.full((n, size, size, 3), 255, np.uint8)
    for i, (x, y, a) in enumerate(poses):
        u = math.cos(a) * (px - x) + math.sin(a) * (py - y)  # body frame
        v = -math.sin(a) * (px - x) + math.cos(a) * (py - y)
        bar = (np.abs(u) < 0.3) & (np.abs(v + 0.15) < 0.08)
        stem = (np.abs(u) < 0.08) & (v > -0.15) & (v < 0.25)
        frames[i][bar | stem] = (110, 130, 150)
    return frames, poses


def test_sprite_vae_learns_where_an_object_is_from_pixels_alone():
    """Trained on frames only (no poses), the sprite token says where the T is: a linear readout of held-out
    frames is within ~1 pixel, where predicting the mean position is off by ~6."""
    rng = np.random.default_rng(0)
    frames, poses = _t_frames(1024, 32, rng)
    torch.manual_seed(0)
    enc = encoders.make_encoder("vae", weights="random", image_size=32, tokens="sprites", num_sprites=1,
                                sprite_size=16, beta=0.0, width=16).unfreeze()
    assert (enc.num_tokens, enc.dim) == (1, 4)
    x_all = enc.to_normalized(frames)
    opt = torch.optim.Adam(enc.parameters(), lr=3e-3)
    for _ in range(400):
        loss, _ = enc.training_loss(x_all[rng.integers(0, 768, 32)])
        opt.zero_grad()
        loss.backward()
        opt.step()
    enc.freeze()
    with torch.no_grad():
        z = enc.encode(frames)[:, 0].numpy()  # (n, 4)
    X = np.c_[z, np.ones(len(z))]
    w = np.linalg.lstsq(X[:768], poses[:768, :2], rcond=None)[0]
    err = np.median(np.linalg.norm(X[768:] @ w - poses[768:, :2], axis=1))
    base = np.median(np.linalg.norm(poses[768:, :2] - poses[:768, :2].mean(0), axis=1))
    assert err < 0.25 * base, (err, base)
    # the decoder draws the T where the token says: the reconstruction's ink sits on the frame's
    rec = enc.decode(enc.encode(frames[768:800]))
    ink_rec = np.stack([_ink_centroid(r[None] * 2 - 1) for r in rec])
    ink_true = np.stack([_ink_centroid(torch.from_numpy(f).permute(2, 0, 1)[None].float() / 127.5 - 1)
                         for f in frames[768:800]])
    assert np.median(np.linalg.norm(ink_rec - ink_true, axis=1)) < 0.1
