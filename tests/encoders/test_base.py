"""Encoder base class: input checks, resizing, normalisation, chunking, registry errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from encoders import list_encoders, make_encoder, to_float_images
from encoders.base import Encoder, tensor_digest


class MeanColour(Encoder):
    """Tokens = per-channel means of the normalised image: ``(B, 1, 3)``; records chunk sizes."""

    backend = "test"
    variant = "mean"
    mean = (0.5, 0.5, 0.5)
    std = (0.25, 0.25, 0.25)
    chunk_size = 4

    def __init__(self, image_size: int = 8):
        super().__init__(image_size)
        self.scale = torch.nn.Parameter(torch.ones(1), requires_grad=False)
        self.chunks: list[int] = []

    @property
    def num_tokens(self) -> int:
        return 1

    @property
    def dim(self) -> int:
        return 3

    def forward_tokens(self, x):
        self.chunks.append(x.shape[0])
        return (x.mean(dim=(2, 3)) * self.scale)[:, None, :]  # (B, 1, 3)


def test_uint8_hwc_and_float_chw_are_the_same_image():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    a = to_float_images(img)
    b = to_float_images(torch.from_numpy(img).permute(0, 3, 1, 2).double().numpy() / 255.0)
    c = to_float_images(torch.from_numpy(img[0]))  # unbatched uint8 tensor
    assert a.shape == (2, 3, 8, 8) and a.dtype == torch.float32
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(c, a[:1])
    assert float(a.max()) <= 1.0 and float(a.min()) >= 0.0


def test_normalisation_resize_and_chunking():
    enc = MeanColour(image_size=8)
    img = np.full((10, 16, 16, 3), 255, np.uint8)
    img[..., 1] = 0
    z = enc.encode(img)  # resized 16 -> 8, normalised with mean 0.5, std 0.25
    assert z.shape == (10, 1, 3) and z.dtype == torch.float32
    torch.testing.assert_close(z[0, 0], torch.tensor([2.0, -2.0, 2.0]))
    assert enc.chunks == [4, 4, 2]
    assert not z.requires_grad


@pytest.mark.parametrize("bad, match", [
    (np.zeros((8, 8), np.uint8), "uint8 of shape"),                       # rank 2
    (np.zeros((1, 1, 8, 8, 3), np.uint8), "uint8 of shape"),              # rank 5
    (torch.zeros(2, 3, 8, 8, 2), "float of shape"),                       # float rank 5
    (np.zeros((2, 8, 8, 4), np.uint8), "3 channels"),                     # RGBA
    (np.zeros((2, 8, 8, 1), np.uint8), "3 channels"),                     # grey
    (torch.zeros(2, 8, 8, 3), "channels-first"),                          # float HWC
    (torch.zeros(2, 4, 8, 8), "3 channels"),
    (np.full((1, 3, 8, 8), 255.0, np.float32), r"\[0, 1\]"),              # undivided pixels
    (torch.full((1, 3, 8, 8), -1e-3), r"\[0, 1\]"),
    (torch.full((1, 3, 8, 8), float("nan")), "NaN"),
    (torch.full((1, 3, 8, 8), float("inf")), "NaN or inf"),
    (np.zeros((1, 8, 8, 3), np.int32), "dtype int32"),
    (torch.zeros(1, 3, 8, 8, dtype=torch.int64), "dtype torch.int64"),
    ("image.png", "str"),
])
def test_bad_images_raise_value_error(bad, match):
    with pytest.raises(ValueError, match=match):
        MeanColour().encode(bad)


def test_unknown_encoder_name_lists_known_ones():
    known = list_encoders()
    with pytest.raises(ValueError, match="unknown encoder 'no-such-encoder'") as e:
        make_encoder("no-such-encoder")
    assert all(name in str(e.value) for name in known)
    with pytest.raises(ValueError, match="Did you mean 'dinov2-vitb14'"):
        make_encoder("dinov2-vitb15")


def test_fingerprint_follows_weights():
    enc = MeanColour()
    fp = enc.fingerprint
    assert fp.startswith("test:mean:w=") and "size=8" in fp and "tokens=patch" in fp
    assert tensor_digest({"a": torch.ones(2)}) != tensor_digest({"a": torch.zeros(2)})
    other = MeanColour()
    with torch.no_grad():
        other.scale.fill_(2.0)
    assert other.fingerprint != fp
