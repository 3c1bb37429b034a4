"""Fixtures shared by the ``mpc`` tests."""
from __future__ import annotations

import pytest
import torch


@pytest.fixture
def one_thread():
    """One intra-op thread: tiny tensors run fastest on one (and do not fight parallel test runs);
    it is also what subprocesses started with OMP_NUM_THREADS=1 get, so numbers compare."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
