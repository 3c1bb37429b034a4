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
    weight, start, pusher_off, block_off = (float(c) for c in row[2:6])
    assert 0.0 <= weight <= 1.0 and start > 0 and pusher_off >= 0 and block_off >= 0
    with pytest.raises(SystemExit, match="label=CHECKPOINT"):
        pusher_weight.main(["no-label-here"])
