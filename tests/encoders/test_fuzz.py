"""Property-based fuzzing of ``make_encoder(...).encode``: any input gets tokens or a ValueError.

Never an exception from deep inside torch, never a hang. Generated examples are bounded so the
suite stays fast.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from encoders import make_encoder

FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

DTYPES = [np.uint8, np.int8, np.int32, np.int64, np.float16, np.float32, np.float64, np.bool_]


@pytest.fixture(scope="module")
def encoder():
    # a small trainable backend: fuzzing checks the input contract, which every backend shares
    return make_encoder("vae", weights="random", image_size=16).eval()


@st.composite
def image_like(draw):
    ndim = draw(st.integers(0, 5))
    shape = tuple(draw(st.lists(st.integers(0, 20), min_size=ndim, max_size=ndim)))
    if draw(st.booleans()) and ndim >= 3:  # often a plausible layout, so the valid path is hit
        shape = shape[:-1] + (3,) if draw(st.booleans()) else shape[:-3] + (3,) + shape[-2:]
    dtype = draw(st.sampled_from(DTYPES))
    kind = draw(st.sampled_from(["unit", "wide", "nan", "inf"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    x = rng.uniform(0, 1 if kind == "unit" else 300, size=shape)
    if kind in ("nan", "inf") and x.size:
        x.flat[rng.integers(0, x.size)] = np.nan if kind == "nan" else np.inf
    with np.errstate(invalid="ignore"):
        arr = np.asarray((x * (255 if dtype == np.uint8 and kind == "unit" else 1)).astype(dtype))
    return torch.from_numpy(arr) if draw(st.booleans()) else arr


@FUZZ
@given(images=image_like())
def test_encode_returns_tokens_or_a_clear_value_error(encoder, images):
    try:
        z = encoder.encode(images)
    except ValueError as e:
        assert str(e), "a ValueError must say what was wrong"
        return
    n = 1 if images.ndim == 3 else images.shape[0]
    assert z.shape == (n, encoder.num_tokens, encoder.dim)
    assert torch.isfinite(z).all()


@FUZZ
@given(obj=st.one_of(st.none(), st.integers(), st.text(max_size=5), st.lists(st.integers(), max_size=4)))
def test_non_arrays_are_value_errors(encoder, obj):
    with pytest.raises(ValueError, match="expected uint8 images"):
        encoder.encode(obj)
