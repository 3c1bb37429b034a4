"""benchmarks.figures: the markdown it writes, and a run of its pieces at the smallest sizes."""
from __future__ import annotations

import json

from benchmarks import figures, hot_path


def test_figures_runs_small_and_writes_json_and_markdown(tmp_path):
    """One plan section in this process at tiny sizes (the --quick path, smaller), then the files.

    The dino_wm size runs at 16 tokens a frame (``--dino-tokens 16``), not 196, and the roofline and
    its checks beside each rollout on a 512^3 matmul (``--roofline-size 512``), not 2048^3: the same
    sections and rows (the reference, the compiled rollout, the memory bound) at a fraction of the work.
    """
    argv = ["--out", str(tmp_path), "--in-process", "--only", "roofline,plans,memory", "--threads", "1",
            "--dino16-plan", "2x1", "--dino-plan", "2x1", "--tiny-plan", "4x2", "--envs", "1",
            "--memory-samples", "1", "--dino-tokens", "16", "--roofline-size", "512"]
    assert figures.main(argv) == 0
    data = json.loads((tmp_path / "figures.json").read_text())
    assert data["settings"]["plans"]["tiny"] == [1, 4, 2] and data["roofline"]["flops_per_s"] > 0
    assert data["settings"]["dino_tokens"] == 16 and data["roofline"]["kind"].startswith("fp32 torch.matmul 512^3")
    for size in ("dino_wm16", "dino_wm", "tiny"):
        for side in ("wmpc", "ref"):
            assert "error" not in data[f"{size}_plan"][side], data[f"{size}_plan"][side]
    md = (tmp_path / "figures.md").read_text()
    assert md.startswith("Command: `python -m benchmarks.figures --out")
    assert "torch " in md and "| dino_wm16 | 1 | 2 x 1 |" in md and "memory_samples=1" in md
    assert "| dino_wm (16 tokens) | 1 | 2 x 1 |" in md and "Memory bound (dino_wm (16 tokens) rollout" in md
    assert md.rstrip().splitlines()[-1].startswith("RESULT: dino_wm16 plan speed-up")


def test_markdown_marks_extrapolated_and_errors():
    res = {"machine": "cpu", "cpus": 2, "torch": "x", "python": "3",
           "settings": hot_path.settings(hot_path.parser().parse_args(["--quick"])),
           "dino_wm_plan": {"B": 1, "S": 10, "I": 4, "wmpc": {"seconds": 1.0, "peak_mb": 1024},
                            "ref": {"seconds": 8.0, "peak_mb": 2048, "extrapolated_from_iterations": 2}},
           "dino_wm_rollout": {"B": 1, "S": 10, "wmpc": {"error": "timed out"}, "ref": {"seconds": 1.0,
                                                                                      "peak_mb": 1}}}
    md = figures.markdown(res, "cmd")
    assert "| dino_wm | 1 | 10 x 4 | 1.000 s | 8.000 s (extrapolated) | 8.0x | 1.00 GiB | 2.00 GiB |" in md
    assert "error: timed out" in md
