"""benchmarks.pusher_weight: the Push-T pusher-vs-block table for encoder checkpoints."""
from __future__ import annotations

import pytest

from benchmarks import pusher_weight


def test_pusher_weight_table_for_a_checkpoint(tmp_path, capsys):
    from encoders.jepa import JEPAEncoder

    path = JEPAEncoder(image_size=32, width=4, hidden=16, dim=8).save(tmp_path / "enc.safetensors")
    assert pusher_weight.main([f"tiny={path}:width=4,hidden=16,dim=8", "--goals", "2"]) == 0
    row = capsys.readouterr().out.strip().splitlines()[-1].split("|")
    assert row[1].strip() == "tiny"
    weight, start, pusher_off, block_off, shifted, turned, pusher_shifted = (float(c) for c in row[2:9])
    assert 0.0 <= weight <= 1.0 and start > 0 and pusher_off >= 0 and block_off >= 0
    assert min(shifted, turned, pusher_shifted) >= 0
    with pytest.raises(SystemExit, match="label=CHECKPOINT"):
        pusher_weight.main(["no-label-here"])


class _Pixels:
    """Tokens = the image's pixels (``block_only``: 1 where the T is drawn, else 0)."""

    def __init__(self, block_only: bool = False):
        self.block_only = block_only

    def encode(self, images):
        import numpy as np
        import torch

        x = np.asarray(images, np.float32)
        if self.block_only:  # the T's LightSlateGray, anti-aliased edges excluded
            x = (np.abs(x - np.array([119.0, 136.0, 153.0])).max(-1) < 8).astype(np.float32)
        return torch.as_tensor(x.reshape(len(x), 1, -1) / (1.0 if self.block_only else 255.0))


def test_the_tolerance_columns_see_what_the_latent_sees():
    """A pixel latent moves at every success tolerance; a latent of the block's pixels alone does not see
    the pusher moved by 20 px but does see the block moved by 20 px or turned by 20 degrees."""
    pix = pusher_weight.measure(_Pixels(), image_size=32, goals=3)
    block = pusher_weight.measure(_Pixels(block_only=True), image_size=32, goals=3)
    assert min(pix["block_20px"], pix["block_20deg"], pix["pusher_20px"]) > 0
    assert block["block_20px"] > 0 and block["block_20deg"] > 0
    assert block["pusher_20px"] < 0.1 * min(block["block_20px"], block["block_20deg"])
