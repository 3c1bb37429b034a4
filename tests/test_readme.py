"""The README's control-loop example runs as written (with a small saved model in place of a trained one)."""
import re
from pathlib import Path

import encoders
from mpc.world_model import WorldModel, config_from_preset

README = Path(__file__).resolve().parent.parent / "README.md"


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README.read_text(), flags=re.S)


def test_control_loop_example_runs(tmp_path, monkeypatch):
    code = next(b for b in _blocks("python") if "MPCController" in b and "env.step" in b)
    opts = {"weights": "random", "image_size": 28, "tokens": "pooled"}
    enc = encoders.make_encoder("dinov2", **opts)
    cfg = config_from_preset("tiny_mlp", num_tokens=1, token_dim=enc.dim, env_action_dim=2, proprio_dim=4,
                             encoder="dinov2", encoder_options=opts)
    ckpt = tmp_path / "runs/pm/checkpoints/model_latest.safetensors"
    ckpt.parent.mkdir(parents=True)
    WorldModel(cfg, encoder=enc).save(ckpt)
    monkeypatch.chdir(tmp_path)
    code = code.replace("range(50)", "range(2)")  # two control steps are enough to run every line
    scope: dict = {}
    exec(compile(code, str(README), "exec"), scope)
    assert scope["t"] == 1 or scope["info"]["is_success"]
    assert scope["action"].shape == (2,)


def test_quickstart_has_exactly_two_commands_and_ci_runs_the_test_one():
    quick = README.read_text().split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    commands = _blocks("bash")
    quick_cmds = [c.strip() for c in commands if c.strip() in quick]
    assert len(quick_cmds) == 2
    ci = (README.parent / ".ci" / "run").read_text()
    assert "pip install -q -e \".[dev]\"" in ci and "python -m pytest -q" in ci
    assert "pytest" in quick_cmds[1]
